"""moe_opt.torch: the MoE layers of a package as PyTorch modules and ops.

    import torch, moe_opt.torch as mt
    layer = mt.MoELayer("pkg", layer=0)          # backend="auto"
    y = layer(x)        # x: [T, H] or [B, S, H], float32/bfloat16/float16
    y, routing = layer(x, return_routing=True)
    layer(x, out=y)     # any writable tensor of x's shape

What runs where:
  * CPU tensors run on the package's host path (the emu backend, or the
    GPU with host copies when the package runs on cuda): x is converted to
    float32, the layer computes in its activation type, and the result comes
    back in x's dtype and shape. Tested (test/Python/torch-*.test).
  * CUDA tensors run on the package's cuda backend without a copy (DLPack),
    in the layer's activation dtype (x is cast to it if needed), on the
    current torch stream. Written against moe_opt's DLPack path, which
    test/Python/dlpack-cuda.test checks on a GPU; the torch module's CUDA
    path is checked by test/Python/torch-cuda.test on a GPU with a CUDA
    build of torch (not run yet: no GPU here, and Debian's torch is CPU-only).

The forward pass is one opaque op, torch.ops.moe_opt.layer(x, handle),
registered with torch.library with CPU, CUDA and Meta (shape-only)
kernels, so torch.jit.trace and torch.fx graphs hold one node per layer and
shape propagation needs no run. It has no autograd formula (inference
only). `handle` names a live MoELayer in this process (graphs that hold it
are not portable to another process).
"""
import itertools
import threading
import weakref

import torch
import torch.fx

import moe_opt as _moe

__all__ = ["MoELayer", "MoEModel", "bind_state_dict", "layer_op"]

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ACTIVATION = {"f32": torch.float32, "bf16": torch.bfloat16,
               "f16": torch.float16}

# handle -> MoELayer (weak: a layer that goes away unregisters itself).
_layers = weakref.WeakValueDictionary()
_handles = itertools.count(1)
_lock = threading.Lock()
_library = None


def _layer_of(handle):
    layer = _layers.get(int(handle))
    if layer is None:
        raise RuntimeError(f"moe_opt::layer: handle {handle} names no live "
                           f"MoELayer of this process")
    return layer


def _op_kernel(x, handle):
    return _layer_of(handle)._run(x, None)


def _op_meta(x, handle):
    # Shape and dtype only: the output is x's.
    return torch.empty_like(x)


def _register_op():
    global _library
    with _lock:
        if _library is None:
            lib = torch.library.Library("moe_opt", "DEF")
            lib.define("layer(Tensor x, int handle) -> Tensor")
            for key in ("CPU", "CUDA"):
                lib.impl("layer", _op_kernel, key)
            for key in ("Meta", "AutogradMeta"):
                lib.impl("layer", _op_meta, key)
            _library = lib
    return torch.ops.moe_opt.layer


def layer_op():
    """torch.ops.moe_opt.layer, registered on first use."""
    return _register_op()


def _check_input(x, hidden, where):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: x must be a torch.Tensor, got "
                        f"{type(x).__name__}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{where}: x has dtype {x.dtype}; expected "
                        f"torch.float32, torch.bfloat16 or torch.float16")
    if x.dim() < 2 or x.shape[-1] != hidden:
        raise ValueError(f"{where}: x has shape {list(x.shape)}; expected "
                         f"[..., {hidden}] ([T, {hidden}] or "
                         f"[B, S, {hidden}])")


