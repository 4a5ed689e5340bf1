#!/usr/bin/env python3
"""Packages of block-scaled experts: moe-compile keeps the codes and scales
as stored, moe-run on the package matches moe-run on the IR.

For a synthetic DeepSeek-V3 FP8 folder (32 x 32 blocks, partial edge
blocks, a shared expert) and a gpt-oss MXFP4 folder: import, optimize,
`moe-compile --arch none`; the manifest must list the weights in their
quantized dtypes with the stored byte counts (FP8 one byte per value, FP4
half a byte, E8M0 one per 32 values), and at T in {1, 7, 64, 300}
`moe-run PKG --backend emu` must match `moe-run IR --backend reference`
(within 1e-5 of max |y| where the kernels compute in f32, 1e-2 on the
grouped path with FP8 weights, which rounds them to bf16 tiles:
moe_quant.cuh), and `moe-run PKG --backend reference` must equal the IR's
run bit for bit. Then a manifest whose scale tensor is 16 bytes short must
be refused naming the field.

  quant_package.py --bin DIR
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

TS = (1, 7, 64, 300)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    args = ap.parse_args()
    tool = lambda n: os.path.join(args.bin, n) if args.bin else n
    errors = []
    with tempfile.TemporaryDirectory() as d:
        cases = (("deepseek_v3", "fp8", ["--quant-block", "32", "--hidden",
                                         "80", "--intermediate", "48"]),
                 ("gpt_oss", "mxfp4", ["--hidden", "64", "--intermediate",
                                       "64"]))
        for arch, quant, extra in cases:
            label = "%s-%s" % (arch, quant)
            m = os.path.join(d, label)
            for cmd in ([tool("moe-import"), "--synthetic", arch, "--quant",
                         quant, "--dtype", "f32", "--seed", "3", "-o", m] +
                        extra,
                        [tool("moe-import"), m, "-o", m + ".mlir"],
                        [tool("moe-opt"), "--moe-optimize", m + ".mlir", "-o",
                         m + ".opt.mlir"],
                        [tool("moe-compile"), m + ".opt.mlir", "--arch",
                         "none", "-q", "-o", m + ".pkg"]):
                rc, out = run(cmd)
                if rc != 0:
                    raise AssertionError(" ".join(cmd) + ":\n" + out)
            with open(os.path.join(m + ".pkg", "manifest.json")) as f:
                manifest = json.load(f)
            tensors = manifest["weights"]["tensors"]
            per_value = {"f8E4M3FN": 1.0, "f4E2M1FN": 0.5, "f8E8M0FNU": 1.0}
            dtypes = {}
            for t in tensors:
                if t["dtype"] in per_value:
                    dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + 1
                    want = int(np.prod(t["shape"]) * per_value[t["dtype"]])
                    if t["bytes"] != want:
                        errors.append("%s: %s holds %d bytes, expected %d"
                                      % (label, t["names"], t["bytes"], want))
            print("%s: package tensors %s" % (label, ", ".join(
                "%d %s" % (n, k) for k, n in sorted(dtypes.items()))))
            with open(m + ".opt.mlir") as f:
                layer = int(f.read().split("moe.layer = ")[1].split(" ")[0])
            k = 2
            worst = {False: 0.0, True: 0.0}
            rng = np.random.default_rng(5)
            for t in TS:
                x = rng.standard_normal((t, 80 if quant == "fp8" else 64))
                xp = os.path.join(d, "%s-x%d.npy" % (label, t))
                np.save(xp, x.astype(np.float32))
                ys = {}
                for name, src, backend in (("ref", m + ".opt.mlir",
                                            "reference"),
                                           ("pkg-emu", m + ".pkg", "emu"),
                                           ("pkg-ref", m + ".pkg",
                                            "reference")):
                    yp = os.path.join(d, "%s-%s-%d.npy" % (label, name, t))
                    rc, out = run([tool("moe-run"), src, "--layer", str(layer),
                                   "--input", xp, "--output", yp, "--backend",
                                   backend])
                    if rc != 0:
                        errors.append("%s T=%d %s failed:\n%s"
                                      % (label, t, name, out[-1500:]))
                        break
                    ys[name] = np.load(yp)
                if len(ys) < 3:
                    continue
                ref = ys["ref"]
                if not np.array_equal(ys["pkg-ref"], ref):
                    errors.append("%s T=%d: the package's reference run "
                                  "differs from the IR's" % (label, t))
                grouped_fp8 = quant == "fp8" and t * k > 64
                tol = 1e-2 if grouped_fp8 else 1e-5
                rel = float(np.max(np.abs(ys["pkg-emu"] - ref)) /
                            np.max(np.abs(ref)))
                worst[grouped_fp8] = max(worst[grouped_fp8], rel)
                if not rel <= tol:
                    errors.append("%s T=%d: emu on the package differs from "
                                  "the reference by %.3g of max |y| (> %g)"
                                  % (label, t, rel, tol))
            print("%s: emu on the package matches the reference at T = 1, 7, "
                  "64, 300 (worst %.3g of max |y| in f32, %.3g FP8 grouped)"
                  % (label, worst[False], worst[True]))
            # A scale tensor 16 bytes short in the manifest.
            bad = m + ".bad"
            shutil.copytree(m + ".pkg", bad)
            mp = os.path.join(bad, "manifest.json")
            scale = next(i for i, t in enumerate(tensors)
                         if t["dtype"] in ("f8E8M0FNU",) or
                         t["names"][0].endswith("scale_inv"))
            manifest["weights"]["tensors"][scale]["bytes"] -= 16
            with open(mp, "w") as f:
                json.dump(manifest, f, indent=1)
            rc, out = run([tool("moe-run"), bad, "--layer", str(layer),
                           "--input", xp, "--output",
                           os.path.join(d, "bad.npy"), "--backend", "emu"])
            print("%s: truncated scales: rc %d: %s" % (label, rc,
                                                      out.strip()[-300:]))
    for e in errors:
        print("FAIL: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
