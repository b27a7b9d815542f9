"""Fused sampling over the vocabulary: temperature, top-k, top-p and a Gumbel-max draw.

One program per row of logits (B, V) loads the whole row once (BLOCK_V = the next power
of two >= V, padded with -inf) and returns one token id, with no probability vector
ever written to memory. The steps, for a row x of logits:

1. temperature    z = x / T                       (T > 0; T -> 0 is greedy, T > 1 flattens)
2. top-k          keep the k largest z            (k = 0: off)
                  sort z descending: s_1 >= s_2 >= ... ; keep z >= s_k
3. top-p          keep the smallest set of likeliest tokens whose probability reaches p
                  (p = 1.0: off), computed, as in Hugging Face's `generate`, on the
                  distribution left after top-k: q_j = softmax(s_1..s_k)_j, c_j = q_1+...+q_j;
                  sorted token j is kept when c_{j-1} < p (the mass *before* it is short of p),
                  so the token that crosses p is kept and the likeliest token always is.
   Both filters keep every token whose z is >= a threshold (the smallest kept sorted
   value), so ties with the threshold are all kept.
4. Gumbel-max     token = argmax_i (z_i + g_i) over kept i,   g_i = -log(-log(u_i)),
                  u_i ~ Uniform(0, 1). If g_i are i.i.d. Gumbel(0, 1), then
                  P(argmax = i) = exp(z_i) / sum_{kept j} exp(z_j): a sample from the
                  filtered softmax without computing it, with no prefix sum over probabilities
                  and no second pass. The noise u is an input, so tests with fixed noise are exact.

`torch_sample` computes the same thing in plain PyTorch (the same token for the same
noise, ties aside) and `torch_filtered_probs` gives the filtered distribution itself, for
chi-square tests of the sampler. `torch_temperature_probs` and `torch_repetition_penalty`
are the references of the lab's temperature and repetition penalty (CTRL). These references
are lab01's answers: they stay instructor-side, and the learner install (genfast) ships only
their outputs on the visible cases (genfast/fixtures/lab01_generation.pt, built by
kernels/fixtures/lab01_generation.py). The launch settings are genfast's, shared with the
learner's launcher.
"""
import torch
import triton
import triton.language as tl

from genfast.labs.lab01_generation import sample_launch_config  # the learner's launcher uses the same settings


@triton.jit
def _float_key(z):
    """An int32 that orders like the float32 z: flip the magnitude bits of negatives."""
    bits = z.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@triton.jit
def fused_sample_kernel(logits_ptr, u_ptr, out_ptr, V, logits_row_stride, u_row_stride,
                        inv_temperature, top_k, top_p, BLOCK_V: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_V)
    mask = cols < V
    # 1. the whole row, once; padding lanes hold -inf so they can never win
    x = tl.load(logits_ptr + row * logits_row_stride + cols, mask=mask, other=float("-inf"))
    z = x.to(tl.float32) * inv_temperature
    key = _float_key(z)
    # 2. top-k: bisect on the integer key for the largest t with count(key >= t) >= k;
    #    after 32 halvings of the int32 range, t is exactly the key of the k-th largest z
    threshold = tl.full([], float("-inf"), tl.float32)   # -inf: keep everything
    if (top_k > 0) & (top_k < V):
        valid_key = tl.where(mask, key, -2147483648)  # padding lanes: the smallest key
        lo = tl.full([], -2147483648, tl.int64)      # count(key >= lo) = V >= k
        hi = tl.full([], 2147483648, tl.int64)       # count(key >= hi) = 0 < k
        for _ in range(32):
            mid = (lo + hi) >> 1
            count = tl.sum((valid_key >= mid).to(tl.int32), axis=0)
            if count >= top_k:
                lo = mid
            else:
                hi = mid
        threshold = tl.min(tl.where(mask & (key >= lo), z, float("inf")), axis=0)
    # 3. top-p on the softmax of what top-k kept: token i survives when the mass of the
    #    kept tokens strictly above it is < p. Bisect for the smallest key t whose
    #    "mass above t" is < p; every token with key >= t survives.
    if top_p < 1.0:
        kept = mask & (z >= threshold)
        e = tl.where(kept, tl.exp(z - tl.max(z, axis=0)), 0.0)
        q = e / tl.sum(e, axis=0)                    # the distribution after top-k
        lo = tl.full([], -2147483649, tl.int64)      # mass above lo = 1 >= p
        hi = tl.full([], 2147483647, tl.int64)       # mass above hi = 0 < p
        for _ in range(32):
            mid = (lo + hi) >> 1
            above = tl.sum(tl.where(key > mid, q, 0.0), axis=0)
            if above < top_p:
                hi = mid
            else:
                lo = mid
        threshold = tl.min(tl.where(kept & (key >= hi), z, float("inf")), axis=0)
    keep = mask & (z >= threshold)
    # 4. Gumbel-max over the kept tokens
    u = tl.load(u_ptr + row * u_row_stride + cols, mask=mask, other=0.5)
    g = -tl.log(-tl.log(u))
    score = tl.where(keep, z + g, float("-inf"))
    token = tl.argmax(score, axis=0)
    tl.store(out_ptr + row, token.to(tl.int64))


