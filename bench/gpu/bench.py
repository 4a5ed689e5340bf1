#!/usr/bin/env python3
"""The GPU benchmark of moe-opt packages against Hugging Face transformers.

Run on the GPU machine by bench/gpu/run.sh (Python 3.12, PyTorch, transformers
v5, safetensors, numpy, one GPU):

    python3 bench/gpu/bench.py --prepared bench/gpu/prepared \
        --lib BUILD/api/libmoe_runtime.so --out RESULTS_DIR [--budget-s 330]
        [--shapes mixtral-8x7b,qwen3-30b-a3b] [--tokens 1,8,64]

What it does (the layout of the prepared folder is in bench/gpu/prepare.sh):

1. ceilings: device-to-device copy bandwidth and the bf16 matrix rate, measured
   in this run;
2. small packages (our synthetic models with weights): our cuda backend and
   the Hugging Face block loaded from the model's safetensors, each against
   the reference executor's outputs written on the development machine;
3. for each shape (a shape-only package of a real model's layer shape): builds
   the transformers MoE block on the GPU in bf16 with random weights, binds
   its tensors into the package (moe_model_bind_tensor), checks our layer
   against the block in float32 and bf16, then times ours, HF eager,
   torch.compile, a cuBLAS baseline and torch grouped_mm side by side, and
   reports each against the memory and matrix floors;
4. the old kernel path beside the new one, in the same worker on the same
   bound weights and inputs: each shape's package compiled with
   --gemm=mma (single-stage mma.sync k loop) beside the default
   (--gemm=pipelined, cp.async stages) at the token counts where the grouped
   kernels run, and old/new ratios ("compare" in the index);
5. quantized shapes (prepared/quant/index.json: DeepSeek-V3 FP8, gpt-oss
   MXFP4): random codes and scales bound on the GPU, ours timed, and the FP8
   shape's --moe-optimize="fp8-activations=true" package (FP8 tensor cores)
   beside the default (codes dequantized to bf16) and beside its own
   --gemm=mma twin (the single-stage FP8 k loop).

--dry-run lists what would be timed (packages, token counts, old/new
paths) from the prepared folder, without torch or a GPU.

Each stage runs in its own worker process (this file with --worker), so that
a crash, a sticky CUDA error or a hang loses that stage only; workers write
their results as they go (OUT/parts/*.json) and the parent assembles
OUT/results.json, OUT/table.md (full) and OUT/summary.md (short, also printed
last). Exit code 0 when everything ran and every correctness check passed.

Timing everywhere: CUDA events around back-to-back calls on one stream,
warm-up first, median over samples (the count adapts to the call's length
and a time bound), inputs rotated among several buffers (so that activations
do not come from L2; weights cannot be rotated), random data (never zeros).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

DEFAULT_TOKENS = [1, 8, 64, 512, 4096, 16384]
CORRECTNESS_TOKENS = [64, 1]
# A shape is correct when, against the float32 block, the median per-token
# relative error is below this and fewer than MAX_BAD_FRACTION of the tokens
# exceed BAD_TOKEN (a rare routing flip on a near-tie is possible in bf16).
MEDIAN_TOLERANCE = 1e-2
BAD_TOKEN = 0.05
MAX_BAD_FRACTION = 0.02
# Goals (recorded, never failed on).
GOAL_DECODE_BW = 0.85          # decode T <= 64, mixtral and qwen3
GOAL_PREFILL_MM = 0.60         # prefill T = 4096
GOAL_ROUTE_US = 10.0           # routing kernel, T <= 64
# Rotated activations should exceed the L2 cache (H100/H200: 50 MB).
ROTATE_BYTES = 128 << 20
MAX_ROTATE = 16
# Where the workers put tensors ("cpu" only in CPU tests of the glue code).
DEVICE = "cuda"
# The worker needs this much of its soft budget left to start torch.compile.
COMPILE_MIN_S = 20.0
# Ours is also replayed from a CUDA graph up to this token count (where the
# per-call CPU cost may exceed the GPU time).
GRAPH_MAX_TOKENS = 512

CASES = ["ours", "hf-eager", "compile", "cublas", "grouped_mm", "hf-grouped_mm"]
CASE_TITLES = {
    "ours": "ours",
    "hf-eager": "HF eager",
    "compile": "torch.compile",
    "cublas": "cuBLAS",
    "grouped_mm": "grouped_mm",
    "hf-grouped_mm": "HF grouped_mm",
}


# ===========================================================================
# Shared helpers (no torch)
# ===========================================================================

def now():
    return time.time()


def write_json(path, data):
    """Writes JSON atomically (a killed writer leaves the previous file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False, default=str)
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def error_text(e):
    """One line for the table: the exception type and its first line."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return "%s: %s" % (type(e).__name__, first[:300])


def parse_list(text, kind=str):
    if not text:
        return None
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


# ===========================================================================
# Parent: runs the workers, assembles the results
# ===========================================================================

def run_worker(args, kind, name, extra, timeout_s, log_path, part_path):
    """Runs `bench.py --worker kind` and returns its part (even a partial one
    when it was killed or crashed, with the reason added)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind,
           "--prepared", args.prepared, "--lib", args.lib, "--out", args.out,
           "--backend", args.backend, "--part", part_path] + extra
    if name:
        cmd += ["--name", name]
    if os.path.exists(part_path):
        os.remove(part_path)
    started = now()
    reason = None
    with open(log_path, "w") as log:
        log.write("$ %s\n" % " ".join(cmd))
        log.flush()
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=max(5.0, timeout_s))
            if proc.returncode != 0:
                reason = "worker exited with status %d" % proc.returncode
        except subprocess.TimeoutExpired:
            reason = "worker killed after %.0f s (budget)" % timeout_s
        except OSError as e:
            reason = "cannot start the worker: %s" % e
    part = read_json(part_path, None)
    if part is None:
        part = {"errors": []}
        reason = reason or "the worker wrote no results"
    if reason:
        part.setdefault("errors", []).append(reason + "; log: " + os.path.relpath(log_path, args.out)
                                             + ": " + log_tail(log_path))
    part["worker_s"] = round(now() - started, 1)
    return part


def log_tail(path, lines=3):
    try:
        with open(path, errors="replace") as f:
            text = [l.rstrip() for l in f.readlines() if l.strip()]
        return " | ".join(text[-lines:])[-600:]
    except OSError:
        return "(no log)"


def gpu_name_from_smi():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                              "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        return out.stdout.strip().splitlines()[0]
    except Exception:
        return "unknown"


def load_entries(args, errors):
    """(shapes, quantized shapes) of the prepared folder's index files,
    restricted to --shapes (a quantized shape by its own name or by the
    shape it quantizes, e.g. deepseek-v3 for deepseek-v3-fp8)."""
    out = []
    for sub, required in (("shapes", True), ("quant", False)):
        path = os.path.join(args.prepared, sub, "index.json")
        entries = read_json(path, None)
        if entries is None:
            if required or os.path.isdir(os.path.dirname(path)):
                errors.append("%s is missing or not JSON (run bench/gpu/prepare.sh)" % path)
            entries = []
        for e in entries:
            e["folder"] = sub
        out.append(entries)
    if args.shapes:
        known = set(e.get("name") for e in out[0] + out[1])
        unknown = sorted(set(args.shapes) - known)
        if unknown:
            errors.append("unknown shapes: %s" % ", ".join(unknown))
        wanted = set(args.shapes)
        out = [[e for e in entries if e.get("name") in wanted or
                e.get("name", "").rsplit("-", 1)[0] in wanted] for entries in out]
    return out[0], out[1]


def dry_run(args):
    """What a run would time, from the prepared folder (no torch, no GPU):
    one line per shape and per kernel-path comparison; 1 when a package
    that would be timed is missing."""
    errors = []
    shapes, quants = load_entries(args, errors)
    for kind, e in [("shape", s) for s in shapes] + [("quant", q) for q in quants]:
        base = os.path.join(args.prepared, e["folder"])
        tokens = args.tokens or e.get("tokens") or DEFAULT_TOKENS
        packages = [e["package"]] + [c[side]["package"] for c in e.get("compare") or []
                                     for side in ("new", "old")]
        for pkg in packages:
            if not os.path.isfile(os.path.join(base, pkg, "manifest.json")):
                errors.append("%s %s: package %s is missing" % (kind, e["name"], pkg))
        own = "ours"
        for c in e.get("compare") or []:
            for side in ("new", "old"):
                if c[side]["package"] == e["package"]:
                    own = "ours (%s)" % c[side]["label"]
        baselines = ("HF eager, torch.compile, cuBLAS, grouped_mm, HF grouped_mm"
                     if kind == "shape" else "none (random codes bound on the GPU)")
        print("%s %s: %s at T %s; baselines: %s" % (
            kind, e["name"], own, ",".join(map(str, tokens)), baselines))
        for c in e.get("compare") or []:
            at = [T for T in c["tokens"] if T in tokens]
            print("  %s: new %s (%s) vs old %s (%s) at T %s, ratio old/new" % (
                c["what"], c["new"]["label"], c["new"]["package"], c["old"]["label"],
                c["old"]["package"], ",".join(map(str, at)) or "none"))
    print("budget %.0f s: ceilings, small packages, then %d shapes and %d quantized shapes, "
          "each an equal share of what is left" % (args.budget_s, len(shapes), len(quants)))
    for e in errors:
        print("ERROR: " + e)
    return 1 if errors else 0


