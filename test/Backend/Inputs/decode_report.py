#!/usr/bin/env python3
"""Static report of the decode path at given shapes (no GPU).

For each NAME: NAME.cu (moe-translate --moe-to-cuda of a shape-only model)
and the moe-nvrtc report of it (--report). Prints, per shape, for the
first layer with decode kernels:
  * launches per layer at T = 1 and T = 8, counted from the layer's launch
    list and each launch's gate (the `moe-contract` lines: the runtime's
    moe::launchRuns rule, minSlots <= T * slotsPerToken <= maxSlots);
  * for decode_up and decode_down: registers and stack frame (ptxas, via
    moe-nvrtc), resident blocks per SM from registers, threads and static
    shared memory (sm_90: 64K registers allocated per warp in units of 256,
    2048 threads, 32 blocks, 227 KB shared memory per SM), the grid at T = 1
    spread over --sms SMs, loads in flight per lane and bytes per load
    (moe_k::experts::decodeUpInFlight / decodeDownInFlight, evaluated by
    compiling the shape's configuration with the kernel headers on the
    host), and the bytes in flight per SM: loads x bytes x threads x
    min(resident blocks, grid blocks per SM at T = 1);
  * with a shared FFN: its work items at T = 1 and T = 64 (chunks x row
    groups of moe_k::experts::DecodeSharedRows tokens) next to all of the
    decode kernel's items (K active experts at T = 1, min(T * K, E) at
    T = 64), and the shared FFN's share of the T = 1 weight stream.
Exits 1 when a kernel spills, or when more than 3 kernels run per layer
at a T <= 8.

  decode_report.py --src MOE_SRC --dir DIR --report REPORT NAME...
"""
import argparse
import math
import os
import re
import subprocess
import sys
import tempfile

THREADS_PER_SM, MAX_BLOCKS_PER_SM = 2048, 32
REGISTERS_PER_SM, REGISTER_UNIT, MAX_WARPS = 65536, 256, 64
SHARED_PER_SM, SHARED_RESERVED = 227 * 1024, 1024


def nvrtc_kernels(report, name):
    """kernel -> (registers, stack, spill stores, spill loads, shared)."""
    kernels, inside = {}, False
    pattern = re.compile(r"^\s+(\S+)\s+(\d+) registers, (\d+) bytes stack "
                         r"frame, (\d+) bytes spill stores, (\d+) bytes "
                         r"spill loads, (\d+) bytes static shared")
    for line in open(report):
        m = re.match(r"^(\S+)\.cu: (\w+)", line)
        if m:
            inside = (os.path.basename(m.group(1)) == name and
                      m.group(2) == "sm_90a")
            continue
        m = pattern.match(line)
        if inside and m:
            kernels[m.group(1)] = tuple(int(v) for v in m.groups()[1:])
    return kernels


def contracts(text):
    out = {}
    for m in re.finditer(r"^// moe-contract: (\S+) (.*) slots=", text, re.M):
        out[m.group(1)] = {k: int(v) for k, v in
                           re.findall(r"(\w+)=(-?\d+)", m.group(2))}
    return out


def runs(c, tokens):
    slots = tokens * c["slots_per_token"]
    return c["min_slots"] <= slots and (c["max_slots"] < 0 or
                                        slots <= c["max_slots"])


def grid(c, tokens):
    rows = tokens * c["rows_per_token"]
    blocks = ((rows + c["tokens_per_block"] - 1) // c["tokens_per_block"] +
              c["extra_blocks"]) * c["grid_columns"]
    return max(1, min(blocks, c["max_blocks"]))


