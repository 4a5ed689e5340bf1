"""What the self-contained oracles (dynmole.py, glider.py, cross_token.py,
duo_llm.py, chain_of_experts.py, graph_of_tokens.py, rmoe.py) share: writing
attributes as MLIR holds them, running one layer with `moe-run`, comparing a
backend's routing and output with the numpy formula's, and the formula steps
several methods use (row softmax, normalised top-k, gated SiLU experts).

Nothing here knows a routing method; each oracle composes its expected
routing from those steps and its own.
"""
import os
import subprocess

import numpy as np


def f32(v):
    """A float as MLIR holds an f32 attribute."""
    return float(np.float32(v))


def attr(v):
    """An f32 attribute written so that it parses back to f32(v)."""
    return "%.9e" % f32(v)


def run_layer(bin_dir, ir, inputs, d, backend, routers=1):
    """Runs layer 0 of `ir` with `moe-run --backend BACKEND`.

    inputs: x [T, H], or a list: x, then the layer's extra inputs in argument
    order (each given with one more --input).
    Returns (y, [(ids, weights) of router 0, router 1, ...]) for `routers`
    routers (moe-run --routing-out: PREFIX.ids.npy for the first router,
    PREFIX.rN.ids.npy for router N).
    """
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    yp, prefix = os.path.join(d, "y.npy"), os.path.join(d, "routing")
    cmd = [os.path.join(bin_dir, "moe-run") if bin_dir else "moe-run", ir,
           "--layer", "0"]
    for n, a in enumerate(inputs):
        p = os.path.join(d, "in%d.npy" % n)
        np.save(p, a)
        cmd += ["--input", p]
    cmd += ["--output", yp, "--routing-out", prefix, "--backend", backend]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("moe-run --backend %s failed:\n%s"
                             % (backend, r.stderr[-2000:]))
    routing = []
    for n in range(routers):
        p = prefix if n == 0 else "%s.r%d" % (prefix, n)
        routing.append((np.load(p + ".ids.npy"), np.load(p + ".weights.npy")))
    return np.load(yp), routing


def slot_map(ids, w, r):
    """Token r's routing as {expert: weight}, empty slots (-1) left out."""
    return {int(e): float(v) for e, v in zip(ids[r], w[r]) if e >= 0}


def compare_routing(tag, ids, w, ref_ids, ref_w, skip, tol_w):
    """Per token not in `skip`: the same expert set, weights within tol_w; on
    every token: no weight on an empty slot. Returns (errors, worst weight
    error)."""
    if ids.shape != ref_ids.shape:
        return ["%s: routing shape %s, expected %s"
                % (tag, ids.shape, ref_ids.shape)], 0.0
    errs, worst = [], 0.0
    for r in range(ref_ids.shape[0]):
        if any(abs(v) > 0 for e, v in zip(ids[r], w[r]) if e < 0):
            errs.append("%s: token %d has an empty slot with a weight" % (tag, r))
        if skip[r]:
            continue
        got, want = slot_map(ids, w, r), slot_map(ref_ids, ref_w, r)
        if set(got) != set(want):
            errs.append("%s: token %d experts %s, expected %s"
                        % (tag, r, sorted(got), sorted(want)))
            continue
        for e in want:
            worst = max(worst, abs(got[e] - want[e]))
            if abs(got[e] - want[e]) > tol_w:
                errs.append("%s: token %d expert %d weight %.9g, expected %.9g"
                            % (tag, r, e, got[e], want[e]))
    return errs, worst


def compare_output(tag, y, ref_y, skip, tol_y):
    """max |y - ref| / max |ref| over the tokens not in `skip` (a norm-wise
    relative error); non-finite outputs fail. Returns (errors, error)."""
    if y.shape != ref_y.shape:
        return ["%s: output shape %s, expected %s"
                % (tag, y.shape, ref_y.shape)], float("inf")
    if not np.isfinite(y).all():
        return ["%s: %d non-finite outputs" % (tag, int((~np.isfinite(y)).sum()))], \
            float("inf")
    keep = ~skip
    scale = max(float(np.abs(ref_y).max()), 1e-30)
    err = float(np.abs(y - ref_y)[keep].max()) / scale if keep.any() else 0.0
    return (["%s: output error %.3g > %g" % (tag, err, tol_y)] if err > tol_y
            else []), err


def compare(tag, y, ids, w, ref_y, ref_ids, ref_w, skip, tol_y, tol_w):
    """compare_routing and compare_output together: (errors (at most 5),
    output error, worst weight error)."""
    errs, worst = compare_routing(tag, ids, w, ref_ids, ref_w, skip, tol_w)
    out_errs, err = compare_output(tag, y, ref_y, skip, tol_y)
    return (errs + out_errs)[:5], err, worst


