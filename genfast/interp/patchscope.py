"""A patchscope: let the model decode its own hidden state by patching it into another prompt.

Take the hidden state h at (layer l, position t) of a *source* prompt, write it over the state at the
same place of a *target* prompt, run the target to the end and read the answer. If the target's answer
becomes the one that belongs to the source, h already carried that information at layer l.

On the facts model ("subject relation -> attribute") the source is [s, r] and the target [s', r]:
patching the last position's state decodes attr(s, r) only once attention has moved the subject into
that position. The readout accuracy per layer says WHEN the subject arrives.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def patchscope(model, source, target, layer: int, position: int = -1):
    """Logits (B, V) at the target's last position after writing the source's blocks.{layer}.hook_resid_pre
    (layer == n_layer: the final residual stream) at `position` into the target run."""
    name = (f"blocks.{layer}.hook_resid_pre" if layer < model.cfg.n_layer
            else f"blocks.{model.cfg.n_layer - 1}.hook_resid_post")
    state = []

    def read(x, _):
        state.append(x[:, position].clone())     # returns None: the source run is not changed

    def write(x, _):
        x = x.clone()
        x[:, position] = state[0]
        return x

    model.run_with_hooks(source, [(name, read)])
    return model.run_with_hooks(target, [(name, write)])[:, -1]
