#!/usr/bin/env python3
"""Reads lit's xunit report and fails when a test group ran nothing.

A group is a top-level folder of test/. Each must have at least one passing
test, and a test may be UNSUPPORTED only when it requires the `cuda-gpu`
feature (a GPU is not on every machine; NVRTC and numpy are). Prints the
closing line 'N passed, N failed'.
"""
import os
import re
import sys
import xml.etree.ElementTree as ET


def main():
    report, test_root = sys.argv[1], sys.argv[2]
    tree = ET.parse(report)
    passed, failed, skipped = {}, {}, []
    for case in tree.iter("testcase"):
        cls = case.get("classname", "")
        name = case.get("name", "")
        # classname is "MOE.<group>/<...>" for lit tests.
        rel = cls.split(".", 1)[1] if "." in cls else cls
        group = re.split(r"[/.]", rel)[0] if rel else "?"
        if case.find("failure") is not None or case.find("error") is not None:
            failed[group] = failed.get(group, 0) + 1
        elif case.find("skipped") is not None:
            skipped.append((group, rel, name))
        else:
            passed[group] = passed.get(group, 0) + 1

    problems = []
    groups = sorted(d for d in os.listdir(test_root)
                    if os.path.isdir(os.path.join(test_root, d))
                    and d not in ("Inputs", "lib", "__pycache__"))
    for g in groups:
        if passed.get(g, 0) == 0:
            problems.append(f"test group '{g}' ran no passing test")
    gpu_units = set()
    listing = os.path.join(test_root, "unit", "gpu-only-tests.txt")
    if os.path.isfile(listing):
        for line in open(listing):
            line = line.strip()
            if line and not line.startswith("#"):
                gpu_units.add(line)
    for group, rel, name in skipped:
        if group == "unit":
            # classname "MOE.unit/<binary path>/<Suite>", name "<Test>".
            if rel.rsplit("/", 1)[-1] + "." + name in gpu_units:
                continue
            problems.append(f"unit test '{rel.rsplit('/', 1)[-1]}.{name}' "
                            "was skipped but is not listed in "
                            "test/unit/gpu-only-tests.txt")
            continue
        # classname "MOE.<dir>" + name "<file>" locate the test source.
        src = os.path.join(test_root, rel, name)
        text = open(src).read() if os.path.isfile(src) else ""
        requires = [line.split("REQUIRES:", 1)[1] for line in text.splitlines()
                    if "REQUIRES:" in line]
        if not any("cuda-gpu" in r for r in requires):
            problems.append(f"test '{rel}/{name}' was skipped (UNSUPPORTED) "
                            "on a machine that should run it")

    total_passed = sum(passed.values())
    total_failed = sum(failed.values())
    for p in problems:
        print("check-test-groups: " + p)
    gpu_skipped = len(skipped) - sum(1 for p in problems if "skipped" in p)
    print(f"groups: " + ", ".join(f"{g}={passed.get(g, 0)}" for g in groups))
    if gpu_skipped:
        print(f"({gpu_skipped} GPU test(s) need a cuda-gpu machine)")
    print(f"{total_passed} passed, {total_failed + len(problems)} failed")
    return 1 if (total_failed or problems) else 0


if __name__ == "__main__":
    sys.exit(main())