class MoELayer(torch.nn.Module):
    """One MoE layer of a package as an nn.Module.

    package: a path to a package directory, or an open moe_opt.Package
    (shared by several layers). layer: the model layer index (default: the
    package's first MoE layer). backend, device, cache_dir: as
    moe_opt.load.
    """

    def __init__(self, package, layer=None, backend="auto", device=0,
                 cache_dir=""):
        super().__init__()
        if isinstance(package, _moe.Package):
            self.package = package
        else:
            self.package = _moe.load(str(package), backend=backend,
                                     device=device, cache_dir=cache_dir)
        if layer is None:
            if not self.package.layers:
                raise ValueError(f"{self.package.path} has no MoE layer")
            layer = self.package.layers[0]
        self.index = int(layer)
        self.moe_layer = self.package.layer(self.index)
        self.hidden = self.moe_layer.hidden
        self.activation_dtype = _ACTIVATION[self.moe_layer.activation_type]
        self.handle = next(_handles)
        _layers[self.handle] = self
        self._op = _register_op()

    def extra_repr(self):
        return (f"layer={self.index}, hidden={self.hidden}, "
                f"backend={self.package.backend}, "
                f"activations={self.moe_layer.activation_type}")

    def forward(self, x, out=None, return_routing=False):
        """y = layer(x): x [..., hidden] float32/bfloat16/float16; returns
        a tensor of x's dtype and shape. out=: a writable tensor of x's
        shape (any of the three dtypes, on x's device) that receives y and
        is returned. return_routing=True returns (y, routing), routing a
        list with one dict per router: ids (int32 [..., K], -1 an empty
        slot), weights (float32 [..., K]) and experts, as CPU tensors (a
        CUDA run then waits for the device to copy them back).
        Plain calls go through the op torch.ops.moe_opt.layer."""
        if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing():
            # A graph being built: one op node (the kernel checks x).
            return self._op(x, self.handle)
        _check_input(x, self.hidden, f"MoELayer {self.index}")
        if out is None and not return_routing:
            return self._op(x, self.handle)
        if return_routing:
            return self._run(x, out, routing=True)
        return self._run(x, out)

    def routing_stats(self):
        """The layer's load over its recorded runs (moe_opt.Package.
        routing_stats): one dict per router."""
        return self.package.routing_stats(self.index)

    # The eager computation (the op's CPU and CUDA kernel).
    def _run(self, x, out, routing=False):
        _check_input(x, self.hidden, f"MoELayer {self.index}")
        if out is not None:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"out: expected a torch.Tensor, got "
                                f"{type(out).__name__}")
            if out.shape != x.shape or out.dtype not in _DTYPES:
                raise ValueError(f"out: expected a tensor of shape "
                                 f"{list(x.shape)} and a float dtype, got "
                                 f"shape {list(out.shape)}, {out.dtype}")
            if out.device != x.device:
                raise ValueError(f"out: on {out.device}, x on {x.device}")
        if x.is_cuda:
            return self._run_cuda(x, out, routing)
        x32 = x.detach().to(torch.float32).contiguous()
        if (out is not None and out.dtype == torch.float32
                and out.is_contiguous()):
            target = out  # Written in place by the runtime.
        else:
            target = torch.empty(x.shape, dtype=torch.float32)
        if x.numel() == 0:
            result, routes = target, []
        elif routing:
            _, routes = self.moe_layer(x32, out=target, return_routing=True)
            result = target
        else:
            self.moe_layer(x32, out=target)
            result = target
        if out is not None:
            if result is not out:
                out.copy_(result)
            result = out
        else:
            result = result.to(x.dtype)
        if not routing:
            return result
        return result, _routing_tensors(routes, x.shape)

    def _run_cuda(self, x, out, routing=False):
        if self.package.backend != "cuda":
            raise ValueError(f"x is a CUDA tensor but {self.package.path} "
                             f"runs on {self.package.backend}; move x to the "
                             f"CPU or load the package with backend='cuda'")
        act = self.activation_dtype
        xa = x.detach().to(act).reshape(-1, self.hidden).contiguous()
        if out is not None and out.dtype == act and out.is_contiguous():
            y = out.view(-1, self.hidden)
        else:
            y = torch.empty(xa.shape, dtype=act, device=x.device)
        routes = []
        if xa.shape[0] > 0:
            stream = torch.cuda.current_stream()
            if routing:
                # Waits for the device: the routing is copied to the host.
                _, routes = self.moe_layer(xa, out=y, stream=stream,
                                           return_routing=True)
            else:
                self.moe_layer(xa, out=y, stream=stream)
        y = y.view(x.shape)
        if out is None:
            y = y.to(x.dtype)
        else:
            if y.data_ptr() != out.data_ptr():
                out.copy_(y)
            y = out
        return (y, _routing_tensors(routes, x.shape)) if routing else y


