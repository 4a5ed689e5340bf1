#!/usr/bin/env python3
"""close.py A.npy B.npy RTOL: exits 1 unless max|A-B| <= RTOL * max|A|."""
import sys

import numpy as np

a, b, rtol = np.load(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3])
if a.shape != b.shape:
    sys.exit(f"shapes differ: {a.shape} vs {b.shape}")
err = float(np.abs(a - b).max())
limit = rtol * float(np.abs(a).max())
if not err <= limit:
    sys.exit(f"max difference {err:.3g} exceeds {limit:.3g}")
print(f"max difference {err:.3g} (limit {limit:.3g})")
