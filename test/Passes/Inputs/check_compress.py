#!/usr/bin/env python3
"""--moe-compress-experts measured against a numpy oracle of the layer
(test/Oracle/hf_models.py), independent of the reference executor:

  planted   experts of exact rank r plus tiny noise compress at rank r with
            held-out relative error at the noise floor (the error the noise
            itself causes); rank r - 2 is far above it.
  whiten    on inputs with a skewed covariance (4 of 64 directions carry
            most of the variance), whiten=gram with the profile's input_gram
            beats plain SVD at the same rank.
  in_out    gpt-oss (fused gate_up stored [E, in, out] with biases): the
            factors multiply back to the rewritten layer.

Each case also runs moe-run (reference executor) on the rewritten IR and
checks it against the numpy oracle with the weights A @ B read back from
the factor file. The whitening profile is recorded by `moe-run
--record-profile --profile-input-gram` (its input_gram checked against
numpy's X^T X), and a profile written here by numpy following Profile.h
(F64, __metadata__ format=moe-profile, version=1, model, tokens) gives the
same factors.

  check_compress.py --bin BUILD/bin --work DIR
"""
import argparse
import copy
import json
import os
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "Oracle"))
import hf_models as hf  # noqa: E402

H = hf.H


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(" ".join(cmd) + "\n" + r.stderr)
    return r.stdout + r.stderr


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def write_f64_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, values in tensors.items():
        data = np.ascontiguousarray(values, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(np.shape(values)),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_profile(path, m, layer, x, router_name, expert_fn, ir_path):
    """The statistics of Profile.h for one layer over tokens x, from the
    numpy oracle's routing."""
    y, r = m.block(layer, x)
    E = m.get(router_name).shape[0]
    logits = x @ m.get(router_name).T
    count, mass = np.zeros(E), np.zeros(E)
    co, norm_mass = np.zeros((E, E)), np.zeros(E)
    for t in range(x.shape[0]):
        sel = [int(e) for e in r.ids[t] if e >= 0]
        for s, e in enumerate(r.ids[t]):
            if e < 0:
                continue
            count[e] += 1
            mass[e] += r.weights[t, s]
            norm_mass[e] += r.weights[t, s] * np.linalg.norm(
                expert_fn(e, x[t:t + 1]))
        for i in sel:
            for j in sel:
                co[i, j] += 1
    L = "layer.%d." % layer
    tensors = {L + "expert_count": count, L + "gate_mass": mass,
               L + "coactivation": co, L + "logit_gram": logits.T @ logits,
               L + "logit_sum": logits.sum(axis=0),
               L + "output_norm_mass": norm_mass, L + "input_gram": x.T @ x}
    import hashlib
    model = hashlib.sha256(open(ir_path, "rb").read()).hexdigest()
    write_f64_safetensors(path, tensors, {"format": "moe-profile",
                                          "version": "1", "model": model,
                                          "tokens": x.shape[0]})


def read_f64(path, name):
    """One F64 tensor of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    info = json.loads(raw[8:8 + n].decode("utf-8"))[name]
    assert info["dtype"] == "F64", info
    begin, end = info["data_offsets"]
    return np.frombuffer(raw[8 + n + begin:8 + n + end],
                         dtype="<f8").reshape(info["shape"])


def import_model(args, m, name):
    folder = os.path.join(args.work, name)
    m.write(folder)
    ir = os.path.join(args.work, name + ".mlir")
    run([args.bin + "/moe-import", folder, "-o", ir])
    return ir


def compress(args, ir, tag, options):
    out = os.path.join(args.work, tag + ".mlir")
    log = run([args.bin + "/moe-opt", ir, "--moe-compress-experts=" + options,
               "-o", out])
    factors, _, _ = hf.read_safetensors(
        os.path.join(args.work, tag + ".compress.safetensors"))
    products = {}
    for name in factors:
        if name.endswith(".a"):
            stem = name[:-2]
            products[stem] = np.einsum(
                "eor,eri->eoi", factors[stem + ".a"].astype(np.float64),
                factors[stem + ".b"].astype(np.float64))
    return out, products, log


def with_weights(m, replace):
    m2 = copy.copy(m)
    m2.tensors = dict(m.tensors)
    for name, values in replace.items():
        m2.tensors[name] = ("F32", np.asarray(values, dtype=np.float32))
    return m2


def mixtral_replacement(products, layer, experts):
    """HF per-expert names -> the products of the factor file."""
    p = "model.layers.%d.block_sparse_moe.experts.%d.%s.weight"
    out = {}
    for proj, w in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
        prod = products["layer_%d.experts.%s" % (layer, proj)]
        for e in range(experts):
            out[p % (layer, e, w)] = prod[e]
    return out


def check_backend(args, ir, m2, layer, x, tag):
    """moe-run (reference executor, materialising moe.low_rank) against the
    numpy oracle with the products as weights."""
    xp = os.path.join(args.work, tag + ".x.npy")
    yp = os.path.join(args.work, tag + ".y.npy")
    np.save(xp, x.astype(np.float32))
    run([args.bin + "/moe-run", ir, "--layer", str(layer), "--input", xp,
         "--output", yp])
    y_run = np.load(yp).astype(np.float64)
    y_np, _ = m2.block(layer, x.astype(np.float32).astype(np.float64))
    err = rel(y_run, y_np)
    print("%s: moe-run vs numpy oracle of the rewritten layer: relative "
          "error %.2e" % (tag, err))
    if err > 1e-5:
        raise AssertionError("%s: the reference executor disagrees with the "
                             "numpy oracle of the factored layer" % tag)


def planted(args, rng):
    E, inter, r, noise = 4, 96, 6, 1e-4
    m = hf.build_mixtral(rng, experts=E, k=2, inter=inter, layers=1)
    clean = {}
    p = "model.layers.0.block_sparse_moe.experts.%d.%s.weight"
    for e in range(E):
        for w, (o, i) in (("w1", (inter, H)), ("w3", (inter, H)),
                          ("w2", (H, inter))):
            low = rng.standard_normal((o, r)) @ rng.standard_normal((r, i))
            low /= np.sqrt(r * i)
            clean[p % (e, w)] = low
    noisy = {n: v + noise * rng.standard_normal(v.shape) / np.sqrt(v.shape[1])
             for n, v in clean.items()}
    m = with_weights(m, noisy)
    m_clean = with_weights(m, clean)
    ir = import_model(args, m, "planted")
    x = rng.standard_normal((512, H))
    y, _ = m.block(0, x)
    floor = rel(m_clean.block(0, x)[0], y)
    errs = {}
    for rank in (r, r - 2):
        out, products, log = compress(args, ir, "planted_r%d" % rank,
                                      "rank=%d" % rank)
        sys.stdout.write(log)
        m2 = with_weights(m, mixtral_replacement(products, 0, E))
        errs[rank] = rel(m2.block(0, x)[0], y)
        if rank == r:
            check_backend(args, out, m2, 0, x[:64], "planted")
    print("planted rank %d, noise %.0e: held-out relative error at rank %d "
          "%.3e, noise floor %.3e, at rank %d %.3e"
          % (r, noise, r, errs[r], floor, r - 2, errs[r - 2]))
    if not errs[r] <= 2.0 * floor:
        raise AssertionError("planted: rank-%d error %.3e is above twice the "
                             "noise floor %.3e" % (r, errs[r], floor))
    if not errs[r - 2] > 100.0 * floor:
        raise AssertionError("planted: rank %d should be far above the noise "
                             "floor" % (r - 2))


def skewed_inputs(rng, n, basis):
    scales = np.full(H, 0.05)
    scales[:4] = 10.0
    return (rng.standard_normal((n, H)) * scales) @ basis


def whiten(args, rng):
    E, inter, rank = 4, 96, 8
    m = hf.build_mixtral(rng, experts=E, k=2, inter=inter, layers=1)
    ir = import_model(args, m, "skewed")
    basis, _ = np.linalg.qr(rng.standard_normal((H, H)))
    calib = skewed_inputs(rng, 1024, basis)
    held = skewed_inputs(rng, 512, basis)
    # The profile as moe-run records it, and as numpy writes it.
    calib = calib.astype(np.float32)
    cp = os.path.join(args.work, "calib.npy")
    np.save(cp, calib)
    profile = os.path.join(args.work, "skewed.profile.safetensors")
    run([args.bin + "/moe-run", ir, "--layer", "0", "--input", cp,
         "--record-profile", profile, "--profile-input-gram"])
    xd = calib.astype(np.float64)
    gram_err = rel(read_f64(profile, "layer.0.input_gram"), xd.T @ xd)
    print("recorded input_gram vs numpy X^T X: relative error %.1e"
          % gram_err)
    if gram_err > 1e-6:
        raise AssertionError("moe-run's input_gram differs from X^T X")
    np_profile = os.path.join(args.work, "skewed.numpy-profile.safetensors")
    write_profile(np_profile, m, 0, xd,
                  "model.layers.0.block_sparse_moe.gate.weight",
                  hf._glu_expert_fn(m, 0), ir)
    y, _ = m.block(0, held)
    errs = {}
    for tag, opts in (("plain", "rank=%d" % rank),
                      ("gram", "rank=%d whiten=gram profile=%s"
                       % (rank, profile)),
                      ("gram_numpy", "rank=%d whiten=gram profile=%s"
                       % (rank, np_profile))):
        out, products, log = compress(args, ir, "skewed_" + tag, opts)
        sys.stdout.write(log)
        m2 = with_weights(m, mixtral_replacement(products, 0, E))
        errs[tag] = rel(m2.block(0, held)[0], y)
        if tag == "gram":
            check_backend(args, out, m2, 0, held[:64], "whitened")
    print("skewed inputs, rank %d: held-out relative error plain SVD %.4f, "
          "whiten=gram %.4f" % (rank, errs["plain"], errs["gram"]))
    if abs(errs["gram"] - errs["gram_numpy"]) > 1e-4 * errs["gram"]:
        raise AssertionError("the recorded and the numpy profile whiten "
                             "differently")
    if not errs["gram"] < errs["plain"]:
        raise AssertionError("whiten=gram does not beat plain SVD")


def in_out(args, rng):
    E, inter = 4, 64
    m = hf.build_gpt_oss(rng, experts=E, k=2, inter=inter, layers=1)
    ir = import_model(args, m, "gptoss")
    out, products, log = compress(args, ir, "gptoss", "rank=24")
    sys.stdout.write(log)
    p = "model.layers.0.mlp.experts."
    # The products are [out, in]; the checkpoint stores [in, out].
    repl = {p + "gate_up_proj":
            products["layer_0.experts.gate_up"].transpose(0, 2, 1),
            p + "down_proj": products["layer_0.experts.down"].transpose(0, 2, 1)}
    m2 = with_weights(m, repl)
    check_backend(args, out, m2, 0, rng.standard_normal((64, H)), "gpt_oss")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seed", type=int, default=12)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    planted(args, rng)
    whiten(args, rng)
    in_out(args, rng)
    print("compress: all checks passed")


if __name__ == "__main__":
    main()
