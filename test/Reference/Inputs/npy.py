#!/usr/bin/env python3
"""Writes or prints small .npy files for the reference-executor tests.

  npy.py write FILE DTYPE 'python literal'   e.g. write x.npy float32 '[[1, 2]]'
  npy.py print FILE                          one row per line, 6 decimals
"""
import sys

import numpy as np

if sys.argv[1] == "write":
    np.save(sys.argv[2], np.array(eval(sys.argv[4], {}),
                                  dtype=sys.argv[3]))
else:
    a = np.load(sys.argv[2])
    print(f"shape {list(a.shape)} {a.dtype}")
    for row in np.atleast_2d(a):
        print(" ".join(f"{v:.6f}" if a.dtype.kind == "f" else str(v)
                       for v in row))
