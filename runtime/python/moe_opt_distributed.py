"""Expert-parallel MoE layers over torch.distributed.

A multi-rank package (``moe-compile MODEL --placement PLACEMENT.json -o
PKG``) holds ``PKG/placement.json`` (docs/layout.md, "Placement file") and
one ordinary package per rank, ``PKG/rank<r>/``, with the experts of that
rank's slots. ``ExpertParallelLayer`` runs one MoE layer over a process
group of as many ranks as the placement has GPUs; attention is data
parallel, so every rank comes with its own tokens:

1. route: ``pkg.route(layer, x)``, the layer's full router on the rank's
   tokens, gives logical expert ids and weights ``[T, K]``;
2. replica choice: the replicas of an expert are its slots in increasing
   slot order; a token whose global index is ``g`` (the rank's tokens
   follow those of the lower ranks) uses replica ``g mod c`` of an expert
   with ``c`` replicas, for each of its K choices. The choice does not
   depend on how the tokens are split over the ranks;
3. dispatch: a token goes once to each rank that holds one of its slots,
   with all K slot ids (those of other ranks set to -1), and, when the
   model may have shared experts (``shared_experts=True``, the default),
   once to rank 0 in any case, which computes the shared experts for every
   row it receives: each token's shared experts are computed exactly once.
   Counts travel first, then the rows (x, ids and weights packed into one
   float32 buffer; the int32 ids as their bit patterns), each with one
   ``all_to_all_single``;
4. ``pkg.run_dispatched(layer, rows, slot_ids, weights)`` on every rank;
5. combine: the partial outputs travel back with ``all_to_all_single`` and
   are summed per token, in rank order (an order that does not depend on
   how the tokens were split either).

Collectives run on the group's backend: gloo with host tensors, NCCL with
tensors on the current CUDA device (the package runs on host arrays in
both cases; the rows are copied to and from the device around the
collectives).

The package object comes from ``package_factory(path, backend)``, by
default ``moe_opt.load``; any object with ``route`` and ``run_dispatched``
of the same contract works (an engine's own loader, a test's stand-in).

CLI: ``python3 -m moe_opt_distributed --package PKG --layer L --input
X.npy --output Y.npy --nproc N [--backend emu] [--dist-backend nccl]``
spawns N processes on this machine (gloo by default; nccl: rank r on GPU
r), splits X's tokens over them and writes the gathered output.
"""
import argparse
import datetime
import importlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np

PLACEMENT_FILE = "placement.json"


class PlacementError(ValueError):
    """A multi-rank package or placement file that cannot be used."""


def _fail(path, what):
    raise PlacementError(f"{path}: {what}")


