"""Scaled dot-product attention: the naive form, RoPE, and a FlashAttention forward in Triton.

For one head, queries Q, keys K, values V of shape (N, d) and scale s = 1/sqrt(d):

    S = s * Q K^T                     (N, N) scores
    S_ij = -inf where j > i           (causal: token i may only look at tokens j <= i)
    LSE_i = log sum_j exp(S_ij)       log-sum-exp of row i
    P = exp(S - LSE)                  (N, N) row-stochastic attention weights
    O = P V                           (N, d)

The naive form materialises S and P: O(N^2) time *and* O(N^2) memory per head.

FlashAttention computes the same O without ever storing S or P. One program owns a tile of
BLOCK_M query rows and streams the keys/values in blocks of BLOCK_N, keeping per row a running
max m, a running sum l of exp(S - m), and an unnormalised output acc. A new block S_blk gives

    m' = max(m, rowmax(S_blk))
    alpha = exp(m - m')               rescale everything computed against the old max
    P_blk = exp(S_blk - m')
    l' = l * alpha + rowsum(P_blk)
    acc' = acc * alpha + P_blk V_blk

and at the end O = acc / l, LSE = m + log(l). Memory is O(N d) (O and LSE only); the work is
the same O(N^2 d), but each K/V block is read from HBM once per query tile instead of the
N x N matrices making round trips through it. The kernel works in base 2 (exp2 is one
hardware instruction): log2(e) is folded into the scale, and LSE is converted back to
natural log on the way out.

Causal attention: for query tile [start, start + BLOCK_M) the key blocks left of `start` are
fully visible (no mask needed, the fast loop), the blocks on the diagonal need the mask
j <= i, and blocks right of the tile are fully masked and never visited (half the work).

The backward pass needs no stored P: it recomputes P = exp(s Q K^T - LSE) from the saved LSE
(`attention_backward`, plain PyTorch).

RoPE (rotary position embedding, `rope_cos_sin`, `apply_rope`) rotates each pair of
channels (x_i, x_{i + d/2}) of a query or key at position p by the angle p * theta_i,
theta_i = base^(-2i/d). A dot product of two rotated vectors depends only on the relative
position: <R(p) q, R(p') k> = <q, R(p' - p) k>.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from genfast import runtime
# the learner's given launcher uses the same fixed tiles: one copy, in the learner package
from genfast.labs.lab02_attention import block_config

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
HEAD_DIMS = (16, 32, 64, 128)


# ----------------------------------------------------------------------------------------------
# plain PyTorch references
# ----------------------------------------------------------------------------------------------
def torch_attention(q, k, v, causal=False, scale=None):
    """Naive attention in fp32 (fp64 for fp64 inputs): (O in q's dtype, LSE (..., N) in fp32)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    s = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * scale
    if causal:
        n_q, n_k = s.shape[-2:]
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=s.device).tril(n_k - n_q)
        s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None])
    return (p @ v.to(acc)).to(q.dtype), lse.to(torch.float32 if acc == torch.float32 else acc)


