"""Inputs and a planted routing skew for the synthetic models of the layout
bench (bench/layout/run.sh).

  synthetic.py input MODEL_DIR OUT.npy --tokens T --seed S
      T rows of standard normal f32 of the model's hidden size (never zeros).
  synthetic.py skew MODEL_DIR --exponent A --seed S
      in place, in MODEL_DIR/model.safetensors: every router weight (a
      tensor named *.gate.weight of shape [E, H]) has row e multiplied by
      2 r_e^-A, r_e the rank (1..E) of expert e in a random permutation
      drawn per layer. Larger rows give logits of larger spread, which win
      the top-k more often: the routing is skewed toward a few experts per
      layer (a different few in each layer). Nothing else changes.
"""
import argparse
import json
import struct
import sys

import numpy as np


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def cmd_input(a):
    with open(a.model + "/config.json") as f:
        h = json.load(f)["hidden_size"]
    x = np.random.default_rng(a.seed).standard_normal((a.tokens, h))
    np.save(a.out, x.astype(np.float32))


def to_f32(raw, dtype):
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4").copy()
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    sys.exit("synthetic.py: router weights of dtype %s are not handled "
             "(F32 or BF16)" % dtype)


def from_f32(x, dtype):
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    bits = x.astype(np.float32).view(np.uint32)
    # Round to nearest even, as a bf16 conversion does.
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.astype("<u2").tobytes()


def cmd_skew(a):
    path = a.model + "/model.safetensors"
    header, base = read_header(path)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    rng = np.random.default_rng(a.seed)
    routers = sorted(k for k in header
                     if k.endswith(".gate.weight")
                     and len(header[k]["shape"]) == 2)
    if not routers:
        sys.exit("synthetic.py: %s: no router weight (*.gate.weight)" % path)
    for name in routers:
        t = header[name]
        E, H = t["shape"]
        lo, hi = t["data_offsets"]
        w = to_f32(bytes(data[base + lo:base + hi]), t["dtype"]).reshape(E, H)
        rank = rng.permutation(E) + 1
        w = w * (2.0 * rank.astype(np.float64) ** -a.exponent)[:, None]
        data[base + lo:base + hi] = from_f32(w.astype(np.float32), t["dtype"])
        print("skew: %s: rows scaled by 2 r^-%g (r = %s...)"
              % (name, a.exponent, " ".join(map(str, rank[:8]))))
    with open(path, "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("input")
    i.add_argument("model")
    i.add_argument("out")
    i.add_argument("--tokens", type=int, required=True)
    i.add_argument("--seed", type=int, required=True)
    s = sub.add_parser("skew")
    s.add_argument("model")
    s.add_argument("--exponent", type=float, default=0.5)
    s.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    {"input": cmd_input, "skew": cmd_skew}[a.cmd](a)


if __name__ == "__main__":
    main()