def _int_field(path, obj, at, name, lo, hi=None):
    if name not in obj:
        _fail(path, f"{at}'{name}' is missing")
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or \
            (hi is not None and v > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        _fail(path, f"{at}'{name}': expected an integer {bound}, found "
                    f"{json.dumps(v)}")
    return v


class LayerPlacement:
    """One layer of a placement file: slots, their experts and GPUs."""

    def __init__(self, path, gpus, layer, experts, slot_expert, slot_gpu):
        self.path = path
        self.gpus = gpus
        self.layer = layer
        self.experts = experts
        self.slot_expert = np.asarray(slot_expert, dtype=np.int64)
        self.slot_gpu = np.asarray(slot_gpu, dtype=np.int64)
        # replicas[e, j]: the j-th slot of expert e (slot order), -1 past
        # its count.
        self.replica_count = np.bincount(self.slot_expert,
                                         minlength=experts).astype(np.int64)
        self.replicas = np.full((experts, int(self.replica_count.max())), -1,
                                dtype=np.int64)
        fill = np.zeros(experts, dtype=np.int64)
        for s, e in enumerate(self.slot_expert):
            self.replicas[e, fill[e]] = s
            fill[e] += 1


def read_placement(path, layer):
    """Reads `layer` of a moe-placement v1 file, with the checks of
    docs/layout.md; errors name the file and the field."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        _fail(path, "not found (a multi-rank package of `moe-compile "
                    "--placement` holds its placement.json)")
    except OSError as e:
        _fail(path, f"cannot be read: {e.strerror}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        _fail(path, f"not JSON: {e}")
    if not isinstance(doc, dict):
        _fail(path, "expected a JSON object")
    if doc.get("format") != "moe-placement":
        _fail(path, "'format': expected \"moe-placement\", found "
                    f"{json.dumps(doc.get('format'))}")
    if doc.get("version") != 1:
        _fail(path, "'version': expected 1, found "
                    f"{json.dumps(doc.get('version'))}")
    gpus = _int_field(path, doc, "", "gpus", 1, 1 << 20)
    layers = doc.get("layers")
    if not isinstance(layers, list):
        _fail(path, "'layers': expected an array")
    found = None
    for i, entry in enumerate(layers):
        at = f"layers[{i}]."
        if not isinstance(entry, dict):
            _fail(path, f"layers[{i}]: expected an object")
        if _int_field(path, entry, at, "layer", 0) == layer:
            found = (i, entry)
            break
    if found is None:
        have = ", ".join(str(e.get("layer")) for e in layers
                         if isinstance(e, dict))
        _fail(path, f"layer {layer} is not in the placement (layers: "
                    f"{have or 'none'})")
    i, entry = found
    at = f"layers[{i}] (layer {layer})."
    experts = _int_field(path, entry, at, "experts", 1)
    slot_expert = entry.get("slot_expert")
    slot_gpu = entry.get("slot_gpu")
    for name, arr in (("slot_expert", slot_expert), ("slot_gpu", slot_gpu)):
        if not isinstance(arr, list) or not arr or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in arr):
            _fail(path, f"{at}'{name}': expected a non-empty array of "
                        "integers")
    if len(slot_expert) != len(slot_gpu):
        _fail(path, f"{at}'slot_gpu': {len(slot_gpu)} entries, "
                    f"'slot_expert' has {len(slot_expert)}")
    for s, e in enumerate(slot_expert):
        if not 0 <= e < experts:
            _fail(path, f"{at}'slot_expert'[{s}]: expert {e} outside "
                        f"0..{experts - 1}")
    for s, g in enumerate(slot_gpu):
        if not 0 <= g < gpus:
            _fail(path, f"{at}'slot_gpu'[{s}]: GPU {g} outside "
                        f"0..{gpus - 1}")
        if s and g < slot_gpu[s - 1]:
            _fail(path, f"{at}'slot_gpu'[{s}]: GPU {g} after GPU "
                        f"{slot_gpu[s - 1]} (slots are numbered GPU by GPU)")
    missing = sorted(set(range(experts)) - set(slot_expert))
    if missing:
        _fail(path, f"{at}'slot_expert': expert {missing[0]} has no slot")
    return LayerPlacement(path, gpus, layer, experts, slot_expert, slot_gpu)


def rank_package_dir(package_dir, rank):
    return os.path.join(package_dir, f"rank{rank}")


def _default_factory(path, backend):
    import moe_opt
    device = 0
    if backend in ("cuda", "auto"):
        import torch
        if torch.cuda.is_available():
            device = torch.cuda.current_device()
    return moe_opt.load(path, backend=backend, device=device)


def _resolve_factory(spec):
    """'module:function' -> the function (the CLI's --package-factory)."""
    if ":" not in spec:
        raise ValueError(f"--package-factory {spec}: expected "
                         "MODULE:FUNCTION")
    mod, fn = spec.split(":", 1)
    return getattr(importlib.import_module(mod), fn)


def _as_host_f32(x, name):
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu").numpy()
    except ImportError:
        pass
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [tokens, hidden] array, "
                         f"got shape {list(a.shape)}")
    return a


class ExpertParallelLayer:
    """One MoE layer of a multi-rank package, run over a process group.

    package_dir: the directory of `moe-compile --placement` (placement.json,
    rank<r>/). layer: the model layer index. group: the process group
    (None: the default group); its size must be the placement's GPU count
    and its rank r opens PKG/rank<r>. backend: the package backend
    ("auto", "emu", "cuda"), passed to package_factory(path, backend).
    shared_experts: True when the model may have shared experts (every
    token then visits rank 0, which computes them); False only for a model
    known to have none (less traffic; with shared experts the sum would
    miss them for tokens that do not reach rank 0).

    Opening is collective: every rank of the group must construct the
    layer. When any rank fails, every rank raises (no rank is left waiting
    in a collective).
    """

    def __init__(self, package_dir, layer, group=None, backend="auto",
                 package_factory=None, shared_experts=True):
        import torch.distributed as dist
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialized: call "
                               "torch.distributed.init_process_group first "
                               "(or use python3 -m moe_opt_distributed)")
        self._dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.layer = layer
        self.shared_experts = bool(shared_experts)
        self.package_dir = package_dir
        factory = package_factory or _default_factory
        error = None
        try:
            path = os.path.join(package_dir, PLACEMENT_FILE)
            if not os.path.isdir(package_dir):
                raise PlacementError(f"{package_dir}: not a directory (a "
                                     "multi-rank package of `moe-compile "
                                     "--placement`)")
            self.placement = read_placement(path, layer)
            if self.placement.gpus != self.world:
                raise PlacementError(
                    f"{path}: 'gpus' is {self.placement.gpus}, the process "
                    f"group has {self.world} ranks (run one rank per GPU of "
                    "the placement)")
            rdir = rank_package_dir(package_dir, self.rank)
            if not os.path.isdir(rdir):
                raise PlacementError(
                    f"{rdir}: missing (the package of rank {self.rank}; "
                    f"{path} has {self.placement.gpus} GPUs)")
            self.package = factory(rdir, backend)
        except Exception as e:  # reported to every rank below
            error = e
        failed = [v[0] for v in self._all_gather_ints([error is not None])]
        if error is not None:
            raise error
        if any(failed):
            bad = ", ".join(str(r) for r, f in enumerate(failed) if f)
            raise RuntimeError(f"{package_dir}: rank(s) {bad} could not open "
                               f"layer {layer} (see their errors)")
        self.last_rows_sent = [0] * self.world
        self.last_rows_received = [0] * self.world

    # Collectives -----------------------------------------------------------

    def _comm_device(self):
        import torch
        if self._dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _all_gather_ints(self, values):
        """Every rank's list of ints (as many on every rank)."""
        import torch
        dev = self._comm_device()
        mine = torch.tensor([int(v) for v in values], dtype=torch.int64,
                            device=dev)
        out = [torch.zeros(len(values), dtype=torch.int64, device=dev)
               for _ in range(self.world)]
        self._dist.all_gather(out, mine, group=self.group)
        return [[int(v) for v in t.cpu().tolist()] for t in out]

    def _all_to_all(self, send, send_counts, recv_counts):
        """Rows of `send` (a numpy 2-D array, blocks in rank order) to their
        ranks; returns the received rows (numpy), blocks in rank order."""
        import torch
        dev = self._comm_device()
        inp = torch.from_numpy(np.ascontiguousarray(send)).to(dev)
        out = torch.empty((sum(recv_counts), send.shape[1]), dtype=inp.dtype,
                          device=dev)
        self._dist.all_to_all_single(out, inp,
                                     output_split_sizes=list(recv_counts),
                                     input_split_sizes=list(send_counts),
                                     group=self.group)
        return out.cpu().numpy()

    # The layer -------------------------------------------------------------

    def route_slots(self, ids, first_token):
        """Logical expert ids [T, K] -> physical slot ids [T, K] (-1 stays
        -1): the token with global index g uses replica g mod c."""
        p = self.placement
        ids = np.asarray(ids)
        bad = (ids < -1) | (ids >= p.experts)
        if bad.any():
            t, k = np.argwhere(bad)[0]
            raise ValueError(
                f"layer {self.layer}: route() gave expert id {ids[t, k]} "
                f"(token {t}, choice {k}) outside -1..{p.experts - 1} of "
                f"{p.path}")
        slots = np.full(ids.shape, -1, dtype=np.int64)
        t, k = np.nonzero(ids >= 0)
        e = ids[t, k].astype(np.int64)
        g = first_token + t.astype(np.int64)
        slots[t, k] = p.replicas[e, g % p.replica_count[e]]
        return slots

    def forward(self, x):
        """x: this rank's tokens, [T_r, H] (numpy or torch; T_r may be 0).
        Returns the layer's output for them, [T_r, H] float32, of x's kind
        (a torch tensor on x's device for a torch x). Collective."""
        import torch
        is_torch = isinstance(x, torch.Tensor)
        xn = _as_host_f32(x, "x")
        tokens, hidden = xn.shape
        world = self.world

        # Routing is local; its failure on one rank is shared with the
        # token counts, so that every rank raises instead of waiting.
        error = None
        try:
            ids, weights = self.package.route(self.layer, xn)
            ids = np.asarray(ids)
            weights = np.asarray(weights, dtype=np.float32)
            if ids.ndim != 2 or ids.shape[0] != tokens or \
                    weights.shape != ids.shape:
                raise ValueError(f"layer {self.layer}: route() gave ids "
                                 f"{list(ids.shape)} and weights "
                                 f"{list(weights.shape)} for {tokens} "
                                 "tokens (expected [tokens, K] both)")
            self.route_slots(ids, 0)  # checks the ids
        except Exception as e:
            error = e
        gathered = self._all_gather_ints([tokens, error is not None])
        if error is not None:
            raise error
        failed = [r for r, (_, f) in enumerate(gathered) if f]
        if failed:
            raise RuntimeError(f"layer {self.layer}: route() failed on "
                               f"rank(s) {', '.join(map(str, failed))} "
                               "(see their errors)")
        first = sum(t for t, _ in gathered[:self.rank])
        k = ids.shape[1]
        slots = self.route_slots(ids, first)
        dest = np.where(slots >= 0,
                        self.placement.slot_gpu[np.maximum(slots, 0)], -1)

        # One row per (token, destination rank): x | ids bits | weights.
        width = hidden + 2 * k
        blocks, rows_of, send_counts = [], [], []
        for d in range(world):
            here = dest == d
            need = here.any(axis=1)
            if d == 0 and self.shared_experts:
                need[:] = True
            rows = np.nonzero(need)[0]
            block = np.empty((len(rows), width), dtype=np.float32)
            block[:, :hidden] = xn[rows]
            block[:, hidden:hidden + k] = np.where(
                here[rows], slots[rows], -1).astype(np.int32).view(np.float32)
            block[:, hidden + k:] = np.where(here[rows], weights[rows], 0)
            blocks.append(block)
            rows_of.append(rows)
            send_counts.append(len(rows))
        send = np.concatenate(blocks, axis=0)

        recv_counts = self._exchange_counts(send_counts)
        recv = self._all_to_all(send, send_counts, recv_counts)
        n = recv.shape[0]
        if n:
            rx = np.ascontiguousarray(recv[:, :hidden])
            rids = np.ascontiguousarray(recv[:, hidden:hidden + k]).view(
                np.int32)
            rw = np.ascontiguousarray(recv[:, hidden + k:])
            part = np.asarray(self.package.run_dispatched(self.layer, rx,
                                                          rids, rw),
                              dtype=np.float32)
            if part.shape != (n, hidden):
                raise ValueError(f"layer {self.layer}: run_dispatched() gave "
                                 f"shape {list(part.shape)} for {n} rows, "
                                 f"expected {[n, hidden]}")
        else:
            part = np.zeros((0, hidden), dtype=np.float32)

        back = self._all_to_all(part, recv_counts, send_counts)
        y = np.zeros((tokens, hidden), dtype=np.float32)
        off = 0
        for d in range(world):
            rows = rows_of[d]
            y[rows] += back[off:off + len(rows)]
            off += len(rows)
        self.last_rows_sent = send_counts
        self.last_rows_received = list(recv_counts)
        if is_torch:
            return torch.from_numpy(y).to(x.device)
        return y

    __call__ = forward

    def _exchange_counts(self, send_counts):
        import torch
        dev = self._comm_device()
        inp = torch.tensor(send_counts, dtype=torch.int64, device=dev)
        out = torch.empty(self.world, dtype=torch.int64, device=dev)
        self._dist.all_to_all_single(out, inp, group=self.group)
        return [int(v) for v in out.cpu().tolist()]


