#!/usr/bin/env python3
"""The generated kernels against the reference executor.

Runs `moe-run --backend BACKEND` (the CUDA C++ kernels, on the CPU emulation
or a GPU) and `moe-run --backend reference` (the interpreter) on the same
models and inputs, and compares outputs, selected experts and weights:
every architecture (synthetic models: f32 and bf16 weights, per-expert and
fused layouts, top-k = E so that every expert receives every token), every
example of examples/ (seed methods and the LoRA mixture, weights drawn
here), T in {1, 7, 64, 300} (with T = 1 most experts receive no token).

Expert kernels: a moe.fused_experts of `runtime` layout runs its decode
kernels up to 64 routed slots (T * K, moe::kPerTokenMaxSlots) and the grouped
(tensor-core) kernels above: T = 1 and 7 take the decode path for every
model (K <= 9), T = 300 the grouped path for every model, T = 64 the grouped
path unless K = 1 (Llama 4). --layout grouped|per_token rewrites the layout
of every moe.fused_experts (after moe-opt --moe-optimize, for the reference
and the backend alike) to force one path at every T; --tokens replaces the
token counts; --identical gives every token the same row (so that every
token chooses the same experts: K experts get all T rows, the others none).

  check_backend.py --bin BUILD/bin --examples DIR --backend emu [--seed N]
      [--layout runtime|grouped|per_token] [--tokens 1,7,64,300]
      [--identical] [--synthetic-options "--hidden N ..."]
      [--only SUBSTRING,...] [--compress OPTIONS] [--gemm pipelined|mma|tma]
      [--activation-type bf16]
"""
import argparse
import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "Passes", "Inputs"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "Oracle"))
from check_preserved import (random_weights, layers_of, hidden_of,  # noqa
                             extra_inputs, extra_outputs)
from hf_models import write_safetensors  # noqa: E402

ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
         "deepseek_v3", "gpt_oss", "llama4_text"]
TOKENS = [1, 7, 64, 300]
# f32 activations, f32 accumulation in another order than the reference's
# f64 sums: a few ulps of the largest output. With bf16/f16 activations both
# round each op's result; summing in another order can move a result to the
# next representable value: one ulp of bf16 is 2^-8 of the value.
RTOL = 1e-5
RTOL_HALF = 1e-2
WTOL = 1e-6
# Routing weights that are an RMS norm over ReLU'd logits (BlockFFN) divide
# by the size of the surviving logits: a token whose positive logits are all
# small turns the f32-versus-f64 rounding of the router GEMM (about 3e-6 of
# sum |x_i w_i|) into a relative weight error of 1e-5 or more (seen: 4e-5 at
# seed 19956). Such routers get this tolerance; the expert sets must still
# be identical.
WTOL_RELU_NORM = 1e-4


def example_weights(text, rng):
    """random_weights, with the tensors the IR declares f16 stored as F16
    (write_f16_safetensors)."""
    tensors = random_weights(text, rng)
    pattern = re.compile(r'moe\.weight \[([^\]]*)\] from \[[^\]]*\] : '
                         r'tensor<[0-9x]+xf16>')
    for names in pattern.findall(text):
        for n in re.findall(r'"([^"]*)"', names):
            tensors[n] = ("F16", tensors[n][1])
    return tensors


def write_weights(path, tensors):
    """write_safetensors, plus F16 tensors."""
    if all(dtype != "F16" for dtype, _ in tensors.values()):
        write_safetensors(path, tensors)
        return
    header, blobs, offset = {}, [], 0
    for name, (dtype, values) in tensors.items():
        if dtype == "F16":
            data = np.ascontiguousarray(values, dtype="<f2").tobytes()
        elif dtype == "F32":
            data = np.ascontiguousarray(values, dtype="<f4").tobytes()
        else:  # BF16: round to nearest even
            bits = np.ascontiguousarray(values, dtype="<f4").view("<u4")
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            data = bits.astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(values)),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(" ".join(cmd) + "\n" + r.stderr[-3000:])
    return r.stdout


