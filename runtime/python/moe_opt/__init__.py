"""moe_opt: runs the MoE layers of a package compiled by moe-compile.

    import moe_opt
    pkg = moe_opt.load("pkg", backend="auto")    # cuda when a GPU is usable
    y = pkg.layer(pkg.layers[0])(x)              # x: [..., hidden]

The layers run on the GPU (cuda) or the CPU emulation of the same kernels
(emu). `moe_opt.torch` wraps them as torch.nn.Module objects and a
torch.library op (it imports torch; this module does not). Everything here
comes from the extension moe_opt._moe_opt (runtime/python/moe_opt.cpp).
"""
from ._moe_opt import Error, Layer, Package, load  # noqa: F401
from . import _moe_opt

__doc__ = (__doc__ or "") + "\n" + (_moe_opt.__doc__ or "")
__all__ = ["Error", "Layer", "Package", "load"]

# The names users see in reprs and tracebacks: moe_opt.X, not the
# extension's module.
for _t in (Error, Layer, Package):
    try:
        _t.__module__ = __name__
    except (AttributeError, TypeError):
        pass
del _t
