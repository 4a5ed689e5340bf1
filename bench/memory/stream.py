#!/usr/bin/env python3
"""Peak memory of importing and compiling large synthetic models (issue 15).

  python3 bench/memory/stream.py [--build DIR] [--sizes 3,12] [--work DIR]

For each size (GB of bf16 weights) writes a synthetic Mixtral-like model
with `moe-import --synthetic`, imports the folder to IR (`moe-import DIR -o
model.mlir`) and compiles it into a package (`moe-compile --arch none`),
and prints each tool's peak resident set (getrusage of the child,
ru_maxrss: mapped file pages count too) against the largest tensor it
handles: the model's largest safetensors tensor for the imports, the
package's largest (stacked) tensor for the compile. The tools stream
tensors, so the goal is a peak under the largest tensor + 1.2 GB whatever
the model's size. Not a timed test; the seconds are printed for reference.

It also compiles rank packages (`moe-compile --placement`, 4 GPUs, experts
placed round robin; against rank 0's largest tensor) and runs the reference
executor over every layer (`moe-run --backend reference --all-layers`, 4
tokens), whose peak is measured against one layer's weights in f32 (what
the interpreter holds while it runs a layer).

Sizes:  3: --layers 16 --hidden 1024 --intermediate 2048 --experts 16
           (3.2 GB, the case of issue 15)
       12: --layers 16 --hidden 2048 --intermediate 4096 --experts 16
           (12.9 GB)
--shapes-only writes shapes-only models instead (moe-import --shapes-only:
the same tensors, their zeros a hole of the files): no generation time and
no disk for the model, while moe-compile still reads, copies, hashes and
writes every byte; for machines where generating 12 GB takes too long (the
synthetic import is then measured without its generator).

Each model and its package are written under --work (default: a temporary
folder in $TMPDIR) and removed before the next size. When the free space
there cannot hold a model, its package and a margin, the script says so
and measures the largest number of layers that fits instead.
"""
import argparse
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    3: dict(layers=16, hidden=1024, intermediate=2048, experts=16),
    12: dict(layers=16, hidden=2048, intermediate=4096, experts=16),
}
GOAL_EXTRA = 1.2e9  # bytes above the largest tensor
MARGIN = 2 << 30  # free bytes left on the disk


def model_bytes(c):
    # Router [E, H] + E experts x 3 matrices of [I, H], bf16, per layer.
    per_layer = c["experts"] * c["hidden"] + \
        c["experts"] * 3 * c["intermediate"] * c["hidden"]
    return c["layers"] * per_layer * 2


def run(command):
    """(peak RSS bytes, seconds) of `command`; exits when it fails."""
    start = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit("stream.py: %s failed (exit status %d)" %
                 (" ".join(command), code))
    return usage.ru_maxrss * 1024, seconds


def largest_safetensors(folder):
    largest = 0
    for path in glob.glob(os.path.join(folder, "*.safetensors")):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, entry in header.items():
            if key != "__metadata__":
                begin, end = entry["data_offsets"]
                largest = max(largest, end - begin)
    return largest


def write_placement(path, c, gpus=4):
    """Experts round robin over `gpus` GPUs, every layer."""
    layer = lambda l: {"layer": l, "experts": c["experts"],
                       "slot_expert": list(range(c["experts"])),
                       "slot_gpu": [e * gpus // c["experts"]
                                    for e in range(c["experts"])]}
    with open(path, "w") as f:
        json.dump({"format": "moe-placement", "version": 1, "gpus": gpus,
                   "layers": [layer(l) for l in range(c["layers"])]}, f)


