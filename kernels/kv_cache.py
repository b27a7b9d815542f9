"""KV-cache quantization (KIVI) and single-query decode attention over a quantized cache.

Generating one token reads the whole KV cache once: per layer and sequence 2 x kv_heads x
head_dim x tokens values, for 4 FLOPs per cached value pair and query head, so about 1 FLOP per
byte of an fp16 multi-head cache (G per byte for grouped-query attention with G query heads per
KV head, 2G / 4G for int8 / int4; `genfast.kvcache.decode_intensity`). Decode attention is
memory-bound: its time is the bytes it reads over the memory bandwidth, and fewer bits per value
is directly a faster step (and a longer context in the same memory).

Quantization, asymmetric (KIVI, Liu et al. 2024): per slice a minimum m and a scale
s = (max - m) / (2^b - 1), `code = round((x - m) / s)` in [0, 2^b - 1], x ~ code * s + m, every
one of the 2^b levels used and the range fitted to the slice (the symmetric abs-max baseline,
`quantize_symmetric`, uses 2^b - 1 levels centred on 0: int2 is {-1, 0, 1}).

* keys **per channel** over a group of `group` tokens: one (scale, minimum) per (batch, kv head,
  group, channel). Keys have a few outlier channels (large in every token); a per-channel range
  keeps them from crushing the other channels' resolution;
* values **per token**: one (scale, minimum) per (batch, kv head, token);
* the newest tokens (the residual window, `residual` to `residual + group - 1` of them) stay in
  full precision, keys and values: groups are quantized once they are complete and old enough;
* int8 codes as uint8 in [0, 255]; int4 codes in [0, 15], **two a byte**: byte j of a row of head
  dim d holds channel j in its low nibble and channel j + d/2 in its high nibble (the two halves
  of the row, not neighbours, so a kernel unpacks them with one `& 15` and one `>> 4`).

The scales and minima fold out of the inner loops of attention. For a tile of keys inside one
group g (the kernel's tile is the group):

    q . k_n = sum_c q_c (s_gc c_nc + m_gc) = sum_c (q_c s_gc) c_nc + q . m_g   -> scale q, add one
                                                                                  bias per tile
    sum_n p_n v_n = sum_n (p_n s_n) c_n + (sum_n p_n m_n) 1                    -> scale p per tile

Decode attention, split-K ("flash-decoding"), GQA-aware: one program per (batch, KV head, split)
holds the G query heads of that KV head as the rows of one query tile (padded to at least 16
rows for tl.dot, the padding masked), so each KV tile is read once for all G heads and the two
products are matrix products on tensor cores:

    S = Q_g K_tile^T  (BLOCK_G x BLOCK_N),     O_g += P V_tile  (BLOCK_G x d).

The N cached tokens are cut into splits of SPLIT_LEN tokens; each program streams its split in
BLOCK_N tiles with the online softmax and writes a normalised partial output o_s and its
log-sum-exp lse_s per query row. A second small kernel (or torch) combines them:

    LSE = log sum_s exp(lse_s),     o = sum_s exp(lse_s - LSE) o_s

which is exact: each o_s is softmax-weighted within its split, exp(lse_s - LSE) is the split's
share of the total mass. The quantized tokens and the full-precision window are two launches of
the same kernel (bits 8/4, then bits 16) writing splits of the same partial buffers: the exact
combine is what lets one softmax span two storage formats.

Masking: the key tile's rows past the split's end get -inf scores. That is safe because every
visited tile holds a visible key (a tile starts at n0 < end), so the running max m is finite
after the first tile and exp2(m_old - m_new) is never exp2(-inf - -inf) = nan. A split with no
key at all (a launch with more splits than tokens) never enters the loop: it stores o = 0 and
lse = -inf (guarded: acc / l would be 0 / 0), which the combine weighs by exp(-inf) = 0.

Instructor side: the quantizer and the int4 packing (lab04's graded `quantize`, `pack_int4`,
`unpack_int4`) and what is built on them (`quantize_kv`, `dequantize_kv`, the quantized reference),
the decode kernels and the combine (the graded `decode_split_kernel`, `combine_splits`). The cache
record `QuantizedKV`, the split into launches `decode_parts`, the launch configuration
`split_config` (the lab's launcher and these kernels use the same ones), the symmetric baseline,
the byte counts and the plain torch spec are genfast's (`genfast.kvcache`).
"""
from __future__ import annotations

