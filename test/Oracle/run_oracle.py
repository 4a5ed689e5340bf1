#!/usr/bin/python3
"""Independent numpy oracle for moe-import and moe-run.

Writes random Hugging Face model folders (and LoRA adapters, and hand-made IR
for the seed routing methods), runs the tools on them and compares outputs,
selected experts and routing weights with float64 numpy implementations of
each architecture. See README.md in this folder.

  run_oracle.py [--group G ...] [--case NAME ...] [--seed N] [--bin DIR]
  run_oracle.py --self-test          # python side only, no tools needed
"""

import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import hf_models as hf  # noqa: E402
import seed_methods as seeds  # noqa: E402

T_VALUES = (1, 7, 64, 300)
TOL_F32 = 1e-5  # max|y - ref| / max|ref|
TOL_BF16 = 1e-2
TOL_W_ABS = 1e-6  # |w - ref| <= TOL_W_ABS + TOL_W_REL * |ref|
TOL_W_REL = 1e-6

# --------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------


class Case:
    def __init__(self, group, name, kind, **params):
        self.group, self.name, self.kind, self.params = group, name, kind, params


CASES = []


def _hf(group, name, arch, dtype="F32", layout=None, shards=1, wscale=1.0, **kw):
    CASES.append(Case(group, name, "hf", arch=arch, dtype=dtype, layout=layout,
                      shards=shards, wscale=wscale, kw=kw))


# hf-f32: every architecture and routing variant, F32 weights, one file.
_hf("hf-f32", "mixtral", "mixtral")
# Router logits of about +-100: softmax must subtract the row maximum, and
# probabilities underflow in float32. float32 logits of that size carry
# errors ~1e-5 that the softmax passes on to the weights: 10x the weight
# tolerance.
_hf("hf-f32", "mixtral-sharp", "mixtral", router_scale=60.0 / 8, layers=1,
    wscale=10.0)
_hf("hf-f32", "qwen2_moe", "qwen2_moe", norm=False)
_hf("hf-f32", "qwen2_moe-norm", "qwen2_moe", norm=True, layers=2, sparse_step=1,
    mlp_only=(), experts=8, k=2)
# Optional config keys left out: decoder_sparse_step = 1,
# mlp_only_layers = [], norm_topk_prob = False (Qwen2MoeConfig defaults).
_hf("hf-f32", "qwen2_moe-defaults", "qwen2_moe", layers=2, experts=8, k=2,
    override={"decoder_sparse_step": None, "mlp_only_layers": None,
              "norm_topk_prob": None})
_hf("hf-f32", "qwen3_moe", "qwen3_moe")
_hf("hf-f32", "olmoe", "olmoe", norm=False)
_hf("hf-f32", "deepseek_v2-greedy", "deepseek_v2", topk_method="greedy")
_hf("hf-f32", "deepseek_v2-group", "deepseek_v2", topk_method="group_limited_greedy",
    n_group=4, topk_group=2, k=3, scaling=16.0, layers=3, freq=1)
_hf("hf-f32", "deepseek_v2-norm", "deepseek_v2", topk_method="greedy", norm=True,
    layers=2, freq=1, experts=8, k=3)
_hf("hf-f32", "deepseek_v3", "deepseek_v3")
_hf("hf-f32", "deepseek_v3-negbias", "deepseek_v3", bias="negative", layers=2)
_hf("hf-f32", "deepseek_v3-nogroup", "deepseek_v3", n_group=1, topk_group=1,
    norm=False, scaling=1.0, layers=2, experts=8, k=2)
_hf("hf-f32", "gpt_oss", "gpt_oss")
_hf("hf-f32", "gpt_oss-k4", "gpt_oss", experts=16, k=4, inter=32, layers=1)
# swiglu_limit from the config (getattr(config, "swiglu_limit", 7.0) in HF).
_hf("hf-f32", "gpt_oss-limit5", "gpt_oss", limit=5.0, layers=1)
_hf("hf-f32", "llama4_text", "llama4_text")
_hf("hf-f32", "llama4_text-k2", "llama4_text", k=2, layers=2, step=2)
# An explicit moe_layers list wins over interleave_moe_layer_step.
_hf("hf-f32", "llama4_text-moe_layers", "llama4_text", layers=4, step=1,
    override={"moe_layers": [0, 3]})

# hf-bf16: the same architectures with BF16 weights.
_hf("hf-bf16", "mixtral-bf16", "mixtral", "BF16", experts=16, k=2, inter=64)
_hf("hf-bf16", "qwen2_moe-bf16", "qwen2_moe", "BF16", layers=4, mlp_only=())
_hf("hf-bf16", "qwen3_moe-bf16", "qwen3_moe", "BF16", norm=False, experts=8, k=2)
_hf("hf-bf16", "olmoe-bf16", "olmoe", "BF16", norm=True, experts=8, k=2)
_hf("hf-bf16", "deepseek_v2-group-bf16", "deepseek_v2", "BF16",
    topk_method="group_limited_greedy", n_group=8, topk_group=3, k=4, layers=2,
    freq=1, scaling=2.0)
