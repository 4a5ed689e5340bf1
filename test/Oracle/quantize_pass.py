#!/usr/bin/env python3
"""--moe-quantize-experts checked against numpy.

Writes a random bf16 Mixtral folder (hf_models.py, hidden 64, width 96),
imports it, and runs `moe-opt --moe-quantize-experts` with fp8_e4m3 (block
40x24, so that every matrix has partial edge blocks) and mxfp4. For each:

- the written safetensors are read raw; the codes and scales must equal,
  byte for byte, those of this file's own numpy quantizer of the original
  weights (nearest value in a table of the format's values built by
  quant.py's decoders, ties to the even code, saturating; FP8 scale amax/448
  in f32, MXFP4 scale 2^(floor(log2 amax) - 2));
- the relative Frobenius error the pass reports per projection must equal
  numpy's from the decoded weights (1e-3 relative);
- `moe-run --backend reference` of the quantized IR must equal
  hf_models.py's float64 Mixtral block holding the weights decoded by
  quant.py's decoders (1e-4 relative, expert sets per token exactly).

  quantize_pass.py [--bin DIR] [--seed N]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_models as hf  # noqa: E402
import quant as qd  # noqa: E402  (its decoders and raw safetensors reader)
from layer_check import compare  # noqa: E402

TS = (1, 7, 64, 300)
TOL_Y, TOL_W = 1e-4, 1e-5
FP8_BLOCK = (40, 24)
PROJ = {"gate": 0, "up": 1, "down": 2}  # hf_models per-expert names w1 w3 w2


def nearest_code(x, table):
    """Code (index into `table`, ascending non-negative values of codes
    0..n-1) nearest to |x|, ties to the even code, saturating; the sign bit
    above."""
    a = np.abs(x)
    hi = np.clip(np.searchsorted(table, a), 1, len(table) - 1)
    lo = hi - 1
    dlo, dhi = a - table[lo], table[hi] - a
    code = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi,
                                            np.where(lo % 2 == 0, lo, hi)))
    code = np.where(a >= table[-1], len(table) - 1, code)
    return code


def np_fp8(w, block):
    """[out, in] float32 -> (codes uint8, scales float32)."""
    table = qd.e4m3fn(np.arange(127)).astype(np.float64)  # 0 .. 448
    out, inn = w.shape
    r, c = -(-out // block[0]), -(-inn // block[1])
    codes = np.zeros(w.shape, np.uint8)
    scales = np.zeros((r, c), np.float32)
    for i in range(r):
        for j in range(c):
            blk = w[i * block[0]:(i + 1) * block[0],
                    j * block[1]:(j + 1) * block[1]]
            amax = np.float32(np.abs(blk).max())
            s = amax / np.float32(448.0) if amax > 0 else np.float32(1.0)
            scales[i, j] = s
            x = (blk / s).astype(np.float32)
            code = nearest_code(x.astype(np.float64), table)
            codes[i * block[0]:(i + 1) * block[0],
                  j * block[1]:(j + 1) * block[1]] = (
                      code + np.where(np.signbit(x), 128, 0)).astype(np.uint8)
    return codes, scales


def np_mxfp4(w):
    """[out, in] float32 -> (blocks [out, in/32, 16] uint8, scales uint8)."""
    table = qd.e2m1(np.arange(8)).astype(np.float64)  # 0 .. 6
    out, inn = w.shape
    g = w.reshape(out, inn // 32, 32).astype(np.float64)
    amax = np.abs(g).max(axis=-1)
    _, e = np.frexp(amax)  # amax = f 2^e, f in [0.5, 1)
    x = np.where(amax > 0, e - 1 - 2, -127)
    x = np.clip(x, -127, 127)
    v = np.ldexp(g, -x[..., None])
    nib = nearest_code(v, table) + np.where(np.signbit(v), 8, 0)
    nib = nib.reshape(out, inn // 32, 16, 2).astype(np.uint8)
    return nib[..., 0] | (nib[..., 1] << 4), (x + 127).astype(np.uint8)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(" ".join(cmd) + " failed:\n" + r.stdout + r.stderr)
    return r.stdout + r.stderr


def layer_functions(ir_text):
    """{layer: function name}."""
    out = {}
    for m in re.finditer(r"func\.func @(\S+)\(.*moe\.layer = (\d+)", ir_text):
        out[int(m.group(2))] = m.group(1)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    tool = lambda n: os.path.join(args.bin, n) if args.bin else n  # noqa
    rng = np.random.default_rng(args.seed)
    errors = []
    with tempfile.TemporaryDirectory() as d:
        model = hf.build_mixtral(rng, dtype="BF16")
        mdir = os.path.join(d, "mixtral")
        model.write(mdir)
        ir = os.path.join(d, "m.mlir")
        run([tool("moe-import"), mdir, "-o", ir])
        for fmt in ("fp8_e4m3", "mxfp4"):
            opts = "dtype=" + fmt
            if fmt == "fp8_e4m3":
                opts += " block=%dx%d" % FP8_BLOCK
            q = os.path.join(d, fmt + ".mlir")
            report = run([tool("moe-opt"), ir, "--moe-quantize-experts=" + opts,
                          "-o", q])
            with open(q) as f:
                text = f.read()
            raw = qd.read_raw(os.path.join(d, fmt + ".quant.safetensors"))
            funcs = layer_functions(text)
            deq_model = hf.HFModel(model.arch, model.config, "F32", model.layout)
            deq_model.tensors = dict(model.tensors)
            worst_code, rel_all = 0, {}
            for layer in model.moe_layers:
                _, per, _ = hf._expert_names(model.arch, model.layout, layer)
                prefix = funcs[layer] + ".experts."
                reported = re.search(
                    r"@%s \(layer %d\).*relative error (.*)" % (
                        re.escape(funcs[layer]), layer), report)
                if not reported:
                    errors.append("%s: no report for layer %d:\n%s"
                                  % (fmt, layer, report))
                    continue
                rep = dict((k, float(v)) for k, v in re.findall(
                    r"(\w+) ([0-9.e+-]+)", reported.group(1)))
                for proj, idx in PROJ.items():
                    num, den = 0.0, 0.0
                    for e in range(model.config["num_local_experts"]):
                        w = model.tensors[per[idx] % e][1].astype(np.float32)
                        if fmt == "fp8_e4m3":
                            codes, scales = np_fp8(w, FP8_BLOCK)
                            got_c = qd.array(raw[prefix + proj + ".weight"])[e]
                            got_s = qd.array(
                                raw[prefix + proj + ".weight_scale_inv"])[e]
                            deq = qd.fp8_dequant(got_c, got_s, FP8_BLOCK)
                        else:
                            codes, scales = np_mxfp4(w)
                            got_c = qd.array(raw[prefix + proj + "_blocks"])[e]
                            got_s = qd.array(raw[prefix + proj + "_scales"])[e]
                            deq = qd.mxfp4_dequant(got_c[None], got_s[None])[0]
                        bad = int((codes != got_c).sum())
                        worst_code = max(worst_code, bad)
                        if bad or not np.array_equal(
                                np.asarray(scales).view(np.uint8),
                                np.asarray(got_s).view(np.uint8)):
                            errors.append(
                                "FAIL %s layer %d %s expert %d: %d codes "
                                "differ, scales equal: %s" % (
                                    fmt, layer, proj, e, bad,
                                    np.array_equal(scales, got_s)))
                        diff = w.astype(np.float64) - deq.astype(np.float64)
                        num += float((diff ** 2).sum())
                        den += float((w.astype(np.float64) ** 2).sum())
                        deq_model.tensors[per[idx] % e] = ("F32", deq)
                    rel = np.sqrt(num / den)
                    rel_all.setdefault(proj, []).append(rel)
                    if proj not in rep or abs(rep[proj] - rel) > 1e-3 * rel:
                        errors.append("FAIL %s layer %d %s: reported error %s, "
                                      "numpy %.4e" % (fmt, layer, proj,
                                                      rep.get(proj), rel))
            # The quantized layers on the reference executor vs the float64
            # block with the decoded weights.
            worst, n = 0.0, 0
            for layer in model.moe_layers:
                for t in TS:
                    x = rng.standard_normal((t, hf.H)).astype(np.float32)
                    ref_y, ref = deq_model.block(layer, x)
                    rd = os.path.join(d, "%s-L%d-T%d" % (fmt, layer, t))
                    os.makedirs(rd)
                    y, (ids, w) = qd.run_layer_at(
                        argparse.Namespace(bin=args.bin), q, x, rd, layer)
                    errs, err, _ = compare("%s layer %d T=%d" % (fmt, layer, t),
                                           y, ids, w, ref_y, ref.ids,
                                           ref.weights, ref.fragile, TOL_Y,
                                           TOL_W)
                    errors += errs
                    worst = max(worst, err)
                    n += 1
            print("%s: codes and scales equal numpy's; relative weight error "
                  "%s; %d reference runs, worst output error %.3g" % (
                      fmt, ", ".join("%s %.3e" % (p, max(v))
                                     for p, v in sorted(rel_all.items())),
                      n, worst))
    for e in errors:
        print(e if e.startswith("FAIL") else "FAIL " + e)
    if not errors:
        print("quantize-experts: all checks passed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
