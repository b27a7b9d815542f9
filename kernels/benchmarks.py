"""`python -m autograder bench`: the course's reference kernels against the hardware limit.

Each row times one reference kernel on a large input (median of CUDA-event timings, L2
flushed, from `genfast.bench.time_gpu`) and turns the time into achieved throughput:
GB/s from the kernel module's `bytes_moved` for memory-bound kernels, TFLOP/s from
`matmul.flops` for matmul. It sets that against

* the hardware limit, measured in the same run: the bandwidth of a 1 GiB device-to-device
  copy (read + write bytes) for memory-bound kernels; torch.matmul for matmul;
* the nearest PyTorch op on the same input (ratio = torch time / kernel time, > 1: the
  kernel is faster).

A second table is the autograder's self-consistency check: each reference timed against
itself with `bench.time_pair`, as a learner's kernel would be. The ratio should be about
1.00 with a spread of a few percent; if it is not, speed grades on this machine are noise.

A later lab adds its kernel by appending one `BenchCase` to `CASES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from genfast import bench, checks, runtime
from kernels import (attention, flash_backward, kv_cache, linear_attention, matmul, minhash, selective_scan,
                     similarity_topk, softmax, vector_add)
from kernels import paged_attention

COPY_BYTES = 1 << 30
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass
class BenchCase:
    """One row of the table: a kernel and its nearest PyTorch op, run on the same inputs.

    make_inputs(shape, dtype, device) -> tuple of arguments for both `kernel` and `torch_op`.
    work(shape, dtype) -> bytes moved (unit "GB/s") or FLOPs (unit "TFLOP/s") at that shape.
    `inputs(scale)` shrinks every dimension by `scale`; the CPU test uses `test_scale`.
    """
    name: str
    shape: tuple
    dtype: torch.dtype
    make_inputs: Callable
    kernel: Callable
    torch_op: Callable
    work: Callable
    unit: str = "GB/s"
    test_scale: float = 0.01

    def scaled_shape(self, scale: float = 1.0) -> tuple:
        return tuple(max(1, int(d * scale)) for d in self.shape)

    def inputs(self, scale: float = 1.0, device: str | None = None) -> tuple:
        return self.make_inputs(self.scaled_shape(scale), self.dtype, device or runtime.device())

    @property
    def label(self) -> str:
        return f"{self.name:<12} {'x'.join(map(str, self.shape)):<16} {DTYPE_NAMES.get(self.dtype, self.dtype)}"


def randn(*shape, dtype, device, seed=0) -> torch.Tensor:
    gen = torch.Generator(device).manual_seed(seed)
    return torch.randn(*shape, generator=gen, device=device).to(dtype)


def two_vectors(shape, dtype, device):
    return randn(*shape, dtype=dtype, device=device), randn(*shape, dtype=dtype, device=device, seed=1)


def one_matrix(shape, dtype, device):
    return (randn(*shape, dtype=dtype, device=device),)


def two_matrices(shape, dtype, device):  # shape = (M, N, K): A is M x K, B is K x N
    m, n, k = shape
    return randn(m, k, dtype=dtype, device=device), randn(k, n, dtype=dtype, device=device, seed=1)


CASES: list[BenchCase] = []
for _dt in (torch.float32, torch.bfloat16):
    CASES.append(BenchCase("vector add", (1 << 26,), _dt, two_vectors, vector_add.add,
                           lambda x, y: x + y, lambda s, d: vector_add.bytes_moved(s[0], d.itemsize)))
for _dt in (torch.float32, torch.bfloat16):
    for _cols in (1024, 4096, 16384):
        CASES.append(BenchCase("row softmax", (4096, _cols), _dt, one_matrix, softmax.softmax,
                               lambda x: torch.softmax(x, dim=-1),
                               lambda s, d: softmax.bytes_moved(*s, d.itemsize)))
for _dt in (torch.float16, torch.bfloat16):
    for _size in (4096, 8192):
        CASES.append(BenchCase("matmul", (_size,) * 3, _dt, two_matrices, matmul.matmul, torch.matmul,
                               lambda s, d: matmul.flops(*s), unit="TFLOP/s"))
# lab 02: FlashAttention forward, B=4 H=16 N=4096 bf16, d=64/128, causal or not, vs torch SDPA (flash backend)
CASES += attention.bench_cases(BenchCase, randn)
# ... and its backward (dQ, dK, dV from the saved LSE) vs torch's FlashAttention-2 backward
CASES += flash_backward.bench_cases(BenchCase, randn)
# lab 03: chunked linear attention (B=4 H=16 N=4096 d=64/128 bf16) vs the masked quadratic form;
# selective scan (batch=4 L=1024 D=512 S=16) vs the sequential PyTorch loop
CASES += linear_attention.bench_cases(BenchCase, randn)
CASES += selective_scan.bench_cases(BenchCase, randn)
# lab 04: split-K, GQA-aware decode attention over an fp16 / KIVI int8 / int4 cache (B=8 H=32 d=128, N=4096/32768;
# 32 and 8 KV heads) vs torch SDPA fp16 decode
CASES += kv_cache.bench_cases(BenchCase, randn)
# lab 05: MinHash signatures, 4096 docs x 1024 shingles x 128 hash functions (int64 ops reported as T-ops/s)
CASES += minhash.bench_cases(BenchCase, randn)
# lab 06: fused similarity + top-k over a document matrix, vs (q @ D.T).topk
CASES += similarity_topk.bench_cases(BenchCase, randn)
# lab 08: paged decode over shuffled 16-token blocks, 32 requests of mixed length up to 8k (GQA 32:8, d=128 fp16),
# vs torch (gather + SDPA per request) and vs lab04's contiguous kernel at the same total tokens (should be >= 0.9x)
CASES += paged_attention.bench_cases(BenchCase, randn)

# Optional: the CUDA-model reduction through numba-cuda (a row is skipped if numba cannot compile).
try:
    from kernels import block_sum_cuda
except ImportError:  # numba or numba-cuda missing
    block_sum_cuda = None

if block_sum_cuda is not None:
    def _numba_view(t: torch.Tensor):
        """Zero-copy view for a launch: a CUDA array on the GPU, the numpy array in the simulator."""
        from numba import cuda
        return cuda.as_cuda_array(t) if t.is_cuda else t.numpy()

    def _vector_and_partials(shape, dtype, device):
        n_blocks = -(-shape[0] // block_sum_cuda.THREADS)
        return randn(*shape, dtype=dtype, device=device), torch.zeros(n_blocks, device=device)

    def _block_sum(x, partial):
        """One launch writes a partial sum per block; torch adds the partials on the device."""
        block_sum_cuda.block_sum_kernel[partial.numel(), block_sum_cuda.THREADS](
            _numba_view(x), _numba_view(partial))
        return partial.sum()

    CASES.append(BenchCase("block sum", (1 << 26,), torch.float32, _vector_and_partials, _block_sum,
                           lambda x, partial: x.sum(), lambda s, d: s[0] * d.itemsize,
                           test_scale=1e-5))  # the simulator runs one Python thread per CUDA thread


def copy_bandwidth(nbytes: int = COPY_BYTES) -> float:
    """GB/s of a device-to-device copy, counting the bytes read and the bytes written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = bench.time_gpu(lambda: dst.copy_(src))
    return 2 * nbytes / (t.median_ms * 1e-3) / 1e9