_hf("hf-bf16", "deepseek_v3-bf16", "deepseek_v3", "BF16", n_group=8, topk_group=4,
    k=6, shared=2)
_hf("hf-bf16", "gpt_oss-bf16", "gpt_oss", "BF16", experts=16, k=4, inter=32)
_hf("hf-bf16", "llama4_text-bf16", "llama4_text", "BF16", experts=16, layers=2,
    step=1)

# hf-fused: the 3-D expert layout of transformers v5 for a per-expert
# architecture (see README.md).
_hf("hf-fused", "qwen3_moe-fused", "qwen3_moe", layout="fused")
_hf("hf-fused", "qwen3_moe-fused-bf16", "qwen3_moe", "BF16", layout="fused",
    experts=8, k=2, inter=64, shards=2)

# sharded: model-0000i-of-0000N.safetensors + model.safetensors.index.json.
_hf("sharded", "mixtral-3shards", "mixtral", shards=3, layers=3)
_hf("sharded", "qwen2_moe-2shards", "qwen2_moe", shards=2, layers=4, mlp_only=())
_hf("sharded", "deepseek_v3-4shards-bf16", "deepseek_v3", "BF16", shards=4)
_hf("sharded", "gpt_oss-2shards-bf16", "gpt_oss", "BF16", shards=2, layers=3)

# lora: PEFT adapters on a base q_proj, plain and routed.
CASES.append(Case("lora", "lora-plain", "lora", arch="qwen2_moe", dtype="F32",
                  out=64, bias=True,
                  adapters=[dict(rank=8, alpha=16, rslora=False)], router=None))
CASES.append(Case("lora", "lora-mixture", "lora", arch="qwen3_moe", dtype="F32",
                  out=96, bias=False,
                  adapters=[dict(rank=4, alpha=8, rslora=False),
                            dict(rank=8, alpha=16, rslora=True),
                            dict(rank=16, alpha=8, rslora=False)],
                  router=dict(top_k=2, norm=True, bias=True)))
CASES.append(Case("lora", "lora-mixture-top1-bf16", "lora", arch="mixtral",
                  dtype="BF16", out=64, bias=False,
                  adapters=[dict(rank=8, alpha=8, rslora=False),
                            dict(rank=2, alpha=4, rslora=True)],
                  router=dict(top_k=1, norm=False, bias=False)))

# seeds: hand-written IR for the routing methods of the seed papers.
for _name in seeds.SEED_CASES:
    CASES.append(Case("seeds", "seed-" + _name, "seed", seed_case=_name))

# nongated: non-gated experts (BlockFFN, Switch/T5), same runner.
for _name in seeds.NONGATED_CASES:
    CASES.append(Case("nongated", "seed-" + _name, "seed", seed_case=_name))

GROUPS = ["hf-f32", "hf-bf16", "hf-fused", "sharded", "lora", "seeds",
          "nongated"]

# --------------------------------------------------------------------------
# Running the tools
# --------------------------------------------------------------------------


class Failure(Exception):
    pass


