"""Independent numpy checks of the layout passes.

  check_layout.py plan PROFILE OUT.mlir REMARKS.txt GPUS [MAP.json COUNTS.json]
      every layer's placement (attributes of the output IR) is valid, and
      the balance and cross-GPU fractions of the remarks equal numpy's.
  check_layout.py optimum PROFILE REMARKS.txt
      with one expert per GPU, the affinity remark's staying weight and
      proven bound both equal the optimum found by trying every matching of
      each layer pair (E! of them; the layer pairs are independent then).
  check_layout.py report PROFILE OUT.mlir REPORT.json TOPOLOGY.json
      the simulator's per-layer and total numbers equal numpy's count
      (placement from the IR's attributes, or contiguous without them).
"""
import itertools
import json
import re
import struct
import sys

import numpy as np


def read_profile(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__")
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f8").reshape(info["shape"])
    return out, meta


def placements(ir, experts, gpus):
    """{layer: (slot_expert, slot_gpu)} from the IR, or contiguous."""
    out = {}
    for m in re.finditer(r"func\.func @\w+\([^)]*\)[^{]*attributes \{([^}]*)\}",
                         ir):
        attrs = m.group(1)
        layer = int(re.search(r"moe\.layer = (\d+)", attrs).group(1))
        se = re.search(r"moe\.placement\.slot_expert = array<i64: ([^>]*)>",
                       attrs)
        sg = re.search(r"moe\.placement\.slot_gpu = array<i64: ([^>]*)>",
                       attrs)
        if se:
            out[layer] = (np.array([int(v) for v in se.group(1).split(",")]),
                          np.array([int(v) for v in sg.group(1).split(",")]))
        else:
            e = experts[layer]
            out[layer] = (np.arange(e), np.arange(e) // (e // gpus))
    return out


def shares(se, sg, experts, gpus):
    s = np.zeros((experts, gpus))
    cnt = np.bincount(se, minlength=experts)
    for e, g in zip(se, sg):
        s[e, g] += 1.0 / cnt[e]
    return s


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        sys.exit(1)


def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def optimum(prof_path, remarks_path):
    prof, _ = read_profile(prof_path)
    best = 0.0
    for name in sorted(k for k in prof if k.endswith(".transition")):
        t = prof[name]
        perms = np.array(list(itertools.permutations(range(t.shape[0]))))
        best += t[np.arange(t.shape[0]), perms].sum(axis=1).max()
    m = re.search(r"staying weight ([0-9.e+]+), proven bound ([0-9.e+]+)",
                  open(remarks_path).read())
    check(m is not None, "the affinity remark has a staying weight and bound")
    stay, bound = float(m[1]), float(m[2])
    check(close(stay, best), "staying weight %.1f equals the optimum over "
          "every matching %.1f" % (stay, best))
    check(close(bound, best), "proven bound %.1f equals it" % bound)


def main():
    if sys.argv[1] == "optimum":
        optimum(*sys.argv[2:4])
        return
    mode, prof_path, ir_path = sys.argv[1:4]
    prof, meta = read_profile(prof_path)
    layers = sorted({int(k.split(".")[1]) for k in prof})
    experts = {l: prof["layer.%d.expert_count" % l].shape[0] for l in layers}
    ir = open(ir_path).read()
    if mode == "plan":
        remarks, gpus = open(sys.argv[4]).read(), int(sys.argv[5])
    else:
        report = json.load(open(sys.argv[4]))
        topo = json.load(open(sys.argv[5]))
        gpus = topo["nodes"] * topo["gpus_per_node"]
    pl = placements(ir, experts, gpus)
    sh = {l: shares(*pl[l], experts[l], gpus) for l in layers}
    bal, cross = {}, {}
    for l in layers:
        se, sg = pl[l]
        check(set(se) == set(range(experts[l])), "layer %d: every expert placed" % l)
        pairs = list(zip(sg, se))
        check(len(pairs) == len(set(pairs)), "layer %d: no expert twice on a GPU" % l)
        check(len(set(np.bincount(sg, minlength=gpus))) == 1,
              "layer %d: equal slots per GPU" % l)
        load = sh[l].T @ prof["layer.%d.expert_count" % l]
        bal[l] = load.max() / load.mean()
        name = "layer.%d.transition" % l
        if name in prof:
            t = prof[name]
            stay = (t * (sh[l] @ sh[l + 1].T)).sum()
            cross[l] = (t.sum() - stay, t.sum())
    if mode == "plan":
        for l in layers:
            m = re.search(r"layout-model\.mlir:%d:3: remark: placement \S+ on "
                          r"\d+ GPUs, \d+ slots: balance ([0-9.]+)[^\n]*" %
                          (4 + 15 * l), remarks)
            check(m is not None, "layer %d: remark present" % l)
            check(abs(float(m.group(1)) - bal[l]) < 1e-4,
                  "layer %d: balance %s equals numpy %.4f" % (l, m.group(1), bal[l]))
            c = re.search(r"cross-GPU to next layer ([0-9.]+)", m.group(0))
            if l in cross:
                f = cross[l][0] / cross[l][1]
                check(c is not None and abs(float(c.group(1)) - f) < 1e-4,
                      "layer %d: cross-GPU %s equals numpy %.4f" %
                      (l, c.group(1) if c else None, f))
        if len(sys.argv) > 6:
            # SGLang's files: rows are the model layers 0..last.
            m = json.load(open(sys.argv[6]))["physical_to_logical_map"]
            check(len(m) == layers[-1] + 1 and
                  all(list(m[l]) == list(pl[l][0]) for l in layers),
                  "sglang physical_to_logical_map equals slot_expert")
            n = json.load(open(sys.argv[7]))["logical_count"]
            check(all(np.array_equal(n[l], prof["layer.%d.expert_count" % l])
                      for l in layers),
                  "sglang logical_count equals expert_count")
        return
    # report: the simulator's model (docs/layout.md) recomputed.
    H, act = 16, 2
    per_node = topo["gpus_per_node"]
    node = np.arange(gpus) // per_node
    same_node = node[:, None] == node[None, :]
    total_intra = total_inter = 0.0
    for k, l in enumerate(layers):
        rep = report["layers"][k]
        check(rep["layer"] == l, "report layer %d in order" % l)
        check(close(rep["balance"], bal[l]), "layer %d: balance %.6f" % (l, bal[l]))
        count = prof["layer.%d.expert_count" % l]
        origin = np.full((experts[l], gpus), 1.0 / gpus)
        prev = "layer.%d.transition" % (l - 1)
        if k > 0 and prev in prof:
            t = prof[prev]
            w = t.T @ sh[layers[k - 1]]          # [E, G]
            sums = t.sum(axis=0)
            origin[sums > 0] = w[sums > 0] / sums[sums > 0, None]
        # bytes[r, g] = sum_j count_j origin[j, r] share[j, g] H act, r != g
        b = np.einsum("j,jr,jg->rg", count, origin, sh[l]) * H * act
        np.fill_diagonal(b, 0)
        intra, inter = 2 * b[same_node].sum(), 2 * b[~same_node].sum()
        total_intra += intra
        total_inter += inter
        check(close(rep["all_to_all_bytes_intra_node"], intra),
              "layer %d: intra-node bytes %.1f" % (l, intra))
        check(close(rep["all_to_all_bytes_inter_node"], inter),
              "layer %d: inter-node bytes %.1f" % (l, inter))
        if l in cross:
            f = cross[l][0] / cross[l][1]
            check(close(rep["cross_gpu_fraction_to_next"], f),
                  "layer %d: cross-GPU fraction %.6f" % (l, f))
        else:
            check(rep["cross_gpu_fraction_to_next"] is None,
                  "layer %d: no next layer" % l)
    tot = report["total"]
    check(close(tot["balance"], np.mean([bal[l] for l in layers])),
          "total balance is the mean of the layers'")
    check(close(tot["all_to_all_bytes_intra_node"], total_intra) and
          close(tot["all_to_all_bytes_inter_node"], total_inter),
          "total bytes")
    c = sum(v[0] for v in cross.values()) / sum(v[1] for v in cross.values())
    check(close(tot["cross_gpu_fraction"], c), "total cross-GPU fraction %.6f" % c)
    check(close(tot["step_seconds"],
                sum(x["step_seconds"] for x in report["layers"])),
          "step time is the sum of the layers'")
    print("all checks passed")


if __name__ == "__main__":
    main()