def gated_expert_tensors(gate, up, down):
    """safetensors entries of E gated experts [E, I, H], [E, I, H], [E, H, I]
    under the names gated_experts_ir reads."""
    tensors = {}
    for e in range(gate.shape[0]):
        tensors["experts.%d.gate_proj.weight" % e] = ("F32", gate[e])
        tensors["experts.%d.up_proj.weight" % e] = ("F32", up[e])
        tensors["experts.%d.down_proj.weight" % e] = ("F32", down[e])
    return tensors


def gated_experts_ir(experts, slots, inter, hidden, weights="w.safetensors"):
    """The IR lines after a router that yields %ids and %w [T, slots]: the
    dispatch, gated SiLU experts (gated_expert_tensors' names in `weights`),
    the combine into %y, and the end of the layer function and module."""
    e, k, i, h = experts, slots, inter, hidden
    xt = "tensor<?x%dxf32>" % h
    gt, dt = "tensor<%dx%dx%dxf32>" % (e, i, h), "tensor<%dx%dx%dxf32>" % (e, h, i)

    def stack(proj):
        return "[%s] from [\"%s\"]" % (", ".join(
            '"experts.%d.%s.weight"' % (j, proj) for j in range(e)), weights)
    return [
        "    %%c, %%o, %%rows = moe.dispatch %%ids {num_experts = %d : i64} : "
        "tensor<?x%dxi32> -> tensor<%dxi32>, tensor<%dxi32>, tensor<?xi32>"
        % (e, k, e, e + 1),
        "    %%xs = moe.permute %%x, %%rows, %%w : (%s, tensor<?xi32>, "
        "tensor<?x%dxf32>) -> %s" % (xt, k, xt),
        "    %%wgt = moe.weight %s : %s" % (stack("gate_proj"), gt),
        "    %%wup = moe.weight %s : %s" % (stack("up_proj"), gt),
        "    %%wdn = moe.weight %s : %s" % (stack("down_proj"), dt),
        "    %%ys = moe.expert_ffn %%xs, %%o gate(%%wgt) up(%%wup) down(%%wdn) "
        "{activation = #moe.activation<silu>} : (%s, tensor<%dxi32>, %s, %s, "
        "%s) -> %s" % (xt, e + 1, gt, gt, dt, xt),
        "    %%y = moe.combine %%ys, %%rows, %%w : (%s, tensor<?xi32>, "
        "tensor<?x%dxf32>) -> %s" % (xt, k, xt),
        "    return %%y : %s" % xt,
        "  }",
        "}",
        ""]


def softmax_rows(s):
    """Row softmax in float64."""
    z = np.exp(np.asarray(s, np.float64) - np.max(s, axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def topk_normalized(p, k, near_tie):
    """Top-k of each row of `p` (ties to the lower expert id), weights
    renormalised to sum 1, and which rows are fragile: the k-th and (k+1)-th
    values closer than `near_tie` may swap in float32."""
    t, e = p.shape
    ids = np.zeros((t, k), np.int64)
    w = np.zeros((t, k))
    fragile = np.zeros(t, bool)
    for r in range(t):
        order = sorted(range(e), key=lambda j: (-p[r, j], j))
        ids[r] = order[:k]
        w[r] = p[r, order[:k]] / p[r, order[:k]].sum()
        fragile[r] = k < e and p[r, order[k - 1]] - p[r, order[k]] < near_tie
    return ids, w, fragile


def gated_silu_experts(x, gate, up, down, ids, w):
    """sum over a token's slots of w * down(silu(gate x) * up x), in float64;
    gate/up [E, I, H], down [E, H, I]; slots with id -1 add nothing."""
    x64 = np.asarray(x, np.float64)
    y = np.zeros_like(x64)
    for e in range(gate.shape[0]):
        g = x64 @ gate[e].astype(np.float64).T
        u = x64 @ up[e].astype(np.float64).T
        out = (g / (1.0 + np.exp(-g)) * u) @ down[e].astype(np.float64).T
        y += np.sum(np.where(ids == e, w, 0.0), axis=1)[:, None] * out
    return y


def run_and_compare(bin_dir, ir, inputs, d, backends, tag, ref, tol_y, tol_w,
                    stats):
    """Runs layer 0 on each backend and compares it with ref = (y, ids, w,
    near-tie rows); each backend's worst output and weight errors are folded
    into stats[backend] = [output, weight]. Returns the errors."""
    ref_y, ref_ids, ref_w, fragile = ref
    errors = []
    for b in backends:
        y, [(ids, w)] = run_layer(bin_dir, ir, inputs, d, b)
        errs, ye, we = compare("%s %s" % (tag, b), y, ids, w, ref_y, ref_ids,
                               ref_w, fragile, tol_y, tol_w)
        errors += errs
        stats[b][0] = max(stats[b][0], ye)
        stats[b][1] = max(stats[b][1], we)
    return errors
