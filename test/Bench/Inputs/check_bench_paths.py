"""CPU checks of bench/gpu/bench.py's old/new kernel paths and random codes
(test/Bench/bench-paths.test), with bench.DEVICE = "cpu" and torch on the
CPU:

- random_device_tensor: every dtype of the quantized packages gets random,
  non-zero contents of the manifest's byte size, 16-byte aligned: E4M3
  codes without the NaN codes, E8M0 exponents 119..126, positive f32 block
  scales;
- bind_random: two packages of one layer bind the same memory for the same
  tensor (names, shape, dtype), so the old and new paths read one copy;
- path_tokens / path_case: the case names of the two sides of a comparison;
- the tables: old / new is the old path's time over the new one's, in the
  "New vs old kernel paths" section, and a path left untimed at one of its
  token counts is a failure of the run.
Prints one line per check; exits 1 at the first problem.
"""
import sys

sys.path.insert(0, sys.argv[1])
import bench  # noqa: E402
import torch  # noqa: E402

bench.DEVICE = "cpu"


def fail(message):
    print("FAILED: " + message)
    sys.exit(1)


def tensor(index, names, shape, dtype, nbytes):
    return {"index": index, "names": names, "shape": shape, "dtype": dtype,
            "bytes": nbytes, "stored": False, "constant": False}


class FakeModel(object):
    """What bind_random uses of moe_runtime.Model."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.bound = {}

    def bind(self, index, pointer, nbytes, keepalive=None):
        self.bound[index] = (pointer, nbytes, keepalive)


def check_random():
    g = torch.Generator(device="cpu")
    g.manual_seed(1)
    cases = [
        tensor(0, ["model.layers.1.mlp.experts.0.gate_proj.weight"], [4, 256, 128],
               "f8E4M3FN", 4 * 256 * 128),
        tensor(1, ["model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv"], [4, 2, 1],
               "f32", 4 * 2 * 4),
        tensor(2, ["model.layers.0.mlp.experts.gate_up_proj_blocks"], [4, 64, 32],
               "f4E2M1FN", 4 * 64 * 16),
        tensor(3, ["model.layers.0.mlp.experts.gate_up_proj_scales"], [4, 64, 1],
               "f8E8M0FNU", 4 * 64),
        tensor(4, ["model.layers.1.mlp.gate.weight"], [8, 128], "bf16", 8 * 128 * 2),
        tensor(5, ["model.layers.1.mlp.gate.e_score_correction_bias"], [8], "f32", 32),
    ]
    for t in cases:
        raw, ptr, nbytes = bench.random_device_tensor(t, g)
        if nbytes != t["bytes"] or ptr % 16:
            fail("%s: %d bytes at %#x" % (t["dtype"], nbytes, ptr))
        view = raw[ptr - raw.data_ptr():ptr - raw.data_ptr() + nbytes]
        if int(view.count_nonzero()) < nbytes // 4:
            fail("%s: mostly zeros" % t["dtype"])
        if t["dtype"] == "f8E4M3FN" and bool(((view & 0x7F) == 0x7F).any()):
            fail("an E4M3 NaN code")
        if t["dtype"] == "f8E8M0FNU" and not (int(view.min()) >= 119 and int(view.max()) <= 126):
            fail("E8M0 exponents %d..%d" % (int(view.min()), int(view.max())))
        if t["names"][0].endswith("scale_inv"):
            v = view.view(torch.float32)
            if not bool((v > 0).all()):
                fail("a block scale <= 0")
    print("random codes: %d dtypes, aligned, non-zero, no NaN codes, positive scales"
          % len(cases))


def check_shared_binding():
    same = tensor(0, ["model.layers.1.mlp.experts.0.up_proj.weight"], [2, 16, 32],
                  "f8E4M3FN", 2 * 16 * 32)
    other = tensor(1, ["model.layers.1.mlp.gate.weight"], [4, 32], "bf16", 256)
    new = FakeModel([dict(same), dict(other)])
    old = FakeModel([dict(same), dict(other, shape=[4, 16], bytes=128)])
    shared = {}
    bench.bind_random(new, 7, shared)
    bench.bind_random(old, 7, shared)
    if new.bound[0][0] != old.bound[0][0]:
        fail("the same tensor is bound to two copies")
    if new.bound[1][0] == old.bound[1][0]:
        fail("tensors of different shapes share memory")
    print("shared binding: one copy per tensor across packages")


SPEC = {"name": "mixtral-8x7b", "package": "mixtral-8x7b", "tokens": [1, 512, 4096],
        "hidden": 4096, "intermediate": 14336, "experts": 8, "top_k": 2,
        "compare": [{"what": "grouped GEMM k loop",
                     "new": {"label": "gemm=pipelined", "package": "mixtral-8x7b"},
                     "old": {"label": "gemm=mma", "package": "mixtral-8x7b.gemm-mma"},
                     "tokens": [512, 4096]}]}


def check_tables():
    if bench.path_tokens(SPEC) != {"ours[gemm=mma]": [512, 4096]}:
        fail("path_tokens: %s" % bench.path_tokens(SPEC))
    res = {"name": "mixtral-8x7b", "spec": SPEC, "errors": [],
           "correctness": [{"T": 64, "vs": "hf-f32", "judged": True, "pass": True}],
           "cases": {"1": {"ours": {"median_us": 10.0}},
                     "512": {"ours": {"median_us": 100.0},
                             "ours[gemm=mma]": {"median_us": 250.0}},
                     "4096": {"ours": {"median_us": 400.0},
                              "ours[gemm=mma]": {"skipped": "budget"}}}}
    results = {"ceilings": {"copy_GBps": 3000.0, "mm_TFLOPs": 700.0}, "shapes": [res],
               "quant": [], "small": {"skipped": "test"}}
    full, short = bench.render_tables(results)
    for text in (full, short):
        if "| mixtral-8x7b | grouped GEMM k loop | 512 | gemm=pipelined | 100 | gemm=mma " \
           "| 250 | x2.50 |" not in text:
            fail("no old/new row of x2.50 in:\n" + text)
        if "former 4-launch path no longer exists" not in text:
            fail("the decode note is missing")
    ok, failures = bench.overall_verdict(results)
    if ok or not any("T=4096 ours[gemm=mma]: not timed (budget)" in f for f in failures):
        fail("an untimed old path is not a failure: %s" % failures)
    print("tables: old/new x2.50 at T=512; the old path untimed at T=4096 fails the run")


check_random()
check_shared_binding()
check_tables()
print("bench paths ok")
