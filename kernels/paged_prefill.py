"""Prefill of packed variable-length prompts: FlashAttention over one sequence that holds several
prompts back to back, causal within each prompt and zero across prompts (block-diagonal).

A padded batch of prompts of lengths L_1 .. L_n computes n x max(L) rows and n x max(L)^2 / 2 scores;
most of it is padding when the lengths differ (a prompt of 5 tokens next to one of 100 is 95%
padding). Packing concatenates them into T = sum L_i rows; the cumulative offsets

    cu_seqlens = [0, L_1, L_1 + L_2, ..., T]      (int32, n + 1 entries)

say where each prompt starts. Attention is then block-diagonal-causal: row t of prompt i
(cu_seqlens[i] <= t < cu_seqlens[i + 1]) attends to rows s with cu_seqlens[i] <= s <= t.

The kernel is lab02's FlashAttention forward with one more level of indexing: program (m_block,
i * H + h) handles query rows m_block * BLOCK_M .. of prompt i, head h (the grid has the query blocks of
the longest prompt; a program past its prompt's end returns at once). It streams the key blocks of the
same prompt up to the diagonal with the online softmax (exp2, log2(e) folded into the scale):

    m_new = max(m, rowmax(S)),  alpha = 2^(m - m_new),  P = 2^(S - m_new),
    l = alpha l + rowsum(P),    acc = alpha acc + P V,    O = acc / l.

Rows past the prompt's end and keys past the diagonal or the prompt's end are masked with -inf;
every row's key 0 (its prompt's first token) is always visible, so no row is all -inf. Work is
sum L_i^2 / 2 (plus the partial tiles), and no score is ever computed across two prompts.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from genfast.serving import padded_prefill_spec, padding_waste, prefill_config, varlen_attention_spec  # noqa: F401



@triton.jit
def _varlen_attention_kernel(Q, K, V, O, CU_SEQLENS, sm_scale, H,
                             stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
                             D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Program (m_block, i * H + h). Q, K, V, O (T, H, D) packed rows (last dim contiguous);
    CU_SEQLENS (n + 1,) int32."""
    m_block = tl.program_id(0)
    pid = tl.program_id(1)
    i = pid // H
    h = pid % H
    start = tl.load(CU_SEQLENS + i)
    length = tl.load(CU_SEQLENS + i + 1) - start
    m0 = m_block * BLOCK_M
    if m0 >= length:                                  # this prompt is shorter: nothing to do
        return
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    row_ok = offs_m < length
    # this prompt's rows of head h: a 64-bit base once, then 32-bit offsets inside the prompt
    q_base = Q + start.to(tl.int64) * stride_qt + h * stride_qh
    k_base = K + start.to(tl.int64) * stride_kt + h * stride_kh
    v_base = V + start.to(tl.int64) * stride_vt + h * stride_vh
    o_base = O + start.to(tl.int64) * stride_ot + h * stride_oh
    q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    DT = q.dtype
    q = (q.to(tl.float32) * (sm_scale * 1.4426950408889634)).to(DT)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    stop = tl.minimum(m0 + BLOCK_M, length)          # keys of this prompt up to the block's last row
    for n0 in range(0, stop, BLOCK_N):
        cols = n0 + offs_n
        col_ok = cols < length
        kt = tl.load(k_base + cols[None, :] * stride_kt + offs_d[:, None], mask=col_ok[None, :], other=0.0)
        s = tl.dot(q, kt)
        visible = (cols[None, :] <= offs_m[:, None]) & col_ok[None, :]
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
        acc = tl.dot(p.to(DT), v, acc * alpha[:, None])
        m_i = m_new
    o = acc / l_i[:, None]
    tl.store(o_base + offs_m[:, None] * stride_ot + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=row_ok[:, None])


def varlen_attention(q, k, v, cu_seqlens, max_len=None, **override):
    """Packed causal attention: q, k, v (T, H, d), cu_seqlens (n + 1,) int; max_len: the longest prompt
    (a host int; read from cu_seqlens if not given) -> (T, H, d) in q's dtype."""
    T, H, d = q.shape
    assert d >= 16 and d & (d - 1) == 0, "head dim must be a power of two >= 16"
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32).contiguous()
    if max_len is None:
        max_len = int((cu[1:] - cu[:-1]).max())
    cfg = dict(prefill_config(d), **override)
    o = torch.empty_like(q)
    n = cu.numel() - 1
    grid = (triton.cdiv(max_len, cfg["BLOCK_M"]), n * H)
    _varlen_attention_kernel[grid](q, k, v, o, cu, 1.0 / math.sqrt(d), H, q.stride(0), q.stride(1), k.stride(0),
                                   k.stride(1), v.stride(0), v.stride(1), o.stride(0), o.stride(1), D=d, **cfg)
    return o


def pack_prompts(prompts):
    """Token lists -> (tokens (T,) int64, cu_seqlens (n + 1,) int32, positions (T,) int64: each token's
    position inside its own prompt)."""
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.int64)
    tokens = torch.tensor([t for p in prompts for t in p], dtype=torch.int64)
    cu = torch.zeros(len(prompts) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    positions = torch.arange(int(lengths.sum())) - torch.repeat_interleave(cu[:-1].long(), lengths)
    return tokens, cu, positions


def random_packed(lengths, H, d, dtype=torch.float32, device="cpu", seed=0):
    """q, k, v (T, H, d) of packed prompts of the given lengths, and their cu_seqlens."""
    gen = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    q, k, v = (torch.randn(T, H, d, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
    cu = torch.tensor([0] + torch.cumsum(torch.tensor(lengths), 0).tolist(), dtype=torch.int32, device=device)
    return q, k, v, cu


if __name__ == "__main__":
    from genfast import bench, checks, runtime
    dtype = torch.float16 if runtime.on_gpu() else torch.float32
    dev = runtime.device()
    tol = {} if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    for lengths in ([1], [5, 17, 1, 40], [64, 3, 33]):
        q, k, v, cu = random_packed(lengths, 2, 32, dtype, dev)
        checks.compare(varlen_attention(q, k, v, cu), varlen_attention_spec(q, k, v, cu).to(dtype),
                       what=f"packed prefill {lengths}", **tol)
        print(f"packed prefill {lengths}: ok; padding would waste {padding_waste(lengths)['scores_wasted']:.0%} "
              f"of the attention scores")
    if runtime.on_gpu():
        lengths = [int(x) for x in torch.randint(64, 2048, (16,), generator=torch.Generator().manual_seed(0))]
        q, k, v, cu = random_packed(lengths, 16, 128, dtype, dev)
        m = max(lengths)
        t_packed = bench.time_gpu(lambda: varlen_attention(q, k, v, cu, m))
        t_padded = bench.time_gpu(lambda: padded_prefill_spec(q, k, v, cu, m))
        print(f"16 prompts of 64..2048 tokens, H=16 d=128 fp16: packed {t_packed}, padded SDPA {t_padded}")