import math
import torch
import triton
import triton.language as tl

# the machinery shared with the learner's launcher (one copy: genfast.kvcache)
from genfast.kvcache import (QuantizedKV, bytes_moved, decode_parts, kv_bytes, quantize_symmetric,  # noqa: F401
                             quantized_length, sdpa_decode, split_config, torch_decode_attention)

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


# ----------------------------------------------------------------------------------------------
# quantization helpers (plain PyTorch)
# ----------------------------------------------------------------------------------------------
def quantize_asymmetric(x: torch.Tensor, bits: int, dim: int):
    """(codes uint8 in [0, 2^bits - 1], scale fp32, minimum fp32) with x ~ codes * scale + minimum;
    one (scale, minimum) per slice along `dim` (kept, size 1)."""
    levels = 2 ** bits - 1
    lo = x.float().amin(dim=dim, keepdim=True)
    scale = (x.float().amax(dim=dim, keepdim=True) - lo) / levels
    codes = torch.round((x.float() - lo) / scale.clamp_min(1e-12)).clamp(0, levels).to(torch.uint8)
    return codes, scale, lo


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes in [0, 15], last dim d (even) -> uint8 (..., d/2): low nibble channel j, high j + d/2."""
    d = codes.shape[-1]
    assert d % 2 == 0, "int4 packing needs an even head dim"
    u = codes.to(torch.uint8)
    return u[..., : d // 2] | (u[..., d // 2:] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (..., d/2) -> uint8 codes (..., d): the inverse of `pack_int4`."""
    return torch.cat([packed & 15, packed >> 4], dim=-1)


