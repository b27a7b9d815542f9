"""Checks for lab00_triton_warmup: vector add, row softmax, tiled matmul, roofline, block sum.

The specs here are plain PyTorch (`x + y`, `torch.softmax`, `a @ b`, `x.sum()`): the graded
answers are the Triton and CUDA kernels, not these. Speed is timed against the reference
kernel only by the grader, which passes it in as `reference`.
"""
import numpy as np
import torch

from genfast import bench, checks, runtime
from genfast.compile_info import KernelSignature

THREADS = 128  # threads per block of the CUDA block-sum kernel, a power of two


def _cases(fmt, sizes, make):
    return [checks.Case(fmt(s), lambda s=s: make(s)) for s in sizes]


# 1. vector add ----------------------------------------------------------------------
ADD_HINT = "mask the lanes past n_elements in both tl.load and tl.store"


def check_add(add, sizes=(1, 1000, 2048, 4097)):
    cases = _cases(lambda n: f"n={n}", sizes, lambda n: dict(x=checks.randn(n, seed=n), y=checks.randn(n, seed=n + 1)))
    checks.check_function(add, lambda x, y: x + y, cases, hint=ADD_HINT, name="add")


# the kernels as compiled for a GPU (the launchers' configurations), for the compile report
ADD_KERNEL = KernelSignature("add_kernel", {"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32"},
                             lambda: [dict(BLOCK_SIZE=2048, num_warps=8)], reference="vector_add.add_kernel (reference)")


def speed_add(add, reference=None):
    inputs = lambda seed: (bench.randn(2**26, seed=seed), bench.randn(2**26, seed=seed + 1))
    return bench.speed_points(add, reference, inputs=inputs, points=1, name="vector add", signature=ADD_KERNEL)


# 2. row softmax ---------------------------------------------------------------------
SOFTMAX_HINT = ("if only rows wider than BLOCK fail, look at how the running sum is rescaled when the max "
                "grows; if the last columns fail, look at the mask")


def check_softmax(row_softmax, shapes=((1, 1), (4, 100), (3, 256), (5, 1000)), block=256):
    cases = _cases(lambda s: f"{s[0]}x{s[1]}, BLOCK={block}", shapes,
                   lambda s: dict(x=checks.randn(*s, seed=s[1], scale=8), block=block))
    spec = lambda x, block: torch.softmax(x.float(), dim=-1).to(x.dtype)
    checks.check_function(row_softmax, spec, cases, hint=SOFTMAX_HINT, name="row_softmax")


SOFTMAX_KERNEL = KernelSignature("softmax_kernel", {"x_ptr": "*fp32", "out_ptr": "*fp32"},
                                 lambda: [dict(BLOCK=1024, num_warps=8)], reference="softmax.softmax_kernel (reference)")


def speed_softmax(row_softmax, reference=None):
    inputs = lambda seed: (bench.randn(4096, 8192, seed=seed),)
    return bench.speed_points(row_softmax, reference, inputs=inputs, points=1, name="row softmax",
                              signature=SOFTMAX_KERNEL)


# 3. tiled matmul --------------------------------------------------------------------
MATMUL_HINT = ("mask the loads on K, keep rows and columns past M/N in bounds (mask them, or wrap them with % M, % N), "
               "mask the store, and advance both pointer grids by BLOCK_K each step")


def matmul_block_sizes() -> dict:
    """Tile sizes for the launcher: small in the interpreter, tensor-core sized on a GPU.

    128 x 128 x 64 tiles with 8 warps: 128 x 256 (the Triton tutorial's H100 choice) spills
    registers on sm_80 and sm_90 with this Triton (`python -m autograder compile-report`)."""
    if runtime.on_gpu():
        return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)
    return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4)


