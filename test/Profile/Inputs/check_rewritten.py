#!/usr/bin/python3
"""Profiles of rewritten models (docs/profile.md, "Rewritten models").

A random two-layer Mixtral (test/Oracle/hf_models.py) is profiled, then
rewritten by --moe-merge-experts, --moe-prune-experts and
--moe-compress-experts, and each rewritten model is profiled again on the
reference and on emu, on its unfused and its fused IR:

  merged      statistics over the N merged experts: counts, gate mass,
              coactivation and transition against a recount of the merged ids
              of --routing-out, output norms and mean outputs against numpy's
              merged experts; no logit_gram/logit_sum. A second merge with
              router-logits is refused naming the missing tensor, one with
              expert-output merges again, composing the layer's one
              remap (checked against numpy's two remaps); prune
              refuses a merged layer.
  pruned      statistics over the kept experts; logit_gram and
              expert_output_mean are the original's rows/columns of the kept
              experts (moe.expert_origin).
  compressed  the router is untouched: the routing statistics equal the
              original's; output norms come from the factored experts.

  check_rewritten.py --bin BUILD/bin
"""
import sys

sys.dont_write_bytecode = True

import argparse
import os
import re
import shutil
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_profile as cp  # noqa: E402

hf = cp.hf
check, close = cp.check, cp.close

T = 40
LAYERS = (0, 1)


def silu(v):
    return v / (1.0 + np.exp(-v))


def glu(gate, up, down, x):
    """One expert: [T, H] -> [T, H] in f64."""
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


def mappings(ir_path):
    """Per layer, the mappings of its moe.remap_experts in order."""
    out, layer = {}, None
    for line in open(ir_path):
        m = re.search(r"moe.layer = (\d+)", line)
        if m:
            layer = int(m.group(1))
        m = re.search(r"moe.remap_experts .* mapping = \[([0-9, ]+)\]", line)
        if m:
            out.setdefault(layer, []).append(
                [int(v) for v in m.group(1).split(",")])
    return out


def remap(ids, w, mapping):
    """The moe.remap_experts semantics: a repeated merged expert's gate goes
    to its first slot."""
    ids, w = ids.copy(), w.copy()
    for t in range(ids.shape[0]):
        for s in range(ids.shape[1]):
            if ids[t, s] < 0:
                continue
            ids[t, s] = mapping[ids[t, s]]
            for p in range(s):
                if ids[t, p] == ids[t, s]:
                    w[t, p] += w[t, s]
                    ids[t, s], w[t, s] = -1, 0.0
                    break
    return ids, w


def route(m, l, x, k=2):
    """Mixtral routing in f64: softmax, top-k, renormalised."""
    router, _, _ = hf._expert_names("mixtral", m.layout, l)
    logits = x @ m.get(router).T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    ids = np.argsort(-p, axis=1, kind="stable")[:, :k].astype(np.int32)
    w = np.take_along_axis(p, ids, axis=1)
    return ids, w / w.sum(axis=1, keepdims=True)


class Run:
    """Records IR on a backend; the profile, routing and layer inputs."""

    def __init__(self, tools, ir, x_path, tag, backend):
        self.prof = tools.path(tag + ".p.safetensors")
        r = tools.path(tag + ".r")
        # --chain none: each layer on the previous one's output, as
        # layer_inputs chains them.
        tools.run(["moe-run", ir, "--all-layers", "--chain", "none", "--input",
                   x_path, "--record-profile", self.prof,
                   "--profile-expert-outputs",
                   "--routing-out", r, "--backend", backend])
        self.p, _ = cp.read_profile(self.prof)
        self.routing = {l: (np.load("%s.L%d.ids.npy" % (r, l)),
                            np.load("%s.L%d.weights.npy" % (r, l)).astype(
                                np.float64)) for l in LAYERS}


def layer_inputs(tools, ir, x_path, tag):
    inputs, cur = {}, x_path
    for l in LAYERS:
        inputs[l] = np.load(cur).astype(np.float64)
        out = tools.path("%s.in%d.npy" % (tag, l + 1))
        tools.run(["moe-run", ir, "--layer", l, "--input", cur, "--output",
                   out])
        cur = out
    return inputs


