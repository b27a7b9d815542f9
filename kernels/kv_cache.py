"""KV-cache quantization (KIVI style) and single-query decode attention over a quantized cache.

Generating one token reads the whole KV cache once: per layer and sequence 2 x kv_heads x
head_dim x tokens values, for a handful of FLOPs per value. Decode attention is memory-bound, so
its time is the cache's size in bytes over the memory bandwidth, and fewer bits per value is
directly a faster step (and a longer context in the same memory).

Quantization (symmetric, round to nearest; `scale = absmax / qmax`, `code = round(x / scale)`):

* keys **per channel**: one scale per (batch, kv head, channel) over all tokens. Keys have a
  few outlier channels (large in every token); a per-channel scale keeps them from crushing the
  other channels' resolution (KIVI, Liu et al. 2024).
* values **per token**: one scale per (batch, kv head, token). Values have no such channels, and
  the output is a per-token weighted sum of them.
* int8 codes in [-127, 127] (torch.int8); int4 codes in [-7, 7], stored with an offset of 8 as
  nibbles 1..15, **two a byte**: byte j of a row of head_dim d holds channel j in its low nibble
  and channel j + d/2 in its high nibble (the two halves of the row, not neighbours, so a kernel
  unpacks them with one `& 15` and one `>> 4` and never interleaves).

Both scales fold out of the inner loops of attention:

    q . k_n = sum_c q_c (s^K_c kq_{n,c}) = sum_c (q_c s^K_c) kq_{n,c}     -> scale q once
    sum_n p_n v_n = sum_n (p_n s^V_n) vq_n                                 -> scale p per tile

Decode attention, split-K ("flash-decoding"): one query per (batch, head); the N cached tokens
are cut into splits of SPLIT_LEN tokens, one program per (batch, head, split) streams its split
in BLOCK_N tiles with the online softmax and writes an unnormalised-then-normalised partial
output o_s and its log-sum-exp lse_s. A second small kernel (or torch) combines them:

    LSE = log sum_s exp(lse_s),     o = sum_s exp(lse_s - LSE) o_s

which is exact: each o_s is softmax-weighted within its split, exp(lse_s - LSE) is the split's
share of the total mass. Splitting gives B x H x splits programs instead of B x H, enough to fill
the GPU when the batch is small and the context long.

Instructor side: the quantizer and the int4 packing (lab04's graded `quantize`, `pack_int4`,
`unpack_int4`) and what is built on them (`quantize_kv`, `dequantize_kv`, the quantized reference),
the decode kernels and the combine (the graded `decode_split_kernel`, `combine_splits`). The cache
record `QuantizedKV`, the launch configuration `split_config` (the lab's launcher and these kernels
use the same one), the byte counts and the plain torch spec are genfast's (`genfast.kvcache`).
"""
from __future__ import annotations

import math
import torch
import triton
import triton.language as tl

# the machinery shared with the learner's launcher (one copy: genfast.kvcache)
from genfast.kvcache import (QuantizedKV, bytes_moved, kv_bytes, sdpa_decode, split_config,  # noqa: F401
                             torch_decode_attention)

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