# CLI -----------------------------------------------------------------------


def split_tokens(tokens, nproc, spec=None):
    """Token counts per rank: as even as possible, or `spec` ("3,0,5")."""
    if spec is None:
        return [tokens // nproc + (1 if r < tokens % nproc else 0)
                for r in range(nproc)]
    try:
        counts = [int(v) for v in spec.split(",")]
    except ValueError:
        raise ValueError(f"--tokens-per-rank {spec}: expected {nproc} "
                         "comma-separated integers")
    if len(counts) != nproc or any(c < 0 for c in counts):
        raise ValueError(f"--tokens-per-rank {spec}: expected {nproc} "
                         "non-negative integers (one per rank)")
    if sum(counts) != tokens:
        raise ValueError(f"--tokens-per-rank {spec}: {sum(counts)} tokens, "
                         f"the input has {tokens}")
    return counts


def spawn_ranks(fn, nproc, args=()):
    """Runs fn(rank, *args) in nproc spawned processes and waits for them;
    when one fails the others are terminated (they would wait in a
    collective). Returns the ranks whose process failed, first failure
    first. Plain multiprocessing: the parent does not import torch."""
    import multiprocessing
    from multiprocessing.connection import wait
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=fn, args=(r,) + tuple(args))
             for r in range(nproc)]
    for p in procs:
        p.start()
    alive = {p.sentinel: r for r, p in enumerate(procs)}
    failed = []
    while alive:
        for s in wait(list(alive)):
            r = alive.pop(s)
            procs[r].join()
            if procs[r].exitcode != 0:
                failed.append(r)
        if failed:
            for r in alive.values():
                procs[r].terminate()
            for r in alive.values():
                procs[r].join()
            break
    return failed


