#!/usr/bin/env python3
"""check_sharing.py SUMMARY.txt LAYERS: the moe-compile summary in SUMMARY.txt
must show kernels shared by LAYERS identical MoE layers: the distinct kernel
count times LAYERS equals the launch sites, with more than one layer's worth
of sites, and kernels.cu of the package (next argument, optional) defines
each distinct kernel once."""
import re
import sys

text = open(sys.argv[1]).read()
layers = int(sys.argv[2])
m = re.search(r"kernels: (\d+) distinct for (\d+) launch sites", text)
if not m:
    sys.exit("no 'kernels: N distinct for M launch sites' line in the summary")
distinct, sites = int(m.group(1)), int(m.group(2))
if sites != distinct * layers or layers < 2:
    sys.exit(f"{distinct} distinct kernels for {sites} launch sites: expected "
             f"every one of the {layers} identical layers to share them")
if len(sys.argv) > 3:
    source = open(sys.argv[3]).read()
    # extern "C" __global__ void [__launch_bounds__(...)] NAME(MoEKernelArgs
    entries = re.findall(r'extern "C" __global__ void '
                         r'(?:__launch_bounds__\([^)]*\) )?(\w+)\(MoEKernelArgs',
                         source)
    if len(entries) != distinct or len(set(entries)) != len(entries):
        sys.exit(f"kernels.cu defines {len(entries)} kernels "
                 f"({len(set(entries))} distinct names); expected {distinct}")
print(f"{distinct} kernels shared by {layers} layers ({sites} launch sites)")
