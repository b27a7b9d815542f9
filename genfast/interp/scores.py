"""Tables of attention-head scores, and the best head.

The scores themselves (previous-token, induction) are lab 07's exercise: `head_scores` applies the
functions it is given to every layer's attention pattern.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def head_scores(model, tokens, seg_len, prev_score, ind_score, offset=1):
    """(prev, induction), each (n_layer, n_head): `prev_score(pattern)` and `ind_score(pattern, seg_len,
    offset)` of every layer's attention pattern (B, H, T, T) on `tokens`."""
    patterns = []

    def read(pattern, _):
        patterns.append(pattern.detach())           # layer by layer, in forward order

    model.run_with_hooks(tokens, [(f"blocks.{l}.attn.hook_pattern", read) for l in range(model.cfg.n_layer)])
    return (torch.stack([prev_score(p) for p in patterns]),
            torch.stack([ind_score(p, seg_len, offset) for p in patterns]))


def best_head(scores: torch.Tensor) -> tuple[int, int]:
    """(layer, head) of the highest score in a (n_layer, n_head) table."""
    i = int(scores.argmax())
    return i // scores.shape[1], i % scores.shape[1]
