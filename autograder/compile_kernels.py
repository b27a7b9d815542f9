"""The course's Triton kernels for the compile report: how to get each one, the types of its
arguments, and the launch configurations it can use on a GPU (see compile_report.py).

Reference kernels are listed at every configuration their launcher or autotuner can pick; each
lab's solution kernel at the configuration of the launcher the lab gives the learner, so that
the report shows the learner and the reference racing in the same class of configuration.
"""
from __future__ import annotations

import contextlib
import importlib

from .compile_report import KernelSpec, solution_kernel


@contextlib.contextmanager
def as_on_gpu():
    """Evaluate launch-configuration functions as they would on a GPU."""
    from genfast import runtime
    saved = runtime.on_gpu
    runtime.on_gpu = lambda: True
    try:
        yield
    finally:
        runtime.on_gpu = saved


def gpu_config(module: str, function: str, *args, **kwargs) -> dict:
    with as_on_gpu():
        return dict(getattr(importlib.import_module(module), function)(*args, **kwargs))


def attr(module: str, name: str):
    return lambda: getattr(importlib.import_module(module), name)


F16 = "*fp16"
F32 = "*fp32"

SPECS: list[KernelSpec] = [
    # lab00 ---------------------------------------------------------------------------
    KernelSpec("vector_add.add_kernel (reference)", attr("kernels.vector_add", "add_kernel"),
               {"x_ptr": F32, "y_ptr": F32, "out_ptr": F32},
               lambda: [dict(BLOCK_SIZE=2048, num_warps=8)]),
    KernelSpec("lab00 add_kernel (solution)", lambda: solution_kernel("lab00_triton_warmup", "add_kernel", "add_kernel"),
               {"x_ptr": F32, "y_ptr": F32, "out_ptr": F32},
               lambda: [dict(BLOCK_SIZE=2048, num_warps=8)], reference=False),
    KernelSpec("softmax.softmax_kernel (reference)", attr("kernels.softmax", "softmax_kernel"),
               {"x_ptr": F32, "out_ptr": F32}, lambda: [dict(BLOCK=1024, num_warps=8)]),
    KernelSpec("lab00 softmax_kernel (solution)",
               lambda: solution_kernel("lab00_triton_warmup", "softmax_kernel", "softmax_kernel"),
               {"x_ptr": F32, "out_ptr": F32}, lambda: [dict(BLOCK=1024, num_warps=8)], reference=False),
    KernelSpec("matmul.matmul_kernel (reference)", attr("kernels.matmul", "matmul_kernel"),
               {"a_ptr": F16, "b_ptr": F16, "c_ptr": F16},
               lambda: [gpu_config("genfast.labs.lab00_triton_warmup", "matmul_block_sizes")], uses_dot=True),
    KernelSpec("lab00 matmul_kernel (solution)",
               lambda: solution_kernel("lab00_triton_warmup", "matmul_kernel", "matmul_kernel"),
               {"a_ptr": F16, "b_ptr": F16, "c_ptr": F16},
               lambda: [gpu_config("genfast.labs.lab00_triton_warmup", "matmul_block_sizes")],
               reference=False, uses_dot=True),
]