def check_counts(tag, run, experts):
    """Counts, gate mass, coactivation, transition: the recount of the
    backend's --routing-out over `experts` (per layer)."""
    for n, l in enumerate(LAYERS):
        pre = "layer.%d." % l
        ids, w = run.routing[l]
        E = experts[l]
        check(ids.max() < E, "%s %sthe routed ids are below %d" %
              (tag, pre, E))
        count, mass, co = cp.routing_stats(ids, w, E)
        check(run.p[pre + "expert_count"].shape == (E,) and
              np.array_equal(run.p[pre + "expert_count"], count),
              "%s %sexpert_count [%d] equals the recount of --routing-out" %
              (tag, pre, E))
        close("%s %sgate_mass" % (tag, pre), run.p[pre + "gate_mass"], mass,
              1e-6)
        check(np.array_equal(run.p[pre + "coactivation"], co),
              "%s %scoactivation equals the recount" % (tag, pre))
        if n + 1 < len(LAYERS):
            nxt = LAYERS[n + 1]
            want = cp.transition(ids, run.routing[nxt][0], E, experts[nxt])
            check(np.array_equal(run.p[pre + "transition"], want),
                  "%s %stransition equals the recount" % (tag, pre))


def check_outputs(tag, run, inputs, fns, experts):
    """output_norm_mass and expert_output_mean against numpy's experts."""
    for l in LAYERS:
        pre = "layer.%d." % l
        ids, w = run.routing[l]
        x = inputs[l]
        outs = [fns[l](e, x) for e in range(experts[l])]
        reap = np.zeros(experts[l])
        for t in range(ids.shape[0]):
            for s in range(ids.shape[1]):
                if ids[t, s] >= 0:
                    reap[ids[t, s]] += w[t, s] * np.linalg.norm(
                        outs[ids[t, s]][t])
        close("%s %soutput_norm_mass" % (tag, pre),
              run.p[pre + "output_norm_mass"], reap, 1e-5)
        close("%s %sexpert_output_mean" % (tag, pre),
              run.p[pre + "expert_output_mean"],
              np.stack([o.mean(axis=0) for o in outs]), 1e-5)


def same_stats(tag, p, q):
    """Two profiles of one model: equal counts, close sums."""
    check(sorted(p) == sorted(q), "%s: same tensors" % tag)
    for name in sorted(set(p) & set(q)):
        if name.endswith(("expert_count", "coactivation", "transition")):
            check(np.array_equal(p[name], q[name]), "%s: %s equal" %
                  (tag, name))
        else:
            close("%s: %s" % (tag, name), q[name], p[name], 1e-5)


def merged_fns(m, weights_path, mapping_weights=None):
    """Per layer, the merged expert g of the file's layer.L.merged.*."""
    wts, _ = cp.read_profile(weights_path)
    fns = {}
    for l in LAYERS:
        g, u, d = (wts["layer.%d.merged.%s" % (l, n)]
                   for n in ("gate", "up", "down"))
        fns[l] = (lambda g, u, d: lambda e, x: glu(g[e], u[e], d[e], x))(
            g, u, d)
    return fns, wts


