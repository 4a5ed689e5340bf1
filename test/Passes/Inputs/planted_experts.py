#!/usr/bin/env python3
"""Planted MoE layers for the prune and merge passes, and their numpy oracle.

A Mixtral-style layer (router_linear, softmax, top-k, normalize; SiLU
experts gate/up/down, f32) written as IR + model.safetensors, calibration
and held-out tokens (.npy) from a mixture, and a calibration profile
computed here in numpy (format of include/moe/lib/Analysis/Profile.h: F64
tensors layer.L.<statistic>, __metadata__ format/version/model/tokens).

Kinds:
  redundant  E = 4 * copies experts: noisy copies (relative sigma) of 4
             prototypes, router rows likewise; with --dominant-scale s the
             router row of copy 0 of every group is scaled by s (one
             dominant expert per group, as MC-SMoE assumes); with
             --permute-neurons the other copies reorder their intermediate
             neurons (the same functions: align=weight must undo it).
  quiet      E experts, one of which (--quiet) is picked often (a loud
             router row) but has a tiny output (down scaled by 1e-3).

  planted_experts.py write OUT --kind redundant --sigma 0.01
"""
import argparse
import json
import os
import struct
import subprocess
import sys

import numpy as np

H, I = 32, 16


def write_st(path, tensors, metadata=None):
    """{name: array} with float64 -> F64 and float32 -> F32."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        dtype = {"float64": "F64", "float32": "F32"}[str(a.dtype)]
        data = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_st(path):
    """{name: array} of a safetensors file with F64 and F32 tensors."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = {"F64": "<f8", "F32": "<f4"}[info["dtype"]]
        out[name] = np.frombuffer(raw[8 + n + b:8 + n + e],
                                  dtype=dt).reshape(info["shape"])
    return out


def silu(v):
    return v / (1.0 + np.exp(-v))


def expert_out(m, e, x):
    """[T, H] output of expert e (f64)."""
    g = x @ m["gate"][e].T
    u = x @ m["up"][e].T
    return (silu(g) * u) @ m["down"][e].T


