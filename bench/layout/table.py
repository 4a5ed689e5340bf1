"""The tables of bench/layout/run.sh, from its runs.tsv and the files of
each run: the placement (NAME.place.json), for the chains the cross-GPU
fraction of the planted chains' placement (CASE.planted.json), the simulator's reports on the
planning profile (NAME.in.json) and on the scoring profile (NAME.out.json),
and the plan's remarks (NAME.remarks).

  table.py RUNS.tsv [--check]

Prints markdown tables (zipf, chains, models, the proven gaps of the
affinity ILP runs; a section only when it has runs), then the checks of the issue's targets ("ok:" / "FAIL:" lines).
With --check the exit status is 1 when a check fails.
Duplicates are counted here from the placement files (an expert on one GPU
more than once), independently of the planner's own validation.
"""
import argparse
import collections
import json
import re
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


class Run:
    def __init__(self, section, case, name, options, wall, prefix):
        self.section, self.case, self.name = section, case, name
        self.kind = name.rsplit(".", 1)[1]
        self.options, self.wall, self.prefix = options, float(wall), prefix
        self.place = load(prefix + ".place.json")
        self.inr = load(prefix + ".in.json")["total"]
        out = load(prefix + ".out.json")
        self.outr = out["total"]
        # The expert work's share of the simulated step (the rest is
        # dispatch and combine).
        self.expert_seconds = sum(l["expert_seconds"] for l in out["layers"])
        with open(prefix + ".remarks") as f:
            self.remarks = f.read()
        if self.place.get("format") != "moe-placement":
            sys.exit("table.py: %s.place.json: not a moe-placement file"
                     % prefix)

    def duplicates(self):
        """Extra replicas of one expert on one GPU, over all layers."""
        n = 0
        for layer in self.place["layers"]:
            c = collections.Counter(zip(layer["slot_gpu"], layer["slot_expert"]))
            n += sum(v - 1 for v in c.values())
        return n

    def per_gpu(self):
        """The set of slot counts per GPU over all layers."""
        gpus = self.place["gpus"]
        counts = set()
        for layer in self.place["layers"]:
            c = collections.Counter(layer["slot_gpu"])
            counts.update(c.get(g, 0) for g in range(gpus))
        return counts

    def affinity(self):
        """(method, solver seconds) from the affinity remark."""
        m = re.search(r"remark: affinity: (.*) \(([0-9.]+) s\); crossing",
                      self.remarks)
        return (m[1], float(m[2])) if m else (None, None)

    def proof(self):
        """(greedy gap, ILP gap) to the proven upper bound on the staying
        transition weight, in percent, from the affinity remark (None
        without a bound: solver=greedy)."""
        m = re.search(r"crossing weight greedy ([0-9.e+]+), final ([0-9.e+]+)"
                      r"; staying weight ([0-9.e+]+), proven bound ([0-9.e+]+)",
                      self.remarks)
        if not m:
            return (None, None)
        cg, cf, stay, bound = map(float, m.groups())
        greedy = stay + cf - cg
        return (100 * (bound - greedy) / greedy, 100 * (bound - stay) / stay)

    def bounds(self):
        """(staying weight, layer-pair bound, eigenvalue bound, its
        seconds) from the affinity remark (None where absent)."""
        m = re.search(r"staying weight ([0-9.e+]+), proven bound [0-9.e+]+"
                      r"; bounds: layer pairs ([0-9.e+]+)"
                      r"(?:, eigenvalues ([0-9.e+]+) \(([0-9.]+) s\))?",
                      self.remarks)
        if not m:
            return (None, None, None, None)
        return tuple(None if x is None else float(x) for x in m.groups())

    def moves(self):
        m = re.search(r"(\d+) moves against it, (\d+) after", self.remarks)
        return (int(m[1]), int(m[2])) if m else (None, None)


def fmt(x, spec=".4f"):
    return "-" if x is None else format(x, spec)


