"""The logit lens (lab 07's answer): read the residual stream at every depth with the model's own unembedding.

The residual stream is a sum: embeddings + every layer's output. If the last layers mostly refine
the prediction, unembedding an intermediate state (final LayerNorm, then W_U, as if the remaining
layers were skipped) already shows what the model "currently thinks" the next token is.
"""
from __future__ import annotations

import torch

from genfast.interp.lens import resid_names

from .hooks import run_with_cache


@torch.no_grad()
def logit_lens(model, tokens):
    """(n_layer + 1, B, T, vocab): logits decoded from the residual stream at each depth.
    The last row equals the model's logits."""
    names = resid_names(model)
    _, cache = run_with_cache(model, tokens, names=names)
    return torch.stack([model.to_logits(cache[n]) for n in names])
