"""Lab 00 reference kernels against PyTorch, under the CPU interpreters."""
import pytest
import torch

from genfast import checks
from kernels import block_sum_cuda, matmul, softmax, vector_add


@pytest.mark.parametrize("n", [1, 7, 2048, 2049, 10_000])
def test_vector_add(n):
    x, y = checks.randn(n, seed=1), checks.randn(n, seed=2)
    checks.compare(vector_add.add(x, y), vector_add.torch_add(x, y))


@pytest.mark.parametrize("rows,cols,block", [(1, 1, 16), (3, 4097, 1024), (5, 300, 64), (2, 64, 64)])
def test_softmax(rows, cols, block):
    x = checks.randn(rows, cols, seed=cols, scale=10)
    checks.compare(softmax.softmax(x, block=block), softmax.torch_softmax(x))


def test_softmax_masked_rows_and_leading_minus_inf_blocks():
    x = checks.randn(2, 300, seed=3)
    x[:, :200] = float("-inf")  # whole leading blocks of -inf, as a causal mask makes
    checks.compare(softmax.softmax(x, block=64), softmax.torch_softmax(x))


def test_softmax_strided_rows():
    x = checks.randn(4, 512, seed=4)[:, :300]
    checks.compare(softmax.softmax(x, block=128), softmax.torch_softmax(x))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (33, 70, 45), (64, 64, 64), (100, 3, 130)])
def test_matmul(m, k, n):
    a, b = checks.randn(m, k, seed=m), checks.randn(k, n, seed=n)
    checks.compare(matmul.matmul(a, b), matmul.torch_matmul(a, b), atol=1e-4)


def test_matmul_transposed_input_uses_strides():
    a, b = checks.randn(40, 50, seed=1).t(), checks.randn(40, 30, seed=2)
    checks.compare(matmul.matmul(a, b), matmul.torch_matmul(a, b), atol=1e-4)


@pytest.mark.parametrize("n", [1, 128, 129, 500])
def test_block_sum_numba_cuda(n):
    x = checks.randn(n, seed=n)
    checks.compare(block_sum_cuda.block_sum(x), block_sum_cuda.torch_sum(x), atol=1e-4, rtol=1e-5)


def test_a_wrong_kernel_is_caught_with_a_useful_message():
    import triton
    import triton.language as tl

    @triton.jit
    def add_without_mask(x_ptr, y_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n - 1  # off by one: the last element is never written
        tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + tl.load(y_ptr + offsets, mask=mask), mask=mask)

    def add(x, y):
        out = torch.zeros_like(x)
        add_without_mask[(triton.cdiv(x.numel(), 64),)](x, y, out, x.numel(), BLOCK_SIZE=64)
        return out

    case = checks.Case("n=100", lambda: dict(x=checks.randn(100, seed=1) + 5, y=checks.randn(100, seed=2) + 5))
    with pytest.raises(checks.CheckFailed) as err:
        checks.check_function(add, vector_add.torch_add, [case], hint="mask")
    assert "first bad index (99)" in str(err.value) and "1 of 100 values are wrong" in str(err.value)
