"""moe_opt_distributed's mechanics on the numpy stand-in (ep_standin.py,
TEST ONLY) over torch.distributed with gloo.

--nproc N: N spawned processes run ExpertParallelLayer on several token
splits (uneven, a rank with no tokens, no tokens at all), with and without
a shared expert, numpy and torch inputs; the gathered outputs must equal
the single-process layer (numpy oracle), each rank must send every token
once to each rank of its slots (and once to rank 0 with a shared expert),
the replicas of an expert must serve the tokens g mod c (g: the global
token index) and a never-chosen expert no token. A package without one
rank's folder: every rank raises, none waits.

--dist-backend nccl: the same with the collectives over NCCL (rank r on
GPU r; distributed-nccl.test).

--cli: the CLI (python3 -m moe_opt_distributed) on 2 processes, and its
and the class's errors on bad input.
"""
import argparse
import json
import os
import subprocess
import sys
import traceback

import numpy as np

import ep_standin as st

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL = 1e-5
LAYER = 3

# Placements: slots numbered GPU by GPU, replicas of experts 0 and 1 (and
# with 4 GPUs a third replica of expert 0); expert 5 is never chosen.
SLOTS = {
    1: [0, 1, 2, 3, 4, 5],
    2: [0, 1, 2, 3, 4, 5, 0, 1],
    4: [0, 1, 2, 3, 4, 5, 0, 1, 3, 0, 2, 4],
}
SPLITS = {
    2: [[9, 0], [3, 11], [0, 6]],
    4: [[5, 0, 3, 9], [2, 7, 0, 4], [0, 0, 6, 1]],
}
EXPERTS = 6


def setup(work, nproc, write=False):
    """Models, packages (written by the parent, once) and scenarios."""
    a = os.path.join(work, "a.npz")
    b = os.path.join(work, "b.npz")
    pa = os.path.join(work, f"a{nproc}.pkg")
    pb = os.path.join(work, f"b{nproc}.pkg")
    broken = os.path.join(work, f"broken{nproc}.pkg")
    if write:
        st.make_model(a, seed=1, shared=True)
        st.make_model(b, seed=2, shared=False)
        st.write_package(pa, a, nproc, SLOTS[nproc], EXPERTS)
        st.write_package(pb, b, nproc, SLOTS[nproc], EXPERTS)
        st.write_package(broken, a, nproc, SLOTS[nproc], EXPERTS,
                         skip_rank=nproc - 1)
    s1, s2, s3 = SPLITS[nproc]
    scen = [
        # name, model, package, split, shared_experts, torch input, seed
        ("shared expert", a, pa, s1, True, False, 0),
        ("no shared expert, shared_experts=False", b, pb, s2, False, False,
         1),
        ("no shared expert, shared_experts=True", b, pb, s2, True, False, 1),
        ("torch input", a, pa, s3, True, True, 2),
        ("no tokens", a, pa, [0] * nproc, True, False, 3),
        # The first scenario's tokens split otherwise: the same bits.
        ("shared expert, other split", a, pa, s1[::-1], True, False, 0),
    ]
    return scen, broken


def inputs(idx, total):
    rng = np.random.default_rng(100 + idx)
    return rng.standard_normal((total, 16)).astype(np.float32)


