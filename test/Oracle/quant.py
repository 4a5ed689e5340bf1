#!/usr/bin/env python3
"""Quantized experts as released, checked against numpy.

Writes a synthetic DeepSeek-V3 FP8 folder (F8_E4M3 weights with F32
`weight_scale_inv` per block; a 32 x 32 block with hidden 80 and width 48 so
that every matrix has partial edge blocks) and a gpt-oss MXFP4 folder
(`*_blocks`/`*_scales` U8), imports each with moe-import (the quantized IR,
nothing dequantized on disk) and runs the MoE layers with
`moe-run --backend reference` at T in {1, 7, 64, 300}, as imported and
after `moe-opt --moe-optimize`; the optimized layer also runs on
`--backend emu` (the CUDA kernels compiled for the CPU, decoding the codes
in the kernels, moe_quant.cuh) and must match the reference run: within
EMU_TOL (relative to max |y|) where the kernels compute in f32 (the decode
path at T * K <= 64, and the grouped path with MXFP4 weights, which are
exact in its bf16 tiles), within EMU_TOL_FP8_GROUPED on the grouped path
with FP8 weights (each dequantized weight is rounded to bf16 there: at most
2^-9 relative).

The oracle reads the safetensors bytes itself and decodes them with its own
numpy decoders, written from docs/hf-layouts.md (E4M3FN: bias 7,
subnormals, S.1111.111 NaN; E2M1 low nibble first; E8M0 2^(e-127)); the
dequantized weights then go through hf_models.py's float64 blocks of the
two architectures. Outputs must match within 1e-4 relative (f32 model),
expert sets per token exactly (tokens within the routing margin skipped).

With --errors it instead damages copies of the folders and checks that
moe-import (and moe-run's loader) names the tensor or field at fault, and
what an FP8 NaN code does; with --generator it checks that the quantized
folders hold the unquantized folder's weights of the same seed within the
formats' rounding.

  quant.py [--bin DIR] [--seed N] [--errors | --generator] [-v]
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_models as hf  # noqa: E402
from layer_check import compare  # noqa: E402

TS = (1, 7, 64, 300)
TOL_Y, TOL_W = 1e-4, 1e-5
EMU_TOL, EMU_TOL_FP8_GROUPED = 1e-5, 1e-2

# --------------------------------------------------------------------------
# Own decoders (no lookup table shared with the C++ code)
# --------------------------------------------------------------------------


def e4m3fn(codes):
    c = np.asarray(codes, dtype=np.uint8).astype(np.int64)
    s, e, m = c >> 7, (c >> 3) & 15, c & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1.0 + m / 8.0) * 2.0 ** (e - 7))
    v = np.where((e == 15) & (m == 7), np.nan, v)
    return np.where(s == 1, -v, v).astype(np.float32)


def e2m1(nibbles):
    n = np.asarray(nibbles, dtype=np.uint8).astype(np.int64)
    s, e, m = (n >> 3) & 1, (n >> 1) & 3, n & 1
    v = np.where(e == 0, 0.5 * m, (1.0 + 0.5 * m) * 2.0 ** (e - 1))
    return np.where(s == 1, -v, v).astype(np.float32)


def e8m0(codes):
    c = np.asarray(codes, dtype=np.uint8).astype(np.int64)
    return np.where(c == 255, np.nan, 2.0 ** (c - 127.0)).astype(np.float32)


def unpack_fp4(blocks):
    """[..., G, 16] bytes -> [..., G * 32] values, low nibble first."""
    b = np.asarray(blocks, dtype=np.uint8)
    pairs = np.stack([e2m1(b & 0xF), e2m1(b >> 4)], axis=-1)
    return pairs.reshape(b.shape[:-2] + (b.shape[-2] * 32,))


def fp8_dequant(codes, scale_inv, block):
    """w * scale_inv per block, in float32 as DeepSeek's weight_dequant."""
    w = e4m3fn(codes)
    rows, cols = w.shape
    s = np.repeat(np.repeat(scale_inv, block[0], axis=0), block[1], axis=1)
    return (w * s[:rows, :cols].astype(np.float32)).astype(np.float32)


