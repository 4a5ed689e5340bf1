"""Planted inputs for the layout bench (bench/layout/run.sh).

  planted.py model OUT.mlir --layers L --experts E [--top-k K]
      an IR of L Mixtral-style MoE layers of E experts (hidden 16, expert
      width 32, bf16); the layout passes read its layers, expert counts and
      weight shapes, never the weights.
  planted.py zipf --ir M.mlir --out P.safetensors --experts E --exponent S
      [--layers L] [--tokens T] [--law-seed A] [--window W]
      a moe-profile v1 of L layers: each token selects 2 distinct experts
      from a Zipf law (expert of rank r weighted r^-S, the ranks shuffled per
      layer by --law-seed); --window picks the draw of tokens, so windows 0
      and 1 are two samples of one law (plan on one, score on the other).
  planted.py chains --ir M.mlir --out P.safetensors --experts E --layers L
      [--stay P] [--tokens T]
      a profile of planted layer-to-layer chains: a token starts on a
      uniform expert and, from layer l to l+1, follows expert i -> perm_l(i)
      with probability P, else goes to a uniform expert (one expert per
      token, with transitions). --planted-out writes the cross-GPU fraction
      of the placement that follows the planted chains on G GPUs (--gpus;
      layer 0 contiguous, perm_l(i) on the GPU of i): what a placement that
      found the chains achieves, a reference for the planner's result.

The profile's model identity is the SHA-256 of --ir (docs/profile.md).
"""
import argparse
import hashlib
import json
import struct
import sys

import numpy as np


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, values in tensors.items():
        data = np.ascontiguousarray(values, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(np.shape(values)),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)