def worker(rank, work, nproc, backend="gloo"):
    import torch
    import torch.distributed as dist
    sys.path.insert(0, HERE)
    import moe_opt_distributed as md
    if backend == "nccl":
        torch.cuda.set_device(rank)
    import datetime
    # A bounded wait: a runner that leaves a rank in a collective fails the
    # test instead of hanging it.
    dist.init_process_group(backend, init_method="file://" +
                            os.path.join(work, f"rdv{nproc}"), rank=rank,
                            world_size=nproc,
                            timeout=datetime.timedelta(seconds=60))
    scen, broken = setup(work, nproc)
    out = {}
    for i, (name, model, pkg, split, shared, use_torch, seed) in \
            enumerate(scen):
        x = inputs(seed, sum(split))
        first = sum(split[:rank])
        mine = x[first:first + split[rank]]
        layer = md.ExpertParallelLayer(pkg, LAYER, backend="emu",
                                       package_factory=st.open_standin,
                                       shared_experts=shared)
        if use_torch:
            y = layer.forward(torch.from_numpy(mine))
            assert isinstance(y, torch.Tensor), type(y)
            y = y.numpy()
        else:
            y = layer.forward(mine)
        out[f"y{i}"] = y
        out[f"sent{i}"] = np.array(layer.last_rows_sent)
        out[f"served{i}"] = layer.package.served
        out[f"run{i}"] = np.array(layer.package.rows_run)
        out[f"foreign{i}"] = np.array(layer.package.foreign)
    try:
        md.ExpertParallelLayer(broken, LAYER, backend="emu",
                               package_factory=st.open_standin)
        err = "no error"
    except Exception as e:
        err = f"{type(e).__name__}: {e}"
    # The last rank's tokens have the wrong width: its route() fails.
    layer = md.ExpertParallelLayer(scen[0][2], LAYER, backend="emu",
                                   package_factory=st.open_standin)
    width = 15 if rank == nproc - 1 else 16
    try:
        layer.forward(np.zeros((2, width), np.float32))
        err += "\nno error"
    except Exception as e:
        err += f"\n{type(e).__name__}: {e}"
    with open(os.path.join(work, f"err{nproc}.{rank}.txt"), "w") as f:
        f.write(err)
    np.savez(os.path.join(work, f"out{nproc}.{rank}.npz"), **out)
    dist.barrier()
    dist.destroy_process_group()


def rel_err(ref, y):
    scale = max(float(np.abs(ref).max()), 1e-30) if ref.size else 1.0
    return float(np.abs(ref - y).max()) / scale if ref.size else 0.0


