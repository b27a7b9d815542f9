"""Vector add: the "hello world" of GPU kernels, and a pure test of memory bandwidth.

Each program instance handles BLOCK_SIZE consecutive elements; the mask switches off
the lanes that fall past the end when n is not a multiple of the block.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(axis=0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    # add in fp32: free for a memory-bound kernel, and the CPU interpreter has no bf16 arithmetic
    tl.store(out_ptr + offsets, (x.to(tl.float32) + y.to(tl.float32)).to(out_ptr.dtype.element_ty), mask=mask)


def add(x: torch.Tensor, y: torch.Tensor, block_size: int = 2048) -> torch.Tensor:
    assert x.shape == y.shape and x.is_contiguous() and y.is_contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    grid = (triton.cdiv(n, block_size),)
    add_kernel[grid](x, y, out, n, BLOCK_SIZE=block_size, num_warps=8)
    return out


def torch_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x + y


def bytes_moved(n: int, element_size: int) -> int:
    return 3 * n * element_size  # read x, read y, write out
