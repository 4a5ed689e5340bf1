#!/usr/bin/env python3
"""Mixtral-format MoE models with planted structure, for the compression
measurements (run.sh) and their tests (test/Bench/planted.test).

  planted.py redundant OUT [--sigma 0.01] [--experts 16] [--prototypes 4]
  planted.py lowrank OUT [--rank 4] [--noise 0.001]
  planted.py loud OUT
  common options: [--seed N] [--layers 1] [--tokens 256]

Each writes OUT/model/ (config.json and model.safetensors, f32, hidden size
64, top-k softmax routing renormalised: moe-import reads it), OUT/calib.npy
and OUT/heldout.npy (float32 [tokens, 64], two draws of one distribution)
and OUT/truth.json (what was planted):

  redundant  E experts that are noisy copies of P prototypes: each weight
             (router row included) is its prototype's plus noise of sigma
             times the prototype's element standard deviation. Tokens come
             from a mixture of P clusters, cluster c centred on prototype
             c's router direction, so each token routes to copies of one
             prototype. truth: "groups" (expert -> prototype).
  lowrank    8 experts whose gate, up and down projections have rank r
             (plus noise of `noise` times the element standard deviation).
             Inputs have a skewed covariance (standard deviations falling
             from 1 to 0.01 along random orthogonal directions), and the
             larger half of each gate/up singular values sits on the
             low-variance input directions, so a plain truncated SVD below
             rank r keeps what the inputs barely excite and a Gram-whitened
             one does not. truth: "rank", "input_scales".
  loud       8 experts, top-4 (the others top-2). Tokens come from 7
             clusters, each led by one expert (logit 10, the others 0); the
             router row of the remaining expert ("loud") follows a direction
             all tokens share (logit 4), so every token selects it, behind
             its leader, but its down projection is scaled by 1e-3: it is
             the most often selected expert, with the smallest gate x
             output-norm mass, and the one whose removal changes the output
             least.
             truth: "loud".

Only numpy and test/Oracle/hf_models.py (the safetensors writer and the
Mixtral config) are used.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "test", "Oracle"))
import hf_models  # noqa: E402

H = hf_models.H


def names(layer, expert):
    """Router, gate, up and down tensor names of the Mixtral checkpoint."""
    p = "model.layers.%d.block_sparse_moe" % layer
    return (p + ".gate.weight", p + ".experts.%d.w1.weight" % expert,
            p + ".experts.%d.w3.weight" % expert,
            p + ".experts.%d.w2.weight" % expert)


def mixtral(rng, experts, inter, layers):
    """An HFModel with the Mixtral config; its tensors are replaced below."""
    return hf_models.build_mixtral(rng, dtype="F32", experts=experts, k=2,
                                   inter=inter, layers=layers)


def set_layer(m, layer, router, gate, up, down):
    m.add(names(layer, 0)[0], router)
    for e in range(router.shape[0]):
        _, g, u, d = names(layer, e)
        m.add(g, gate[e])
        m.add(u, up[e])
        m.add(d, down[e])


def noisy(rng, base, sigma):
    return base + sigma * np.std(base) * rng.standard_normal(base.shape)


def redundant(rng, args):
    E, P, inter = args.experts, args.prototypes, 32
    if E % P:
        sys.exit("planted.py: --experts must be a multiple of --prototypes")
    # Each prototype owns E / P experts, in a shuffled order.
    groups = rng.permutation(np.repeat(np.arange(P), E // P))
    m = mixtral(rng, E, inter, args.layers)
    # Router directions: orthonormal, so clusters route apart.
    q, _ = np.linalg.qr(rng.standard_normal((H, P)))
    dirs = q.T
    for layer in range(args.layers):
        router = 2.0 * dirs
        gate = rng.standard_normal((P, inter, H)) / math.sqrt(H)
        up = rng.standard_normal((P, inter, H)) / math.sqrt(H)
        down = rng.standard_normal((P, H, inter)) / math.sqrt(inter)
        set_layer(m, layer,
                  np.stack([noisy(rng, router[g], args.sigma) for g in groups]),
                  np.stack([noisy(rng, gate[g], args.sigma) for g in groups]),
                  np.stack([noisy(rng, up[g], args.sigma) for g in groups]),
                  np.stack([noisy(rng, down[g], args.sigma) for g in groups]))

    def tokens(n):
        c = rng.integers(0, P, n)
        return 3.0 * dirs[c] + 0.5 * rng.standard_normal((n, H))
    truth = {"kind": "redundant", "sigma": args.sigma, "prototypes": P,
             "groups": groups.tolist()}
    return m, tokens, truth


def low_rank(rng, shape, rank, singular):
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], rank)))
    v, _ = np.linalg.qr(rng.standard_normal((shape[1], rank)))
    return (u * singular) @ v.T


def lowrank(rng, args):
    E, inter, r = 8, 32, args.rank
    m = mixtral(rng, E, inter, args.layers)
    basis, _ = np.linalg.qr(rng.standard_normal((H, H)))
    scales = np.logspace(0, -2, H)  # input standard deviation per direction
    high, low = basis[:, :H // 2], basis[:, H // 2:]
    for layer in range(args.layers):
        router = rng.standard_normal((E, H)) * hf_models.ROUTER_SCALE
        gate, up, down = [], [], []
        for e in range(E):
            for out in (gate, up):
                # Right singular vectors: the larger half in low-variance
                # input directions, the smaller half in high-variance ones.
                big = low[:, rng.choice(H // 2, r - r // 2, replace=False)]
                small = high[:, rng.choice(H // 2, r // 2, replace=False)]
                v = np.concatenate([big, small], axis=1)
                u, _ = np.linalg.qr(rng.standard_normal((inter, r)))
                s = np.concatenate([np.full(r - r // 2, 3.0),
                                    np.full(r // 2, 1.0)])
                w = (u * s) @ v.T
                out.append(noisy(rng, w, args.noise))
            w = low_rank(rng, (H, inter), r, np.linspace(2.0, 1.0, r))
            down.append(noisy(rng, w, args.noise))
        set_layer(m, layer, router, np.stack(gate), np.stack(up),
                  np.stack(down))

    def tokens(n):
        return (rng.standard_normal((n, H)) * scales) @ basis.T * 4.0
    truth = {"kind": "lowrank", "rank": r, "noise": args.noise,
             "input_scales": (scales * 4.0).tolist()}
    return m, tokens, truth


def loud(rng, args):
    E, inter = 8, 32
    # Top-4 of 8, so that the loud expert is in every token's set behind
    # the token's leading expert.
    m = hf_models.build_mixtral(rng, dtype="F32", experts=E, k=4,
                                inter=inter, layers=args.layers)
    loud_expert = int(rng.integers(0, E))
    others = [e for e in range(E) if e != loud_expert]
    q, _ = np.linalg.qr(rng.standard_normal((H, E)))
    dirs, u = q.T[:E - 1], q.T[E - 1]
    for layer in range(args.layers):
        # Token of cluster c: logit 10 for its expert, 0 +- 1.25 for the
        # other quiet-router experts, 4 +- 0.5 for the loud one.
        router = np.zeros((E, H))
        router[others] = 2.5 * dirs
        router[loud_expert] = 1.0 * u
        gate = rng.standard_normal((E, inter, H)) / math.sqrt(H)
        up = rng.standard_normal((E, inter, H)) / math.sqrt(H)
        down = rng.standard_normal((E, H, inter)) / math.sqrt(inter)
        down[loud_expert] *= 1e-3  # quiet
        set_layer(m, layer, router, gate, up, down)

    def tokens(n):
        c = rng.integers(0, E - 1, n)
        return 4.0 * dirs[c] + 4.0 * u + 0.5 * rng.standard_normal((n, H))
    truth = {"kind": "loud", "loud": loud_expert}
    return m, tokens, truth


def main():
    parser = argparse.ArgumentParser(
        description="Writes a Mixtral-format model with planted structure "
        "and its calibration and held-out inputs.")
    parser.add_argument("kind", choices=["redundant", "lowrank", "loud"])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=256,
                        help="tokens of each of calib.npy and heldout.npy")
    parser.add_argument("--sigma", type=float, default=0.01,
                        help="redundant: relative noise of the copies")
    parser.add_argument("--experts", type=int, default=16,
                        help="redundant: number of experts")
    parser.add_argument("--prototypes", type=int, default=4,
                        help="redundant: number of prototypes")
    parser.add_argument("--rank", type=int, default=4,
                        help="lowrank: planted rank")
    parser.add_argument("--noise", type=float, default=1e-3,
                        help="lowrank: relative noise added to each matrix")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    build = {"redundant": redundant, "lowrank": lowrank, "loud": loud}
    m, tokens, truth = build[args.kind](rng, args)
    os.makedirs(args.out, exist_ok=True)
    m.write(os.path.join(args.out, "model"))
    for name in ("calib", "heldout"):
        np.save(os.path.join(args.out, name + ".npy"),
                tokens(args.tokens).astype(np.float32))
    with open(os.path.join(args.out, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)
    print("planted.py: wrote %s (%s)" % (args.out, args.kind))


if __name__ == "__main__":
    main()
