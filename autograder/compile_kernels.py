"""The course's Triton kernels for the compile report: how to get each one, the types of its
arguments, and the launch configurations it can use on a GPU (see compile_report.py).

Reference kernels are listed at every configuration their launcher or autotuner can pick; each
lab's solution kernel at the configuration of the launcher the lab gives the learner, so that
the report shows the learner and the reference racing in the same class of configuration. A
lab's kernel signatures (argument types, launcher configurations) live with its check helpers in
genfast/labs/<lab>.py: the speed cells compile the learner's own kernel from them on a machine
without a GPU, and the solution rows here use the same ones.
"""
from __future__ import annotations

import importlib

from genfast.compile_info import KernelSignature, as_on_gpu, gpu_configs
from genfast.labs import lab00_triton_warmup as lab00
from genfast.labs import lab01_generation as lab01
from genfast.labs import lab02_attention as lab02
from genfast.labs import lab03_linear_attention_mamba as lab03
from genfast.labs import lab04_kv_cache as lab04
from genfast.labs import lab05_dataset_cards as lab05
from genfast.labs import lab06_agents as lab06
from genfast.labs import lab08_serving as lab08

from .compile_report import KernelSpec, solution_kernel


def attr(module: str, name: str):
    return lambda: getattr(importlib.import_module(module), name)


def reference(name: str, module: str, kernel: str, signature: KernelSignature, **options) -> KernelSpec:
    """A reference kernel at the configurations of the learner's launcher it races."""
    return KernelSpec(name, attr(module, kernel), signature.pointers, lambda: gpu_configs(signature),
                      signature.scalars, **options)


def solution(lab: str, cell: str, signature: KernelSignature, label: str = "", **options) -> KernelSpec:
    """A lab's solution kernel, compiled from the notebook's cells, at its launcher's configurations."""
    return KernelSpec(f"{lab[:5]} {label or signature.name} (solution)",
                      lambda: solution_kernel(lab, cell, signature.name), signature.pointers,
                      lambda: gpu_configs(signature), signature.scalars, reference=False, **options)


F16 = "*fp16"
F32 = "*fp32"

SPECS: list[KernelSpec] = [
    # lab00 ---------------------------------------------------------------------------
    reference("vector_add.add_kernel (reference)", "kernels.vector_add", "add_kernel", lab00.ADD_KERNEL),
    solution("lab00_triton_warmup", "add_kernel", lab00.ADD_KERNEL),
    reference("softmax.softmax_kernel (reference)", "kernels.softmax", "softmax_kernel", lab00.SOFTMAX_KERNEL),
    solution("lab00_triton_warmup", "softmax_kernel", lab00.SOFTMAX_KERNEL),
    reference("matmul.matmul_kernel (reference)", "kernels.matmul", "matmul_kernel", lab00.MATMUL_KERNEL,
              uses_dot=True),
    solution("lab00_triton_warmup", "matmul_kernel", lab00.MATMUL_KERNEL, uses_dot=True),
]

# lab02: FlashAttention forward, bf16, head dims 64 and 128, causal and not ------------------
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


SPECS += [
    KernelSpec("attention._attn_fwd (reference, autotuned)", attr("kernels.attention", "_attn_fwd"),
               lab02.FLASH_KERNEL.pointers, attention_autotune_configs, lab02.FLASH_KERNEL.scalars, uses_dot=True),
    reference("attention._attn_fwd (reference, fixed config)", "kernels.attention", "_attn_fwd", lab02.FLASH_KERNEL,
              uses_dot=True),
    solution("lab02_attention", "flash_kernel", lab02.FLASH_KERNEL, uses_dot=True),
]

# lab02: FlashAttention backward (kernels/flash_backward.py), bf16, head dims 64 and 128: the
# reference and the learner's kernels at the tiles of genfast's backward_block_config ------------
SPECS += [
    KernelSpec("flash_backward._bwd_preprocess (reference)", attr("kernels.flash_backward", "_bwd_preprocess"),
               dict(lab02.BACKWARD_POINTERS, O="*bf16"), lambda: [dict(HEAD_DIM=d, BLOCK_M=64) for d in (64, 128)]),
    reference("flash_backward._bwd_dkdv (reference)", "kernels.flash_backward", "_bwd_dkdv", lab02.FLASH_BWD_DKDV_KERNEL,
              uses_dot=True),
    solution("lab02_attention", "flash_bwd_dkdv", lab02.FLASH_BWD_DKDV_KERNEL, uses_dot=True),
    reference("flash_backward._bwd_dq (reference)", "kernels.flash_backward", "_bwd_dq", lab02.FLASH_BWD_DQ_KERNEL,
              uses_dot=True),
    solution("lab02_attention", "flash_bwd_dq", lab02.FLASH_BWD_DQ_KERNEL, uses_dot=True),
]