# ----------------------------------------------------------------------------------------------
# quantization helpers (plain PyTorch)
# ----------------------------------------------------------------------------------------------
def quantize_symmetric(x: torch.Tensor, bits: int, dim: int):
    """(codes int8, scale fp32) with x ~ codes * scale; one scale per slice along `dim` (kept, size 1)."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.float().abs().amax(dim=dim, keepdim=True) / qmax
    codes = torch.round(x.float() / scale.clamp_min(1e-12)).clamp(-qmax, qmax).to(torch.int8)
    return codes, scale


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-8, 7], last dim d (even) -> uint8 (..., d/2): low nibble channel j, high j + d/2."""
    d = codes.shape[-1]
    assert d % 2 == 0, "int4 packing needs an even head dim"
    u = (codes.to(torch.int16) + 8).to(torch.uint8)
    return u[..., : d // 2] | (u[..., d // 2:] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (..., d/2) -> int8 codes (..., d): the inverse of `pack_int4`."""
    lo = (packed & 15).to(torch.int8) - 8
    hi = (packed >> 4).to(torch.int8) - 8
    return torch.cat([lo, hi], dim=-1)


def quantize_int8_per_channel(k):
    """Keys (..., N, d) -> (int8 codes (..., N, d), scales (..., d))."""
    codes, scale = quantize_symmetric(k, 8, dim=-2)
    return codes, scale.squeeze(-2)


def quantize_int8_per_token(v):
    """Values (..., N, d) -> (int8 codes (..., N, d), scales (..., N))."""
    codes, scale = quantize_symmetric(v, 8, dim=-1)
    return codes, scale.squeeze(-1)


def quantize_int4_per_channel(k):
    """Keys (..., N, d) -> (packed uint8 (..., N, d/2), scales (..., d))."""
    codes, scale = quantize_symmetric(k, 4, dim=-2)
    return pack_int4(codes), scale.squeeze(-2)


def quantize_int4_per_token(v):
    """Values (..., N, d) -> (packed uint8 (..., N, d/2), scales (..., N))."""
    codes, scale = quantize_symmetric(v, 4, dim=-1)
    return pack_int4(codes), scale.squeeze(-1)


def quantize_kv(k, v, bits: int) -> QuantizedKV:
    """Keys per channel, values per token, to int8 or packed int4."""
    if bits == 8:
        (kq, ks), (vq, vs) = quantize_int8_per_channel(k), quantize_int8_per_token(v)
    elif bits == 4:
        (kq, ks), (vq, vs) = quantize_int4_per_channel(k), quantize_int4_per_token(v)
    else:
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    return QuantizedKV(kq, vq, ks.contiguous(), vs.contiguous(), bits)


def dequantize_kv(cache: QuantizedKV, dtype=torch.float32):
    """(k, v) of shape (B, H_kv, N, d) from a QuantizedKV."""
    kq, vq = (unpack_int4(cache.k), unpack_int4(cache.v)) if cache.bits == 4 else (cache.k, cache.v)
    k = kq.float() * cache.k_scale[..., None, :]
    v = vq.float() * cache.v_scale[..., :, None]
    return k.to(dtype), v.to(dtype)


# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------
def torch_decode_attention_quantized(q, cache: QuantizedKV, scale=None):
    """Dequantize, then attend: the reference for the quantized kernels."""
    k, v = dequantize_kv(cache)
    return torch_decode_attention(q, k, v, scale)


# ----------------------------------------------------------------------------------------------
# Triton: split-K decode attention over an fp16 / int8 / int4 cache, and the combine
# ----------------------------------------------------------------------------------------------
@triton.jit
def _load_halves(ptrs, ok, half_offset, BITS: tl.constexpr):
    """Rows `ok` of a K or V tile as fp32 (channels [0, d/2), channels [d/2, d)), codes not yet scaled.

    int4: one byte holds channel j (low nibble) and j + d/2 (high), stored +8; fp16/int8: the second
    half sits `half_offset` elements further."""
    if BITS == 4:
        packed = tl.load(ptrs, mask=ok[:, None], other=0)
        return (packed & 15).to(tl.float32) - 8.0, (packed >> 4).to(tl.float32) - 8.0
    lo = tl.load(ptrs, mask=ok[:, None], other=0).to(tl.float32)
    hi = tl.load(ptrs + half_offset, mask=ok[:, None], other=0).to(tl.float32)
    return lo, hi


@triton.jit
def _decode_split_kernel(Q, K, V, KS, VS, O_PART, LSE_PART,
                         N, SPLIT_LEN, H, GROUP, sm_scale,
                         stride_kb, stride_kh, stride_kn, stride_kd,
                         stride_vb, stride_vh, stride_vn, stride_vd,
                         HALF: tl.constexpr, BLOCK_N: tl.constexpr, BITS: tl.constexpr):
    """Program (bh, split): the softmax-weighted average of values over tokens
    [split * SPLIT_LEN, min((split + 1) * SPLIT_LEN, N)) for query row bh, and its log-sum-exp.

    Q (B*H, 2*HALF) contiguous; K, V (B, H_kv, N, d) (fp16 / int8) or (B, H_kv, N, HALF) uint8
    (BITS=4); KS (B*H_kv, d), VS (B*H_kv, N) fp32 contiguous (unused when BITS=16);
    O_PART (B*H, n_splits, d) fp32, LSE_PART (B*H, n_splits) fp32 (natural log)."""
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    b = pid_bh // H
    kvh = (pid_bh % H) // GROUP
    kv_row = (b * (H // GROUP) + kvh).to(tl.int64)
    k_base = K + b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + kvh.to(tl.int64) * stride_vh
    offs_n = tl.arange(0, BLOCK_N)
    offs_h = tl.arange(0, HALF)
    D: tl.constexpr = 2 * HALF

    # the query, in two halves (channels [0, d/2) and [d/2, d)), pre-scaled
    q_lo = tl.load(Q + pid_bh.to(tl.int64) * D + offs_h).to(tl.float32)
    q_hi = tl.load(Q + pid_bh.to(tl.int64) * D + HALF + offs_h).to(tl.float32)
    qk_scale = sm_scale * 1.4426950408889634          # exp(x) = exp2(x log2 e)
    if BITS != 16:                                     # per-channel key scales fold into q
        q_lo = q_lo * tl.load(KS + kv_row * D + offs_h)
        q_hi = q_hi * tl.load(KS + kv_row * D + HALF + offs_h)
    q_lo = q_lo * qk_scale
    q_hi = q_hi * qk_scale

    start = split * SPLIT_LEN
    end = tl.minimum(start + SPLIT_LEN, N)
    m_i = tl.full((), float("-inf"), tl.float32)
    l_i = tl.full((), 0.0, tl.float32)
    acc_lo = tl.zeros([HALF], dtype=tl.float32)
    acc_hi = tl.zeros([HALF], dtype=tl.float32)
    for n0 in range(start, end, BLOCK_N):
        rows = n0 + offs_n
        ok = rows < end
        k_ptrs = k_base + rows[:, None].to(tl.int64) * stride_kn + offs_h[None, :] * stride_kd
        v_ptrs = v_base + rows[:, None].to(tl.int64) * stride_vn + offs_h[None, :] * stride_vd
        k_lo, k_hi = _load_halves(k_ptrs, ok, HALF * stride_kd, BITS)
        s = tl.sum(k_lo * q_lo[None, :] + k_hi * q_hi[None, :], axis=1)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        if BITS != 16:                                 # per-token value scales fold into p
            p = p * tl.load(VS + kv_row * N + rows, mask=ok, other=0.0)
        v_lo, v_hi = _load_halves(v_ptrs, ok, HALF * stride_vd, BITS)
        acc_lo = acc_lo * alpha + tl.sum(p[:, None] * v_lo, axis=0)
        acc_hi = acc_hi * alpha + tl.sum(p[:, None] * v_hi, axis=0)
        m_i = m_new

    out = O_PART + (pid_bh.to(tl.int64) * n_splits + split) * D
    tl.store(out + offs_h, acc_lo / l_i)
    tl.store(out + HALF + offs_h, acc_hi / l_i)
    tl.store(LSE_PART + pid_bh.to(tl.int64) * n_splits + split, (m_i + tl.log2(l_i)) * 0.6931471805599453)


@triton.jit
def _combine_kernel(O_PART, LSE_PART, O, n_splits, D: tl.constexpr, BLOCK_S: tl.constexpr):
    """Program bh: o = sum_s exp(lse_s - LSE) o_s, LSE = logsumexp_s lse_s."""
    pid = tl.program_id(0).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, D)
    s_ok = offs_s < n_splits
    lse = tl.load(LSE_PART + pid * n_splits + offs_s, mask=s_ok, other=float("-inf"))
    m = tl.max(lse, axis=0)
    w = tl.exp(lse - m)
    w = w / tl.sum(w, axis=0)
    o = tl.load(O_PART + (pid * n_splits + offs_s[:, None]) * D + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    tl.store(O + pid * D + offs_d, tl.sum(w[:, None] * o, axis=0).to(O.dtype.element_ty))


def combine_splits_torch(o_part, lse_part):
    """The combine in PyTorch: o_part (..., S, d), lse_part (..., S) -> (..., d)."""
    w = torch.softmax(lse_part, dim=-1)
    return (w[..., None] * o_part).sum(-2)


def _decode(q, k, v, k_scale, v_scale, bits, scale=None, block_n=None, split_len=None, out_dtype=None):
    B, H, d = q.shape
    H_kv, N = k.shape[1], k.shape[2]
    assert H % H_kv == 0, "query heads must be a multiple of kv heads"
    assert d % 2 == 0 and (d // 2) & (d // 2 - 1) == 0 and d >= 4, "head dim must be a power of two >= 4"
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    cfg = split_config(B * H, N)
    if block_n is not None:
        cfg["BLOCK_N"] = block_n
    if split_len is not None:
        cfg["SPLIT_LEN"] = split_len
    split_len = cfg.pop("SPLIT_LEN")
    n_splits = triton.cdiv(N, split_len)
    q = q.contiguous()
    if bits == 16:
        k_scale = v_scale = q  # never read
    o_part = torch.empty(B * H, n_splits, d, device=q.device, dtype=torch.float32)
    lse_part = torch.empty(B * H, n_splits, device=q.device, dtype=torch.float32)
    _decode_split_kernel[(B * H, n_splits)](
        q, k, v, k_scale, v_scale, o_part, lse_part, N, split_len, H, H // H_kv, scale,
        *k.stride(), *v.stride(), HALF=d // 2, BITS=bits, **cfg)
    out = torch.empty(B, H, d, device=q.device, dtype=out_dtype or q.dtype)
    _combine_kernel[(B * H,)](o_part, lse_part, out, n_splits, D=d,
                              BLOCK_S=max(2, triton.next_power_of_2(n_splits)))
    return out


def decode_attention_fp16(q, k, v, scale=None, **cfg):
    """Split-K decode attention over an unquantized cache: q (B, H, d), k, v (B, H_kv, N, d)."""
    return _decode(q, k, v, None, None, 16, scale, **cfg)


def decode_attention_int8(q, cache: QuantizedKV, scale=None, **cfg):
    assert cache.bits == 8
    return _decode(q, cache.k, cache.v, cache.k_scale, cache.v_scale, 8, scale, **cfg)


def decode_attention_int4(q, cache: QuantizedKV, scale=None, **cfg):
    assert cache.bits == 4
    return _decode(q, cache.k, cache.v, cache.k_scale, cache.v_scale, 4, scale, **cfg)


def decode_attention(q, cache, scale=None, **cfg):
    """Dispatch on the cache: a (k, v) tuple (fp16/fp32) or a QuantizedKV (int8 / int4)."""
    if isinstance(cache, QuantizedKV):
        fn = decode_attention_int8 if cache.bits == 8 else decode_attention_int4
        return fn(q, cache, scale, **cfg)
    return decode_attention_fp16(q, *cache, scale=scale, **cfg)


# ----------------------------------------------------------------------------------------------
# benchmark rows for `python -m autograder bench`
# ----------------------------------------------------------------------------------------------
def bench_cases(BenchCase, randn):
    """BenchCase rows: decode attention B=8 H=32 d=128, N = 4096 / 32768, over an fp16, int8 and
    int4 cache, against torch's fp16 decode (SDPA with one query) on the same (dequantized) cache;
    GB/s of the kernel's own traffic (`bytes_moved`: codes + scales + q + o).

    Takes the BenchCase class and the randn helper of kernels/benchmarks.py so that this module
    does not import it (benchmarks imports the kernels, not the other way round)."""
    def inputs(bits):
        def make(shape, dtype, device):
            B, H, N, d = shape
            d = max(16, triton.next_power_of_2(d))   # the CPU test shrinks d; keep a supported one
            q = randn(B, H, d, dtype=dtype, device=device, seed=0)
            k = randn(B, H, N, d, dtype=dtype, device=device, seed=1)
            v = randn(B, H, N, d, dtype=dtype, device=device, seed=2)
            if bits == 16:
                return q, (k, v), k, v
            cache = quantize_kv(k, v, bits)
            kd, vd = dequantize_kv(cache, dtype)
            return q, cache, kd, vd
        return make

    cases = []
    for N in (4096, 32768):
        for bits in (16, 8, 4):
            cases.append(BenchCase(
                f"decode {'fp16' if bits == 16 else f'int{bits}'}", (8, 32, N, 128), torch.float16, inputs(bits),
                lambda q, cache, kd, vd: decode_attention(q, cache),
                lambda q, cache, kd, vd: sdpa_decode(q, kd, vd),
                lambda s, dt, b=bits: bytes_moved(*s, b), test_scale=0.01))
    return cases