def parent_main(args):
    t0 = now()
    deadline = t0 + args.budget_s
    os.makedirs(args.out, exist_ok=True)
    for sub in ("parts", "logs"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    results = {
        "title": "moe-opt GPU benchmark",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "gpu_smi": gpu_name_from_smi(),
        "budget_s": args.budget_s,
        "prepared": os.path.abspath(args.prepared),
        "lib": os.path.abspath(args.lib),
        "errors": [],
        "ceilings": {},
        "small": {},
        "shapes": [],
    }

    def save():
        results["elapsed_s"] = round(now() - t0, 1)
        write_json(os.path.join(args.out, "results.json"), results)
        full, short = render_tables(results)
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write(full)
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write(short)

    def progress(msg):
        print("[%6.1f s] %s" % (now() - t0, msg), flush=True)

    def part_paths(tag):
        return (os.path.join(args.out, "logs", tag + ".log"),
                os.path.join(args.out, "parts", tag + ".json"))

    tokens_arg = ",".join(str(t) for t in args.tokens) if args.tokens else ""
    if not os.path.isfile(args.lib):
        results["errors"].append("libmoe_runtime.so not found: %s" % args.lib)

    # 1. Ceilings.
    progress("ceilings")
    log, part = part_paths("ceilings")
    results["ceilings"] = run_worker(args, "ceilings", None, [], min(120.0, deadline - now() + 30),
                                     log, part)
    save()
    progress("ceilings: copy %s GB/s, bf16 mm %s TFLOP/s" % (
        fmt(results["ceilings"].get("copy_GBps")), fmt(results["ceilings"].get("mm_TFLOPs"))))

    # 2. Small packages.
    small_index = os.path.join(args.prepared, "small", "index.json")
    if args.skip_small:
        results["small"] = {"skipped": "--skip-small"}
    elif not os.path.isfile(small_index):
        results["small"] = {"errors": ["%s is missing (run bench/gpu/prepare.sh)" % small_index]}
    else:
        progress("small packages")
        log, part = part_paths("small")
        results["small"] = run_worker(args, "small", None,
                                      ["--hard-deadline", str(deadline)],
                                      max(30.0, min(150.0, deadline - now() + 30)), log, part)
        save()
        progress("small packages: %s" % small_verdict(results["small"]))

    # 3. Shapes, then quantized shapes: each gets an equal share of what is left.
    shapes, quants = load_entries(args, results["errors"])
    items = [("shape", s) for s in shapes] + [("quant", q) for q in quants]
    results["quant"] = []
    for i, (kind, shape) in enumerate(items):
        name = shape.get("name", "shape%d" % i)
        into = results["shapes"] if kind == "shape" else results["quant"]
        left = deadline - now()
        if left <= 5:
            into.append({"name": name, "spec": shape,
                         "skipped": "budget of %.0f s exceeded before this shape" % args.budget_s})
            progress("%s %s: skipped (budget)" % (kind, name))
            save()
            continue
        share = left / (len(items) - i)
        progress("%s %s: start (soft share %.0f s, %.0f s left)" % (kind, name, share, left))
        log, part = part_paths(kind + "-" + name)
        extra = ["--soft-deadline", str(now() + share), "--hard-deadline", str(deadline)]
        if tokens_arg:
            extra += ["--tokens", tokens_arg]
        # Killed at twice its share at most (a hung kernel must not take the
        # other shapes' time), or at the end of the budget plus a margin.
        kill = min(deadline - now() + 45, 2 * share + 30)
        res = run_worker(args, kind, name, extra, kill, log, part)
        res.setdefault("name", name)
        res.setdefault("spec", shape)
        into.append(res)
        save()
        progress("%s %s: %s" % (kind, name, shape_verdict(res)))

    results["goals"] = evaluate_goals(results)
    results["ok"], results["failures"] = overall_verdict(results)
    save()
    try:
        with open(os.path.join(args.out, "summary.md")) as f:
            sys.stdout.write("\n" + f.read())
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        pass
    return 0 if results["ok"] else 1


# ===========================================================================
# Report: floors, speed-ups, goals, tables (no torch)
# ===========================================================================

def fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return "%.0f" % v
    return ("%." + str(digits) + "g") % v


def case_us(case):
    if isinstance(case, dict) and case.get("median_us") is not None:
        return case["median_us"]
    return None


def case_cell(case):
    """The table cell of one timed case: its time, or why it has none."""
    if not isinstance(case, dict):
        return "-"
    if case.get("median_us") is not None:
        return fmt(case["median_us"])
    if case.get("error"):
        return "ERROR: " + case["error"][:160].replace("|", "/")
    if case.get("skipped"):
        return "skipped (" + case["skipped"] + ")"
    return "-"


def floors(shape_res, T, ceilings):
    """(bytes, memory floor µs, flops, matrix floor µs) of a shape at T."""
    spec = shape_res.get("spec", {})
    b = shape_res.get("bytes") or {}
    H = int(spec.get("hidden", 0))
    I = int(spec.get("intermediate", 0))
    E = int(spec.get("experts", 0))
    k = int(spec.get("top_k", 0))
    Is = int(spec.get("shared_intermediate", 0) or 0)
    act = int(b.get("activation_bytes", 2))
    per_expert = b.get("per_expert") or 3 * H * I * 2
    other = b.get("other")
    if other is None:
        other = E * H * 2 + 3 * H * Is * 2
    case = (shape_res.get("cases") or {}).get(str(T)) or {}
    distinct = case.get("distinct_experts")
    if distinct is None and E > 0:
        distinct = E * (1.0 - (1.0 - float(k) / E) ** T)
    nbytes = (distinct or 0) * per_expert + other + 2 * T * H * act
    flops = 2.0 * T * k * 3 * H * I + 2.0 * T * 3 * H * Is + 2.0 * T * H * E
    bw = ceilings.get("copy_GBps")
    mm = ceilings.get("mm_TFLOPs")
    mem_us = nbytes / (bw * 1e9) * 1e6 if bw else None
    mm_us = flops / (mm * 1e12) * 1e6 if mm else None
    return nbytes, mem_us, flops, mm_us


def shape_rows(res, ceilings):
    """One dict per token count with every derived number of the table."""
    rows = []
    cases = res.get("cases") or {}
    for key in sorted(cases, key=lambda s: int(s)):
        T = int(key)
        c = cases[key]
        nbytes, mem_us, flops, mm_us = floors(res, T, ceilings)
        ours = case_us(c.get("ours"))
        row = {"T": T, "bytes": nbytes, "flops": flops, "mem_floor_us": mem_us,
               "mm_floor_us": mm_us, "ours_us": ours,
               "distinct": c.get("distinct_experts"),
               "pct_mem": 100.0 * mem_us / ours if ours and mem_us else None,
               "pct_mm": 100.0 * mm_us / ours if ours and mm_us else None,
               "check": c.get("check_vs_hf_bf16")}
        graph = case_us(c.get("ours-graph"))
        row["graph_us"] = graph
        row["pct_mem_graph"] = 100.0 * mem_us / graph if graph and mem_us else None
        for name in CASES[1:]:
            base = case_us(c.get(name))
            row[name + "_us"] = base
            row["x_" + name] = base / ours if base and ours else None
        row["paths"] = path_rows(res.get("spec") or {}, c, T)
        rows.append(row)
    return rows


def path_rows(spec, c, T):
    """One dict per comparison of the entry timed at T: the new and old
    paths' times and old / new (above 1: the new path is faster)."""
    out = []
    for cmp_ in spec.get("compare") or []:
        if T not in cmp_.get("tokens", []):
            continue
        new = case_us(c.get(path_case(spec, cmp_["new"])))
        old = case_us(c.get(path_case(spec, cmp_["old"])))
        out.append({"what": cmp_["what"], "new": cmp_["new"]["label"],
                    "old": cmp_["old"]["label"], "new_us": new, "old_us": old,
                    "old_over_new": old / new if old and new else None,
                    "new_cell": case_cell(c.get(path_case(spec, cmp_["new"]))),
                    "old_cell": case_cell(c.get(path_case(spec, cmp_["old"])))})
    return out


def paths_section(results):
    """The old and new kernel paths side by side (markdown lines)."""
    ceilings = results.get("ceilings") or {}
    lines = ["", "## New vs old kernel paths (same run, same weights and inputs)", "",
             "| shape | what | T | new | new µs | old | old µs | old / new |",
             "|---|---|---|---|---|---|---|---|"]
    count = 0
    for res in (results.get("shapes") or []) + (results.get("quant") or []):
        for r in shape_rows(res, ceilings):
            for p in r["paths"]:
                lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    res.get("name"), p["what"], r["T"], p["new"], p["new_cell"][:60], p["old"],
                    p["old_cell"][:60],
                    "x%.2f" % p["old_over_new"] if p["old_over_new"] else "-"))
                count += 1
    if not count:
        lines.append("| (nothing timed) | | | | | | | |")
    lines += ["", "Decode (T * K within the decode kernels' gate) has no old path to time: "
              "the combine is folded into decode_down (3 launches per layer at T <= 8) and "
              "the former 4-launch path no longer exists."]
    return lines


def evaluate_goals(results):
    """Goal lines: (goal, verdict, detail); verdicts PASS, MISS or n/a."""
    ceilings = results.get("ceilings") or {}
    goals = []
    decode, prefill, vs_compile, route = [], [], [], []
    for res in results.get("shapes", []):
        name = res.get("name", "?")
        rows = {r["T"]: r for r in shape_rows(res, ceilings)}
        for T, r in sorted(rows.items()):
            best = max(r["pct_mem"] or 0, r["pct_mem_graph"] or 0)
            if T <= 64 and any(s in name for s in ("mixtral", "qwen3")) and best:
                decode.append((name, T, best))
            if T == 4096 and r["pct_mm"] is not None:
                prefill.append((name, T, r["pct_mm"]))
            if r.get("x_compile") is not None:
                vs_compile.append((name, T, r["x_compile"]))
        for T, kernels in sorted((res.get("kernels") or {}).items(), key=lambda kv: int(kv[0])):
            us = sum(v.get("us_per_call", 0) for n, v in kernels.items() if "route" in n)
            if int(T) <= 64 and any("route" in n for n in kernels):
                route.append((name, int(T), us))

    def line(goal, items, good, show):
        if not items:
            goals.append({"goal": goal, "verdict": "n/a", "detail": "no measurement"})
            return
        misses = [i for i in items if not good(i)]
        detail = "; ".join(show(i) for i in (misses or items)[:12])
        goals.append({"goal": goal, "verdict": "MISS" if misses else "PASS",
                      "detail": ("misses: " if misses else "all: ") + detail})

    line("decode T<=64 >= %d%% of copy bandwidth (mixtral, qwen3; best of plain calls and "
         "CUDA-graph replay)" % (GOAL_DECODE_BW * 100),
         decode, lambda i: i[2] >= GOAL_DECODE_BW * 100,
         lambda i: "%s T=%d %.0f%%" % i)
    line("prefill T=4096 >= %d%% of the bf16 matrix rate" % (GOAL_PREFILL_MM * 100),
         prefill, lambda i: i[2] >= GOAL_PREFILL_MM * 100,
         lambda i: "%s %.0f%%" % (i[0], i[2]))
    line("faster than torch.compile everywhere", vs_compile, lambda i: i[2] > 1.0,
         lambda i: "%s T=%d x%.2f" % i)
    if route:
        line("routing kernel < %g us for T <= 64 (profiler, kernel time alone)" % GOAL_ROUTE_US,
             route, lambda i: i[2] < GOAL_ROUTE_US, lambda i: "%s T=%d %.1f us" % i)
    else:
        goals.append({"goal": "routing kernel < %g us for T <= 64" % GOAL_ROUTE_US,
                      "verdict": "n/a",
                      "detail": "not measurable through the C API (the layer time is route + "
                                "experts); the profiler gave no kernel times"})
    return goals


def small_verdict(small):
    checks = small.get("checks") or []
    bad = [c for c in checks if not c.get("pass")]
    errs = len(small.get("errors") or [])
    return "%d checks, %d failed, %d errors" % (len(checks), len(bad), errs)


def shape_verdict(res):
    if res.get("skipped"):
        return "skipped: " + res["skipped"]
    corr = res.get("correctness") or []
    judged = [c for c in corr if c.get("judged")]
    ok = judged and all(c.get("pass") for c in judged)
    timed = sum(1 for c in (res.get("cases") or {}).values() if case_us(c.get("ours")))
    # Quantized shapes run on random codes: nothing to judge them against.
    verdict = ("yes" if ok else "NO") if judged or not (res.get("spec") or {}).get("quant") \
        else "not judged (random codes)"
    return "correct: %s, ours timed at %d token counts, %d errors" % (
        verdict, timed, len(res.get("errors") or []))


