"""FlashAttention-2 backward in Triton: dQ, dK, dV from the saved LSE, tiled like the forward.

The forward (kernels/attention.py) saved O and, per query row, LSE_i = log sum_j exp(S_ij),
S = s Q K^T (s = 1/sqrt(d)). The backward never stores the N x N matrices either: a tile of
P is recomputed from the LSE whenever it is needed,

    P_ij  = exp(S_ij - LSE_i)                     (0 where the causal mask hides j > i)
    dV    = P^T dO
    dP    = dO V^T
    D_i   = sum_j P_ij dP_ij = sum_c dO_ic O_ic    (one number per row: the preprocess kernel)
    dS    = P * (dP - D)                          (the softmax Jacobian, row by row)
    dQ    = s dS K,      dK = s dS^T Q .

dK and dV sum over query rows, dQ over keys. Like FlashAttention-2, two kernels avoid atomics:

* `_bwd_dkdv`: one program per block of BLOCK_N keys holds K_j, V_j and the accumulators dK_j,
  dV_j (BLOCK_N x d, fp32) and streams every query block past them (causal: only the blocks at
  or below the diagonal). It computes the tiles transposed, P^T = exp(s K Q^T - LSE), so every
  product is a plain tl.dot: dV += P^T dO, dP^T = V dO^T, dS^T = P^T * (dP^T - D), dK += dS^T Q.
* `_bwd_dq`: one program per block of BLOCK_M queries holds Q_i, dO_i, LSE_i, D_i and dQ_i and
  streams the key blocks (causal: those left of and on the diagonal): dQ += dS K.

Each kernel reads Q, K, V, dO once per block of the other side (as the forward reads K and V)
and writes its gradient once; P and dS exist one tile at a time. The causal diagonal and the
ragged last block of the streamed side take the MASKED path; the others run with no masks.
The math is 2.5x the forward's matmul FLOPs (five N x N x d products instead of two: S again,
dV, dP, dK, dQ; `flops` counts these); each of the two kernels computes S and dP itself, seven
products in all, the price of writing every gradient once with no atomics. `FlashAttention`
wraps forward and backward in a torch.autograd.Function, so a model trains with it (`flash_attn`).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from genfast import runtime
from genfast.labs.lab02_attention import backward_block_config  # one copy: the lab's given launcher uses it too
from kernels.attention import HEAD_DIMS, attention_backward, flash_attention, torch_attention

LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------------------------
# 1. D = rowsum(dO * O)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _bwd_preprocess(O, DO, DELTA, N_CTX,
                    stride_b, stride_h, stride_n, stride_d, H,
                    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """D_i = sum_c dO_ic O_ic for one block of rows of one (batch, head); O and dO share strides."""
    off_bh = tl.program_id(1)
    base = (off_bh // H).to(tl.int64) * stride_b + (off_bh % H).to(tl.int64) * stride_h
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, HEAD_DIM)
    offs = base + rows[:, None] * stride_n + cols[None, :] * stride_d
    ok = rows[:, None] < N_CTX
    o = tl.load(O + offs, mask=ok, other=0.0).to(tl.float32)
    do = tl.load(DO + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(DELTA + off_bh.to(tl.int64) * N_CTX + rows, tl.sum(o * do, axis=1), mask=rows < N_CTX)


# ----------------------------------------------------------------------------------------------
# 2. dK, dV: one program per key block, query blocks streamed past it
# ----------------------------------------------------------------------------------------------
@triton.jit
def _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_qd,
                offs_n, offs_d, N_CTX, lo, hi, qk_scale,
                BLOCK_M: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr):
    """Add the query blocks [lo, hi) into dk, dv (BLOCK_N x HEAD_DIM, fp32). q and dO share strides."""
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        rows = start_m + tl.arange(0, BLOCK_M)
        ptrs = rows[:, None] * stride_qn + offs_d[None, :] * stride_qd
        if MASKED:
            in_bounds = rows < N_CTX
            q = tl.load(q_base + ptrs, mask=in_bounds[:, None], other=0.0)
            do = tl.load(do_base + ptrs, mask=in_bounds[:, None], other=0.0)
            lse = tl.load(lse_base + rows, mask=in_bounds, other=0.0)
            delta = tl.load(delta_base + rows, mask=in_bounds, other=0.0)
        else:
            q = tl.load(q_base + ptrs)
            do = tl.load(do_base + ptrs)
            lse = tl.load(lse_base + rows)
            delta = tl.load(delta_base + rows)
        # P^T (BLOCK_N x BLOCK_M) from the saved LSE, in base 2: exp(x) = exp2(x log2 e)
        p_t = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - lse[None, :] * 1.4426950408889634)
        if MASKED:
            visible = (rows[None, :] < N_CTX) & (offs_n[:, None] < N_CTX)
            if CAUSAL:
                visible = visible & (rows[None, :] >= offs_n[:, None])
            p_t = tl.where(visible, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv)
        dp_t = tl.dot(v, tl.trans(do))
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk)
    return dk, dv


@triton.jit
def _bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, sm_scale, N_CTX, H,
              stride_b, stride_h, stride_n, stride_d,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr):
    """Grid (cdiv(N, BLOCK_N), B * H). Q, K, V, dO, dK, dV share one (B, H, N, d) layout."""
    start_n = tl.program_id(0) * BLOCK_N
    off_bh = tl.program_id(1)
    base = (off_bh // H).to(tl.int64) * stride_b + (off_bh % H).to(tl.int64) * stride_h
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    kv_offs = base + offs_n[:, None] * stride_n + offs_d[None, :] * stride_d
    k = tl.load(K + kv_offs, mask=offs_n[:, None] < N_CTX, other=0.0)
    v = tl.load(V + kv_offs, mask=offs_n[:, None] < N_CTX, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    q_base, do_base = Q + base, DO + base
    lse_base, delta_base = LSE + off_bh.to(tl.int64) * N_CTX, DELTA + off_bh.to(tl.int64) * N_CTX
    qk_scale = sm_scale * 1.4426950408889634
    if CAUSAL:
        # queries before start_n see none of these keys: start at the diagonal block (masked);
        # the query blocks below it see every key of the block
        diag_end = tl.minimum(start_n + BLOCK_N, N_CTX)
        dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_n, stride_d,
                             offs_n, offs_d, N_CTX, start_n, diag_end, qk_scale, BLOCK_M, True, CAUSAL)
        lo = start_n + BLOCK_N
    else:
        lo = 0
    # full query blocks with no mask (keys past N only pollute rows of dK, dV that are never
    # stored), then the ragged last query block with its rows masked
    n_full = (N_CTX // BLOCK_M) * BLOCK_M
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_n, stride_d,
                         offs_n, offs_d, N_CTX, lo, n_full, qk_scale, BLOCK_M, False, False)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_n, stride_d,
                         offs_n, offs_d, N_CTX, tl.maximum(lo, n_full), N_CTX, qk_scale, BLOCK_M, True, False)
    ok = offs_n[:, None] < N_CTX
    tl.store(DK + kv_offs, (dk * sm_scale).to(DK.dtype.element_ty), mask=ok)
    tl.store(DV + kv_offs, dv.to(DV.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------------------------
# 3. dQ: one program per query block, key blocks streamed past it
# ----------------------------------------------------------------------------------------------
@triton.jit
def _dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd,
              offs_m, offs_d, N_CTX, lo, hi, qk_scale,
              BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr):
    """Add the key blocks [lo, hi) into dq (BLOCK_M x HEAD_DIM, fp32). K and V share strides."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + tl.arange(0, BLOCK_N)
        ptrs = cols[:, None] * stride_kn + offs_d[None, :] * stride_kd
        if MASKED:
            k = tl.load(k_base + ptrs, mask=cols[:, None] < N_CTX, other=0.0)
            v = tl.load(v_base + ptrs, mask=cols[:, None] < N_CTX, other=0.0)
        else:
            k = tl.load(k_base + ptrs)
            v = tl.load(v_base + ptrs)
        p = tl.math.exp2(tl.dot(q, tl.trans(k)) * qk_scale - lse[:, None])
        if MASKED:
            visible = (cols[None, :] < N_CTX) & (offs_m[:, None] < N_CTX)
            if CAUSAL:
                visible = visible & (offs_m[:, None] >= cols[None, :])
            p = tl.where(visible, p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)
    return dq