def model_hash(ir):
    with open(ir, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_profile(path, ir, layers, tokens):
    """layers: list of (expert_count, coactivation, transition or None)."""
    tensors = {}
    for l, (count, co, tr) in enumerate(layers):
        pre = "layer.%d." % l
        tensors[pre + "expert_count"] = count
        tensors[pre + "gate_mass"] = count / 2.0
        tensors[pre + "coactivation"] = co
        tensors[pre + "output_norm_mass"] = count
        if tr is not None:
            tensors[pre + "transition"] = tr
    write_safetensors(path, tensors, {"format": "moe-profile", "version": "1",
                                      "model": model_hash(ir),
                                      "tokens": str(tokens)})


def cmd_model(a):
    E, K, H, I = a.experts, a.top_k, 16, 32
    out = ["// Planted layout bench model: %d MoE layers of %d experts "
           "(bench/layout/planted.py); the weights are never read."
           % (a.layers, E),
           'module attributes {moe.weight_root = "."} {']
    for l in range(a.layers):
        names = lambda w: ", ".join('"l%d.e%d.%s"' % (l, e, w)
                                    for e in range(E))
        out += [
            "  func.func @layer_%d(%%x: tensor<?x%dxbf16>) -> tensor<?x%dxbf16>"
            " attributes {moe.layer = %d : i64} {" % (l, H, H, l),
            '    %%wg = moe.weight ["l%d.gate"] from ["model.safetensors"] :'
            " tensor<%dx%dxbf16>" % (l, E, H),
            "    %%logits = moe.router_linear %%x, %%wg : (tensor<?x%dxbf16>,"
            " tensor<%dx%dxbf16>) -> tensor<?x%dxf32>" % (H, E, H, E),
            "    %%p = moe.softmax %%logits : tensor<?x%dxf32>" % E,
            "    %%ids, %%vals = moe.topk %%p {k = %d : i64} : tensor<?x%dxf32>"
            " -> tensor<?x%dxi32>, tensor<?x%dxf32>" % (K, E, K, K),
            "    %%w = moe.normalize %%vals : tensor<?x%dxf32>" % K,
            "    %%counts, %%offsets, %%rows = moe.dispatch %%ids {num_experts ="
            " %d : i64} : tensor<?x%dxi32> -> tensor<%dxi32>, tensor<%dxi32>,"
            " tensor<?xi32>" % (E, K, E, E + 1),
            "    %%xs = moe.permute %%x, %%rows, %%w : (tensor<?x%dxbf16>,"
            " tensor<?xi32>, tensor<?x%dxf32>) -> tensor<?x%dxbf16>" % (H, K, H),
            '    %%w_gate = moe.weight [%s] from ["model.safetensors"] :'
            " tensor<%dx%dx%dxbf16>" % (names("w1"), E, I, H),
            '    %%w_up = moe.weight [%s] from ["model.safetensors"] :'
            " tensor<%dx%dx%dxbf16>" % (names("w3"), E, I, H),
            '    %%w_down = moe.weight [%s] from ["model.safetensors"] :'
            " tensor<%dx%dx%dxbf16>" % (names("w2"), E, H, I),
            "    %%ys = moe.expert_ffn %%xs, %%offsets gate(%%w_gate) up(%%w_up)"
            " down(%%w_down) {activation = #moe.activation<silu>} :"
            " (tensor<?x%dxbf16>, tensor<%dxi32>, tensor<%dx%dx%dxbf16>,"
            " tensor<%dx%dx%dxbf16>, tensor<%dx%dx%dxbf16>) -> tensor<?x%dxbf16>"
            % (H, E + 1, E, I, H, E, I, H, E, H, I, H),
            "    %%y = moe.combine %%ys, %%rows, %%w : (tensor<?x%dxbf16>,"
            " tensor<?xi32>, tensor<?x%dxf32>) -> tensor<?x%dxbf16>" % (H, K, H),
            "    return %%y : tensor<?x%dxbf16>" % H,
            "  }"]
    out.append("}")
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")


def cmd_zipf(a):
    E, L, T = a.experts, a.layers, a.tokens or 500 * a.experts
    law = np.random.default_rng(a.law_seed)
    draw = np.random.default_rng([a.law_seed, 1000 + a.window])
    logp = -a.exponent * np.log(np.arange(1, E + 1, dtype=np.float64))
    layers = []
    for _ in range(L):
        lp = logp[law.permutation(E)]
        count = np.zeros(E)
        co = np.zeros(E * E)
        for start in range(0, T, 8192):
            n = min(8192, T - start)
            # Two distinct experts by the Gumbel top-k trick: a draw without
            # replacement, each pick proportional to the law.
            g = lp[None, :] + draw.gumbel(size=(n, E))
            pick = np.argpartition(-g, 2, axis=1)[:, :2]
            i, j = pick[:, 0], pick[:, 1]
            count += np.bincount(i, minlength=E) + np.bincount(j, minlength=E)
            for x, y in ((i, i), (j, j), (i, j), (j, i)):
                co += np.bincount(x * E + y, minlength=E * E)
        layers.append((count, co.reshape(E, E), None))
    write_profile(a.out, a.ir, layers, T)


def cmd_chains(a):
    E, L, T = a.experts, a.layers, a.tokens or 200 * a.experts
    rng = np.random.default_rng(a.seed)
    perms = [rng.permutation(E) for _ in range(L)]
    cur = rng.integers(E, size=T)
    layers = []
    for l in range(L):
        count = np.bincount(cur, minlength=E).astype(np.float64)
        co = np.diag(count)
        tr = None
        if l + 1 < L:
            stay = rng.random(T) < a.stay
            nxt = np.where(stay, perms[l][cur], rng.integers(E, size=T))
            tr = np.bincount(cur * E + nxt, minlength=E * E).reshape(E, E)
            tr = tr.astype(np.float64)
            cur = nxt
        layers.append((count, co, tr))
    write_profile(a.out, a.ir, layers, T)
    if a.planted_out:
        if a.gpus < 1 or E % a.gpus:
            sys.exit("planted.py: --gpus %d does not divide %d experts"
                     % (a.gpus, E))
        gpu = np.arange(E) // (E // a.gpus)
        cross = total = 0.0
        for l in range(L - 1):
            nxt = np.empty(E, dtype=np.int64)
            nxt[perms[l]] = gpu
            tr = layers[l][2]
            cross += tr[gpu[:, None] != nxt[None, :]].sum()
            total += tr.sum()
            gpu = nxt
        with open(a.planted_out, "w") as f:
            json.dump({"planted_cross_gpu_fraction": cross / total}, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model")
    m.add_argument("out")
    m.add_argument("--layers", type=int, required=True)
    m.add_argument("--experts", type=int, required=True)
    m.add_argument("--top-k", type=int, default=2)
    z = sub.add_parser("zipf")
    z.add_argument("--ir", required=True)
    z.add_argument("--out", required=True)
    z.add_argument("--experts", type=int, required=True)
    z.add_argument("--exponent", type=float, required=True)
    z.add_argument("--layers", type=int, default=4)
    z.add_argument("--tokens", type=int, default=0,
                   help="tokens per window (default 500 E)")
    z.add_argument("--law-seed", type=int, default=1)
    z.add_argument("--window", type=int, default=0)
    c = sub.add_parser("chains")
    c.add_argument("--ir", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--experts", type=int, required=True)
    c.add_argument("--layers", type=int, required=True)
    c.add_argument("--stay", type=float, default=0.8)
    c.add_argument("--tokens", type=int, default=0,
                   help="tokens (default 200 E)")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--planted-out")
    c.add_argument("--gpus", type=int, default=0)
    a = ap.parse_args()
    if a.cmd != "model" and a.experts < 2:
        sys.exit("planted.py: --experts must be at least 2")
    {"model": cmd_model, "zipf": cmd_zipf, "chains": cmd_chains}[a.cmd](a)


if __name__ == "__main__":
    main()
