#!/usr/bin/env python3
"""Semantic preservation of --moe-optimize, measured with the reference
executor: for every architecture (synthetic models, f32 and bf16 weights,
per-expert and fused layouts) and every example of examples/ (weights drawn
here), each MoE layer gives the same output and routing before and after the
pipeline, on fresh random inputs for several token counts.

  check_preserved.py --bin BUILD/bin --examples DIR [--seed N]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "Oracle"))
from hf_models import write_safetensors  # noqa: E402

ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
         "deepseek_v3", "gpt_oss", "llama4_text"]
TOKENS = [1, 7, 64, 300]
RTOL = 1e-6


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(" ".join(cmd) + "\n" + r.stderr)
    return r.stdout


def layers_of(ir_path):
    text = open(ir_path).read()
    return sorted({int(m) for m in re.findall(r"moe\.layer = (\d+)", text)})


def hidden_of(ir_path, layer):
    text = open(ir_path).read()
    # Extra inputs (moe.input arguments) may follow x.
    m = re.search(r"func\.func @\w+\(%\w+: tensor<\?x(\d+)x\w+>[,)][^\n]*"
                  r"moe\.layer = " + str(layer) + r" ", text)
    return int(m.group(1))


def layer_function(text, layer):
    """The text of the layer function of `layer` (signature and body)."""
    m = re.search(r"func\.func @\w+\([^\n]*moe\.layer = " + str(layer) +
                  r" [^\n]*\n", text)
    if m is None:
        return ""
    end = text.find("func.func", m.end())
    return text[m.start():end if end >= 0 else len(text)]


def extra_inputs(text, layer, t, rng, work):
    """Files for the layer's extra inputs (moe.input arguments), in argument
    order: f32 tensors with their dynamic dimension 0 as B = 3 sequences,
    except a moe.gru_cell state (T rows in [-1, 1]); i32 vectors as a
    token-to-sequence map of T entries in [0, 3)."""
    m = re.search(r"func\.func @\w+\(([^)]*)\)[^\n]*moe\.layer = " +
                  str(layer) + r" ", text)
    if m is None:
        return []
    body = layer_function(text, layer)
    paths = []
    for n, (arg, dims, dtype) in enumerate(re.findall(
            r"%(\w+): tensor<([?\dx]*?)x?(f32|i32)>\s*\{moe\.input",
            m.group(1))):
        if dtype == "i32":
            a = np.sort(rng.integers(0, 3, t)).astype(np.int32)
        elif re.search(r"moe\.gru_cell %\w+, %" + arg + r"\b", body):
            shape = [t if d == "?" else int(d) for d in dims.split("x") if d]
            a = rng.uniform(-1, 1, shape).astype(np.float32)
        else:
            shape = [3 if d == "?" else int(d) for d in dims.split("x") if d]
            a = rng.normal(0, 2.0, shape).astype(np.float32)
        paths.append(os.path.join(work, "extra%d.npy" % n))
        np.save(paths[-1], a)
    return paths


def extra_outputs(text, layer):
    """The number of extra results (moe.output) of the layer function."""
    m = re.search(r"func\.func @\w+\([^\n]*moe\.layer = " + str(layer) +
                  r" ", text)
    return m.group(0).count("{moe.output") if m else 0


def compare(args, tag, before, after, layer, rng, work):
    hidden = hidden_of(before, layer)
    for t in TOKENS:
        x = rng.standard_normal((t, hidden)).astype(np.float32)
        xp = os.path.join(work, "x.npy")
        np.save(xp, x)
        outs = []
        extra = []
        for path in extra_inputs(open(before).read(), layer, t, rng, work):
            extra += ["--input", path]
        more = extra_outputs(open(before).read(), layer)
        results = []
        for name, ir in (("before", before), ("after", after)):
            prefix = os.path.join(work, name)
            paths = [prefix + ".extra%d.npy" % i for i in range(more)]
            run([args.bin + "/moe-run", ir, "--layer", str(layer), "--input",
                 xp] + extra + ["--output", prefix + ".y.npy",
                                "--routing-out", prefix] +
                sum([["--output", p] for p in paths], []))
            outs.append((np.load(prefix + ".y.npy"),
                         np.load(prefix + ".ids.npy"),
                         np.load(prefix + ".weights.npy")))
            results.append([np.load(p) for p in paths])
        for i, (r0, r1) in enumerate(zip(*results)):
            err = float(np.abs(r0 - r1).max(initial=0.0)) / max(
                float(np.abs(r0).max(initial=0.0)), 1e-30)
            if r0.shape != r1.shape or err > RTOL:
                raise AssertionError(f"{tag} layer {layer} T={t}: extra "
                                     f"result {i} differs")
        (y0, i0, w0), (y1, i1, w1) = outs
        scale = max(float(np.abs(y0).max()), 1e-30)
        err = float(np.abs(y0 - y1).max()) / scale
        if err > RTOL:
            raise AssertionError(f"{tag} layer {layer} T={t}: output differs "
                                 f"(relative {err:.3g} > {RTOL})")
        if not np.array_equal(i0, i1):
            raise AssertionError(f"{tag} layer {layer} T={t}: routing ids "
                                 "differ")
        if float(np.abs(w0 - w1).max(initial=0.0)) > 1e-6:
            raise AssertionError(f"{tag} layer {layer} T={t}: routing "
                                 "weights differ")


def check_model(args, tag, ir, work, rng):
    opt = ir[:-len(".mlir")] + ".opt.mlir"
    run([args.bin + "/moe-opt", "--moe-optimize", ir, "-o", opt])
    text = open(opt).read()
    # The only dispatch left is that of a layer's given routing (its ids
    # argument, dispatched as it is: no router to fuse).
    unfused = [line for line in text.splitlines() if "moe.dispatch" in line
               and not re.search(r"moe\.dispatch %arg1 ", line)]
    if unfused or ("moe.fused_route" not in text
                    and "moe.fused_experts" not in text):
        raise AssertionError(f"{tag}: --moe-optimize did not fuse")
    for layer in layers_of(ir):
        compare(args, tag, ir, opt, layer, rng, work)


def random_weights(ir_text, rng):
    """Random values for every moe.weight of an example, by name."""
    tensors = {}
    pattern = re.compile(r'moe\.weight \[([^\]]*)\] from \[[^\]]*\] : '
                         r'tensor<([0-9x]+)x(f32|bf16|f16)>')
    for names, shape, dtype in pattern.findall(ir_text):
        names = re.findall(r'"([^"]*)"', names)
        dims = [int(d) for d in shape.split("x")]
        if len(names) > 1:
            dims = dims[1:]
        for n in names:
            scale = 1.0 / np.sqrt(dims[-1])
            tensors[n] = ("BF16" if dtype == "bf16" else "F32",
                          (rng.standard_normal(dims) * scale).astype(np.float32))
    return tensors


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--examples", required=True)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    rng = np.random.default_rng(seed)
    work = tempfile.mkdtemp(prefix="moe-preserve-")
    failures = 0
    cases = 0
    try:
        for arch in ARCHS:
            for dtype, fused in (("f32", False), ("bf16", True)):
                tag = f"{arch}/{dtype}{'/fused' if fused else ''}"
                model = os.path.join(work, tag.replace("/", "_"))
                cmd = [args.bin + "/moe-import", "--synthetic", arch, "--dtype",
                       dtype, "--seed", str(seed), "-o", model]
                if fused:
                    cmd.append("--fused-experts")
                try:
                    run(cmd)
                    ir = model + ".mlir"
                    run([args.bin + "/moe-import", model, "-o", ir])
                    check_model(args, tag, ir, work, rng)
                    print(f"ok   {tag}")
                except (AssertionError, RuntimeError) as e:
                    failures += 1
                    print(f"FAIL {tag}: {e}")
                cases += 1
        for example in sorted(glob.glob(os.path.join(args.examples, "*.mlir"))):
            tag = "example/" + os.path.basename(example)
            d = os.path.join(work, "example_" + os.path.basename(example)[:-5])
            os.makedirs(d)
            text = open(example).read()
            tensors = random_weights(text, rng)
            files = set(re.findall(r'from \["([^"]*)"\]', text))
            for f in files:
                os.makedirs(os.path.dirname(os.path.join(d, f)), exist_ok=True)
                write_safetensors(os.path.join(d, f), tensors)
            ir = os.path.join(d, "model.mlir")
            shutil.copy(example, ir)
            try:
                check_model(args, tag, ir, work, rng)
                print(f"ok   {tag}")
            except (AssertionError, RuntimeError) as e:
                failures += 1
                print(f"FAIL {tag}: {e}")
            cases += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{cases - failures} of {cases} models preserved (seed {seed})")
    if failures:
        print(f"reproduce with: {sys.argv[0]} --bin {args.bin} "
              f"--examples {args.examples} --seed {seed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
