"""Fused sampling over the vocabulary: temperature, top-k, top-p and a Gumbel-max draw.

One program per row of logits (B, V) returns one token id, with no probability vector ever
written to memory. The math, for a row x of logits:

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
                  filtered softmax without computing it, with no prefix sum over probabilities.
                  The noise u is an input, so tests with fixed noise are exact. Ties go to
                  the lowest index, as torch.argmax.

Thresholds without sorting. Map each float z to an int32 key that orders the same way
(`_float_key`: flip the magnitude bits of negatives). Both thresholds are "the largest key t
with F(t) >= target" for a function F that never grows with t:

    top-k   F(t) = #{i : key_i >= t},                          target k
    top-p   F(t) = sum_{kept i, key_i >= t} exp(z_i - max z),   target p * sum_{kept i} exp(z_i - max z)

(for top-p: token i survives when the mass strictly above it is < p, i.e. when
F(key_i + 1) < target, i.e. when key_i >= the largest t with F(t) >= target). The answer is
always the key of a token of the row, so the threshold is exact, and `_key_to_float` turns it
back into the float to compare z with (a float compare keeps -0.0 and +0.0 together).

The kernel streams the row. A whole row does not fit in one program's registers: 128k fp32
logits are 512 KB, an SM's whole register file is 256 KB (the whole-row version of this
kernel spilled 1.3-5.9 KB per thread). So every step loops over the row in blocks of BLOCK_V
columns and keeps only running values per lane of the block:

* the search (`_largest_key`) is 16-way: one pass over the row measures F at 16 evenly spaced
  candidate keys (each lane adds its column to a (BLOCK_V, 16) accumulator; one reduction at
  the end of the pass), keeps the last candidate that reaches the target and searches on
  inside its 16th of the interval. 4 bits of the 32-bit key per pass: 8 passes. The bounds
  are int64 (the int32 key range itself overflows int32 arithmetic).
* top-p's max and sum: the online softmax of lab 00 (running max and rescaled sum per lane).
* the draw: a running argmax per lane (strictly greater wins, so a lane keeps its first
  column on a tie), then the lowest column among the lanes that hold the maximum.

Passes over the row: no filter 1 (the draw, the only one that reads the noise); top-k 9
(8 search passes + the draw); top-p 10 (max and sum + 8 + the draw); both 18. The whole-row
version read the row once from HBM and then ran its 64 bisection steps over spilled
registers, i.e. local memory, which lives in L1/L2 anyway.

What bounds it (estimated from the SASS and the hardware's published rates, not timed).
Memory: only the first pass of a row reads the logits from HBM; the later passes find them in
L2 (64 rows of 32k fp32 logits are 8 MB, well inside the 40-50 MB L2 of an A100 or H100;
64 rows of 128k, 32 MB, are about its size, and some of their passes go to HBM). L2 can feed
an SM about 10 fp32 elements a clock when every SM reads (A100: 5120 bytes a clock for 108
SMs). Arithmetic: per element, a thread runs ~60 instructions in a search pass (16
compare-select-adds), ~27 in the max/sum pass (two exps) and ~68 in the draw (two logs), and
an SM issues 128 thread-instructions a clock: ~0.45 clocks an element for a search pass. So
the search passes are bound by instruction issue, several times slower than L2 could feed
them; the kernel is not memory-bound, and it reads HBM about once. A binary search (one
candidate a pass, ~16 instructions an element) would be about at L2's rate but make 4x the
passes, 32 per threshold: about the same total for a large batch, and slower for a batch
smaller than the number of SMs, where one program per SM waits on L2 latency at every block
(8 passes wait 4x less than 32). The lab's speed cell, 64 rows, is that case.

The launcher takes BLOCK_V and num_warps from genfast (`sample_launch_config`), shared with
the learner's launcher: 1024 columns with 8 warps on a GPU (4 columns a thread; the
accumulator of a search pass is 64 registers a thread; no spill on sm_80 or sm_90, see
`python -m autograder compile-report --only sampl`), 32 in the interpreter (several blocks
and a ragged last one on the lab's rows of 79 logits).

`torch_sample` computes the same thing in plain PyTorch (the same token for the same
noise, ties aside) and `torch_filtered_probs` gives the filtered distribution itself, for
chi-square tests of the sampler. `torch_temperature_probs` and `torch_repetition_penalty`
are the references of the lab's temperature and repetition penalty (Hugging Face's
sign-dependent form of CTRL's). These references are lab01's answers: they stay
instructor-side, and the learner install (genfast) ships only their outputs on the visible
cases (genfast/fixtures/lab01_generation.pt, built by
kernels/fixtures/lab01_generation.py).
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
def _key_to_float(key):
    """The float32 whose key is `key` (the flip undoes itself: it keeps the sign bit)."""
    bits = tl.where(key < 0, key ^ 0x7FFFFFFF, key)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _load_z(x_row, cols, V, inv_temperature):
    """z = logits / T at `cols` of this row; columns past the row are -inf, which no filter keeps
    and no draw picks."""
    x = tl.load(x_row + cols, mask=cols < V, other=float("-inf"))
    return x.to(tl.float32) * inv_temperature


@triton.jit
def _largest_key(x_row, V, inv_temperature, lo, target, row_max,
                 BY_MASS: tl.constexpr, BLOCK_V: tl.constexpr):
    """The largest int32 t >= lo with F(t) >= target, where F(t) sums over the row's tokens with
    key >= t either 1 (BY_MASS=False: a count) or e = exp(z - row_max) (BY_MASS=True: a mass).
    F never grows with t; F(lo) >= target is given; no key reaches lo + 2**32.

    A 16-way search: each pass over the row measures F at the 16 candidates lo + j * step
    (j = 0..15, step = a 16th of the interval left), keeps the last candidate that reaches the
    target and goes on inside its step. 32 bits of key, 4 bits a pass: 8 passes, and after the
    last (step 1) lo is exactly the key of a token of the row."""
    ways = tl.arange(0, 16)
    # the block as a column (BLOCK_V, 1) against the candidates as a row (1, 16): the compares
    # broadcast to (BLOCK_V, 16) inside each thread, with no data moved between threads
    offs = tl.arange(0, BLOCK_V)[:, None]
    for i in tl.static_range(8):
        step = 1 << (28 - 4 * i)
        # a candidate above the largest int32 counts nothing; clamped there, it still does not
        cand = tl.minimum(lo + ways.to(tl.int64) * step, 2147483647).to(tl.int32)
        acc = tl.zeros([BLOCK_V, 16], tl.float32)    # per lane: F of its columns at each candidate
        for start in range(0, V, BLOCK_V):
            z = _load_z(x_row, start + offs, V, inv_temperature)
            if BY_MASS:
                w = tl.exp(z - row_max)
            else:
                w = tl.full([BLOCK_V, 1], 1.0, tl.float32)  # counts are exact in float32 below 2**24
            acc += tl.where(_float_key(z) >= cand[None, :], w, 0.0)
        f = tl.sum(acc, axis=0)                      # F at the 16 candidates
        # candidate 0 is lo itself; those of 1..15 that reach the target come first (F falls)
        lo += tl.sum(((f >= target) & (ways > 0)).to(tl.int64), axis=0) * step
    return lo


@triton.jit
def fused_sample_kernel(logits_ptr, u_ptr, out_ptr, V, logits_row_stride, u_row_stride,
                        inv_temperature, top_k, top_p, BLOCK_V: tl.constexpr):
    """out[row] = the Gumbel-max draw from the filtered softmax of logits[row] * inv_temperature,
    reading the row in blocks of BLOCK_V columns: 1 pass without filters, 9 with top-k,
    10 with top-p, 18 with both (the module docstring says why and what bounds each pass)."""
    row = tl.program_id(0)
    x_row = logits_ptr + row * logits_row_stride
    u_row = u_ptr + row * u_row_stride
    lanes = tl.arange(0, BLOCK_V)
    # every token is kept while the threshold key is that of -inf
    key = tl.full([], -2139095041, tl.int64)         # _float_key(-inf)
    # 2. top-k: the largest key t with count(key >= t) >= k is the key of the k-th largest z
    if (top_k > 0) & (top_k < V):
        key = _largest_key(x_row, V, inv_temperature, key, top_k, 0.0, False, BLOCK_V)
    threshold = _key_to_float(key.to(tl.int32))
    # 3. top-p on the softmax of what top-k kept: first its max and sum (the online softmax of
    #    lab 00, one lane per column of the block), then the largest key t whose tokens at or
    #    above it hold mass >= p: sum(e, key >= t) >= p * sum(e), searched from top-k's key up
    if top_p < 1.0:
        m = tl.full([BLOCK_V], float("-inf"), tl.float32)
        d = tl.zeros([BLOCK_V], tl.float32)
        for start in range(0, V, BLOCK_V):
            z = _load_z(x_row, start + lanes, V, inv_temperature)
            m_new = tl.maximum(m, z)
            e = tl.where(z >= threshold, tl.exp(z - m_new), 0.0)
            d = tl.where(m_new == float("-inf"), 0.0, d * tl.exp(m - m_new) + e)  # no exp(-inf + inf)
            m = m_new
        row_max = tl.max(m, axis=0)
        row_sum = tl.sum(tl.where(m == float("-inf"), 0.0, d * tl.exp(m - row_max)), axis=0)
        key = _largest_key(x_row, V, inv_temperature, key, top_p * row_sum, row_max, True, BLOCK_V)
        threshold = _key_to_float(key.to(tl.int32))
    # 4. Gumbel-max over the kept tokens, with a running argmax per lane
    best = tl.full([BLOCK_V], float("-inf"), tl.float32)
    best_col = tl.zeros([BLOCK_V], tl.int32)
    for start in range(0, V, BLOCK_V):
        cols = start + lanes
        z = _load_z(x_row, cols, V, inv_temperature)
        u = tl.load(u_row + cols, mask=cols < V, other=0.5)
        score = tl.where(z >= threshold, z - tl.log(-tl.log(u)), float("-inf"))
        better = score > best                        # strictly: a lane keeps its first column on a tie
        best = tl.where(better, score, best)
        best_col = tl.where(better, cols, best_col)
    # the lowest column among the lanes holding the maximum, as torch.argmax picks
    top = tl.max(best, axis=0)
    token = tl.min(tl.where(best == top, best_col, V), axis=0)
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
    """The repetition penalty as Hugging Face applies it (CTRL's, with a sign test) on logits (V,):
    every token that occurs in prev_ids (once, however often) gets l / penalty if l > 0, else
    l * penalty; a new tensor."""
    seen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    seen[prev_ids] = True
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def bytes_moved(n_rows: int, vocab: int, element_size: int) -> int:
    return n_rows * vocab * (element_size + 4) + n_rows * 8   # logits + float32 noise in, ids out


if __name__ == "__main__":
    from genfast import bench, checks, runtime
    # rows of several blocks with a ragged last one, in the interpreter's blocks and a GPU's
    for B, V, T, k, p in [(3, 79, 0.8, 10, 0.9), (2, 1000, 1.2, 20, 0.8), (4, 200, 1.0, 0, 1.0),
                          (2, 1500, 1.0, 0, 0.95), (2, 2000, 0.7, 50, 1.0)]:
        logits = checks.randn(B, V, seed=V, scale=3.0)
        u = torch.rand(B, V, generator=torch.Generator().manual_seed(V)).clamp_(1e-10, 1 - 1e-7).to(logits.device)
        checks.check_equal(fused_sample(logits, T, k, p, u), torch_sample(logits, T, k, p, u),
                           what=f"fused_sample vs torch_sample (B={B}, V={V}, T={T}, top_k={k}, top_p={p})")
    print(f"fused_sample: the same tokens as torch_sample ({sample_launch_config(79)} at V=79)")
    if runtime.on_gpu():
        for V in (32000, 128256):
            logits = bench.randn(64, V, seed=0, scale=3.0)
            u = torch.rand(logits.shape, device="cuda").clamp_(1e-10, 1 - 1e-7)
            for k, p in ((0, 1.0), (50, 1.0), (0, 0.9), (50, 0.9)):
                for name, fn in (("kernel", fused_sample), ("torch", torch_sample)):
                    t = bench.time_gpu(lambda: fn(logits, 0.8, k, p, u))
                    print(f"64 x {V}, top_k={k:<2} top_p={p}: {name:<6} {t}")