def _throughput(case: BenchCase, ms: float) -> float:
    return case.work(case.shape, case.dtype) / (ms * 1e-3) / (1e9 if case.unit == "GB/s" else 1e12)


def _fmt(value: float, unit: str) -> str:
    return f"{value:7.0f} {unit}" if unit == "GB/s" else f"{value:7.1f} {unit}"


def run_case(case: BenchCase, bandwidth: float) -> tuple[str, str]:
    """(table row, self-consistency row) for one case; raises if the kernel is wrong or fails."""
    args = case.inputs()
    run, ref = (lambda: case.kernel(*args)), (lambda: case.torch_op(*args))
    checks.compare(run(), ref(), what=case.name)  # never benchmark a wrong answer
    mine, theirs = bench.time_gpu(run), bench.time_gpu(ref)
    achieved, torch_achieved = _throughput(case, mine.median_ms), _throughput(case, theirs.median_ms)
    limit = bandwidth if case.unit == "GB/s" else torch_achieved
    row = (f"{case.label:<36} {mine.median_ms * 1e3:9.1f} us {_fmt(achieved, case.unit):>15} "
           f"{achieved / limit:8.0%}  {theirs.median_ms * 1e3:9.1f} us {_fmt(torch_achieved, case.unit):>15} "
           f"{theirs.median_ms / mine.median_ms:11.2f}x")
    a, b = bench.time_pair(run, run)
    ratio = a.median_ms / b.median_ms
    flag = "" if abs(ratio - 1) < 0.05 and max(a.spread, b.spread) < 0.1 else "  <- noisy"
    pair = f"{case.label:<36} ratio {ratio:5.3f}   spread {a.spread:5.1%} / {b.spread:5.1%}{flag}"
    return row, pair


def no_gpu_message() -> str:
    if runtime.cuda_available():  # a GPU is there, but COURSE_INTERPRET/TRITON_INTERPRET chose the interpreters
        return (f"Benchmarks need compiled kernels: the CPU interpreters are switched on "
                f"(COURSE_INTERPRET or TRITON_INTERPRET), so nothing was timed; unset them to benchmark "
                f"on {torch.cuda.get_device_name()} (cuda:{torch.cuda.current_device()}).")
    return ("Benchmarks need a GPU: this machine has none (torch.cuda.is_available() is False), so nothing "
            "was timed; on a machine with an NVIDIA GPU they run on the current CUDA device, cuda:0.")


def main() -> None:
    if not runtime.on_gpu():
        print(no_gpu_message())
        return
    print(runtime.describe())
    bandwidth = copy_bandwidth()
    print(f"hardware limit: {bandwidth:.0f} GB/s, a {COPY_BYTES >> 30} GiB device-to-device copy (read + write); "
          f"for matmul the limit is torch.matmul\n")
    print(f"{'kernel':<12} {'shape':<16} {'dtype':<6} {'time':>12} {'achieved':>15} {'of limit':>8}  "
          f"{'torch time':>12} {'torch achieved':>15} {'torch/kernel':>12}")
    pairs = []
    for case in CASES:
        try:
            row, pair = run_case(case, bandwidth)
            print(row, flush=True)
            pairs.append(pair)
        except Exception as exc:  # one broken row (e.g. numba without a CUDA toolkit) must not end the table
            print(f"{case.label:<36} skipped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        torch.cuda.empty_cache()
    print("of limit: achieved / hardware limit;  torch/kernel: torch time / kernel time (> 1: kernel faster)")
    print("\nself-consistency: each reference against itself with bench.time_pair "
          "(ratio should be ~1.00, spread small)")
    print("\n".join(pairs))


if __name__ == "__main__":
    main()