def expected_traffic(model, nproc, split, x, shared):
    """Rows each rank sends to each rank, and the rows each slot serves,
    from the replica rule (global index mod replicas, in slot order)."""
    slot_expert = SLOTS[nproc]
    per = len(slot_expert) // nproc
    ids, _ = st.route(model, x)
    sent = np.zeros((nproc, nproc), np.int64)
    served = np.zeros(len(slot_expert), np.int64)
    owner = np.repeat(np.arange(nproc), split)
    for g in range(len(x)):
        dests = set()
        for e in ids[g]:
            if e < 0:
                continue
            reps = [s for s, se in enumerate(slot_expert) if se == e]
            s = reps[g % len(reps)]
            served[s] += 1
            dests.add(s // per)
        if shared:
            dests.add(0)
        for d in dests:
            sent[owner[g], d] += 1
    return sent, served, ids


def run_library(work, nproc, backend):
    import moe_opt_distributed as md
    scen, broken = setup(work, nproc, write=True)
    failed = md.spawn_ranks(worker, nproc, (work, nproc, backend))
    if failed:
        print(f"FAIL rank(s) {failed} failed (traceback on stderr)")
        return False
    outs = [dict(np.load(os.path.join(work, f"out{nproc}.{r}.npz")))
            for r in range(nproc)]
    ok = True
    replicated = [e for e in range(EXPERTS) if SLOTS[nproc].count(e) > 1]
    for i, (name, model, pkg, split, shared, _, seed) in enumerate(scen):
        m = st.load_model(model)
        x = inputs(seed, sum(split))
        y = np.concatenate([o[f"y{i}"] for o in outs], axis=0)
        ref = st.full_layer(m, x)
        err = rel_err(ref, y)
        sent, served, ids = expected_traffic(m, nproc, split, x, shared)
        got_sent = np.stack([o[f"sent{i}"] for o in outs])
        got_served = sum(o[f"served{i}"] for o in outs)
        problems = []
        if y.shape != ref.shape or y.dtype != np.float32:
            problems.append(f"output {y.shape} {y.dtype}, expected "
                            f"{ref.shape} float32")
        elif err > RTOL:
            problems.append(f"relative error {err:.2e} > {RTOL}")
        if not (got_sent == sent).all():
            problems.append(f"rows sent {got_sent.tolist()}, expected "
                            f"{sent.tolist()}")
        if not (got_served == served).all():
            problems.append(f"rows per slot {got_served.tolist()}, expected "
                            f"{served.tolist()}")
        foreign = sum(int(o[f"foreign{i}"]) for o in outs)
        if foreign:
            problems.append(f"{foreign} slots of other ranks sent (expected "
                            "-1 in their place)")
        if shared and int(outs[0][f"run{i}"]) != len(x):
            problems.append(f"rank 0 ran {int(outs[0][f'run{i}'])} rows, "
                            f"expected every token once ({len(x)})")
        tag = f"{nproc} ranks, {name}, tokens {split}"
        if problems:
            ok = False
            print(f"FAIL {tag}: " + "; ".join(problems))
        else:
            used = sorted(set(int(e) for e in ids.ravel() if e >= 0))
            print(f"ok   {tag}: rows sent {got_sent.sum()}, "
                  f"{int((ids < 0).sum())} empty slots, experts used {used}")
    # The result does not depend on the split (replica by global index,
    # partial outputs summed in rank order).
    same = np.array_equal(
        np.concatenate([o["y0"] for o in outs]),
        np.concatenate([o[f"y{len(scen) - 1}"] for o in outs]))
    ok &= same
    print(("ok  " if same else "FAIL") + f" tokens {scen[0][3]} and "
          f"{scen[-1][3]}: identical outputs")
    # Replicas and the dead expert, over the first scenario.
    m = st.load_model(scen[0][1])
    x = inputs(scen[0][6], sum(scen[0][3]))
    _, served, _ = expected_traffic(m, nproc, scen[0][3], x, True)
    for e in replicated:
        reps = [s for s, se in enumerate(SLOTS[nproc]) if se == e]
        print(f"ok   expert {e}: {len(reps)} replicas served "
              f"{[int(served[s]) for s in reps]} rows")
    dead = [s for s, se in enumerate(SLOTS[nproc]) if se == 5]
    if any(served[s] for s in dead):
        ok = False
        print("FAIL expert 5 was chosen: the test lost its zero-token case")
    else:
        print("ok   expert 5: 0 tokens")
    for r in range(nproc):
        broken_msg, route_msg = open(os.path.join(
            work, f"err{nproc}.{r}.txt")).read().split("\n", 1)
        print(f"rank {r} of the broken package: " +
              broken_msg.replace(work + "/", ""))
        print(f"rank {r} with a bad input on rank {nproc - 1}: {route_msg}")
    print("PASS" if ok else "FAIL")
    return ok


def cli(args, work, env):
    r = subprocess.run([sys.executable, "-m", "moe_opt_distributed"] + args,
                       capture_output=True, text=True, env=env, cwd=work)
    return r.returncode, r.stdout.strip(), r.stderr.strip()


def run_cli(work):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [HERE] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                  if p])
    fac = ["--package-factory", "ep_standin:open_standin"]
    a = st.make_model(os.path.join(work, "a.npz"), seed=1, shared=True)
    pkg = st.write_package(os.path.join(work, "a2.pkg"), a, 2, SLOTS[2],
                           EXPERTS)
    x = inputs(7, 10)
    xp = os.path.join(work, "x.npy")
    yp = os.path.join(work, "y.npy")
    np.save(xp, x)
    ok = True
    rc, out, err = cli(["--package", pkg, "--layer", str(LAYER), "--input",
                        xp, "--output", yp, "--nproc", "2",
                        "--tokens-per-rank", "10,0"] + fac, work, env)
    if rc != 0:
        print(f"FAIL cli run: rc {rc}\n{err}")
        return False
    print(out.replace(work + "/", ""))
    y = np.load(yp)
    e = rel_err(st.full_layer(st.load_model(a), x), y)
    print(("ok  " if e <= RTOL and y.shape == x.shape else "FAIL") +
          f" cli: output {list(y.shape)} equals the single-process layer")
    ok &= e <= RTOL

    # Bad input: each one a clear error before any process starts.
    nopl = os.path.join(work, "noplacement.pkg")
    os.makedirs(os.path.join(nopl, "rank0"), exist_ok=True)
    norank = st.write_package(os.path.join(work, "norank.pkg"), a, 2,
                              SLOTS[2], EXPERTS, skip_rank=1)
    badslot = st.write_package(os.path.join(work, "badslot.pkg"), a, 2,
                               SLOTS[2], EXPERTS)
    doc = json.load(open(os.path.join(badslot, "placement.json")))
    doc["layers"][0]["slot_expert"][2] = 9
    json.dump(doc, open(os.path.join(badslot, "placement.json"), "w"))
    cases = [
        ("no placement.json", [nopl, "--nproc", "1"]),
        ("no rank folder", [norank]),
        ("nproc", [pkg, "--nproc", "3"]),
        ("layer", [pkg, "--layer", "7"]),
        ("slot_expert", [badslot]),
        ("tokens-per-rank", [pkg, "--tokens-per-rank", "4,5"]),
    ]
    for tag, extra in cases:
        argv = ["--package", extra[0], "--layer", str(LAYER), "--input", xp,
                "--output", os.path.join(work, "bad.npy")] + extra[1:] + fac
        rc, out, err = cli(argv, work, env)
        print(f"{'ok  ' if rc == 1 else 'FAIL'} {tag}: rc {rc}: " +
              err.replace(work + "/", ""))
        ok &= rc == 1 and not os.path.exists(os.path.join(work, "bad.npy"))

    # An error inside the spawned processes: reported per rank, rc 1.
    one = st.write_package(os.path.join(work, "one.pkg"), a, 1, SLOTS[1],
                           EXPERTS)
    rc, out, err = cli(["--package", one, "--layer", str(LAYER), "--input",
                        xp, "--output", os.path.join(work, "bad.npy"),
                        "--package-factory", "ep_standin:no_such_factory"],
                       work, env)
    print(f"{'ok  ' if rc == 1 else 'FAIL'} error in a rank: rc {rc}: " +
          err.replace(work + "/", ""))
    ok &= rc == 1 and not os.path.exists(os.path.join(work, "bad.npy"))

    # The class on a one-process group.
    import torch.distributed as dist
    import moe_opt_distributed as md
    try:
        md.ExpertParallelLayer(pkg, LAYER, package_factory=st.open_standin)
        print("FAIL no process group: no error")
        ok = False
    except RuntimeError as e:
        print(f"ok   no process group: {e}")
    dist.init_process_group("gloo", init_method="file://" +
                            os.path.join(work, "rdv1"), rank=0, world_size=1)
    for tag, p in (("world size", pkg), ("no placement.json", nopl)):
        try:
            md.ExpertParallelLayer(p, LAYER, package_factory=st.open_standin)
            print(f"FAIL class {tag}: no error")
            ok = False
        except md.PlacementError as e:
            print(f"ok   class {tag}: " + str(e).replace(work + "/", ""))
    layer = md.ExpertParallelLayer(one, LAYER, package_factory=st.open_standin)
    y1 = layer.forward(x)
    e = rel_err(st.full_layer(st.load_model(a), x), y1)
    print(("ok  " if e <= RTOL else "FAIL") + " one rank equals the layer")
    ok &= e <= RTOL
    dist.destroy_process_group()
    print("PASS" if ok else "FAIL")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--nproc", type=int)
    ap.add_argument("--cli", action="store_true")
    ap.add_argument("--dist-backend", default="gloo",
                    help="gloo, or nccl (one GPU per rank)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    try:
        ok = run_cli(a.work) if a.cli else run_library(a.work, a.nproc,
                                                      a.dist_backend)
    except Exception:
        traceback.print_exc(file=sys.stdout)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
