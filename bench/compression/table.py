#!/usr/bin/env python3
"""The side-by-side table of run.sh: bytes saved against held-out error.

  table.py RUNS.tsv

RUNS.tsv has one line per rewrite: model, method, setting, and the path
prefix P of its outputs (P.mlir the rewritten IR, P.json its
`moe-report compare --all-layers --format json`). Errors are relative
errors on the held-out input: "layer error" the mean over layers of each
layer run on that input, "end-to-end error" that of the whole chain, and
the agreement of expert sets is that of the chain (mean over layers and
tokens; a single layer's for one-layer models). The model's folder is
P/../..; when it holds truth.json (planted.py) the last column says what
the rewrite did to the planted structure:
  redundant  merge: whether the merged groups are the planted ones, or
             each lies within one prototype, or they mix prototypes (layer
             0); prune: how many prototypes still have an expert
  loud       prune: whether the loud expert was kept or pruned
"""
import json
import os
import re
import sys


def ints(text):
    return [int(v) for v in re.findall(r"-?\d+", text)]


def first_mapping(ir):
    """mapping of the first moe.remap_experts (custom or generic form)."""
    m = re.search(r"moe\.remap_experts.*?mapping\s*=\s*"
                  r"(?:array<i64:([^>]*)>|\[([^\]]*)\])", ir)
    return ints(m.group(1) or m.group(2)) if m else None


def first_origin(ir):
    m = re.search(r"moe\.expert_origin\s*=\s*array<i64:([^>]*)>", ir)
    return ints(m.group(1)) if m else None


def partition(labels):
    groups = {}
    for i, g in enumerate(labels):
        groups.setdefault(g, set()).add(i)
    return sorted(sorted(s) for s in groups.values())


def note(model_dir, method, ir):
    path = os.path.join(model_dir, "truth.json")
    if not os.path.exists(path):
        return ""
    truth = json.load(open(path))
    kind = truth["kind"]
    if kind == "redundant" and method.startswith("merge"):
        mapping = first_mapping(ir)
        if mapping is None:
            return "no moe.remap_experts"
        if partition(mapping) == partition(truth["groups"]):
            return "planted groups recovered"
        within = all(len({truth["groups"][e] for e in group}) == 1
                     for group in partition(mapping))
        return ("each group within one prototype" if within
                else "groups mix prototypes")
    if kind == "redundant" and method.startswith("prune"):
        origin = first_origin(ir)
        if origin is None:
            return "no moe.expert_origin"
        covered = len({truth["groups"][e] for e in origin})
        return "%d of %d prototypes kept" % (covered, truth["prototypes"])
    if kind == "loud" and method.startswith("prune"):
        origin = first_origin(ir)
        if origin is None:
            return "no moe.expert_origin"
        return "loud expert %d %s" % (
            truth["loud"], "kept" if truth["loud"] in origin else "pruned")
    return ""


def main():
    rows = []
    with open(sys.argv[1]) as f:
        for line in f:
            if not line.strip():
                continue
            model, method, setting, prefix = line.rstrip("\n").split("\t")
            with open(prefix + ".json") as r:
                report = json.load(r)
            with open(prefix + ".mlir") as r:
                ir = r.read()
            t = report["total"]
            before, after = t["bytes_before"], t["bytes_after"]
            errors = [l["relative_error"] for l in report["layers"]]
            layer_error = (sum(errors) / len(errors)
                           if errors and None not in errors else None)
            # End to end with --all-layers.
            error = t.get("relative_error")
            agreement = t.get("agreement")
            experts = ("%s -> %s" % (t["experts_before"], t["experts_after"])
                       if t["experts_before"] is not None else "-")
            rows.append([
                model, method, setting, experts, str(before), str(after),
                "%.1f%%" % (100.0 * (before - after) / before) if before
                else "-",
                "%.3e" % layer_error if layer_error is not None else "-",
                "%.3e" % error if error is not None else "-",
                "%.4f" % agreement if agreement is not None else "-",
                note(os.path.dirname(os.path.dirname(prefix)), method, ir)])
    head = ["model", "method", "setting", "experts", "bytes before",
            "bytes after", "saved", "layer error", "end-to-end error",
            "end-to-end agreement", "planted structure"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


if __name__ == "__main__":
    main()