# lab03: chunked linear attention (bf16) and the selective scan (fp32) ------------------------
SPECS += [
    KernelSpec("linear_attention._chunked_linear_attention_fwd (reference)",
               attr("kernels.linear_attention", "_chunked_linear_attention_fwd"), lab03.CHUNKED_KERNEL.pointers,
               lambda: [dict(c, UPCAST=False) for c in gpu_configs(lab03.CHUNKED_KERNEL)], uses_dot=True),
    solution("lab03_linear_attention_mamba", "chunked_kernel", lab03.CHUNKED_KERNEL, uses_dot=True),
    reference("selective_scan._selective_scan_fwd (reference)", "kernels.selective_scan", "_selective_scan_fwd",
              lab03.SCAN_KERNEL),
    solution("lab03_linear_attention_mamba", "selective_scan_kernel", lab03.SCAN_KERNEL),
]

# lab01: fused sampling over a 32k and a 128k vocabulary -------------------------------------
SPECS += [
    reference("sampling.fused_sample_kernel (reference)", "kernels.sampling", "fused_sample_kernel",
              lab01.SAMPLE_KERNEL),
    solution("lab01_generation", "fused_sample_kernel", lab01.SAMPLE_KERNEL),
]

# lab04: split-K, GQA-aware decode over fp16 / int8 / packed int4 caches (d = 128): the G query
# heads of a KV head are one tile of a tl.dot, so tensor cores must show; and the combine ---------
for _bits in (16, 8, 4):
    SPECS += [
        reference(f"kv_cache._decode_split_kernel int{_bits} (reference)", "kernels.kv_cache", "_decode_split_kernel",
                  lab04.decode_kernel_signature(_bits), uses_dot=True),
        solution("lab04_kv_cache", "decode_kernel", lab04.decode_kernel_signature(_bits),
                 label=f"decode_split_kernel int{_bits}", uses_dot=True),
    ]
SPECS.append(KernelSpec("kv_cache._combine_kernel (reference)", attr("kernels.kv_cache", "_combine_kernel"),
                        {"O_PART": "*fp32", "LSE_PART": "*fp32", "O": "*fp16"},
                        lambda: [dict(D=128, BLOCK_S=s) for s in (2, 16, 64)]))

# lab05: MinHash signatures (int64 shingles, 128 hash functions) --------------------------------
SPECS += [
    reference("minhash._minhash_kernel (reference)", "kernels.minhash", "_minhash_kernel", lab05.MINHASH_KERNEL),
    solution("lab05_dataset_cards", "minhash_kernel", lab05.MINHASH_KERNEL),
]

# lab06: fused similarity + running top-8 (32 queries, dim 128, fp16 and fp32 documents) -------
# fp32 documents use input_precision="ieee" on purpose (exact scores, so ties resolve as in the
# torch reference): no tensor cores there, by design; fp16 documents must use them
for _precision, _name in (("tf32", "fp16"), ("ieee", "fp32")):
    SPECS += [
        reference(f"similarity_topk._topk_kernel {_name} (reference)", "kernels.similarity_topk", "_topk_kernel",
                  lab06.topk_kernel_signature(_precision), uses_dot=_precision == "tf32"),
        solution("lab06_agents", "topk_kernel", lab06.topk_kernel_signature(_precision), label=f"topk_kernel {_name}",
                 uses_dot=_precision == "tf32"),
    ]

# lab08: paged decode attention over a block table (fp16, GQA tile of 16 query rows, 16-token blocks,
# d = 64 / 128) and the packed variable-length prefill (FlashAttention with cu_seqlens offsets) ----------
SPECS += [
    reference("paged_attention._paged_decode_kernel (reference)", "kernels.paged_attention", "_paged_decode_kernel",
              lab08.PAGED_DECODE_KERNEL, uses_dot=True),
    solution("lab08_serving", "paged_kernel", lab08.PAGED_DECODE_KERNEL, uses_dot=True),
    reference("paged_prefill._varlen_attention_kernel (reference)", "kernels.paged_prefill", "_varlen_attention_kernel",
              lab08.VARLEN_KERNEL, uses_dot=True),
    solution("lab08_serving", "packed_prefill", lab08.VARLEN_KERNEL, label="paged prefill varlen_attention_kernel",
             uses_dot=True),
]
