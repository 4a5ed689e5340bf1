#!/usr/bin/env python3
"""--moe-prune-experts and --moe-merge-experts on every example: each layer
is rewritten or refused with a remark (never a crash, never a silent skip),
and a rewritten model runs on the reference executor with finite outputs.

Weights are random (check_backend.example_weights); the profile is made up
per layer (random counts and a random positive-definite logit Gram of the
layer's expert count) in the format of include/moe/lib/Analysis/Profile.h.

  check_examples.py --bin BUILD/bin --examples DIR --work DIR
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "..", "Backend", "Inputs"))
sys.path.insert(0, HERE)
from check_backend import example_weights, write_weights  # noqa: E402
from check_preserved import extra_inputs, extra_outputs  # noqa: E402
import planted_experts as pe  # noqa: E402


def layers(text):
    """{layer index: (routed experts, hidden)} of every function with a
    moe.dispatch (the functions other refusals name are left out)."""
    out = {}
    for fn in re.split(r"(?=func\.func @)", text)[1:]:
        m = re.search(r"moe\.layer = (\d+)", fn)
        d = re.search(r"moe\.dispatch .*num_experts = (\d+)", fn)
        h = re.search(r"\(%\w+: tensor<\?x(\d+)x", fn)
        if m and d:
            out[int(m.group(1))] = (int(d.group(1)), int(h.group(1)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--examples", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(3)
    failed = False
    for name in sorted(os.listdir(a.examples)):
        if not name.endswith(".mlir"):
            continue
        text = open(os.path.join(a.examples, name)).read()
        d = os.path.join(a.work, name[:-5])
        os.makedirs(d)
        shutil.copy(os.path.join(a.examples, name), os.path.join(d, "model.mlir"))
        write_weights(os.path.join(d, "model.safetensors"),
                      example_weights(text, rng))
        tensors = {}
        for L, (E, H) in layers(text).items():
            g = rng.standard_normal((E, E))
            stats = {"expert_count": rng.integers(1, 100, E).astype(float),
                     "gate_mass": rng.random(E), "coactivation": np.eye(E),
                     "logit_gram": g @ g.T + E * np.eye(E),
                     "logit_sum": rng.standard_normal(E),
                     "output_norm_mass": rng.random(E),
                     "expert_output_mean": rng.standard_normal((E, H))}
            for s, v in stats.items():
                tensors["layer.%d.%s" % (L, s)] = np.asarray(v, np.float64)
        prof = os.path.join(d, "profile.safetensors")
        pe.write_st(prof, tensors, {"format": "moe-profile", "version": "1",
                                    "model": "x", "tokens": 64})
        xp = os.path.join(d, "x.npy")
        H = int(re.search(r"\(%\w+: tensor<\?x(\d+)x", text).group(1))
        np.save(xp, rng.standard_normal((8, H)).astype(np.float32))
        # The calibration of a layer with extra inputs (RMoE's router state,
        # [8, S]): the first layer's, given to every such layer.
        first = min(layers(text)) if layers(text) else 0
        os.makedirs(os.path.join(d, "cal"))
        cal_inputs = extra_inputs(text, first, 8, rng, os.path.join(d, "cal"))
        for tag, option in (
                ("prune", "--moe-prune-experts=profile=%s ratio=0.5 "
                          "criterion=output-error calibration=%s%s" % (
                              prof, xp, "".join(
                                  " calibration-inputs=" + f
                                  for f in cal_inputs[:1]) +
                              "".join("," + f for f in cal_inputs[1:]))),
                ("merge", "--moe-merge-experts=profile=%s ratio=0.5 "
                          "cluster=hierarchical align=weight" % prof),
                ("merge-dominant", "--moe-merge-experts=profile=%s ratio=0.5 "
                 "similarity=expert-output" % prof)):
            out = os.path.join(d, tag + ".mlir")
            p = subprocess.run([a.bin + "/moe-opt", os.path.join(d, "model.mlir"),
                                "--mlir-print-op-on-diagnostic=false", option,
                                "-o", out], capture_output=True, text=True)
            remarks = re.findall(r"remark: (moe-\w+-experts: .*)", p.stderr)
            done = [r for r in remarks if "routed expert parameters" in r]
            refused = [r for r in remarks if " not pruned: " in r or
                       " not merged: " in r]
            status = "ok"
            if p.returncode or not remarks:
                status = "FAIL (exit %d, no report)\n%s" % (p.returncode,
                                                            p.stderr[-2000:])
            elif done:
                rewritten = open(out).read()
                for L in sorted(layers(rewritten)):
                    # Extra inputs and results (RMoE's state) after x and y.
                    more = sum([["--input", f] for f in extra_inputs(
                        rewritten, L, 8, rng, d)], []) + sum(
                        [["--output", os.path.join(d, "extra%d.out.npy" % i)]
                         for i in range(extra_outputs(rewritten, L))], [])
                    r = subprocess.run(
                        [a.bin + "/moe-run", out, "--layer", str(L), "--input",
                         xp, "--output", os.path.join(d, "y.npy"),
                         "--backend", "reference"] + more,
                        capture_output=True, text=True)
                    if r.returncode or not np.all(np.isfinite(
                            np.load(os.path.join(d, "y.npy")))):
                        status = "FAIL (moe-run layer %d)\n%s" % (L, r.stderr)
            failed |= status != "ok"
            what = ("%d rewritten" % len(done)) + (
                ", refused: " + refused[0].split(": ", 2)[-1]
                if refused else "")
            print("%-22s %-14s %s: %s" % (name, tag, what, status))
    print("FAILED" if failed else "every example rewritten or refused")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
