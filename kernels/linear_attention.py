"""Causal linear attention with decay: recurrent, quadratic and chunked forms, and a Triton kernel.

Softmax attention weighs value v_s by exp(q_t . k_s) / sum_s' exp(q_t . k_s'). Replace the
exponential kernel by a dot product of feature maps, exp(q . k) -> phi(q) . phi(k), and the sum
factorises (write q, k for phi(q), phi(k) from here on):

    o_t = sum_{s<=t} (q_t . k_s) v_s = q_t^T sum_{s<=t} k_s v_s^T = q_t^T S_t,
    S_t = S_{t-1} + k_t v_t^T                 (a d_k x d_v state: an RNN)

(the lecture writes the same memory as H_t = sum v_i k_i^T = S_t^T and reads y_t = H_t q_t).
With the normaliser of softmax kept, o_t = q_t^T S_t / (q_t . z_t), z_t = z_{t-1} + k_t.

Decay / gating brings forgetting back: S_t = gamma_t S_{t-1} + k_t v_t^T, so

    o_t = sum_{s<=t} (prod_{r=s+1}^{t} gamma_r) (q_t . k_s) v_s = [((Q K^T) * D) V]_t,
    D_ts = exp(L_t - L_s) for s <= t, 0 above the diagonal,   L_t = sum_{r<=t} log gamma_r.

gamma = 1 is plain linear attention, a constant per-head gamma is RetNet's retention
(D_ts = gamma^(t-s)), a data-dependent scalar gamma_t per head is gated retention (and Mamba-2's
decay). GLA (Yang et al., 2023) gates per key dimension, S_t = diag(alpha_t) S_{t-1} + k_t v_t^T
with alpha_t in (0, 1)^{d_k}: D becomes a decay per (t, s, key channel), folded into q and k. The
Triton kernel here implements the constant per-head decay (RetNet); the torch references accept
a scalar decay per head and token.

Always in log space: D_ts = exp(L_t - L_s) with the difference taken before the exp (never
exp(L_t) / exp(L_s): with strong decay exp(L_t) underflows to 0 within a chunk and the ratio is
0/0). The exponent is <= 0 for s <= t, so nothing overflows (`decay_matrix`).

Three ways to compute the same o:

* recurrent (`torch_linear_attention_recurrent`): one step per token, O(N d^2) work, O(d^2)
  memory, no parallelism over t: how it runs at generation time;
* quadratic (`torch_linear_attention_quadratic`): the masked (Q K^T * D) V, O(N^2 d) work but all
  matrix products: how softmax attention is trained;
* chunked (`torch_linear_attention_chunked`, `chunked_linear_attention` in Triton): cut the
  sequence into chunks of C tokens. Inside chunk c (positions cC + i, i < C), with l_i the
  cumulative log decay from the chunk's start (l_i = (i+1) log gamma for a constant gamma):

      o_i   = [(Q_c K_c^T * D_c) V_c]_i  +  exp(l_i) q_i^T S_prev      intra-chunk + inter-chunk
      S_new = exp(l_{C-1}) S_prev + sum_j exp(l_{C-1} - l_j) k_j v_j^T  carried to the next chunk

  O(N C d + N d^2) work, all of it matmuls of C x d and d x d tiles (tensor cores), and only
  N / C sequential steps. This is the form of RetNet's and GLA's training kernels.

The Triton kernel runs one program per (batch, head, block of value channels), loops over the
chunks in order and keeps S (d_k x BLOCK_DV, fp32) in registers between them: it reads v once and
writes o once, and reads q and k once per block of value channels, d_v / BLOCK_DV times
(`bytes_moved`: 2 N d_k d_v / BLOCK_DV + 2 N d_v elements), whatever the chunk size. With the GPU's
BLOCK_DV = 32 that is 6 N d at d = 64 and 10 N d at d = 128: still linear in N, but not a copy.

Mamba-2's SSD (Dao and Gu, 2024) is this kernel seen from the state-space side: a selective SSM
whose transition is a scalar times the identity per head (A_t = a_t I) has exactly this chunked
form, with (C, B, x) in the roles of (q, k, v) and a_t = gamma_t. That restriction is what lets it
run on tensor cores (C x d and d x d matmuls); Mamba-1's diagonal A, a different decay per
(channel, state), makes the state an element-wise recurrence, which the selective scan
(kernels/selective_scan.py) computes with scans, not matmuls.
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from genfast import runtime
# the learner's launcher and the given code use the same tiles and the same decay conversions
from genfast.labs.lab03_linear_attention_mamba import chunked_block_config as block_config
from genfast.labs.lab03_linear_attention_mamba import log2_gamma, log_decay, retnet_gammas

# ----------------------------------------------------------------------------------------------
# plain PyTorch references
# ----------------------------------------------------------------------------------------------


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def torch_linear_attention_recurrent(q, k, v, gamma=None, normalize=False, eps=1e-6):
    """The RNN form: S_t = gamma_t S_{t-1} + k_t v_t^T, o_t = q_t^T S_t (optionally / q_t . z_t).

    q, k (B, H, N, d_k), v (B, H, N, d_v); gamma None, a float, (H,) or (B, H, N). A sequential
    loop over t in fp32 (fp64 for fp64 inputs); returns o (B, H, N, d_v) in v's dtype."""
    B, H, N, dk = q.shape
    acc = _acc_dtype(q)
    qf, kf, vf = (t.to(acc) for t in (q, k, v))
    g = torch.exp(log_decay(gamma, B, H, N, q.device, acc))
    S = torch.zeros(B, H, dk, v.shape[-1], device=q.device, dtype=acc)
    z = torch.zeros(B, H, dk, device=q.device, dtype=acc)
    out = []
    for t in range(N):
        S = g[:, :, t, None, None] * S + kf[:, :, t, :, None] * vf[:, :, t, None, :]
        o = torch.einsum("bhk,bhkv->bhv", qf[:, :, t], S)
        if normalize:
            z = g[:, :, t, None] * z + kf[:, :, t]
            o = o / ((qf[:, :, t] * z).sum(-1, keepdim=True) + eps)
        out.append(o)
    return torch.stack(out, dim=2).to(v.dtype)


