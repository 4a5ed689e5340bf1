"""numpy oracle of moe-run --stats and moe-report stats.

For each case, moe-run writes --routing-out (the ids and weights it routed)
and --stats (the load it counted); this script recounts the load from the
ids with numpy (bincount of the ids, sums of the weights, -1 slots, max/mean
over experts) and requires every number of the JSON to equal the recount.
Then moe-report stats draws the JSON, and the numbers drawn (the data-*
attributes of each heat-map cell and imbalance bar) must equal the recount.

Cases: a synthetic Mixtral package (two layers, --all-layers) on emu and
reference, and a capacity layer (GShard top-2, capacity factor 0.5: slots
are dropped) on reference and emu, where empty slots are counted.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "Oracle"))
from hf_models import write_safetensors  # noqa: E402


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(" ".join(cmd) + " failed:\n" + r.stderr[-3000:])
    return r.stdout


def recount(ids, w, experts):
    flat, fw = ids.reshape(-1), w.reshape(-1)
    ok = flat >= 0
    counts = np.bincount(flat[ok], minlength=experts)
    mass = np.bincount(flat[ok], weights=fw[ok].astype(np.float64),
                       minlength=experts)
    mean = counts.sum() / experts
    return {"tokens": ids.shape[0], "slots": ids.shape[1],
            "experts": experts, "tokens_per_expert": counts.tolist(),
            "gate_mass": mass, "routed_slots": int(counts.sum()),
            "empty_slots": int((flat == -1).sum()),
            "min": int(counts.min()), "max": int(counts.max()),
            "mean": mean, "imbalance": counts.max() / mean if mean else 0.0,
            "unused_experts": int((counts == 0).sum())}


def check_router(tag, got, want):
    for key in ("tokens", "slots", "experts", "tokens_per_expert",
                "routed_slots", "empty_slots", "min", "max",
                "unused_experts"):
        if got[key] != want[key]:
            raise AssertionError(f"{tag}: {key} {got[key]}, recount "
                                 f"{want[key]}")
    if got["invalid_slots"] != 0 or got["experts_known"] is not True:
        raise AssertionError(f"{tag}: invalid_slots {got['invalid_slots']}, "
                             f"experts_known {got['experts_known']}")
    for key in ("mean", "imbalance"):
        if abs(got[key] - want[key]) > 1e-6 * max(1.0, abs(want[key])):
            raise AssertionError(f"{tag}: {key} {got[key]}, recount "
                                 f"{want[key]}")
    if not np.allclose(got["gate_mass"], want["gate_mass"], rtol=1e-5,
                       atol=1e-5):
        raise AssertionError(f"{tag}: gate_mass {got['gate_mass']}, recount "
                             f"{want['gate_mass'].tolist()}")


def check_svg(tag, svg_path, expected):
    """expected: {(layer, router): recount}."""
    svg = open(svg_path).read()
    cells = re.findall(r'<rect class="cell" data-layer="(-?\d+)" '
                       r'data-router="(\d+)" data-expert="(\d+)" '
                       r'data-tokens="(\d+)"', svg)
    bars = re.findall(r'<rect class="bar" data-layer="(-?\d+)" '
                      r'data-router="(\d+)" data-imbalance="([0-9.]+)"', svg)
    drawn = {}
    for l, r, e, n in cells:
        drawn.setdefault((int(l), int(r)), {})[int(e)] = int(n)
    if sorted(drawn) != sorted(expected):
        raise AssertionError(f"{tag}: the SVG draws rows {sorted(drawn)}, "
                             f"expected {sorted(expected)}")
    for key, want in expected.items():
        row = [drawn[key].get(e) for e in range(want["experts"])]
        if row != want["tokens_per_expert"] or len(drawn[key]) != len(row):
            raise AssertionError(f"{tag}: SVG row {key} draws {row}, "
                                 f"recount {want['tokens_per_expert']}")
    got_bars = {(int(l), int(r)): float(v) for l, r, v in bars}
    for key, want in expected.items():
        if abs(got_bars.get(key, -1) - want["imbalance"]) > 1e-4:
            raise AssertionError(f"{tag}: SVG bar {key} imbalance "
                                 f"{got_bars.get(key)}, recount "
                                 f"{want['imbalance']}")
    return len(cells), len(bars)


def check_case(tag, work, model, layers, x, backend, experts, layer=None):
    xp = os.path.join(work, tag + ".x.npy")
    np.save(xp, x)
    prefix = os.path.join(work, tag + ".routing")
    stats = os.path.join(work, tag + ".stats.json")
    sel = ["--all-layers"] if layer is None else ["--layer", str(layer)]
    out = run(["moe-run", model] + sel +
              ["--input", xp, "--output", os.path.join(work, tag + ".y.npy"),
               "--backend", backend, "--routing-out", prefix,
               "--stats", stats])
    summaries = [l for l in out.splitlines() if l.startswith("moe-run: stats")]
    if len(summaries) != len(layers):
        raise AssertionError(f"{tag}: {len(summaries)} summary lines for "
                             f"{len(layers)} layers:\n{out}")
    data = json.load(open(stats))
    if data["format"] != "moe-run-stats" or data["backend"] != backend:
        raise AssertionError(f"{tag}: header {data['format']}, "
                             f"{data['backend']}")
    expected = {}
    for entry, l in zip(data["layers"], layers):
        if entry["layer"] != l or len(entry["routers"]) != 1:
            raise AssertionError(f"{tag}: layer entry {entry['layer']} with "
                                 f"{len(entry['routers'])} routers")
        p = prefix + (".L%d" % l if layer is None else "")
        ids = np.load(p + ".ids.npy")
        w = np.load(p + ".weights.npy")
        want = recount(ids, w, experts)
        check_router(f"{tag} layer {l}", entry["routers"][0], want)
        expected[(l, 0)] = want
        imb = "%.3f" % want["imbalance"]
        if imb not in summaries[len(expected) - 1]:
            raise AssertionError(f"{tag}: summary lacks imbalance {imb}: "
                                 f"{summaries[len(expected) - 1]}")
    svg = os.path.join(work, tag + ".svg")
    run(["moe-report", "stats", stats, "-o", svg])
    cells, bars = check_svg(tag, svg, expected)
    worst = max(v["imbalance"] for v in expected.values())
    empty = sum(v["empty_slots"] for v in expected.values())
    print(f"ok   {tag}: {len(layers)} layer(s), counts, gate mass, empty "
          f"slots ({empty}), imbalance (max {worst:.3f}) equal the numpy "
          f"recount; SVG draws {cells} cells and {bars} bars, all equal",
          flush=True)


CAPACITY_IR = """module attributes {{moe.weight_root = "."}} {{
  func.func @layer_0(%x: tensor<?x{h}xf32>) -> tensor<?x{h}xf32> attributes {{moe.layer = 0 : i64}} {{
    %wg = moe.weight ["router.weight"] from ["w.safetensors"] : tensor<{e}x{h}xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x{h}xf32>, tensor<{e}x{h}xf32>) -> tensor<?x{e}xf32>
    %p = moe.softmax %logits : tensor<?x{e}xf32>
    %top, %vals = moe.topk %p {{k = 2 : i64}} : tensor<?x{e}xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %gates = moe.normalize %vals : tensor<?x2xf32>
    %ids, %w = moe.capacity %top, %gates {{capacity_factor = 0.5 : f32, num_experts = {e} : i64}} : tensor<?x2xi32>, tensor<?x2xf32>
"""


def capacity_model(work, rng, e=4, h=16, i=8):
    from layer_check import gated_expert_tensors, gated_experts_ir
    tensors = {"router.weight": ("F32", rng.standard_normal((e, h)) * 0.5)}
    tensors.update(gated_expert_tensors(
        rng.standard_normal((e, i, h)) * 0.2,
        rng.standard_normal((e, i, h)) * 0.2,
        rng.standard_normal((e, h, i)) * 0.2))
    write_safetensors(os.path.join(work, "w.safetensors"), tensors)
    ir = os.path.join(work, "capacity.mlir")
    with open(ir, "w") as f:
        f.write(CAPACITY_IR.format(h=h, e=e) +
                "\n".join(gated_experts_ir(e, 2, i, h)))
    return ir


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    rng = np.random.default_rng(15)
    model = os.path.join(args.work, "mixtral.model")
    pkg = os.path.join(args.work, "mixtral.pkg")
    run(["moe-import", "--synthetic", "mixtral", "-o", model, "--force"])
    run(["moe-compile", model, "-o", pkg, "--arch", "none", "--force", "-q"])
    x = rng.standard_normal((53, 64)).astype(np.float32)
    for backend in ("emu", "reference"):
        check_case("mixtral-" + backend, args.work, pkg, [0, 1], x, backend,
                   experts=8)
    ir = capacity_model(args.work, rng)
    x = rng.standard_normal((40, 16)).astype(np.float32)
    for backend in ("reference", "emu"):
        check_case("capacity-" + backend, args.work, ir, [0], x, backend,
                   experts=4, layer=0)
    print("all stats cases match the numpy recount")


if __name__ == "__main__":
    main()