class Context:
    def __init__(self, args, seed, case, workdir):
        self.args, self.seed, self.case, self.workdir = args, seed, case, workdir
        self.lines = []  # details, printed on failure or with -v
        self.failures = []
        self.stats = {"runs": 0, "y_err": 0.0, "w_err": 0.0, "fragile": 0}
        self.info = {}

    def rng(self, *salt):
        return np.random.default_rng([self.seed, zlib.crc32(self.case.name.encode())]
                                     + [int(s) for s in salt])

    def tool(self, name):
        if self.args.bin:
            return os.path.join(self.args.bin, name)
        return shutil.which(name) or name

    def run(self, cmd, expect_ok=True):
        full = [self.tool(cmd[0])] + [str(c) for c in cmd[1:]]
        try:
            p = subprocess.run(full, capture_output=True, text=True,
                               timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            raise Failure("timeout (%ds): %s" % (self.args.timeout, " ".join(full)))
        except OSError as e:
            raise Failure("cannot run %s: %s" % (full[0], e))
        if expect_ok and p.returncode != 0:
            raise Failure("exit %d: %s\n%s" % (p.returncode, " ".join(full),
                                                 _tail(p.stderr + p.stdout)))
        return p

    def fail(self, msg):
        self.failures.append(msg)


def _tail(text, n=1500):
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def make_input(ctx, layer, t, dtype):
    x = ctx.rng(1, layer, t).standard_normal((t, hf.H)).astype(np.float32)
    if dtype == "BF16":
        # bf16-exact inputs: the router sees the same x whether or not the
        # tool rounds the float32 input to the model's dtype first.
        x = hf.bf16_round(x)
    return x


def moe_run(ctx, ir, layer, x, tag, target=None):
    d = os.path.join(ctx.workdir, "run-%s" % tag)
    os.makedirs(d, exist_ok=True)
    xin, yout, prefix = (os.path.join(d, "x.npy"), os.path.join(d, "y.npy"),
                         os.path.join(d, "routing"))
    np.save(xin, x)
    cmd = ["moe-run", ir, "--layer", layer, "--input", xin, "--output", yout,
           "--routing-out", prefix]
    if target:
        cmd += ["--target", target]
    if ctx.args.backend:
        cmd += ["--backend", ctx.args.backend]
    ctx.run(cmd)
    if not os.path.exists(yout):
        raise Failure("moe-run wrote no %s" % yout)
    y = np.load(yout)
    ids = w = None
    if os.path.exists(prefix + ".ids.npy") and os.path.exists(prefix + ".weights.npy"):
        ids, w = np.load(prefix + ".ids.npy"), np.load(prefix + ".weights.npy")
    return y, ids, w


def compare(ctx, tag, y, ids, w, ref_y, ref, tol, need_routing=True):
    """Outputs norm-wise, expert sets per token, weights aligned by id."""
    t = ref_y.shape[0]
    wscale = ctx.case.params.get("wscale", 1.0)
    ok = True
    if y.shape != ref_y.shape:
        ctx.fail("%s: output shape %s, expected %s" % (tag, y.shape, ref_y.shape))
        return False
    if y.dtype != np.float32:
        ctx.fail("%s: output dtype %s, expected float32" % (tag, y.dtype))
        ok = False
    if not np.all(np.isfinite(y)):
        ctx.fail("%s: output has non-finite values" % tag)
        return False
    keep = ~ref.fragile
    ctx.stats["fragile"] += int(ref.fragile.sum())
    if ref.fragile.sum() > max(2, 0.05 * t):
        # Near-ties have probability ~1e-5 per token with these draws; many
        # of them means a broken case or oracle, never a pass.
        ctx.fail("%s: %d/%d tokens too close to a routing boundary to compare"
                 % (tag, int(ref.fragile.sum()), t))
        ok = False
    scale = max(float(np.max(np.abs(ref_y))), 1e-30) if ref_y.size else 1.0
    diff = np.abs(y.astype(np.float64) - ref_y)
    err = float(np.max(diff[keep])) / scale if keep.any() else 0.0
    ctx.stats["y_err"] = max(ctx.stats["y_err"], err)
    if err > tol:
        tok, col = np.unravel_index(np.argmax(np.where(keep[:, None], diff, -1)), diff.shape)
        ctx.fail("%s: output error %.3g > %.0e (max|y-ref|/max|ref|, max|ref| = %.4g); "
                 "worst at token %d col %d: got %.6g, expected %.6g"
                 % (tag, err, tol, scale, tok, col, y[tok, col], ref_y[tok, col]))
        ok = False
    if ids is None or w is None:
        if need_routing:
            ctx.fail("%s: --routing-out wrote no PREFIX.ids.npy / PREFIX.weights.npy" % tag)
            return False
        ctx.info["routing"] = "not reported"
        return ok
    if ids.ndim != 2 or ids.shape != w.shape or ids.shape[0] != t:
        ctx.fail("%s: routing shapes ids %s weights %s, expected [%d, K]"
                 % (tag, ids.shape, w.shape, t))
        return False
    if ids.dtype != np.int32 or w.dtype != np.float32:
        ctx.fail("%s: routing dtypes ids %s weights %s, expected int32 and float32"
                 % (tag, ids.dtype, w.dtype))
        ok = False
    if ref.info.get("slot_is_expert"):
        # expert choice: slot e holds expert e or -1
        cols = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
        if ids.shape[1] != ref.ids.shape[1] or np.any((ids >= 0) & (ids != cols)):
            ctx.fail("%s: expert-choice routing must have K = E slots with slot e = e or -1"
                     % tag)
            ok = False
    bad_sets, bad_w, worst_w = [], [], 0.0
    for r in range(t):
        got_ids = [int(i) for i in ids[r] if i >= 0]
        want = {int(i): float(v) for i, v in zip(ref.ids[r], ref.weights[r]) if i >= 0}
        empty_w = [float(v) for i, v in zip(ids[r], w[r]) if i < 0]
        if len(set(got_ids)) != len(got_ids):
            bad_sets.append((r, "duplicate ids %s" % sorted(got_ids)))
            continue
        if any(abs(v) > TOL_W_ABS for v in empty_w):
            bad_w.append((r, "empty slot with weight %s" % empty_w))
        if ref.fragile[r]:
            continue
        if set(got_ids) != set(want):
            # Experts in the float32 underflow band may swap (see hf.TINY).
            odd = set(got_ids) ^ set(want)
            if (ref.tiny is None or len(got_ids) != len(want) or
                    not all(0 <= i < ref.tiny.shape[1] and ref.tiny[r, i] for i in odd)):
                bad_sets.append((r, "got %s expected %s" % (sorted(got_ids), sorted(want))))
                continue
            ctx.stats["tiny_swaps"] = ctx.stats.get("tiny_swaps", 0) + 1
            want = {i: (want[i] if i in want else 0.0) for i in got_ids}
        for i, v in zip(ids[r], w[r]):
            if i < 0:
                continue
            dv = abs(float(v) - want[int(i)])
            rel = dv / (1.0 + abs(want[int(i)]))
            worst_w = max(worst_w, rel)
            if dv > wscale * (TOL_W_ABS + TOL_W_REL * abs(want[int(i)])):
                bad_w.append((r, "expert %d weight %.9g expected %.9g (diff %.2g)"
                               % (i, v, want[int(i)], dv)))
    ctx.stats["w_err"] = max(ctx.stats["w_err"], worst_w)
    if ctx.args.verbose:
        ctx.lines.append("%s: y_err %.3g, w_err %.3g, K %d, fragile %d"
                         % (tag, err, worst_w, ids.shape[1], int(ref.fragile.sum())))
    if bad_sets:
        ctx.fail("%s: %d/%d tokens with a different expert set; first: %s"
                 % (tag, len(bad_sets), t, "; ".join("token %d: %s" % b for b in bad_sets[:3])))
        ok = False
    if bad_w:
        ctx.fail("%s: %d routing weights off; first: %s"
                 % (tag, len(bad_w), "; ".join("token %d: %s" % b for b in bad_w[:3])))
        ok = False
    return ok


def t_schedule(ctx, layers):
    """Two T values per layer, rotating so that every T is used per case."""
    if not ctx.args.quick:
        return {l: list(T_VALUES) for l in layers}
    off = zlib.crc32(ctx.case.name.encode()) % 4
    out = {}
    for j, l in enumerate(layers):
        a = (2 * j + off) % 4
        out[l] = [T_VALUES[a], T_VALUES[(a + 1) % 4]]
    if len(layers) == 1:
        out[layers[0]] = list(T_VALUES)
    return out


def check_refusal(ctx, ir, model):
    bad = model.refused_layer()
    x = make_input(ctx, bad, 3, model.dtype)
    d = os.path.join(ctx.workdir, "refuse")
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "x.npy"), x)
    p = ctx.run(["moe-run", ir, "--layer", bad, "--input", os.path.join(d, "x.npy"),
                 "--output", os.path.join(d, "y.npy")], expect_ok=False)
    if p.returncode == 0:
        ctx.fail("layer %d is not an MoE layer (MoE layers: %s) but moe-run accepted it"
                 % (bad, model.moe_layers))
        return
    listed = set(int(n) for n in re.findall(r"\d+", p.stderr))
    missing = [l for l in model.moe_layers if l not in listed]
    if not p.stderr.strip() or missing:
        ctx.fail("refusal of layer %d: stderr should list the MoE layers %s; got: %s"
                 % (bad, model.moe_layers, _tail(p.stderr, 300)))


