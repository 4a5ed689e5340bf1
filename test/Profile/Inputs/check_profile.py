#!/usr/bin/python3
"""Calibration profiles (moe-run --record-profile) against numpy.

Builds a random Mixtral Hugging Face folder with the numpy oracle of
test/Oracle (hf_models.py), imports it, records profiles with moe-run and
checks every statistic against an independent float64 numpy computation:

  oracle    counts, gate mass, coactivation and transition against a recount
            of the --routing-out files; logit_gram/logit_sum against x W^T of
            the checkpoint's router; output_norm_mass and expert_output_mean
            against numpy's expert FFN; input_gram; the metadata.
  append    two inputs appended equal one run on their concatenation;
            options must match; another model's profile is refused.
  backends  emu records the same routing statistics as the reference (and
            on the fused IR and on a package).
  hostile   malformed profiles are refused, naming the file and the tensor,
            and left untouched; a failing run writes no profile.
  examples  every example of examples/ is recorded or refused with a reason.

  check_profile.py --bin BUILD/bin --group G [--examples DIR] [--seed N]
"""
import sys

sys.dont_write_bytecode = True

import argparse
import hashlib
import json
import re
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "Oracle"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "Passes", "Inputs"))

import hf_models as hf  # noqa: E402

FAILURES = []


def check(ok, message):
    print(("ok: " if ok else "FAIL: ") + message)
    if not ok:
        FAILURES.append(message)