def decay_matrix(gamma, B: int, H: int, N: int, device, dtype=torch.float32) -> torch.Tensor:
    """D (B, H, N, N): D_ts = prod_{r=s+1}^{t} gamma_r for s <= t, else 0 (causal decay mask)."""
    L = torch.cumsum(log_decay(gamma, B, H, N, device, dtype), dim=-1)
    causal = torch.ones(N, N, dtype=torch.bool, device=device).tril()
    diff = (L[..., :, None] - L[..., None, :]).masked_fill(~causal, float("-inf"))
    return torch.exp(diff)


def torch_linear_attention_quadratic(q, k, v, gamma=None, normalize=False, eps=1e-6):
    """The parallel (attention-like) form: o = ((Q K^T) * D) V, optionally row-normalised."""
    B, H, N, _ = q.shape
    acc = _acc_dtype(q)
    scores = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * decay_matrix(gamma, B, H, N, q.device, acc)
    o = scores @ v.to(acc)
    if normalize:
        o = o / (scores.sum(-1, keepdim=True) + eps)
    return o.to(v.dtype)


def torch_linear_attention_chunked(q, k, v, gamma=None, chunk=64):
    """The chunked form in PyTorch: intra-chunk (Q K^T * D) V plus a state carried across chunks."""
    B, H, N, dk = q.shape
    acc = _acc_dtype(q)
    qf, kf, vf = (t.to(acc) for t in (q, k, v))
    logg = log_decay(gamma, B, H, N, q.device, acc)
    S = torch.zeros(B, H, dk, v.shape[-1], device=q.device, dtype=acc)
    out = []
    for start in range(0, N, chunk):
        sl = slice(start, min(start + chunk, N))
        qc, kc, vc = qf[:, :, sl], kf[:, :, sl], vf[:, :, sl]
        l = torch.cumsum(logg[:, :, sl], dim=-1)                       # (B, H, c): log decay since chunk start
        c = l.shape[-1]
        causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
        D = torch.exp((l[..., :, None] - l[..., None, :]).masked_fill(~causal, float("-inf")))
        o = ((qc @ kc.transpose(-1, -2)) * D) @ vc                      # intra-chunk
        o = o + torch.exp(l)[..., None] * (qc @ S)                      # inter-chunk, from S_prev
        S = torch.exp(l[..., -1:, None]) * S + (kc * torch.exp(l[..., -1:] - l)[..., None]).transpose(-1, -2) @ vc
        out.append(o)
    return torch.cat(out, dim=2).to(v.dtype)


