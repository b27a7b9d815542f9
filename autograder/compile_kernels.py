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

# lab02: FlashAttention forward, bf16, head dims 64 and 128, causal and not ------------------
ATTENTION_POINTERS = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "LSE": "*fp32"}
ATTENTION_SCALARS = {"sm_scale": "fp32"}
ATTENTION_SHAPES = [(d, causal) for d in (64, 128) for causal in (False, True)]


def attention_autotune_configs() -> list[dict]:
    """Every configuration the reference's autotuner may pick, for each head dim and mask."""
    from kernels import attention
    out = []
    for d, causal in ATTENTION_SHAPES:
        for conf in attention._gpu_configs():
            if attention._keep_config(conf, {"HEAD_DIM": d}):
                out.append(dict(conf.kwargs, HEAD_DIM=d, CAUSAL=causal, num_warps=conf.num_warps,
                                num_stages=conf.num_stages))
    return out


def attention_launcher_configs() -> list[dict]:
    return [dict(gpu_config("genfast.labs.lab02_attention", "block_config", d, causal), HEAD_DIM=d, CAUSAL=causal)
            for d, causal in ATTENTION_SHAPES]


SPECS += [
    KernelSpec("attention._attn_fwd (reference, autotuned)", attr("kernels.attention", "_attn_fwd"),
               ATTENTION_POINTERS, attention_autotune_configs, ATTENTION_SCALARS, uses_dot=True),
    KernelSpec("attention._attn_fwd (reference, fixed config)", attr("kernels.attention", "_attn_fwd"),
               ATTENTION_POINTERS, attention_launcher_configs, ATTENTION_SCALARS, uses_dot=True),
    KernelSpec("lab02 flash_fwd_kernel (solution)",
               lambda: solution_kernel("lab02_attention", "flash_kernel", "flash_fwd_kernel"),
               ATTENTION_POINTERS, attention_launcher_configs, ATTENTION_SCALARS, reference=False, uses_dot=True),
]

# lab03: chunked linear attention (bf16) and the selective scan (fp32) ------------------------
LINEAR_POINTERS = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "LOG2_GAMMA": "*fp32"}
SCAN_POINTERS = {name: "*fp32" for name in ("X", "DELTA", "A", "BM", "CM", "Y")}


def chunked_configs(upcast: bool | None = False) -> list[dict]:
    extra = {} if upcast is None else {"UPCAST": upcast}
    return [dict(gpu_config("genfast.labs.lab03_linear_attention_mamba", "chunked_block_config", d, d), **extra)
            for d in (64, 128)]


def scan_configs() -> list[dict]:
    return [gpu_config("genfast.labs.lab03_linear_attention_mamba", "scan_block_config", 512, s) for s in (16, 64)]


SPECS += [
    KernelSpec("linear_attention._chunked_linear_attention_fwd (reference)",
               attr("kernels.linear_attention", "_chunked_linear_attention_fwd"), LINEAR_POINTERS, chunked_configs,
               uses_dot=True),
    KernelSpec("lab03 chunked_la_kernel (solution)",
               lambda: solution_kernel("lab03_linear_attention_mamba", "chunked_kernel", "chunked_la_kernel"),
               LINEAR_POINTERS, lambda: chunked_configs(None), reference=False, uses_dot=True),
    KernelSpec("selective_scan._selective_scan_fwd (reference)", attr("kernels.selective_scan", "_selective_scan_fwd"),
               SCAN_POINTERS, scan_configs),
    KernelSpec("lab03 selective_scan_kernel (solution)",
               lambda: solution_kernel("lab03_linear_attention_mamba", "selective_scan_kernel", "selective_scan_kernel"),
               SCAN_POINTERS, scan_configs, reference=False),
]

# lab01: fused sampling over a 32k and a 128k vocabulary -------------------------------------
SAMPLING_POINTERS = {"logits_ptr": "*fp32", "u_ptr": "*fp32", "out_ptr": "*i64"}
SAMPLING_SCALARS = {"inv_temperature": "fp32", "top_p": "fp32"}


def sampling_configs() -> list[dict]:
    return [gpu_config("genfast.labs.lab01_generation", "sample_launch_config", v) for v in (32768, 131072)]


SPECS += [
    KernelSpec("sampling.fused_sample_kernel (reference)", attr("kernels.sampling", "fused_sample_kernel"),
               SAMPLING_POINTERS, sampling_configs, SAMPLING_SCALARS,
               known_spill="one program holds a whole 32k-128k row of logits in registers (0.7-5.9 KB spilled at "
                           "8-32 warps); a version that streams the row in blocks is still to be written"),
    KernelSpec("lab01 fused_sample_kernel (solution)",
               lambda: solution_kernel("lab01_generation", "fused_sample_kernel", "fused_sample_kernel"),
               SAMPLING_POINTERS, sampling_configs, SAMPLING_SCALARS, reference=False),
]

