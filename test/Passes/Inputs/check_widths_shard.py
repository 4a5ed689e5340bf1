#!/usr/bin/env python3
"""Checks that every rank IR of check_shard.py (DIR/rank*.mlir) keeps the
widths of its experts: widths == [16, 64, 40, 24][e] for e in
moe.rank.experts (Inputs/widths_model.py). Exits non-zero on a mismatch.

  check_widths_shard.py DIR
"""
import glob
import os
import re
import sys

WIDTHS = (16, 64, 40, 24)


def main():
    files = sorted(glob.glob(os.path.join(sys.argv[1], "rank[0-9].mlir")))
    if not files:
        sys.exit("no rank IR in %s" % sys.argv[1])
    for f in files:
        text = open(f).read()
        experts = re.search(r"moe\.rank\.experts = array<i64: ([^>]*)>", text)
        widths = re.search(r"moe\.expert_ffn .*widths = array<i64: ([^>]*)>",
                           text)
        if not experts or not widths:
            sys.exit("%s: no moe.rank.experts or widths" % f)
        local = [int(v) for v in experts.group(1).split(",")]
        got = [int(v) for v in widths.group(1).split(",")]
        want = [WIDTHS[e] for e in local]
        if got != want:
            sys.exit("%s: experts %s have widths %s, want %s"
                     % (f, local, got, want))
        print("ok: %s experts %s widths %s" % (os.path.basename(f), local, got))


if __name__ == "__main__":
    main()