def delta_rule_gradient_step(H, k, v, beta):
    """DeltaNet's write as what it is: H - beta * dL/dH with L = 1/2 ||H k - v||^2 (summed over the
    leading dimensions), the gradient from torch.autograd. H (..., d_v, d_k), k (..., d_k), v (..., d_v),
    beta (...) or a float; equal to the delta rule H - beta (H k - v) k^T."""
    H = H.detach().clone().requires_grad_()
    loss = 0.5 * (((H @ k[..., None])[..., 0] - v) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, H)
    beta = torch.as_tensor(beta, dtype=H.dtype, device=H.device)
    return (H - beta[..., None, None] * grad).detach()


# ----------------------------------------------------------------------------------------------
# cost model
# ----------------------------------------------------------------------------------------------
def flops(B, H, N, d, chunk=64):
    """Matmul FLOPs of the chunked form (d_k = d_v = d): per token 4 C d (intra) + 4 d^2 (state)."""
    return B * H * N * (4 * chunk * d + 4 * d * d)


def quadratic_flops(B, H, N, d):
    """Matmul FLOPs of the masked quadratic form: Q K^T and (.) V, 2 N^2 d each (mask included)."""
    return 4 * B * H * N * N * d


def recurrent_flops(B, H, N, d):
    """The RNN form: a rank-1 update and a read of the d x d state per token, 4 d^2."""
    return 4 * B * H * N * d * d