def run_layer(args, ir, layer, x_path, prefix, backend, target=None,
              extra=(), more=0, results=None):
    """y, ids, weights of the layer; its `more` extra results (moe.output)
    are appended to `results`."""
    cmd = [args.bin + "/moe-run", ir, "--layer", str(layer), "--input", x_path]
    for path in extra:
        cmd += ["--input", path]
    cmd += ["--output", prefix + ".y.npy", "--routing-out", prefix,
            "--backend", backend]
    paths = [prefix + ".extra%d.npy" % i for i in range(more)]
    for path in paths:
        cmd += ["--output", path]
    if target:
        cmd += ["--target", target]
    if backend != "reference":
        cmd += ["--gemm", args.gemm]
    run(cmd)
    if results is not None:
        results += [np.load(p) for p in paths]
    return (np.load(prefix + ".y.npy"), np.load(prefix + ".ids.npy"),
            np.load(prefix + ".weights.npy"))


def compare_routing(tag, ids0, w0, ids1, w1, wtol=WTOL):
    """Same expert sets per token, weights aligned by expert id."""
    if ids0.shape != ids1.shape:
        raise AssertionError(f"{tag}: routing shapes {ids0.shape} vs "
                             f"{ids1.shape}")
    for t in range(ids0.shape[0]):
        a = {int(e): float(w) for e, w in zip(ids0[t], w0[t]) if e >= 0}
        b = {int(e): float(w) for e, w in zip(ids1[t], w1[t]) if e >= 0}
        if set(a) != set(b):
            raise AssertionError(f"{tag}: token {t} selects {sorted(b)}, the "
                                 f"reference {sorted(a)}")
        for e in a:
            if abs(a[e] - b[e]) > wtol + wtol * abs(a[e]):
                raise AssertionError(f"{tag}: token {t} expert {e} weight "
                                     f"{b[e]} vs reference {a[e]}")


def force_layout(args, ir):
    """The optimised IR with every moe.fused_experts in args.layout."""
    if args.layout == "runtime":
        return ir
    fused = run([args.bin + "/moe-opt", "--moe-optimize", ir])
    forced = fused.replace("#moe.layout<runtime>",
                           "#moe.layout<" + args.layout + ">")
    if forced == fused:  # no expert kernels (LoRA mixtures)
        return ir
    # Next to the original: moe.weight_root is relative to the IR file.
    out = ir[:-len(".mlir")] + "." + args.layout + ".mlir"
    with open(out, "w") as f:
        f.write(forced)
    return out


def layer_is_half(text, layer):
    """Whether the layer's activations are bf16/f16."""
    m = re.search(r"func\.func @\w+\(%\w+: tensor<\?x\d+x(\w+)>\).*"
                  r"moe\.layer = " + str(layer) + r" ", text)
    if m is None:  # LoRA targets and unusual signatures: any function
        m = re.search(r"func\.func @\w+\(%\w+: tensor<\?x\d+x(\w+)>", text)
    return m is not None and m.group(1) in ("bf16", "f16")


def compress(args, ir):
    """With --compress OPTIONS: the IR rewritten by --moe-compress-experts
    (factored expert weights), beside the original."""
    if not args.compress:
        return ir
    out = ir[:-len(".mlir")] + ".compressed.mlir"
    run([args.bin + "/moe-opt", ir, "--moe-compress-experts=" + args.compress,
         "-o", out])
    return out


