"""moe_opt.torch on CUDA tensors (needs a GPU and a torch built with CUDA;
Debian's python3-torch is CPU-only, so lit gates this on torch-cuda).

- f32 package on the cuda backend: MoELayer on CUDA tensors [T, H] and
  [B, S, H] (no host copy: the runtime reads the tensor's memory), out= a
  CUDA tensor, on torch's current stream and inside torch.cuda.stream(s),
  matches the same package's emu run (1e-5 relative); return_routing on
  CUDA tensors gives emu's experts and is counted in routing_stats;
- MoEModel on CUDA tensors matches Package.run_all on emu, each chain;
- bf16 package: bf16 CUDA tensors match the host call within bf16
  precision.

  check_torch_cuda.py --work DIR
"""
import argparse
import sys

import torch

import moe_opt
import moe_opt.torch as mt
from moe_py_common import check_close, make_package


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    args = p.parse_args()
    assert torch.cuda.is_available(), "torch has no CUDA"
    torch.manual_seed(3)

    pkg_dir = make_package(args.work, "mixtral")
    gpu = moe_opt.load(pkg_dir, backend="cuda", device=0)
    emu = moe_opt.load(pkg_dir, backend="emu")
    assert gpu.backend == "cuda", gpu.backend
    print(f"cuda package: layers {gpu.layers}", flush=True)
    for layer in gpu.layers:
        mod = mt.MoELayer(gpu, layer=layer)
        host = emu.layer(layer)
        for shape in ((1, 64), (7, 64), (2, 32, 64)):
            x = torch.randn(*shape)
            want = host(x.numpy().reshape(-1, 64)).reshape(shape)
            xd = x.cuda()
            y = mod(xd)
            assert y.is_cuda and y.shape == xd.shape and \
                y.dtype == torch.float32, (y.device, y.shape, y.dtype)
            check_close(f"layer {layer} {list(shape)}", want,
                        y.cpu().numpy())
            out = torch.full_like(xd, float("nan"))
            assert mod(xd, out=out) is out
            check_close(f"layer {layer} {list(shape)} out=", want,
                        out.cpu().numpy())
            s = torch.cuda.Stream()
            with torch.cuda.stream(s):
                ys = mod(xd)
            s.synchronize()
            check_close(f"layer {layer} {list(shape)} on a side stream",
                        want, ys.cpu().numpy())
        # return_routing on CUDA: the same experts as emu's (CPU tensors).
        x = torch.randn(2, 5, 64)
        _, want = mt.MoELayer(emu, layer=layer)(x, return_routing=True)
        y, got = mod(x.cuda(), return_routing=True)
        assert y.is_cuda and len(got) == len(want) >= 1
        for g, w in zip(got, want):
            assert g["ids"].shape == (2, 5, w["ids"].shape[-1]), g["ids"].shape
            assert torch.equal(g["ids"], w["ids"]), (g["ids"], w["ids"])
            assert torch.allclose(g["weights"], w["weights"], atol=1e-5)
        stats = mod.routing_stats()
        assert stats and stats[0]["tokens"] >= 10, stats
        print(f"ok   f32 CUDA tensors, layer {layer}", flush=True)

    x = torch.randn(9, 64)
    for chain in ("prenorm", "residual", "none"):
        y = mt.MoEModel(gpu, chain=chain)(x.cuda())
        check_close(f"MoEModel chain={chain}", emu.run_all(
            x.numpy(), chain=chain), y.cpu().numpy())
        print(f"ok   MoEModel chain={chain} on CUDA tensors", flush=True)

    pkg16 = moe_opt.load(make_package(args.work, "qwen2_moe",
                                      ["--activation-type", "bf16"]),
                         backend="cuda")
    for layer in pkg16.layers:
        mod = mt.MoELayer(pkg16, layer=layer)
        x = torch.randn(7, mod.hidden).to(torch.bfloat16)
        want = mod(x)  # CPU tensor: the host path, same rounding
        y = mod(x.cuda())
        assert y.dtype == torch.bfloat16 and y.is_cuda
        check_close(f"bf16 layer {layer}", want.float().numpy(),
                    y.float().cpu().numpy(), 1e-2)
        print(f"ok   bf16 CUDA tensors, layer {layer}", flush=True)
    print("all torch CUDA cases passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