def run_hf_case(ctx):
    pr = ctx.case.params
    kw = dict(pr["kw"])
    if pr["layout"]:
        kw["layout"] = pr["layout"]
    model = hf.BUILDERS[pr["arch"]](ctx.rng(0), dtype=pr["dtype"], **kw)
    mdir = os.path.join(ctx.workdir, "model")
    model.write(mdir, shards=pr["shards"])
    ir = os.path.join(ctx.workdir, "model.mlir")
    ctx.run(["moe-import", mdir, "-o", ir])
    tol = TOL_BF16 if pr["dtype"] == "BF16" else TOL_F32
    sched = t_schedule(ctx, model.moe_layers)
    for layer in model.moe_layers:
        for t in sched[layer]:
            x = make_input(ctx, layer, t, pr["dtype"])
            ref_y, ref = model.block(layer, x)
            tag = "layer %d T=%d" % (layer, t)
            y, ids, w = moe_run(ctx, ir, layer, x, "L%d-T%d" % (layer, t))
            ctx.stats["runs"] += 1
            compare(ctx, tag, y, ids, w, ref_y, ref, tol)
            if "zero_mask_differs" in ref.info:
                ctx.info["zero_mask_tokens"] = (ctx.info.get("zero_mask_tokens", 0) +
                                                ref.info["zero_mask_differs"])
    check_refusal(ctx, ir, model)
    ctx.info["layers"] = model.moe_layers
    if pr["kw"].get("bias") == "negative" and not ctx.info.get("zero_mask_tokens"):
        ctx.fail("internal: no token where -inf and 0 masking differ (case too weak)")