# lab04: split-K decode over fp16 / int8 / packed int4 caches (d = 128), and the combine --------
DECODE_SCALARS = {"sm_scale": "fp32"}
CACHE_DTYPE = {16: "*fp16", 8: "*i8", 4: "*u8"}


def decode_pointers(bits: int) -> dict:
    return {"Q": "*fp16", "K": CACHE_DTYPE[bits], "V": CACHE_DTYPE[bits], "KS": "*fp32", "VS": "*fp32",
            "O_PART": "*fp32", "LSE_PART": "*fp32"}


def decode_configs(bits: int) -> list[dict]:
    # genfast.kvcache.split_config on a GPU: 64-token tiles, 4 warps, 2 stages (SPLIT_LEN is an argument)
    return [dict(BLOCK_N=64, HALF=64, BITS=bits, num_warps=4, num_stages=2)]


for _bits in (16, 8, 4):
    SPECS += [
        KernelSpec(f"kv_cache._decode_split_kernel int{_bits} (reference)", attr("kernels.kv_cache", "_decode_split_kernel"),
                   decode_pointers(_bits), lambda b=_bits: decode_configs(b), DECODE_SCALARS),
        KernelSpec(f"lab04 decode_split_kernel int{_bits} (solution)",
                   lambda: solution_kernel("lab04_kv_cache", "decode_kernel", "decode_split_kernel"),
                   decode_pointers(_bits), lambda b=_bits: decode_configs(b), DECODE_SCALARS, reference=False),
    ]
SPECS.append(KernelSpec("kv_cache._combine_kernel (reference)", attr("kernels.kv_cache", "_combine_kernel"),
                        {"O_PART": "*fp32", "LSE_PART": "*fp32", "O": "*fp16"},
                        lambda: [dict(D=128, BLOCK_S=s) for s in (2, 16, 64)]))

# lab05: MinHash signatures (int64 shingles, 128 hash functions) --------------------------------
MINHASH_POINTERS = {"X": "*i64", "LENGTHS": "*i64", "A": "*i64", "B": "*i64", "SIG": "*i64"}


def minhash_configs() -> list[dict]:
    return [gpu_config("genfast.curation.minhash", "block_config", 128)]


SPECS += [
    KernelSpec("minhash._minhash_kernel (reference)", attr("kernels.minhash", "_minhash_kernel"),
               MINHASH_POINTERS, minhash_configs),
    KernelSpec("lab05 minhash_kernel (solution)",
               lambda: solution_kernel("lab05_dataset_cards", "minhash_kernel", "minhash_kernel"),
               MINHASH_POINTERS, minhash_configs, reference=False),
]

# lab06: fused similarity + running top-8 (32 queries, dim 128, fp16 and fp32 documents) -------
def topk_pointers(dtype: str) -> dict:
    return {"Q": dtype, "D": dtype, "OUT_S": "*fp32", "OUT_I": "*i32"}


def topk_configs(precision: str) -> list[dict]:
    # genfast.agents.topk_launch.block_config on a GPU for 32 queries of dimension 128 (it also
    # counts the SMs, which needs a GPU): 32 x 64 x 64 tiles, 8 warps
    return [dict(BLOCK_M=32, BLOCK_N=64, BLOCK_D=64, K=8, K_PAD=8, PRECISION=precision, num_warps=8)]


# fp32 documents use input_precision="ieee" on purpose (exact scores, so ties resolve as in the
# torch reference): no tensor cores there, by design; fp16 documents must use them
TOPK_CASES = (("fp16", "*fp16", "tf32", True), ("fp32", "*fp32", "ieee", False))
SPECS += [
    KernelSpec(f"similarity_topk._topk_kernel {name} (reference)", attr("kernels.similarity_topk", "_topk_kernel"),
               topk_pointers(dtype), lambda p=precision: topk_configs(p), uses_dot=tensor_cores)
    for name, dtype, precision, tensor_cores in TOPK_CASES
] + [
    KernelSpec(f"lab06 topk_kernel {name} (solution)",
               lambda: solution_kernel("lab06_agents", "topk_kernel", "topk_kernel"),
               topk_pointers(dtype), lambda p=precision: topk_configs(p), reference=False, uses_dot=tensor_cores)
    for name, dtype, precision, tensor_cores in TOPK_CASES
]
