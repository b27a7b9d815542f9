"""Lab 04's instructor side: the answers about the KV cache of the course model, and the presses
built on them.

The machinery (the press-able cache `LayerCache` / `Cache`, the `Press` interface, `ScorePress`,
`GQAPool`, the experiments `evaluate`, `needle_retrieval`, `heldout_windows`, `copy_task`,
`generate_uncached`) is the learner package's, `genfast.kvcache`; this module holds what the lab
grades and what is equal to it:

* `kv_cache_bytes`, the cache size formula;
* a cached forward of the course model (`attend`, `forward_cached`, `generate_cached`, on a
  `KVCache`): the answer of the graded `cached_attention` cell, whose test checks prefill + cached
  steps against a full forward and cached against uncached greedy tokens (lab06's tool model
  decodes with it too);
* the four eviction scores and their presses:

| press | kind | keeps |
|---|---|---|
| `SlidingWindow(budget)` | dynamic, eviction | the last `budget` tokens |
| `StreamingLLM(budget, sinks)` | dynamic, eviction | the first `sinks` tokens ("attention sinks") + the last ones |
| `H2O(budget, recent)` | dynamic, eviction | the last `recent` tokens + the heavy hitters: largest accumulated attention |
| `SnapKV(budget, window, kernel)` | dynamic, eviction | the last `window` tokens + the entries the window's queries attend to most (max-pooled) |
| `KIVIQuant(bits, group, residual)` | dynamic, quantization | every token; asymmetric codes (minimum + scale), keys per channel (groups of `group` tokens), values per token, the newest `residual`+ tokens in full precision |
| `SymmetricQuant(bits, group, residual)` (genfast) | dynamic, quantization | the naive baseline: the same layout with symmetric abs-max codes |
| `GQAPool(kv_heads)` (genfast) | static, architectural | every token; K/V mean-pooled over groups of heads |

Eviction presses are `ScorePress`es: they score every entry and keep the `budget` best, in
position order. Quantization is simulated with the reference quantizer (quantize, dequantize: the
attention sees exactly what an int cache holds).

`python -m kernels.kv_press` prints the quantization table of the module 4 notes: perplexity
against cache memory for the symmetric baseline and KIVI at 8, 4 and 2 bits, with and without
the full-precision window, on the course model and held-out text.

`forward_cached(model, idx, cache, press)` runs the tinylm GPT on new tokens with the cache,
reusing the model's own modules, and compresses the new token before attending when the press
keeps every entry (quantization, pooling); `evaluate` is genfast's with this forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genfast.kvcache import (BIG, Cache, GQAPool, LayerCache, Press, ScorePress, SymmetricQuant,  # noqa: F401
                             append, attention_weights, copy_task, heldout_windows, needle_retrieval, update_stats)
from genfast.kvcache import KIVIQuant as _KIVIQuant
from genfast.kvcache import evaluate as _evaluate
from genfast.kvcache import generate_uncached  # noqa: F401  (the baseline the cached loop must equal)

from . import kv_cache


class KVCache(Cache):
    """One LayerCache per layer, and how many tokens have gone through (the next position)."""


def kv_cache_bytes(layers, kv_heads, head_dim, tokens, bytes_per_value, batch=1):
    """2 (K and V) x layers x kv heads x head dim x tokens x bytes per value (x batch)."""
    return 2 * layers * kv_heads * head_dim * tokens * bytes_per_value * batch


# ----------------------------------------------------------------------------------------------
# the four eviction scores and their presses
# ----------------------------------------------------------------------------------------------
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
        super().__init__(budget, name="sliding window")

    def score(self, layer):
        return sliding_window_score(layer.pos)


class StreamingLLM(ScorePress):
    def __init__(self, budget, sinks=4):
        super().__init__(budget, name="sinks + window")
        self.sinks = sinks

    def score(self, layer):
        return streaming_llm_score(layer.pos, self.sinks)


class H2O(ScorePress):
    def __init__(self, budget, recent=None):
        super().__init__(budget, name="H2O")
        self.recent = budget // 2 if recent is None else recent

    def score(self, layer):
        return h2o_score(layer.pos, layer.acc, self.recent)


class SnapKV(ScorePress):
    def __init__(self, budget, window=None, kernel=5):
        super().__init__(budget, name="SnapKV")
        self.window = max(1, budget // 4) if window is None else window
        self.kernel = kernel

    def score(self, layer):
        return snapkv_score(layer.pos, layer.recent, self.window, self.kernel)


class KIVIQuant(_KIVIQuant):
    """genfast's KIVI press with the reference quantizer (kv_cache.quantize_asymmetric)."""

    def __init__(self, bits, group=16, residual=16):
        super().__init__(bits, group, residual, quantize=kv_cache.quantize_asymmetric)


# ----------------------------------------------------------------------------------------------
# cached forward and generation for genfast.tinylm.GPT
# ----------------------------------------------------------------------------------------------
def attend(q, layer: LayerCache, qpos):
    """Causal attention of new queries q (B, H, T, d) at positions qpos (T,) over the cache.

    Returns (y (B, H, T, d), p (B, H, T, n))."""
    p = attention_weights(q, layer, qpos)
    return p @ layer.v, p


@torch.no_grad()
def forward_cached(model, idx, cache: Cache, press: Press | None = None, attn_fn=None):
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


def evaluate(model, tokens, press: Press | None = None, prefill: int = 1):
    """genfast.kvcache.evaluate with the reference cached forward."""
    return _evaluate(model, tokens, press, prefill, forward=forward_cached)


# ----------------------------------------------------------------------------------------------
# the notes' quantization table
# ----------------------------------------------------------------------------------------------
def quantization_table(windows=64, length=112, prefill=96, seed=5):
    """Rows (scheme, bits, window, memory, perplexity, needle) on the course model: perplexity of
    the last length - prefill characters of `windows` held-out windows (the lab's protocol with
    more windows), memory relative to a full fp16 cache of `length` tokens (codes + fp16 scales
    and minima + the window), needle retrieval in the prompt setting (32 trials)."""
    import math
    from genfast.tinylm import load
    model, tok = load("shakespeare")
    tokens = heldout_windows(tok, windows, length, seed=seed)
    ppl = lambda press: math.exp(-evaluate(model, tokens, press, prefill)[0].mean().item())
    rows = [("full cache (fp16)", 16, "-", 1.0, ppl(None), needle_retrieval(None, trials=32))]
    for residual in (0, 16):
        for bits in (8, 4, 2):
            for press in (SymmetricQuant(bits, residual=residual), KIVIQuant(bits, residual=residual)):
                rows.append((press.name.split(" int")[0], bits, residual, press.memory(length), ppl(press),
                             needle_retrieval(press, trials=32)))
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| scheme | bits | window | memory | perplexity | needle |\n|---|---|---|---|---|---|")
    for name, bits, window, memory, perplexity, needle in quantization_table():
        print(f"| {name} | {bits} | {window} | {memory:.3f} | {perplexity:.3f} | {needle:.2f} |")
