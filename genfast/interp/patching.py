"""Activation patching on the induction model: the prompts, the metric, and one head's output patched.

Run a *clean* prompt and a *corrupted* one that differs in one detail and gets another answer.
Measure a metric m — here the logit difference logit(clean answer) - logit(corrupted answer) at
the last position. Then rerun the corrupted prompt, overwriting ONE activation with its value from
the clean run; the fraction (m_patched - m_corrupted) / (m_clean - m_corrupted) is 1 if that
activation alone carries everything the corruption changed, 0 if it carries nothing. The scan of
the residual stream over layers x positions is lab 07's exercise; `patch_heads` is its companion
over heads (one head's output at every position), which the notebook shows beside it.
"""
from __future__ import annotations

import torch

from . import tasks


def logit_diff(logits, good, bad):
    """logits (B, T, V) -> (B,): logit of `good` minus logit of `bad` at the last position."""
    last = logits[:, -1]
    return last.gather(-1, good[:, None])[:, 0] - last.gather(-1, bad[:, None])[:, 0]


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


@torch.no_grad()
def patch_heads(model, clean, corrupted, metric):
    """(n_layer, n_head) recovered fraction when one head's output (blocks.{l}.attn.hook_z, every
    position) is taken from the clean run; `metric(logits) -> (B,)` is averaged over the batch."""
    H = model.cfg.n_head
    z_clean = []
    model.run_with_hooks(clean, [(f"blocks.{l}.attn.hook_z", lambda z, _: z_clean.append(z))
                                 for l in range(model.cfg.n_layer)])
    heads = torch.eye(H, dtype=torch.bool)[:, None, None, :, None]      # (H, 1, 1, H, 1): head h's slot

    def from_clean(layer, h):
        return lambda z, _: torch.where(heads[h], z_clean[layer], z)

    m = torch.stack([torch.stack([metric(model.run_with_hooks(corrupted, [(f"blocks.{l}.attn.hook_z", from_clean(l, h))])).mean()
                                  for h in range(H)]) for l in range(model.cfg.n_layer)])
    m_clean, m_corr = metric(model(clean)).mean(), metric(model(corrupted)).mean()
    return (m - m_corr) / (m_clean - m_corr)