def overall_verdict(results):
    """(ok, failures): everything ran and every correctness check passed."""
    failures = list(results.get("errors") or [])
    for e in (results.get("ceilings") or {}).get("errors") or []:
        failures.append("ceilings: " + e)
    small = results.get("small") or {}
    if not small.get("skipped"):
        failures += ["small: " + e for e in small.get("errors") or []]
        # One line per package and comparison: the failed (layer, T) and the first error.
        grouped = {}
        for c in small.get("checks") or []:
            if not c.get("pass"):
                g = grouped.setdefault((c.get("package"), c.get("what")), [[], None])
                g[0].append("L%s T=%s" % (c.get("layer"), c.get("T")))
                g[1] = g[1] or c.get("error")
        for (package, what), (cases, err) in grouped.items():
            failures.append("small %s, %s: not correct at %s%s" % (
                package, what, ", ".join(cases), " (%s)" % err[:160] if err else ""))
        if not small.get("checks"):
            failures.append("small: no check ran")
    for res in results.get("shapes", []) + (results.get("quant") or []):
        name = res.get("name")
        if res.get("skipped"):
            failures.append("%s: skipped (%s)" % (name, res["skipped"]))
            continue
        failures += ["%s: %s" % (name, e) for e in res.get("errors") or []]
        judged = [c for c in res.get("correctness") or [] if c.get("judged")]
        if not judged and not (res.get("spec") or {}).get("quant"):
            failures.append("%s: no correctness check ran" % name)
        for c in judged:
            if not c.get("pass"):
                failures.append("%s T=%s: ours vs %s not correct" % (name, c.get("T"), c.get("vs")))
        for T, c in (res.get("cases") or {}).items():
            o = c.get("ours") or {}
            if o.get("median_us") is None:
                failures.append("%s T=%s: ours not timed (%s)" % (
                    name, T, o.get("error") or o.get("skipped") or "no result"))
            for case, at in sorted(path_tokens(res.get("spec") or {}).items()):
                p = c.get(case) or {}
                if int(T) in at and p.get("median_us") is None:
                    failures.append("%s T=%s %s: not timed (%s)" % (
                        name, T, case, p.get("error") or p.get("skipped") or "no result"))
            for case in CASES[1:]:
                if (c.get(case) or {}).get("error"):
                    failures.append("%s T=%s %s: %s" % (name, T, case, c[case]["error"][:120]))
    if not results.get("shapes"):
        failures.append("no shape ran")
    return not failures, failures


def correctness_table(entries):
    lines = ["| T | ours vs | max rel err | token err median | p99 | tokens > 5% | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in entries:
        if c.get("error"):
            lines.append("| %s | %s | ERROR: %s | | | | FAIL |" % (c.get("T"), c.get("vs"),
                                                                  c["error"][:200]))
            continue
        verdict = ("pass" if c.get("pass") else "FAIL") if c.get("judged") else "(info)"
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            c.get("T"), c.get("vs"), fmt(c.get("max_rel")), fmt(c.get("median_token")),
            fmt(c.get("p99_token")), fmt(100.0 * c["frac_bad"], 2) + "%"
            if c.get("frac_bad") is not None else "-", verdict))
    return lines


def render_tables(results):
    """(full markdown, short markdown)."""
    ceilings = results.get("ceilings") or {}
    full, short = [], []
    head = "# %s, %s, %s" % (results.get("title"), results.get("date"),
                             ceilings.get("gpu") or results.get("gpu_smi"))
    full.append(head)
    short.append(head)
    versions = "torch %s (CUDA %s), transformers %s, Python %s" % (
        ceilings.get("torch"), ceilings.get("cuda"), ceilings.get("transformers"),
        ceilings.get("python"))
    ceil_line = ("ceilings measured in this run: device-to-device copy %s GB/s (read + written), "
                 "bf16 matrix product %s TFLOP/s (best of %s); L2 %s MB"
                 % (fmt(ceilings.get("copy_GBps")), fmt(ceilings.get("mm_TFLOPs")),
                    ", ".join(ceilings.get("mm_sizes") or []) or "-",
                    fmt((ceilings.get("l2_bytes") or 0) / 1e6)))
    full += ["", versions, "", ceil_line, "",
             "Budget %s s, elapsed %s s. Times are medians of CUDA-event samples over "
             "back-to-back calls with rotated inputs (µs per call)." % (
                 results.get("budget_s"), results.get("elapsed_s"))]
    short += [versions, ceil_line]
    for e in (ceilings.get("errors") or []):
        full.append("- ceilings ERROR: " + e)
    for e in results.get("errors") or []:
        full.append("- ERROR: " + e)
        short.append("- ERROR: " + e)

    # Small packages.
    small = results.get("small") or {}
    full += ["", "## Small packages (real weights) against the reference executor", ""]
    if small.get("skipped"):
        full.append("skipped: " + small["skipped"])
    else:
        full += ["| package | layer | T | what | max rel err | token err median | p99 | "
                 "tokens > 5% | verdict |", "|---|---|---|---|---|---|---|---|---|"]
        for c in small.get("checks") or []:
            if c.get("error"):
                full.append("| %s | %s | %s | %s | ERROR: %s | | | | FAIL |" % (
                    c.get("package"), c.get("layer"), c.get("T"), c.get("what"), c["error"][:200]))
                continue
            full.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                c.get("package"), c.get("layer"), c.get("T"), c.get("what"),
                fmt(c.get("max_rel")), fmt(c.get("median_token")), fmt(c.get("p99_token")),
                fmt(100.0 * c.get("frac_bad", 0), 2) + "%", "pass" if c.get("pass") else "FAIL"))
        for e in small.get("errors") or []:
            full.append("- ERROR: " + e)
        short.append("small packages: " + small_verdict(small))

    # Shapes, then quantized shapes (no baselines: random codes).
    entries = [(r, CASES[1:]) for r in results.get("shapes", [])] + [
        (r, []) for r in results.get("quant") or []]
    for res, baselines in entries:
        spec = res.get("spec") or {}
        title = "## %s (%s%s: H=%s, I=%s, E=%s, k=%s%s), layer %s" % (
            res.get("name"), spec.get("arch"),
            ", %s experts, random codes" % spec["quant"] if spec.get("quant") else "",
            spec.get("hidden"), spec.get("intermediate"),
            spec.get("experts"), spec.get("top_k"),
            ", shared I=%s" % spec.get("shared_intermediate") if spec.get("shared_intermediate")
            else "", spec.get("layer"))
        full += ["", title, ""]
        short += ["", title.replace("## ", "### ")]
        if res.get("skipped"):
            full.append("skipped: " + res["skipped"])
            short.append("skipped: " + res["skipped"])
            continue
        for e in res.get("errors") or []:
            full.append("- ERROR: " + e)
            short.append("- ERROR: " + e[:300])
        for n in res.get("notes") or []:
            full.append("- " + n)
        full += [""] + correctness_table(res.get("correctness") or []) + [""]
        short.append(shape_verdict(res))
        rows = shape_rows(res, ceilings)
        if not rows:
            continue
        hdr = ["T", "ours µs", "mem floor µs", "% mem", "mm floor µs", "% mm",
               "ours CUDA graph µs (% mem)", "experts touched"]
        hdr += ["%s µs (ours x)" % CASE_TITLES[c] for c in baselines]
        hdr += ["ours vs HF bf16"] if baselines else []
        full += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        sh = ["T", "ours µs", "% mem", "% mm", "graph µs (% mem)"] + [
            "x " + CASE_TITLES[c] for c in baselines[:4]]
        short += ["| " + " | ".join(sh) + " |", "|" + "---|" * len(sh)]
        cases = res.get("cases") or {}
        for r in rows:
            c = cases.get(str(r["T"])) or {}
            cells = [str(r["T"]), case_cell(c.get("ours")), fmt(r["mem_floor_us"]),
                     fmt(r["pct_mem"], 2), fmt(r["mm_floor_us"]), fmt(r["pct_mm"], 2),
                     case_cell(c.get("ours-graph")) + (" (%s)" % fmt(r["pct_mem_graph"], 2)
                                                       if r["pct_mem_graph"] else ""),
                     fmt(r["distinct"])]
            for name in baselines:
                cell = case_cell(c.get(name))
                if r.get("x_" + name) is not None:
                    cell += " (x%.2f)" % r["x_" + name]
                cells.append(cell)
            chk = r.get("check") or {}
            if baselines:
                cells.append(fmt(chk.get("median_token")) if chk else "-")
            full.append("| " + " | ".join(cells) + " |")
            scells = [str(r["T"]), case_cell(c.get("ours"))[:40], fmt(r["pct_mem"], 2),
                      fmt(r["pct_mm"], 2),
                      ("%s (%s)" % (fmt(r["graph_us"]), fmt(r["pct_mem_graph"], 2)))
                      if r["graph_us"] else case_cell(c.get("ours-graph"))[:20]]
            for name in baselines[:4]:
                x = r.get("x_" + name)
                cc = c.get(name) or {}
                scells.append("%.2f" % x if x is not None else
                              ("ERR" if cc.get("error") else ("skip" if cc.get("skipped") else "-")))
            short.append("| " + " | ".join(scells) + " |")
        comp = res.get("compile") or {}
        if comp:
            full.append("")
            full.append("torch.compile: %s; first calls (compile included): %s%s" % (
                comp.get("mode", "-"),
                ", ".join("T=%s %.1f s" % (t, s) for t, s in sorted(
                    (comp.get("first_call_s") or {}).items(), key=lambda kv: int(kv[0]))) or "-",
                "; ERROR: " + comp["error"] if comp.get("error") else ""))
        kernels = res.get("kernels") or {}
        if kernels:
            full.append("")
            full.append("Our kernels alone (torch.profiler, µs per layer call): " + "; ".join(
                "T=%s: %s" % (T, ", ".join("%s %.1f" % (n, v.get("us_per_call", 0))
                                          for n, v in sorted(ks.items())))
                for T, ks in sorted(kernels.items(), key=lambda kv: int(kv[0]))))
    paths = paths_section(results)
    full += paths
    short += paths
    notes = [
        "",
        "Notes:",
        "- memory floor = (distinct experts touched, counted from the routing of the first "
        "input buffer, else E*(1-(1-k/E)^T)) x bytes per expert + router and shared-expert "
        "bytes + x and y, over the measured copy bandwidth; matrix floor = (2*T*k*3*H*I + "
        "2*T*3*H*I_shared + 2*T*H*E) FLOPs over the measured bf16 matrix rate; % = floor / "
        "measured time.",
        "- cuBLAS and grouped_mm baselines: the expert GEMMs (and the shared expert) only, "
        "tokens already grouped by expert with the routing of the HF block computed outside "
        "the timed region; routing and combine are excluded. grouped_mm is "
        "torch.nn.functional.grouped_mm or torch._grouped_mm, one call per projection.",
        "- HF eager: the transformers block's forward with config._experts_implementation = "
        "'eager'; HF grouped_mm: the same block with 'grouped_mm'; torch.compile: the block "
        "compiled once per shape (dynamic shapes), compile time reported separately.",
        "- ours CUDA graph: the same layer calls (one per rotated input) captured in a CUDA graph "
        "and replayed, for T <= %d: the GPU time without the per-call CPU cost of ctypes and "
        "the runtime's launches (which back-to-back plain calls include)." % GRAPH_MAX_TOKENS,
        "- Inputs are rotated among several buffers (together over the L2 size where memory "
        "allows); weights cannot be rotated: at small shapes the experts touched may partly "
        "stay in L2 between calls.",
        "- correctness: per-token relative error = ||ours_t - ref_t||_2 / ||ref_t||_2; a shape "
        "is correct when, against the float32 block on the same bf16 weights, the median is "
        "< %g and fewer than %g%% of the tokens exceed %g%% (bf16 routing flips on near-ties "
        "are possible); the bf16 comparisons are for information." % (
            MEDIAN_TOLERANCE, MAX_BAD_FRACTION * 100, BAD_TOKEN * 100),
        "- new vs old kernel paths: the other package of the same layer (moe-compile "
        "--gemm=mma: single-stage mma.sync k loop; the default --gemm=pipelined: cp.async "
        "stages; fp8-activations=true: FP8 tensor cores, the default dequantizes FP8 codes "
        "to bf16) bound to the same device weights, timed right after ours at each T where "
        "the grouped kernels run, on the same rotated inputs; 'new vs old' correctness rows "
        "compare the two outputs (fp8-activations against the dequantizing path for "
        "information: its contract is a relative RMS error of 2^-4 against the reference; "
        "its pipelined and single-stage k loops judged).",
        "- quantized shapes: random FP8 / FP4 codes and scales bound on the GPU (no HF "
        "block or baseline); bytes per expert as stored; the matrix floor is at the bf16 "
        "rate (FP8 tensor cores peak at twice it).",
    ]
    full += notes
    goal_lines = ["", "## Goals (recorded, not failed on)", ""]
    for g in results.get("goals") or []:
        goal_lines.append("- %s: %s (%s)" % (g["verdict"], g["goal"], g["detail"]))
    full += goal_lines
    short += goal_lines
    if "ok" in results:
        verdict = ["", "RESULT: %s" % ("everything ran and every correctness check passed"
                                       if results["ok"] else "FAILED (%d problems)"
                                       % len(results.get("failures") or []))]
        for f in (results.get("failures") or [])[:25]:
            verdict.append("- " + f[:300])
        full += verdict
        short += verdict
    return "\n".join(full) + "\n", "\n".join(short) + "\n"


