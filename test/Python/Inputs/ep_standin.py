"""TEST ONLY: a pure-numpy stand-in for a rank package of moe-compile
--placement, with the two methods moe_opt_distributed needs (`route`,
`run_dispatched`, the contract of docs/api.md). It is not our kernels: it
tests the runner's mechanics (replica choice, dedupe, all_to_all, combine)
independently of the runtime. test/Python/distributed-package.test runs the
runner on real packages.

The toy layer: logits = x Wg^T + bias over E real and N null experts,
softmax, top-K, weights renormalised over the K; a null expert's choice is
id -1 (an empty slot). Expert e: tanh(x A_e) B_e. Optional shared expert:
x S, computed by rank 0 only, for every row it is given.
"""
import json
import os

import numpy as np


def make_model(path, seed, hidden=16, experts=6, nulls=1, k=3, shared=True,
               dead=(5,)):
    """Writes the toy weights to PATH (npz). Experts in `dead` get a very
    negative router bias: no token ever chooses them."""
    rng = np.random.default_rng(seed)
    inner = 8
    bias = np.zeros(experts + nulls, np.float32)
    bias[list(dead)] = -1e4
    m = dict(
        wg=rng.standard_normal((experts + nulls, hidden)).astype(np.float32),
        bias=bias,
        a=(rng.standard_normal((experts, hidden, inner)) / 4).astype(
            np.float32),
        b=(rng.standard_normal((experts, inner, hidden)) / 3).astype(
            np.float32),
        k=np.array(k),
        experts=np.array(experts),
    )
    if shared:
        m["s"] = (rng.standard_normal((hidden, hidden)) / 4).astype(
            np.float32)
    np.savez(path, **m)
    return path


def load_model(path):
    return dict(np.load(path))


def route(m, x):
    """[T, H] -> logical ids int32 [T, K] (-1: a null expert), weights."""
    x = np.asarray(x, np.float64)
    logits = x @ m["wg"].astype(np.float64).T + m["bias"]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    k = int(m["k"])
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(p, top, axis=1)
    w = w / w.sum(axis=1, keepdims=True)
    ids = np.where(top < int(m["experts"]), top, -1).astype(np.int32)
    return ids, w.astype(np.float32)


def expert(m, e, x):
    x = np.asarray(x, np.float64)
    return np.tanh(x @ m["a"][e]) @ m["b"][e]


def full_layer(m, x):
    """The single-process layer (the oracle), float64."""
    ids, w = route(m, x)
    y = np.zeros(np.shape(x), np.float64)
    for t in range(len(x)):
        for j in range(ids.shape[1]):
            if ids[t, j] >= 0:
                y[t] += w[t, j] * expert(m, ids[t, j], x[t:t + 1])[0]
    if "s" in m:
        y += np.asarray(x, np.float64) @ m["s"]
    return y


def write_package(pkg, model_path, gpus, slot_expert, experts,
                  skip_rank=None):
    """A multi-rank package of the stand-in: placement.json + rank<r>/."""
    per = len(slot_expert) // gpus
    slot_gpu = [s // per for s in range(len(slot_expert))]
    os.makedirs(pkg, exist_ok=True)
    with open(os.path.join(pkg, "placement.json"), "w") as f:
        json.dump({"format": "moe-placement", "version": 1, "gpus": gpus,
                   "layers": [{"layer": 3, "experts": experts,
                               "slot_expert": slot_expert,
                               "slot_gpu": slot_gpu}]}, f)
    for r in range(gpus):
        if r == skip_rank:
            continue
        d = os.path.join(pkg, f"rank{r}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "standin.json"), "w") as f:
            json.dump({"rank": r, "model": os.path.abspath(model_path),
                       "slot_expert": slot_expert, "slot_gpu": slot_gpu}, f)
    return pkg


class StandinPackage:
    """route/run_dispatched of one rank, on numpy; counts the rows each
    slot served (served[s]) for the test's replica checks, and the slots of
    other ranks it was given (foreign)."""

    def __init__(self, path):
        with open(os.path.join(path, "standin.json")) as f:
            cfg = json.load(f)
        self.rank = cfg["rank"]
        self.slot_expert = cfg["slot_expert"]
        self.slot_gpu = cfg["slot_gpu"]
        self.m = load_model(cfg["model"])
        self.served = np.zeros(len(self.slot_expert), np.int64)
        self.rows_run = 0
        # Slots of other ranks the runner left in ids (it sets them to -1).
        self.foreign = 0

    def route(self, layer, x):
        assert layer == 3, layer
        return route(self.m, x)

    def run_dispatched(self, layer, x, ids, weights):
        assert layer == 3, layer
        x = np.asarray(x)
        ids = np.asarray(ids)
        assert x.dtype == np.float32 and ids.dtype == np.int32, \
            (x.dtype, ids.dtype)
        assert ids.shape == weights.shape == (len(x), int(self.m["k"]))
        y = np.zeros(x.shape, np.float64)
        for t in range(len(x)):
            for j in range(ids.shape[1]):
                s = int(ids[t, j])
                if s >= 0 and self.slot_gpu[s] != self.rank:
                    self.foreign += 1
                if s < 0 or self.slot_gpu[s] != self.rank:
                    continue
                self.served[s] += 1
                y[t] += weights[t, j] * expert(self.m, self.slot_expert[s],
                                               x[t:t + 1])[0]
        if self.rank == 0 and "s" in self.m:
            y += x.astype(np.float64) @ self.m["s"]
        self.rows_run += len(x)
        return y.astype(np.float32)


def open_standin(path, backend):
    """The package factory (moe_opt_distributed's package_factory and
    --package-factory ep_standin:open_standin)."""
    assert backend in ("emu", "auto"), backend
    return StandinPackage(path)