def route(m, x, k):
    """(logits, ids [T,k], normalised weights [T,k]); ties: lower index."""
    logits = x @ m["router"].T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    ids = np.argsort(-p, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(p, ids, axis=1)
    return logits, ids, w / w.sum(axis=1, keepdims=True)


def layer(m, x, k, mapping=None, merged=None):
    """The layer's output; with `mapping` (router expert -> merged) and
    `merged` weights, slots of one merged expert add their gates."""
    x = x.astype(np.float64)
    _, ids, w = route(m, x, k)
    y = np.zeros_like(x)
    experts = m if merged is None else merged
    for t in range(x.shape[0]):
        gates = {}
        for s in range(k):
            e = int(ids[t, s]) if mapping is None else int(mapping[ids[t, s]])
            gates[e] = gates.get(e, 0.0) + w[t, s]
        for e, g in gates.items():
            y[t] += g * expert_out(experts, e, x[t:t + 1])[0]
    return y


def merge_weights(m, mapping, count, weighting="frequency"):
    """Frequency- or uniformly-weighted average of each group's experts."""
    n = int(max(mapping)) + 1
    out = {}
    for name in ("gate", "up", "down"):
        out[name] = np.stack([
            np.average(m[name][[e for e in range(len(mapping)) if mapping[e] == g]],
                       axis=0,
                       weights=None if weighting == "uniform" else
                       np.array([count[e] for e in range(len(mapping))
                                 if mapping[e] == g]) + 1e-300)
            for g in range(n)])
    return out


def profile(m, x, k):
    """The statistics moe-run --record-profile records, in f64."""
    x = x.astype(np.float64)
    E = m["router"].shape[0]
    logits, ids, w = route(m, x, k)
    count = np.zeros(E)
    mass = np.zeros(E)
    norm_mass = np.zeros(E)
    coact = np.zeros((E, E))
    outs = np.stack([expert_out(m, e, x) for e in range(E)])  # [E, T, H]
    for t in range(x.shape[0]):
        sel = [int(e) for e in ids[t]]
        for s, e in enumerate(sel):
            count[e] += 1
            mass[e] += w[t, s]
            norm_mass[e] += w[t, s] * np.linalg.norm(outs[e, t])
        for a in set(sel):
            for b in set(sel):
                coact[a, b] += 1
    return {"expert_count": count, "gate_mass": mass, "coactivation": coact,
            "logit_gram": logits.T @ logits, "logit_sum": logits.sum(axis=0),
            "output_norm_mass": norm_mass,
            "expert_output_mean": outs.mean(axis=1)}


def write_profile(path, stats, tokens, layer_index=0, drop=()):
    tensors = {"layer.%d.%s" % (layer_index, n): np.asarray(v, np.float64)
               for n, v in stats.items() if n not in drop}
    write_st(path, tensors, {"format": "moe-profile", "version": "1",
                             "model": "planted", "tokens": tokens})


def ir_text(E, k, weight_file="model.safetensors", router="softmax"):
    names = lambda p: ", ".join('"e.%d.%s"' % (e, p) for e in range(E))
    if router == "softmax":
        route = f"""    %p = moe.softmax %logits : tensor<?x{E}xf32>
    %ids, %vals = moe.topk %p {{k = {k} : i64}} : tensor<?x{E}xf32> -> tensor<?x{k}xi32>, tensor<?x{k}xf32>
    %w = moe.normalize %vals : tensor<?x{k}xf32>
"""
    else:
        # DeepSeek-V3: sigmoid, correction bias, 4 groups (keep 2), weights
        # from the unbiased score.
        route = f"""    %s = moe.sigmoid %logits : tensor<?x{E}xf32>
    %bias = moe.weight ["router.score_bias"] from ["{weight_file}"] : tensor<{E}xf32>
    %c = moe.bias_add %s, %bias : tensor<?x{E}xf32>, tensor<{E}xf32>
    %gl = moe.group_limit %c {{group_score = #moe.group_score<top2_sum>, keep_groups = 2 : i64, num_groups = 4 : i64}} : tensor<?x{E}xf32>
    %ids, %v = moe.topk %gl {{k = {k} : i64}} : tensor<?x{E}xf32> -> tensor<?x{k}xi32>, tensor<?x{k}xf32>
    %g0 = moe.gather_scores %s, %ids : tensor<?x{E}xf32>, tensor<?x{k}xi32> -> tensor<?x{k}xf32>
    %w = moe.normalize %g0 : tensor<?x{k}xf32>
"""
    return f"""module attributes {{moe.weight_root = "."}} {{
  func.func @layer_0(%x: tensor<?x{H}xf32>) -> tensor<?x{H}xf32> attributes {{moe.layer = 0 : i64}} {{
    %wg = moe.weight ["router.weight"] from ["{weight_file}"] : tensor<{E}x{H}xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x{H}xf32>, tensor<{E}x{H}xf32>) -> tensor<?x{E}xf32>
{route}    %counts, %offsets, %rows = moe.dispatch %ids {{num_experts = {E} : i64}} : tensor<?x{k}xi32> -> tensor<{E}xi32>, tensor<{E + 1}xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x{H}xf32>, tensor<?xi32>, tensor<?x{k}xf32>) -> tensor<?x{H}xf32>
    %g = moe.weight [{names("gate")}] from ["{weight_file}"] : tensor<{E}x{I}x{H}xf32>
    %u = moe.weight [{names("up")}] from ["{weight_file}"] : tensor<{E}x{I}x{H}xf32>
    %d = moe.weight [{names("down")}] from ["{weight_file}"] : tensor<{E}x{H}x{I}xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%g) up(%u) down(%d) {{activation = #moe.activation<silu>}} : (tensor<?x{H}xf32>, tensor<{E + 1}xi32>, tensor<{E}x{I}x{H}xf32>, tensor<{E}x{I}x{H}xf32>, tensor<{E}x{H}x{I}xf32>) -> tensor<?x{H}xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x{H}xf32>, tensor<?xi32>, tensor<?x{k}xf32>) -> tensor<?x{H}xf32>
    return %y : tensor<?x{H}xf32>
  }}
}}
"""


def noisy(p, sigma, rng):
    """p plus Gaussian noise of relative (RMS) size sigma."""
    return p + sigma * np.sqrt(np.mean(p * p)) * rng.standard_normal(p.shape)


def build(kind, sigma, copies, dominant_scale, quiet, experts, rng,
          permute=False):
    """-> (weights {router, gate, up, down} f64, token directions [G, H],
    planted groups per expert or None)."""
    if kind == "redundant":
        G = 4
        dirs = np.linalg.qr(rng.standard_normal((H, G)))[0].T  # [G, H]
        proto = {"router": 2.0 * dirs,
                 "gate": rng.standard_normal((G, I, H)) / np.sqrt(H),
                 "up": rng.standard_normal((G, I, H)) / np.sqrt(H),
                 "down": rng.standard_normal((G, H, I)) / np.sqrt(I)}
        groups = [g for g in range(G) for _ in range(copies)]
        m = {n: np.stack([noisy(proto[n][g], sigma, rng) for g in groups])
             for n in proto}
        for e, g in enumerate(groups):
            if e % copies == 0:
                m["router"][e] *= dominant_scale
            elif permute:
                # The same function with its intermediate neurons reordered.
                p = rng.permutation(I)
                m["gate"][e] = m["gate"][e][p]
                m["up"][e] = m["up"][e][p]
                m["down"][e] = m["down"][e][:, p]
        return m, dirs, groups
    E = experts
    dirs = np.linalg.qr(rng.standard_normal((H, E)))[0].T[:E]
    m = {"router": 2.0 * dirs,
         "gate": rng.standard_normal((E, I, H)) / np.sqrt(H),
         "up": rng.standard_normal((E, I, H)) / np.sqrt(H),
         "down": rng.standard_normal((E, H, I)) / np.sqrt(I)}
    # Loud router: every token gives the quiet expert the second logit
    # (about 2.5 against 6 for its own expert and ~0 for the others).
    others = [e for e in range(E) if e != quiet]
    m["router"][quiet] = 0.83 * dirs[others].sum(axis=0)
    m["down"][quiet] *= 1e-3
    return m, dirs[others], None


def tokens(dirs, n, rng):
    comp = rng.integers(0, dirs.shape[0], n)
    x = 3.0 * dirs[comp] + 0.5 * rng.standard_normal((n, H))
    return x.astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("out")
    w.add_argument("--kind", choices=["redundant", "quiet"], required=True)
    w.add_argument("--sigma", type=float, default=0.01)
    w.add_argument("--copies", type=int, default=4)
    w.add_argument("--dominant-scale", type=float, default=1.0)
    w.add_argument("--experts", type=int, default=8)
    w.add_argument("--quiet", type=int, default=3)
    w.add_argument("--k", type=int, default=2)
    w.add_argument("--router", choices=["softmax", "deepseek"],
                   default="softmax",
                   help="deepseek: the IR routes with a correction bias and "
                   "4 groups (the profile still comes from the softmax "
                   "oracle: for rewrite and refusal tests)")
    w.add_argument("--permute-neurons", action="store_true",
                   help="copies other than copy 0 reorder their neurons")
    w.add_argument("--tokens", type=int, default=256)
    w.add_argument("--seed", type=int, default=12)
    w.add_argument("--moe-run", default="",
                   help="record the profile with this moe-run (checked "
                   "against the numpy one) instead of writing numpy's")
    w.add_argument("--drop", action="append", default=[],
                   help="leave this statistic out of the profile")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    m, dirs, groups = build(a.kind, a.sigma, a.copies, a.dominant_scale,
                            a.quiet, a.experts, rng, a.permute_neurons)
    os.makedirs(a.out, exist_ok=True)
    m32 = {n: v.astype(np.float32) for n, v in m.items()}
    E = m32["router"].shape[0]
    tensors = {"router.weight": m32["router"],
               "router.score_bias": np.linspace(-0.1, 0.1, E).astype(np.float32)}
    for e in range(E):
        for n in ("gate", "up", "down"):
            tensors["e.%d.%s" % (e, n)] = m32[n][e]
    write_st(os.path.join(a.out, "model.safetensors"), tensors)
    with open(os.path.join(a.out, "model.mlir"), "w") as f:
        f.write(ir_text(E, a.k, router=a.router))
    calib = tokens(dirs, a.tokens, rng)
    held = tokens(dirs, a.tokens, rng)
    np.save(os.path.join(a.out, "calib.npy"), calib)
    np.save(os.path.join(a.out, "heldout.npy"), held)
    m64 = {n: v.astype(np.float64) for n, v in m32.items()}
    stats = profile(m64, calib, a.k)
    if not a.moe_run:
        write_profile(os.path.join(a.out, "profile.safetensors"), stats,
                      a.tokens, drop=a.drop)
    else:
        # The profile moe-run records; the numpy one beside it must agree.
        prof = os.path.join(a.out, "profile.safetensors")
        if os.path.exists(prof):
            os.remove(prof)  # moe-run would append to it
        cmd = [a.moe_run, os.path.join(a.out, "model.mlir"), "--layer", "0",
               "--input", os.path.join(a.out, "calib.npy"),
               "--record-profile", prof]
        if "expert_output_mean" not in a.drop:
            cmd.append("--profile-expert-outputs")
        subprocess.run(cmd, check=True)
        write_profile(os.path.join(a.out, "profile.numpy.safetensors"), stats,
                      a.tokens, drop=a.drop)
        if a.router == "softmax":
            got = read_st(prof)
            for n, v in stats.items():
                key = "layer.0." + n
                if n in a.drop:
                    continue
                err = np.abs(got[key] - v).max() / max(np.abs(v).max(), 1e-30)
                if err > 1e-4:
                    raise SystemExit("moe-run's %s differs from numpy's by "
                                     "%.1e (relative)" % (key, err))
    with open(os.path.join(a.out, "planted.json"), "w") as f:
        json.dump({"groups": groups, "k": a.k, "sigma": a.sigma,
                   "quiet": a.quiet if a.kind == "quiet" else None}, f)


if __name__ == "__main__":
    main()
