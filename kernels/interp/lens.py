"""The logit lens: read the residual stream at every depth with the model's own unembedding.

The residual stream is a sum: embeddings + every layer's output. If the last layers mostly refine
the prediction, unembedding an intermediate state (final LayerNorm, then W_U, as if the remaining
layers were skipped) already shows what the model "currently thinks" the next token is.
"""
from __future__ import annotations

import torch


def resid_names(model):
    """The residual stream before block 0 and after every block: n_layer + 1 states."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layer)]


@torch.no_grad()
def logit_lens(model, tokens):
    """(n_layer + 1, B, T, vocab): logits decoded from the residual stream at each depth.
    The last row equals the model's logits."""
    names = resid_names(model)
    _, cache = model.run_with_cache(tokens, names=names)
    return torch.stack([model.to_logits(cache[n]) for n in names])


def token_rank(logits, target):
    """Rank (0 = top) of `target` (...,) in `logits` (..., vocab)."""
    return (logits > logits.gather(-1, target[..., None])).sum(-1)
