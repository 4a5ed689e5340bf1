#!/usr/bin/env python3
"""Bounded mutation fuzzing of every file moe-opt's tools read.

  fuzz.py --bin BIN_DIR --work DIR [--cases N] [--seed S]
          [--surfaces safetensors,config,ir,manifest,npy] [--timeout SEC]

For each surface a valid input is made with the tools themselves (a small
synthetic model, its IR, a package, an input .npy), then N mutated copies
are fed to the tool that reads it. Each run is classified:

  clear error   exit 1 with an "error: " message (what we promise)
  accepted      exit 0 (the mutation was harmless or still valid)
  crash         killed by a signal, or a sanitizer report
  hang          still running after --timeout seconds
  unclear       any other exit (a failure without a message)

Prints one line per surface with the counts and exits 1 when any run
crashed, hung or failed unclearly, naming each such case and keeping its
input under DIR/failures/ so that it can be replayed. The mutations are
deterministic for a seed: CI runs a fixed number of cases with a fixed
seed; run it longer by hand with more --cases and other seeds.
"""
import argparse
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys

import numpy as np

INTERESTING_INTS = [0, 1, -1, 2, 7, 63, 64, 65, 255, 256, 4096, 65535,
                    2**31 - 1, 2**31, 2**32, 2**53, 2**62, 2**63 - 1,
                    -2**31, -2**63]
INTERESTING_FLOATS = [0.0, -0.0, 1e-45, 1e39, -1e39, 1e308, 3.4e38, -1.0,
                      0.5, 1e-30]


