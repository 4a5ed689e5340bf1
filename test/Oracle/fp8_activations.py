#!/usr/bin/env python3
"""FP8 tensor cores for FP8 expert weights, checked against numpy.

`--moe-optimize="fp8-activations=true"` runs the grouped (prefill) GEMMs of
DeepSeek-V3's FP8 E4M3FN experts on the FP8 tensor cores
(moe_grouped_fp8.cuh): each activation row (the token for gate/up, h for
down) is quantized per block of QB1 input channels to E4M3 with the scale
s = amax / 448, and the partial sums of each block are promoted into f32
times s * the weight block's scale. The grouped kernels run when the layer
routes more than 64 slots (T * K > 64); here every moe.fused_experts is
forced to the grouped layout (as test/Backend/emu-grouped.test does), so
that T = 1 and 7 (tiles of one to a few rows) take the FP8 path too.

For synthetic DeepSeek-V3 FP8 folders (32 x 32 blocks at hidden 80 /
width 48, partial edge blocks; 128 x 128 blocks at hidden 256 / width 128)
and T in {1, 7, 64, 300}, the optimized layer runs on the emulation
(`moe-run --backend emu`, the CUDA kernels on the CPU, the e4m3 mma
emulated) and is checked

  * against this oracle: the same per-row, per-block quantization written
    from the format (E4M3 codes found by nearest value in the table of all
    finite codes, ties to the even code; scale amax / 448 in f32), then the
    FFN in float64 with weights decoded by quant.py's numpy decoders;
    within ORACLE_TOL of max |y| (a code can flip at a rounding midpoint
    where emu's f32 h and the oracle's float64 h differ in the last bits);
  * against the reference executor (unquantized activations): the error
    contract of docs/codegen.md. Each activation moves by at most 2^-4 of
    itself (half an E4M3 step: 3 mantissa bits) plus 2^-10 s below the
    normal range; spread within that bound, one quantized operand gives a
    GEMM output a relative RMS error of at most 2^-4 / sqrt(3), and an FFN
    output carries three such independent contributions (x into gate, x
    into up, h into down), which add in quadrature: relative RMS error
    ||y - y_ref|| / ||y_ref|| within 2^-4 (REF_RMS_TOL), every output
    within 2^-3 of max |y| (REF_MAX_TOL).

  fp8_activations.py [--bin DIR] [--seed N] [-v]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_models as hf  # noqa: E402
import quant  # noqa: E402

TS = (1, 7, 64, 300)
E4M3_MAX = 448.0
ORACLE_TOL = 1e-3
REF_RMS_TOL = 2.0 ** -4
REF_MAX_TOL = 2.0 ** -3

# --------------------------------------------------------------------------
# E4M3 quantization, from the table of finite codes
# --------------------------------------------------------------------------

_CODES = np.arange(0x7F, dtype=np.uint8)  # +0 .. 448 (0x7F is NaN)
_VALUES = quant.e4m3fn(_CODES).astype(np.float64)
assert np.all(np.diff(_VALUES) > 0) and _VALUES[-1] == E4M3_MAX


def e4m3_round(v):
    """The E4M3FN value nearest to each of v (ties to the even code),
    saturating at +-448."""
    v = np.asarray(v, dtype=np.float64)
    a = np.minimum(np.abs(v), E4M3_MAX)
    hi = np.clip(np.searchsorted(_VALUES, a, side="left"), 0, len(_VALUES) - 1)
    lo = np.maximum(hi - 1, 0)
    dl, dh = a - _VALUES[lo], _VALUES[hi] - a
    pick = np.where(dl < dh, lo, np.where(dh < dl, hi,
                                          np.where(lo % 2 == 0, lo, hi)))
    return np.sign(v) * _VALUES[pick]


def quantize_rows(a, block):
    """a [R, C] (float32 values) -> its per-row, per-block E4M3 quantization,
    dequantized: codes(a / s) * s with s = amax / 448 in f32 (1 for an
    all-zero block)."""
    a = np.asarray(a, dtype=np.float32)
    out = np.empty(a.shape, dtype=np.float64)
    for c0 in range(0, a.shape[1], block):
        blk = a[:, c0:c0 + block]
        amax = np.max(np.abs(blk), axis=1, keepdims=True)
        s = np.where(amax > 0, amax / np.float32(E4M3_MAX), np.float32(1.0))
        s = s.astype(np.float32)
        q = e4m3_round((blk / s).astype(np.float32))
        out[:, c0:c0 + block] = q * s.astype(np.float64)
    return out


def qglu(x, wg, wu, wd, block):
    """The FFN of the FP8 path: both GEMMs' inputs quantized per row and
    block; h in f32 before its quantization, as the kernels keep it."""
    xq = quantize_rows(x, block)
    h = hf.silu(xq @ wg.T) * (xq @ wu.T)
    return quantize_rows(h.astype(np.float32), block) @ wd.T


def oracle_block(m, layer, x, block):
    """DeepSeek-V3's MoE block with the FP8 path's activation
    quantization."""
    r = hf.deepseek_v3_routing(m, layer, x)
    _, per, _ = hf._expert_names(m.arch, m.layout, layer)
    p = "model.layers.%d.mlp.shared_experts" % layer

    def ffn(x_, g, u, d):
        return qglu(x_, m.get(g), m.get(u), m.get(d), block)

    y = hf.combine(x, r, lambda e, xs: ffn(xs, per[0] % e, per[1] % e,
                                           per[2] % e))
    if p + ".gate_proj.weight" in m.tensors:
        y = y + ffn(np.asarray(x, dtype=np.float64), p + ".gate_proj.weight",
                    p + ".up_proj.weight", p + ".down_proj.weight")
    return y, r


# --------------------------------------------------------------------------


def run_tool(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(" ".join(cmd) + " failed:\n" +
                             (r.stdout + r.stderr)[-2000:])
    return r.stdout + r.stderr


def moe_run(args, ir, layer, xp, out, backend, extra=()):
    run_tool([quant.tool(args, "moe-run"), ir, "--layer", str(layer),
              "--input", xp, "--output", out, "--backend", backend] +
             list(extra))
    return np.load(out)


def check(args, d, label, block, sizes):
    mdir = quant.synthesize(args, d, "deepseek_v3", "fp8",
                            ["--quant-block", str(block)] + sizes)
    os.rename(mdir, os.path.join(d, label))
    mdir = os.path.join(d, label)
    ir = os.path.join(d, label + ".mlir")
    run_tool([quant.tool(args, "moe-import"), mdir, "-o", ir])
    opt = os.path.join(d, label + ".opt.mlir")
    fp8 = os.path.join(d, label + ".fp8.mlir")
    run_tool([quant.tool(args, "moe-opt"), "--moe-optimize", ir, "-o", opt])
    run_tool([quant.tool(args, "moe-opt"),
              "--moe-optimize=fp8-activations=true", ir, "-o", fp8])
    with open(fp8) as f:
        text = f.read()
    if "moe.fp8_activations" not in text or "#moe.layout<runtime>" not in text:
        return ["%s: the optimized IR has no moe.fp8_activations or no "
                "runtime layout" % label]
    with open(fp8, "w") as f:
        f.write(text.replace("#moe.layout<runtime>", "#moe.layout<grouped>"))
    m, _ = quant.oracle_model(mdir)
    rng = np.random.default_rng(args.seed)
    errors = []
    worst = {"oracle": 0.0, "rms": 0.0, "max": 0.0}
    identical = 0
    for layer in m.moe_layers:
        for t in TS:
            x = rng.standard_normal(
                (t, m.config["hidden_size"])).astype(np.float32)
            xp = os.path.join(d, "%s-L%d-T%d.x.npy" % (label, layer, t))
            np.save(xp, x)
            base = xp[:-len(".x.npy")]
            y_ref = moe_run(args, opt, layer, xp, base + ".ref.npy",
                            "reference")
            y_emu = moe_run(args, fp8, layer, xp, base + ".emu.npy", "emu")
            # The pipelined k loop (the default) against the single-stage
            # one (--gemm mma): the same products, sums and promotions.
            y_one = moe_run(args, fp8, layer, xp, base + ".mma.npy", "emu",
                            ["--gemm", "mma"])
            same = np.array_equal(y_emu.view(np.uint32),
                                  y_one.view(np.uint32))
            identical += int(same)
            y_or, routing = oracle_block(m, layer, x, block)
            scale = max(float(np.max(np.abs(y_ref))), 1e-30)
            # Tokens within the routing margin may pick other experts in
            # f32 than in float64: left out of the oracle comparison.
            keep = ~routing.fragile
            tag = "%s layer %d T=%d" % (label, layer, t)
            e_or = float(np.max(np.abs(y_emu[keep] - y_or[keep]),
                                initial=0.0)) / scale
            worst["oracle"] = max(worst["oracle"], e_or)
            diff = y_emu - y_ref
            e_max = float(np.max(np.abs(diff))) / scale
            e_rms = float(np.linalg.norm(diff) / max(np.linalg.norm(y_ref),
                                                     1e-30))
            if args.v:
                print("%s: vs oracle %.3g of max |y|; vs reference %.3g of "
                      "max |y|, relative RMS %.3g" % (tag, e_or, e_max, e_rms))
            if not same:
                errors.append("%s: the pipelined k loop differs from the "
                              "single-stage one in %d of %d outputs"
                              % (tag, int(np.sum(y_emu != y_one)),
                                 y_emu.size))
            if not e_or <= ORACLE_TOL:
                errors.append("%s: emu differs from the oracle by %.3g of "
                              "max |y| (tolerance %g)" % (tag, e_or,
                                                          ORACLE_TOL))
            worst["rms"] = max(worst["rms"], e_rms)
            worst["max"] = max(worst["max"], e_max)
            if not (e_rms <= REF_RMS_TOL and e_max <= REF_MAX_TOL):
                errors.append("%s: emu differs from the reference by "
                              "relative RMS %.3g (contract %.3g), %.3g of "
                              "max |y| (contract %g)"
                              % (tag, e_rms, REF_RMS_TOL, e_max, REF_MAX_TOL))
    print("%s: %d layers x T in %s on the FP8 path; vs the reference: "
          "relative RMS %.3g, %.3g of max |y|; vs the oracle: %.3g of max "
          "|y|; %d runs of the pipelined k loop bit-identical to the "
          "single-stage one"
          % (label, len(m.moe_layers), list(TS), worst["rms"], worst["max"],
             worst["oracle"], identical))
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    # The oracle's rounding: every code's value is its own rounding, and the
    # midpoints go to the even code.
    assert np.array_equal(e4m3_round(_VALUES), _VALUES)
    mids = (_VALUES[1:] + _VALUES[:-1]) / 2
    even = np.where(np.arange(1, len(_VALUES)) % 2 == 0, _VALUES[1:],
                    _VALUES[:-1])
    assert np.array_equal(e4m3_round(mids), even)
    errors = []
    with tempfile.TemporaryDirectory() as d:
        errors += check(args, d, "ds-fp8-b32", 32,
                        ["--hidden", "80", "--intermediate", "48"])
        errors += check(args, d, "ds-fp8-b128", 128,
                        ["--hidden", "256", "--intermediate", "128"])
        # Blocks of 128 in steps of 64 (gate/up), two stages of whole
        # blocks (down), partial last blocks of 32 and 64 channels.
        errors += check(args, d, "ds-fp8-b128-edge", 128,
                        ["--hidden", "288", "--intermediate", "320"])
    for e in errors:
        print("FAIL: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
