#!/usr/bin/env python3
"""RMoE's recurrent router (a GRU whose state crosses layers) checked against
its formula, in float64 numpy, on the reference executor, the generated
kernels on emu, and a package (moe-compile --arch none) on emu.

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
with `moe-run` (two --output files) on each of RUNS at T in {1, 7, 64,
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

With --python each case also runs through the package's Python
`run_with_inputs(0, x, [h])`, which returns (y, [the new state]), and with
--capi LIB through C's `moe_model_run_layer_inputs_outputs` (one layer's
extra results outside a chain; the routing from `moe_model_last_routing`).

With --python the chain also runs through the package's Python
`run_all(x, inputs=[h0])` (moe::Model::runAllWithInputs), which carries the
state the same way and returns the last one, and `last_routing(l)`; with
--capi LIB through C's `moe_model_run_all_inputs` (ctypes; the output and
the last state, whose name and width moe_model_extra_output_info gives).

With --src SRC the canonical example (SRC/examples/rmoe.mlir, its two
layers with weights of the example's shapes under its tensor names) runs
the same way as the chain, on the reference, emu and a package on emu.

Not covered here: the GPU (the same kernels; test/Backend's cuda tests).

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
from oracle_case import (T_VALUES, example_ir, rmsnorm,  # noqa: E402
                         run_all_layers)

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
        # Tensor names are unique across the files (as in a checkpoint: a
        # package keeps one tensor per name).
        prefix = "layers.%d." % layer
        tensors = {prefix + n: v for n, v in tensors.items()}
        write_safetensors(os.path.join(d, wfile), tensors)
        e, k, i, s = self.e, self.k, self.i, self.s
        xt, st, ht = ("tensor<?x%dxf32>" % H, "tensor<?x%dxf32>" % e,
                      "tensor<?x%dxf32>" % s)
        ut = "tensor<?x%dxf32>" % i
        kt = "tensor<?x%dxi32>, tensor<?x%dxf32>" % (k, k)

        def weight(name, shape):
            return ('    %%%s = moe.weight ["%s%s"] from ["%s"] : '
                    "tensor<%sxf32>" % (name, prefix, name, wfile,
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
                 .replace('"experts.', '"%sexperts.' % prefix)
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


# Where each run's moe-run reads the model and which backend runs it.
RUNS = ("reference", "emu", "package-emu")


def compile_package(bin_dir, ir, d):
    """moe-compile --arch none of `ir` into d/pkg (kernels for emu)."""
    pkg = os.path.join(d, "pkg")
    r = subprocess.run([os.path.join(bin_dir, "moe-compile"), ir, "--arch",
                        "none", "-q", "-o", pkg], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise AssertionError("moe-compile failed:\n%s" % r.stderr[-2000:])
    return pkg


def model_of(run, ir, pkg):
    """(model path, backend) of a run."""
    return (pkg, "emu") if run == "package-emu" else (ir, run)


def run_with_state(bin_dir, ir, x, h, d, backend="reference"):
    """moe-run of layer 0 of `ir` (an IR file or a package) with x and the
    state on `backend`: (y, the new state, (ids, weights))."""
    paths = [os.path.join(d, n) for n in ("x.npy", "h.npy", "y.npy", "h1.npy")]
    np.save(paths[0], x)
    np.save(paths[1], h)
    prefix = os.path.join(d, "routing")
    cmd = [os.path.join(bin_dir, "moe-run") if bin_dir else "moe-run", ir,
           "--layer", "0", "--input", paths[0], "--input", paths[1],
           "--output", paths[2], "--output", paths[3], "--routing-out", prefix,
           "--backend", backend]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("moe-run failed:\n%s" % r.stderr[-2000:])
    return (np.load(paths[2]), np.load(paths[3]),
            (np.load(prefix + ".ids.npy"), np.load(prefix + ".weights.npy")))


CHAIN_LAYERS = 3


def run_python(pkg, x, h, layers):
    """Python's run_all of the package on emu with the first layer's state:
    (y, the last layer's state, [(ids, weights) of each layer])."""
    import moe_opt
    package = moe_opt.load(pkg, backend="emu")
    package.record_routing = True
    y, results = package.run_all(x, inputs=[h])
    routing = [package.last_routing(l)[0] for l in range(layers)]
    return (y, results[0] if results else np.zeros((0, 0), np.float32),
            [(r["ids"], r["weights"]) for r in routing])


def run_capi(lib_path, pkg, x, h, layers):
    """C's moe_model_run_all_inputs of the package on emu (ctypes) with the
    first layer's state: (y, the last layer's state, None: the C API's
    routing is not read here)."""
    import ctypes as C
    lib = C.CDLL(lib_path)
    err = C.create_string_buffer(4096)
    model = C.c_void_p()
    lib.moe_model_open.argtypes = [C.c_char_p, C.c_char_p, C.c_int,
                                   C.POINTER(C.c_void_p), C.c_char_p,
                                   C.c_size_t]
    if lib.moe_model_open(pkg.encode(), b"emu", 0, C.byref(model), err,
                          len(err)):
        raise AssertionError("moe_model_open: " + err.value.decode())
    try:
        last = layers - 1
        lib.moe_model_num_extra_outputs.restype = C.c_int64
        lib.moe_model_num_extra_outputs.argtypes = [C.c_void_p, C.c_int64]
        n = lib.moe_model_num_extra_outputs(model, last)
        lib.moe_model_extra_output_info.argtypes = [
            C.c_void_p, C.c_int64, C.c_int64, C.c_char_p, C.c_size_t,
            C.POINTER(C.c_int64)]
        name, width = C.create_string_buffer(64), C.c_int64()
        if n != 1 or lib.moe_model_extra_output_info(model, last, 0, name, 64,
                                                     C.byref(width)):
            raise AssertionError("layer %d: %d extra results" % (last, n))
        if name.value != b"state":
            raise AssertionError("extra result named %r" % name.value)
        t = x.shape[0]
        x = np.ascontiguousarray(x, np.float32)
        h = np.ascontiguousarray(h, np.float32)
        y = np.zeros_like(x)
        h_last = np.zeros((t, width.value), np.float32)
        fp = C.POINTER(C.c_float)
        shape = (C.c_int64 * 2)(*h.shape)
        lib.moe_model_run_all_inputs.argtypes = [
            C.c_void_p, fp, C.c_int64, C.c_int, C.c_int,
            C.POINTER(C.c_void_p), C.POINTER(C.POINTER(C.c_int64)),
            C.POINTER(C.c_int), fp, C.c_int, C.POINTER(fp), C.c_char_p,
            C.c_size_t]
        rc = lib.moe_model_run_all_inputs(
            model, x.ctypes.data_as(fp), t, 0, 1,
            (C.c_void_p * 1)(h.ctypes.data),
            (C.POINTER(C.c_int64) * 1)(shape), (C.c_int * 1)(2),
            y.ctypes.data_as(fp), 1, (fp * 1)(h_last.ctypes.data_as(fp)),
            err, len(err))
        if rc:
            raise AssertionError("moe_model_run_all_inputs: " +
                                 err.value.decode())
        return y, h_last, None
    finally:
        lib.moe_model_close(model)


def run_python_layer(pkg, x, h):
    """Python's run_with_inputs of layer 0 of the package on emu with the
    state: (y, the new state, (ids, weights)); the layer's extra result
    comes back as run_all's do."""
    import moe_opt
    package = moe_opt.load(pkg, backend="emu")
    package.record_routing = True
    y, results = package.run_with_inputs(0, x, [h])
    r = package.last_routing(0)[0]
    return (y, results[0] if results else np.zeros((0, 0), np.float32),
            (r["ids"], r["weights"]))


def run_capi_layer(lib_path, pkg, x, h):
    """C's moe_model_run_layer_inputs_outputs of layer 0 of the package on
    emu (ctypes) with the state: (y, the new state, (ids, weights) from
    moe_model_last_routing)."""
    import ctypes as C
    lib = C.CDLL(lib_path)
    err = C.create_string_buffer(4096)
    model = C.c_void_p()
    lib.moe_model_open.argtypes = [C.c_char_p, C.c_char_p, C.c_int,
                                   C.POINTER(C.c_void_p), C.c_char_p,
                                   C.c_size_t]
    if lib.moe_model_open(pkg.encode(), b"emu", 0, C.byref(model), err,
                          len(err)):
        raise AssertionError("moe_model_open: " + err.value.decode())
    try:
        lib.moe_model_record_routing.argtypes = [C.c_void_p, C.c_int]
        lib.moe_model_record_routing(model, 1)
        t = x.shape[0]
        x = np.ascontiguousarray(x, np.float32)
        h = np.ascontiguousarray(h, np.float32)
        y = np.zeros_like(x)
        h1 = np.zeros_like(h)
        fp = C.POINTER(C.c_float)
        shape = (C.c_int64 * 2)(*h.shape)
        lib.moe_model_run_layer_inputs_outputs.argtypes = [
            C.c_void_p, C.c_int64, fp, C.c_int64, C.c_int,
            C.POINTER(C.c_void_p), C.POINTER(C.POINTER(C.c_int64)),
            C.POINTER(C.c_int), fp, C.c_int, C.POINTER(fp), C.c_char_p,
            C.c_size_t]
        rc = lib.moe_model_run_layer_inputs_outputs(
            model, 0, x.ctypes.data_as(fp), t, 1,
            (C.c_void_p * 1)(h.ctypes.data),
            (C.POINTER(C.c_int64) * 1)(shape), (C.c_int * 1)(2),
            y.ctypes.data_as(fp), 1, (fp * 1)(h1.ctypes.data_as(fp)),
            err, len(err))
        if rc:
            raise AssertionError("moe_model_run_layer_inputs_outputs: " +
                                 err.value.decode())
        slots = C.c_int64()
        lib.moe_model_last_routing_shape.argtypes = [
            C.c_void_p, C.c_int64, C.c_int, C.POINTER(C.c_int64),
            C.POINTER(C.c_int64), C.POINTER(C.c_int64), C.c_char_p,
            C.c_size_t]
        if lib.moe_model_last_routing_shape(model, 0, 0, None,
                                            C.byref(slots), None, err,
                                            len(err)):
            raise AssertionError("moe_model_last_routing_shape: " +
                                 err.value.decode())
        ids = np.zeros((t, slots.value), np.int32)
        w = np.zeros((t, slots.value), np.float32)
        lib.moe_model_last_routing.argtypes = [
            C.c_void_p, C.c_int64, C.c_int, C.c_void_p, C.c_void_p,
            C.c_char_p, C.c_size_t]
        if lib.moe_model_last_routing(model, 0, 0, ids.ctypes.data,
                                      w.ctypes.data, err, len(err)):
            raise AssertionError("moe_model_last_routing: " +
                                 err.value.decode())
        return y, h1, (ids, w)
    finally:
        lib.moe_model_close(model)


# examples/rmoe.mlir: its shapes (the oracle's constants) and layers.
EXAMPLE = "examples/rmoe.mlir"
EXAMPLE_CASE = dict(experts=8, k=2, inner=16, state=32, bias=True, inter=128)
EXAMPLE_LAYERS = 2


def example_tensors(layers):
    """The checkpoint of examples/rmoe.mlir (model.safetensors) holding
    `layers`' weights under the example's names."""
    tensors = {}
    for l, layer in enumerate(layers):
        p = "model.layers.%d.mlp." % l
        tensors.update({
            p + "router.input_proj.weight": ("F32", layer.w1),
            p + "router.gru.weight_ih": ("F32", layer.wih),
            p + "router.gru.weight_hh": ("F32", layer.whh),
            p + "router.gru.bias_ih": ("F32", layer.bih),
            p + "router.gru.bias_hh": ("F32", layer.bhh),
            p + "router.output_proj.weight": ("F32", layer.w2)})
        for n, v in gated_expert_tensors(layer.gate, layer.up,
                                         layer.down).items():
            tensors[p + n] = v
    return tensors


def check_chain(bin_dir, work, seed, runs=RUNS, lib=None, src=None):
    """RMoE layers under moe-run --all-layers (pre-norm chain: v_l =
    rmsnorm(s_l), s_{l+1} = s_l + y_l) on each of RUNS: layer l's new state
    is layer l+1's previous state: CHAIN_LAYERS generated layers, or with
    `src` the canonical example examples/rmoe.mlir on random weights.
    Returns (errors, summary)."""
    rng = np.random.default_rng([seed, 99 if src is None else 98])
    d = os.path.join(work, "chain" if src is None else "example")
    os.makedirs(d)
    if src is None:
        layers = [RMoE(rng, **CASES["gru-top2"]) for _ in range(CHAIN_LAYERS)]
        ir = write_module(d, layers)
    else:
        layers = [RMoE(rng, **EXAMPLE_CASE) for _ in range(EXAMPLE_LAYERS)]
        ir, text = example_ir(
            src, EXAMPLE, d, ("tensor<16x64xf32>", "tensor<96x32xf32>",
                              "tensor<8x32xf32>", "{k = 2 : i64}",
                              "tensor<8x128x64xf32>", "moe.normalize"),
            example_tensors(layers))
        if text.count("moe.layer = ") != EXAMPLE_LAYERS:
            raise AssertionError("%s: expected %d layers" % (EXAMPLE,
                                                             EXAMPLE_LAYERS))
    n_layers = len(layers)
    pkg = compile_package(bin_dir, ir, d)
    errors, total, flips, fragile_n = [], 0, 0, 0
    worst = {run: [0.0, 0.0, 0.0] for run in runs}
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
        for run in runs:
            if run == "python-run_all":
                y, h_last, routing = run_python(pkg, x, h0, n_layers)
            elif run == "c-run_all":
                y, h_last, routing = run_capi(lib, pkg, x, h0, n_layers)
            else:
                model, backend = model_of(run, ir, pkg)
                (y, h_last), routing = run_all_layers(
                    bin_dir, model, [x, h0], d, backend, n_layers,
                    outputs=2)
            tag = "chain %s T=%d" % (run, t)
            for l, ((ids, w), (rids, rw)) in enumerate(zip(routing or [],
                                                           ref)):
                errs, we = compare_routing("%s layer %d" % (tag, l), ids, w,
                                           rids, rw, skip, TOL_W)
                errors += errs[:3]
                worst[run][1] = max(worst[run][1], we)
            errs, ye = compare_output(tag, y, stream, skip, TOL_Y)
            errors += errs
            he = (float(np.abs(h_last - h)[~skip].max()) / float(np.abs(h).max())
                  if h_last.shape == h.shape and (~skip).any() else
                  (0.0 if h_last.shape == h.shape else float("inf")))
            if not he <= TOL_Y:
                errors.append("%s: last state error %.3g" % (tag, he))
            worst[run] = [max(worst[run][0], ye), worst[run][1],
                          max(worst[run][2], he)]
    if flips < 0.1 * total * (n_layers - 1):
        errors.append("chain: the carried state changes the experts of only "
                      "%d token-layers" % flips)
    if fragile_n > max(2, 0.02 * total):
        errors.append("chain: %d tokens near a tie" % fragile_n)
    return errors, ("%d layers, %d tokens, the carried state changes %d "
                    "token-layers, skipped near a tie %d; %s"
                    % (n_layers, total, flips, fragile_n,
                       "; ".join("%s y_err %.2g w_err %.2g state_err %.2g"
                                 % (run, *worst[run]) for run in runs)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--cases", default=",".join(sorted(CASES)))
    ap.add_argument("--chain", action="store_true",
                    help="also chain %d layers under moe-run --all-layers"
                    % CHAIN_LAYERS)
    ap.add_argument("--python", action="store_true",
                    help="also chain them with the package's Python run_all")
    ap.add_argument("--capi", default="",
                    help="libmoe_runtime.so: also chain them with C's "
                    "moe_model_run_all_inputs (output and last state)")
    ap.add_argument("--src", default="",
                    help="the source tree: also run examples/rmoe.mlir (2 "
                    "layers chained, zero initial state) on random weights")
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
            pkg = compile_package(args.bin, ir, d)
            runs = (RUNS + (("python-layer",) if args.python else ()) +
                    (("c-layer",) if args.capi else ()))
            worst = {run: [0.0, 0.0, 0.0] for run in runs}
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
                ref_h = case.gru(x, h)
                for run in runs:
                    if run == "python-layer":
                        y, h1, (ids, w) = run_python_layer(pkg, x, h)
                    elif run == "c-layer":
                        y, h1, (ids, w) = run_capi_layer(args.capi, pkg, x, h)
                    else:
                        model, backend = model_of(run, ir, pkg)
                        y, h1, (ids, w) = run_with_state(args.bin, model, x,
                                                         h, d, backend)
                    errs, ye, we = compare("%s %s T=%d" % (name, run, t), y,
                                           ids, w, ref_y, ref_ids, ref_w,
                                           fragile, TOL_Y, TOL_W)
                    he = (float(np.abs(h1 - ref_h).max()) /
                          float(np.abs(ref_h).max())
                          if h1.shape == ref_h.shape else float("inf"))
                    if not he <= TOL_Y:
                        errs.append("%s %s T=%d: state error %.3g"
                                    % (name, run, t, he))
                    errors += errs
                    worst[run] = [max(worst[run][0], ye),
                                  max(worst[run][1], we),
                                  max(worst[run][2], he)]
            if flips < 0.1 * total:
                errors.append("%s: the state changes the experts of only %d "
                              "of %d tokens" % (name, flips, total))
            if fragile_n > max(2, 0.02 * total):
                errors.append("%s: %d tokens near a tie" % (name, fragile_n))
            status = "FAIL" if errors else "ok"
            failures += bool(errors)
            print("%-4s %s: %d tokens, the state changes %d, skipped near a "
                  "tie %d; %s"
                  % (status, name, total, flips, fragile_n,
                     "; ".join("%s y_err %.2g w_err %.2g state_err %.2g"
                               % (run, *worst[run]) for run in runs)))
            for e in errors:
                print("  " + e)
        if args.chain:
            errors, summary = check_chain(
                args.bin, work, args.seed,
                RUNS + (("python-run_all",) if args.python else ()) +
                (("c-run_all",) if args.capi else ()), args.capi)
            failures += bool(errors)
            names.append("chain")
            print("%-4s chain: %s" % ("FAIL" if errors else "ok", summary))
            for e in errors[:20]:
                print("  " + e)
        if args.src:
            errors, summary = check_chain(args.bin, work, args.seed, RUNS,
                                          src=args.src)
            failures += bool(errors)
            names.append("example")
            print("%-4s example %s: %s" % ("FAIL" if errors else "ok",
                                           EXAMPLE, summary))
            for e in errors[:20]:
                print("  " + e)
    print("%d of %d RMoE cases match the numpy oracle" %
          (len(names) - failures, len(names)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
