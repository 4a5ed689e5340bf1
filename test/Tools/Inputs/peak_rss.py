#!/usr/bin/env python3
"""Runs a command and checks its peak resident set against the largest tensor.

  peak_rss.py (--safetensors DIR | --package DIR) --bound-mib N [--name S]
              -- COMMAND...

After COMMAND has run, the largest tensor is read from the safetensors
headers of DIR (a model folder) or from DIR/manifest.json (a package). The
peak resident set of COMMAND (getrusage of the child, ru_maxrss: file pages
it had mapped count too) must stay at most N MiB above that tensor: tools
that stream a model tensor by tensor need about one tensor, whatever the
model's size. Prints one line; exits 1 when the bound is exceeded or the
command fails.
"""
import argparse
import glob
import json
import os
import struct
import subprocess
import sys


def largest_safetensors(folder):
    largest, name = 0, None
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        sys.exit("peak_rss.py: no *.safetensors in %s" % folder)
    for path in files:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            if end - begin > largest:
                largest, name = end - begin, key
    return largest, name


def largest_package(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    best = max(manifest["weights"]["tensors"], key=lambda t: t["bytes"])
    return best["bytes"], best["names"][0] if best["names"] else "<constant>"


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("peak_rss.py: give the command after --")
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--safetensors")
    where.add_argument("--package")
    parser.add_argument("--bound-mib", type=float, required=True)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    name = args.name or os.path.basename(command[0])

    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print("%s: the command failed (exit status %d)" % (name, code))
        return 1
    peak = usage.ru_maxrss * 1024  # Linux reports KiB.
    largest, tensor = (largest_safetensors(args.safetensors)
                       if args.safetensors else largest_package(args.package))
    mib = 1024.0 * 1024.0
    extra = (peak - largest) / mib
    ok = extra <= args.bound_mib
    print("%s: peak RSS %.1f MiB, largest tensor %.1f MiB (%s), %.1f MiB "
          "above it, bound %.0f MiB: %s"
          % (name, peak / mib, largest / mib, tensor, extra, args.bound_mib,
             "ok" if ok else "EXCEEDED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