def torch_multi_head_attention(x, w_qkv, w_o, n_heads, causal=True):
    """x (B, N, C) -> (B, N, C): project to Q, K, V, split into heads, attend, merge, project."""
    B, N, C = x.shape
    q, k, v = (x @ w_qkv).split(C, dim=-1)
    q, k, v = (t.reshape(B, N, n_heads, C // n_heads).transpose(1, 2) for t in (q, k, v))
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return o.transpose(1, 2).reshape(B, N, C) @ w_o


def attention_backward(q, k, v, o, lse, do, causal=False, scale=None):
    """(dq, dk, dv) of O = softmax(s Q K^T) V from the saved LSE, without a stored P.

        P = exp(s Q K^T - LSE)       (recomputed; masked entries are exp(-inf) = 0)
        dV = P^T dO
        dP = dO V^T
        D_i = sum_j P_ij dP_ij = rowsum(dO * O)
        dS = P * (dP - D)            (softmax Jacobian, row by row)
        dQ = s dS K,  dK = s dS^T Q
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qf, kf, vf, of, dof = (t.to(acc) for t in (q, k, v, o, do))
    s = (qf @ kf.transpose(-1, -2)) * scale
    if causal:
        n_q, n_k = s.shape[-2:]
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=s.device).tril(n_k - n_q)
        s = s.masked_fill(~mask, float("-inf"))
    p = torch.exp(s - lse[..., None].to(acc))
    dv = p.transpose(-1, -2) @ dof
    dp = dof @ vf.transpose(-1, -2)
    delta = (dof * of).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    dq = (ds @ kf) * scale
    dk = (ds.transpose(-1, -2) @ qf) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def rope_cos_sin(n, d, base=10000.0, device=None, positions=None):
    """cos and sin of the rotation angles, each (n, d/2): angle[p, i] = p * base^(-2i/d)."""
    positions = torch.arange(n, device=device, dtype=torch.float32) if positions is None else positions.float()
    inv_freq = base ** (-torch.arange(0, d, 2, device=positions.device, dtype=torch.float32) / d)
    angles = positions[:, None] * inv_freq[None, :]
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
    """Rotate channel pairs (x_i, x_{i+d/2}) of x (..., n, d) by the angles of cos/sin (n, d/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def flops(B, H, N, d, causal=False):
    """Matmul FLOPs of the forward pass: Q K^T and P V, 2 N^2 d each, halved when causal."""
    f = 4 * B * H * N * N * d
    return f // 2 if causal else f


def naive_bytes(B, H, N, d, element_size=4):
    """Memory the naive form holds at once: Q, K, V, O and the N x N scores and probabilities."""
    return (4 * B * H * N * d + 2 * B * H * N * N) * element_size


def hbm_traffic(N, d, block_m, element_size=2, causal=False) -> dict:
    """HBM bytes one head moves (Dao et al., 2022, section 3.2), naive against FlashAttention.

    naive: read Q, K, V, write S, read S, write P, read P and V again, write O:
           4 N d + 4 N^2 elements (Theta(N d + N^2));
    flash: read each Q tile once, stream all of K and V past each of the N / block_m query
           tiles, write O and the LSE: 2 N d + (N / block_m) 2 N d elements; with block_m ~ M / d
           for on-chip memory M, that is Theta(N^2 d^2 / M). Causal: the key blocks right of
           the diagonal are never read (about half of the K/V stream)."""
    tiles = -(-N // block_m)
    kv_stream = tiles * 2 * N * d
    if causal:  # tile t reads keys [0, (t + 1) block_m)
        kv_stream = sum(2 * min(N, (t + 1) * block_m) * d for t in range(tiles))
    naive = (4 * N * d + 4 * N * N) * element_size
    flash = (2 * N * d + kv_stream) * element_size + N * 4  # + the fp32 LSE
    return dict(naive=naive, flash=flash, ratio=naive / flash)


# ----------------------------------------------------------------------------------------------
# FlashAttention forward in Triton
# ----------------------------------------------------------------------------------------------
@triton.jit
def _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                offs_m, offs_n, offs_d, N_CTX, lo, hi, qk_scale,
                BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr):
    """Stream key/value blocks [lo, hi) past one query tile, updating (acc, l_i, m_i).

    MASKED=False is the fast path: every (row, column) pair is visible and every key is in
    bounds, so loads and scores carry no masks. MASKED=True handles the diagonal tile of
    causal attention and the ragged last block (columns >= N_CTX).

    The K and V address tiles are made inside the loop from the bases and 1-D offsets: carried
    across iterations they are two BLOCK_N x HEAD_DIM tiles of 64-bit pointers, which pushed
    every configuration past 255 registers into spills (compile-report)."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + offs_n
        k_ptrs = k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd
        v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if MASKED:
            in_bounds = cols[:, None] < N_CTX
            k = tl.load(k_ptrs, mask=in_bounds, other=0.0)
            v = tl.load(v_ptrs, mask=in_bounds, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        qk = tl.dot(q, tl.trans(k))
        if MASKED:
            visible = cols[None, :] < N_CTX
            if CAUSAL:
                visible = visible & (offs_m[:, None] >= cols[None, :])
            # -1e6, not -inf, and safe because every row's first visited block holds a visible
            # key (key 0; causal: key i on the diagonal): m is a real score by the time a row
            # meets masked keys, so they get exp2(-1e6 - m) = 0. (A row that met only masked
            # keys would get m = -1e6 and p = 1 for each; with -inf, exp2(m - m_new) = nan.)
            qk = qk * qk_scale + tl.where(visible, 0.0, -1.0e6)
            m_ij = tl.maximum(m_i, tl.max(qk, 1))
            qk = qk - m_ij[:, None]
        else:
            m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            qk = qk * qk_scale - m_ij[:, None]
        p = tl.math.exp2(qk)
        alpha = tl.math.exp2(m_i - m_ij)          # rescale what was summed against the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_ij
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, sm_scale, N_CTX, H,
              stride_qb, stride_qh, stride_qn, stride_qd,
              stride_kb, stride_kh, stride_kn, stride_kd,
              stride_vb, stride_vh, stride_vn, stride_vd,
              stride_ob, stride_oh, stride_on, stride_od,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // H
    off_h = off_bh % H
    q_base = Q + off_b.to(tl.int64) * stride_qb + off_h.to(tl.int64) * stride_qh
    k_base = K + off_b.to(tl.int64) * stride_kb + off_h.to(tl.int64) * stride_kh
    v_base = V + off_b.to(tl.int64) * stride_vb + off_h.to(tl.int64) * stride_vh
    o_base = O + off_b.to(tl.int64) * stride_ob + off_h.to(tl.int64) * stride_oh

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32) + 1.0
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.44269504  # log2(e): exp(x) = exp2(x * log2(e))
    q = tl.load(q_ptrs, mask=offs_m[:, None] < N_CTX, other=0.0)

    if CAUSAL:
        # off-diagonal: keys left of the tile, all visible (BLOCK_M is a multiple of BLOCK_N,
        # and they are all < start_m * BLOCK_M < N_CTX, so in bounds)
        hi = start_m * BLOCK_M
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                                    offs_m, offs_n, offs_d, N_CTX, 0, hi, qk_scale, BLOCK_N, False, CAUSAL)
        # diagonal: the tile's own keys, causal mask + bounds; blocks right of it are skipped
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                                    offs_m, offs_n, offs_d, N_CTX, hi, tl.minimum(hi + BLOCK_M, N_CTX), qk_scale, BLOCK_N, True, CAUSAL)
    else:
        n_full = (N_CTX // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                                    offs_m, offs_n, offs_d, N_CTX, 0, n_full, qk_scale, BLOCK_N, False, CAUSAL)
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                                    offs_m, offs_n, offs_d, N_CTX, n_full, N_CTX, qk_scale, BLOCK_N, True, CAUSAL)

    # l_i started at 1 with m_i = -inf: the first block's alpha = exp2(-inf) = 0 wipes it
    lse2 = m_i + tl.math.log2(l_i)
    acc = acc / l_i[:, None]
    row_ok = offs_m < N_CTX
    tl.store(LSE + off_bh.to(tl.int64) * N_CTX + offs_m, lse2 * 0.6931471805599453, mask=row_ok)
    o_ptrs = o_base + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=row_ok[:, None])


def _gpu_configs():
    configs = []
    # (BLOCK_M, BLOCK_N, stages, warps): the configurations that compile without spills for
    # sm_80 and sm_90 (python -m autograder compile-report); wide tiles only for small head dims
    for bm, bn, stages, warps in [(128, 32, 3, 4), (128, 32, 3, 8), (128, 32, 2, 8), (64, 64, 3, 4),
                                  (64, 64, 4, 4)]:
        configs.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_stages=stages, num_warps=warps))
    return configs


def _keep_config(conf, named_args, **kwargs):
    """Drop configs whose tiles do not fit the head dim's register budget (they spill)."""
    head_dim = named_args.get("HEAD_DIM", kwargs.get("HEAD_DIM"))
    if head_dim is not None and head_dim > 64:
        return (conf.kwargs["BLOCK_M"], conf.kwargs["BLOCK_N"], conf.num_warps) == (128, 32, 8)
    return True


_attn_fwd_tuned = None


def _tuned_kernel():
    """The autotuned kernel, built only on a GPU (the interpreter never autotunes)."""
    global _attn_fwd_tuned
    if _attn_fwd_tuned is None:
        _attn_fwd_tuned = triton.autotune(
            configs=_gpu_configs(), key=["N_CTX", "HEAD_DIM", "CAUSAL"],
            prune_configs_by={"early_config_prune": lambda configs, named_args, **kw: [
                c for c in configs if _keep_config(c, named_args, **kw)] or configs[:1]},
        )(_attn_fwd)
    return _attn_fwd_tuned


def _check_inputs(q, k, v):
    assert q.ndim == 4 and q.shape == k.shape == v.shape, "q, k, v must all be (B, H, N, d)"
    d = q.shape[-1]
    assert d in HEAD_DIMS, f"head dim {d} not supported; use one of {HEAD_DIMS}"


def flash_attention(q, k, v, causal=False, scale=None, autotune=None, **config):
    """FlashAttention forward: q, k, v (B, H, N, d) -> (O (B, H, N, d), LSE (B, H, N) fp32).

    On a GPU the tile sizes are autotuned (unless `autotune=False` or a `config` is given);
    in the CPU interpreter small fixed tiles are used."""
    _check_inputs(q, k, v)
    if q.dtype == torch.bfloat16 and not runtime.on_gpu():
        # the interpreter keeps bf16 as raw uint16 and cannot do arithmetic on it: run in fp32
        o, lse = flash_attention(q.float(), k.float(), v.float(), causal, scale, autotune, **config)
        return o.to(q.dtype), lse
    B, H, N, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    o = torch.empty_like(q)
    lse = torch.empty((B, H, N), device=q.device, dtype=torch.float32)
    args = (q, k, v, o, lse, scale, N, H, *q.stride(), *k.stride(), *v.stride(), *o.stride())
    if autotune is None:
        autotune = runtime.on_gpu() and not config
    if autotune:
        grid = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), B * H)
        _tuned_kernel()[grid](*args, HEAD_DIM=d, CAUSAL=causal)
    else:
        cfg = {**block_config(d, causal), **config}
        assert cfg["BLOCK_M"] % cfg["BLOCK_N"] == 0, "BLOCK_M must be a multiple of BLOCK_N"
        grid = (triton.cdiv(N, cfg["BLOCK_M"]), B * H)
        _attn_fwd[grid](*args, HEAD_DIM=d, CAUSAL=causal, **cfg)
    return o, lse


# ----------------------------------------------------------------------------------------------
# benchmark rows for `python -m autograder bench`
# ----------------------------------------------------------------------------------------------
def torch_flash_sdpa(q, k, v, causal=False):
    """torch's own FlashAttention-2 backend (the speed bar for the reference kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)


def bench_cases(BenchCase, randn):
    """BenchCase rows: B=4, H=16, N=4096, bf16, d = 64 / 128, causal and not, in TFLOP/s.

    Takes the BenchCase class and the randn helper of kernels/benchmarks.py so that this
    module does not import it (benchmarks imports the kernels, not the other way round)."""
    def qkv(shape, dtype, device):
        # the CPU test shrinks every dimension; keep the head dim one the kernel supports
        *lead, d = shape
        d = max(h for h in HEAD_DIMS if h <= max(d, HEAD_DIMS[0]))
        return tuple(randn(*lead, d, dtype=dtype, device=device, seed=i) for i in range(3))

    cases = []
    for d in (64, 128):
        for causal in (False, True):
            cases.append(BenchCase(
                "attn causal" if causal else "attention", (4, 16, 4096, d), torch.bfloat16, qkv,
                lambda q, k, v, c=causal: flash_attention(q, k, v, c)[0],
                lambda q, k, v, c=causal: torch_flash_sdpa(q, k, v, c),
                lambda s, dt, c=causal: flops(*s, causal=c), unit="TFLOP/s", test_scale=0.01))
    return cases