def run_lora_case(ctx):
    pr = ctx.case.params
    arch = pr["arch"]
    if arch == "qwen2_moe":
        model = hf.build_qwen2_moe(ctx.rng(0), dtype=pr["dtype"], layers=2,
                                   sparse_step=1, mlp_only=(), experts=8, k=2)
    elif arch == "qwen3_moe":
        model = hf.build_qwen3_moe(ctx.rng(0), dtype=pr["dtype"], layers=2,
                                   mlp_only=(), experts=8, k=2)
        model.config.update(num_attention_heads=pr["out"] // 16, head_dim=16)
    else:
        model = hf.build_mixtral(ctx.rng(0), dtype=pr["dtype"], layers=2)
    module = "self_attn.q_proj"
    layers = [0, 1]
    rng = ctx.rng(5)
    for l in layers:
        hf.add_base_projection(model, rng, l, module, pr["out"], pr["bias"])
    adapters = [hf.random_adapter(rng, layers, pr["out"], a["rank"], a["alpha"],
                                  a["rslora"]) for a in pr["adapters"]]
    mdir = os.path.join(ctx.workdir, "model")
    model.write(mdir)
    cmd = ["moe-import", mdir, "-o", os.path.join(ctx.workdir, "model.mlir")]
    for i, ad in enumerate(adapters):
        d = os.path.join(ctx.workdir, "adapter%d" % i)
        ad.write(d)
        cmd += ["--adapter", d]
    router = None
    if pr["router"]:
        rc = pr["router"]
        router = hf.LoraRouter(top_k=rc["top_k"], norm=rc["norm"])
        for l in layers:
            router.w[l] = (rng.standard_normal((len(adapters), hf.H)) *
                           hf.ROUTER_SCALE).astype(np.float32)
            if rc["bias"]:
                router.b[l] = rng.normal(0, 0.5, len(adapters)).astype(np.float32)
        rpath = os.path.join(ctx.workdir, "router.safetensors")
        router.write(rpath)
        cmd += ["--lora-router", rpath]
    ctx.run(cmd)
    ir = os.path.join(ctx.workdir, "model.mlir")
    tol = TOL_BF16 if pr["dtype"] == "BF16" else TOL_F32
    sched = t_schedule(ctx, layers)
    for l in layers:
        for t in sched[l]:
            x = make_input(ctx, l, t, pr["dtype"])
            ref_y, ref = hf.lora_forward(model, l, module, adapters, x, router)
            y, ids, w = moe_run(ctx, ir, l, x, "L%d-T%d" % (l, t), target=module)
            ctx.stats["runs"] += 1
            compare(ctx, "layer %d %s T=%d" % (l, module, t), y, ids, w, ref_y, ref,
                    tol, need_routing=False)
    ctx.info["scales"] = [round(a.scale, 4) for a in adapters]


def run_seed_case(ctx):
    case = seeds.make_seed_case(ctx.rng(0), ctx.case.params["seed_case"])
    ir = case.write(os.path.join(ctx.workdir, "seed"))
    per_expert = np.zeros(case.experts, dtype=np.int64)
    empty_tokens = 0
    for t in T_VALUES:
        x = case.prepare_input(make_input(ctx, 0, t, "F32"))
        ref_y, ref = case.block(x)
        per_expert += np.array(ref.info["tokens_per_expert"])
        if "exact_ties" in ref.info:
            ctx.info["exact_ties"] = ctx.info.get("exact_ties", 0) + ref.info["exact_ties"]
        empty_tokens += int(np.sum(np.all(ref.ids < 0, axis=1)))
        y, ids, w = moe_run(ctx, ir, 0, x, "T%d" % t)
        ctx.stats["runs"] += 1
        compare(ctx, "T=%d" % t, y, ids, w, ref_y, ref, TOL_F32)
    ctx.info["tokens_per_expert"] = per_expert.tolist()
    ctx.info["tokens_without_expert"] = empty_tokens


RUNNERS = {"hf": run_hf_case, "lora": run_lora_case, "seed": run_seed_case}

# --------------------------------------------------------------------------
# Self-test of the python side (no tools)
# --------------------------------------------------------------------------


def self_test(seed):
    rng = np.random.default_rng(seed)
    problems = []

    def check(cond, what):
        if not cond:
            problems.append(what)

    # bf16 rounding: ties to even, and exactness on representable values.
    vals = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -9,
                     -2.5, 3.0e38, 1e-40], dtype=np.float32)
    want = np.array([1.0, 1.0, 1.0 + 4 * 2 ** -8, 1.0, -2.5], dtype=np.float32)
    check(np.array_equal(hf.bf16_round(vals)[:5], want), "bf16 round-to-nearest-even")
    b = hf.bf16_round(rng.standard_normal(1000).astype(np.float32))
    check(np.array_equal(hf.bf16_round(b), b), "bf16 rounding idempotent")
    check(np.array_equal(hf.bf16_bits(np.array([1.0], np.float32)), [0x3F80]), "bf16 bits of 1.0")

    tmp = tempfile.mkdtemp(prefix="moe-oracle-selftest-")
    try:
        # safetensors round trip, with metadata, F32 and BF16
        t = {"a": ("F32", rng.standard_normal((3, 5)).astype(np.float32)),
             "b": ("BF16", hf.bf16_round(rng.standard_normal((7,)).astype(np.float32))),
             "c.d": ("F32", np.zeros((2, 0, 4), np.float32))}
        path = os.path.join(tmp, "t.safetensors")
        hf.write_safetensors(path, t, {"top_k": 3})
        v, d, meta = hf.read_safetensors(path)
        check(meta == {"top_k": "3"}, "safetensors metadata")
        for k in t:
            check(d[k] == t[k][0] and v[k].shape == t[k][1].shape and
                  np.array_equal(v[k], t[k][1]), "safetensors round trip " + k)
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        check(n % 8 == 0, "safetensors header aligned")

        # every builder, unsharded and sharded: files read back to the oracle's values
        for arch, build in hf.BUILDERS.items():
            for dtype in ("F32", "BF16"):
                m = build(np.random.default_rng([seed, 1]), dtype=dtype)
                for shards in (1, 3):
                    dd = os.path.join(tmp, "%s-%s-%d" % (arch, dtype, shards))
                    m.write(dd, shards=shards)
                    back, dts = hf.read_checkpoint(dd)
                    check(set(back) == set(m.tensors), "%s tensors written" % arch)
                    for name, (dt, val) in m.tensors.items():
                        check(dts[name] == dt and np.array_equal(back[name], val),
                              "%s %s %s read back" % (arch, dtype, name))
                check(len(m.moe_layers) >= 1, arch + " has MoE layers")
                x = rng.standard_normal((33, hf.H))
                for layer in m.moe_layers:
                    y, r = m.block(layer, x)
                    check(y.shape == (33, hf.H) and np.all(np.isfinite(y)), arch + " block")
                    check(np.all((r.ids >= 0).sum(axis=1) ==
                                 m.config["num_experts_per_tok"]), arch + " k experts")

        # per-expert and fused (transformers v5) layouts give the same block
        for arch in ("qwen3_moe", "mixtral", "olmoe", "deepseek_v3"):
            a = hf.BUILDERS[arch](np.random.default_rng([seed, 2]))
            f = hf.BUILDERS[arch](np.random.default_rng([seed, 2]), layout="fused")
            x = rng.standard_normal((50, hf.H))
            for layer in a.moe_layers:
                ya, ra = a.block(layer, x)
                yf, rf = f.block(layer, x)
                check(np.allclose(ya, yf, rtol=1e-12, atol=1e-12) and
                      np.array_equal(ra.ids, rf.ids), arch + " per-expert == fused")

        # Mixtral == Qwen3-MoE with norm_topk_prob, == OLMoE without renorm x sum
        mx = hf.build_mixtral(np.random.default_rng([seed, 3]), experts=8, k=2, inter=32, layers=1)
        q3 = hf.build_qwen3_moe(np.random.default_rng([seed, 3]), experts=8, k=2, inter=32,
                                layers=1, mlp_only=(), norm=True)
        # same random draws, different names: copy values by position
        for (na, (_, va)), (nb, (dtb, _)) in zip(mx.tensors.items(), list(q3.tensors.items())):
            q3.tensors[nb] = (dtb, va)
        x = rng.standard_normal((40, hf.H))
        check(np.allclose(mx.block(0, x)[0], q3.block(0, x)[0], atol=1e-12),
              "mixtral == qwen3_moe(norm)")

        # gpt-oss: the dense formulation (every expert on every token, zero
        # weights off the top-k) gives the sparse result
        g = hf.build_gpt_oss(np.random.default_rng([seed, 4]))
        x = rng.standard_normal((30, hf.H)) * 3
        y, r = g.block(0, x)
        p = "model.layers.0.mlp"
        dense = np.zeros_like(y)
        full_w = np.zeros((30, g.config["num_local_experts"]))
        np.put_along_axis(full_w, r.ids, r.weights, axis=1)
        for e in range(g.config["num_local_experts"]):
            out = hf.gpt_oss_expert(g.get(p + ".experts.gate_up_proj")[e],
                                    g.get(p + ".experts.gate_up_proj_bias")[e],
                                    g.get(p + ".experts.down_proj")[e],
                                    g.get(p + ".experts.down_proj_bias")[e], x, 7.0)
            dense += out * full_w[:, e:e + 1]
        check(np.allclose(dense, y, atol=1e-10), "gpt-oss dense == sparse")
        gu = x @ g.get(p + ".experts.gate_up_proj")[0] + g.get(p + ".experts.gate_up_proj_bias")[0]
        check(np.any(gu[:, 0::2] > 7.0), "gpt-oss test data reaches the clamp")

        # Llama 4: HF formulation (every expert, input scaled by sigmoid of the
        # scattered logits with -inf elsewhere) == sparse
        l4 = hf.build_llama4_text(np.random.default_rng([seed, 5]), layers=2)
        x = rng.standard_normal((20, hf.H))
        layer = l4.moe_layers[0]
        y, r = l4.block(layer, x)
        p = "model.layers.%d.feed_forward" % layer
        logits = x @ l4.get(p + ".router.weight").T
        sc = np.full_like(logits, -np.inf)
        np.put_along_axis(sc, r.ids, np.take_along_axis(logits, r.ids, axis=1), axis=1)
        sc = hf.sigmoid(sc)
        gu, dn = l4.get(p + ".experts.gate_up_proj"), l4.get(p + ".experts.down_proj")
        i2 = gu.shape[2] // 2
        alt = hf.glu(x, l4.get(p + ".shared_expert.gate_proj.weight"),
                     l4.get(p + ".shared_expert.up_proj.weight"),
                     l4.get(p + ".shared_expert.down_proj.weight"))
        for e in range(gu.shape[0]):
            h = (x * sc[:, e:e + 1]) @ gu[e]
            alt = alt + (hf.silu(h[:, :i2]) * h[:, i2:]) @ dn[e]
        check(np.allclose(alt, y, atol=1e-10), "llama4 HF formulation == sparse")
        check(l4.moe_layers == [1] and l4.refused_layer() == 0, "llama4 interleave step")

        # DeepSeek: the negative-bias case exercises the -inf masking
        ds = hf.build_deepseek_v3(np.random.default_rng([seed, 6]), bias="negative", layers=2)
        _, r = ds.block(1, rng.standard_normal((300, hf.H)))
        check(r.info["zero_mask_differs"] > 0, "deepseek_v3 negative bias: -inf matters")
        check(np.all(r.ids >= 0), "deepseek_v3 never selects a masked expert")
        d2 = hf.build_deepseek_v2(np.random.default_rng([seed, 7]), layers=5, freq=2,
                                  first_dense=1)
        check(d2.moe_layers == [2, 4] and d2.refused_layer() == 0,
              "deepseek moe_layer_freq / first_k_dense_replace")
        q2 = hf.build_qwen2_moe(np.random.default_rng([seed, 7]))
        check(q2.moe_layers == [1, 5], "qwen decoder_sparse_step / mlp_only_layers")
        # group-limited routing with one group == plain greedy
        p_ = hf.softmax(rng.standard_normal((50, 16)))
        masked, _ = hf.group_limit(p_, 1, 1, "max")
        check(np.array_equal(hf.topk_rows(masked, 4)[0], hf.topk_rows(p_, 4)[0]),
              "group_limit with one group")

        # seed methods: edge cases present, IR parses when moe-opt is around
        for name in list(seeds.SEED_CASES) + list(seeds.NONGATED_CASES):
            sc_ = seeds.make_seed_case(np.random.default_rng([seed, 8]), name)
            x = rng.standard_normal((300, hf.H))
            y, r = sc_.block(x)
            cnt = r.info["tokens_per_expert"]
            if name in ("adamoe-edge", "top-p-edge", "blockffn-edge"):
                check(min(cnt) == 0, name + ": an expert without tokens")
            if name in ("top-p-edge", "blockffn-edge"):
                check(max(cnt) == 300, name + ": an expert with every token")
            if name in ("adamoe-edge", "blockffn-sparse"):
                check(np.any(np.all(r.ids < 0, axis=1)), name + ": a token without expert")
            if name == "expert-choice":
                check(all(c == 16 for c in cnt), "expert choice capacity")
                _, r7 = sc_.block(x[:7])
                check(all(c == 7 for c in r7.info["tokens_per_expert"]),
                      "expert choice T < capacity")
            if name == "threshold-softmax":
                # the mask matters: tokens with real and empty slots
                nsel = (r.ids >= 0).sum(axis=1)
                check(np.any((nsel >= 2) & (nsel < sc_.max_k)),
                      name + ": a token with real and empty slots")
            if name.startswith("top-p"):
                nsel = (r.ids >= 0).sum(axis=1)
                check(nsel.min() >= 1 and nsel.max() <= sc_.max_k, name + " count")
            d = os.path.join(tmp, name)
            ir = sc_.write(d)
            opt = shutil.which("moe-opt")
            if opt:
                p = subprocess.run([opt, ir], capture_output=True, text=True)
                check(p.returncode == 0, name + " IR verifies: " + _tail(p.stderr, 400))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return problems


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", action="append", choices=GROUPS + ["all"],
                    help="groups to run (repeatable; default all)")
    ap.add_argument("--case", action="append", help="run only these case names")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--seed", type=int, help="fix the random seed (default: from time)")
    ap.add_argument("--bin", help="directory of moe-import and moe-run (default: PATH)")
    ap.add_argument("--backend", default="reference",
                    help="moe-run --backend (default reference; '' to omit)")
    ap.add_argument("--quick", action="store_true",
                    help="two values of T per layer instead of all of %s" % (T_VALUES,))
    ap.add_argument("-j", "--jobs", type=int, default=2, help="cases run in parallel")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per tool call")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--self-test", action="store_true",
                    help="check the python side only (no tools needed)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else int(time.time() * 1000) % (2 ** 31)
    if args.self_test:
        problems = self_test(seed)
        for p in problems:
            print("SELFTEST FAIL:", p)
        print("self-test: %s (seed %d)" % ("FAIL" if problems else "PASS", seed))
        return 1 if problems else 0

    groups = args.group or ["all"]
    groups = GROUPS if "all" in groups else groups
    cases = [c for c in CASES if c.group in groups]
    if args.case:
        unknown = set(args.case) - set(c.name for c in CASES)
        if unknown:
            ap.error("unknown case(s): %s" % ", ".join(sorted(unknown)))
        cases = [c for c in CASES if c.name in args.case]
    if args.list:
        for c in cases:
            print("%-10s %s" % (c.group, c.name))
        return 0

    for tool in ("moe-import", "moe-run"):
        path = os.path.join(args.bin, tool) if args.bin else shutil.which(tool)
        if not path or not os.access(path, os.X_OK):
            print("error: %s not found (%s); build it or pass --bin DIR"
                  % (tool, "in " + args.bin if args.bin else "on PATH"))
            return 2

    root = tempfile.mkdtemp(prefix="moe-oracle-")
    lock = threading.Lock()
    results = []
    here = os.path.abspath(__file__)

    def repro(case):
        cmd = "/usr/bin/python3 %s --case %s --seed %d" % (here, case.name, seed)
        if args.bin:
            cmd += " --bin %s" % args.bin
        if args.backend != "reference":
            cmd += " --backend '%s'" % args.backend
        return cmd + " --keep -v"

    def one(case):
        wd = os.path.join(root, case.name)
        os.makedirs(wd)
        ctx = Context(args, seed, case, wd)
        start = time.time()
        try:
            RUNNERS[case.kind](ctx)
        except Failure as e:
            ctx.fail(str(e))
        except Exception:
            ctx.fail("oracle error:\n" + traceback.format_exc())
        dt = time.time() - start
        s = ctx.stats
        status = "FAIL" if ctx.failures else "PASS"
        extra = " ".join("%s=%s" % kv for kv in sorted(ctx.info.items()))
        if s.get("tiny_swaps"):
            extra = ("underflow_swaps=%d " % s["tiny_swaps"]) + extra
        line = ("%s %-9s %-28s runs=%-2d y_err=%.2e w_err=%.2e fragile=%d %.1fs %s"
                % (status, case.group, case.name, s["runs"], s["y_err"], s["w_err"],
                   s["fragile"], dt, extra))
        with lock:
            print(line.rstrip(), flush=True)
            for detail in ctx.lines:
                print("    " + detail)
            if ctx.failures:
                for f in ctx.failures[:8]:
                    print("    " + f.replace("\n", "\n    "))
                if len(ctx.failures) > 8:
                    print("    ... %d more" % (len(ctx.failures) - 8))
                print("    seed %d; reproduce: %s" % (seed, repro(case)), flush=True)
            results.append((case, not ctx.failures))

    print("moe oracle: %d cases, seed %d, tools from %s" %
          (len(cases), seed, args.bin or "PATH"), flush=True)
    start = time.time()
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(one, cases))
    finally:
        if args.keep:
            print("work directory kept: %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    failed = [c for c, ok in results if not ok]
    by_group = {}
    for c, ok in results:
        g = by_group.setdefault(c.group, [0, 0])
        g[0 if ok else 1] += 1
    summary = ", ".join("%s %d/%d" % (g, v[0], v[0] + v[1]) for g, v in by_group.items())
    print("summary: %d passed, %d failed (%s) in %.1fs, seed %d"
          % (len(results) - len(failed), len(failed), summary, time.time() - start, seed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
