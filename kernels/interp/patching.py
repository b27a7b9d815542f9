"""Activation patching: which activations carry the information that decides the answer?

Run a *clean* prompt and a *corrupted* one that differs in one detail and gets another answer.
Measure a metric m — here the logit difference logit(clean answer) - logit(corrupted answer) at
the last position. Then rerun the corrupted prompt, overwriting ONE activation (a layer's residual
stream at one position, or one head's output) with its value from the clean run. The fraction

    recovered = (m_patched - m_corrupted) / (m_clean - m_corrupted)

is 1 if that activation alone carries everything the corruption changed, 0 if it carries nothing.
Scanning layers x positions and layers x heads localises the circuit.
"""
from __future__ import annotations

import torch

from . import tasks


def logit_diff(logits, good, bad):
    """logits (B, T, V) -> (B,): logit of `good` minus logit of `bad` at the last position."""
    last = logits[:, -1]
    return last.gather(-1, good[:, None])[:, 0] - last.gather(-1, bad[:, None])[:, 0]


def recovered_fraction(patched, clean, corrupted):
    return (patched - corrupted) / (clean - corrupted)


def induction_prompts(n=32, seg_len=10, k=5, seed=0, vocab=32):
    """Clean: BOS + r + r[:k], whose induction answer is r[k]. Corrupted: the same with r[k] changed in
    the FIRST copy (position 1 + k) to another token, now the induction answer. Returns
    (clean, corrupted, good, bad, changed_position)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(1, vocab, (n, seg_len), generator=gen)
    clean = torch.cat([torch.full((n, 1), tasks.BOS), r, r[:, :k]], dim=1)
    bad = (r[:, k] + torch.randint(1, vocab - 1, (n,), generator=gen) - 1) % (vocab - 1) + 1
    corrupted = clean.clone()
    corrupted[:, 1 + k] = bad
    return clean, corrupted, r[:, k], bad, 1 + k


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
    _, cache = model.run_with_cache(clean, names=names)
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
    """(n_layer, n_head): one head's output (hook_z, all positions) patched."""
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layer)]
    return patch_scan(model, clean, corrupted, metric, names, model.cfg.n_head,
                      lambda h: (slice(None), slice(None), h))
