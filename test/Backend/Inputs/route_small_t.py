# Compares the routings written by ../route-small-t.test: each token count's
# emulated ids against the reference executor's, and the small-T kernel's
# ids and weights (T = 1, 8) bit for bit against the same tokens' in the
# two-launch run (T = 9).
import sys

import numpy as np

d = sys.argv[1]
for m in ("m", "d"):
    full_ids = np.load("%s/%s.e9.ids.npy" % (d, m))
    full_w = np.load("%s/%s.e9.weights.npy" % (d, m))
    for n in (1, 8, 9):
        ids = np.load("%s/%s.e%d.ids.npy" % (d, m, n))
        w = np.load("%s/%s.e%d.weights.npy" % (d, m, n))
        ref = np.load("%s/%s.r%d.ids.npy" % (d, m, n))
        ref_w = np.load("%s/%s.r%d.weights.npy" % (d, m, n))
        if not (ids == ref).all():
            sys.exit("%s: T=%d ids differ from the reference:\n%s\n%s" % (m, n, ids, ref))
        if np.abs(w - ref_w).max() > 1e-5:
            sys.exit("%s: T=%d weights differ from the reference" % (m, n))
        line = "%s: T=%d ids match reference" % (m, n)
        if n < 9:
            if not (ids == full_ids[:n]).all() or w.tobytes() != full_w[:n].tobytes():
                sys.exit("%s: T=%d routing differs from the same tokens at T=9" % (m, n))
            line += ", bit-identical to T=9"
        print(line)