# ===========================================================================
# Worker: the torch side
# ===========================================================================

class Budget(object):
    """Soft deadline (optional cases stop) and hard deadline (everything stops)."""

    def __init__(self, soft, hard):
        self.soft = soft or float("inf")
        self.hard = hard or float("inf")

    def essential(self):
        return now() < self.hard

    def optional(self, predicted_s=0.0):
        return now() + predicted_s < min(self.soft, self.hard)

    def soft_left(self):
        return min(self.soft, self.hard) - now()


class Part(object):
    """A worker's results, written after every step."""

    def __init__(self, path, data):
        self.path = path
        self.data = data
        self.save()

    def save(self):
        write_json(self.path, self.data)


def torch_modules():
    import torch  # noqa: F401  (imported here: the parent never needs torch)
    return torch


def time_gpu(call, target_s=0.25, min_samples=5, max_samples=50, sample_ms=1.0):
    """Median time of call(i) (i: a running index for input rotation).

    Warm-up first (at least 2 calls, about 30 ms); then samples of `reps`
    back-to-back calls between two CUDA events, `reps` chosen so that a
    sample lasts about `sample_ms`; samples until `target_s` has passed
    (at least `min_samples`, at most `max_samples`). Returns µs per call."""
    import torch
    i = 0
    torch.cuda.synchronize()
    start = time.perf_counter()
    n = 0
    while n < 2 or (time.perf_counter() - start < 0.03 and n < 100):
        call(i)
        i += 1
        n += 1
        torch.cuda.synchronize()
    per_call = (time.perf_counter() - start) / n
    reps = max(1, min(2000, int(sample_ms / 1000.0 / max(per_call, 1e-7))))
    if per_call > 0.05:
        min_samples = min(min_samples, 3)
    samples = []
    begin = time.perf_counter()
    while len(samples) < max_samples:
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            call(i)
            i += 1
        e.record()
        e.synchronize()
        samples.append(s.elapsed_time(e) * 1000.0 / reps)
        if len(samples) >= min_samples and time.perf_counter() - begin > target_s:
            break
    samples.sort()
    return {"median_us": samples[len(samples) // 2], "min_us": samples[0],
            "p90_us": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
            "samples": len(samples), "reps": reps, "warmup_calls": n}


def predicted_cost(prev, T):
    """Seconds a timed case is expected to take, from the previous token
    count's per-call time (scaled linearly in T, an upper bound for these
    kernels); 1 s when nothing is known yet."""
    if not prev:
        return 1.0
    T0, us = prev
    per_call = us * 1e-6 * max(1.0, float(T) / T0)
    return 0.3 + 10 * per_call


# --- ceilings ---------------------------------------------------------------

def measure_copy(nbytes):
    """Device-to-device copy of `nbytes` (random bf16): bytes read + written
    per second."""
    import torch
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src).normal_()
    t = time_gpu(lambda i: dst.copy_(src), target_s=0.3)
    return {"GBps": 2.0 * src.numel() * 2 / (t["median_us"] * 1e-6) / 1e9,
            "median_us": t["median_us"], "samples": t["samples"]}


def measure_mm(M, N, K):
    """bf16 torch.mm [M, K] x [K, N], two random input pairs rotated."""
    import torch
    A = [torch.randn(M, K, dtype=torch.bfloat16, device="cuda") for _ in range(2)]
    B = [torch.randn(K, N, dtype=torch.bfloat16, device="cuda") for _ in range(2)]
    C = torch.empty(M, N, dtype=torch.bfloat16, device="cuda")
    t = time_gpu(lambda i: torch.mm(A[i % 2], B[i % 2], out=C), target_s=0.4)
    return {"TFLOPs": 2.0 * M * N * K / (t["median_us"] * 1e-6) / 1e12,
            "median_us": t["median_us"], "samples": t["samples"]}


def worker_ceilings(args, part):
    torch = torch_modules()
    d = part.data
    import platform
    d["python"] = platform.python_version()
    d["torch"] = torch.__version__
    d["cuda"] = torch.version.cuda
    try:
        import transformers
        d["transformers"] = transformers.__version__
    except Exception as e:
        d["transformers"] = "not importable: " + error_text(e)
    props = torch.cuda.get_device_properties(0)
    d["gpu"] = props.name
    d["sms"] = props.multi_processor_count
    d["memory_GB"] = round(props.total_memory / 1e9, 1)
    d["l2_bytes"] = getattr(props, "L2_cache_size", None)
    d["grouped_mm"] = ("torch.nn.functional.grouped_mm" if hasattr(torch.nn.functional, "grouped_mm")
                       else "torch._grouped_mm" if hasattr(torch, "_grouped_mm") else None)
    part.save()

    def best_of(kind, cases, measure, unit):
        """Runs measure(*case) for each (label, case); d[kind][label] is
        each result, the best value of `unit` is returned."""
        best = None
        d[kind] = {}
        for label, case in cases:
            try:
                r = measure(*case)
                d[kind][label] = r
                best = max(best or 0, r[unit])
            except Exception as e:
                d.setdefault("errors", []).append("%s %s: %s" % (kind, label, error_text(e)))
            torch.cuda.empty_cache()
        return best

    # Copy bandwidth: bytes read + written per second, best of two sizes.
    d["copy_GBps"] = best_of("copy", [("%d GiB" % g, (g << 30,)) for g in (1, 2)],
                             measure_copy, "GBps")
    part.save()
    # bf16 matrix rate: torch.mm, two input pairs rotated, best of sizes.
    sizes = ((8192, 8192, 8192), (16384, 16384, 8192))
    d["mm_TFLOPs"] = best_of("mm", [("%dx%dx%d" % mnk, mnk) for mnk in sizes],
                             measure_mm, "TFLOPs")
    d["mm_sizes"] = list(d["mm"])
    part.save()


# --- Hugging Face blocks ------------------------------------------------------

# model_type -> (module under transformers.models, block class)
BLOCK_CLASSES = {
    "mixtral": ("mixtral", "MixtralSparseMoeBlock"),
    "qwen3_moe": ("qwen3_moe", "Qwen3MoeSparseMoeBlock"),
    "qwen2_moe": ("qwen2_moe", "Qwen2MoeSparseMoeBlock"),
    "olmoe": ("olmoe", "OlmoeSparseMoeBlock"),
    "deepseek_v3": ("deepseek_v3", "DeepseekV3MoE"),
    "deepseek_v2": ("deepseek_v2", "DeepseekV2MoE"),
    "gpt_oss": ("gpt_oss", "GptOssMLP"),
    "llama4_text": ("llama4", "Llama4TextMoe"),
}


def make_config(model_type, cfg):
    """The transformers config of a config.json dict."""
    import transformers
    cfg = dict(cfg)
    cfg.pop("model_type", None)
    try:
        config = transformers.AutoConfig.for_model(model_type, **cfg)
    except Exception as first:
        try:
            from transformers import CONFIG_MAPPING
            config = CONFIG_MAPPING[model_type].from_dict(cfg)
        except Exception:
            raise first
    set_experts_implementation(config, "eager")
    return config


def set_experts_implementation(config, name):
    """config._experts_implementation (read by transformers v5's fused expert
    modules at every forward); False when this transformers has none."""
    try:
        config._experts_implementation = name
        return getattr(config, "_experts_implementation", None) == name
    except Exception:
        return False


def block_class(model_type):
    import importlib
    if model_type not in BLOCK_CLASSES:
        raise ValueError("no Hugging Face block known for model_type '%s'" % model_type)
    module, cls = BLOCK_CLASSES[model_type]
    mod = importlib.import_module("transformers.models.%s.modeling_%s" % (module, module))
    return getattr(mod, cls)


def device_context():
    """`with torch.device(DEVICE)`: tensors are created there directly
    (PyTorch >= 2.0; older ones create them on the CPU, moved after)."""
    import contextlib
    import torch
    ctx = torch.device(DEVICE)
    return ctx if hasattr(ctx, "__enter__") else contextlib.nullcontext()


def make_block(model_type, config, dtype):
    """The MoE block constructed directly on the GPU in `dtype` (the default
    dtype is set to it while the block is built, so that no float32 copy of
    large expert tensors is ever made)."""
    import torch
    cls = block_class(model_type)
    previous = torch.get_default_dtype()
    block = None
    try:
        torch.set_default_dtype(dtype)
        with device_context():
            block = cls(config)
    except Exception:
        block = None  # e.g. a default dtype torch refuses: build in float32
    finally:
        torch.set_default_dtype(previous)
    if block is None:
        with device_context():
            block = cls(config)
    block = block.to(device=DEVICE, dtype=dtype)
    block.eval()
    block.requires_grad_(False)
    return block


def init_block(block, model_type, seed):
    """Random values in every floating parameter and buffer (v5's fused
    expert parameters are torch.empty): weights N(0, 1/sqrt(fan_in)), 1-D
    tensors (router biases) N(0, 0.1), expert biases N(0, 0.02), DeepSeek's
    e_score_correction_bias N(0, 0.1) minus 0.75 for every expert e % 4 == 1
    (so that it changes the choice, and some choice scores are negative).
    Values are bf16-representable whatever the tensor's dtype, so that the
    package (in its manifest dtype) and the block hold the same numbers."""
    import torch
    g = torch.Generator(device=DEVICE)
    g.manual_seed(seed)
    named = list(block.named_parameters()) + list(block.named_buffers())
    done = set()
    for name, t in named:
        if id(t) in done or not t.is_floating_point():
            continue
        done.add(id(t))
        leaf = name.rsplit(".", 1)[-1]
        owner = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
        with torch.no_grad():
            if leaf == "e_score_correction_bias":
                t.normal_(0.0, 0.1, generator=g)
                t[1::4] -= 0.75
            elif t.dim() <= 1:
                t.normal_(0.0, 0.1, generator=g)
            elif "bias" in leaf:
                t.normal_(0.0, 0.02, generator=g)
            else:
                transposed = getattr(owner, "is_transposed", False) or (
                    model_type in ("gpt_oss", "llama4_text") and ".experts" in "." + name)
                fan_in = t.shape[-2] if transposed else t.shape[-1]
                t.normal_(0.0, 1.0 / math.sqrt(max(1, fan_in)), generator=g)
            if t.dtype != torch.bfloat16:
                t.copy_(t.to(torch.bfloat16).to(t.dtype))