def largest_package(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        return max(t["bytes"] for t in json.load(f)["weights"]["tensors"])


def write_npy(path, rows, cols):
    """A float32 [rows, cols] .npy of small values (no numpy needed)."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" \
        % (rows, cols)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    values = [((i * 37) % 101 - 50) / 100.0 for i in range(rows * cols)]
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) +
                header.encode("latin1") +
                struct.pack("<%df" % len(values), *values))


def gib(n):
    """Sizes in MiB: the peaks are small next to the models."""
    return "%9.1f MiB" % (n / 2.0 ** 20)


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=os.path.join(root, "build"))
    parser.add_argument("--sizes", default="3,12",
                        help="comma-separated GB sizes among %s" %
                        sorted(CONFIGS))
    parser.add_argument("--shapes-only", action="store_true",
                        help="shapes-only models (see above)")
    parser.add_argument("--work", default=None,
                        help="folder for the models (removed afterwards "
                        "when the script made it)")
    args = parser.parse_args()
    binary = {t: os.path.join(args.build, "bin", t)
              for t in ("moe-import", "moe-compile", "moe-run")}
    for path in binary.values():
        if not os.access(path, os.X_OK):
            sys.exit("stream.py: %s not found (build first)" % path)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for s in sizes:
        if s not in CONFIGS:
            sys.exit("stream.py: unknown size %d (known: %s)" %
                     (s, sorted(CONFIGS)))

    made = args.work is None
    work = tempfile.mkdtemp(prefix="moe-stream-") if made else args.work
    os.makedirs(work, exist_ok=True)
    rows = []
    try:
        for size in sizes:
            config = dict(CONFIGS[size])
            free = shutil.disk_usage(work).free
            # The model (unless shapes only), its package (the same bytes)
            # and a margin.
            copies = 1 if args.shapes_only else 2
            need = lambda c: copies * model_bytes(c) + MARGIN
            if need(config) > free:
                wanted = model_bytes(config)
                while config["layers"] > 1 and need(config) > free:
                    config["layers"] -= 1
                if need(config) > free:
                    print("%d GB: does not fit in %s (%s free); skipped" %
                          (size, work, gib(free)))
                    continue
                print("%d GB (%s) does not fit in %s (%s free, %s needed): "
                      "measuring %d layers (%s) instead" %
                      (size, gib(wanted), work, gib(free),
                       gib(copies * wanted + MARGIN), config["layers"],
                       gib(model_bytes(config))))
            model = os.path.join(work, "model%d" % size)
            package = os.path.join(work, "pkg%d" % size)
            flags = ["--layers", str(config["layers"]), "--hidden",
                     str(config["hidden"]), "--intermediate",
                     str(config["intermediate"]), "--experts",
                     str(config["experts"])]
            print("%d GB: moe-import --synthetic mixtral %s%s" %
                  (size, " ".join(flags),
                   " --shapes-only" if args.shapes_only else ""), flush=True)
            try:
                imp = run([binary["moe-import"], "--synthetic", "mixtral"] +
                          flags + ["-q", "--force", "-o", model] +
                          (["--shapes-only"] if args.shapes_only else []))
                weights = sum(os.path.getsize(p) for p in glob.glob(
                    os.path.join(model, "*.safetensors")))
                largest = largest_safetensors(model)
                hf = run([binary["moe-import"], model, "-o",
                          os.path.join(work, "model.mlir")])
                print("%d GB: moe-compile --arch none" % size, flush=True)
                cmp = run([binary["moe-compile"], model, "--arch", "none",
                           "-q", "--force", "-o", package])
                largest_pkg = largest_package(package)
                shutil.rmtree(package, ignore_errors=True)
                print("%d GB: moe-compile --placement (4 ranks)" % size,
                      flush=True)
                placement = os.path.join(work, "placement.json")
                write_placement(placement, config)
                ranks = run([binary["moe-compile"], model, "--placement",
                             placement, "--arch", "none", "-q", "--force",
                             "-o", package])
                largest_rank = largest_package(os.path.join(package,
                                                            "rank0"))
                shutil.rmtree(package, ignore_errors=True)
                print("%d GB: moe-run --backend reference --all-layers" %
                      size, flush=True)
                x = os.path.join(work, "x.npy")
                write_npy(x, 4, config["hidden"])
                ref = run([binary["moe-run"], os.path.join(work,
                                                           "model.mlir"),
                           "--all-layers", "--backend", "reference",
                           "--input", x, "-o", os.path.join(work, "y.npy"),
                           "-q"])
                layer_f32 = 2 * model_bytes(config) // config["layers"]
            finally:
                shutil.rmtree(model, ignore_errors=True)
                shutil.rmtree(package, ignore_errors=True)
            for step, (peak, secs), big in (
                    ("moe-import --synthetic", imp, largest),
                    ("moe-import DIR -o IR", hf, largest),
                    ("moe-compile", cmp, largest_pkg),
                    ("moe-compile --placement", ranks, largest_rank),
                    ("moe-run reference", ref, layer_f32)):
                rows.append((size, weights, step, peak, big, secs))
                print("%d GB: %s: peak RSS %s, largest tensor %s, %.1f s" %
                      (size, step, gib(peak), gib(big), secs), flush=True)
    finally:
        if made:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("%-5s %-14s %-24s %-14s %-15s %-14s %-8s %s" %
          ("size", "weights", "step", "peak RSS", "largest tensor*",
           "extra", "seconds", "goal: extra < 1.2 GB"))
    met = True
    for size, weights, step, peak, big, secs in rows:
        ok = peak - big < GOAL_EXTRA
        met = met and ok
        print("%-5s %-14s %-24s %-14s %-15s %-14s %-8.1f %s" %
              ("%d GB" % size, gib(weights), step, gib(peak), gib(big),
               gib(peak - big), secs, "met" if ok else "NOT met"))
    print("* moe-run reference: one layer's weights in f32, what the "
          "interpreter holds while it runs the layer")
    return 0 if met and rows else 1


if __name__ == "__main__":
    sys.exit(main())