def close(tag, got, want, rtol):
    """max|got - want| <= rtol * max|want| (a tiny floor for all-zero)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        check(False, "%s: shape %s, expected %s" % (tag, got.shape, want.shape))
        return
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    scale = max(1e-30, float(np.max(np.abs(want))) if want.size else 0.0)
    check(err <= rtol * scale, "%s: max error %.3g (scale %.3g, rtol %g)" %
          (tag, err, scale, rtol))


# --------------------------------------------------------------------------
# safetensors with F64 (hf_models reads F32/BF16 only)
# --------------------------------------------------------------------------

DTYPES = {"F64": "<f8", "F32": "<f4", "I32": "<i4"}


def read_profile(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        tensors[name] = np.frombuffer(data[base + a:base + b],
                                      dtype=DTYPES[info["dtype"]]).reshape(
                                          info["shape"]).astype(np.float64)
    return tensors, meta


def write_raw(path, tensors, meta):
    """tensors: name -> (dtype, array)."""
    header = {"__metadata__": meta}
    blobs, offset = [], 0
    for name, (dtype, values) in tensors.items():
        data = np.ascontiguousarray(values, dtype=DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(values)),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# --------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------


class Tools:
    def __init__(self, bindir, work):
        self.bindir, self.work = bindir, work

    def run(self, args, ok=True):
        cmd = [os.path.join(self.bindir, args[0])] + [str(a) for a in args[1:]]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if ok and p.returncode != 0:
            raise SystemExit("command failed (%d): %s\n%s" %
                             (p.returncode, " ".join(cmd), p.stderr))
        return p

    def path(self, name):
        return os.path.join(self.work, name)


def mixtral(tools, rng, name, layers=3, experts=8, k=2):
    """A random Mixtral folder imported as NAME.mlir; -> (model, ir path)."""
    m = hf.build_mixtral(rng, experts=experts, k=k, inter=48, layers=layers)
    folder = tools.path(name + "_hf")
    m.write(folder)
    ir = tools.path(name + ".mlir")
    tools.run(["moe-import", folder, "-o", ir])
    return m, ir


def tokens(rng, t):
    return rng.standard_normal((t, hf.H)).astype(np.float32)


def save(tools, name, x):
    p = tools.path(name)
    np.save(p, x)
    return p


def record(tools, ir, x_path, profile, *extra, ok=True):
    return tools.run(["moe-run", ir, "--input", x_path, "--record-profile",
                      profile] + list(extra), ok=ok)


# --------------------------------------------------------------------------
# The numpy oracle
# --------------------------------------------------------------------------


def expert_sets(ids):
    return [sorted(set(int(e) for e in row if e >= 0)) for row in ids]


def routing_stats(ids, w, experts):
    count = np.zeros(experts)
    mass = np.zeros(experts)
    for e, g in zip(ids.ravel(), w.ravel()):
        if e >= 0:
            count[e] += 1
            mass[e] += g
    co = np.zeros((experts, experts))
    for s in expert_sets(ids):
        for i in s:
            for j in s:
                co[i, j] += 1
    return count, mass, co


def transition(ids_a, ids_b, ea, eb):
    t = np.zeros((ea, eb))
    for sa, sb in zip(expert_sets(ids_a), expert_sets(ids_b)):
        for i in sa:
            for j in sb:
                t[i, j] += 1
    return t


# Architectures of the oracle group: (builder, layout, keyword arguments).
ORACLE_MODELS = {
    "mixtral": (hf.build_mixtral, "per_expert", dict(inter=48, layers=3)),
    # Fused gate_up tensors, a dense first layer, renormalised top-k.
    "qwen3_moe": (hf.build_qwen3_moe, "fused", dict(layers=3)),
    # Sigmoid scores, correction bias, group limit, scaled weights, a shared
    # expert (not in the statistics), a dense first layer.
    "deepseek_v3": (hf.build_deepseek_v3, "per_expert", dict(layers=3)),
}


def group_oracle(tools, rng, args):
    for arch in args.arch.split(","):
        oracle_model(tools, rng, arch, first=arch == args.arch.split(",")[0])


def oracle_model(tools, rng, arch, first):
    build, layout, kw = ORACLE_MODELS[arch]
    m = build(rng, layout=layout, **kw)
    folder = tools.path(arch + "_hf")
    m.write(folder)
    ir = tools.path(arch + ".mlir")
    tools.run(["moe-import", folder, "-o", ir])
    layers = m.moe_layers
    router0 = hf._expert_names(arch, layout, layers[0])[0]
    experts = m.get(router0).shape[0]
    T = 40
    x = tokens(rng, T)
    xp = save(tools, arch + ".x.npy", x)
    prof = tools.path(arch + ".p.safetensors")
    # --chain none: each layer on the previous one's output, as below.
    tools.run(["moe-run", ir, "--all-layers", "--chain", "none", "--input", xp,
               "--record-profile", prof, "--profile-expert-outputs",
               "--profile-input-gram",
               "--routing-out", tools.path(arch + ".r"), "--output",
               tools.path(arch + ".y.npy")])
    p, meta = read_profile(prof)
    with open(ir, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    check(meta.get("format") == "moe-profile" and meta.get("version") == "1",
          "%s: metadata format/version: %s" % (arch, meta))
    check(meta.get("model") == digest, arch + ": metadata model is the IR's "
          "SHA-256")
    check(meta.get("tokens") == str(T), "%s: metadata tokens = %d" % (arch, T))
    for name, v in p.items():
        check(v.dtype == np.float64, name + " read as F64")
    recorded = sorted(set(int(n.split(".")[1]) for n in p))
    check(recorded == layers, "%s: the MoE layers %s are recorded (%s)" %
          (arch, layers, recorded))

    # Each layer's input: the previous layer's reference output.
    inputs = {}
    cur = xp
    for l in layers:
        inputs[l] = np.load(cur).astype(np.float64)
        out = tools.path("%s.in%d.npy" % (arch, l + 1))
        tools.run(["moe-run", ir, "--layer", l, "--input", cur, "--output", out])
        cur = out
    routing = {l: (np.load(tools.path("%s.r.L%d.ids.npy" % (arch, l))),
                   np.load(tools.path("%s.r.L%d.weights.npy" %
                                      (arch, l))).astype(np.float64))
               for l in layers}
    for n, l in enumerate(layers):
        pre = "layer.%d." % l
        tag = arch + " " + pre
        ids, w = routing[l]
        count, mass, co = routing_stats(ids, w, experts)
        check(np.array_equal(p[pre + "expert_count"], count),
              tag + "expert_count equals the recount of --routing-out")
        close(tag + "gate_mass", p[pre + "gate_mass"], mass, 1e-6)
        check(np.array_equal(p[pre + "coactivation"], co),
              tag + "coactivation equals the recount")
        check(float(count.sum()) == T * m.config["num_experts_per_tok"],
              tag + "T*K routed slots")
        if n + 1 < len(layers):
            nxt = layers[n + 1]
            check(np.array_equal(p[pre + "transition"],
                                 transition(ids, routing[nxt][0], experts,
                                            experts)),
                  tag + "transition equals the recount into layer %d" % nxt)
        else:
            check(pre + "transition" not in p, tag + "transition absent "
                  "(last layer)")
        xl = inputs[l]
        router, _, _ = hf._expert_names(arch, m.layout, l)
        logits = xl @ m.get(router).T
        close(tag + "logit_gram", p[pre + "logit_gram"], logits.T @ logits, 1e-5)
        close(tag + "logit_sum", p[pre + "logit_sum"], logits.sum(axis=0), 1e-5)
        fn = hf._glu_expert_fn(m, l)
        reap = np.zeros(experts)
        for t in range(T):
            for slot in range(ids.shape[1]):
                e = int(ids[t, slot])
                if e >= 0:
                    reap[e] += w[t, slot] * np.linalg.norm(fn(e, xl[t:t + 1]))
        close(tag + "output_norm_mass", p[pre + "output_norm_mass"], reap, 1e-5)
        mean = np.stack([fn(e, xl).mean(axis=0) for e in range(experts)])
        close(tag + "expert_output_mean", p[pre + "expert_output_mean"], mean,
              1e-5)
        close(tag + "input_gram", p[pre + "input_gram"], xl.T @ xl, 1e-6)

    if not first:
        return
    # One layer: no transition, same statistics as the all-layer run.
    one = tools.path("p1.safetensors")
    record(tools, ir, xp, one, "--layer", layers[0])
    q, meta1 = read_profile(one)
    pre = "layer.%d." % layers[0]
    check(sorted(q) == sorted(pre + s for s in (
        "expert_count", "gate_mass", "coactivation", "logit_gram", "logit_sum",
        "output_norm_mass")), "--layer records the six required tensors of "
          "its layer only: %s" % sorted(q))
    for s in ("expert_count", "coactivation", "logit_gram"):
        close("--layer " + pre + s, q[pre + s], p[pre + s], 0)


def group_append(tools, rng, args):
    m, ir = mixtral(tools, rng, "m")
    T = 36
    x = tokens(rng, T)
    whole, a, b = (save(tools, n, v) for n, v in
                   (("x.npy", x), ("a.npy", x[:13]), ("b.npy", x[13:])))
    opts = ["--all-layers", "--profile-expert-outputs", "--profile-input-gram"]
    one = tools.path("one.safetensors")
    two = tools.path("two.safetensors")
    record(tools, ir, whole, one, *opts)
    record(tools, ir, a, two, *opts)
    record(tools, ir, b, two, *opts)
    p, pm = read_profile(one)
    q, qm = read_profile(two)
    check(qm["tokens"] == str(T) and pm == qm, "appended metadata equals the "
          "concatenation's (%s)" % qm["tokens"])
    check(sorted(p) == sorted(q), "same tensors")
    for name in sorted(p):
        close("append " + name, q[name], p[name], 1e-9)

    # Options must match the file's.
    before = open(two, "rb").read()
    r = record(tools, ir, a, two, "--all-layers", ok=False)
    check(r.returncode != 0 and two in r.stderr and "it has the statistic "
          "'expert_output_mean'" in r.stderr, "appending without the file's optional statistics is "
          "refused: " + r.stderr.strip())
    r = record(tools, ir, a, two, "--layer", "0", "--profile-expert-outputs",
               "--profile-input-gram", ok=False)
    check(r.returncode != 0 and two in r.stderr,
          "appending one layer to an all-layer profile is refused: " +
          r.stderr.strip())
    # Another model (other weights, other IR) is refused, naming the file.
    _, other = mixtral(tools, np.random.default_rng(args.seed + 1), "other",
                       layers=2)
    r = record(tools, other, a, two, *opts, ok=False)
    check(r.returncode != 0 and two in r.stderr and "another model" in r.stderr,
          "another model's profile is refused: " + r.stderr.strip())
    check(open(two, "rb").read() == before, "a refused append leaves the "
          "profile untouched")


def compare_routing_stats(tag, p, q, rtol_mass=1e-5):
    for name in sorted(p):
        if name.endswith(("expert_count", "coactivation", "transition")):
            check(name in q and np.array_equal(p[name], q[name]),
                  "%s: %s equal" % (tag, name))
        elif name.endswith("gate_mass"):
            close("%s: %s" % (tag, name), q[name], p[name], rtol_mass)
        else:
            close("%s: %s" % (tag, name), q[name], p[name], 1e-5)
    check(sorted(p) == sorted(q), "%s: same tensors" % tag)


def group_backends(tools, rng, args):
    m, ir = mixtral(tools, rng, "m")
    x = save(tools, "x.npy", tokens(rng, 30))
    ref = tools.path("ref.safetensors")
    record(tools, ir, x, ref, "--all-layers", "--profile-expert-outputs")
    p, _ = read_profile(ref)
    emu = tools.path("emu.safetensors")
    record(tools, ir, x, emu, "--all-layers", "--profile-expert-outputs",
           "--backend", "emu")
    compare_routing_stats("emu vs reference", p, read_profile(emu)[0])

    # The fused IR (moe.fused_route / moe.fused_experts) on both backends.
    fused = tools.path("fused.mlir")
    tools.run(["moe-opt", ir, "--moe-optimize", "-o", fused])
    check("moe.fused_route" in open(fused).read(), "the IR is fused")
    for backend in ("reference", "emu"):
        out = tools.path("fused-%s.safetensors" % backend)
        record(tools, fused, x, out, "--all-layers", "--profile-expert-outputs",
               "--backend", backend)
        compare_routing_stats("fused IR on %s vs reference" % backend, p,
                              read_profile(out)[0])

    # A package (its model.opt.mlir is the identity).
    pkg = tools.path("pkg")
    tools.run(["moe-compile", ir, "-o", pkg, "--arch", "none"])
    with open(os.path.join(pkg, "model.opt.mlir"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    for backend in ("reference", "emu"):
        out = tools.path("pkg-%s.safetensors" % backend)
        record(tools, pkg, x, out, "--all-layers", "--profile-expert-outputs",
               "--backend", backend)
        q, meta = read_profile(out)
        compare_routing_stats("package on %s vs reference" % backend, p, q)
        check(meta["model"] == digest, "a package's identity is its "
              "model.opt.mlir's SHA-256 (%s)" % backend)


def lock_folder(path):
    """Makes `path` refuse new files: chmod, or for root (whom chmod does not
    stop) chattr +i where the file system allows it. True if it worked."""
    os.chmod(path, 0o555)
    probe = os.path.join(path, ".probe")

    def writable():
        try:
            open(probe, "w").close()
        except OSError:
            return False
        os.remove(probe)
        return True

    if not writable():
        return True
    subprocess.run(["chattr", "+i", path], capture_output=True)
    return not writable()


def unlock_folder(path):
    subprocess.run(["chattr", "-i", path], capture_output=True)
    os.chmod(path, 0o755)


def group_hostile(tools, rng, args):
    m, ir = mixtral(tools, rng, "m", layers=2)
    x = save(tools, "x.npy", tokens(rng, 12))
    good = tools.path("good.safetensors")
    record(tools, ir, x, good, "--all-layers")
    p, meta = read_profile(good)
    base = {n: ("F64", v) for n, v in p.items()}

    def variant(tag, tensors=None, meta_changes=None, raw=None):
        path = tools.path(tag + ".safetensors")
        if raw is not None:
            with open(path, "wb") as f:
                f.write(raw)
        else:
            md = dict(meta)
            md.update(meta_changes or {})
            write_raw(path, tensors if tensors is not None else base, md)
        return path

    def expect(tag, path, *needles):
        before = open(path, "rb").read()
        r = record(tools, ir, x, path, "--all-layers", ok=False)
        msg = r.stderr.strip()
        good_msg = r.returncode != 0 and path in msg and all(
            n in msg for n in needles) and "Assertion" not in msg
        check(good_msg, "%s refused naming the file%s: %s" % (
            tag, " and " + ", ".join(needles) if needles else "", msg))
        check(open(path, "rb").read() == before, tag + ": file untouched")

    expect("format", variant("format", meta_changes={"format": "moe-prof"}),
           "format")
    expect("version", variant("version", meta_changes={"version": "2"}),
           "version")
    t = dict(base)
    t["layer.0.gate_mass"] = ("F32", p["layer.0.gate_mass"])
    expect("dtype", variant("dtype", t), "layer.0.gate_mass", "F64")
    t = dict(base)
    t["layer.1.coactivation"] = ("F64", np.zeros((8, 9)))
    expect("shape", variant("shape", t), "layer.1.coactivation", "shape")
    t = dict(base)
    g = p["layer.0.logit_gram"].copy()
    g[1, 2] = np.nan
    t["layer.0.logit_gram"] = ("F64", g)
    expect("nan", variant("nan", t), "layer.0.logit_gram", "not finite")
    t = dict(base)
    c = p["layer.1.expert_count"].copy()
    c[0] = -1
    t["layer.1.expert_count"] = ("F64", c)
    expect("negative", variant("negative", t), "layer.1.expert_count",
           "negative")
    t = dict(base)
    del t["layer.0.output_norm_mass"]
    expect("missing", variant("missing", t), "layer.0.output_norm_mass",
           "missing")
    t = dict(base)
    del t["layer.0.logit_sum"]
    expect("logit_sum alone", variant("nosum", t), "layer.0.logit_sum",
           "missing", "come together")
    # Without both logit tensors it is a merged layer's profile: valid, but
    # not of this (unmerged) model's layer.
    t = dict(base)
    del t["layer.0.logit_sum"], t["layer.0.logit_gram"]
    expect("no logit tensors", variant("nologits", t), "logit_gram",
           "lacks", "merged experts")
    data = open(good, "rb").read()
    expect("truncated", variant("truncated", raw=data[:len(data) - 40]))
    expect("garbage", variant("garbage", raw=b"\xff" * 64))

    # Through a symbolic link the target is appended to and the link stays;
    # a dangling link is an error that creates nothing.
    target = tools.path("target.safetensors")
    shutil.copy(good, target)
    link = tools.path("link.safetensors")
    os.symlink(target, link)
    record(tools, ir, x, link, "--all-layers")
    check(os.path.islink(link) and os.readlink(link) == target and
          read_profile(target)[1]["tokens"] == str(2 * int(meta["tokens"])),
          "appending through a symbolic link writes its target, the link "
          "stays")
    dangling = tools.path("dangling.safetensors")
    os.symlink(tools.path("nowhere/p.safetensors"), dangling)
    r = record(tools, ir, x, dangling, "--all-layers", ok=False)
    check(r.returncode != 0 and dangling in r.stderr and "symbolic link" in
          r.stderr and os.path.islink(dangling) and
          not os.path.exists(tools.path("nowhere")),
          "a dangling symbolic link is refused: " + r.stderr.strip())
    # An existing profile in a folder where no file can be created: the
    # atomic write's temporary file fails; the profile stays as it was.
    ro = tools.path("ro")
    os.makedirs(ro)
    kept = os.path.join(ro, "p.safetensors")
    shutil.copy(good, kept)
    if lock_folder(ro):
        try:
            before = open(kept, "rb").read()
            r = record(tools, ir, x, kept, "--all-layers", ok=False)
            check(r.returncode != 0 and kept in r.stderr and
                  "temporary file" in r.stderr and
                  open(kept, "rb").read() == before,
                  "an unwritable folder is refused, the profile untouched: " +
                  r.stderr.strip())
        finally:
            unlock_folder(ro)
    else:
        print("note: no way to make a folder unwritable here; the "
              "unwritable-folder case is not checked")

    # Option misuse.
    r = tools.run(["moe-run", ir, "--all-layers", "--input", x, "--output",
                   tools.path("y.npy"), "--profile-input-gram"], ok=False)
    check(r.returncode != 0 and "need --record-profile" in r.stderr,
          "--profile-input-gram without --record-profile: " + r.stderr.strip())
    r = tools.run(["moe-run", ir, "--all-layers", "--input", x], ok=False)
    check(r.returncode != 0 and "--output Y.npy (or --record-profile P)" in
          r.stderr, "neither --output nor --record-profile: " +
          r.stderr.strip())

    # A run that fails after layer 0 ran (layer 1's router weight is not in
    # the checkpoint) writes no profile, not even layer 0's.
    broken = tools.path("broken.mlir")
    router1 = hf._expert_names("mixtral", m.layout, 1)[0]
    with open(broken, "w") as f:
        f.write(open(ir).read().replace(router1, "no.such.tensor"))
    bad = tools.path("never.safetensors")
    r = record(tools, broken, x, bad, "--all-layers", ok=False)
    check(r.returncode != 0 and "no.such.tensor" in r.stderr and
          not os.path.exists(bad),
          "a run failing in layer 1 writes no profile: " + r.stderr.strip())


# Examples that record, and why the others are refused.
REFUSED = {
    "chain_of_experts": "2 routers that dispatch experts",
    "dynmole": "no layer of",
    # Its layer takes extra inputs (sequence scores and map) that this
    # harness does not give; its LoRA experts have nothing to profile.
    "glider": "takes 2 extra input(s) after x",
    "lora_mixer": "no layer of",
    # Its layers take the pre-gating router's routing: no router logits of
    # their own to record.
    "read_me": "no router logits",
}

# Extra inputs the harness gives (the chain's first layer's, in argument
# order): RMoE's initial router state, carried from layer to layer by
# moe-run --all-layers.
EXTRA_INPUTS = {"rmoe": [("state.npy", lambda rng, t: rng.uniform(
    -1, 1, (t, 32)).astype(np.float32))]}


def group_examples(tools, rng, args):
    from check_preserved import random_weights
    names = sorted(f[:-5] for f in os.listdir(args.examples)
                   if f.endswith(".mlir"))
    for name in names:
        d = tools.path(name)
        os.makedirs(d)
        ir = os.path.join(d, name + ".mlir")
        shutil.copy(os.path.join(args.examples, name + ".mlir"), ir)
        text = open(ir).read()
        weights = random_weights(text, rng)
        for f in set(re.findall(r'from \["([^"]+)"', text)):
            hf.write_safetensors(os.path.join(d, f), weights)
        hidden = int(text.split("tensor<?x", 1)[1].split("x", 1)[0])
        x = os.path.join(d, "x.npy")
        np.save(x, tokens(rng, 17)[:, :hidden] if hidden <= hf.H else
                rng.standard_normal((17, hidden)).astype(np.float32))
        extra = []
        for f, make in EXTRA_INPUTS.get(name, []):
            np.save(os.path.join(d, f), make(rng, 17))
            extra += ["--input", os.path.join(d, f)]
        prof = os.path.join(d, "p.safetensors")
        backends = ["reference"] + (["emu"] if name in args.emu.split(",")
                                    else [])
        results = {}
        for backend in backends:
            out = prof + "." + backend
            r = record(tools, ir, x, out, "--all-layers", "--backend", backend,
                       "--routing-out", out + ".r", *extra, ok=False)
            if name in REFUSED:
                check(r.returncode != 0 and REFUSED[name] in r.stderr and
                      not os.path.exists(out),
                      "%s on %s refused: %s" % (name, backend,
                                                r.stderr.strip()))
                r = record(tools, ir, x, out, "--layer", "0", ok=False)
                check(r.returncode != 0 and not os.path.exists(out) and
                      ("router" in r.stderr or REFUSED[name] in r.stderr),
                      "%s --layer 0 refused: %s" %
                      (name, r.stderr.strip()))
                continue
            check(r.returncode == 0, "%s on %s recorded %s" % (
                name, backend, r.stderr.strip()))
            if r.returncode != 0:
                continue
            p = results[backend] = read_profile(out)[0]
            # Layer 0's routing statistics against its --routing-out (the
            # examples have one router, router 0).
            ids = np.load(out + ".r.L0.ids.npy")
            w = np.load(out + ".r.L0.weights.npy").astype(np.float64)
            experts = p["layer.0.expert_count"].shape[0]
            count, mass, co = routing_stats(ids, w, experts)
            check(np.array_equal(p["layer.0.expert_count"], count) and
                  np.array_equal(p["layer.0.coactivation"], co),
                  "%s on %s: counts and coactivation equal the recount" %
                  (name, backend))
            close("%s on %s: gate_mass" % (name, backend),
                  p["layer.0.gate_mass"], mass, 1e-6)
        if "emu" in results and "reference" in results:
            compare_routing_stats(name + " emu vs reference",
                                  results["reference"], results["emu"])


GROUPS = {"oracle": group_oracle, "append": group_append,
          "backends": group_backends, "hostile": group_hostile,
          "examples": group_examples}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--group", action="append", choices=sorted(GROUPS),
                    required=True)
    ap.add_argument("--examples")
    ap.add_argument("--emu", default="mixtral,adamoe,expert_choice,capacity,"
                    "sinkhorn,rmoe",
                    help="examples also recorded on emu")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--arch", default=",".join(ORACLE_MODELS),
                    help="models of the oracle group")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="moe-profile-")
    try:
        for g in args.group:
            sub = os.path.join(work, g)
            os.makedirs(sub)
            GROUPS[g](Tools(args.bin, sub), np.random.default_rng(args.seed),
                      args)
    finally:
        if args.keep:
            print("work directory: " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if FAILURES:
        print("%d check(s) FAILED" % len(FAILURES))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