def check_model(args, tag, ir, work, rng, target=None, layers=None):
    ir = force_layout(args, compress(args, ir))
    text = open(ir).read()
    relu_norm = "moe.relu" in text and "moe.rms_norm" in text
    for layer in layers if layers is not None else layers_of(ir):
        rtol = RTOL_HALF if layer_is_half(text, layer) else RTOL
        hidden = hidden_of(ir, layer) if target is None else int(
            re.search(r"func\.func @\w+\(%\w+: tensor<\?x(\d+)x",
                      text).group(1))
        for t in args.tokens:
            if args.identical:
                x = np.repeat(rng.standard_normal((1, hidden)), t,
                              axis=0).astype(np.float32)
            else:
                x = rng.standard_normal((t, hidden)).astype(np.float32)
            xp = os.path.join(work, "x.npy")
            np.save(xp, x)
            extra = extra_inputs(text, layer, t, rng, work)
            more = extra_outputs(text, layer)
            r0, r1 = [], []
            y0, i0, w0 = run_layer(args, ir, layer, xp,
                                   os.path.join(work, "ref"), "reference",
                                   target, extra, more, r0)
            y1, i1, w1 = run_layer(args, ir, layer, xp,
                                   os.path.join(work, "gen"), args.backend,
                                   target, extra, more, r1)
            where = f"{tag} layer {layer} T={t}"
            # Extra results (RMoE's state): f32 sums in another order.
            for i, (a, b) in enumerate(zip(r0, r1)):
                err = float(np.abs(a - b).max(initial=0.0)) / max(
                    float(np.abs(a).max(initial=0.0)), 1e-30)
                if a.shape != b.shape or not err <= rtol:
                    raise AssertionError(f"{where}: extra result {i} differs "
                                         f"from the reference ({err:.3g})")
            compare_routing(where, i0, w0, i1, w1,
                            WTOL_RELU_NORM if relu_norm else WTOL)
            scale = max(float(np.abs(y0).max()), 1e-30)
            err = float(np.abs(y0 - y1).max()) / scale
            args.max_err = max(args.max_err, err)
            if not np.isfinite(y1).all() or err > rtol:
                raise AssertionError(f"{where}: output differs from the "
                                     f"reference (relative {err:.3g} > "
                                     f"{rtol})")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--examples", required=True)
    p.add_argument("--backend", default="emu")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--only", default=None,
                   help="comma-separated substrings of case names")
    p.add_argument("--layout", default="runtime",
                   choices=["runtime", "grouped", "per_token"],
                   help="force the layout of every moe.fused_experts")
    p.add_argument("--tokens", default=",".join(str(t) for t in TOKENS),
                   help="comma-separated token counts")
    p.add_argument("--synthetic-options", default="",
                   help="more moe-import options for the synthetic models "
                   "(sizes: --hidden N --intermediate N --top-k N)")
    p.add_argument("--identical", action="store_true",
                   help="the same row for every token")
    p.add_argument("--gemm", default="pipelined",
                   choices=["pipelined", "mma", "wgmma", "tma"],
                   help="moe-run --gemm of the backend: the grouped GEMMs' "
                   "k loop")
    p.add_argument("--activation-type", default="",
                   help="moe-import --activation-type of the synthetic "
                   "models (default: theirs, f32)")
    p.add_argument("--compress", default="",
                   help="run moe-opt --moe-compress-experts=OPTIONS on every "
                   "model first (factored expert weights)")
    args = p.parse_args()
    args.tokens = [int(t) for t in args.tokens.split(",")]
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    rng = np.random.default_rng(seed)
    work = tempfile.mkdtemp(prefix="moe-backend-")
    cases, failures = 0, 0

    def case(tag, fn):
        nonlocal cases, failures
        if args.only and not any(o in tag for o in args.only.split(",")):
            return
        cases += 1
        try:
            args.max_err = 0.0
            fn()
            print(f"ok   {tag} (max relative error {args.max_err:.3g})",
                  flush=True)
        except (AssertionError, RuntimeError) as e:
            failures += 1
            print(f"FAIL {tag}: {e}", flush=True)

    try:
        variants = [("f32", [], "per-expert"), ("bf16", ["--fused-experts"],
                                                 "fused"),
                    ("f32", ["--top-k", "8"], "all-experts")]
        for arch in ARCHS:
            for dtype, extra, name in variants:
                # Group-limited routers cannot pick every expert.
                if name == "all-experts" and arch.startswith("deepseek"):
                    continue
                tag = f"{arch}/{dtype}/{name}"
                model = os.path.join(work, tag.replace("/", "_"))

                def go(arch=arch, dtype=dtype, extra=extra, model=model,
                       tag=tag):
                    run([args.bin + "/moe-import", "--synthetic", arch,
                         "--dtype", dtype, "--seed", str(seed), "-o", model]
                        + extra + args.synthetic_options.split())
                    ir = model + ".mlir"
                    run([args.bin + "/moe-import", model, "-o", ir] +
                        (["--activation-type", args.activation_type]
                         if args.activation_type else []))
                    check_model(args, tag, ir, work, rng)
                case(tag, go)
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
                check_model(args, tag, ir, work, rng)
            case(tag, go)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{cases - failures} of {cases} models match the reference on "
          f"{args.backend} (seed {seed})")
    if failures:
        print(f"reproduce with: {sys.argv[0]} --bin {args.bin} --examples "
              f"{args.examples} --backend {args.backend} --seed {seed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
