"""Checks the folder bench/gpu/prepare.sh wrote (test/Bench/prepare.test).

    check_prepared.py PREPARED

Each shape of shapes/index.json: a shape-only package (every checkpoint
weight external, an sm_90a cubin whose kernels spill nothing) whose first
MoE layer and config.json have the listed sizes and whose tensor names are
the transformers v5 fused names that bench/gpu/bench.py binds by suffix.
Each small model of small/index.json: a package with its weights, the model
folder and the reference outputs of every layer and token count, of the
right sizes. Each "compare" of a shape or quantized shape (quant/index.json):
both packages present, shape-only with the same tensors to bind, kernels
for sm_90a that spill nothing, different kernel code (the option took
effect: --gemm=mma's grouped calls, fp8-activations' marked fused ops), and
the token counts at which the grouped kernels run. The whole folder fits
the device tool's carry limit (64 MiB). Prints one line per entry; exits 1
at the first problem.
"""
import json
import os
import re
import sys

CARRY_LIMIT = 64 << 20


def fail(message):
    print("FAILED: " + message)
    sys.exit(1)


def load(path):
    with open(path) as f:
        return json.load(f)


def moe_layer(manifest, layer):
    for entry in manifest["layers"]:
        if entry["target"] == "" and entry["layer"] == layer:
            return entry
    fail("no MoE layer %d in the manifest" % layer)


def check_spills(manifest, where):
    kernels = 0
    for kernel in manifest["kernels"]:
        report = kernel["resources"].get("sm_90a")
        if report is None:
            fail("%s: kernel %s has no sm_90a report" % (where, kernel["name"]))
        if report["spill_stores_bytes"] or report["spill_loads_bytes"]:
            fail("%s: kernel %s spills" % (where, kernel["name"]))
        kernels += 1
    return kernels


def external_tensors(manifest):
    """(names, shape, dtype) of every tensor bound at run time."""
    return [(t["names"], t["shape"], t["dtype"])
            for t in manifest["weights"]["tensors"] if t["offset"] is None]


def kernel_code(package):
    """kernels.cu with the per-option kernel hashes left out."""
    with open(os.path.join(package, "kernels.cu")) as f:
        return re.sub(r"moe_experts_[0-9a-f]+_", "moe_experts_", f.read())


def check_compare(root, e):
    """The entry's new/old paths; returns a line describing them."""
    lines = []
    compared = []
    for c in e.get("compare") or []:
        pkgs = {}
        for side in ("new", "old"):
            pkg = os.path.join(root, c[side]["package"])
            if not os.path.isfile(os.path.join(pkg, "manifest.json")):
                fail("%s: the %s path %s has no package" % (e["name"], side,
                                                              c[side]["label"]))
            pkgs[side] = (pkg, load(os.path.join(pkg, "manifest.json")))
            check_spills(pkgs[side][1], "%s %s" % (e["name"], c[side]["label"]))
        if e["package"] not in (c["new"]["package"], c["old"]["package"]) and \
                c["new"]["package"] not in compared:
            fail("%s: neither path of %s is the entry's package or one compared "
                 "with it" % (e["name"], c["what"]))
        compared += [c["new"]["package"], c["old"]["package"]]
        new, old = pkgs["new"], pkgs["old"]
        if external_tensors(new[1]) != external_tensors(old[1]):
            fail("%s: the %s paths bind different tensors" % (e["name"], c["what"]))
        if kernel_code(new[0]) == kernel_code(old[0]):
            fail("%s: %s and %s have the same kernel code" % (
                e["name"], c["new"]["label"], c["old"]["label"]))
        marked = ["moe.fp8_activations" in open(os.path.join(p, "model.opt.mlir")).read()
                  for p, _ in (new, old)]
        if marked != ["fp8-activations" in c[side]["label"] for side in ("new", "old")]:
            fail("%s: moe.fp8_activations in (new, old): %s" % (e["name"], marked))
        tokens = c["tokens"]
        if not tokens or any(t not in e["tokens"] for t in tokens):
            fail("%s: %s timed at %s" % (e["name"], c["what"], tokens))
        lines.append("%s %s vs %s at T %s" % (c["what"], c["new"]["label"],
                                              c["old"]["label"],
                                              ",".join(map(str, tokens))))
    return "; ".join(lines) or "no comparison"