def _cli_worker(rank, opts, work, counts):
    import torch.distributed as dist
    code = 0
    try:
        if opts["dist_backend"] == "nccl":
            import torch
            if torch.cuda.device_count() == 0:
                raise RuntimeError(
                    f"--dist-backend nccl: torch {torch.__version__} sees no "
                    "CUDA GPU (built with CUDA "
                    f"{torch.version.cuda or 'no'}); use gloo")
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(
            opts["dist_backend"],
            init_method="file://" + os.path.join(work, "rendezvous"),
            rank=rank, world_size=opts["nproc"],
            timeout=datetime.timedelta(seconds=opts["timeout"]))
        factory = (_resolve_factory(opts["factory"]) if opts["factory"]
                   else None)
        layer = ExpertParallelLayer(opts["package"], opts["layer"],
                                    backend=opts["backend"],
                                    package_factory=factory,
                                    shared_experts=opts["shared_experts"])
        first = sum(counts[:rank])
        x = np.load(opts["input"], mmap_mode="r")[first:first + counts[rank]]
        y = layer.forward(np.array(x, dtype=np.float32))
        np.save(os.path.join(work, f"y.{rank}.npy"), y)
        dist.barrier()
    except Exception as e:
        with open(os.path.join(work, f"error.{rank}.txt"), "w") as f:
            f.write(f"{type(e).__name__}: {e}")
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if code:
        sys.exit(code)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python3 -m moe_opt_distributed",
        description="Runs one MoE layer of a multi-rank package (moe-compile "
                    "--placement) expert-parallel over N local processes "
                    "(torch.distributed, gloo or nccl).")
    ap.add_argument("--package", required=True,
                    help="the multi-rank package directory")
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--input", required=True, help="X.npy, [T, H]")
    ap.add_argument("--output", required=True, help="Y.npy, [T, H] float32")
    ap.add_argument("--nproc", type=int, default=None,
                    help="processes (default: the placement's GPU count)")
    ap.add_argument("--backend", default="emu",
                    help="package backend: emu (default), auto, cuda")
    ap.add_argument("--dist-backend", default="gloo",
                    choices=["gloo", "nccl"],
                    help="torch.distributed backend: gloo (default, CPU) or "
                         "nccl (rank r on GPU r)")
    ap.add_argument("--tokens-per-rank", default=None,
                    help="token counts per rank, e.g. 3,0,5 (default: even)")
    ap.add_argument("--no-shared-experts", action="store_true",
                    help="the model has no shared experts: tokens go only "
                         "to the ranks of their slots")
    ap.add_argument("--package-factory", default=None,
                    help="MODULE:FUNCTION(path, backend) opening a rank's "
                         "package (default moe_opt.load)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds a collective may wait (default 300)")
    a = ap.parse_args(argv)
    prog = "moe_opt_distributed"
    try:
        placement = read_placement(os.path.join(a.package, PLACEMENT_FILE),
                                   a.layer)
        nproc = a.nproc if a.nproc is not None else placement.gpus
        if nproc != placement.gpus:
            raise PlacementError(
                f"{os.path.join(a.package, PLACEMENT_FILE)}: 'gpus' is "
                f"{placement.gpus}, --nproc is {nproc}")
        for r in range(nproc):
            if not os.path.isdir(rank_package_dir(a.package, r)):
                raise PlacementError(f"{rank_package_dir(a.package, r)}: "
                                     f"missing (the package of rank {r})")
        x = np.load(a.input, mmap_mode="r")
        if x.ndim != 2:
            raise ValueError(f"{a.input}: expected a 2-D [tokens, hidden] "
                             f"array, found shape {list(x.shape)}")
        counts = split_tokens(x.shape[0], nproc, a.tokens_per_rank)
    except (ValueError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1

    work = tempfile.mkdtemp(prefix="moe-ep-")
    try:
        opts = dict(package=a.package, layer=a.layer, input=a.input,
                    nproc=nproc, backend=a.backend, factory=a.package_factory,
                    shared_experts=not a.no_shared_experts,
                    dist_backend=a.dist_backend,
                    timeout=a.timeout)
        failed = spawn_ranks(_cli_worker, nproc, (opts, work, counts))
        if failed:
            for r in range(nproc):
                p = os.path.join(work, f"error.{r}.txt")
                if os.path.exists(p):
                    print(f"{prog}: error: rank {r}: " + open(p).read(),
                          file=sys.stderr)
            print(f"{prog}: error: rank(s) "
                  f"{', '.join(map(str, failed))} failed", file=sys.stderr)
            return 1
        y = np.concatenate([np.load(os.path.join(work, f"y.{r}.npy"))
                            for r in range(nproc)], axis=0)
        tmp = a.output + ".tmp.npy"
        np.save(tmp, y)
        os.replace(tmp, a.output)
        print(f"{prog}: layer {a.layer}, {x.shape[0]} tokens over {nproc} "
              f"ranks ({','.join(map(str, counts))}) -> {a.output}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    # Spawned processes import the worker by the module's own name.
    from moe_opt_distributed import main as _main
    sys.exit(_main())
