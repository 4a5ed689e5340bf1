"""Checks --moe-shard-experts on one placed model.

For every MoE layer L and every rank r of the placement: the rank IR holds
exactly the experts whose slots sit on GPU r (moe.rank.experts and the
leading dimension of every expert weight), and the sum over ranks of the
rank layers' outputs equals the full layer's, on the reference and on the
emulation after --moe-optimize (rank IR and full IR both optimized).
Prints "ok: ..." lines, "FAIL: ..." on a mismatch.
"""
import argparse
import os
import re
import subprocess
import sys

import numpy as np


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def i64s(text):
    return [int(v) for v in text.split(",")] if text.strip() else []


def funcs(text):
    """{layer: attribute text of its func.func}"""
    out = {}
    for m in re.finditer(r"func\.func @\w+\([^)]*\)[^{]*attributes \{(.*?)\} \{",
                         text):
        attrs = m.group(1)
        layer = re.search(r"moe\.layer = (\d+)", attrs)
        if layer:
            out[int(layer.group(1))] = (attrs, m.end())
    return out


def attr(attrs, name):
    m = re.search(re.escape(name) + r" = array<i64: ([^>]*)>", attrs)
    return i64s(m.group(1)) if m else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--placed", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--tol", type=float, default=1e-5)
    a = p.parse_args()
    opt, mrun = (os.path.join(a.bin, t) for t in ("moe-opt", "moe-run"))
    placed = open(a.placed).read()
    layers = funcs(placed)
    gpus = {int(g) for g in re.findall(r"moe\.placement\.gpus = (\d+)",
                                       placed)}
    assert len(gpus) == 1, gpus
    G = gpus.pop()
    full_opt = os.path.join(a.work, "full.opt.mlir")
    run(opt, "--moe-optimize", a.placed, "-o", full_opt)
    ranks = []
    for r in range(G):
        ir = os.path.join(a.work, "rank%d.mlir" % r)
        run(opt, a.placed, "--moe-shard-experts=rank=%d" % r, "-o", ir)
        run(opt, "--moe-optimize", ir, "-o", ir + ".opt.mlir")
        ranks.append(ir)
    bad = 0
    for L, (attrs, _) in sorted(layers.items()):
        slot_expert = attr(attrs, "moe.placement.slot_expert")
        slot_gpu = attr(attrs, "moe.placement.slot_gpu")
        replicated = sum(slot_expert.count(e) > 1 for e in set(slot_expert))
        outs = {"reference": [], "emu": []}
        for r, ir in enumerate(ranks):
            text = open(ir).read()
            rattrs, start = funcs(text)[L]
            want = sorted({e for e, g in zip(slot_expert, slot_gpu) if g == r})
            got = attr(rattrs, "moe.rank.experts")
            rank = re.search(r"moe\.rank = (\d+)", rattrs)
            body = text[start:text.find("return", start)]
            # Every expert weight (the operands of moe.expert_ffn) has the
            # rank's expert count as its leading dimension.
            ffn = re.search(r"moe\.expert_ffn .*?: \((.*?)\) ->", body)
            dims = [int(d) for d in re.findall(r"tensor<(\d+)x\d+x\d+x",
                                               ffn.group(1))]
            if got != want or not rank or int(rank.group(1)) != r or \
                    not dims or any(d != len(want) for d in dims):
                print("FAIL: layer %d rank %d: experts %s (want %s), expert "
                      "weight dims %s" % (L, r, got, want, dims))
                bad += 1
            for backend, path in (("reference", ir), ("emu", ir + ".opt.mlir")):
                y = os.path.join(a.work, "L%d.r%d.%s.npy" % (L, r, backend))
                run(mrun, path, "--backend", backend, "--layer", str(L),
                    "--input", a.input, "--output", y)
                outs[backend].append(np.load(y))
        for backend, path in (("reference", a.placed), ("emu", full_opt)):
            y = os.path.join(a.work, "L%d.full.%s.npy" % (L, backend))
            run(mrun, path, "--backend", backend, "--layer", str(L), "--input",
                a.input, "--output", y)
            full = np.load(y)
            total = np.sum(outs[backend], axis=0)
            rel = np.abs(total - full).max() / np.abs(full).max()
            # Each rank alone is far from the layer (the test can fail).
            alone = min(np.abs(o - full).max() / np.abs(full).max()
                        for o in outs[backend])
            ok = rel <= a.tol and alone > 100 * a.tol
            bad += not ok
            print("%s: layer %d %s: %d ranks, %d replicated experts, sum of "
                  "rank outputs vs layer rel %.1e (one rank alone %.2f)" %
                  ("ok" if ok else "FAIL", L, backend, G, replicated, rel,
                   alone))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
