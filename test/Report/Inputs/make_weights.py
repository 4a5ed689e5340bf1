#!/usr/bin/env python3
"""Weights of original.mlir and its rewritten copies, and a held-out input.

  make_weights.py DIR

writes DIR/weights.safetensors (router [4, 8], gate/up [4, 4, 8], down
[4, 8, 4], seeded), DIR/scaled.safetensors (the same with expert 2's down
projection doubled), DIR/pruned.safetensors (expert 1 removed, router row
included), DIR/merged.safetensors (experts 0 and 2, 1 and 3 averaged, the
router unchanged) and DIR/x.npy (32 tokens of width 8).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "Oracle"))
from hf_models import write_safetensors  # noqa: E402

out = sys.argv[1]
rng = np.random.default_rng(12)
w = {
    "router": rng.standard_normal((4, 8)) * 0.8,
    "gate": rng.standard_normal((4, 4, 8)) / np.sqrt(8),
    "up": rng.standard_normal((4, 4, 8)) / np.sqrt(8),
    "down": rng.standard_normal((4, 8, 4)) / 2,
}


def save(name, tensors):
    write_safetensors(os.path.join(out, name),
                      {k: ("F32", np.asarray(v, np.float32))
                       for k, v in tensors.items()})


save("weights.safetensors", w)
scaled = dict(w)
scaled["down"] = w["down"].copy()
scaled["down"][2] *= 2.0
save("scaled.safetensors", scaled)
keep = [0, 2, 3]
save("pruned.safetensors", {k: v[keep] for k, v in w.items()})
# Slots 0, 2 -> merged expert 0 and 1, 3 -> 1: the router is unchanged.
merged = {k: np.stack([(w[k][0] + w[k][2]) / 2, (w[k][1] + w[k][3]) / 2])
          for k in ("gate", "up", "down")}
merged["router"] = w["router"]
save("merged.safetensors", merged)
np.save(os.path.join(out, "x.npy"),
        rng.standard_normal((32, 8)).astype(np.float32))
