"""Attention-head scores that find previous-token and induction heads automatically (lab 07's answers).

On `repeated_tokens` (BOS, r_1..r_L, r_1..r_L) a position t of the second copy holds r_j with
j = t - L; its earlier occurrence is at t - L, and the token that followed it at t - L + 1.
- previous-token score of a head: mean attention from t to t - 1;
- induction score: mean attention from t (second copy) to t - L + 1, the token *after* the earlier
  occurrence of the current token, which is exactly what the next token will be.
A score near 1 means the head does that and nothing else. The table over every head and the best
head are the learner's (genfast.interp.scores); head ablation is in kernels.interp.hooks.
"""
from __future__ import annotations

import torch

from genfast.interp import scores as tables


def prev_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """pattern (B, H, T, T) -> (H,): mean attention of every query t >= 1 to key t - 1."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


def induction_score(pattern: torch.Tensor, seg_len: int, offset: int = 1) -> torch.Tensor:
    """pattern (B, H, T, T) on [offset prefix tokens] + r + r (r of length seg_len) -> (H,): mean attention
    of the queries of the second copy to the key seg_len - 1 positions back."""
    return pattern.diagonal(offset=-(seg_len - 1), dim1=-2, dim2=-1)[..., offset + 1:].mean(dim=(0, -1))


def head_scores(model, tokens, seg_len, offset=1):
    """(prev, induction), each (n_layer, n_head), of every head of `model` on `tokens`, with these scores."""
    return tables.head_scores(model, tokens, seg_len, prev_token_score, induction_score, offset=offset)