def both_backends(tools, ir, x_path, tag):
    """Runs on reference and emu, unfused and fused: the reference run and
    the others, checked equal to it."""
    fused = tools.path(tag + ".fused.mlir")
    tools.run(["moe-opt", ir, "--moe-optimize", "-o", fused])
    ref = Run(tools, ir, x_path, tag + ".ref", "reference")
    for src, name in ((ir, "unfused"), (fused, "fused")):
        for backend in ("reference", "emu"):
            if (name, backend) == ("unfused", "reference"):
                continue
            other = Run(tools, src, x_path, "%s.%s.%s" % (tag, name, backend),
                        backend)
            same_stats("%s %s IR on %s vs reference" % (tag, name, backend),
                       ref.p, other.p)
    return ref


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="moe-profile-rewritten-")
    try:
        run_checks(cp.Tools(args.bin, work), np.random.default_rng(args.seed))
    finally:
        if args.keep:
            print("work directory: " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if cp.FAILURES:
        print("%d check(s) FAILED" % len(cp.FAILURES))
        return 1
    print("all checks passed")
    return 0


def run_checks(tools, rng):
    m, ir = cp.mixtral(tools, rng, "m", layers=2)
    E = 8
    x = tools.path("x.npy")
    np.save(x, cp.tokens(rng, T))
    base = Run(tools, ir, x, "orig", "reference")
    inputs = layer_inputs(tools, ir, x, "orig")

    # ---- Merged: statistics over the merged experts.
    merged = tools.path("merged.mlir")
    tools.run(["moe-opt", ir, "--moe-merge-experts=profile=%s groups=4" %
               base.prof, "-o", merged])
    maps = mappings(merged)
    check(all(len(maps.get(l, [])) == 1 for l in LAYERS),
          "merged: every layer has one moe.remap_experts")
    ref = both_backends(tools, merged, x, "merged")
    N = {l: max(maps[l][0]) + 1 for l in LAYERS}
    check_counts("merged", ref, N)
    fns, _ = merged_fns(m, tools.path("merged.merge.safetensors"))
    check_outputs("merged", ref, layer_inputs(tools, merged, x, "merged"),
                  fns, N)
    for l in LAYERS:
        pre = "layer.%d." % l
        check(pre + "logit_gram" not in ref.p and pre + "logit_sum" not in
              ref.p, "merged %sno logit_gram/logit_sum (the router's %d "
              "columns are not the %d merged experts)" % (pre, E, N[l]))
    # The merged ids are the original routing remapped (numpy, f64; a
    # near-tie may flip one token).
    ids0, w0 = route(m, 0, inputs[0])
    mids, _ = remap(ids0, w0, maps[0][0])
    agree = np.mean([set(a) == set(b) for a, b in
                     zip(cp.expert_sets(mids), cp.expert_sets(ref.routing[0][0]))])
    check(agree >= 0.97, "merged layer.0.: --routing-out holds the remapped "
          "numpy routing on %.0f%% of the tokens" % (100 * agree))

    # Appending a second input keeps the layout (no logit tensors).
    x2 = tools.path("x2.npy")
    np.save(x2, cp.tokens(rng, 16))
    app = tools.path("merged.app.safetensors")
    shutil.copy(ref.prof, app)
    tools.run(["moe-run", merged, "--all-layers", "--input", x2,
               "--record-profile", app, "--profile-expert-outputs"])
    q, meta = cp.read_profile(app)
    check(meta["tokens"] == str(T + 16) and "layer.0.logit_gram" not in q,
          "merged: appending an input adds up (tokens %s)" % meta["tokens"])

    # A second merge: router-logits has nothing to go on, and says so.
    again = tools.path("again.mlir")
    r = tools.run(["moe-opt", merged, "--mlir-print-op-on-diagnostic=false",
                   "--moe-merge-experts=profile=%s groups=2" % ref.prof, "-o",
                   again])
    check("no layer.0.logit_gram" in r.stderr and "already merged" in
          r.stderr and "similarity=expert-output" in r.stderr and
          open(again).read().count("moe.remap_experts") == 2,
          "a second merge by router-logits is refused, the model unchanged: "
          + r.stderr.strip().splitlines()[0])
    # ... by expert outputs it merges the merged experts, weighted by the
    # merged profile's counts.
    r = tools.run(["moe-opt", merged, "--mlir-print-op-on-diagnostic=false",
                   "--moe-merge-experts=profile=%s groups=2 "
                   "similarity=expert-output" % ref.prof, "-o", again])
    maps2 = mappings(again)
    # The merged experts' new groups, read off the composed mapping.
    second = {}
    for l in LAYERS:
        second[l] = [-1] * N[l]
        for e, g in enumerate(maps[l][0]):
            second[l][g] = maps2[l][0][e]
    check(all(len(maps2[l]) == 1 and max(maps2[l][0]) + 1 == 2 and
              all(maps2[l][0][e] == second[l][g] for e, g in
                  enumerate(maps[l][0])) for l in LAYERS),
          "a second merge by expert-output composes the layer's one remap: "
          "%s" % {l: maps2[l] for l in LAYERS})
    _, w1 = merged_fns(m, tools.path("merged.merge.safetensors"))
    fns2, w2 = merged_fns(m, tools.path("again.merge.safetensors"))
    for l in LAYERS:
        cnt = ref.p["layer.%d.expert_count" % l]
        for n in ("gate", "up", "down"):
            a = w1["layer.%d.merged.%s" % (l, n)]
            want = np.stack([
                sum(cnt[g] * a[g] for g in range(N[l]) if second[l][g] == h)
                / sum(cnt[g] for g in range(N[l]) if second[l][g] == h)
                for h in range(2)])
            close("second merge layer.%d.merged.%s = merged experts averaged "
                  "by the merged profile's expert_count" % (l, n),
                  w2["layer.%d.merged.%s" % (l, n)], want, 1e-5)
    y = tools.path("again.y.npy")
    tools.run(["moe-run", again, "--layer", 0, "--input", x, "--output", y])
    # The composed remap against numpy's two remaps in a row.
    ids, w = route(m, 0, inputs[0])
    ids, w = remap(*remap(ids, w, maps[0][0]), second[0])
    want = np.zeros_like(inputs[0])
    for t in range(T):
        for s in range(ids.shape[1]):
            if ids[t, s] >= 0:
                want[t] += w[t, s] * fns2[0](ids[t, s], inputs[0][t:t + 1])[0]
    close("twice merged layer 0 output against numpy", np.load(y), want, 1e-4)
    r = tools.run(["moe-report", "compare", ir, again, "--input", x,
                   "--all-layers"], ok=False)
    check(r.returncode == 0 and re.search(r"\b8\s+2\b", r.stdout),
          "moe-report compares the twice merged model (8 -> 2 experts): " +
          (r.stdout + r.stderr).strip().replace("\n", " | "))
    twice = both_backends(tools, again, x, "again")
    check_counts("twice merged", twice, {l: 2 for l in LAYERS})
    # Prune refuses a merged layer whatever the profile.
    r = tools.run(["moe-opt", merged, "--mlir-print-op-on-diagnostic=false",
                   "--moe-prune-experts=profile=%s keep=3" % ref.prof, "-o",
                   tools.path("pm.mlir")])
    check("experts were merged" in r.stderr and "prune before merging" in
          r.stderr, "prune of a merged layer is refused: " +
          r.stderr.strip().splitlines()[0])

    # ---- Pruned: the kept experts, their original logit columns.
    pruned = tools.path("pruned.mlir")
    tools.run(["moe-opt", ir, "--moe-prune-experts=profile=%s keep=5" %
               base.prof, "-o", pruned])
    origin = {}
    layer = None
    for line in open(pruned):
        mm = re.search(r"moe.layer = (\d+)", line)
        if mm:
            layer = int(mm.group(1))
        mm = re.search(r"moe.expert_origin = array<i64: ([0-9, ]+)>", line)
        if mm:
            origin[layer] = [int(v) for v in mm.group(1).split(",")]
    check(sorted(origin) == list(LAYERS) and
          all(len(origin[l]) == 5 for l in LAYERS),
          "pruned: moe.expert_origin on every layer: %s" % origin)
    pr = both_backends(tools, pruned, x, "pruned")
    check_counts("pruned", pr, {l: 5 for l in LAYERS})
    # Layer 0 sees the same input: its logit columns and mean outputs are the
    # original's of the kept experts.
    k0 = origin[0]
    close("pruned layer.0.logit_gram = the original's kept rows/columns",
          pr.p["layer.0.logit_gram"],
          base.p["layer.0.logit_gram"][np.ix_(k0, k0)], 1e-6)
    close("pruned layer.0.logit_sum = the original's kept columns",
          pr.p["layer.0.logit_sum"], base.p["layer.0.logit_sum"][k0], 1e-6)
    close("pruned layer.0.expert_output_mean = the original's kept rows",
          pr.p["layer.0.expert_output_mean"],
          base.p["layer.0.expert_output_mean"][k0], 1e-6)

    # ---- Compressed: the router is untouched.
    comp = tools.path("comp.mlir")
    tools.run(["moe-opt", ir, "--moe-compress-experts=profile=%s rank=8" %
               base.prof, "-o", comp])
    check("moe.low_rank" in open(comp).read(), "compressed: moe.low_rank "
          "weights")
    cr = both_backends(tools, comp, x, "comp")
    check_counts("compressed", cr, {l: E for l in LAYERS})
    for s in ("expert_count", "coactivation", "logit_gram"):
        close("compressed layer.0.%s = the original's" % s,
              cr.p["layer.0." + s], base.p["layer.0." + s], 1e-6)
    # The output statistics: numpy's experts of the products a @ b.
    fac, _ = cp.read_profile(tools.path("comp.compress.safetensors"))

    def factored(l):
        w = {n: np.einsum("eor,eri->eoi", fac["layer_%d.experts.%s.a" % (l, n)],
                          fac["layer_%d.experts.%s.b" % (l, n)])
             for n in ("gate", "up", "down")}
        return lambda e, x: glu(w["gate"][e], w["up"][e], w["down"][e], x)

    check_outputs("compressed", cr, layer_inputs(tools, comp, x, "comp"),
                  {l: factored(l) for l in LAYERS}, {l: E for l in LAYERS})
    rel = (np.abs(cr.p["layer.0.output_norm_mass"] -
                  base.p["layer.0.output_norm_mass"]).max() /
           np.abs(base.p["layer.0.output_norm_mass"]).max())
    check(rel > 1e-3, "compressed layer.0.output_norm_mass is not the "
          "original's (relative change %.3g)" % rel)

if __name__ == "__main__":
    sys.exit(main())