def _check_args(logits, temperature, top_k, top_p, uniform):
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, V), got shape {tuple(logits.shape)}")
    if uniform.shape != logits.shape:
        raise ValueError(f"uniform noise must have the shape of the logits {tuple(logits.shape)}, "
                         f"got {tuple(uniform.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use top_k=1 for greedy), got {temperature}")
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need top_k >= 0 (0 = off) and 0 < top_p <= 1 (1 = off), got {top_k}, {top_p}")


def fused_sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 uniform: torch.Tensor | None = None) -> torch.Tensor:
    """One token id per row of `logits` (B, V) -> (B,) int64, with noise `uniform` (B, V) in (0, 1)."""
    if uniform is None:
        uniform = torch.rand(logits.shape, device=logits.device).clamp_(1e-10, 1 - 1e-7)
    _check_args(logits, temperature, top_k, top_p, uniform)
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    uniform = uniform if uniform.stride(1) == 1 else uniform.contiguous()
    B, V = logits.shape
    out = torch.empty(B, dtype=torch.int64, device=logits.device)
    fused_sample_kernel[(B,)](logits, uniform, out, V, logits.stride(0), uniform.stride(0),
                              1.0 / temperature, int(top_k), float(top_p), **sample_launch_config(V))
    return out


def torch_filtered_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                          top_p: float = 1.0) -> torch.Tensor:
    """z = logits / temperature with the tokens that top-k / top-p drop set to -inf (float32)."""
    z = logits.float() * (1.0 / temperature)   # as the kernel does: multiply by 1/T
    s, _ = torch.sort(z, dim=-1, descending=True)
    if 0 < top_k < z.shape[-1]:
        in_top_k = s >= s[..., top_k - 1:top_k]        # ties with the k-th largest are kept
    else:
        in_top_k = torch.ones_like(s, dtype=torch.bool)
    s_k = s.masked_fill(~in_top_k, float("-inf"))
    q = torch.softmax(s_k, dim=-1)
    mass_before = q.cumsum(dim=-1) - q
    keep_sorted = in_top_k & ((mass_before < top_p) | (top_p >= 1.0))
    threshold = s.masked_fill(~keep_sorted, float("inf")).amin(dim=-1, keepdim=True)
    return z.masked_fill(z < threshold, float("-inf"))


def torch_filtered_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                         top_p: float = 1.0) -> torch.Tensor:
    """The distribution the sampler draws from: softmax of the filtered, tempered logits."""
    return torch.softmax(torch_filtered_logits(logits, temperature, top_k, top_p), dim=-1)


def gumbel(uniform: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise from uniform noise: g = -log(-log(u))."""
    return -torch.log(-torch.log(uniform.float()))


def torch_sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Plain-PyTorch reference of `fused_sample`: argmax(filtered z + Gumbel noise), (B,) int64."""
    if uniform is None:
        uniform = torch.rand(logits.shape, device=logits.device).clamp_(1e-10, 1 - 1e-7)
    _check_args(logits, temperature, top_k, top_p, uniform)
    return (torch_filtered_logits(logits, temperature, top_k, top_p) + gumbel(uniform)).argmax(dim=-1)


def torch_temperature_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The reference of the lab's temperature_probs: softmax(logits / temperature), float32."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def torch_repetition_penalty(logits: torch.Tensor, prev_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty on logits (V,): every token that occurs in prev_ids (once, however
    often) gets l / penalty if l > 0, else l * penalty; a new tensor."""
    seen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    seen[prev_ids] = True
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def bytes_moved(n_rows: int, vocab: int, element_size: int) -> int:
    return n_rows * vocab * (element_size + 4) + n_rows * 8   # logits + float32 noise in, ids out