def check_matmul(tiled_matmul, shapes=((1, 1, 1), (64, 32, 64), (33, 70, 45)), atol=None, rtol=1e-2):
    # on a GPU fp32 inputs would mean TF32 inside tl.dot; the half types are what matters there
    dtypes = [torch.float16, torch.bfloat16] if runtime.on_gpu() else [torch.float32]
    for dtype in dtypes:
        cases = _cases(lambda s: f"({s[0]}x{s[1]}) @ ({s[1]}x{s[2]}) {dtype}", shapes, lambda s: dict(
            a=checks.randn(s[0], s[1], seed=s[0], dtype=dtype), b=checks.randn(s[1], s[2], seed=s[2], dtype=dtype)))
        tol = atol if atol is not None else (1e-4 if dtype == torch.float32 else 1e-2)
        print(checks.precision(dtype, atol=tol, rtol=rtol))
        checks.check_function(tiled_matmul, lambda a, b: (a.float() @ b.float()).to(a.dtype), cases,
                              atol=tol, rtol=rtol, hint=MATMUL_HINT, name="tiled_matmul")


MATMUL_KERNEL = KernelSignature("matmul_kernel", {"a_ptr": "*fp16", "b_ptr": "*fp16", "c_ptr": "*fp16"},
                                lambda: [matmul_block_sizes()], reference="matmul.matmul_kernel (reference)")


def speed_matmul(tiled_matmul, reference=None):
    inputs = lambda seed: (bench.randn(4096, 4096, seed=seed, dtype=torch.float16),
                           bench.randn(4096, 4096, seed=seed + 1, dtype=torch.float16))
    return bench.speed_points(tiled_matmul, reference, inputs=inputs, points=1, name="tiled matmul",
                              signature=MATMUL_KERNEL)


# 4. the roofline --------------------------------------------------------------------
def check_roofline(vector_add_cost, matmul_cost, attainable_flops, extra=False):
    checks.check_value("vector_add_cost(1000, 4)", vector_add_cost, 1000, 4, expected=(1000, 12000))
    checks.check_value("matmul_cost(2, 3, 4, 2)", matmul_cost, 2, 3, 4, 2, expected=(48, 52),
                       hint="bytes: read A (M*K) and B (K*N) once, write C (M*N) once")
    checks.check_value("attainable, memory-bound", attainable_flops, 1e9, 1e9, 1e15, 3e12, expected=3e12)
    checks.check_value("attainable, compute-bound", attainable_flops, 1e12, 1e9, 1e15, 3e12, expected=1e15)
    if extra:
        checks.check_value("matmul_cost(4096, 4096, 4096, 2)", matmul_cost, 4096, 4096, 4096, 2,
                           expected=(2 * 4096**3, 3 * 4096**2 * 2))
        checks.check_value("vector_add_cost(7, 2)", vector_add_cost, 7, 2, expected=(7, 42))
        checks.check_value("attainable at the ridge", attainable_flops, 3e3, 10.0, 900.0, 3.0, expected=900.0)


# 5. CUDA block sum ------------------------------------------------------------------
def _to_device(x: torch.Tensor):
    """A numba device array viewing (GPU) or holding (simulator) the tensor's data."""
    from numba import cuda
    return cuda.as_cuda_array(x) if x.is_cuda else cuda.to_device(x.detach().contiguous().numpy())


def block_sum(x: torch.Tensor, kernel) -> torch.Tensor:
    """Sum of a 1-D float32 tensor with `kernel`: one launch for the per-block partial sums,
    then the host adds them."""
    from numba import cuda
    x = x.contiguous().float()
    n_blocks = max(1, (x.numel() + THREADS - 1) // THREADS)
    partial = cuda.to_device(np.zeros(n_blocks, dtype=np.float32))
    kernel[n_blocks, THREADS](_to_device(x), partial)
    return torch.from_numpy(partial.copy_to_host()).double().sum().float()


def check_block_sum(kernel, sizes=(1, 128, 300)):
    cases = _cases(lambda n: f"n={n}", sizes, lambda n: dict(x=checks.randn(n, seed=n)))
    checks.check_function(lambda x: block_sum(x, kernel), lambda x: x.double().sum().float().cpu(), cases,
                          atol=1e-4, rtol=1e-5, name="block_sum",
                          hint="every thread must reach cuda.syncthreads(); pad past the end with 0")