def bytes_moved(B, H, N, d, element_size, block_dv=None):
    """HBM traffic of the kernel: v read and o written once, q and k read once per block of
    BLOCK_DV value columns (cdiv(d, block_dv) times; one block by default, the ideal 4 N d).
    The state never leaves the chip."""
    reads_of_qk = -(-d // (block_dv or d))
    return (2 * reads_of_qk + 2) * B * H * N * d * element_size


# ----------------------------------------------------------------------------------------------
# chunked linear attention with a per-head decay, in Triton
# ----------------------------------------------------------------------------------------------
@triton.jit
def _chunked_linear_attention_fwd(Q, K, V, O, LOG2_GAMMA, N, H, DK, DV,
                                  stride_qb, stride_qh, stride_qn, stride_qd,
                                  stride_kb, stride_kh, stride_kn, stride_kd,
                                  stride_vb, stride_vh, stride_vn, stride_vd,
                                  stride_ob, stride_oh, stride_on, stride_od,
                                  CHUNK: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr,
                                  UPCAST: tl.constexpr):
    off_bh = tl.program_id(0)
    pid_v = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = off_bh % H
    q_base = Q + off_b * stride_qb + off_h.to(tl.int64) * stride_qh
    k_base = K + off_b * stride_kb + off_h.to(tl.int64) * stride_kh
    v_base = V + off_b * stride_vb + off_h.to(tl.int64) * stride_vh
    o_base = O + off_b * stride_ob + off_h.to(tl.int64) * stride_oh

    offs_c = tl.arange(0, CHUNK)
    offs_k = tl.arange(0, BLOCK_DK)
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    k_ok = offs_k < DK
    v_ok = offs_v < DV

    # decay factors, the same for every chunk (log2 gamma <= 0, so every exponent below is <= 0)
    log2g = tl.load(LOG2_GAMMA + off_h)
    pos = offs_c.to(tl.float32)
    diff = pos[:, None] - pos[None, :]
    decay_intra = tl.where(diff >= 0, tl.exp2(tl.maximum(diff, 0.0) * log2g), 0.0)  # gamma^(i-j), i >= j
    decay_q = tl.exp2((pos + 1.0) * log2g)                   # gamma^(i+1): read of the carried state
    decay_k = tl.exp2((CHUNK - 1.0 - pos) * log2g)           # gamma^(C-1-j): write into the state
    decay_chunk = tl.exp2(CHUNK * log2g)                     # gamma^C: the state ages by one chunk

    state = tl.zeros([BLOCK_DK, BLOCK_DV], dtype=tl.float32)
    for start in range(0, N, CHUNK):
        rows = start + offs_c
        r_ok = rows < N
        q = tl.load(q_base + rows[:, None] * stride_qn + offs_k[None, :] * stride_qd,
                    mask=r_ok[:, None] & k_ok[None, :], other=0.0)
        k = tl.load(k_base + rows[:, None] * stride_kn + offs_k[None, :] * stride_kd,
                    mask=r_ok[:, None] & k_ok[None, :], other=0.0)
        v = tl.load(v_base + rows[:, None] * stride_vn + offs_v[None, :] * stride_vd,
                    mask=r_ok[:, None] & v_ok[None, :], other=0.0)
        if UPCAST:  # the CPU interpreter has no bf16/fp16 arithmetic
            q, k, v = q.to(tl.float32), k.to(tl.float32), v.to(tl.float32)
        scores = tl.dot(q, tl.trans(k)) * decay_intra                        # (CHUNK, CHUNK)
        o = tl.dot(scores.to(v.dtype), v)                                    # intra-chunk
        o = tl.dot((q * decay_q[:, None]).to(q.dtype), state.to(q.dtype), o)  # inter-chunk
        state = state * decay_chunk + tl.dot(tl.trans((k * decay_k[:, None]).to(k.dtype)), v)
        tl.store(o_base + rows[:, None] * stride_on + offs_v[None, :] * stride_od,
                 o.to(O.dtype.element_ty), mask=r_ok[:, None] & v_ok[None, :])


def chunked_linear_attention(q, k, v, gamma=None, chunk=None, block_dv=None):
    """o_t = sum_{s<=t} gamma_h^(t-s) (q_t . k_s) v_s for q, k (B, H, N, d_k), v (B, H, N, d_v).

    gamma: None (plain linear attention), a float, or one decay per head (H,). One program per
    (batch, head, block of value channels) walks the chunks in order (grid (B*H, cdiv(d_v, BLOCK_DV)))."""
    assert q.ndim == 4 and q.shape == k.shape and v.shape[:3] == q.shape[:3], "q, k (B,H,N,dk); v (B,H,N,dv)"
    B, H, N, dk = q.shape
    dv = v.shape[-1]
    o = torch.empty_like(v)
    cfg = block_config(dk, dv)
    if chunk is not None:
        cfg["CHUNK"] = chunk
    if block_dv is not None:
        cfg["BLOCK_DV"] = block_dv
    grid = (B * H, triton.cdiv(dv, cfg["BLOCK_DV"]))
    _chunked_linear_attention_fwd[grid](
        q, k, v, o, log2_gamma(gamma, H, q.device), N, H, dk, dv,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        UPCAST=not runtime.on_gpu(), **cfg)
    return o


# ----------------------------------------------------------------------------------------------
# benchmark rows for `python -m autograder bench`
# ----------------------------------------------------------------------------------------------
def gpu_block_dv(d: int) -> int:
    """The value columns one program takes on a GPU (the launcher's configuration)."""
    from genfast.compile_info import as_on_gpu
    with as_on_gpu():
        return block_config(d, d)["BLOCK_DV"]


def bench_cases(BenchCase, randn):
    """BenchCase rows: B=4, H=16, N=4096, d = 64 / 128, bf16, RetNet decays, against the masked
    quadratic form in PyTorch; throughput in GB/s of the kernel's traffic (`bytes_moved` at the
    GPU's BLOCK_DV: q and k once per block of value columns, v read and o written once).

    Takes the BenchCase class and the randn helper of kernels/benchmarks.py so that this module
    does not import it (benchmarks imports the kernels, not the other way round)."""
    def qkv_gamma(shape, dtype, device):
        B, H, N, d = shape
        q, k, v = (randn(B, H, N, d, dtype=dtype, device=device, seed=i) * (d ** -0.5 if i < 2 else 1.0)
                   for i in range(3))
        return q, k, v, retnet_gammas(H).to(device)

    cases = []
    for d in (64, 128):
        cases.append(BenchCase(
            "linear attn", (4, 16, 4096, d), torch.bfloat16, qkv_gamma,
            lambda q, k, v, g: chunked_linear_attention(q, k, v, g),
            lambda q, k, v, g: torch_linear_attention_quadratic(q, k, v, g),
            lambda s, dt: bytes_moved(*s, dt.itemsize, gpu_block_dv(s[3])), test_scale=0.01))
    return cases
