"""Sum over the rank packages of a set (moe-compile --placement) against the
whole layer: for each MoE layer and backend, `moe-run PKG --rank r` for every
rank (routing from the rank package's router, and from --routing-in with the
whole model's --routing-out) must add up to `moe-run MODEL --layer L`.
The oracle is the whole model's own run; the rank packages never see it
except through --routing-in."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(" ".join(cmd) + "\n" + r.stderr)
        sys.exit("FAIL: " + " ".join(cmd))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pkg", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--backends", default="reference,emu")
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()
    moe_run = os.path.join(a.bin, "moe-run")
    with open(os.path.join(a.pkg, "placement.json")) as f:
        placement = json.load(f)
    gpus = placement["gpus"]
    for lp in placement["layers"]:
        layer = lp["layer"]
        counts = np.bincount(lp["slot_expert"], minlength=lp["experts"])
        replicated = int((counts > 1).sum())
        for backend in a.backends.split(","):
            base = os.path.join(a.work, f"L{layer}.{backend}")
            run([moe_run, a.model, "--layer", str(layer), "--input", a.input,
                 "--output", base + ".full.npy", "--backend", backend,
                 "--routing-out", base + ".routing"])
            full = np.load(base + ".full.npy")
            for mode in ("router", "routing-in"):
                total = np.zeros_like(full)
                busy = 0
                for r in range(gpus):
                    out = f"{base}.{mode}.rank{r}.npy"
                    cmd = [moe_run, a.pkg, "--rank", str(r), "--layer",
                           str(layer), "--input", a.input, "--output", out,
                           "--backend", backend]
                    if mode == "routing-in":
                        cmd += ["--routing-in", base + ".routing"]
                    run(cmd)
                    part = np.load(out)
                    # A rank's share is not the layer: each rank adds part.
                    assert part.shape == full.shape
                    total += part
                    busy += int(np.abs(part).max() > 0)
                err = np.linalg.norm(total - full) / max(np.linalg.norm(full),
                                                          1e-30)
                # Every rank holds experts: a set where one rank computes the
                # whole layer and the others nothing is not a sharding.
                status = "ok" if err <= a.tol and busy == gpus else "FAIL"
                print(f"{status}: layer {layer} {backend} {mode}: {gpus} ranks,"
                      f" {replicated} replicated experts, {busy} with a nonzero share,"
                      f" sum of rank outputs"
                      f" vs layer rel err {err:.2e}")


if __name__ == "__main__":
    main()
