#!/usr/bin/env python3
"""--moe-compress-experts on every importer architecture (synthetic models,
f32 per-expert and bf16 fused) and every example of examples/ (weights
drawn here): each MoE layer is either compressed (the pass prints its line)
or refused with a remark naming the layer, and the reference executor runs
the result (moe-run, T = 7).

  check_compress_all.py --bin BUILD/bin --examples DIR
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

here = os.path.dirname(__file__)
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "..", "Backend", "Inputs"))
from check_preserved import (layers_of, hidden_of, extra_inputs,  # noqa
                             extra_outputs)
from check_backend import ARCHS, example_weights, write_weights  # noqa: E402


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(" ".join(cmd) + "\n" + r.stderr[-3000:])
    return r.stdout + r.stderr


def check(args, tag, ir, rng):
    out = ir[:-len(".mlir")] + ".compressed.mlir"
    log = run([args.bin + "/moe-opt", ir, "--moe-compress-experts=rank=4",
               "-o", out])
    verdicts = []
    for layer in layers_of(ir):
        done = re.search(r"moe-compress-experts: @\w+ \(layer %d\): .*rank "
                         r"[^\n]*" % layer, log)
        refused = re.search(r"remark: moe-compress-experts: layer %d not "
                            r"compressed: ([^\n]*)" % layer, log)
        if not done and not refused:
            raise AssertionError(f"{tag} layer {layer}: neither compressed "
                                 f"nor refused:\n{log}")
        if done:
            verdicts.append("compressed" + (
                " (shared experts kept dense)" if "kept dense" in done.group(0)
                else ""))
        else:
            verdicts.append("refused (" + refused.group(1) + ")")
        x = rng.standard_normal((7, hidden_of(ir, layer))).astype(np.float32)
        xp = ir + ".x.npy"
        np.save(xp, x)
        extra = []
        for path in extra_inputs(open(ir).read(), layer, 7, rng,
                                 os.path.dirname(xp)):
            extra += ["--input", path]
        more = extra_outputs(open(ir).read(), layer)
        run([args.bin + "/moe-run", out, "--layer", str(layer), "--input", xp]
            + extra + ["--output", xp + ".y.npy"] +
            sum([["--output", xp + ".extra%d.npy" % i] for i in range(more)],
                []))
    print(f"ok   {tag}: " + ", ".join(sorted(set(verdicts))), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--examples", required=True)
    args = p.parse_args()
    rng = np.random.default_rng(7)
    work = tempfile.mkdtemp(prefix="moe-compress-")
    cases, failures = 0, 0
    try:
        jobs = []
        for arch in ARCHS:
            for dtype, extra in (("f32", []), ("bf16", ["--fused-experts"])):
                tag = f"{arch}/{dtype}"
                model = os.path.join(work, tag.replace("/", "_"))

                def go(arch=arch, dtype=dtype, extra=extra, model=model,
                       tag=tag):
                    run([args.bin + "/moe-import", "--synthetic", arch,
                         "--dtype", dtype, "-o", model] + extra)
                    run([args.bin + "/moe-import", model, "-o",
                         model + ".mlir"])
                    check(args, tag, model + ".mlir", rng)
                jobs.append((tag, go))
        for example in sorted(glob.glob(os.path.join(args.examples,
                                                     "*.mlir"))):
            tag = "example/" + os.path.basename(example)

            def go(example=example, tag=tag):
                d = os.path.join(work, "ex_" + os.path.basename(example)[:-5])
                os.makedirs(d)
                text = open(example).read()
                tensors = example_weights(text, rng)
                for f in set(re.findall(r'from \["([^"]*)"\]', text)):
                    write_weights(os.path.join(d, f), tensors)
                ir = os.path.join(d, "model.mlir")
                shutil.copy(example, ir)
                check(args, tag, ir, rng)
            jobs.append((tag, go))
        for tag, go in jobs:
            cases += 1
            try:
                go()
            except (AssertionError, RuntimeError) as e:
                failures += 1
                print(f"FAIL {tag}: {e}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{cases - failures} of {cases} models compressed or refused with "
          "a remark")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
