"""What the logit lens decodes (the residual stream at every depth), and the rank of a token.

The lens itself, decoding each state with the model's final LayerNorm and unembedding, is lab 07's
exercise.
"""
from __future__ import annotations

import torch


def resid_names(model):
    """The residual stream before block 0 and after every block: n_layer + 1 states."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layer)]


def token_rank(logits, target):
    """Rank (0 = top) of `target` (...,) in `logits` (..., vocab)."""
    return (logits > logits.gather(-1, target[..., None])).sum(-1)
