"""What the oracles of whole examples and chained layers (read_me.py,
chain_of_experts.py, rmoe.py) share, apart from layer_check.py's per-layer
comparisons: the token counts every case runs at, the example file itself
with its weights written beside it, `moe-run --all-layers` of a model, the
pre-norm of its chain, and the tally of one case (errors, worst errors per
run, tokens near a tie) with its report line.

Nothing here knows a routing method; each oracle keeps its formula.
"""
import os
import subprocess

import numpy as np

from hf_models import write_safetensors
from layer_check import compare_output, compare_routing

# Token counts of every case: decode, a few tokens, a tile, several tiles.
T_VALUES = (1, 7, 64, 300)


def token_batches(rng, hidden):
    """(T, x [T, hidden] float32) for each T of T_VALUES, drawn from `rng`."""
    for t in T_VALUES:
        yield t, rng.standard_normal((t, hidden)).astype(np.float32)


def rmsnorm(s):
    """The pre-norm moe-run --all-layers applies before each layer."""
    return s / np.sqrt(np.mean(s * s, axis=1, keepdims=True) + 1e-6)


def example_ir(src, example, weight_dir, needs, tensors):
    """The text of examples/`example` with its weight root pointed at
    `weight_dir`, where `tensors` (write_safetensors entries) are written as
    model.safetensors. Every string of `needs` must be in the example (the
    oracle's constants are its shapes); returns the path of the IR written
    to `weight_dir`."""
    with open(os.path.join(src, example)) as f:
        text = f.read()
    root = 'moe.weight_root = "."'
    for need in (root,) + tuple(needs):
        if need not in text:
            raise AssertionError("%s: expected %s (the oracle's constants)"
                                 % (example, need))
    write_safetensors(os.path.join(weight_dir, "model.safetensors"), tensors)
    path = os.path.join(weight_dir, os.path.basename(example))
    with open(path, "w") as f:
        f.write(text.replace(root, 'moe.weight_root = "%s"' % weight_dir))
    return path, text


def run_all_layers(bin_dir, model, inputs, d, backend, layers, outputs=1):
    """moe-run MODEL --all-layers --backend BACKEND: inputs is x [T, H] or
    a list (x, then the first layer's extra inputs); returns ([the
    `outputs` outputs], [(ids, weights) of each of `layers` layers])."""
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    prefix = os.path.join(d, "routing")
    cmd = [os.path.join(bin_dir, "moe-run") if bin_dir else "moe-run", model,
           "--all-layers", "--backend", backend, "--routing-out", prefix, "-q"]
    for n, a in enumerate(inputs):
        p = os.path.join(d, "in%d.npy" % n)
        np.save(p, a)
        cmd += ["--input", p]
    out = [os.path.join(d, "out%d.npy" % n) for n in range(outputs)]
    for p in out:
        cmd += ["--output", p]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("%s failed:\n%s" % (" ".join(cmd),
                                                 r.stderr[-2000:]))
    routing = [(np.load("%s.L%d.ids.npy" % (prefix, l)),
                np.load("%s.L%d.weights.npy" % (prefix, l)))
               for l in range(layers)]
    return [np.load(p) for p in out], routing


class Tally:
    """The errors of one case, the worst output and weight errors of each
    run, and the tokens skipped near a tie."""

    def __init__(self, runs):
        self.errors = []
        self.worst = {r: [0.0, 0.0] for r in runs}
        self.fragile = 0
        self.total = 0

    def tokens(self, fragile):
        """Counts a batch and its rows near a tie."""
        self.fragile += int(np.sum(fragile))
        self.total += len(fragile)

    def routing(self, run, label, ids, w, ref_ids, ref_w, skip, tol, keep=3):
        errs, worst = compare_routing(label, ids, w, ref_ids, ref_w, skip, tol)
        self.errors += errs[:keep]
        self.worst[run][1] = max(self.worst[run][1], worst)

    def output(self, run, label, y, ref_y, skip, tol):
        errs, err = compare_output(label, y, ref_y, skip, tol)
        self.errors += errs
        self.worst[run][0] = max(self.worst[run][0], err)

    def check_ties(self, what=""):
        """Too many tokens near a tie: the case would test little."""
        if self.fragile > max(2, 0.02 * self.total):
            self.errors.append("%s%d of %d tokens near a tie"
                               % (what, self.fragile, self.total))

    def runs_text(self):
        return ", ".join("%s y_err %.2g w_err %.2g" % (r, s[0], s[1])
                         for r, s in self.worst.items())

    def report(self, name, summary, limit=20):
        """Prints `ok`/`FAIL` `name`: `summary` and the first errors;
        returns whether the case passed."""
        print("%-4s %s: %s" % ("FAIL" if self.errors else "ok", name, summary))
        for e in self.errors[:limit]:
            print("  " + e)
        return not self.errors