def check_quant(root):
    index = load(os.path.join(root, "index.json"))
    if [e["name"] for e in index] != ["deepseek-v3-fp8", "gpt-oss-20b-mxfp4"]:
        fail("quant/index.json lists %s" % [e["name"] for e in index])
    for e in index:
        m = load(os.path.join(root, e["package"], "manifest.json"))
        kernels = check_spills(m, e["name"])
        if moe_layer(m, e["layer"])["input_width"] != e["hidden"]:
            fail("%s: width" % e["name"])
        dtypes = sorted(set(d for _, _, d in external_tensors(m)))
        print("quant %s: %d kernels, dtypes %s; %s" % (
            e["name"], kernels, ",".join(dtypes), check_compare(root, e)))


def folder_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(root) for f in files)


def check_shapes(root):
    index = load(os.path.join(root, "index.json"))
    names = [e["name"] for e in index]
    if names != ["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3",
                 "olmoe-1b-7b", "gpt-oss-20b"]:
        fail("shapes/index.json lists %s" % names)
    for e in index:
        pkg = os.path.join(root, e["package"])
        m = load(os.path.join(pkg, "manifest.json"))
        if [c["arch"] for c in m["cubins"]] != ["sm_90a"]:
            fail("%s: cubins %s" % (e["name"], m["cubins"]))
        kernels = check_spills(m, e["name"])
        layer = moe_layer(m, e["layer"])
        if layer["input_width"] != e["hidden"]:
            fail("%s: width %d" % (e["name"], layer["input_width"]))
        if layer["values"][layer["input"]]["dtype"] != "bf16":
            fail("%s: activations are not bf16" % e["name"])
        tensors = m["weights"]["tensors"]
        external = [t for t in tensors if t["offset"] is None]
        if not external or any(t["offset"] is None and t["constant"]
                               for t in tensors):
            fail("%s: external tensors %d" % (e["name"], len(external)))
        if any(not t["constant"] and t["offset"] is not None
               for t in tensors):
            fail("%s: a checkpoint weight is stored" % e["name"])
        prefix = "model.layers.%d.mlp." % e["layer"]
        gate_up = [t for t in external
                   if t["names"] == [prefix + "experts.gate_up_proj"]]
        if len(gate_up) != 1:
            fail("%s: no %sexperts.gate_up_proj" % (e["name"], prefix))
        shape = gate_up[0]["shape"]
        i, h, n = e["intermediate"], e["hidden"], e["experts"]
        want = [n, h, 2 * i] if e["arch"] == "gpt_oss" else [n, 2 * i, h]
        if shape != want or gate_up[0]["dtype"] != "bf16":
            fail("%s: gate_up_proj %s %s, expected %s bf16"
                 % (e["name"], shape, gate_up[0]["dtype"], want))
        config = load(os.path.join(root, e["config"]))
        if config["model_type"] != e["arch"] or \
                config["hidden_size"] != e["hidden"] or \
                config["num_experts_per_tok"] != e["top_k"]:
            fail("%s: config.json does not match the index" % e["name"])
        print("shape %s: %d kernels, %d tensors to bind, gate_up %s; %s"
              % (e["name"], kernels, len(external), shape,
                 check_compare(root, e)))


def check_small(root):
    index = load(os.path.join(root, "index.json"))
    for e in index:
        pkg = os.path.join(root, e["package"])
        m = load(os.path.join(pkg, "manifest.json"))
        check_spills(m, e["name"])
        if any(t["offset"] is None for t in m["weights"]["tensors"]):
            fail("%s: the small package lacks weights" % e["name"])
        model = os.path.join(root, e["model"])
        for f in ("config.json", "model.safetensors"):
            if not os.path.isfile(os.path.join(model, f)):
                fail("%s: no %s" % (e["name"], f))
        files = 0
        for t in e["tokens"]:
            size = t * e["hidden"] * 4
            paths = [os.path.join(root, e["check"], "x_%d.f32" % t)]
            paths += [os.path.join(root, e["check"], "y_%d_%d.f32" % (l, t))
                      for l in e["layers"]]
            for p in paths:
                if os.path.getsize(p) != size:
                    fail("%s: %s has %d bytes, expected %d"
                         % (e["name"], p, os.path.getsize(p), size))
                files += 1
        print("small %s: layers %s, %d check files" % (e["name"], e["layers"],
                                                      files))


def main():
    root = sys.argv[1]
    check_shapes(os.path.join(root, "shapes"))
    check_small(os.path.join(root, "small"))
    check_quant(os.path.join(root, "quant"))
    size = folder_bytes(root)
    if size > CARRY_LIMIT:
        fail("the prepared folder has %.1f MiB, over the carry limit of %d MiB"
             % (size / 2.0**20, CARRY_LIMIT >> 20))
    print("prepared folder ok (under the %d MiB carry limit)" % (CARRY_LIMIT >> 20))


if __name__ == "__main__":
    main()
