"""Lab 07, section 1: the reference hook cache and head ablation (the answers of `get_cache` and
`ablate_head`), and the cache every instructor-side reference reads activations with.

The learner's model (genfast.interp.hooked) has hook points, `hooks` and `run_with_hooks`, but no
cache: recording activations is the lab's first exercise.
"""
from __future__ import annotations


def run_with_cache(model, tokens, names=None, fwd_hooks=()):
    """(logits, cache): cache[name] is the activation (detached) at every hook point of `model` (or those
    in `names`), recorded after any replacement made by `fwd_hooks`."""
    cache = {}

    def save(x, hook):
        cache[hook.name] = x.detach()

    wanted = model.hook_points if names is None else names
    with model.hooks(list(fwd_hooks) + [(n, save) for n in wanted]):
        logits = model(tokens)
    return logits, cache


def get_cache(model, tokens, names):
    """{name: activation (detached)} at every hook point in `names`, from one forward pass."""
    return run_with_cache(model, tokens, names=names)[1]


def ablate_head_hook(head: int, value=None):
    """A hook for blocks.{l}.attn.hook_z that replaces one head's output by 0 (or by `value`,
    e.g. its mean over a batch: mean ablation), in a new tensor."""
    def hook(z, _):
        z = z.clone()
        z[:, :, head] = 0.0 if value is None else value
        return z
    return hook
