"""A sum reduction written in CUDA's own model, through numba-cuda.

Triton hides threads; CUDA shows them. Each block of THREADS threads copies its slice
of x into fast on-chip shared memory, then halves the number of active threads at
every step, each adding its partner's value, with a barrier (syncthreads) between
steps so nobody reads a value before it is written. Thread 0 writes the block's sum;
the host adds the per-block partial sums. On a CPU, NUMBA_ENABLE_CUDASIM=1 runs the
same kernel in numba's simulator, one Python thread per CUDA thread.
"""
import torch

from genfast.labs.lab00_triton_warmup import THREADS  # (importing genfast sets up NUMBA_ENABLE_CUDASIM first)
from genfast.labs.lab00_triton_warmup import block_sum as launch_block_sum
from numba import cuda, float32


@cuda.jit
def block_sum_kernel(x, partial):
    shared = cuda.shared.array(THREADS, float32)
    tid = cuda.threadIdx.x
    i = cuda.blockIdx.x * cuda.blockDim.x + tid
    shared[tid] = x[i] if i < x.size else 0.0
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if tid < stride:
            shared[tid] += shared[tid + stride]
        cuda.syncthreads()
        stride //= 2
    if tid == 0:
        partial[cuda.blockIdx.x] = shared[0]


def block_sum(x: torch.Tensor, kernel=None) -> torch.Tensor:
    """Sum of a 1-D float32 tensor: one kernel launch for partial sums, then the host adds them
    (the launcher the lab gives learners, here with the reference kernel)."""
    return launch_block_sum(x, kernel or block_sum_kernel)


def torch_sum(x: torch.Tensor) -> torch.Tensor:
    return x.double().sum().float().cpu()