def hf_forward(block, x2d):
    """The block on [T, H] (the blocks take [batch, seq, H]); the output
    tensor, whether the block returns a tensor or a tuple."""
    T, H = x2d.shape
    out = block(x2d.reshape(1, T, H))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.reshape(T, H)


def torch_dtype(name):
    import torch
    return {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16,
            "i32": torch.int32, "u32": torch.int32}[name]


def device_copy(t, mdtype):
    """(owner, pointer, nbytes): a contiguous copy of `t` in manifest dtype
    `mdtype`, 16-byte aligned, 16 zero bytes after it."""
    import torch
    from moe_runtime import DTYPE_BYTES
    nbytes = t.numel() * DTYPE_BYTES[mdtype]
    raw = torch.zeros(nbytes + 48, dtype=torch.uint8, device=DEVICE)
    offset = (-raw.data_ptr()) % 16
    view = raw[offset:offset + nbytes]
    typed = view.view(torch_dtype(mdtype)).view(tuple(t.shape))
    if mdtype == "u32":
        typed.copy_(t.to(torch.int64).bitwise_and(0xFFFFFFFF).to(torch.int32))
    else:
        typed.copy_(t)
    return raw, view.data_ptr(), nbytes


def stack_sources(tensors, shape):
    """A stacked manifest tensor from its per-name torch tensors, zero-padded
    to `shape` when ragged."""
    import torch
    if all(list(t.shape) == list(shape[1:]) for t in tensors):
        return torch.stack(tensors)
    out = torch.zeros(shape, dtype=tensors[0].dtype, device=tensors[0].device)
    for k, t in enumerate(tensors):
        if t.dim() != len(shape) - 1 or any(t.shape[d] > shape[d + 1] for d in range(t.dim())):
            raise ValueError("slice %d has shape %s, larger than the manifest's %s"
                             % (k, list(t.shape), shape[1:]))
        out[(k,) + tuple(slice(0, s) for s in t.shape)] = t
    return out


def tensor_key(tensor):
    """What makes two packages' manifest tensors the same weight: names,
    shape and dtype (the packages of one layer compiled with other options
    share their device copies)."""
    return (tuple(tensor.get("names") or []), tuple(int(d) for d in tensor["shape"]),
            tensor["dtype"])


def bind_block(model, block, layer, shared=None):
    """Binds the block's state_dict tensors into the package: each module key
    k supplies the manifest tensor whose name ends with "." + k (within model
    layer `layer`). Shapes must match exactly. Returns a report; raises when
    a shape-only tensor stays unbound or a shape differs. `shared` (a dict,
    tensor_key -> device copy) lets another package of the same layer bind
    the same device memory instead of a copy of its own."""
    from moe_runtime import match_manifest_tensors, tensor_nbytes
    sd = block.state_dict()
    matches = match_manifest_tensors(model.tensors, sd.keys(), layer)
    report = {"bound": 0, "bytes": 0, "sources": {}, "unbound": [], "other_layer": 0,
              "constant": 0, "keeps_package_data": []}
    keep = []
    for m in matches:
        if m.status == "constant":
            report["constant"] += 1
            continue
        if m.status == "other-layer":
            report["other_layer"] += 1
            continue
        if m.status == "missing":
            (report["unbound"] if m.shape_only else report["keeps_package_data"]).append(
                "%s (no HF key is a suffix of %s)" % (m.label(), m.missing[0]))
            continue
        key = tensor_key(m.tensor)
        if shared is not None and key in shared:
            owner, ptr, nbytes = shared[key]
        else:
            srcs = [sd[s] for s in m.sources]
            shape = [int(d) for d in m.tensor["shape"]]
            if m.tensor.get("stacked"):
                t = stack_sources(srcs, shape)
            else:
                t = srcs[0]
            if list(t.shape) != shape:
                raise ValueError("%s: the HF tensor %s has shape %s, the manifest %s"
                                 % (m.label(), m.sources[0], list(t.shape), shape))
            owner, ptr, nbytes = device_copy(t, m.tensor["dtype"])
            if shared is not None:
                shared[key] = (owner, ptr, nbytes)
        if nbytes != tensor_nbytes(m.tensor) or nbytes != int(m.tensor.get("bytes", nbytes)):
            raise ValueError("%s: %d bytes, the manifest says %s" % (
                m.label(), nbytes, m.tensor.get("bytes")))
        model.bind(m.index, ptr, nbytes, owner)
        keep.append(owner)
        report["bound"] += 1
        report["bytes"] += nbytes
        report["sources"][str(m.index)] = "%s <- %s (%s)" % (
            m.tensor["names"][0], m.sources[0], m.tensor["dtype"])
    if report["unbound"]:
        raise ValueError("shape-only tensors left unbound: " + "; ".join(report["unbound"]))
    if report["bound"] == 0:
        names = [n for t in model.tensors for n in (t.get("names") or [])][:6]
        raise ValueError("no manifest tensor of layer %s matched the HF block's keys %s "
                         "(manifest names: %s)" % (layer, sorted(sd.keys()), names))
    return report