def resident_blocks(registers, threads, shared):
    warps = threads // 32
    per_warp = math.ceil(registers * 32 / REGISTER_UNIT) * REGISTER_UNIT
    by_registers = min(REGISTERS_PER_SM // per_warp, MAX_WARPS) // warps
    by_shared = SHARED_PER_SM // (shared + SHARED_RESERVED)
    return min(by_registers, THREADS_PER_SM // threads, MAX_BLOCKS_PER_SM,
               by_shared)


def in_flight(src, text, cfg):
    """(up loads, up bytes, down loads, down bytes, shared rows per item)
    from the kernel headers' constants, for the configuration namespace
    `cfg`."""
    begin = text.index("namespace %s {" % cfg)
    end = text.index("} // namespace %s" % cfg) + len("} // namespace " + cfg)
    program = (("#include \"moe_experts.cuh\"\n#include <cstdio>\n" +
                text[begin:end] + "\nint main() {\n"
               "  constexpr auto u = moe_k::experts::decodeUpInFlight<"
               "%s::Cfg, %s::Decode>();\n"
               "  constexpr auto d = moe_k::experts::decodeDownInFlight<"
               "%s::Cfg, %s::Decode>();\n"
               "  std::printf(\"%%d %%d %%d %%d %%d\\n\", u.loads, u.bytes, "
               "d.loads, d.bytes, moe_k::experts::DecodeSharedRows);\n}\n")
               % (cfg, cfg, cfg, cfg))
    with tempfile.TemporaryDirectory() as d:
        path, exe = os.path.join(d, "inflight.cpp"), os.path.join(d, "a.out")
        open(path, "w").write(program)
        subprocess.run(["g++", "-std=c++17", "-DMOE_EMU", "-w",
                        "-I", os.path.join(src, "runtime", "kernels"),
                        "-I", os.path.join(src, "runtime", "emu"),
                        "-I", os.path.join(src, "include"), path, "-o", exe,
                        "-lboost_context"], check=True)
        out = subprocess.run([exe], capture_output=True, text=True,
                             check=True).stdout
    return [int(v) for v in out.split()]


def shared_items(text, cfg, rows):
    """The shared FFN's decode work items against all items at T = 1 and
    64, from the configuration's sizes and chunks; None without one."""
    ns = text[text.index("namespace %s {" % cfg):
              text.index("} // namespace %s" % cfg)]
    if "HasShared = true" not in ns:
        return None

    def ffn(kind):
        body = ns[ns.index("struct %s {" % kind):]
        return {k: int(body.split("%s = " % k)[1].split(",")[0]
                       .split(";")[0]) for k in ("H", "I", "E")}
    routed, shared = ffn("Routed"), ffn("Shared")
    K = int(re.search(r"static constexpr int K = (\d+);", ns).group(1))
    d = {k: int(v) for k, v in re.findall(
        r"(UpUnits|DownCols|SharedUpUnits|SharedDownCols) = (\d+)", ns)}
    chunks = lambda n, c: (n + c - 1) // c  # noqa: E731
    parts = []
    for t in (1, 64):
        groups = chunks(t, rows)
        active = min(t * K, routed["E"])
        up = chunks(shared["I"], d["SharedUpUnits"]) * groups
        down = chunks(routed["H"], d["SharedDownCols"]) * groups
        up_all = up + active * chunks(routed["I"], d["UpUnits"])
        down_all = down + active * chunks(routed["H"], d["DownCols"])
        parts.append("T = %d: gate/up %d of %d items, down %d of %d" %
                     (t, up, up_all, down, down_all))
    share = shared["I"] / (shared["I"] + min(K, routed["E"]) * routed["I"])
    return ("%.1f %% of the T = 1 weights; %s; at most %d rows an item" %
            (100 * share, "; ".join(parts), rows))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--sms", type=int, default=132)
    p.add_argument("names", nargs="+")
    args = p.parse_args()
    failures = []
    print("shape kernel registers stack blocks/SM(occupancy) "
          "blocks/SM(T=1 grid) loads/lane bytes/load KB-in-flight/SM(T=1)")
    for name in args.names:
        text = open(os.path.join(args.dir, name + ".cu")).read()
        kernels = nvrtc_kernels(args.report, name)
        for k, (_, _, stores, loads, _) in sorted(kernels.items()):
            if stores or loads:
                failures.append("%s: %s spills" % (name, k))
        plan = contracts(text)
        layer = next(m.group(1).split(",") for m in
                     re.finditer(r"^// moe-layer: .* launches=(\S+)", text,
                                 re.M) if "_decode_up" in m.group(1))
        counts = {t: sum(runs(plan[k], t) for k in layer)
                  for t in range(1, 9)}
        for t, n in counts.items():
            if n > 3:
                failures.append("%s: %d launches per layer at T = %d" %
                                (name, n, t))
        up = next(k for k in layer if k.endswith("_decode_up"))
        cfg = up[:-len("_decode_up")] + "_cfg"
        flight = in_flight(args.src, text, cfg)
        for kernel, (n_loads, n_bytes) in ((up, flight[0:2]),
                                           (up[:-2] + "down", flight[2:4])):
            registers, stack, _, _, shared = kernels[kernel]
            threads = plan[kernel]["block_threads"]
            occupancy = resident_blocks(registers, threads, shared)
            per_sm = math.ceil(grid(plan[kernel], 1) / args.sms)
            blocks = min(occupancy, per_sm)
            kb = n_loads * n_bytes * threads * blocks / 1024
            print("%s %s %d %d %d %d %d %d %.1f" %
                  (name, kernel.split("_")[-2] + "_" + kernel.split("_")[-1],
                   registers, stack, occupancy, per_sm, n_loads, n_bytes,
                   kb))
        print("%s launches per layer: %d at T = 1, %d at T = 8" %
              (name, counts[1], counts[8]))
        shared = shared_items(text, cfg, flight[4])
        if shared:
            print(name + " shared FFN: " + shared)
    for f in failures:
        print("FAIL " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