class Fuzzer:
    def __init__(self, args):
        self.bin = args.bin
        self.work = os.path.abspath(args.work)
        self.timeout = args.timeout
        self.rng = random.Random(args.seed)
        self.failures = []

    def tool(self, name):
        return os.path.join(self.bin, name)

    def run(self, argv, case, keep):
        """Runs argv; returns the class of the outcome."""
        try:
            p = subprocess.run(argv, capture_output=True, text=True,
                               errors="replace", timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return self.fail("hang", argv, case, keep, "")
        out = p.stdout + p.stderr
        if "Sanitizer" in out or "runtime error:" in out:
            return self.fail("crash", argv, case, keep, out)
        if p.returncode < 0 or p.returncode >= 128:
            return self.fail("crash", argv, case, keep, out)
        if p.returncode == 0:
            return "accepted"
        # Our tools say "<tool>: error: ..."; the MLIR drivers (moe-opt,
        # moe-translate) say "<file>:<line>:<col>: error: ...".
        if p.returncode == 1 and "error: " in out:
            return "clear error"
        return self.fail("unclear", argv, case, keep, out)

    def fail(self, kind, argv, case, keep, out):
        dest = os.path.join(self.work, "failures", case)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        if os.path.isdir(keep):
            shutil.copytree(keep, dest)
        else:
            os.makedirs(dest, exist_ok=True)
            shutil.copy(keep, dest)
        self.failures.append(f"{kind}: {case}: {' '.join(argv)}\n"
                             f"  (input kept in {dest})\n  "
                             + "\n  ".join(out.strip().splitlines()[-5:]))
        return kind

    # Mutations ---------------------------------------------------------

    def mutate_bytes(self, data, region=None):
        data = bytearray(data)
        lo, hi = region or (0, len(data))
        if hi <= lo:
            return bytes(data)
        for _ in range(self.rng.randint(1, 4)):
            op = self.rng.randrange(6)
            i = self.rng.randrange(lo, hi)
            if op == 0:
                data[i] ^= 1 << self.rng.randrange(8)
            elif op == 1:
                data[i] = self.rng.randrange(256)
            elif op == 2:
                data[i] = ord(self.rng.choice('[]{}",:0123456789-.e '))
            elif op == 3:
                del data[i]
                hi -= 1
            elif op == 4:
                data.insert(i, ord(self.rng.choice('[]{}"0-9')))
                hi += 1
            else:
                n = self.rng.randint(1, 16)
                data[i:i] = data[max(lo, i - n):i]
                hi += n
            hi = min(hi, len(data))
            if hi <= lo:
                break
        return bytes(data)

    def mutate_value(self, value):
        """A replacement for one JSON value."""
        choice = self.rng.randrange(8)
        if choice == 0:
            return self.rng.choice(INTERESTING_INTS)
        if choice == 1:
            return self.rng.choice(INTERESTING_FLOATS)
        if choice == 2:
            return None
        if choice == 3:
            return "x" * self.rng.randrange(3)
        if choice == 4:
            return [value, value]
        if choice == 5:
            return {"k": value}
        if choice == 6 and isinstance(value, (int, float)) and \
                not isinstance(value, bool):
            return value + self.rng.choice([-1, 1])
        return self.rng.choice([True, False, []])

    def mutate_json(self, obj):
        """Replaces, deletes or duplicates one value somewhere in obj."""
        obj = json.loads(json.dumps(obj))
        paths = []

        def walk(node, path):
            if isinstance(node, dict):
                for k, v in node.items():
                    paths.append(path + [k])
                    walk(v, path + [k])
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    paths.append(path + [i])
                    walk(v, path + [i])
        walk(obj, [])
        for _ in range(self.rng.randint(1, 3)):
            if not paths:
                break
            path = self.rng.choice(paths)
            parent = obj
            for p in path[:-1]:
                try:
                    parent = parent[p]
                except (KeyError, IndexError, TypeError):
                    parent = None
                    break
            if parent is None:
                continue
            key = path[-1]
            try:
                if self.rng.randrange(5) == 0 and isinstance(parent, dict):
                    del parent[key]
                else:
                    parent[key] = self.mutate_value(parent[key])
            except (KeyError, IndexError, TypeError):
                pass
        return obj

    # Surfaces ----------------------------------------------------------

    def prepare(self):
        base = os.path.join(self.work, "base")
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(base)
        self.model = os.path.join(base, "model")
        subprocess.run([self.tool("moe-import"), "--synthetic", "mixtral",
                        "--dtype", "bf16", "-o", self.model], check=True,
                       capture_output=True)
        self.ir = os.path.join(base, "model.mlir")
        subprocess.run([self.tool("moe-import"), self.model, "-o", self.ir],
                       check=True)
        self.opt_ir = os.path.join(base, "opt.mlir")
        subprocess.run([self.tool("moe-opt"), "--moe-optimize", self.ir,
                        "-o", self.opt_ir], check=True)
        self.package = os.path.join(base, "pkg")
        subprocess.run([self.tool("moe-compile"), self.model, "--arch",
                        "none", "--activation-type", "f32", "-o", self.package,
                        "-q"], check=True,
                       capture_output=True)
        self.x = os.path.join(base, "x.npy")
        np.save(self.x, np.linspace(-2, 2, 7 * 64, dtype=np.float32)
                .reshape(7, 64))

    def case_dir(self, surface, i):
        d = os.path.join(self.work, "cases", f"{surface}-{i}")
        if os.path.exists(d):
            shutil.rmtree(d)
        return d

    def fuzz_safetensors(self, i):
        d = self.case_dir("safetensors", i)
        shutil.copytree(self.model, d)
        path = os.path.join(d, "model.safetensors")
        data = open(path, "rb").read()
        n = struct.unpack("<Q", data[:8])[0]
        if self.rng.randrange(4) == 0:
            data = self.mutate_bytes(data, (0, 8))  # the length itself
        else:
            data = self.mutate_bytes(data, (8, 8 + n))
        open(path, "wb").write(data)
        return [self.tool("moe-import"), d, "-o", d + ".mlir"], d

    def fuzz_config(self, i):
        d = self.case_dir("config", i)
        shutil.copytree(self.model, d)
        path = os.path.join(d, "config.json")
        if self.rng.randrange(3) == 0:
            open(path, "wb").write(self.mutate_bytes(open(path, "rb").read()))
        else:
            cfg = json.load(open(path))
            json.dump(self.mutate_json(cfg), open(path, "w"))
        return [self.tool("moe-import"), d, "-o", d + ".mlir"], d

    def fuzz_ir(self, i):
        d = self.case_dir("ir", i)
        os.makedirs(d)
        text = open(self.opt_ir if i % 2 else self.ir).read()
        lines = text.splitlines()
        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
            k = self.rng.randrange(len(lines))
            op = self.rng.randrange(6)
            numbers = list(re.finditer(r"(?<![%#@\w])\d+", lines[k]))
            if op >= 4 and numbers:
                # A number in a type or an attribute: what verifiers check.
                m = self.rng.choice(numbers)
                value = self.rng.choice(INTERESTING_INTS + [
                    int(m.group()) + 1, max(0, int(m.group()) - 1)])
                lines[k] = lines[k][:m.start()] + str(abs(value)) + \
                    lines[k][m.end():]
                continue
            if op == 0:
                del lines[k]
            elif op == 1:
                lines.insert(k, lines[self.rng.randrange(len(lines))])
            else:
                words = lines[k].split(" ")
                j = self.rng.randrange(len(words))
                words[j] = self.rng.choice(
                    [str(self.rng.choice(INTERESTING_INTS)), "%arg0", "%0",
                     "tensor<?x64xf32>", "tensor<8x64xbf16>", "-1", "1e39",
                     "nan", "[", "{", "true"])
                lines[k] = " ".join(words)
        path = os.path.join(d, "in.mlir")
        # moe.weight_root is absolute: the weights are found from here.
        open(path, "w").write("\n".join(lines) + "\n")
        tool = self.rng.choice(["moe-opt", "moe-translate", "moe-run"])
        if tool == "moe-opt":
            argv = [self.tool(tool), "--moe-optimize", path, "-o",
                    os.path.join(d, "out.mlir")]
        elif tool == "moe-translate":
            argv = [self.tool(tool), "--moe-to-cuda", path, "-o",
                    os.path.join(d, "out.cu")]
        else:
            argv = [self.tool(tool), path, "--all-layers", "--input", self.x,
                    "--output", os.path.join(d, "y.npy")]
        return argv, d

    def fuzz_manifest(self, i):
        d = self.case_dir("manifest", i)
        shutil.copytree(self.package, d)
        path = os.path.join(d, "manifest.json")
        manifest = json.load(open(path))
        if self.rng.randrange(4) == 0:
            open(path, "wb").write(self.mutate_bytes(open(path, "rb").read()))
        else:
            json.dump(self.mutate_json(manifest), open(path, "w"))
        return [self.tool("moe-run"), d, "--all-layers", "--backend", "emu",
                "--input", self.x, "--output", os.path.join(d, "y.npy")], d

    def fuzz_npy(self, i):
        d = self.case_dir("npy", i)
        os.makedirs(d)
        path = os.path.join(d, "x.npy")
        data = open(self.x, "rb").read()
        header = 10 + struct.unpack("<H", data[8:10])[0]
        region = (0, header) if self.rng.randrange(3) else (0, len(data))
        open(path, "wb").write(self.mutate_bytes(data, region))
        return [self.tool("moe-run"), self.ir, "--layer", "0", "--input",
                path, "--output", os.path.join(d, "y.npy")], d


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--surfaces",
                        default="safetensors,config,ir,manifest,npy")
    args = parser.parse_args()
    f = Fuzzer(args)
    f.prepare()
    status = 0
    for surface in args.surfaces.split(","):
        counts = {}
        for i in range(args.cases):
            argv, keep = getattr(f, "fuzz_" + surface)(i)
            kind = f.run(argv, f"{surface}-{i}", keep)
            counts[kind] = counts.get(kind, 0) + 1
            shutil.rmtree(keep, ignore_errors=True)
        print(f"{surface}: {args.cases} cases: " + ", ".join(
            f"{counts.get(k, 0)} {k}" for k in
            ["clear error", "accepted", "crash", "hang", "unclear"]))
        sys.stdout.flush()
    for failure in f.failures:
        print(failure)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
