"""Activation patching over the residual stream (lab 07's answer): which activations carry the
information that decides the answer?

Run a *clean* prompt and a *corrupted* one that differs in one detail and gets another answer.
Measure a metric m — here the logit difference logit(clean answer) - logit(corrupted answer) at
the last position. Then rerun the corrupted prompt, overwriting ONE activation (a layer's residual
stream at one position) with its value from the clean run. The fraction

    recovered = (m_patched - m_corrupted) / (m_clean - m_corrupted)

is 1 if that activation alone carries everything the corruption changed, 0 if it carries nothing.
The prompts, the metric and the companion scan over heads are the learner's: genfast.interp.patching.
"""
from __future__ import annotations

import torch

from .hooks import run_with_cache


def recovered_fraction(patched, clean, corrupted):
    return (patched - corrupted) / (clean - corrupted)


def _replace(clean_act, index):
    def hook(x, _):
        x = x.clone()
        x[index] = clean_act[index]
        return x
    return hook


@torch.no_grad()
def patch_scan(model, clean, corrupted, metric, names, n_units, index_of):
    """(len(names), n_units) recovered fraction when unit u of activation `names[l]` (the slice
    index_of(u)) is patched from the clean run into the corrupted one; `metric(logits) -> (B,)` is
    averaged over the batch."""
    _, cache = run_with_cache(model, clean, names=names)
    m_clean, m_corr = metric(model(clean)).mean(), metric(model(corrupted)).mean()
    out = torch.zeros(len(names), n_units)
    for l, name in enumerate(names):
        for u in range(n_units):
            m = metric(model.run_with_hooks(corrupted, [(name, _replace(cache[name], index_of(u)))])).mean()
            out[l, u] = recovered_fraction(m, m_clean, m_corr)
    return out


def patch_resid(model, clean, corrupted, metric):
    """(n_layer, T): blocks.{l}.hook_resid_pre patched at one position t."""
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layer)]
    return patch_scan(model, clean, corrupted, metric, names, clean.shape[1], lambda t: (slice(None), t))


def patch_heads(model, clean, corrupted, metric):
    """(n_layer, n_head): one head's output (hook_z, all positions) patched; the same scan as the
    learner's genfast.interp.patching.patch_heads (tests/test_lab07.py checks that they agree)."""
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layer)]
    return patch_scan(model, clean, corrupted, metric, names, model.cfg.n_head,
                      lambda h: (slice(None), slice(None), h))
