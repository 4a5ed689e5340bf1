#!/usr/bin/env python3
"""Checks a model of bench/compression/planted.py against what it plants.

  check_planted.py DIR

DIR holds what planted.py wrote (model/, calib.npy, truth.json) and what
moe-run wrote on calib.npy: DIR/y.npy and the routing DIR/r.ids.npy,
DIR/r.weights.npy. Checks first that moe-run ran the model numpy reads back
(routing and output), then the planted property. Prints one line per check
and exits 1 on the first failure.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "Oracle"))
import hf_models  # noqa: E402

d = sys.argv[1]
truth = json.load(open(os.path.join(d, "truth.json")))
w, _ = hf_models.read_checkpoint(os.path.join(d, "model"))
w = {k: v.astype(np.float64) for k, v in w.items()}
x = np.load(os.path.join(d, "calib.npy")).astype(np.float64)
y = np.load(os.path.join(d, "y.npy")).astype(np.float64)
ids = np.load(os.path.join(d, "r.ids.npy"))
gates = np.load(os.path.join(d, "r.weights.npy")).astype(np.float64)
p = "model.layers.0.block_sparse_moe."
router = w[p + "gate.weight"]
E = router.shape[0]
gate = np.stack([w[p + "experts.%d.w1.weight" % e] for e in range(E)])
up = np.stack([w[p + "experts.%d.w3.weight" % e] for e in range(E)])
down = np.stack([w[p + "experts.%d.w2.weight" % e] for e in range(E)])


def check(ok, what):
    print(("ok: " if ok else "FAILED: ") + what)
    if not ok:
        sys.exit(1)


def expert(e, xs):
    return hf_models.glu(xs, gate[e], up[e], down[e])


# moe-run ran this model: top-k of the softmax, renormalised, and the
# weighted sum of the k experts.
k = ids.shape[1]
logits = x @ router.T
want, vals, margin = hf_models.topk_rows(logits, k)
clear = margin > 1e-4
check(np.array_equal(np.sort(ids[clear], 1), np.sort(want[clear], 1)),
      "moe-run routes as numpy (%d of %d tokens away from ties)"
      % (clear.sum(), len(x)))
ref = np.zeros_like(y)
for t in range(len(x)):
    for s in range(k):
        ref[t] += gates[t, s] * expert(ids[t, s], x[t:t + 1])[0]
err = np.linalg.norm(ref - y) / np.linalg.norm(ref)
check(err < 1e-4, "moe-run output matches numpy (relative error %.1e)" % err)


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


kind = truth["kind"]
if kind == "redundant":
    groups = np.array(truth["groups"])
    sigma = truth["sigma"]
    # Distance of two experts: the largest relative distance of their router
    # rows and projections.
    def dist(a, b):
        return max(rel(m[a], m[b]) for m in (router, gate, up, down))
    same, apart = [], []
    for a in range(E):
        for b in range(a + 1, E):
            (same if groups[a] == groups[b] else apart).append(dist(a, b))
    # Two copies differ by about sqrt(2) sigma.
    check(max(same) <= 3 * sigma,
          "copies of one prototype within 3 sigma (largest %.2e)" % max(same))
    check(min(apart) > 0.5,
          "experts of different prototypes apart (smallest %.3f)" % min(apart))
    together = np.mean(groups[ids[:, 0]] == groups[ids[:, 1]])
    check(together >= 0.95, "tokens route to two copies of one prototype "
          "(%.1f%% of tokens)" % (100 * together))
elif kind == "lowrank":
    r = truth["rank"]
    worst_tail, worst_head = 0.0, 1.0
    for m in (gate, up, down):
        for e in range(E):
            s = np.linalg.svd(m[e], compute_uv=False)
            worst_tail = max(worst_tail, s[r] / s[0])
            worst_head = min(worst_head, s[r - 1] / s[0])
    check(worst_tail < 0.01 and worst_head > 0.1,
          "every matrix has rank %d (sigma_%d/sigma_1 <= %.1e, "
          "sigma_%d/sigma_1 >= %.2f)" % (r, r + 1, worst_tail, r, worst_head))
    ev = np.linalg.eigvalsh(np.cov(x.T))
    check(ev[-1] / ev[0] > 1e3,
          "the inputs' covariance is skewed (eigenvalues span %.1e)"
          % (ev[-1] / ev[0]))
    # At half the rank, a Gram-whitened truncation beats a plain one on the
    # gate projection's output.
    k = r // 2
    chol = np.linalg.cholesky(x.T @ x)
    plain, white = [], []
    for e in range(E):
        m = gate[e]
        u, s, vt = np.linalg.svd(m)
        plain.append(rel(x @ ((u[:, :k] * s[:k]) @ vt[:k]).T, x @ m.T))
        u, s, vt = np.linalg.svd(m @ chol)
        mk = ((u[:, :k] * s[:k]) @ vt[:k]) @ np.linalg.inv(chol)
        white.append(rel(x @ mk.T, x @ m.T))
    check(np.mean(white) < 0.5 * np.mean(plain),
          "whitened rank-%d error %.3f < half the plain one %.3f"
          % (k, np.mean(white), np.mean(plain)))
elif kind == "loud":
    loud = truth["loud"]
    counts = np.bincount(ids[ids >= 0], minlength=E)
    check(counts.argmax() == loud and counts[loud] >= 0.8 * len(x),
          "expert %d is selected most often (%d of %d tokens)"
          % (loud, counts[loud], len(x)))
    # REAP's score: mean over routed tokens of gate x ||expert output||.
    score = np.zeros(E)
    for e in range(E):
        t, s = np.nonzero(ids == e)
        if len(t):
            norms = np.linalg.norm(expert(e, x[t]), axis=1)
            score[e] = np.mean(gates[t, s] * norms)
    check(score.argmin() == loud and score[loud] < 0.01 * np.median(score),
          "expert %d has the smallest gate x output norm (%.2e, median %.2e)"
          % (loud, score[loud], np.median(score)))
    # Removing an expert (its router row: the tokens re-route among the
    # others) changes the output least for the loud one.
    def without(drop):
        keep = [e for e in range(E) if e != drop]
        r, g, _ = hf_models.topk_rows(hf_models.softmax(logits[:, keep]), k)
        g = g / g.sum(axis=1, keepdims=True)
        out = np.zeros_like(y)
        for t in range(len(x)):
            for s in range(k):
                out[t] += g[t, s] * expert(keep[r[t, s]], x[t:t + 1])[0]
        return rel(out, ref)
    change = [without(e) for e in range(E)]
    others = min(c for e, c in enumerate(change) if e != loud)
    check(change[loud] < 0.5 * others,
          "removing expert %d changes the output least (%.3f, the others "
          "at least %.3f)" % (loud, change[loud], others))
else:
    check(False, "unknown kind " + kind)
