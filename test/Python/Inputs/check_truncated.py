"""A package whose weights.bin is truncated while a model uses it (issue
15): the emulation's kernels used to read weights.bin through its mapping,
and the process died of SIGBUS. Now a layer loaded before the truncation
runs on its own read of the bytes and gives the same output, and a layer
loaded after it raises moe_opt.Error naming the file. Prints one line per
case (checked by truncated-package.test).

  check_truncated.py --work DIR
"""
import argparse
import os

import numpy as np

import moe_opt
from moe_py_common import expect_raises, make_package


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    args = p.parse_args()
    pkg_dir = make_package(args.work, "mixtral")
    bin_path = os.path.join(pkg_dir, "weights.bin")
    size = os.path.getsize(bin_path)
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)

    pkg = moe_opt.load(pkg_dir, backend="emu")
    before = pkg.layer(0)(x)
    os.truncate(bin_path, 0)
    after = pkg.layer(0)(x)
    assert np.array_equal(before, after), "the loaded layer changed"
    print("ok   layer 0, loaded before the truncation, runs and gives the "
          "same output")
    expect_raises("layer 1, loaded after it", moe_opt.Error,
                  lambda: pkg.layer(1)(x),
                  "%s: ends at 0 bytes, %d when the package was opened: it "
                  "was truncated or rewritten while in use" % (bin_path, size))
    print("all truncation cases passed")


if __name__ == "__main__":
    main()