def _routing_tensors(routes, shape):
    """The runtime's routing (numpy [T, K] per router) as CPU torch tensors
    of shape [..., K] for an input of `shape`."""
    lead = tuple(shape[:-1])
    return [{"ids": torch.from_numpy(r["ids"]).reshape(lead + (-1,)),
             "weights": torch.from_numpy(r["weights"]).reshape(lead + (-1,)),
             "experts": r["experts"]} for r in routes]


class MoEModel(torch.nn.Module):
    """Every MoE layer of a package in order on a residual stream, one
    MoELayer (one op) per layer, chained as moe_opt.Package.run_all and
    moe-run --all-layers chain them (include/moe/runtime/Chain.h):
      chain="prenorm" (default): x' = x + layer(rmsnorm(x)), unit gain,
                                 eps 1e-6
      chain="residual":          x' = x + layer(x)
      chain="none":              x' = layer(x)
    The stream is kept in float32 between layers (as run_all keeps it) and
    returned in x's dtype."""

    CHAINS = ("prenorm", "residual", "none")

    def __init__(self, package, backend="auto", device=0, cache_dir="",
                 chain="prenorm"):
        super().__init__()
        if chain not in self.CHAINS:
            raise ValueError(f"MoEModel: unknown chain '{chain}'; expected "
                             f"prenorm, residual or none")
        if not isinstance(package, _moe.Package):
            package = _moe.load(str(package), backend=backend, device=device,
                                cache_dir=cache_dir)
        self.package = package
        self.chain = chain
        self.layers = torch.nn.ModuleList(
            MoELayer(package, layer=l) for l in package.layers)

    def extra_repr(self):
        return f"chain={self.chain}"

    @staticmethod
    def _rmsnorm(x):
        # As Chain.cpp: the mean square in double, the scale rounded to
        # float, the row scaled in float.
        ms = x.double().square().mean(dim=-1, keepdim=True)
        return x * (1.0 / torch.sqrt(ms + 1e-6)).to(x.dtype)

    def forward(self, x):
        dtype = x.dtype if isinstance(x, torch.Tensor) else None
        if dtype is not None and dtype not in _DTYPES:
            raise TypeError(f"MoEModel: x has dtype {dtype}; expected "
                            f"torch.float32, torch.bfloat16 or "
                            f"torch.float16")
        stream = x.float() if dtype is not None else x
        for layer in self.layers:
            if self.chain == "none":
                stream = layer(stream)
            elif self.chain == "residual":
                stream = stream + layer(stream)
            else:
                stream = stream + layer(self._rmsnorm(stream))
        return stream.to(dtype) if dtype is not None else stream


def bind_state_dict(package, state_dict, strict=True):
    """Binds the weights of a package (a shape-only one: moe-compile
    --weights none) to tensors of a state_dict, by the checkpoint names the
    package records (a stacked tensor from its slices, stacked). CPU
    tensors bind on emu, CUDA tensors on cuda. Returns the indices bound;
    with strict, a tensor that is neither stored nor found is an error
    naming it."""
    bound = []
    for info in package.tensors:
        if info["constant"] or not info["names"]:
            continue
        names = info["names"]
        if not all(n in state_dict for n in names):
            if strict and not info["stored"]:
                missing = [n for n in names if n not in state_dict]
                raise KeyError(f"bind_state_dict: tensor {info['index']} "
                               f"needs {missing[0]} (shape {info['shape']}),"
                               f" which the state_dict lacks")
            continue
        parts = [state_dict[n].detach() for n in names]
        t = torch.stack(parts) if info["stacked"] else parts[0]
        dtype = {"f32": torch.float32, "bf16": torch.bfloat16,
                 "f16": torch.float16}.get(info["dtype"])
        if dtype is not None:
            t = t.to(dtype)
        t = t.reshape(info["shape"]).contiguous()
        package.bind_tensor(info["index"], t)
        bound.append(info["index"])
    return bound
