"""What CUDA allocations outside a model's tensors show in ``max_memory_allocated``.

Each line: allocated MiB after one kind of kernel first runs in a fresh process (cuBLAS and
cuBLASLt take their workspaces from PyTorch's caching allocator on first use). The memory model's
``FRAMEWORK_OVERHEAD["cuda"]`` is the sum that a training step reaches; ``scripts/gpu_check.sh``
runs this beside its cases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def main() -> None:
    dev = "cuda"
    mib = 2**20
    base = torch.cuda.memory_allocated()
    x = torch.randn(256, 768, device=dev)
    w = torch.randn(768, 768, device=dev)
    b = torch.randn(768, device=dev)
    tensors = torch.cuda.memory_allocated() - base

    def report(what: str) -> None:
        torch.cuda.synchronize()
        extra = (torch.cuda.max_memory_allocated() - base - tensors) / mib
        print(f"{what:<40} {extra:8.1f} MiB beyond the inputs (peak)", flush=True)

    report("nothing run")
    y = x @ w
    report("fp32 mm (cuBLAS)")
    y = torch.addmm(b, x, w)
    report("+ fp32 addmm (cuBLASLt epilogue)")
    y = F.linear(x, w, b)
    report("+ fp32 linear")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = F.linear(x, w, b)
        report("+ bf16 linear under autocast")
    q = torch.randn(4, 12, 64, 64, device=dev)
    y = F.scaled_dot_product_attention(q, q, q, is_causal=True)
    report("+ fp32 SDPA")
    xr = x.clone().requires_grad_()
    F.linear(xr, w, b).sum().backward()
    report("+ fp32 linear backward")
    del y


if __name__ == "__main__":
    main()