def compare(ours, ref, judged, vs, T):
    """Max relative error and per-token relative errors of `ours` against `ref`."""
    import torch
    a = ours.float()
    b = ref.float()
    entry = {"T": T, "vs": vs, "judged": judged}
    if not torch.isfinite(a).all():
        entry.update({"pass": False, "error": "non-finite values in our output"})
        return entry
    diff = a - b
    max_rel = (diff.abs().max() / b.abs().max().clamp_min(1e-30)).item()
    tok = diff.norm(dim=1) / b.norm(dim=1).clamp_min(1e-30)
    tok_sorted = tok.sort().values
    n = tok_sorted.numel()
    median = tok_sorted[(n - 1) // 2].item() if n % 2 else 0.5 * (
        tok_sorted[n // 2 - 1] + tok_sorted[n // 2]).item()
    p99 = tok_sorted[min(n - 1, int(math.ceil(0.99 * n)) - 1)].item()
    frac = (tok > BAD_TOKEN).float().mean().item()
    entry.update({"max_rel": max_rel, "median_token": median, "p99_token": p99,
                  "frac_bad": frac,
                  "pass": bool(median < MEDIAN_TOLERANCE and frac < MAX_BAD_FRACTION)})
    return entry


def run_ours(model, layer, x):
    import torch
    y = torch.empty_like(x)
    model.run_device(layer, x.data_ptr(), y.data_ptr(), x.shape[0],
                     torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    return y


def rotated_inputs(T, H, dtype, seed):
    """Rotation buffers of random x [T, H] (normal, never zeros), enough of
    them to exceed ROTATE_BYTES together (at most MAX_ROTATE, at least 2)."""
    import torch
    per = T * H * 2
    count = int(max(2, min(MAX_ROTATE, math.ceil(ROTATE_BYTES / float(per)))))
    g = torch.Generator(device=DEVICE)
    g.manual_seed(seed)
    return [torch.randn(T, H, generator=g, device=DEVICE, dtype=torch.float32).to(dtype)
            for _ in range(count)]


def capture_routing(block, x2d):
    """(top-k indices [T, k], top-k weights [T, k], output [T, H]) of the HF
    block on x2d: a forward pre-hook on block.experts sees what the router
    chose (v5 blocks call experts(hidden, indices, weights))."""
    import torch
    seen = {}

    def hook(module, args, kwargs=None):
        kwargs = kwargs or {}
        idx = args[1] if len(args) > 1 else kwargs.get("top_k_index", kwargs.get("router_indices"))
        w = args[2] if len(args) > 2 else kwargs.get("top_k_weights", kwargs.get("routing_weights"))
        seen["idx"] = idx.detach().clone() if idx is not None else None
        seen["w"] = w.detach().clone() if w is not None else None

    experts = getattr(block, "experts", None)
    handle = None
    if experts is not None:
        try:
            handle = experts.register_forward_pre_hook(hook, with_kwargs=True)
        except TypeError:  # PyTorch < 2.0: positional arguments only
            handle = experts.register_forward_pre_hook(hook)
    try:
        y = hf_forward(block, x2d)
    finally:
        if handle is not None:
            handle.remove()
    idx = seen.get("idx")
    if idx is None or idx.dim() != 2 or idx.shape[0] != x2d.shape[0]:
        return None, None, y
    return idx.to(torch.int64), seen.get("w"), y


class ExpertGemms(object):
    """The routed (and shared) experts' GEMMs of an HF block, for the cuBLAS
    and grouped_mm baselines: tokens grouped by expert outside the timed
    region, then per expert (or one grouped call) gate_up, activation,
    down."""

    def __init__(self, block, model_type, idx, xs):
        import torch
        ex = block.experts
        if not hasattr(ex, "gate_up_proj") or not hasattr(ex, "down_proj"):
            raise ValueError("the HF experts are not in the fused layout (gate_up_proj, down_proj)")
        self.gu = ex.gate_up_proj
        self.dn = ex.down_proj
        self.gub = getattr(ex, "gate_up_proj_bias", None)
        self.dnb = getattr(ex, "down_proj_bias", None)
        self.transposed = bool(getattr(ex, "is_transposed", model_type in ("gpt_oss", "llama4_text")))
        self.gpt_oss = model_type == "gpt_oss"
        self.limit = float(getattr(ex, "limit", 7.0))
        self.alpha = float(getattr(ex, "alpha", 1.702))
        self.act = getattr(ex, "act_fn", torch.nn.functional.silu)
        E = self.gu.shape[0]
        T, k = idx.shape
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)
        token = (torch.arange(T * k, device=flat.device) // k)[order]
        counts = torch.bincount(flat, minlength=E)
        self.counts = counts.tolist()
        self.offs = torch.cumsum(counts, 0).to(torch.int32)
        self.active = []
        start = 0
        for e, n in enumerate(self.counts):
            if n:
                self.active.append((e, start, n))
            start += n
        self.xs = xs
        self.xg = [x[token].contiguous() for x in xs]
        expert_sorted = flat[order]
        self.bias_rows = None
        if self.gub is not None and self.dnb is not None:
            self.bias_rows = (self.gub[expert_sorted].contiguous(), self.dnb[expert_sorted].contiguous())
        width = self.dn.shape[-1] if self.transposed else self.dn.shape[-2]
        self.out = torch.empty(T * k, width, dtype=xs[0].dtype, device=xs[0].device)
        self.shared = None
        sh = getattr(block, "shared_experts", None) or getattr(block, "shared_expert", None)
        if sh is not None and all(hasattr(sh, n) for n in ("gate_proj", "up_proj", "down_proj")):
            self.shared = (sh.gate_proj.weight, sh.up_proj.weight, sh.down_proj.weight,
                           getattr(sh, "act_fn", torch.nn.functional.silu))

    def activation(self, h):
        import torch
        if self.gpt_oss:
            gate = h[..., ::2].clamp(max=self.limit)
            up = h[..., 1::2].clamp(min=-self.limit, max=self.limit)
            return (up + 1) * (gate * torch.sigmoid(gate * self.alpha))
        gate, up = h.chunk(2, dim=-1)
        return self.act(gate) * up

    def run_shared(self, x):
        if self.shared is None:
            return None
        wg, wu, wd, act = self.shared
        return (act(x @ wg.t()) * (x @ wu.t())) @ wd.t()

    def cublas(self, i):
        import torch
        xg = self.xg[i % len(self.xg)]
        for e, s, n in self.active:
            xe = xg[s:s + n]
            if self.transposed:
                h = torch.mm(xe, self.gu[e])
                if self.gub is not None:
                    h += self.gub[e]
                a = self.activation(h)
                o = torch.mm(a, self.dn[e], out=self.out[s:s + n])
                if self.dnb is not None:
                    o += self.dnb[e]
            else:
                h = torch.mm(xe, self.gu[e].t())
                torch.mm(self.activation(h), self.dn[e].t(), out=self.out[s:s + n])
        self.run_shared(self.xs[i % len(self.xs)])

    def grouped(self, i):
        import torch
        gmm = getattr(torch.nn.functional, "grouped_mm", None) or getattr(torch, "_grouped_mm")
        xg = self.xg[i % len(self.xg)]
        w1 = self.gu if self.transposed else self.gu.transpose(-2, -1)
        w2 = self.dn if self.transposed else self.dn.transpose(-2, -1)
        h = gmm(xg, w1, offs=self.offs)
        if self.bias_rows is not None:
            h = h + self.bias_rows[0]
        o = gmm(self.activation(h), w2, offs=self.offs)
        if self.bias_rows is not None:
            o = o + self.bias_rows[1]
        self.run_shared(self.xs[i % len(self.xs)])
        return o


def manifest_bytes(model, spec):
    """Bytes per routed expert and of everything else (router, shared
    experts), from the manifest: tensors named "....experts...." are the
    routed experts'."""
    E = int(spec.get("experts", 0))
    per, other = 0, 0
    for t in model.tensors:
        if t.get("constant"):
            continue
        names = t.get("names") or []
        nbytes = int(t.get("bytes", 0))
        if any(".experts." in "." + n for n in names) and E:
            per += nbytes / float(E)
        else:
            other += nbytes
    return per, other


def profile_kernels(call, kernel_names, calls=20):
    """{kernel: {"us_per_call", "launches_per_call"}} of our kernels by
    torch.profiler (CUPTI sees the runtime's driver launches too)."""
    import torch
    from torch.profiler import profile, ProfilerActivity
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            call(i)
        torch.cuda.synchronize()
    out = {}
    for evt in prof.key_averages():
        name = evt.key
        if name not in kernel_names:
            continue
        total = 0.0
        for attr in ("self_device_time_total", "device_time_total", "self_cuda_time_total",
                     "cuda_time_total"):
            v = getattr(evt, attr, None)
            if v:
                total = float(v)
                break
        out[name] = {"us_per_call": total / calls, "launches_per_call": evt.count / float(calls)}
    return out


def worker_shape(args, part, budget):
    torch = torch_modules()
    from moe_runtime import Model
    d = part.data
    shapes = read_json(os.path.join(args.prepared, "shapes", "index.json"), [])
    spec = next((s for s in shapes if s.get("name") == args.name), None)
    if spec is None:
        raise ValueError("shape %s is not in shapes/index.json" % args.name)
    d.update({"name": args.name, "spec": spec, "errors": [], "notes": [], "correctness": [],
              "cases": {}, "kernels": {}})
    tokens = args.tokens or spec.get("tokens") or DEFAULT_TOKENS
    base = os.path.join(args.prepared, "shapes")
    layer = int(spec.get("layer", 0))
    H = int(spec["hidden"])
    seed = 1234

    # Package, config, block, weights, binding.
    t = now()
    model = Model(os.path.join(base, spec["package"]), backend="cuda", device=0, lib=args.lib)
    if layer not in model.layers:
        raise ValueError("layer %d is not an MoE layer of the package; its MoE layers: %s"
                         % (layer, model.layers))
    if model.hidden(layer) != H:
        raise ValueError("the package's layer %d has width %d, index.json says %d"
                         % (layer, model.hidden(layer), H))
    act_dtype = torch_dtype(model.activation_type(layer))
    per_expert, other = manifest_bytes(model, spec)
    d["bytes"] = {"per_expert": per_expert, "other": other,
                  "activation_bytes": 2 if act_dtype != torch.float32 else 4}
    cfg = read_json(os.path.join(base, spec["config"]))
    if cfg is None:
        raise ValueError("cannot read %s" % os.path.join(base, spec["config"]))
    model_type = cfg.get("model_type") or spec.get("arch")
    config = make_config(model_type, cfg)
    d["setup"] = {"open_s": round(now() - t, 2)}
    t = now()
    block = make_block(model_type, config, torch.bfloat16)
    init_block(block, model_type, seed)
    torch.cuda.synchronize()
    d["setup"]["block_s"] = round(now() - t, 2)
    d["setup"]["block"] = type(block).__name__
    d["setup"]["parameters"] = {k: list(v.shape) for k, v in block.state_dict().items()}
    t = now()
    shared = {}
    with torch.no_grad():
        d["bind"] = bind_block(model, block, layer, shared)
        paths = open_paths(d, spec, base, args,
                           lambda m, block=block: bind_block(m, block, layer, shared))
    torch.cuda.synchronize()
    d["setup"]["bind_s"] = round(now() - t, 2)
    d["notes"].append("bound %d HF tensors (%.2f GB) into the shape-only package, %.1f s" % (
        d["bind"]["bound"], d["bind"]["bytes"] / 1e9, d["setup"]["bind_s"]))
    for label in d["bind"]["keeps_package_data"]:
        d["notes"].append("not bound, keeps the package's data: " + label)
    part.save()

    with torch.no_grad():
        shape_correctness(d, part, model, block, model_type, config, layer, H, act_dtype, seed)
        path_checks(d, part, model, paths, spec, layer, H, act_dtype, seed)
        shape_timings(d, part, model, paths, block, config, model_type, layer, H, act_dtype,
                      tokens, seed, budget)
    del block
    for m in paths.values():
        m.close()
    model.close()
    torch.cuda.empty_cache()


# --- old and new kernel paths ---------------------------------------------

def path_case(spec, side):
    """The case name of one side of a comparison: "ours" for the entry's own
    package, "ours[LABEL]" for another package of the same layer."""
    return "ours" if side["package"] == spec["package"] else "ours[%s]" % side["label"]


def path_tokens(spec):
    """{case: token counts} of the entry's other packages."""
    out = {}
    for c in spec.get("compare") or []:
        for side in ("new", "old"):
            case = path_case(spec, c[side])
            if case != "ours":
                out.setdefault(case, [])
                out[case] += [int(T) for T in c["tokens"] if int(T) not in out[case]]
    return out


def open_paths(d, spec, base, args, bind):
    """{case: Model}: the entry's other packages (moe-compile --gemm=mma,
    fp8-activations), each bound by bind(model) to the weights of the
    entry's own package (the same device memory)."""
    from moe_runtime import Model
    models = {}
    for c in spec.get("compare") or []:
        for side in ("new", "old"):
            case = path_case(spec, c[side])
            if case == "ours" or case in models:
                continue
            try:
                m = Model(os.path.join(base, c[side]["package"]), backend="cuda", device=0,
                          lib=args.lib)
                bind(m)
                models[case] = m
            except Exception as e:
                d["errors"].append("%s path %s (%s): %s" % (c["what"], c[side]["label"],
                                                            c[side]["package"], error_text(e)))
                traceback.print_exc()
    return models


def path_checks(d, part, model, paths, spec, layer, H, act_dtype, seed):
    """Each comparison's new path against its old one on the same input, at
    its first token count (grouped kernels): judged like the shapes, except
    fp8-activations (information: its error contract is relative RMS 2^-4
    against the reference, docs/codegen.md)."""
    import torch
    for c in spec.get("compare") or []:
        cases = [path_case(spec, c[side]) for side in ("new", "old")]
        if any(k != "ours" and k not in paths for k in cases) or not c["tokens"]:
            continue
        T = int(c["tokens"][0])
        g = torch.Generator(device=DEVICE)
        g.manual_seed(seed + 3 * T)
        x = torch.randn(T, H, generator=g, device=DEVICE).to(act_dtype)
        vs = "%s vs %s" % (c["new"]["label"], c["old"]["label"])
        # fp8-activations against a path without it: for information.
        judged = ("fp8-activations" in c["new"]["label"]) == \
            ("fp8-activations" in c["old"]["label"])
        try:
            new, old = [run_ours(model if k == "ours" else paths[k], layer, x) for k in cases]
            d["correctness"].append(compare(new, old, judged, vs, T))
        except Exception as e:
            d["correctness"].append({"T": T, "vs": vs, "judged": judged, "pass": False,
                                     "error": error_text(e)})
        part.save()


# --- quantized shapes ----------------------------------------------------------

# RMS of the 254 finite E4M3 values: random codes times a scale of
# 1 / (E4M3_RMS * sqrt(fan_in)) give weights of about 1 / sqrt(fan_in).
E4M3_RMS = 100.06


def random_device_tensor(t, g):
    """(owner, pointer, nbytes): random contents for manifest tensor `t`
    (never zeros), 16-byte aligned on the device: FP8 E4M3 codes (NaN codes
    moved to their neighbours), FP4 pairs, E8M0 exponents 2^-8..2^-1 (as
    moe-bench --random-weights), f32 block scales ("*scale_inv") of
    U(0.5, 1.5) / (E4M3_RMS * sqrt(fan_in)), other matrices N(0,
    1/fan_in), vectors N(0, 0.1^2)."""
    import torch
    from moe_runtime import DTYPE_BYTES
    nbytes = int(t["bytes"])
    raw = torch.zeros(nbytes + 48, dtype=torch.uint8, device=DEVICE)
    offset = (-raw.data_ptr()) % 16
    view = raw[offset:offset + nbytes]
    dtype, shape = t["dtype"], [int(x) for x in t["shape"]]
    name = (t.get("names") or [""])[0]
    if dtype in ("f8E4M3FN", "f4E2M1FN"):
        view.copy_(torch.randint(0, 256, (nbytes,), generator=g, device=DEVICE,
                                 dtype=torch.uint8))
        if dtype == "f8E4M3FN":
            view.bitwise_xor_(((view & 0x7F) == 0x7F).to(torch.uint8))
    elif dtype == "f8E8M0FNU":
        view.copy_(119 + torch.randint(0, 8, (nbytes,), generator=g, device=DEVICE,
                                       dtype=torch.uint8))
    elif dtype in ("f32", "bf16", "f16"):
        count = nbytes // DTYPE_BYTES[dtype]
        if name.endswith("scale_inv"):
            fan_in = 128 * shape[-1]
            v = torch.rand(count, generator=g, device=DEVICE).add_(0.5).mul_(
                1.0 / (E4M3_RMS * math.sqrt(fan_in)))
        elif len(shape) >= 2:
            v = torch.randn(count, generator=g, device=DEVICE).mul_(1.0 / math.sqrt(shape[-1]))
        else:
            v = torch.randn(count, generator=g, device=DEVICE).mul_(0.1)
        view.view(torch_dtype(dtype)).copy_(v)
    elif dtype in ("i32", "u32"):
        view.view(torch.int32).copy_(torch.randint(0, 4, (nbytes // 4,), generator=g,
                                                   device=DEVICE, dtype=torch.int32))
    else:
        raise ValueError("%s: no random values for dtype %s" % (name, dtype))
    return raw, view.data_ptr(), nbytes


def bind_random(model, seed, shared):
    """Binds every tensor without data to random values (random_device_tensor;
    `shared` as in bind_block). Returns a report."""
    import torch
    from moe_runtime import is_shape_only
    g = torch.Generator(device=DEVICE)
    g.manual_seed(seed)
    report = {"bound": 0, "bytes": 0, "dtypes": {}}
    for t in model.tensors:
        if t.get("constant") or not is_shape_only(t):
            continue
        key = tensor_key(t)
        if key not in shared:
            shared[key] = random_device_tensor(t, g)
        owner, ptr, nbytes = shared[key]
        model.bind(t["index"], ptr, nbytes, owner)
        report["bound"] += 1
        report["bytes"] += nbytes
        report["dtypes"][t["dtype"]] = report["dtypes"].get(t["dtype"], 0) + 1
    return report


def worker_quant(args, part, budget):
    """A quantized shape: random codes and scales bound on the GPU (no
    transformers block reads these formats here), ours timed at every T and
    the other kernel paths of the entry beside it."""
    torch = torch_modules()
    from moe_runtime import Model
    d = part.data
    base = os.path.join(args.prepared, "quant")
    spec = next((s for s in read_json(os.path.join(base, "index.json"), [])
                 if s.get("name") == args.name), None)
    if spec is None:
        raise ValueError("quantized shape %s is not in quant/index.json" % args.name)
    d.update({"name": args.name, "spec": spec, "errors": [], "notes": [], "correctness": [],
              "cases": {}, "kernels": {}})
    tokens = args.tokens or spec.get("tokens") or DEFAULT_TOKENS
    layer, H, seed = int(spec["layer"]), int(spec["hidden"]), 4321
    t = now()
    model = Model(os.path.join(base, spec["package"]), backend="cuda", device=0, lib=args.lib)
    if layer not in model.layers or model.hidden(layer) != H:
        raise ValueError("layer %d of width %d is not an MoE layer of the package (layers %s)"
                         % (layer, H, model.layers))
    act_dtype = torch_dtype(model.activation_type(layer))
    per_expert, other = manifest_bytes(model, spec)
    d["bytes"] = {"per_expert": per_expert, "other": other,
                  "activation_bytes": 2 if act_dtype != torch.float32 else 4}
    shared = {}
    d["bind"] = bind_random(model, seed, shared)
    paths = open_paths(d, spec, base, args, lambda m: bind_random(m, seed, shared))
    torch.cuda.synchronize()
    d["setup"] = {"bind_s": round(now() - t, 2)}
    dtypes = ", ".join("%d %s" % (n, k) for k, n in sorted(d["bind"]["dtypes"].items()))
    d["notes"].append("random codes and scales bound on the GPU (%s), %.2f GB, %.1f s; "
                      "bytes per expert as stored (codes and scales)" % (
                          dtypes, d["bind"]["bytes"] / 1e9, d["setup"]["bind_s"]))
    part.save()
    with torch.no_grad():
        path_checks(d, part, model, paths, spec, layer, H, act_dtype, seed)
        time_ours(d, part, model, paths, spec, layer, H, act_dtype, tokens, seed, budget)
    for m in paths.values():
        m.close()
    model.close()
    torch.cuda.empty_cache()


def shape_correctness(d, part, model, block, model_type, config, layer, H, act_dtype, seed):
    """Ours against the block in float32 (judged) and in bf16 (information),
    at T = 64 and 1."""
    import torch
    ref32 = None
    try:
        need = 2 * sum(t.numel() * t.element_size() for t in block.state_dict().values())
        free = torch.cuda.mem_get_info()[0] if DEVICE == "cuda" else need + 1
        if free < need * 1.1:
            raise MemoryError("the float32 copy needs %.1f GB, %.1f GB are free"
                              % (need / 1e9, free / 1e9))
        ref32 = make_block(model_type, config, torch.float32)
        ref32.load_state_dict(block.state_dict(), strict=True)
    except Exception as e:
        d["errors"].append("float32 copy of the block: " + error_text(e))
        ref32 = None
    for T in CORRECTNESS_TOKENS:
        g = torch.Generator(device=DEVICE)
        g.manual_seed(seed + T)
        x = torch.randn(T, H, generator=g, device=DEVICE).to(act_dtype)
        try:
            ours = run_ours(model, layer, x)
        except Exception as e:
            d["correctness"].append({"T": T, "vs": "hf-f32", "judged": True, "pass": False,
                                     "error": "ours: " + error_text(e)})
            part.save()
            continue
        y16 = None
        try:
            set_experts_implementation(config, "eager")
            y16 = hf_forward(block, x)
            d["correctness"].append(compare(ours, y16, False, "hf-bf16", T))
        except Exception as e:
            d["correctness"].append({"T": T, "vs": "hf-bf16", "judged": False,
                                     "error": "HF bf16: " + error_text(e)})
        if ref32 is not None:
            try:
                y32 = hf_forward(ref32, x.float())
                d["correctness"].append(compare(ours, y32, True, "hf-f32", T))
                if y16 is not None:
                    e = compare(y16, y32, False, "(HF bf16 vs HF f32)", T)
                    d["correctness"].append(e)
            except Exception as e:
                d["correctness"].append({"T": T, "vs": "hf-f32", "judged": True, "pass": False,
                                         "error": "HF f32: " + error_text(e)})
        else:
            d["correctness"].append({"T": T, "vs": "hf-f32", "judged": True, "pass": False,
                                     "error": "no float32 block"})
        part.save()
    del ref32
    torch.cuda.empty_cache()


def time_case(d, part, T, name, fn, budget, prev, essential=False, **kw):
    """Times one case into d["cases"][T][name]; returns (T, µs) or prev."""
    case = d["cases"].setdefault(str(T), {})
    allowed = budget.essential() if essential else budget.optional(predicted_cost(prev, T))
    if not allowed:
        case[name] = {"skipped": "budget"}
        part.save()
        return prev
    try:
        case[name] = time_gpu(fn, **kw)
        prev = (T, case[name]["median_us"])
    except Exception as e:
        case[name] = {"error": error_text(e)}
        traceback.print_exc()
    part.save()
    return prev


def graph_case(model, layer, xs, y, T):
    """Ours replayed from a CUDA graph of len(xs) layer calls (one per
    rotated input): the GPU time without the per-call CPU cost (ctypes and
    the runtime's launches). Returns (call(i), calls per replay). The layer
    must have run at this T before (the runtime allocates its scratch
    buffers at the first run of a larger T, which a capture must not do)."""
    import torch
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        stream = torch.cuda.current_stream().cuda_stream
        for x in xs:
            model.run_device(layer, x.data_ptr(), y.data_ptr(), T, stream)
    torch.cuda.synchronize()
    return (lambda i: graph.replay()), len(xs), graph


def compile_cases(d, part, block, config, H, act_dtype, tokens, seed, budget):
    """torch.compile of the block, compiled once per shape (dynamic shapes):
    with transformers' grouped_mm experts when it has them (their compile
    path), else, or when that fails at its first call, the eager experts.
    The first call at each T (compile or recompile included) is reported
    apart. Returns the compiled module (or None)."""
    import torch
    comp = d.setdefault("compile", {})
    comp["first_call_s"] = {}
    modes = (["grouped_mm"] if set_experts_implementation(config, "grouped_mm") else []) + ["eager"]
    set_experts_implementation(config, "eager")
    order = [T for T in tokens if T != 1] + [T for T in tokens if T == 1]
    if budget.soft_left() < COMPILE_MIN_S:
        for T in tokens:
            d["cases"][str(T)]["compile"] = {"skipped": "budget"}
        return None
    compiled = None
    for mode in modes:
        set_experts_implementation(config, mode)
        comp["mode"] = "torch.compile(block, dynamic=True), experts implementation '%s'" % mode
        try:
            compiled = torch.compile(block, dynamic=True)
            # The first call compiles; a failure here moves on to the next mode.
            xs = rotated_inputs(order[0], H, act_dtype, seed + 7 * order[0])
            t = time.perf_counter()
            compiled(xs[0].reshape(1, order[0], H))
            torch.cuda.synchronize()
            comp["first_call_s"][str(order[0])] = time.perf_counter() - t
            del xs
            break
        except Exception as e:
            comp.setdefault("failed_modes", {})[mode] = error_text(e)
            traceback.print_exc()
            compiled = None
            if hasattr(torch, "_dynamo"):
                torch._dynamo.reset()  # forget the failed mode's graphs and guards
            if not budget.optional(COMPILE_MIN_S):
                break
    if compiled is None:
        comp["error"] = "; ".join("%s: %s" % kv for kv in (comp.get("failed_modes") or {}).items()) \
            or "skipped (budget)"
        for T in tokens:
            d["cases"][str(T)]["compile"] = {"error": comp["error"]}
        return None
    prev = None
    for T in order:
        case = d["cases"][str(T)]
        # A first call at a new T may recompile: allow for half the first compile.
        first = comp["first_call_s"].get(str(order[0]), 0.0)
        if str(T) not in comp["first_call_s"] and not budget.optional(
                max(5.0, 0.5 * first) + predicted_cost(prev, T)):
            case["compile"] = {"skipped": "budget"}
            continue
        xs3 = [x.reshape(1, T, H) for x in rotated_inputs(T, H, act_dtype, seed + 7 * T)]
        try:
            if str(T) not in comp["first_call_s"]:
                t = time.perf_counter()
                compiled(xs3[0])
                torch.cuda.synchronize()
                comp["first_call_s"][str(T)] = time.perf_counter() - t
        except Exception as e:
            case["compile"] = {"error": "first call: " + error_text(e)}
            traceback.print_exc()
            part.save()
            continue
        prev = time_case(d, part, T, "compile", lambda i, xs3=xs3: compiled(xs3[i % len(xs3)]),
                         budget, prev)
        del xs3
    return compiled


def time_ours(d, part, model, paths, spec, layer, H, act_dtype, tokens, seed, budget):
    """Ours at every T (essential; replayed from a CUDA graph up to
    GRAPH_MAX_TOKENS, our kernels alone at T <= 64), and each other kernel
    path of the entry (`paths`, {case: Model}) right after it at its token
    counts, on the same rotated inputs (essential: the old/new ratios are
    what the comparison is for). Returns the last (T, µs) of ours."""
    import torch
    stream = torch.cuda.current_stream().cuda_stream
    kernel_names = set(model.kernels)
    at = path_tokens(spec)
    prev = None
    for T in tokens:
        xs = rotated_inputs(T, H, act_dtype, seed + 7 * T)
        y = torch.empty_like(xs[0])

        def ours(i, xs=xs, y=y, T=T):
            model.run_device(layer, xs[i % len(xs)].data_ptr(), y.data_ptr(), T, stream)

        prev = time_case(d, part, T, "ours", ours, budget, prev, essential=True)
        d["cases"][str(T)]["rotated_buffers"] = len(xs)
        for case, other in paths.items():
            if T in at.get(case, []):
                def path(i, xs=xs, y=y, T=T, other=other):
                    other.run_device(layer, xs[i % len(xs)].data_ptr(), y.data_ptr(), T, stream)
                time_case(d, part, T, case, path, budget, None, essential=True)
        if T <= GRAPH_MAX_TOKENS and case_us(d["cases"][str(T)]["ours"]) and budget.optional(2.0):
            try:
                replay, per_replay, graph = graph_case(model, layer, xs, y, T)
                t = time_gpu(replay)
                for key in ("median_us", "min_us", "p90_us"):
                    t[key] /= per_replay
                t["calls_per_replay"] = per_replay
                d["cases"][str(T)]["ours-graph"] = t
                del graph
            except Exception as e:
                d["cases"][str(T)]["ours-graph"] = {"error": error_text(e)}
                traceback.print_exc()
        if T <= 64 and budget.optional(3.0):
            try:
                d["kernels"][str(T)] = profile_kernels(ours, kernel_names)
            except Exception as e:
                d["notes"].append("profiler at T=%d: %s" % (T, error_text(e)))
        del xs, y
        part.save()
    return prev


def shape_timings(d, part, model, paths, block, config, model_type, layer, H, act_dtype,
                  tokens, seed, budget):
    import torch

    # 1. Ours and its other kernel paths at every T.
    time_ours(d, part, model, paths, d["spec"], layer, H, act_dtype, tokens, seed, budget)

    # 2. cuBLAS and grouped_mm baselines on the HF block's routing; ours vs
    #    HF bf16 at every T (information).
    set_experts_implementation(config, "eager")
    prev_c = prev_g = None
    for T in tokens:
        if not budget.optional(predicted_cost(prev_c, T)):
            for n in ("cublas", "grouped_mm"):
                d["cases"][str(T)][n] = {"skipped": "budget"}
            continue
        xs = rotated_inputs(T, H, act_dtype, seed + 7 * T)
        case = d["cases"][str(T)]
        try:
            idx, w, y_hf = capture_routing(block, xs[0])
            if idx is not None:
                case["distinct_experts"] = int(torch.unique(idx).numel())
            try:
                case["check_vs_hf_bf16"] = compare(run_ours(model, layer, xs[0]), y_hf, False,
                                                   "hf-bf16", T)
            except Exception as e:
                case["check_vs_hf_bf16"] = {"error": error_text(e)}
            if idx is None:
                raise ValueError("could not capture the HF routing (no experts pre-hook)")
            gem = ExpertGemms(block, model_type, idx, xs)
        except Exception as e:
            for n in ("cublas", "grouped_mm"):
                case[n] = {"error": "setup: " + error_text(e)}
            part.save()
            continue
        prev_c = time_case(d, part, T, "cublas", gem.cublas, budget, prev_c)
        if hasattr(torch.nn.functional, "grouped_mm") or hasattr(torch, "_grouped_mm"):
            prev_g = time_case(d, part, T, "grouped_mm", gem.grouped, budget, prev_g)
        else:
            case["grouped_mm"] = {"skipped": "no grouped_mm in this PyTorch"}
        del gem, xs
        torch.cuda.empty_cache()
        part.save()

    # 3. HF eager.
    prev_e = None
    for T in tokens:
        xs = rotated_inputs(T, H, act_dtype, seed + 7 * T)
        xs3 = [x.reshape(1, T, H) for x in xs]
        prev_e = time_case(d, part, T, "hf-eager", lambda i, xs3=xs3: block(xs3[i % len(xs3)]),
                           budget, prev_e)
        del xs, xs3

    # 4. torch.compile of the block.
    compiled = compile_cases(d, part, block, config, H, act_dtype, tokens, seed, budget)
    part.save()

    # 5. The block with transformers' own grouped_mm experts (if any), eager.
    prev_h = None
    if set_experts_implementation(config, "grouped_mm"):
        for T in tokens:
            xs = rotated_inputs(T, H, act_dtype, seed + 7 * T)
            xs3 = [x.reshape(1, T, H) for x in xs]
            prev_h = time_case(d, part, T, "hf-grouped_mm",
                               lambda i, xs3=xs3: block(xs3[i % len(xs3)]), budget, prev_h)
            del xs, xs3
    set_experts_implementation(config, "eager")
    del compiled
    torch.cuda.empty_cache()


# --- small packages -----------------------------------------------------------

def load_checkpoint(model_dir):
    """{name: torch tensor on the GPU} of every *.safetensors in model_dir."""
    from safetensors.torch import load_file
    out = {}
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    if not files:
        raise ValueError("no .safetensors in %s" % model_dir)
    for f in files:
        out.update(load_file(os.path.join(model_dir, f), device=DEVICE))
    return out


def layer_state_dict(block, ckpt, layer):
    """The checkpoint's tensors of one block (model layer `layer`), with the
    block prefix ("model.layers.L.mlp.") stripped: found from the module's
    keys (each checkpoint name ends with "." + key)."""
    from moe_runtime import layer_of_name
    prefixes = set()
    for key in block.state_dict().keys():
        cands = [n for n in ckpt if n.endswith("." + key) and layer_of_name(n) == layer]
        cands = [n for n in cands if n[:-len(key)].rstrip(".").endswith(("mlp", "block_sparse_moe",
                                                                          "feed_forward"))] or cands
        if len(cands) == 1:
            prefixes.add(cands[0][:-len(key)])
    if len(prefixes) != 1:
        raise ValueError("cannot find one block prefix for layer %d in the checkpoint (found %s)"
                         % (layer, sorted(prefixes) or "none"))
    prefix = prefixes.pop()
    return prefix, {n[len(prefix):]: t for n, t in ckpt.items() if n.startswith(prefix)}


def worker_small(args, part, budget):
    torch = torch_modules()
    import numpy as np
    from moe_runtime import Model
    d = part.data
    d.update({"checks": [], "errors": []})
    base = os.path.join(args.prepared, "small")
    index = read_json(os.path.join(base, "index.json"), [])
    for entry in index:
        name = entry.get("name", entry.get("arch"))
        if not budget.essential():
            d["errors"].append("%s: skipped (budget)" % name)
            continue
        try:
            small_package(d, part, base, entry, np, torch, Model, args)
        except Exception as e:
            d["errors"].append("%s: %s" % (name, error_text(e)))
            traceback.print_exc()
        part.save()


def small_package(d, part, base, entry, np, torch, Model, args):
    name = entry.get("name", entry.get("arch"))
    check_dir = os.path.join(base, entry["check"])
    model_dir = os.path.join(base, entry["model"])
    hidden = int(entry["hidden"])
    model = Model(os.path.join(base, entry["package"]), backend=args.backend, device=0,
                  lib=args.lib)
    cfg = read_json(os.path.join(model_dir, "config.json"))
    hf = {}
    hf_error = None
    try:
        model_type = cfg.get("model_type") or entry.get("arch")
        config = make_config(model_type, cfg)
        ckpt = load_checkpoint(model_dir)
        for L in entry["layers"]:
            block = make_block(model_type, config, torch.float32)
            prefix, sd = layer_state_dict(block, ckpt, int(L))
            block.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
            hf[int(L)] = block
    except Exception as e:
        hf_error = error_text(e)
        traceback.print_exc()

    def entry_of(what, L, T, ours, ref):
        if ours is None:
            return None
        e = compare(torch.from_numpy(ours), torch.from_numpy(ref), True, what, T)
        e.update({"package": name, "layer": L, "what": what})
        return e

    ours_what = "ours (%s) vs reference" % model.backend
    for L in entry["layers"]:
        for T in entry["tokens"]:
            x = np.fromfile(os.path.join(check_dir, "x_%d.f32" % T), dtype=np.float32)
            y = np.fromfile(os.path.join(check_dir, "y_%d_%d.f32" % (L, T)), dtype=np.float32)
            x = x.reshape(T, hidden)
            y = y.reshape(T, hidden)
            try:
                d["checks"].append(entry_of(ours_what, L, T, model.run_host(L, x), y))
            except Exception as e:
                d["checks"].append({"package": name, "layer": L, "T": T, "pass": False,
                                    "what": ours_what, "error": error_text(e)})
            if hf_error or int(L) not in hf:
                d["checks"].append({"package": name, "layer": L, "T": T, "pass": False,
                                    "what": "HF f32 vs reference",
                                    "error": hf_error or "no HF block"})
            else:
                try:
                    with torch.no_grad():
                        set_experts_implementation(config, "eager")
                        yh = hf_forward(hf[int(L)], torch.from_numpy(x).to(DEVICE)).cpu().numpy()
                    d["checks"].append(entry_of("HF f32 vs reference", L, T, yh, y))
                except Exception as e:
                    d["checks"].append({"package": name, "layer": L, "T": T, "pass": False,
                                        "what": "HF f32 vs reference", "error": error_text(e)})
            part.save()
    model.close()
    del hf
    torch.cuda.empty_cache()


def worker_main(args):
    part = Part(args.part, {"kind": args.worker, "started": now(), "errors": []})
    budget = Budget(args.soft_deadline, args.hard_deadline)
    try:
        if args.worker == "ceilings":
            worker_ceilings(args, part)
        elif args.worker == "small":
            worker_small(args, part, budget)
        elif args.worker == "shape":
            worker_shape(args, part, budget)
        elif args.worker == "quant":
            worker_quant(args, part, budget)
        else:
            raise ValueError("unknown worker %s" % args.worker)
    except Exception as e:
        part.data.setdefault("errors", []).append(error_text(e))
        traceback.print_exc()
        part.save()
        return 1
    part.data["finished"] = now()
    part.save()
    return 0


# ===========================================================================

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", default=os.path.join(HERE, "prepared"),
                   help="the folder written by bench/gpu/prepare.sh")
    p.add_argument("--lib", default=os.environ.get("MOE_RUNTIME_LIB", ""),
                   help="libmoe_runtime.so (default: $MOE_RUNTIME_LIB)")
    p.add_argument("--out", default=None, help="results folder (default: bench/results/<date>)")
    p.add_argument("--budget-s", type=float, default=330.0,
                   help="stop starting new cases after this many seconds")
    p.add_argument("--shapes", type=parse_list, default=None, help="comma-separated shape names")
    p.add_argument("--tokens", type=lambda s: parse_list(s, int), default=None,
                   help="comma-separated token counts (default: each shape's)")
    p.add_argument("--skip-small", action="store_true", help="skip the small packages")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be timed (shapes, token counts, old/new kernel "
                        "paths) from the prepared folder; no torch, no GPU")
    p.add_argument("--backend", default="cuda",
                   help="our runtime's backend for the small packages (default cuda; emu "
                        "for a CPU test of that stage)")
    # Internal: one worker process.
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    p.add_argument("--soft-deadline", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--hard-deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(HERE, "..", "results", time.strftime("%Y-%m-%d-%H%M%S"))
    args.out = os.path.abspath(args.out)
    args.prepared = os.path.abspath(args.prepared)
    if args.lib:
        args.lib = os.path.abspath(args.lib)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main(args)
    if args.dry_run:
        return dry_run(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
