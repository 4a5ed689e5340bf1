"""moe_opt_distributed on real multi-rank packages (moe-compile
--placement), the emu backend and gloo: for a model without shared experts
(mixtral) and one with a gated shared expert (qwen2_moe), the whole
expert-parallel layer in 2 and 4 processes equals the single-process layer
(moe-run --backend reference).

The steps, with the project's tools on PATH:
  moe-import --synthetic ARCH -o DIR; moe-import DIR -o DIR.mlir
  moe-run DIR.mlir --all-layers --input P.npy --output ... --record-profile
      PROFILE                          (the placement needs a profile)
  moe-opt DIR.mlir --moe-plan-placement="profile=PROFILE topology=T
      policy=balanced redundant=G out=PL.json"   (G GPUs, G replicas)
  moe-compile DIR --placement PL.json -o PKG --arch none
  moe-run DIR.mlir --layer L --input X --output full.npy --backend reference
  python3 -m moe_opt_distributed --package PKG --layer L --input X
      --output Y.npy --nproc G --backend emu --tokens-per-rank ...
"""
import argparse
import json
import os
import sys

import numpy as np

from moe_py_common import run

# As rank-share.test: the norm of the difference over the layer's norm
# (f32 partial outputs summed over the ranks against the f64 reference).
RTOL = 1e-5

# Uneven splits with a rank that has no tokens; 29 tokens.
SPLITS = {2: "29,0", 4: "11,0,5,13"}


def topology(work, gpus):
    path = os.path.join(work, f"topology{gpus}.json")
    with open(path, "w") as f:
        json.dump({"nodes": 1, "gpus_per_node": gpus, "hbm_bytes": 1e9,
                   "gpu_flops": 1e12,
                   "intra_node": {"bandwidth": 1e11, "latency": 1e-6}}, f)
    return path


def check_arch(work, arch, layer):
    model = os.path.join(work, arch + ".model")
    ir = model + ".mlir"
    run(["moe-import", "--synthetic", arch, "-o", model, "--force"])
    run(["moe-import", model, "-o", ir])
    rng = np.random.default_rng(5)
    hidden = json.load(open(os.path.join(model, "config.json")))[
        "hidden_size"]
    calib = os.path.join(work, arch + ".calib.npy")
    np.save(calib, rng.standard_normal((64, hidden), dtype=np.float32))
    profile = os.path.join(work, arch + ".profile.safetensors")
    run(["moe-run", ir, "--all-layers", "--input", calib, "--output",
         os.path.join(work, arch + ".calib.out.npy"), "--record-profile",
         profile])
    x = rng.standard_normal((29, hidden), dtype=np.float32)
    xp = os.path.join(work, arch + ".x.npy")
    np.save(xp, x)
    full = os.path.join(work, arch + ".full.npy")
    run(["moe-run", ir, "--layer", str(layer), "--input", xp, "--output",
         full, "--backend", "reference"])
    ref = np.load(full)
    for gpus in (2, 4):
        placement = os.path.join(work, f"{arch}.placement{gpus}.json")
        run(["moe-opt", ir, "-o", os.devnull,
             "--moe-plan-placement=profile=" + profile + " topology=" +
             topology(work, gpus) + f" policy=balanced redundant={gpus} "
             "out=" + placement])
        pkg = os.path.join(work, f"{arch}.ranks{gpus}.pkg")
        run(["moe-compile", model, "--placement", placement, "-o", pkg,
             "--arch", "none", "--force", "-q", "--activation-type", "f32"])
        y_path = os.path.join(work, f"{arch}.y{gpus}.npy")
        run([sys.executable, "-m", "moe_opt_distributed", "--package", pkg,
             "--layer", str(layer), "--input", xp, "--output", y_path,
             "--nproc", str(gpus), "--backend", "emu", "--tokens-per-rank",
             SPLITS[gpus]])
        y = np.load(y_path)
        if y.shape != ref.shape or y.dtype != np.float32:
            raise AssertionError(f"{arch} layer {layer}, {gpus} ranks: "
                                 f"output {y.shape} {y.dtype}, expected "
                                 f"{ref.shape} float32")
        err = float(np.linalg.norm(y - ref) /
                    max(float(np.linalg.norm(ref)), 1e-30))
        if not err <= RTOL:
            raise AssertionError(f"{arch} layer {layer}, {gpus} ranks: "
                                 f"relative error {err:.2e} > {RTOL}")
        print(f"ok   {arch} layer {layer}: {gpus} ranks (tokens "
              f"{SPLITS[gpus]}) equal the single-process layer "
              f"(rel err {err:.1e})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    # qwen2_moe: layer 1 is dense by default; layer 2 has the shared expert.
    for arch, layer in (("mixtral", 1), ("qwen2_moe", 2)):
        check_arch(a.work, arch, layer)
    print("all distributed package cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
