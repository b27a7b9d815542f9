"""Feed-forward layers as key-value memories: the keys, their covariance, the target value of an edit,
and how an edit went.

An MLP computes out = W_out a(x) + b: the hidden activation k = a(x) is a *key* (which neurons fire
for this input), the columns of W_out hold *values*. For the facts model ("subject relation ->
attribute") the MLP at the subject's position sees only the subject, so k = k(s) identifies it.

ROME (Meng et al. 2022) changes what one key retrieves, and as little else as possible:
1. find v*, the MLP output at the subject position that makes the model say the new attribute
   (a few steps of gradient descent on that one vector: `target_value`);
2. the smallest change of W, measured on the keys of everything else (C = K K^T / N,
   `key_covariance`), with W' k = v*: a rank-one update, lab 07's exercise.
C^-1 steers the change away from directions that other keys use; with C = I it is the plain
least-norm update, which disturbs more unrelated facts.

Judge an edit twice: "output changed" (the answer is no longer the old one) is easy; "edit
succeeded" (the answer is the NEW value) is what was asked; and unrelated facts must stay put
(`edit_report`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import tasks


@torch.no_grad()
def keys(model, layer: int, tokens, position=None):
    """MLP keys (hidden activations) of blocks.{layer}: (N, d_mlp) at `position`, or all positions."""
    out = []
    model.run_with_hooks(tokens, [(f"blocks.{layer}.mlp.hook_post", lambda a, _: out.append(a.detach()))])
    a = out[0]
    return a.reshape(-1, a.shape[-1]) if position is None else a[:, position]


def key_covariance(model, layer: int, tokens, ridge: float = 1e-2):
    """C = K^T K / N over every key the layer sees on `tokens`, plus ridge * mean(diag) * I (C is
    rank-deficient with few prompts)."""
    K = keys(model, layer, tokens)
    C = K.T @ K / len(K)
    return C + ridge * C.diagonal().mean() * torch.eye(len(C))


def target_value(model, layer: int, prompt, new_token: int, position: int = 0, steps=100, lr=0.1, keep=None):
    """v*: the output of blocks.{layer}.mlp.proj (without bias) at `position` that makes `prompt` (1, T)
    predict `new_token`; found by gradient descent on an additive change delta. keep=(prompts (M, T),
    tokens (M,)): other prompts sharing the same key whose answers must not change (ROME's
    'essence' constraint, simplified)."""
    mlp = model.blocks[layer].mlp
    k = keys(model, layer, prompt)[position]
    base = (mlp.proj.weight @ k).detach()
    delta = torch.zeros_like(base, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)

    def add(x, _):
        x = x.clone()
        x[:, position] = x[:, position] + delta
        return x

    for _ in range(steps):
        logits = model.run_with_hooks(prompt, [(f"blocks.{layer}.hook_mlp_out", add)])[:, -1]
        loss = F.cross_entropy(logits, torch.tensor([new_token])) + 1e-3 * delta.pow(2).sum()
        if keep is not None:
            kept = model.run_with_hooks(keep[0], [(f"blocks.{layer}.hook_mlp_out", add)])[:, -1]
            loss = loss + F.cross_entropy(kept, keep[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return k, (base + delta).detach()


@torch.no_grad()
def edit_report(model, edited, subject: int, relation: int, new_attr: int):
    """How an edit of (subject, relation) -> new_attr worked, on the facts task."""
    tokens, target = tasks.facts_data()
    before, after = model(tokens)[:, -1].argmax(-1), edited(tokens)[:, -1].argmax(-1)
    idx = subject * tasks.N_REL + relation
    same = (tokens[:, 0] == subject) & (torch.arange(len(tokens)) != idx)
    other = tokens[:, 0] != subject
    return dict(edit_succeeded=bool(after[idx] == new_attr), output_changed=bool(after[idx] != before[idx]),
                same_subject_kept=(after[same] == before[same]).float().mean().item(),
                unrelated_kept=(after[other] == before[other]).float().mean().item())


def same_subject_facts(model, subject: int, relation: int):
    """(prompts, the model's current answers) for the subject's OTHER relations: what an edit should keep."""
    v = tasks.facts_vocab()
    rels = [r for r in range(tasks.N_REL) if r != relation]
    prompts = torch.tensor([[subject + v["subj"], r + v["rel"]] for r in rels])
    with torch.no_grad():
        return prompts, model(prompts)[:, -1].argmax(-1)
