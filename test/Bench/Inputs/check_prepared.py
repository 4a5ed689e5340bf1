"""Checks the folder bench/gpu/prepare.sh wrote (test/Bench/prepare.test).

    check_prepared.py PREPARED

Each shape of shapes/index.json: a shape-only package (every checkpoint
weight external, an sm_90a cubin whose kernels spill nothing) whose first
MoE layer and config.json have the listed sizes and whose tensor names are
the transformers v5 fused names that bench/gpu/bench.py binds by suffix.
Each small model of small/index.json: a package with its weights, the model
folder and the reference outputs of every layer and token count, of the
right sizes. Prints one line per entry; exits 1 at the first problem.
"""
import json
import os
import sys


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
        print("shape %s: %d kernels, %d tensors to bind, gate_up %s"
              % (e["name"], kernels, len(external), shape))


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
    print("prepared folder ok")


if __name__ == "__main__":
    main()
