"""Attention-head scores that find previous-token and induction heads automatically, and head ablation.

On `repeated_tokens` (BOS, r_1..r_L, r_1..r_L) a position t of the second copy holds r_j with
j = t - L; its earlier occurrence is at t - L, and the token that followed it at t - L + 1.
- previous-token score of a head: mean attention from t to t - 1;
- induction score: mean attention from t (second copy) to t - L + 1, the token *after* the earlier
  occurrence of the current token, which is exactly what the next token will be.
A score near 1 means the head does that and nothing else.
"""
from __future__ import annotations

import torch


def prev_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """pattern (B, H, T, T) -> (H,): mean attention of every query t >= 1 to key t - 1."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


def induction_score(pattern: torch.Tensor, seg_len: int, offset: int = 1) -> torch.Tensor:
    """pattern (B, H, T, T) on [offset prefix tokens] + r + r (r of length seg_len) -> (H,): mean attention
    of the queries of the second copy to the key seg_len - 1 positions back."""
    return pattern.diagonal(offset=-(seg_len - 1), dim1=-2, dim2=-1)[..., offset + 1:].mean(dim=(0, -1))


def head_scores(model, tokens, seg_len, offset=1):
    """(prev, induction), each (n_layer, n_head), of every head of `model` on `tokens`."""
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layer)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=names)
    prev = torch.stack([prev_token_score(cache[n]) for n in names])
    ind = torch.stack([induction_score(cache[n], seg_len, offset) for n in names])
    return prev, ind


def best_head(scores: torch.Tensor) -> tuple[int, int]:
    """(layer, head) of the highest score in a (n_layer, n_head) table."""
    i = int(scores.argmax())
    return i // scores.shape[1], i % scores.shape[1]


def ablate_head_hook(head: int, value=None):
    """A hook for blocks.{l}.attn.hook_z that replaces one head's output by 0 (or by `value`,
    e.g. its mean over a batch: mean ablation)."""
    def hook(z, _):
        z = z.clone()
        z[:, :, head] = 0.0 if value is None else value
        return z
    return hook