def mxfp4_dequant(blocks, scales):
    """[E, out, G, 16], [E, out, G] -> [E, out, G * 32]."""
    v = unpack_fp4(blocks)
    return (v * np.repeat(e8m0(scales), 32, axis=-1)).astype(np.float32)


# --------------------------------------------------------------------------
# safetensors, raw
# --------------------------------------------------------------------------


def read_raw(path):
    """{name: (dtype, shape, bytes)}."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]),
                     raw[8 + n + b:8 + n + e])
    return out


def write_raw(path, tensors):
    header, blob = {}, b""
    for name, (dtype, shape, data) in sorted(tensors.items()):
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob)


def array(entry):
    dtype, shape, data = entry
    np_type = {"F32": "<f4", "U8": "u1", "F8_E4M3": "u1"}.get(dtype)
    if dtype == "BF16":
        return hf.bf16_to_f32(np.frombuffer(data, dtype="<u2")).reshape(shape)
    if np_type is None:
        raise ValueError("dtype " + dtype)
    return np.frombuffer(data, dtype=np_type).reshape(shape)


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------


def tool(args, name):
    return os.path.join(args.bin, name) if args.bin else name


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def synthesize(args, d, arch, quant, extra):
    mdir = os.path.join(d, arch)
    cmd = [tool(args, "moe-import"), "--synthetic", arch, "--quant", quant,
           "--dtype", "f32", "--seed", str(args.seed), "-o", mdir] + extra
    rc, out = run(cmd)
    if rc != 0:
        raise AssertionError(" ".join(cmd) + " failed:\n" + out)
    return mdir


def oracle_model(mdir):
    """An hf_models.HFModel holding the dequantized weights under the
    unquantized names its blocks read."""
    with open(os.path.join(mdir, "config.json")) as f:
        cfg = json.load(f)
    raw = read_raw(os.path.join(mdir, "model.safetensors"))
    arch = cfg["model_type"]
    q = cfg["quantization_config"]
    m = hf.HFModel(arch, cfg, "F32", "per_expert" if arch == "deepseek_v3"
                   else "fused")
    stats = {"quantized_bytes": 0, "bf16_bytes": 0}
    for name, entry in raw.items():
        if name.endswith("_scale_inv") or name.endswith("_scales"):
            continue
        if entry[0] == "F8_E4M3":
            assert q["quant_method"] == "fp8"
            w = fp8_dequant(array(entry), array(raw[name + "_scale_inv"]),
                            q["weight_block_size"])
            m.tensors[name] = ("F32", w)
            stats["quantized_bytes"] += len(entry[2]) + len(raw[name + "_scale_inv"][2])
            stats["bf16_bytes"] += 2 * w.size
        elif name.endswith("_blocks"):
            assert q["quant_method"] == "mxfp4"
            base = name[:-len("_blocks")]
            w = mxfp4_dequant(array(entry), array(raw[base + "_scales"]))
            # hf_models' gpt-oss block reads the bf16 layout [E, in, out].
            m.tensors[base] = ("F32", np.ascontiguousarray(w.transpose(0, 2, 1)))
            stats["quantized_bytes"] += len(entry[2]) + len(raw[base + "_scales"][2])
            stats["bf16_bytes"] += 2 * w.size
        else:
            m.tensors[name] = ("F32", array(entry).astype(np.float32))
    return m, stats


def check_model(args, d, mdir, label):
    ir = os.path.join(d, label + ".mlir")
    rc, out = run([tool(args, "moe-import"), mdir, "-o", ir])
    if rc != 0:
        return ["%s: moe-import failed:\n%s" % (label, out)], 0
    with open(ir) as f:
        text = f.read()
    for want in ("quant_block",):
        if want not in text:
            return ["%s: the imported IR has no %s" % (label, want)], 0
    # The optimized layer (fused_experts holding the quantized FFNs) must
    # compute the same on the reference executor.
    opt = os.path.join(d, label + ".opt.mlir")
    rc, out = run([tool(args, "moe-opt"), "--moe-optimize", ir, "-o", opt])
    if rc != 0:
        return ["%s: moe-opt --moe-optimize failed:\n%s" % (label, out)], 0
    with open(opt) as f:
        if "moe.fused_experts" not in f.read():
            return ["%s: --moe-optimize fused no layer" % label], 0
    m, stats = oracle_model(mdir)
    errors, n, worst = [], 0, 0.0
    emu_worst, emu_runs = {False: 0.0, True: 0.0}, [0]
    rng = np.random.default_rng(args.seed)
    for layer in m.moe_layers:
        for t in TS:
            x = rng.standard_normal(
                (t, m.config["hidden_size"])).astype(np.float32)
            ref_y, ref = m.block(layer, x)
            rd = os.path.join(d, "%s-L%d-T%d" % (label, layer, t))
            os.makedirs(rd)
            # layer_check.run_layer runs --layer 0; this names the layer.
            for form, path in (("imported", ir), ("optimized", opt)):
                fd = os.path.join(rd, form)
                os.makedirs(fd)
                y, routing = run_layer_at(args, path, x, fd, layer)
                ids, w = routing
                if form == "optimized":
                    emu = os.path.join(fd, "emu.npy")
                    rc, out = run([tool(args, "moe-run"), path, "--layer",
                                   str(layer), "--input",
                                   os.path.join(fd, "x.npy"), "--output",
                                   emu, "--backend", "emu"])
                    if rc != 0:
                        errors.append("%s layer %d T=%d: --backend emu "
                                      "failed:\n%s" % (label, layer, t,
                                                       out[-1500:]))
                    else:
                        ye = np.load(emu)
                        k = m.config.get("num_experts_per_tok", 1)
                        grouped_fp8 = t * k > 64 and "fp8" in label
                        tol = EMU_TOL_FP8_GROUPED if grouped_fp8 else EMU_TOL
                        rel = float(np.max(np.abs(ye - y)) /
                                    max(np.max(np.abs(y)), 1e-30))
                        emu_worst[grouped_fp8] = max(emu_worst[grouped_fp8],
                                                     rel)
                        emu_runs[0] += 1
                        if not rel <= tol:
                            errors.append("%s layer %d T=%d: emu differs from "
                                          "the reference by %.3g of max |y| "
                                          "(tolerance %g)" % (label, layer, t,
                                                              rel, tol))
                tag = "%s %s layer %d T=%d" % (label, form, layer, t)
                errs, err, _ = compare(tag, y, ids, w, ref_y, ref.ids,
                                       ref.weights, ref.fragile, TOL_Y, TOL_W)
                worst = max(worst, err)
                errors += errs
                n += 1
                if args.v:
                    print("%s: output error %.3g" % (tag, err))
    print("%s: %d emu runs match the reference, worst %.3g of max |y| "
          "(f32 paths), %.3g (FP8 grouped, bf16 tiles)"
          % (label, emu_runs[0], emu_worst[False], emu_worst[True]))
    print("%s: %d runs, worst output error %.3g; expert bytes %d quantized "
          "(codes + scales) vs %d as bf16 (%.3fx)"
          % (label, n, worst, stats["quantized_bytes"], stats["bf16_bytes"],
             stats["quantized_bytes"] / stats["bf16_bytes"]))
    return errors, n


def run_layer_at(args, ir, x, d, layer):
    yp, prefix, xp = (os.path.join(d, "y.npy"), os.path.join(d, "routing"),
                      os.path.join(d, "x.npy"))
    np.save(xp, x)
    cmd = [tool(args, "moe-run"), ir, "--layer", str(layer), "--input", xp,
           "--output", yp, "--routing-out", prefix, "--backend", "reference"]
    rc, out = run(cmd)
    if rc != 0:
        raise AssertionError("moe-run failed:\n" + out[-2000:])
    return np.load(yp), (np.load(prefix + ".ids.npy"),
                         np.load(prefix + ".weights.npy"))


def check_generator(args, d, mdir, arch, extra):
    """The quantized folder holds the weights of the unquantized folder of
    the same seed and sizes, within the format's rounding: FP8 within half
    an E4M3 step (2^-4 relative, 2^-10 x scale in the subnormal range),
    MXFP4 within 2 x the group's scale (E2M1 steps of up to 2, values in
    [6, 8) x scale saturating at 6). A transposed or de-interleaved layout
    in the generator would be far outside."""
    plain = os.path.join(d, arch + "-plain")
    cmd = [tool(args, "moe-import"), "--synthetic", arch, "--dtype", "f32",
           "--seed", str(args.seed), "-o", plain] + extra
    rc, out = run(cmd)
    if rc != 0:
        return ["%s: %s failed:\n%s" % (arch, " ".join(cmd), out)]
    want = {k: array(v) for k, v in
            read_raw(os.path.join(plain, "model.safetensors")).items()}
    m, _ = oracle_model(mdir)
    errors, checked = [], 0
    for name, (_, got) in m.tensors.items():
        if name not in want:
            errors.append("%s: '%s' has no unquantized counterpart" % (arch, name))
            continue
        w = want[name].astype(np.float64)
        if got.shape != w.shape:
            errors.append("%s: '%s' shape %s, unquantized %s"
                          % (arch, name, got.shape, w.shape))
            continue
        err = np.abs(got.astype(np.float64) - w)
        if arch == "deepseek_v3" and ".experts." in name or "shared_experts" in name:
            raw = read_raw(os.path.join(mdir, "model.safetensors"))
            s = array(raw[name + "_scale_inv"]).astype(np.float64)
            b = m.config["quantization_config"]["weight_block_size"]
            s = np.repeat(np.repeat(s, b[0], 0), b[1], 1)[:w.shape[0], :w.shape[1]]
            bound = np.maximum(np.abs(w) * 2.0 ** -4, s * 2.0 ** -10) * (1 + 1e-6)
        elif arch == "gpt_oss" and name.endswith(("gate_up_proj", "down_proj")):
            raw = read_raw(os.path.join(mdir, "model.safetensors"))
            sc = e8m0(array(raw[name + "_scales"])).astype(np.float64)
            bound = 2.0 * np.repeat(sc, 32, axis=-1).transpose(0, 2, 1)
        else:
            bound = np.zeros_like(w)
        if (err > bound).any():
            errors.append("%s: '%s' differs from the unquantized weight by "
                          "%.3g (bound %.3g at the worst element)"
                          % (arch, name, float(err.max()),
                             float(bound.flat[int(np.argmax(err - bound))])))
        checked += 1
    if not errors:
        print("%s: %d tensors hold the unquantized model's weights within "
              "the format's rounding" % (arch, checked))
    return errors


def check_decoders():
    """The numpy decoders against a few values written down by hand."""
    want = {0x00: 0.0, 0x01: 2.0 ** -9, 0x08: 2.0 ** -6, 0x38: 1.0,
            0x7E: 448.0, 0xFE: -448.0, 0x78: 256.0, 0xB0: -0.5}
    for c, v in want.items():
        assert e4m3fn([c])[0] == v, hex(c)
    assert np.isnan(e4m3fn([0x7F, 0xFF])).all()
    assert list(e2m1(range(8))) == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert list(e2m1(range(8, 16))) == [-0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    assert list(unpack_fp4(np.array([[0x72] + [0] * 15]))[:2]) == [1.0, 6.0]
    assert e8m0([127])[0] == 1.0 and e8m0([0])[0] == 2.0 ** -127
    assert np.isnan(e8m0([255])[0])


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def damaged(src, d, label, config_edit=None, tensor_edit=None):
    dst = os.path.join(d, "bad-" + label)
    shutil.copytree(src, dst)
    if config_edit:
        p = os.path.join(dst, "config.json")
        with open(p) as f:
            cfg = json.load(f)
        config_edit(cfg)
        with open(p, "w") as f:
            json.dump(cfg, f)
    if tensor_edit:
        p = os.path.join(dst, "model.safetensors")
        t = read_raw(p)
        tensor_edit(t)
        write_raw(p, t)
    return dst


def check_errors(args, d, fp8, mx):
    e0 = "model.layers.1.mlp.experts.0.gate_proj.weight"
    gu = "model.layers.0.mlp.experts.gate_up_proj"

    def set_method(m):
        return lambda c: c["quantization_config"].update(quant_method=m)

    def drop(name):
        return lambda t: t.pop(name)

    def reshape(name, shape):
        def edit(t):
            dt, _, data = t[name]
            t[name] = (dt, shape, data[:int(np.prod(shape)) * (4 if dt == "F32" else 1)])
        return edit

    def truncate(name):
        def edit(t):
            dt, shape, data = t[name]
            t[name] = (dt, shape, data[:-4])
        return edit

    cases = [
        (fp8, "method", dict(config_edit=set_method("awq")),
         "'quantization_config.quant_method' is 'awq'; moe-import reads 'fp8'"),
        (fp8, "no-config", dict(config_edit=lambda c: c.pop("quantization_config")),
         "tensor '%s' has dtype F8_E4M3 but" % e0),
        (fp8, "block", dict(config_edit=lambda c: c["quantization_config"].update(
            weight_block_size=[32])),
         "'quantization_config.weight_block_size' must be two positive integers"),
        (fp8, "no-scale", dict(tensor_edit=drop(e0 + "_scale_inv")),
         "tensor '%s' is F8_E4M3 but '%s_scale_inv' (its block scales) is missing"
         % (e0, e0)),
        (fp8, "scale-shape", dict(tensor_edit=reshape(e0 + "_scale_inv", (1, 3))),
         "tensor '%s_scale_inv' has shape [1, 3]" % e0),
        (fp8, "truncated-scale", dict(tensor_edit=truncate(e0 + "_scale_inv")),
         "%s_scale_inv" % e0),
        (mx, "mx-method", dict(config_edit=lambda c: c.pop("quantization_config")),
         "'%s_blocks' is MXFP4 but" % gu),
        (mx, "mx-no-scales", dict(tensor_edit=drop(gu + "_scales")),
         "tensor '%s_blocks' is MXFP4 but '%s_scales' (its E8M0 scales) is missing"
         % (gu, gu)),
        (mx, "mx-scale-shape", dict(tensor_edit=reshape(gu + "_scales", (4, 128, 1))),
         "tensor '%s_scales' has shape [4, 128, 1]" % gu),
        (mx, "mx-truncated", dict(tensor_edit=truncate(gu + "_blocks")),
         "%s_blocks" % gu),
    ]
    errors = []
    for src, label, edit, want in cases:
        bad = damaged(src, d, label, **edit)
        rc, out = run([tool(args, "moe-import"), bad, "-o",
                       os.path.join(d, label + ".mlir")])
        if rc == 0 or want not in out or "Assertion" in out or "Stack dump" in out:
            errors.append("%s: expected a clean error containing %r, got rc %d:\n%s"
                          % (label, want, rc, out[-800:]))
        elif args.v:
            print("%s: %s" % (label, out.strip().splitlines()[-1]))
    print("%d of %d damaged folders refused with the expected message"
          % (len(cases) - len(errors), len(cases)))
    return errors + check_load_errors(args, d, mx) + check_nan_code(args, d, fp8)


def check_load_errors(args, d, mx):
    """A folder changed after import: moe-run's loader names the tensor whose
    stored dtype or packed shape no longer fits the quantized IR."""
    gu = "model.layers.0.mlp.experts.gate_up_proj"
    x = np.zeros((3, 64), np.float32)

    def half_blocks(t):
        dt, shape, data = t[gu + "_blocks"]
        t[gu + "_blocks"] = (dt, shape[:-1] + (8,), data[:len(data) // 2])

    def f8_scales(t):
        _, shape, data = t[gu + "_scales"]
        t[gu + "_scales"] = ("F8_E4M3", shape, data)
    cases = [
        ("blocks-shape", half_blocks,
         "tensor '%s_blocks' has shape [8, 128, 2, 8] but the IR's f4E2M1FN "
         "[8, 128, 64] needs [8, 128, 32] or [8, 128, 2, 16] bytes" % gu),
        ("scales-dtype", f8_scales,
         "tensor '%s_scales' is F8_E4M3 but the IR declares U8 (f8E8M0FNU "
         "codes)" % gu),
    ]
    errors = []
    for label, edit, want in cases:
        # Imported intact, damaged afterwards.
        folder = damaged(mx, d, "load-" + label)
        ir = os.path.join(folder, "model.mlir")
        rc, out = run([tool(args, "moe-import"), folder, "-o", ir])
        if rc != 0:
            return ["load: moe-import failed:\n" + out]
        st = os.path.join(folder, "model.safetensors")
        t = read_raw(st)
        edit(t)
        write_raw(st, t)
        xp = os.path.join(d, "load-x.npy")
        np.save(xp, x)
        rc, out = run([tool(args, "moe-run"), ir,
                       "--layer", "0", "--input", xp, "--output",
                       os.path.join(d, "load-y.npy"), "--backend", "reference"])
        if rc == 0 or want not in out or "Stack dump" in out:
            errors.append("load %s: expected an error containing %r, got rc "
                          "%d:\n%s" % (label, want, rc, out[-800:]))
        elif args.v:
            print("load %s: %s" % (label, out.strip().splitlines()[-1]))
    if not errors:
        print("%d damaged folders refused by moe-run's loader" % len(cases))
    return errors


def check_nan_code(args, d, fp8):
    """An FP8 NaN code (0x7F) in one weight of expert 0 of layer 1: the
    reference decodes it to NaN, so exactly the tokens routed to expert 0
    get NaN outputs; every other token's output is unchanged, bit for bit."""
    name = "model.layers.1.mlp.experts.0.gate_proj.weight"

    def poison(t):
        dt, shape, data = t[name]
        t[name] = (dt, shape, b"\x7f" + data[1:])
    bad = damaged(fp8, d, "nan", tensor_edit=poison)
    x = np.random.default_rng(args.seed).standard_normal((64, 80)).astype(np.float32)
    outs = []
    for label, mdir in (("clean", fp8), ("nan", bad)):
        ir = os.path.join(d, "nan-%s.mlir" % label)
        rc, out = run([tool(args, "moe-import"), mdir, "-o", ir])
        if rc != 0:
            return ["nan: moe-import failed:\n" + out]
        rd = os.path.join(d, "nan-run-" + label)
        os.makedirs(rd)
        outs.append(run_layer_at(args, ir, x, rd, 1))
    (y0, (ids, _)), (y1, _) = outs
    hit = (ids == 0).any(axis=1)
    errors = []
    if not hit.any() or hit.all():
        errors.append("nan: expert 0 takes %d of 64 tokens; the case needs "
                      "some but not all" % int(hit.sum()))
    if not np.isnan(y1[hit]).all():
        errors.append("nan: a token routed to expert 0 has a non-NaN output")
    if not np.array_equal(y1[~hit], y0[~hit]):
        errors.append("nan: tokens not routed to expert 0 changed")
    if not errors:
        print("NaN code: %d tokens routed to the expert are NaN, the other %d "
              "unchanged" % (int(hit.sum()), int((~hit).sum())))
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--errors", action="store_true")
    ap.add_argument("--generator", action="store_true",
                    help="check the synthetic folders against the "
                    "unquantized ones of the same seed")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    check_decoders()
    with tempfile.TemporaryDirectory() as d:
        ds_sizes = ["--hidden", "80", "--intermediate", "48"]
        mx_sizes = ["--hidden", "64", "--intermediate", "64"]
        fp8 = synthesize(args, d, "deepseek_v3", "fp8",
                         ["--quant-block", "32"] + ds_sizes)
        mx = synthesize(args, d, "gpt_oss", "mxfp4", mx_sizes)
        if args.generator:
            errors = (check_generator(args, d, fp8, "deepseek_v3", ds_sizes) +
                      check_generator(args, d, mx, "gpt_oss", mx_sizes))
        elif args.errors:
            errors = check_errors(args, d, fp8, mx)
        else:
            errors, runs = [], 0
            for mdir, label in ((fp8, "deepseek_v3 fp8"), (mx, "gpt_oss mxfp4")):
                e, n = check_model(args, d, mdir, label.replace(" ", "-"))
                errors += e
                runs += n
            if not errors:
                print("%d quantized runs match the numpy oracle" % runs)
    for e in errors:
        print("FAIL: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
