#!/usr/bin/env python3
"""Prints `name dtype shape` of every tensor of a safetensors file, sorted."""
import json
import struct
import sys

with open(sys.argv[1], "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
header.pop("__metadata__", None)
for name in sorted(header):
    print(name, header[name]["dtype"], header[name]["shape"])
