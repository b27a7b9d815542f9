"""Lab 04's machinery: a press-able KV cache for the course model, the press interface, the quality
experiments (perplexity, needle retrieval), the quantized-cache record the decode kernel reads and
the byte / FLOP counts of the module's notes (`kv_bytes`, `bytes_moved`, `decode_intensity`,
`decode_step_time`, `kv_bytes_per_token`, `mla_bytes_per_token`).

Nothing here is one of the lab's answers. The lab's graded functions (the cache size, the cached
attention layer, the four eviction scores, the quantizer and the int4 packing, the decode kernel
and its combine) are the learner's, and everything here that needs one takes it as an argument:

* `ScorePress(budget, score)` keeps the `budget` entries a score function ranks highest;
  `eviction_presses(...)` builds the four eviction presses from the four score functions;
* `KIVIQuant(bits, group, residual, quantize)` quantizes with the asymmetric `quantize(x, bits,
  dim)` it is given; `SymmetricQuant` is the naive baseline (`quantize_symmetric`, not graded);
* `press_forward(cached_attention)` is the course model's forward with a press-able cache, built on
  a `cached_attention(att, x, past)` layer; `evaluate(model, tokens, press, prefill, forward)` runs
  teacher-forced decoding with such a forward.

The cache. For every layer the keys and values of the tokens kept so far, (B, H, n, d), with the
original position of every entry (B, H, n) and two attention statistics that eviction methods score
entries by: `acc` (B, H, n), the attention each entry has received, summed over every query so far
(H2O), and `recent` (B, H, w, n), the attention rows of the last w queries (SnapKV's observation
window). Entries may differ per head (H2O keeps different tokens in different heads).

A press takes one layer's cache (with its statistics) and returns a smaller or cheaper one:
`press(layer) -> layer`. Eviction presses (`budget` set) run after every step, so the cache never
holds more than `budget` entries between steps; the others (quantization, head pooling, `budget`
None) transform every entry and keep them all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
import triton

from . import runtime

BIG = 1.0e9  # score bonus for entries a press must keep (sinks, the recent window)


# ----------------------------------------------------------------------------------------------
# the cache
# ----------------------------------------------------------------------------------------------
@dataclass
class LayerCache:
    k: torch.Tensor        # (B, H, n, d)
    v: torch.Tensor        # (B, H, n, d)
    pos: torch.Tensor      # (B, H, n) long: original position of each entry
    acc: torch.Tensor      # (B, H, n): accumulated attention received (H2O)
    recent: torch.Tensor   # (B, H, w, n): attention rows of the last w queries (SnapKV)

    @property
    def length(self) -> int:
        return self.k.shape[2]

    def gather(self, idx: torch.Tensor) -> "LayerCache":
        """Keep entries idx (B, H, m) of every (batch, head), in that order."""
        d = self.k.shape[-1]
        take = lambda t: torch.gather(t, 2, idx[..., None].expand(*idx.shape, d))
        return LayerCache(take(self.k), take(self.v), torch.gather(self.pos, 2, idx),
                          torch.gather(self.acc, 2, idx),
                          torch.gather(self.recent, 3, idx[:, :, None, :].expand(-1, -1, self.recent.shape[2], -1)))


class Cache:
    """One LayerCache per layer, and how many tokens have gone through (the next position)."""

    def __init__(self, n_layer: int, window: int = 8):
        self.layers: list[LayerCache | None] = [None] * n_layer
        self.seen = 0
        self.window = window

    def nbytes(self, bytes_per_value: int = 2) -> int:
        return sum(2 * l.k.numel() * bytes_per_value for l in self.layers if l is not None)

    def lengths(self) -> list[int]:
        return [0 if l is None else l.length for l in self.layers]


def append(layer: LayerCache | None, k, v, pos, window: int) -> LayerCache:
    """Add the new tokens' k, v (B, H, T, d) at positions pos (T,) to the layer's cache, with
    zero statistics."""
    B, H, T, _ = k.shape
    pos = pos.to(k.device)[None, None, :].expand(B, H, T)
    if layer is None:
        return LayerCache(k, v, pos, k.new_zeros(B, H, T), k.new_zeros(B, H, window, T))
    return LayerCache(torch.cat([layer.k, k], 2), torch.cat([layer.v, v], 2), torch.cat([layer.pos, pos], 2),
                      torch.cat([layer.acc, k.new_zeros(B, H, T)], 2),
                      torch.cat([layer.recent, k.new_zeros(B, H, layer.recent.shape[2], T)], 3))


def attention_weights(q, layer: LayerCache, qpos):
    """The statistics presses score by: softmax weights (B, H, T, n) of queries q (B, H, T, d) at
    positions qpos (T,) over the cache entries each may see (position <= its own)."""
    s = (q @ layer.k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    visible = layer.pos[:, :, None, :] <= qpos.to(q.device)[None, None, :, None]
    return torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1)


def update_stats(layer: LayerCache, p) -> LayerCache:
    """Add attention rows p (B, H, T, n) to the accumulated attention and the recent window."""
    w = layer.recent.shape[2]
    recent = torch.cat([layer.recent, p], 2)[:, :, -w:]
    return replace(layer, acc=layer.acc + p.sum(2), recent=recent)


# ----------------------------------------------------------------------------------------------
# presses
# ----------------------------------------------------------------------------------------------
class Press:
    """press(layer) -> layer. `memory` is the fraction of a full fp16 cache it keeps for a
    context of `context` tokens (for the quality-vs-memory plot)."""
    name = "full cache"
    budget = None

    def __call__(self, layer: LayerCache) -> LayerCache:
        return layer

    def memory(self, context: int) -> float:
        return 1.0


class ScorePress(Press):
    """Eviction: score every entry (`score(layer) -> (B, H, n)`, larger = keep), keep the
    `budget` highest, in position order."""

    def __init__(self, budget: int, score=None, name: str = "eviction"):
        self.budget, self._score, self.name = budget, score, name

    def score(self, layer: LayerCache) -> torch.Tensor:
        return self._score(layer)

    def __call__(self, layer: LayerCache) -> LayerCache:
        if layer.length <= self.budget:
            return layer
        keep = self.score(layer).topk(self.budget, dim=-1).indices
        order = torch.gather(layer.pos, 2, keep).argsort(dim=-1)
        return layer.gather(torch.gather(keep, 2, order))

    def memory(self, context: int) -> float:
        return min(1.0, self.budget / context)


def eviction_presses(sliding_window_score, streaming_llm_score, h2o_score, snapkv_score, sinks=4):
    """{method name: budget -> press}, each press built on one of the score functions:
    sinks + window keeps `sinks` first positions, H2O a recent window of budget // 2,
    SnapKV an observation window of budget // 4 and a max-pool kernel of 5."""
    def window(b):
        return ScorePress(b, lambda layer: sliding_window_score(layer.pos), "sliding window")

    def streaming(b):
        return ScorePress(b, lambda layer: streaming_llm_score(layer.pos, sinks), "sinks + window")

    def h2o(b):
        return ScorePress(b, lambda layer: h2o_score(layer.pos, layer.acc, b // 2), "H2O")

    def snapkv(b):
        return ScorePress(b, lambda layer: snapkv_score(layer.pos, layer.recent, max(1, b // 4), 5), "SnapKV")
    return {"sliding window": window, "sinks + window": streaming, "H2O": h2o, "SnapKV": snapkv}


def quantize_symmetric(x: torch.Tensor, bits: int, dim: int):
    """The naive baseline: symmetric abs-max, round to nearest. (codes int8, scale fp32) with
    x ~ codes * scale; one scale per slice along `dim` (kept, size 1); codes in [-qmax, qmax],
    qmax = 2^(bits-1) - 1, so only 2^bits - 1 of the 2^bits levels are used (int2: {-1, 0, 1}),
    and a slice whose values are not centred on 0 wastes part of its range."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.float().abs().amax(dim=dim, keepdim=True) / qmax
    codes = torch.round(x.float() / scale.clamp_min(1e-12)).clamp(-qmax, qmax).to(torch.int8)
    return codes, scale


def quantized_length(n: int, group: int, residual: int) -> int:
    """How many of n cached tokens are stored quantized: the largest multiple of `group` that
    leaves at least `residual` of the newest tokens in full precision (0 if there is none)."""
    return max(0, (n - residual) // group * group)


class KIVIQuant(Press):
    """KIVI (Liu et al. 2024), simulated: the attention sees what an int cache holds (codes x
    scale + minimum), with `quantize(x, bits, dim) -> (codes, scale, minimum)` (asymmetric: a
    minimum and a scale per slice, 2^bits levels). Keys per channel over groups of `group`
    tokens, values per token; the newest tokens stay in full precision (the residual window,
    `residual` to `residual + group - 1` of them, for keys and values: groups are quantized whole).

    KIVI's own bookkeeping differs in one detail: its key window fills up to R tokens and is then
    quantized at once, its value window slides token by token. Here both share one boundary, so
    that the decode kernel reads one quantized part and one full-precision part."""

    zero_point = True

    def __init__(self, bits, group=16, residual=16, quantize=None, name=None):
        if quantize is None:
            raise TypeError("KIVIQuant needs quantize=, a function (x, bits, dim) -> (codes, scale, minimum)")
        self.bits, self.group, self.residual, self.quantize = bits, group, residual, quantize
        self.name = name or f"KIVI int{bits}"

    def _fake(self, x, dim):
        codes, scale, *minimum = self.quantize(x, self.bits, dim)   # the symmetric baseline has no minimum
        return (codes.float() * scale + (minimum[0] if minimum else 0.0)).to(x.dtype)

    def __call__(self, layer):
        B, H, n, d = layer.k.shape
        nq = quantized_length(n, self.group, self.residual)
        if nq == 0:
            return layer
        k, v = layer.k.clone(), layer.v.clone()
        groups = k[:, :, :nq].reshape(B, H, nq // self.group, self.group, d)
        k[:, :, :nq] = self._fake(groups, dim=3).reshape(B, H, nq, d)   # keys: per channel, per group of tokens
        v[:, :, :nq] = self._fake(v[:, :, :nq], dim=-1)                 # values: per token
        return replace(layer, k=k, v=v)

    def memory(self, context, head_dim=32):
        """Codes, plus an fp16 scale (and an fp16 minimum when asymmetric) per key channel and
        group and per value token, plus the full-precision window; over a full fp16 cache."""
        nq = quantized_length(context, self.group, self.residual)
        per_scale = 16 * (2 if self.zero_point else 1)
        keys = nq * (self.bits * head_dim + per_scale * head_dim / self.group)
        values = nq * (self.bits * head_dim + per_scale)
        window = (context - nq) * 2 * 16 * head_dim
        return (keys + values + window) / (2 * 16 * head_dim * context)


class SymmetricQuant(KIVIQuant):
    """The naive baseline with KIVI's layout (keys per channel in groups, values per token, the
    same full-precision window): symmetric abs-max codes (`quantize_symmetric`), no minimum."""

    zero_point = False

    def __init__(self, bits, group=16, residual=16, name=None):
        super().__init__(bits, group, residual, quantize=quantize_symmetric, name=name or f"symmetric int{bits}")


class GQAPool(Press):
    """Grouped-query attention made from a multi-head model by mean-pooling K and V over groups
    of consecutive heads, without any retraining (the GQA paper uptrains after pooling)."""

    def __init__(self, kv_heads):
        self.kv_heads, self.name = kv_heads, "GQA pool"

    def __call__(self, layer):
        B, H, n, d = layer.k.shape
        g = H // self.kv_heads
        pool = lambda t: t.reshape(B, self.kv_heads, g, n, d).mean(2, keepdim=True).expand(-1, -1, g, -1, -1).reshape(B, H, n, d)
        return replace(layer, k=pool(layer.k), v=pool(layer.v))

    def memory(self, context, n_head=4):
        return self.kv_heads / n_head


# ----------------------------------------------------------------------------------------------
# the course model with a press-able cache, and the experiments
# ----------------------------------------------------------------------------------------------
class _Stored:
    """Stands in for a CausalSelfAttention whose new keys and values are the ones the cache stores
    (compressed by a quantization or pooling press): `qkv(x)` returns the layer's queries with the
    stored keys and values; everything else (`proj`, `n_head`) is the real layer's."""

    def __init__(self, att, qkv):
        self._att, self._qkv = att, qkv

    def qkv(self, x):
        return self._qkv

    def __getattr__(self, name):
        return getattr(self._att, name)


def press_forward(cached_attention):
    """forward(model, idx, cache, press) -> logits (B, T, V) of the course GPT with a press-able
    `Cache`, built on `cached_attention(att, x, past) -> (y, (k, v))` (lab 04's layer: y after
    att.proj, k and v with the new tokens appended). Per layer: your layer attends over the cached
    entries and returns the new tokens' k, v, which join the cache; a quantization or pooling press
    compresses them at once and your layer runs again on what the cache stores (the stored keys and
    values reach it through a stand-in for `att`); the queries' attention over the cache updates the
    statistics, and an eviction press brings the cache back to its budget."""
    @torch.no_grad()
    def forward(model, idx, cache: Cache, press: Press | None = None):
        B, T = idx.shape
        if cache.seen + T > model.config.block_size:
            raise ValueError(f"{cache.seen + T} positions: the model knows only {model.config.block_size}")
        qpos = torch.arange(cache.seen, cache.seen + T, device=idx.device)
        x = model.tok_emb(idx) + model.pos_emb(qpos)
        for i, block in enumerate(model.blocks):
            att, h, old = block.attn, block.ln1(x), cache.layers[i]
            past = None if old is None else (old.k, old.v)
            y, (k, v) = cached_attention(att, h, past)
            layer = append(old, k[:, :, -T:], v[:, :, -T:], qpos, cache.window)
            queries = att.qkv(h)[..., : x.shape[-1]]
            if press is not None and press.budget is None:
                layer = press(layer)        # quantization / pooling: the new tokens are stored compressed
                stored = [t[:, :, -T:].transpose(1, 2).flatten(2) for t in (layer.k, layer.v)]
                past = None if old is None else (layer.k[:, :, :-T], layer.v[:, :, :-T])
                y, _ = cached_attention(_Stored(att, torch.cat([queries, *stored], dim=-1)), h, past)
            q = queries.unflatten(-1, (att.n_head, -1)).transpose(1, 2)
            layer = update_stats(layer, attention_weights(q, layer, qpos))
            if press is not None and press.budget is not None:
                layer = press(layer)        # eviction: back to the budget for the next step
            cache.layers[i] = layer
            x = x + y
            x = x + block.mlp(block.ln2(x))
        cache.seen += T
        return model.head(model.ln_f(x))
    return forward


@torch.no_grad()
def evaluate(model, tokens, press: Press | None = None, prefill: int = 1, *, forward):
    """Teacher-forced decoding of tokens (B, T) with `forward(model, idx, cache, press)` (for
    example `press_forward(cached_attention)`): the first `prefill` tokens in one forward (then the
    press compresses that prompt once, with the statistics of all its queries), the rest one token
    a step with the press after each. Returns (log-likelihood, hit = argmax right), both
    (B, T - prefill), for targets tokens[:, prefill:]."""
    cache = Cache(len(model.blocks))
    logits = forward(model, tokens[:, :prefill], cache, press)[:, -1]
    logps, hits = [], []
    for t in range(prefill, tokens.shape[1]):
        logps.append(torch.log_softmax(logits, -1).gather(-1, tokens[:, t:t + 1])[:, 0])
        hits.append(logits.argmax(-1) == tokens[:, t])
        if t + 1 < tokens.shape[1]:
            logits = forward(model, tokens[:, t:t + 1], cache, press)[:, -1]
    return torch.stack(logps, 1), torch.stack(hits, 1)


@torch.no_grad()
def generate_uncached(model, prompt, n_new):
    """Greedy decoding that re-runs the whole context every step: O(t) work per token."""
    idx = prompt
    for _ in range(n_new):
        idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@torch.no_grad()
def needle_retrieval(press: Press | None, trials=64, length=128, heads=4, d=32, needle_at=None,
                     question=8, beta=8.0, mode="prompt", seed=0):
    """Passkey retrieval on a constructed retrieval head (the course model cannot copy, see the lab).

    Per trial and head: `length` random unit keys and random values; a needle entry at `needle_at`
    (random if None, in the first half); filler queries are random unit vectors x beta; the last
    `question` queries are the needle's key x beta (the question "asks" for the needle).
    mode "prompt": the whole prompt is attended in one pass (statistics from every query, the
    question included), then pressed once (SnapKV's setting: compress a long prompt).
    mode "stream": the press runs after every token, so eviction happens before the question comes.
    Then one answer query (needle key x beta) reads the cache; a hit when the read-out is closer to
    the needle's value than to any other value. Returns the hit rate over trials x heads."""
    gen = torch.Generator().manual_seed(seed)
    keys = F.normalize(torch.randn(trials, heads, length, d, generator=gen), dim=-1)
    values = torch.randn(trials, heads, length, d, generator=gen)
    queries = F.normalize(torch.randn(trials, heads, length, d, generator=gen), dim=-1)
    if needle_at is None:
        needle = torch.randint(length // 8, length // 2, (trials,), generator=gen)
    else:
        needle = torch.full((trials,), needle_at)
    needle_key = keys[torch.arange(trials), :, needle]                   # (trials, heads, d)
    queries[:, :, length - question:] = needle_key[:, :, None, :]
    queries = queries * beta * math.sqrt(d)                              # the weights divide by sqrt(d)
    positions = torch.arange(length)
    if mode == "prompt":
        layer = append(None, keys, values, positions, question)
        layer = update_stats(layer, attention_weights(queries, layer, positions))
        layer = press(layer) if press is not None else layer
    else:
        layer = None
        for t in range(length):
            layer = append(layer, keys[:, :, t:t + 1], values[:, :, t:t + 1], positions[t:t + 1], question)
            if press is not None and press.budget is None:
                layer = press(layer)
            layer = update_stats(layer, attention_weights(queries[:, :, t:t + 1], layer, positions[t:t + 1]))
            if press is not None and press.budget is not None:
                layer = press(layer)
    p = attention_weights(needle_key[:, :, None, :] * beta * math.sqrt(d), layer, torch.tensor([length]))
    answer = p @ layer.v
    guess = (answer @ values.transpose(-1, -2))[:, :, 0].argmax(-1)      # (trials, heads)
    return (guess == needle[:, None]).float().mean().item()


def heldout_windows(tok, n, length, seed=0):
    """n windows of `length` characters of the validation plays (never seen in training)."""
    from genfast.tinylm import data
    _, val = data.corpus()
    ids = tok.encode(val)
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (n,), generator=gen)
    return torch.stack([ids[s:s + length] for s in starts.tolist()])


def copy_task(tok, n, needle_len=24, length=128, needle_at=4, seed=1):
    """The course model's needle task: a needle of `needle_len` characters of held-out text near
    the start, filler text, then the needle again at the end. Score: next-character accuracy
    over the repeated needle (an induction-style copy). Returns (tokens (n, length), span slice
    of the targets to score in evaluate's (B, T-1) output)."""
    hay = heldout_windows(tok, n, length, seed=seed)
    needles = heldout_windows(tok, n, needle_len, seed=seed + 100)
    hay[:, needle_at:needle_at + needle_len] = needles
    hay[:, length - needle_len:] = needles
    start = length - needle_len        # targets t+1 in [start + 1, length) are predicted from the copy
    return hay, slice(start, length - 1)


# ----------------------------------------------------------------------------------------------
# the quantized cache the decode kernel reads, its launch configuration, byte counts, the spec
# ----------------------------------------------------------------------------------------------
@dataclass
class QuantizedKV:
    """A KIVI-quantized cache of N = Nq + R tokens: the oldest Nq (a multiple of `group`) as
    asymmetric codes, the newest R (the residual window) in full precision.

    k, v: codes (B, H_kv, Nq, d) uint8 in [0, 255] (bits 8), or (B, H_kv, Nq, d/2) uint8 (bits 4,
    two codes in [0, 15] a byte: channel j in the low nibble, channel j + d/2 in the high one);
    k_scale, k_min (B, H_kv, Nq / group, d) fp32: keys per channel, one pair per group of tokens;
    v_scale, v_min (B, H_kv, Nq) fp32: values per token; a key or value is codes x scale + min;
    k_res, v_res (B, H_kv, R, d): the full-precision window, in the model's dtype."""
    k: torch.Tensor
    v: torch.Tensor
    k_scale: torch.Tensor
    k_min: torch.Tensor
    v_scale: torch.Tensor
    v_min: torch.Tensor
    k_res: torch.Tensor
    v_res: torch.Tensor
    bits: int
    group: int

    @property
    def head_dim(self) -> int:
        return self.k_res.shape[-1]

    @property
    def length(self) -> int:
        return self.k.shape[2] + self.k_res.shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.k_scale, self.k_min, self.v_scale,
                                                           self.v_min, self.k_res, self.v_res))


def _sm_count() -> int:
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


def split_config(rows: int, N: int, block_n: int | None = None) -> dict:
    """BLOCK_N and SPLIT_LEN of the split-K decode kernel for `rows` programs per split (B x H_kv)
    and N tokens (the lab's launcher and the reference use this one). `block_n` fixes the tile (a
    quantized part's tile is its key group: one scale and minimum per channel per tile). On a GPU
    tiles of 64 tokens, 8 warps (at 4 the GQA kernel's 64-token K and V tiles spill) and enough
    splits for ~16 programs per SM; in the interpreter tiles of 16 and two tiles a split, so that
    the checks exercise several of each."""
    if runtime.on_gpu():
        block_n = block_n or 64
        target = 16 * _sm_count()
        n_splits = max(1, min(triton.cdiv(N, 4 * block_n), triton.cdiv(target, rows)))
        split_len = triton.cdiv(triton.cdiv(N, n_splits), block_n) * block_n
        return dict(BLOCK_N=block_n, SPLIT_LEN=split_len, num_warps=8, num_stages=2)
    block_n = block_n or 16
    return dict(BLOCK_N=block_n, SPLIT_LEN=2 * block_n)


def decode_parts(cache) -> list[tuple]:
    """What one decode step reads, in token order, one kernel launch each: a list of
    (k, v, scales, bits, config); scales = (k_scale, k_min, v_scale, v_min), None for a
    full-precision part; config = split_config(B x H_kv, tokens of the part, tile).
    A (k, v) tuple is one part (bits 16); a QuantizedKV is its quantized tokens (bits 8 or 4,
    tile = its key group), then its full-precision window; an empty part is left out."""
    if not isinstance(cache, QuantizedKV):
        k, v = cache
        return [(k, v, None, 16, split_config(k.shape[0] * k.shape[1], k.shape[2]))]
    parts = []
    B, H_kv, Nq = cache.k.shape[:3]
    if Nq:
        parts.append((cache.k, cache.v, (cache.k_scale, cache.k_min, cache.v_scale, cache.v_min), cache.bits,
                      split_config(B * H_kv, Nq, cache.group)))
    R = cache.k_res.shape[2]
    if R:
        parts.append((cache.k_res, cache.v_res, None, 16, split_config(B * H_kv, R)))
    return parts


def kv_bytes(B, H_kv, N, d, bits, group=64, residual=128):
    """Bytes of a K and V cache of N tokens: fp16 (bits 16), or a QuantizedKV (bits 8 / 4): codes,
    fp32 scales and minima (per key channel and group, per value token), the fp16 window."""
    if bits == 16:
        return 2 * B * H_kv * N * d * 2
    nq = quantized_length(N, group, residual)
    codes = 2 * B * H_kv * nq * d * bits // 8
    scales = 2 * B * H_kv * (nq // group * d + nq) * 4          # (scale, minimum) pairs, fp32
    window = 2 * B * H_kv * (N - nq) * d * 2
    return codes + scales + window


def bytes_moved(B, H, N, d, bits, H_kv=None, per_query_head=False, group=64, residual=128):
    """Traffic of one decode-attention step: the K/V cache read, q read and o written (fp16).

    The course's kernel runs one program per KV head and split, with the G = H / H_kv query
    heads of the group in one tile: it reads each KV head once. A kernel with one program per
    query head (`per_query_head=True`, the lab's kernel before) reads every KV head G times."""
    H_kv = H if H_kv is None else H_kv
    reads = H // H_kv if per_query_head else 1
    return reads * kv_bytes(B, H_kv, N, d, bits, group, residual) + 2 * B * H * d * 2


def decode_intensity(H, H_kv, bits=16):
    """FLOPs per byte of cache that decode attention does: per cached token and KV head it reads
    2 x d values (K and V) of bits / 8 bytes and, for each of its G = H / H_kv query heads, does
    2d FLOPs for q . k and 2d for p v: 4 d G / (2 d bits / 8) = 16 G / bits. fp16 multi-head: 1;
    GQA: G; int8 / int4: twice / four times that (softmax and scales not counted)."""
    return 16 * (H // H_kv) / bits


def decode_step_time(weight_bytes, kv_bytes_per_sequence, batch, bandwidth):
    """Seconds of one decode step when it is memory-bound: every weight is read once for the
    whole batch, every sequence's cache once: (weight bytes + batch x KV bytes) / bandwidth."""
    return (weight_bytes + batch * kv_bytes_per_sequence) / bandwidth


def kv_bytes_per_token(layers, kv_heads, head_dim, bits=16):
    """Cache bytes one token adds: 2 (K and V) x layers x kv heads x head dim x bits / 8."""
    return 2 * layers * kv_heads * head_dim * bits // 8


def mla_bytes_per_token(layers, latent_dim, rope_dim, bits=16):
    """Multi-head latent attention (DeepSeek-V2) caches one latent c_KV (latent_dim) and one
    shared RoPE key (rope_dim) per token and layer, for every head at once."""
    return layers * (latent_dim + rope_dim) * bits // 8


def torch_decode_attention(q, k, v, scale=None):
    """The spec: softmax(q k^T * scale) v for one query per (batch, head): q (B, H, d),
    k, v (B, H_kv, N, d); query head h reads kv head h // (H / H_kv). fp32 result (B, H, d)."""
    B, H, d = q.shape
    group = H // k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    k = k.float().repeat_interleave(group, dim=1)
    v = v.float().repeat_interleave(group, dim=1)
    s = torch.einsum("bhd,bhnd->bhn", q.float(), k) * scale
    return torch.einsum("bhn,bhnd->bhd", torch.softmax(s, dim=-1), v)


def sdpa_decode(q, k, v):
    """torch's own decode attention (the speed bar): SDPA with a single query, in q's dtype
    (query heads h read kv head h // (H / H_kv))."""
    return F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=k.shape[1] != q.shape[1])[:, :, 0]


def random_quantized_kv(B, H_kv, N, d, bits, device=None, seed=0, group=64, residual=128,
                        dtype=torch.float16) -> QuantizedKV:
    """A QuantizedKV of random codes, scales and minima and a random window (for timing: every
    byte is a valid code)."""
    device = device or runtime.device()
    gen = torch.Generator(device=device).manual_seed(seed)
    nq = quantized_length(N, group, residual)
    width = d // 2 if bits == 4 else d
    k, v = (torch.randint(0, 256, (B, H_kv, nq, width), generator=gen, device=device, dtype=torch.uint8)
            for _ in range(2))
    rand = lambda *shape: torch.rand(*shape, generator=gen, device=device)
    levels = 2 ** bits - 1
    k_scale, k_min = rand(B, H_kv, nq // group, d) * 4 / levels, -2 * rand(B, H_kv, nq // group, d)
    v_scale, v_min = rand(B, H_kv, nq) * 4 / levels, -2 * rand(B, H_kv, nq)
    k_res, v_res = (torch.randn(B, H_kv, N - nq, d, generator=gen, device=device).to(dtype) for _ in range(2))
    return QuantizedKV(k, v, k_scale, k_min, v_scale, v_min, k_res, v_res, bits, group)