def quantize_kv(k, v, bits: int, group: int = 64, residual: int = 128) -> QuantizedKV:
    """KIVI: the oldest quantized_length(N, group, residual) tokens as codes (keys per channel in
    groups of `group` tokens, values per token), int8 or packed int4; the rest, the newest,
    kept as they are (the residual window)."""
    if bits not in (8, 4):
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    B, H_kv, N, d = k.shape
    nq = quantized_length(N, group, residual)
    groups = k[:, :, :nq].reshape(B, H_kv, nq // group, group, d)
    kq, ks, km = quantize_asymmetric(groups, bits, dim=3)             # (B, H_kv, Nq/group, group, d)
    vq, vs, vm = quantize_asymmetric(v[:, :, :nq], bits, dim=-1)      # (B, H_kv, Nq, d)
    kq = kq.reshape(B, H_kv, nq, d)
    if bits == 4:
        kq, vq = pack_int4(kq), pack_int4(vq)
    return QuantizedKV(kq.contiguous(), vq.contiguous(), ks.squeeze(3).contiguous(), km.squeeze(3).contiguous(),
                       vs.squeeze(-1).contiguous(), vm.squeeze(-1).contiguous(),
                       k[:, :, nq:].contiguous(), v[:, :, nq:].contiguous(), bits, group)


def dequantize_kv(cache: QuantizedKV, dtype=torch.float32):
    """(k, v) of shape (B, H_kv, N, d) from a QuantizedKV: codes x scale + minimum, then the window."""
    kq, vq = (unpack_int4(cache.k), unpack_int4(cache.v)) if cache.bits == 4 else (cache.k, cache.v)
    B, H_kv, nq, d = kq.shape
    group = cache.group
    k = kq.float().reshape(B, H_kv, nq // group, group, d) * cache.k_scale[:, :, :, None] + cache.k_min[:, :, :, None]
    v = vq.float() * cache.v_scale[..., None] + cache.v_min[..., None]
    k = torch.cat([k.reshape(B, H_kv, nq, d), cache.k_res.float()], dim=2)
    v = torch.cat([v, cache.v_res.float()], dim=2)
    return k.to(dtype), v.to(dtype)


# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------
def torch_decode_attention_quantized(q, cache: QuantizedKV, scale=None):
    """Dequantize, then attend: the reference for the quantized kernels."""
    k, v = dequantize_kv(cache)
    return torch_decode_attention(q, k, v, scale)


# ----------------------------------------------------------------------------------------------
# Triton: split-K, GQA-aware decode attention over an fp16 / int8 / int4 cache, and the combine
# ----------------------------------------------------------------------------------------------
@triton.jit
def _load_halves_t(ptrs, ok, half_offset, BITS: tl.constexpr, DT: tl.constexpr):
    """A tile of codes or values, channels [0, d/2) and [d/2, d), in the dtype DT of the dots.

    `ok` masks the tile along its token axis (already broadcast to the tile's shape). int4: one
    byte holds channel j (low nibble) and j + d/2 (high); fp16 / int8: the second half sits
    `half_offset` elements further."""
    if BITS == 4:
        packed = tl.load(ptrs, mask=ok, other=0)
        return (packed & 15).to(DT), (packed >> 4).to(DT)
    lo = tl.load(ptrs, mask=ok, other=0).to(DT)
    hi = tl.load(ptrs + half_offset, mask=ok, other=0).to(DT)
    return lo, hi


@triton.jit
def _decode_split_kernel(Q, K, V, KS, KM, VS, VM, O_PART, LSE_PART,
                         N, SPLIT_LEN, H_KV, G, sm_scale, n_slots,
                         stride_kb, stride_kh, stride_kn, stride_kd,
                         stride_vb, stride_vh, stride_vn, stride_vd,
                         HALF: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, BITS: tl.constexpr):
    """Program (kv_row, split), kv_row = b * H_KV + kv head: for the G query heads of that KV head,
    the softmax-weighted average of values over tokens [split * SPLIT_LEN, min(.. + SPLIT_LEN, N))
    and its log-sum-exp.

    Q (B*H, 2*HALF) contiguous (query rows kv_row * G + g); K, V (B, H_kv, N, d) (fp16/fp32, or
    uint8 codes for BITS=8) or (B, H_kv, N, HALF) uint8 (BITS=4), strided; BITS 8/4: KS, KM
    (B*H_kv, N / BLOCK_N, d) per-channel key scale and minimum of each group (= tile) of tokens,
    VS, VM (B*H_kv, N) per-token value scale and minimum, fp32 contiguous (unused when BITS=16);
    O_PART (B*H, n_slots, d) fp32 and LSE_PART (B*H, n_slots) fp32 (natural log), pointing at
    this launch's first slot: the program writes slot `split` of each of its query rows."""
    kv_row = tl.program_id(0)
    split = tl.program_id(1)
    b = kv_row // H_KV
    kvh = kv_row % H_KV
    k_base = K + b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + kvh.to(tl.int64) * stride_vh
    offs_g = tl.arange(0, BLOCK_G)
    offs_n = tl.arange(0, BLOCK_N)
    offs_h = tl.arange(0, HALF)
    D: tl.constexpr = 2 * HALF
    DT = Q.dtype.element_ty                          # the dots run in q's dtype: fp16 on a GPU

    # the G query rows of this KV head (rows past G are padding: loaded as 0, never stored),
    # in two halves (channels [0, d/2) and [d/2, d)), pre-scaled for exp2
    q_rows = kv_row.to(tl.int64) * G + offs_g
    g_ok = offs_g < G
    q_ptrs = Q + q_rows[:, None] * D + offs_h[None, :]
    qk_scale = sm_scale * 1.4426950408889634          # exp(x) = exp2(x log2 e)
    q_lo = tl.load(q_ptrs, mask=g_ok[:, None], other=0.0).to(tl.float32) * qk_scale
    q_hi = tl.load(q_ptrs + HALF, mask=g_ok[:, None], other=0.0).to(tl.float32) * qk_scale

    start = split * SPLIT_LEN
    end = tl.minimum(start + SPLIT_LEN, N)
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc_lo = tl.zeros([BLOCK_G, HALF], dtype=tl.float32)
    acc_hi = tl.zeros([BLOCK_G, HALF], dtype=tl.float32)
    for n0 in range(start, end, BLOCK_N):
        rows = n0 + offs_n
        ok = rows < end                               # row n0 < end: every tile has a visible key
        # keys, transposed (HALF x BLOCK_N), and the scores S = Q K^T (BLOCK_G x BLOCK_N)
        # (offsets inside one head fit in int32; the head's base is int64)
        kt_ptrs = k_base + (offs_h[:, None] * stride_kd + rows[None, :] * stride_kn)
        kt_lo, kt_hi = _load_halves_t(kt_ptrs, ok[None, :], HALF * stride_kd, BITS, DT)
        if BITS == 16:
            s = tl.dot(q_lo.to(DT), kt_lo)
            s = tl.dot(q_hi.to(DT), kt_hi, s)
        else:
            # the tile is one key group: its per-channel scale multiplies q, its minimum adds q . m
            grp = (kv_row.to(tl.int64) * (N // BLOCK_N) + n0 // BLOCK_N) * D
            ks_lo, ks_hi = tl.load(KS + grp + offs_h), tl.load(KS + grp + HALF + offs_h)
            km_lo, km_hi = tl.load(KM + grp + offs_h), tl.load(KM + grp + HALF + offs_h)
            s = tl.dot((q_lo * ks_lo[None, :]).to(DT), kt_lo)
            s = tl.dot((q_hi * ks_hi[None, :]).to(DT), kt_hi, s)
            s += tl.sum(q_lo * km_lo[None, :] + q_hi * km_hi[None, :], axis=1)[:, None]
        s = tl.where(ok[None, :], s, float("-inf"))
        # online softmax, one running max and sum per query row
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc_lo = acc_lo * alpha[:, None]
        acc_hi = acc_hi * alpha[:, None]
        # values (BLOCK_N x HALF): O += P V
        v_ptrs = v_base + (rows[:, None] * stride_vn + offs_h[None, :] * stride_vd)
        v_lo, v_hi = _load_halves_t(v_ptrs, ok[:, None], HALF * stride_vd, BITS, DT)
        if BITS != 16:
            # per-token value scales fold into p (after l_i: they weight the values, not the
            # softmax), the minima add sum_n p_n m_n to every channel
            vs = tl.load(VS + kv_row.to(tl.int64) * N + rows, mask=ok, other=0.0)
            vm = tl.load(VM + kv_row.to(tl.int64) * N + rows, mask=ok, other=0.0)
            bias = tl.sum(p * vm[None, :], axis=1)[:, None]
            acc_lo += bias
            acc_hi += bias
            p = p * vs[None, :]
        acc_lo = tl.dot(p.to(DT), v_lo, acc_lo)
        acc_hi = tl.dot(p.to(DT), v_hi, acc_hi)
        m_i = m_new

    # a split with no key (l_i = 0) stores o = 0 and lse = -inf instead of 0 / 0
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    out = O_PART + (q_rows[:, None] * n_slots + split) * D + offs_h[None, :]
    tl.store(out, acc_lo / l_safe[:, None], mask=g_ok[:, None])
    tl.store(out + HALF, acc_hi / l_safe[:, None], mask=g_ok[:, None])
    lse = tl.where(l_i > 0.0, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    tl.store(LSE_PART + q_rows * n_slots + split, lse, mask=g_ok)


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


def block_g(G: int) -> int:
    """Query rows of the kernel's tile: the G heads of a group, padded to a power of two >= 16
    (tl.dot's smallest tile on older Triton versions and the m16 of the tensor-core instruction)."""
    return max(16, triton.next_power_of_2(G))


def split_partials(q, k, v, scales, bits, cfg, o_part, lse_part, n_splits=None, scale=None):
    """One launch of the split kernel over one part of the cache (k, v with `scales` (k_scale,
    k_min, v_scale, v_min) or None), writing slots [0, n_splits) of the views o_part (B*H, ., d),
    lse_part (B*H, .) (whose rows hold `n_slots` = o_part.stride(0) / d slots). n_splits defaults
    to the splits the part needs; more leaves the extra splits empty (o = 0, lse = -inf)."""
    B, H, d = q.shape
    H_kv, N = k.shape[1], k.shape[2]
    cfg = dict(cfg)
    split_len = cfg.pop("SPLIT_LEN")
    n_splits = triton.cdiv(N, split_len) if n_splits is None else n_splits
    ks, km, vs, vm = scales if scales is not None else (q,) * 4   # not read for bits 16
    _decode_split_kernel[(B * H_kv, n_splits)](
        q, k, v, ks, km, vs, vm, o_part, lse_part, N, split_len, H_kv, H // H_kv,
        1.0 / math.sqrt(d) if scale is None else scale, lse_part.stride(0),
        *k.stride(), *v.stride(), HALF=d // 2, BLOCK_G=block_g(H // H_kv), BITS=bits, **cfg)
    return n_splits


def decode_attention(q, cache, scale=None, block_n=None, split_len=None, out_dtype=None):
    """Split-K decode attention: q (B, H, d); cache a (k, v) tuple (B, H_kv, N, d) (fp16/fp32) or
    a QuantizedKV (int8 / int4 codes, then the full-precision window) -> (B, H, d).

    block_n / split_len override the tile and split of full-precision parts (a quantized part's
    tile is its key group)."""
    B, H, d = q.shape
    assert d >= 32 and d & (d - 1) == 0, "head dim must be a power of two >= 32 (tl.dot needs d/2 >= 16)"
    parts = decode_parts(cache)
    assert H % parts[0][0].shape[1] == 0, "query heads must be a multiple of kv heads"
    for i, (k, v, scales, bits, cfg) in enumerate(parts):
        if bits == 16:
            cfg = dict(cfg, **({} if block_n is None else dict(BLOCK_N=block_n)),
                       **({} if split_len is None else dict(SPLIT_LEN=split_len)))
        parts[i] = (k, v, scales, bits, cfg)
    n_slots = sum(triton.cdiv(k.shape[2], cfg["SPLIT_LEN"]) for k, _, _, _, cfg in parts)
    q = q.contiguous()
    o_part = torch.empty(B * H, n_slots, d, device=q.device, dtype=torch.float32)
    lse_part = torch.empty(B * H, n_slots, device=q.device, dtype=torch.float32)
    first = 0
    for k, v, scales, bits, cfg in parts:
        first += split_partials(q, k, v, scales, bits, cfg, o_part[:, first:], lse_part[:, first:], scale=scale)
    out = torch.empty(B, H, d, device=q.device, dtype=out_dtype or q.dtype)
    _combine_kernel[(B * H,)](o_part, lse_part, out, n_slots, D=d, BLOCK_S=max(2, triton.next_power_of_2(n_slots)))
    return out


def decode_attention_fp16(q, k, v, scale=None, **cfg):
    """Split-K decode attention over an unquantized cache: q (B, H, d), k, v (B, H_kv, N, d)."""
    return decode_attention(q, (k, v), scale, **cfg)


# ----------------------------------------------------------------------------------------------
# benchmark rows for `python -m autograder bench`
# ----------------------------------------------------------------------------------------------
def bench_cases(BenchCase, randn):
    """BenchCase rows: decode attention B=8 H=32 d=128, N = 4096 / 32768, over an fp16, int8 and
    int4 cache (KIVI: key groups of 64 tokens, a 128-token fp16 window), multi-head (32 KV heads)
    and GQA (8 KV heads, Llama-3-8B's shape), against torch's fp16 decode (SDPA with one query) on
    the same (dequantized) cache; GB/s of the kernel's own traffic (`bytes_moved`: each KV head
    read once, codes + scales + window + q + o).

    Takes the BenchCase class and the randn helper of kernels/benchmarks.py so that this module
    does not import it (benchmarks imports the kernels, not the other way round)."""
    def inputs(bits, kv_div):
        def make(shape, dtype, device):
            B, H, N, d = shape
            d = max(32, triton.next_power_of_2(d))   # the CPU test shrinks d; keep a supported one
            H_kv = max(1, H // kv_div)
            q = randn(B, H_kv * kv_div, d, dtype=dtype, device=device, seed=0)
            k = randn(B, H_kv, N, d, dtype=dtype, device=device, seed=1)
            v = randn(B, H_kv, N, d, dtype=dtype, device=device, seed=2)
            if bits == 16:
                return q, (k, v), k, v
            cache = quantize_kv(k, v, bits, group=64, residual=128)
            kd, vd = dequantize_kv(cache, dtype)
            return q, cache, kd, vd
        return make

    def _bench_bytes(shape, bits, kv_div):
        B, H, N, d = shape
        H_kv = max(1, H // kv_div)
        return bytes_moved(B, H_kv * kv_div, N, d, bits, H_kv=H_kv)

    cases = []
    for kv_div, label in ((1, ""), (4, " GQA 4:1")):
        for N in (4096, 32768):
            for bits in (16, 8, 4):
                cases.append(BenchCase(
                    f"decode {'fp16' if bits == 16 else f'int{bits}'}{label}", (8, 32, N, 128), torch.float16,
                    inputs(bits, kv_div),
                    lambda q, cache, kd, vd: decode_attention(q, cache),
                    lambda q, cache, kd, vd: sdpa_decode(q, kd, vd),
                    lambda s, dt, b=bits, r=kv_div: _bench_bytes(s, b, r), test_scale=0.01))
    return cases
