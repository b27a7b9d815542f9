"""A KV cache for the course's tiny model, and "presses" that compress it.

The cache: for every layer the keys and values of the tokens seen so far, (B, H, n, d), with
the original position of every entry (B, H, n) and two attention statistics that eviction
methods score entries by:

* `acc` (B, H, n): attention each entry has received, summed over every query so far (H2O);
* `recent` (B, H, w, n): the attention rows of the last w queries (SnapKV's observation window).

Entries may differ per head (H2O keeps different tokens in different heads), so everything is
indexed per (batch, head) and gathered together.

A **press** takes one layer's cache (with its statistics) and returns a smaller or cheaper one:
`press(layer) -> layer`. It runs after every step of the generation loop, so the cache never
holds more than `press.budget` entries between steps. The methods:

| press | kind | keeps |
|---|---|---|
| `SlidingWindow(budget)` | dynamic, eviction | the last `budget` tokens |
| `StreamingLLM(budget, sinks)` | dynamic, eviction | the first `sinks` tokens ("attention sinks") + the last ones |
| `H2O(budget, recent)` | dynamic, eviction | the last `recent` tokens + the heavy hitters: largest accumulated attention |
| `SnapKV(budget, window, kernel)` | dynamic, eviction | the last `window` tokens + the entries the window's queries attend to most (max-pooled) |
| `KIVIQuant(bits, group)` | dynamic, quantization | every token; keys int per channel (groups of `group` tokens), values per token |
| `GQAPool(kv_heads)` | static, architectural | every token; K/V mean-pooled over groups of heads (what grouped-query attention stores) |

Eviction presses are `ScorePress`es: they score every entry and keep the `budget` best, in
position order. Quantization is simulated (quantize, dequantize: the attention sees exactly
what an int cache holds); pooling likewise (the group's shared K/V is repeated for its heads).

`forward_cached(model, idx, cache, press)` runs the tinylm GPT on new tokens with the cache,
reusing the model's own modules (nothing in tinylm/model.py changes); `generate_cached` and
`generate_uncached` are the greedy loops; `evaluate` runs teacher-forced next-token prediction
with a press and returns per-token log-likelihoods and hits.

Instructor side (issue 13): `KVCache`, `append`, `attend`, `forward_cached`, `generate_cached` are a
cached forward / cached generation of the course model, i.e. the answer of lab04's graded
`cached_attention` cell (whose test checks prefill + cached steps against a full forward and cached
against uncached greedy tokens). They stay in kernels/ and are never shipped in genfast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

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


class KVCache:
    """One LayerCache per layer, and how many tokens have gone through (the next position)."""

    def __init__(self, n_layer: int, window: int = 8):
        self.layers: list[LayerCache | None] = [None] * n_layer
        self.seen = 0
        self.window = window

    def nbytes(self, bytes_per_value: int = 2) -> int:
        return sum(2 * l.k.numel() * bytes_per_value for l in self.layers if l is not None)

    def lengths(self) -> list[int]:
        return [0 if l is None else l.length for l in self.layers]


def kv_cache_bytes(layers, kv_heads, head_dim, tokens, bytes_per_value, batch=1):
    """2 (K and V) x layers x kv heads x head dim x tokens x bytes per value (x batch)."""
    return 2 * layers * kv_heads * head_dim * tokens * bytes_per_value * batch


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
    """Eviction: score every entry, keep the `budget` highest, in position order."""

    def __init__(self, budget: int):
        self.budget = budget

    def score(self, layer: LayerCache) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, layer: LayerCache) -> LayerCache:
        if layer.length <= self.budget:
            return layer
        keep = self.score(layer).topk(self.budget, dim=-1).indices
        order = torch.gather(layer.pos, 2, keep).argsort(dim=-1)
        return layer.gather(torch.gather(keep, 2, order))

    def memory(self, context: int) -> float:
        return min(1.0, self.budget / context)


def _is_recent(pos: torch.Tensor, n: int) -> torch.Tensor:
    """True for the n most recent positions of each (batch, head)."""
    return pos > pos.amax(dim=-1, keepdim=True) - n


def sliding_window_score(pos):
    return pos.float()


def streaming_llm_score(pos, sinks):
    return pos.float() + BIG * (pos < sinks)


def h2o_score(pos, acc, recent):
    return acc + BIG * _is_recent(pos, recent)


def snapkv_score(pos, recent_attn, window, kernel):
    votes = recent_attn.sum(dim=2)                      # (B, H, n): attention from the window's queries
    B, H, n = votes.shape
    pooled = F.max_pool1d(votes.reshape(B * H, 1, n), kernel, stride=1, padding=kernel // 2).reshape(B, H, n)
    return pooled + BIG * _is_recent(pos, window)


class SlidingWindow(ScorePress):
    def __init__(self, budget):
        super().__init__(budget)
        self.name = "sliding window"

    def score(self, layer):
        return sliding_window_score(layer.pos)


class StreamingLLM(ScorePress):
    def __init__(self, budget, sinks=4):
        super().__init__(budget)
        self.sinks, self.name = sinks, "sinks + window"

    def score(self, layer):
        return streaming_llm_score(layer.pos, self.sinks)


class H2O(ScorePress):
    def __init__(self, budget, recent=None):
        super().__init__(budget)
        self.recent = budget // 2 if recent is None else recent
        self.name = "H2O"

    def score(self, layer):
        return h2o_score(layer.pos, layer.acc, self.recent)


class SnapKV(ScorePress):
    def __init__(self, budget, window=None, kernel=5):
        super().__init__(budget)
        self.window = max(1, budget // 4) if window is None else window
        self.kernel, self.name = kernel, "SnapKV"

    def score(self, layer):
        return snapkv_score(layer.pos, layer.recent, self.window, self.kernel)


def fake_quantize(x, bits, dim):
    """Quantize symmetrically along `dim` (one scale per slice) and dequantize."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.abs().amax(dim=dim, keepdim=True).clamp_min(1e-12) / qmax
    return torch.round(x / scale).clamp(-qmax, qmax) * scale


