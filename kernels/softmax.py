"""Row softmax with the online-softmax recurrence.

softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m), with m = max_j x_j for stability.
Reading a long row block by block, keep a running max m and a running sum d of
exp(x - m). When a new block raises the max from m to m', the old sum was computed
against the wrong max; multiplying it by exp(m - m') fixes that:

    m' = max(m, max(block))
    d' = d * exp(m - m') + sum(exp(block - m'))

One pass gives (m, d) for the whole row; a second pass writes exp(x - m) / d. The
same rescaling is the heart of FlashAttention (lab 02).
"""
import torch
import triton
import triton.language as tl


@triton.jit
def softmax_kernel(x_ptr, out_ptr, n_cols, x_row_stride, out_row_stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    cols = tl.arange(0, BLOCK)
    # pass 1: running max and rescaled running sum, one lane per column of the block
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    d = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_cols, BLOCK):
        x = tl.load(x_row + start + cols, mask=start + cols < n_cols, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        # lanes that have only seen -inf keep d = 0 (avoids exp(-inf - -inf) = nan)
        d = tl.where(m_new == float("-inf"), 0.0, d * tl.exp(m - m_new) + tl.exp(x - m_new))
        m = m_new
    # combine the lanes: the same rescaling rule, applied across the block
    row_max = tl.max(m, axis=0)
    row_sum = tl.sum(tl.where(m == float("-inf"), 0.0, d * tl.exp(m - row_max)), axis=0)
    # pass 2: normalise
    for start in range(0, n_cols, BLOCK):
        mask = start + cols < n_cols
        x = tl.load(x_row + start + cols, mask=mask, other=float("-inf")).to(tl.float32)
        y = tl.exp(x - row_max) / row_sum
        tl.store(out_row + start + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def softmax(x: torch.Tensor, block: int = 1024) -> torch.Tensor:
    assert x.ndim == 2 and x.stride(1) == 1
    n_rows, n_cols = x.shape
    out = torch.empty_like(x)
    block = min(block, triton.next_power_of_2(max(n_cols, 16)))
    softmax_kernel[(n_rows,)](x, out, n_cols, x.stride(0), out.stride(0), BLOCK=block, num_warps=8)
    return out


def torch_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x.float(), dim=-1).to(x.dtype)


def bytes_moved(n_rows: int, n_cols: int, element_size: int) -> int:
    return 2 * n_rows * n_cols * element_size  # ideal: read once, write once
