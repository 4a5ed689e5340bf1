"""Writes a planted calibration profile for the layout pass tests.

Tokens pick 2 of E experts per layer; the first layer draws from a Zipf law
(exponent --zipf), each next layer keeps a token's experts on a planted
chain (expert i -> perm(i)) with probability --chain, else draws again. The
profile's model identity is the SHA-256 of --ir (the file the passes read),
so a profile written for another file is "of another model".
"""
import argparse
import hashlib
import json
import struct

import numpy as np


def write_safetensors(path, tensors, metadata):
    """tensors: {name: (\"F64\", array)}; little-endian f64 data."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, values) in tensors.items():
        data = np.asarray(values, dtype="<f8").tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(values)),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--zipf", type=float, default=1.2)
    ap.add_argument("--chain", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-transitions", action="store_true",
                    help="leave out layer.L.transition (a profile recorded "
                         "layer by layer)")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    E, L, T = a.experts, a.layers, a.tokens
    p = 1.0 / np.arange(1, E + 1) ** a.zipf
    p /= p.sum()
    perms = [rng.permutation(E) for _ in range(L)]
    sel = np.zeros((L, T, 2), dtype=np.int64)
    for t in range(T):
        cur = rng.choice(E, size=2, replace=False, p=p)
        for l in range(L):
            sel[l, t] = cur
            nxt = []
            for e in cur:
                c = perms[l][e] if rng.random() < a.chain else rng.choice(E, p=p)
                while c in nxt:
                    c = rng.integers(E)
                nxt.append(c)
            cur = np.array(nxt)
    tensors = {}
    for l in range(L):
        count = np.zeros(E)
        co = np.zeros((E, E))
        for t in range(T):
            i, j = sel[l, t]
            count[i] += 1
            count[j] += 1
            co[i, i] += 1
            co[j, j] += 1
            co[i, j] += 1
            co[j, i] += 1
        pre = "layer.%d." % l
        tensors[pre + "expert_count"] = ("F64", count)
        tensors[pre + "gate_mass"] = ("F64", count / 2)
        tensors[pre + "coactivation"] = ("F64", co)
        tensors[pre + "logit_gram"] = ("F64", np.eye(E) * T)
        tensors[pre + "logit_sum"] = ("F64", np.zeros(E))
        tensors[pre + "output_norm_mass"] = ("F64", count)
        if l + 1 < L and not a.no_transitions:
            tr = np.zeros((E, E))
            for t in range(T):
                for i in sel[l, t]:
                    for j in sel[l + 1, t]:
                        tr[i, j] += 1
            tensors[pre + "transition"] = ("F64", tr)
    with open(a.ir, "rb") as f:
        model = hashlib.sha256(f.read()).hexdigest()
    write_safetensors(a.out, tensors, {"format": "moe-profile", "version": "1",
                                       "model": model, "tokens": str(T)})


if __name__ == "__main__":
    main()