class KIVIQuant(Press):
    """Keys per channel over complete groups of `group` tokens, values per token; the last
    incomplete key group stays in full precision (KIVI's residual), values are all quantized."""

    def __init__(self, bits, group=16):
        self.bits, self.group, self.name = bits, group, f"KIVI int{bits}"

    def __call__(self, layer):
        B, H, n, d = layer.k.shape
        full = (n // self.group) * self.group
        k = layer.k.clone()
        if full:
            grouped = k[:, :, :full].reshape(B, H, full // self.group, self.group, d)
            k[:, :, :full] = fake_quantize(grouped, self.bits, dim=3).reshape(B, H, full, d)
        return replace(layer, k=k, v=fake_quantize(layer.v, self.bits, dim=-1))

    def memory(self, context):
        # codes + one fp16 scale per key channel and group, and per value token
        return self.bits / 16 + (1 / self.group + 1 / 128) / 2


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
# cached forward and generation for genfast.tinylm.GPT
# ----------------------------------------------------------------------------------------------
def append(layer: LayerCache | None, k, v, pos, window: int) -> LayerCache:
    """Add the new tokens' k, v (B, H, T, d) at positions pos (T,) to the layer's cache."""
    B, H, T, _ = k.shape
    pos = pos.to(k.device)[None, None, :].expand(B, H, T)
    if layer is None:
        return LayerCache(k, v, pos, k.new_zeros(B, H, T), k.new_zeros(B, H, window, T))
    return LayerCache(torch.cat([layer.k, k], 2), torch.cat([layer.v, v], 2), torch.cat([layer.pos, pos], 2),
                      torch.cat([layer.acc, k.new_zeros(B, H, T)], 2),
                      torch.cat([layer.recent, k.new_zeros(B, H, layer.recent.shape[2], T)], 3))


def attend(q, layer: LayerCache, qpos):
    """Causal attention of new queries q (B, H, T, d) at positions qpos (T,) over the cache.

    Returns (y (B, H, T, d), p (B, H, T, n))."""
    s = (q @ layer.k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    visible = layer.pos[:, :, None, :] <= qpos.to(q.device)[None, None, :, None]
    p = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1)
    return p @ layer.v, p


def update_stats(layer: LayerCache, p) -> LayerCache:
    w = layer.recent.shape[2]
    recent = torch.cat([layer.recent, p], 2)[:, :, -w:]
    return replace(layer, acc=layer.acc + p.sum(2), recent=recent)


@torch.no_grad()
def forward_cached(model, idx, cache: KVCache, press: Press | None = None, attn_fn=None):
    """Logits (B, T, V) for new tokens idx (B, T) that follow the cache's tokens; the cache
    is extended (and pressed, if a press is given) in place."""
    B, T = idx.shape
    if cache.seen + T > model.config.block_size:
        raise ValueError(f"{cache.seen + T} positions: the model knows only {model.config.block_size}")
    attn_fn = attend if attn_fn is None else attn_fn
    qpos = torch.arange(cache.seen, cache.seen + T, device=idx.device)
    x = model.tok_emb(idx) + model.pos_emb(qpos)
    for i, block in enumerate(model.blocks):
        att = block.attn
        C = x.shape[-1]
        q, k, v = att.qkv(block.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, att.n_head, C // att.n_head).transpose(1, 2) for t in (q, k, v))
        layer = append(cache.layers[i], k, v, qpos, cache.window)
        if press is not None and press.budget is None:
            layer = press(layer)        # quantization / pooling: the new token is stored compressed
        y, p = attn_fn(q, layer, qpos)
        layer = update_stats(layer, p)
        if press is not None and press.budget is not None:
            layer = press(layer)        # eviction: back to the budget for the next step
        cache.layers[i] = layer
        x = x + att.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln2(x))
    cache.seen += T
    return model.head(model.ln_f(x))


@torch.no_grad()
def generate_uncached(model, prompt, n_new):
    """Greedy decoding that re-runs the whole context every step: O(t) work per token."""
    idx = prompt
    for _ in range(n_new):
        idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@torch.no_grad()
def generate_cached(model, prompt, n_new, press: Press | None = None):
    """Greedy decoding with a KV cache: prefill the prompt once, then one token per step."""
    cache = KVCache(len(model.blocks))
    logits = forward_cached(model, prompt, cache, press)
    out = [prompt]
    for step in range(n_new):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out.append(nxt)
        if step + 1 < n_new:
            logits = forward_cached(model, nxt, cache, press)
    return torch.cat(out, dim=1), cache


@torch.no_grad()
def evaluate(model, tokens, press: Press | None = None, prefill: int = 1):
    """Teacher-forced decoding of tokens (B, T): the first `prefill` tokens in one forward (then
    the press compresses that prompt once, with the statistics of all its queries), the rest one
    token a step with the press after each. Returns (log-likelihood, hit = argmax right), both
    (B, T - prefill), for targets tokens[:, prefill:]."""
    cache = KVCache(len(model.blocks))
    logits = forward_cached(model, tokens[:, :prefill], cache, press)[:, -1]
    logps, hits = [], []
    for t in range(prefill, tokens.shape[1]):
        logps.append(torch.log_softmax(logits, -1).gather(-1, tokens[:, t:t + 1])[:, 0])
        hits.append(logits.argmax(-1) == tokens[:, t])
        if t + 1 < tokens.shape[1]:
            logits = forward_cached(model, tokens[:, t:t + 1], cache, press)[:, -1]
    return torch.stack(logps, 1), torch.stack(hits, 1)


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
    queries = queries * beta * math.sqrt(d)                              # attend() divides by sqrt(d)
    positions = torch.arange(length)
    if mode == "prompt":
        layer = append(None, keys, values, positions, question)
        _, p = attend(queries, layer, positions)
        layer = update_stats(layer, p)
        layer = press(layer) if press is not None else layer
    else:
        layer = None
        for t in range(length):
            layer = append(layer, keys[:, :, t:t + 1], values[:, :, t:t + 1], positions[t:t + 1], question)
            if press is not None and press.budget is None:
                layer = press(layer)
            _, p = attend(queries[:, :, t:t + 1], layer, positions[t:t + 1])
            layer = update_stats(layer, p)
            if press is not None and press.budget is not None:
                layer = press(layer)
    answer, _ = attend(needle_key[:, :, None, :] * beta * math.sqrt(d), layer, torch.tensor([length]))
    guess = (answer @ values.transpose(-1, -2))[:, :, 0].argmax(-1)      # (trials, heads)
    return (guess == needle[:, None]).float().mean().item()


# ----------------------------------------------------------------------------------------------
# data for the quality experiments
# ----------------------------------------------------------------------------------------------
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