def markdown(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def cases(runs, section):
    by = collections.OrderedDict()
    for r in runs:
        if r.section == section:
            by.setdefault(r.case, {})[r.kind] = r
    return by


class Checks:
    def __init__(self):
        self.lines, self.failed = [], 0

    def __call__(self, ok, what):
        self.lines.append(("ok: " if ok else "FAIL: ") + what)
        self.failed += not ok


def zipf_table(runs, check):
    by = cases(runs, "zipf")
    if not by:
        return None
    rows = []
    halved = total = 0
    for case, k in by.items():
        E, G, s = re.match(r"E(\d+)-G(\d+)-s([0-9.]+)", case).groups()
        c, g, h = k["contiguous"], k["global"], k["hierarchical"]
        re_, pv = k["replan"], k["previous"]
        dup = sum(k[x].duplicates() for x in k)
        oos, rep = g.outr["balance"], re_.inr["balance"]
        before, after = pv.moves()
        prev_bal = pv.inr["balance"]
        rows.append([E, G, s, fmt(c.inr["balance"]), fmt(g.inr["balance"]),
                     fmt(h.inr["balance"]), dup, fmt(oos), fmt(rep),
                     fmt(oos / rep), "%d -> %d" % (before, after),
                     fmt(prev_bal), fmt(prev_bal / rep)])
        check(dup == 0, "zipf %s: %d duplicate replicas on a GPU" % (case, dup))
        check(g.inr["balance"] <= c.inr["balance"] and
              h.inr["balance"] <= c.inr["balance"],
              "zipf %s: balanced (global %.4f, hierarchical %.4f) <= "
              "contiguous %.4f" % (case, g.inr["balance"], h.inr["balance"],
                                   c.inr["balance"]))
        check(g.inr["balance"] <= 1.05,
              "zipf %s: global balance %.4f <= 1.05" % (case, g.inr["balance"]))
        check(oos <= 1.05 * rep,
              "zipf %s: out of sample %.4f within 5%% of re-planning %.4f"
              % (case, oos, rep))
        check(after <= before and prev_bal <= 1.02 * rep + 1e-4,
              "zipf %s: previous= moves %d -> %d, balance %.4f within 2%% of "
              "the fresh plan's %.4f" % (case, before, after, prev_bal, rep))
        total += 1
        halved += after * 2 <= before
    check(halved * 2 >= total,
          "zipf: previous= halves the moves in %d of %d cases" % (halved, total))
    head = ["E", "G", "s", "contiguous", "balanced global", "balanced hier.",
            "dup. replicas", "out of sample", "re-planned", "ratio",
            "moves fresh -> kept", "balance kept", "vs fresh"]
    return ("### Planted Zipf loads (R = G redundant slots)\n\n"
            + markdown(head, rows) + "\n\n%d of %d cases halve the moves "
            "with previous=." % (halved, total))


def chains_table(runs, check):
    """One row per case and ILP solver (glpk, cbc: those that ran)."""
    by = cases(runs, "chains")
    if not by:
        return None
    rows = []
    for case, k in by.items():
        L, E, G = map(int, re.match(r"L(\d+)-E(\d+)-G(\d+)", case).groups())
        c, g = k["contiguous"], k["greedy"]
        fc, fg = (x.inr["cross_gpu_fraction"] for x in (c, g))
        gm, gsec = g.affinity()
        planted = load(c.prefix.rsplit(".", 1)[0] + ".planted.json")[
            "planted_cross_gpu_fraction"]
        check(fg < fc, "chains %s: greedy cross-GPU %.4f < contiguous %.4f"
              % (case, fg, fc))
        for solver in ("glpk", "cbc"):
            if solver not in k:
                continue
            i = k[solver]
            fi = i.inr["cross_gpu_fraction"]
            im, isec = i.affinity()
            ggap, igap = i.proof()
            per = g.per_gpu() | i.per_gpu()
            rows.append([L, E, G, solver, fmt(fc), fmt(planted), fmt(fg),
                         fmt(fi), "%.1f%%" % (100 * (1 - fi / fc)),
                         fmt(fg / fi), fmt(ggap, ".2f"), fmt(igap, ".2f"),
                         fmt(gsec, ".2f"), fmt(isec, ".2f"),
                         fmt(i.wall, ".2f"), im,
                         ",".join(map(str, sorted(per)))])
            check(fi < fc, "chains %s: %s cross-GPU %.4f < contiguous %.4f"
                  % (case, solver, fi, fc))
            check(1 - fi / fc >= 0.70,
                  "chains %s: affinity %s cuts %.1f%% >= 70%%"
                  % (case, solver, 100 * (1 - fi / fc)))
            check(fi <= 1.05 * planted,
                  "chains %s: %s %.4f within 5%% of the planted chains' %.4f"
                  % (case, solver, fi, planted))
            check(fg <= 1.05 * fi,
                  "chains %s: greedy %.4f within 5%% of %s %.4f"
                  % (case, fg, solver, fi))
            check(igap is not None and igap >= -1e-9,
                  "chains %s: %s reports a proven bound (gap %s %%)"
                  % (case, solver, fmt(igap, ".2f")))
            check(per == {E // G}, "chains %s: %s experts per GPU %s (E/G = %d)"
                  % (case, solver, sorted(per), E // G))
            check(g.duplicates() + i.duplicates() == 0,
                  "chains %s: %s no duplicate replicas" % (case, solver))
    head = ["L", "E", "G", "ILP", "cross contiguous", "cross planted",
            "cross greedy", "cross ILP", "cut", "greedy/ILP",
            "greedy gap %", "ILP gap %", "greedy s",
            "ILP s", "ILP wall s", "ILP status", "experts/GPU"]
    return ("### Planted layer-to-layer chains (p = 0.8)\n\n"
            + markdown(head, rows))


def models_table(runs, check):
    by = cases(runs, "models")
    if not by:
        return None
    rows = []
    for case, k in by.items():
        arch, routing, topo = case.rsplit("-", 2)
        c = k["contiguous"]
        kinds = [x for x in ("contiguous", "balanced", "greedy", "glpk", "cbc")
                 if x in k]
        for kind in kinds:
            r = k[kind]
            o = r.outr
            method = r.affinity()[0] if kind in ("greedy", "glpk", "cbc") else ""
            rows.append([
                arch, routing, topo,
                {"greedy": "affinity greedy", "glpk": "affinity glpk",
                 "cbc": "affinity cbc"}.get(kind, kind),
                fmt(r.inr["balance"]), fmt(o["balance"]),
                fmt(r.inr["cross_gpu_fraction"]), fmt(o["cross_gpu_fraction"]),
                fmt(o["all_to_all_bytes_intra_node"] / 1e6, ".3f"),
                fmt(o["all_to_all_bytes_inter_node"] / 1e6, ".3f"),
                fmt(o["step_seconds"] * 1e6, ".2f"),
                fmt(r.expert_seconds * 1e6, ".3f"),
                fmt(o["step_seconds"] / c.outr["step_seconds"], ".3f"),
                fmt(r.wall, ".2f"), r.duplicates(), method or ""])
            check(r.duplicates() == 0, "models %s %s: no duplicate replicas"
                  % (case, kind))
        b = k["balanced"]
        check(b.inr["balance"] <= c.inr["balance"],
              "models %s: balanced %.4f <= contiguous %.4f (calibration)"
              % (case, b.inr["balance"], c.inr["balance"]))
        for kind in [x for x in ("greedy", "glpk", "cbc") if x in k]:
            f, fc = k[kind].inr["cross_gpu_fraction"], c.inr["cross_gpu_fraction"]
            check(f < fc, "models %s: affinity %s cross-GPU %.4f < contiguous "
                  "%.4f (calibration)" % (case, kind, f, fc))
    head = ["model", "routing", "GPUs", "policy", "balance calib",
            "balance held-out", "cross calib", "cross held-out",
            "a2a intra MB", "a2a inter MB", "step us", "expert us",
            "vs contiguous",
            "plan s", "dup.", "affinity method"]
    return ("### 3-layer synthetic models (planned on the calibration "
            "profile; a2a bytes and step time on the held-out profile)\n\n"
            + markdown(head, rows))


def gaps_table(runs, check):
    """Every affinity run with an ILP solver (chains and models): the
    cross-GPU fraction of contiguous and of the result, the gap of the
    staying weight to each bound and to the proven one (the least of them
    and the solver's), and where the proven bound came from."""
    rows = []
    for section in ("chains", "models"):
        for case, k in cases(runs, section).items():
            c = k["contiguous"]
            for solver in ("glpk", "cbc"):
                if solver not in k:
                    continue
                i = k[solver]
                stay, pair, eig, esec = i.bounds()
                method, isec = i.affinity()
                igap = i.proof()[1]
                gap = (lambda b: None if b is None or stay is None
                       else 100 * (b - stay) / stay)
                src = re.search(r"bound from the ([a-z ]+)\)", method or "")
                rows.append([section, case, solver,
                             fmt(c.inr["cross_gpu_fraction"]),
                             fmt(i.inr["cross_gpu_fraction"]),
                             fmt(gap(pair), ".2f"), fmt(gap(eig), ".2f"),
                             fmt(igap, ".2f"),
                             src[1] if src else ("optimal" if igap is not None
                                                 and igap <= 1e-9 else "-"),
                             fmt(isec, ".2f"), fmt(esec, ".2f")])
                if stay is not None and eig is not None:
                    check(eig >= stay - 1e-6 * max(stay, 1),
                          "%s %s: %s eigenvalue bound %.1f >= staying weight "
                          "%.1f" % (section, case, solver, eig, stay))
    if not rows:
        return None
    head = ["section", "case", "ILP", "cross contiguous", "cross affinity",
            "gap % layer pairs", "gap % eigenvalues", "gap %", "bound from",
            "ILP s", "eigenvalue s"]
    return ("### Proven gaps of affinity (staying weight against each "
            "upper bound)\n\n" + markdown(head, rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when a check fails")
    a = ap.parse_args()
    runs = []
    with open(a.runs) as f:
        for n, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 6:
                sys.exit("table.py: %s:%d: expected 6 tab-separated columns, "
                         "got %d" % (a.runs, n, len(cols)))
            runs.append(Run(*cols))
    if not runs:
        sys.exit("table.py: %s: no runs" % a.runs)
    check = Checks()
    for t in (zipf_table(runs, check), chains_table(runs, check),
              models_table(runs, check), gaps_table(runs, check)):
        if t:
            print(t + "\n")
    print("### Checks\n")
    print("\n".join(check.lines))
    print("%d of %d checks failed" % (check.failed, len(check.lines))
          if check.failed else "all %d checks passed" % len(check.lines))
    if a.check and check.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
