"""The rank-one edit of one stored association (ROME; lab 07's answer).

    W' = W + (v* - W k) (C^-1 k)^T / (k^T C^-1 k)

solves min ||W' K - W K|| s.t. W' k = v* (K: the keys of everything else, C = K K^T / N). The keys,
their covariance, the target value v* and the edit's report are the learner's: genfast.interp.editing.
"""
from __future__ import annotations

import copy

import torch

from genfast.interp import tasks
from genfast.interp.editing import same_subject_facts, target_value


def rank_one_edit(W: torch.Tensor, k: torch.Tensor, v_star: torch.Tensor, C_inv: torch.Tensor) -> torch.Tensor:
    """W (d_out, d_in), key k (d_in,), target value v* (d_out,), C^-1 (d_in, d_in) -> W' with W' k = v*."""
    Ck = C_inv @ k
    return W + torch.outer(v_star - W @ k, Ck) / (k @ Ck)


def apply_edit(model, layer: int, subject: int, relation: int, new_attr: int, C_inv=None, keep_others=True):
    """A copy of `model` with (subject, relation) -> new_attr (a token id) written into blocks.{layer}.mlp.proj."""
    v = tasks.facts_vocab()
    prompt = torch.tensor([[subject + v["subj"], relation + v["rel"]]])
    keep = same_subject_facts(model, subject, relation) if keep_others else None
    k, v_star = target_value(model, layer, prompt, new_attr, position=0, keep=keep)
    if C_inv is None:
        C_inv = torch.eye(len(k))
    edited = copy.deepcopy(model)
    W = edited.blocks[layer].mlp.proj.weight
    W.data = rank_one_edit(W.data, k, v_star, C_inv)
    return edited