@triton.jit
def _bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, sm_scale, N_CTX, H,
            stride_b, stride_h, stride_n, stride_d,
            HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
            CAUSAL: tl.constexpr):
    """Grid (cdiv(N, BLOCK_M), B * H)."""
    start_m = tl.program_id(0) * BLOCK_M
    off_bh = tl.program_id(1)
    base = (off_bh // H).to(tl.int64) * stride_b + (off_bh % H).to(tl.int64) * stride_h
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_offs = base + offs_m[:, None] * stride_n + offs_d[None, :] * stride_d
    row_ok = offs_m < N_CTX
    q = tl.load(Q + q_offs, mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + q_offs, mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + off_bh.to(tl.int64) * N_CTX + offs_m, mask=row_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + off_bh.to(tl.int64) * N_CTX + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base, v_base = K + base, V + base
    qk_scale = sm_scale * 1.4426950408889634
    if CAUSAL:
        # keys left of the tile are all visible (BLOCK_M is a multiple of BLOCK_N); the tile's
        # own keys need the causal mask; keys right of it are never read
        dq = _dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_n, stride_d, offs_m, offs_d, N_CTX,
                       0, start_m, qk_scale, BLOCK_N, False, CAUSAL)
        dq = _dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_n, stride_d, offs_m, offs_d, N_CTX,
                       start_m, tl.minimum(start_m + BLOCK_M, N_CTX), qk_scale, BLOCK_N, True, CAUSAL)
    else:
        # full key blocks with no mask (query rows past N only pollute rows of dQ that are never
        # stored), then the ragged last key block with its columns masked
        n_full = (N_CTX // BLOCK_N) * BLOCK_N
        dq = _dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_n, stride_d, offs_m, offs_d, N_CTX,
                       0, n_full, qk_scale, BLOCK_N, False, CAUSAL)
        dq = _dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_n, stride_d, offs_m, offs_d, N_CTX,
                       n_full, N_CTX, qk_scale, BLOCK_N, True, CAUSAL)
    tl.store(DQ + q_offs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


# ----------------------------------------------------------------------------------------------
# launcher and autograd
# ----------------------------------------------------------------------------------------------
def flash_backward(q, k, v, o, lse, do, causal=False, scale=None, **config):
    """(dq, dk, dv) of FlashAttention's forward from its saved (o, lse); q, k, v, o, do (B, H, N, d)."""
    if q.dtype == torch.bfloat16 and not runtime.on_gpu():
        # the interpreter keeps bf16 as raw uint16 and cannot compute with it: run in fp32
        grads = flash_backward(q.float(), k.float(), v.float(), o.float(), lse, do.float(), causal, scale, **config)
        return tuple(g.to(q.dtype) for g in grads)
    B, H, N, d = q.shape
    assert d in HEAD_DIMS, f"head dim {d} not supported; use one of {HEAD_DIMS}"
    q, k, v, o, do = (t.contiguous() for t in (q, k, v, o, do))  # one shared layout
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    cfg = {**backward_block_config(d), **config}
    dkdv, dq_cfg = cfg["dkdv"], cfg["dq"]
    assert dkdv["BLOCK_N"] % dkdv["BLOCK_M"] == 0 and dq_cfg["BLOCK_M"] % dq_cfg["BLOCK_N"] == 0, \
        "each kernel's own tile must be a multiple of the streamed one (the causal diagonal)"
    strides = q.stride()
    delta = torch.empty_like(lse)
    _bwd_preprocess[(triton.cdiv(N, 64), B * H)](o, do, delta, N, *strides, H, HEAD_DIM=d, BLOCK_M=64)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _bwd_dkdv[(triton.cdiv(N, dkdv["BLOCK_N"]), B * H)](
        q, k, v, do, lse, delta, dk, dv, scale, N, H, *strides, HEAD_DIM=d, CAUSAL=causal, **dkdv)
    _bwd_dq[(triton.cdiv(N, dq_cfg["BLOCK_M"]), B * H)](
        q, k, v, do, lse, delta, dq, scale, N, H, *strides, HEAD_DIM=d, CAUSAL=causal, **dq_cfg)
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """FlashAttention forward and backward as one differentiable op: saves O and the LSE, not P."""

    @staticmethod
    def forward(ctx, q, k, v, causal=False, scale=None):
        o, lse = flash_attention(q, k, v, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = flash_backward(q, k, v, o, lse, do, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None


def flash_attn(q, k, v, causal=False, scale=None):
    """softmax(s Q K^T) V with FlashAttention's forward and backward."""
    return FlashAttention.apply(q, k, v, causal, scale)


def flops(B, H, N, d, causal=False):
    """Matmul FLOPs of the backward: five N x N x d products (S again, dV, dP, dQ, dK)."""
    f = 10 * B * H * N * N * d
    return f // 2 if causal else f


# ----------------------------------------------------------------------------------------------
# benchmark rows for `python -m autograder bench`
# ----------------------------------------------------------------------------------------------
def torch_flash_sdpa(q, k, v, causal=False):
    """torch's own FlashAttention-2 backend; its backward is the speed bar for ours."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)


def bench_cases(BenchCase, randn):
    """BenchCase rows: the backward alone, B=4, H=16, N=4096, bf16, d = 64 / 128, causal and not,
    in TFLOP/s, against torch's FlashAttention-2 backward. Both forwards run when the inputs are
    made (outside the timing): ours saves (O, LSE), torch's keeps its autograd graph."""
    def inputs(causal):
        def make(shape, dtype, device):
            *lead, d = shape
            d = max(h for h in HEAD_DIMS if h <= max(d, HEAD_DIMS[0]))
            q, k, v = (randn(*lead, d, dtype=dtype, device=device, seed=i).requires_grad_() for i in range(3))
            do = randn(*lead, d, dtype=dtype, device=device, seed=3)
            o, lse = flash_attention(q.detach(), k.detach(), v.detach(), causal)
            return q, k, v, do, o, lse, torch_flash_sdpa(q, k, v, causal)
        return make

    def ours(causal):
        return lambda q, k, v, do, o, lse, o_torch: flash_backward(q.detach(), k.detach(), v.detach(), o, lse, do,
                                                                   causal)[0]

    def torchs(q, k, v, do, o, lse, o_torch):
        return torch.autograd.grad(o_torch, (q, k, v), do, retain_graph=True)[0]

    cases = []
    for d in (64, 128):
        for causal in (False, True):
            cases.append(BenchCase(
                "bwd causal" if causal else "attn bwd", (4, 16, 4096, d), torch.bfloat16, inputs(causal),
                ours(causal), torchs, lambda s, dt, c=causal: flops(*s, causal=c), unit="TFLOP/s", test_scale=0.01))
    return cases


if __name__ == "__main__":
    # check against the PyTorch backward and torch.autograd, then (on a GPU) time against torch's
    torch.manual_seed(0)
    dev = runtime.device()
    dtype = torch.bfloat16 if runtime.on_gpu() else torch.float32
    for N, d, causal in [(1, 16, True), (50, 32, False), (97, 64, True), (128, 64, False)]:
        q, k, v, do = (torch.randn(2, 3, N, d, device=dev, dtype=dtype) for _ in range(4))
        o, lse = flash_attention(q, k, v, causal)
        got = flash_backward(q, k, v, o, lse, do, causal)
        want = attention_backward(q, k, v, o, lse, do, causal)
        err = max((g.float() - w.float()).abs().max().item() for g, w in zip(got, want))
        print(f"N={N:4d} d={d:3d} causal={causal!s:5}  max |grad - PyTorch backward from the LSE| = {err:.2e}")
    leaves = [torch.randn(1, 2, 40, 32, device=dev, requires_grad=True) for _ in range(3)]
    want = torch.autograd.grad(torch_attention(*leaves, True)[0].sum(), leaves)
    got = torch.autograd.grad(flash_attn(*leaves, True).sum(), leaves)
    print(f"FlashAttention (autograd Function) vs torch.autograd: {max((g - w).abs().max().item() for g, w in zip(got, want)):.2e}")
    if runtime.on_gpu():
        from kernels import benchmarks
        bandwidth = benchmarks.copy_bandwidth()
        for case in bench_cases(benchmarks.BenchCase, benchmarks.randn):
            print(benchmarks.run_case(case, bandwidth)[0])
