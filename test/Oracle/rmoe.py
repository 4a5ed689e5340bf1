#!/usr/bin/env python3
"""RMoE's recurrent router (a GRU whose state crosses layers) checked against
its formula, in float64 numpy, on the reference executor.

RMoE ("Layerwise Recurrent Router for Mixture-of-Experts", Qiu et al. 2024)
routes layer L from a GRU state that the previous layer's router left:

    u      = W1 x_t                                  (a projection of x)
    r      = sigmoid(W_ir u + b_ir + W_hr h + b_hr)   (torch.nn.GRUCell)
    z      = sigmoid(W_iz u + b_iz + W_hz h + b_hz)
    n      = tanh(W_in u + b_in + r * (W_hn h + b_hn))
    h_L    = (1 - z) * n + z * h_{L-1}
    p      = softmax(W2 h_L),  experts = top-k of p,  weights renormalised

Each case writes a layer whose previous state h_{L-1} is an extra layer
input (`moe.input = "state"`): moe.router_linear (W1), moe.gru_cell,
moe.router_linear (W2), softmax, topk, normalize, gated-SiLU experts; and
returns the new state as an extra result (`moe.output = "state"`); runs it
with `moe-run --backend reference` (two --output files) at T in {1, 7, 64,
300}: expert sets per token, weights within 1e-5, outputs and the new state
within 1e-5 relative. The state
must change the experts of at least 10% of the tokens (against a zero
state), or the case tests less than it claims.

With --chain, 3 RMoE layers (top-2, zero initial state) run under `moe-run
--all-layers` (pre-norm chain: v_l = rmsnorm(s_l), s_{l+1} = s_l + y_l):
layer l's new state is layer l+1's previous state; every layer's experts and
weights, the chained output and the last layer's state (the second --output)
are compared, and the carried state must change the experts of at least
10% of the tokens of layers 1 and 2 (against a zero state).

Not covered (not implemented): the kernels (moe.gru_cell has no kernel and
plans carry no extra results; emu and cuda refuse the layer).

  rmoe.py [--bin DIR] [--seed N] [--chain]
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_models import H, write_safetensors  # noqa: E402
from layer_check import (compare, compare_output, compare_routing,  # noqa: E402
                         gated_expert_tensors, gated_experts_ir,
                         gated_silu_experts, softmax_rows, topk_normalized)
from oracle_case import T_VALUES, rmsnorm, run_all_layers  # noqa: E402

TOL_Y = 1e-5
TOL_W = 1e-5
NEAR_TIE = 1e-5

CASES = {
    "gru-top2": dict(experts=8, k=2, inner=16, state=32, bias=True),
    "gru-top1-nobias": dict(experts=6, k=1, inner=8, state=16, bias=False),
}


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


class RMoE:
    def __init__(self, rng, experts, k, inner, state, bias, inter=32):
        self.e, self.k, self.i, self.s, self.inter = experts, k, inner, state, inter
        f = np.float32
        self.w1 = (rng.standard_normal((inner, H)) / math.sqrt(H)).astype(f)
        self.wih = (rng.standard_normal((3 * state, inner)) * 0.7).astype(f)
        self.whh = (rng.standard_normal((3 * state, state)) * 0.7).astype(f)
        self.bih = rng.normal(0, 0.3, 3 * state).astype(f) if bias else None
        self.bhh = rng.normal(0, 0.3, 3 * state).astype(f) if bias else None
        self.w2 = rng.standard_normal((experts, state)).astype(f)
        s = 1 / math.sqrt(H)
        self.gate = (rng.standard_normal((experts, inter, H)) * s).astype(f)
        self.up = (rng.standard_normal((experts, inter, H)) * s).astype(f)
        self.down = (rng.standard_normal((experts, H, inter)) /
                     math.sqrt(inter)).astype(f)

    # -- the paper's formula (torch.nn.GRUCell) ---------------------------
    def gru(self, x, h):
        d = np.float64
        # The projection's result is f32 in the layer.
        u = (np.asarray(x, d) @ self.w1.astype(d).T).astype(np.float32).astype(d)
        h = np.asarray(h, d)
        gi = u @ self.wih.astype(d).T
        gh = h @ self.whh.astype(d).T
        if self.bih is not None:
            gi = gi + self.bih.astype(d)
            gh = gh + self.bhh.astype(d)
        s = self.s
        r = sigmoid(gi[:, :s] + gh[:, :s])
        z = sigmoid(gi[:, s:2 * s] + gh[:, s:2 * s])
        n = np.tanh(gi[:, 2 * s:] + r * gh[:, 2 * s:])
        return ((1 - z) * n + z * h).astype(np.float32).astype(d)

    def route(self, x, h):
        logits = self.gru(x, h) @ self.w2.astype(np.float64).T
        p = softmax_rows(logits)
        return topk_normalized(p, self.k, NEAR_TIE)

    def forward(self, x, h):
        ids, w, fragile = self.route(x, h)
        y = gated_silu_experts(x, self.gate, self.up, self.down, ids, w)
        return y, ids, w, fragile

    # -- files ------------------------------------------------------------
    def write(self, d, layer=0):
        """Writes this layer's weights (w<layer>.safetensors) and returns the
        text of its layer function."""
        wfile = "w%d.safetensors" % layer
        tensors = {"w1": ("F32", self.w1), "wih": ("F32", self.wih),
                   "whh": ("F32", self.whh), "w2": ("F32", self.w2)}
        if self.bih is not None:
            tensors["bih"] = ("F32", self.bih)
            tensors["bhh"] = ("F32", self.bhh)
        tensors.update(gated_expert_tensors(self.gate, self.up, self.down))
        write_safetensors(os.path.join(d, wfile), tensors)
        e, k, i, s = self.e, self.k, self.i, self.s
        xt, st, ht = ("tensor<?x%dxf32>" % H, "tensor<?x%dxf32>" % e,
                      "tensor<?x%dxf32>" % s)
        ut = "tensor<?x%dxf32>" % i
        kt = "tensor<?x%dxi32>, tensor<?x%dxf32>" % (k, k)

        def weight(name, shape):
            return ('    %%%s = moe.weight ["%s"] from ["%s"] : '
                    "tensor<%sxf32>" % (name, name, wfile,
                                        "x".join(map(str, shape))))
        lines = [
            '  func.func @layer_%d(%%x: %s, %%h: %s {moe.input = "state"}) -> '
            '(%s, %s {moe.output = "state"}) attributes {moe.layer = %d : i64} {'
            % (layer, xt, ht, xt, ht, layer),
            weight("w1", (i, H)), weight("wih", (3 * s, i)),
            weight("whh", (3 * s, s)), weight("w2", (e, s))]
        gru = ("    %%h1 = moe.gru_cell %%u, %%h weights(%%wih, %%whh) : %s, %s, "
               "tensor<%dx%dxf32>, tensor<%dx%dxf32>" % (ut, ht, 3 * s, i, 3 * s, s))
        if self.bih is not None:
            lines += [weight("bih", (3 * s,)), weight("bhh", (3 * s,))]
            gru = ("    %%h1 = moe.gru_cell %%u, %%h weights(%%wih, %%whh) "
                   "biases(%%bih, %%bhh) : %s, %s, tensor<%dx%dxf32>, "
                   "tensor<%dx%dxf32>, tensor<%dxf32>, tensor<%dxf32>"
                   % (ut, ht, 3 * s, i, 3 * s, s, 3 * s, 3 * s))
        lines += [
            "    %%u = moe.router_linear %%x, %%w1 : (%s, tensor<%dx%dxf32>) -> %s"
            % (xt, i, H, ut),
            gru,
            "    %%l = moe.router_linear %%h1, %%w2 : (%s, tensor<%dx%dxf32>) -> %s"
            % (ht, e, s, st),
            "    %%p = moe.softmax %%l : %s" % st,
            "    %%ids, %%v = moe.topk %%p {k = %d : i64} : %s -> %s" % (k, st, kt),
            "    %%w = moe.normalize %%v : tensor<?x%dxf32>" % k,
            ] + [l.replace("return %%y : %s" % xt,
                           "return %%y, %%h1 : %s, %s" % (xt, ht))
                 for l in gated_experts_ir(e, k, self.inter, H, wfile)[:-2]]
        return "\n".join(lines)


def write_module(d, layers):
    """The module of `layers` (RMoE objects, layer i = layers[i])."""
    text = ['module attributes {moe.weight_root = "%s"} {' % d]
    text += [layer.write(d, i) for i, layer in enumerate(layers)]
    path = os.path.join(d, "rmoe.mlir")
    with open(path, "w") as f:
        f.write("\n".join(text + ["}", ""]))
    return path


def run_with_state(bin_dir, ir, x, h, d):
    """moe-run --backend reference of layer 0 with x and the state: (y, the
    new state, (ids, weights))."""
    paths = [os.path.join(d, n) for n in ("x.npy", "h.npy", "y.npy", "h1.npy")]
    np.save(paths[0], x)
    np.save(paths[1], h)
    prefix = os.path.join(d, "routing")
    cmd = [os.path.join(bin_dir, "moe-run") if bin_dir else "moe-run", ir,
           "--layer", "0", "--input", paths[0], "--input", paths[1],
           "--output", paths[2], "--output", paths[3], "--routing-out", prefix,
           "--backend", "reference"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("moe-run failed:\n%s" % r.stderr[-2000:])
    return (np.load(paths[2]), np.load(paths[3]),
            (np.load(prefix + ".ids.npy"), np.load(prefix + ".weights.npy")))


CHAIN_LAYERS = 3


def check_chain(bin_dir, work, seed):
    """CHAIN_LAYERS RMoE layers under moe-run --all-layers (pre-norm chain:
    v_l = rmsnorm(s_l), s_{l+1} = s_l + y_l): layer l's new state is layer
    l+1's previous state. Returns (errors, summary)."""
    rng = np.random.default_rng([seed, 99])
    layers = [RMoE(rng, **CASES["gru-top2"]) for _ in range(CHAIN_LAYERS)]
    d = os.path.join(work, "chain")
    os.makedirs(d)
    ir = write_module(d, layers)
    errors, worst, total, flips, fragile_n = [], [0.0, 0.0, 0.0], 0, 0, 0
    for t in T_VALUES:
        x = rng.standard_normal((t, H)).astype(np.float32)
        h0 = np.zeros((t, layers[0].s), np.float32)
        stream, h = np.asarray(x, np.float64), h0
        ref = []
        skip = np.zeros(t, bool)
        for l, layer in enumerate(layers):
            v = rmsnorm(stream)
            ids, w, fragile = layer.route(v, h)
            if l > 0:
                # What a layer that did not get the previous state would pick.
                alone = layer.route(v, 0 * h)[0]
                flips += int(np.sum(np.any(np.sort(alone, 1) !=
                                           np.sort(ids, 1), 1)))
            skip |= fragile
            ref.append((ids, w))
            stream = stream + gated_silu_experts(v, layer.gate, layer.up,
                                                 layer.down, ids, w)
            h = layer.gru(v, h)
        total += t
        fragile_n += int(skip.sum())
        (y, h_last), routing = run_all_layers(bin_dir, ir, [x, h0], d,
                                              "reference", CHAIN_LAYERS,
                                              outputs=2)
        for l, ((ids, w), (rids, rw)) in enumerate(zip(routing, ref)):
            errs, we = compare_routing("chain T=%d layer %d" % (t, l), ids, w,
                                       rids, rw, skip, TOL_W)
            errors += errs[:3]
            worst[1] = max(worst[1], we)
        errs, ye = compare_output("chain T=%d" % t, y, stream, skip, TOL_Y)
        errors += errs
        he = (float(np.abs(h_last - h)[~skip].max()) / float(np.abs(h).max())
              if h_last.shape == h.shape and (~skip).any() else
              (0.0 if h_last.shape == h.shape else float("inf")))
        if not he <= TOL_Y:
            errors.append("chain T=%d: last state error %.3g" % (t, he))
        worst = [max(worst[0], ye), worst[1], max(worst[2], he)]
    if flips < 0.1 * total * (CHAIN_LAYERS - 1):
        errors.append("chain: the carried state changes the experts of only "
                      "%d token-layers" % flips)
    if fragile_n > max(2, 0.02 * total):
        errors.append("chain: %d tokens near a tie" % fragile_n)
    return errors, ("%d layers, %d tokens, the carried state changes %d "
                    "token-layers, skipped near a tie %d; reference y_err "
                    "%.2g w_err %.2g state_err %.2g"
                    % (CHAIN_LAYERS, total, flips, fragile_n, *worst))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--cases", default=",".join(sorted(CASES)))
    ap.add_argument("--chain", action="store_true",
                    help="also chain %d layers under moe-run --all-layers"
                    % CHAIN_LAYERS)
    args = ap.parse_args()
    names = args.cases.split(",")
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        for ci, name in enumerate(names):
            rng = np.random.default_rng([args.seed, ci])
            case = RMoE(rng, **CASES[name])
            d = os.path.join(work, name)
            os.makedirs(d)
            ir = write_module(d, [case])
            worst = [0.0, 0.0, 0.0]
            fragile_n, total, flips = 0, 0, 0
            errors = []
            for t in T_VALUES:
                x = rng.standard_normal((t, H)).astype(np.float32)
                h = rng.uniform(-1, 1, (t, case.s)).astype(np.float32)
                ref_y, ref_ids, ref_w, fragile = case.forward(x, h)
                alone = case.route(x, 0 * h)[0]
                flips += int(np.sum(np.any(np.sort(alone, 1) !=
                                           np.sort(ref_ids, 1), 1)))
                fragile_n += int(fragile.sum())
                total += t
                y, h1, (ids, w) = run_with_state(args.bin, ir, x, h, d)
                errs, ye, we = compare("%s reference T=%d" % (name, t), y, ids,
                                       w, ref_y, ref_ids, ref_w, fragile,
                                       TOL_Y, TOL_W)
                ref_h = case.gru(x, h)
                he = (float(np.abs(h1 - ref_h).max()) / float(np.abs(ref_h).max())
                      if h1.shape == ref_h.shape else float("inf"))
                if not he <= TOL_Y:
                    errs.append("%s T=%d: state error %.3g" % (name, t, he))
                errors += errs
                worst = [max(worst[0], ye), max(worst[1], we), max(worst[2], he)]
            if flips < 0.1 * total:
                errors.append("%s: the state changes the experts of only %d "
                              "of %d tokens" % (name, flips, total))
            if fragile_n > max(2, 0.02 * total):
                errors.append("%s: %d tokens near a tie" % (name, fragile_n))
            status = "FAIL" if errors else "ok"
            failures += bool(errors)
            print("%-4s %s: %d tokens, the state changes %d, skipped near a "
                  "tie %d; reference y_err %.2g w_err %.2g state_err %.2g"
                  % (status, name, total, flips, fragile_n, worst[0], worst[1],
                     worst[2]))
            for e in errors:
                print("  " + e)
        if args.chain:
            errors, summary = check_chain(args.bin, work, args.seed)
            failures += bool(errors)
            names.append("chain")
            print("%-4s chain: %s" % ("FAIL" if errors else "ok", summary))
            for e in errors[:20]:
                print("  " + e)
    print("%d of %d RMoE cases match the numpy oracle" %
          (len(names) - failures, len(names)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
