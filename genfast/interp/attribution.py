"""Direct logit attribution (DLA): how much each component's write into the residual stream adds to a logit.

The residual stream at the end is a sum of writes:

    x = embed + pos_embed + sum_l ( sum_h head_{l,h} + b_O^l + mlp_l )

(head_{l,h}: head h's output z_h times its slice of W_O, `Attention.head_outputs`; b_O^l: the
output projection's bias; mlp_l: the MLP's output, its bias included). The final LayerNorm is

    LN(x) = gamma * (x - mean(x)) / sigma(x) + beta,     sigma(x) = sqrt(var(x) + eps),

linear in x once its scale sigma is FROZEN at the value it has on the real x. The logit of token t
(or a logit difference, direction u = W_U[t] - W_U[t']) then splits into one term per write c_i,

    u . LN(x) = sum_i u . (gamma * (c_i - mean(c_i)) / sigma)  +  u . beta,

plus the LayerNorm's bias term. On the real x the sum is the logit exactly (up to float rounding);
what is approximate is reading each term as "that component's effect": sigma depends on every
write, so removing one component would also rescale the others' terms. DLA sees only DIRECT
effects: a layer-0 head whose output a layer-1 head reads gets no credit for what that head writes
(activation patching sees both).
"""
from __future__ import annotations

import torch


@torch.no_grad()
def residual_writes(model, tokens) -> tuple[dict, torch.Tensor]:
    """({component: its write into the residual stream (B, T, d)}, the final residual (B, T, d)), in
    the order the model adds them. Components: "embed", "pos_embed", and per layer l "L{l}H{h}" for
    each head, "L{l} attn bias", "L{l} mlp" (MLP models). Their sum is the final residual."""
    L = model.cfg.n_layer
    seen = {}
    names = ["hook_embed", "hook_pos_embed", f"blocks.{L - 1}.hook_resid_post"]
    names += [f"blocks.{l}.attn.hook_z" for l in range(L)]
    names += [f"blocks.{l}.hook_mlp_out" for l in range(L) if model.blocks[l].has_mlp]
    model.run_with_hooks(tokens, [(n, lambda x, hook: seen.__setitem__(hook.name, x)) for n in names])
    shape = seen["hook_embed"].shape
    writes = {"embed": seen["hook_embed"], "pos_embed": seen["hook_pos_embed"].expand(shape)}
    for l, block in enumerate(model.blocks):
        per_head = block.attn.head_outputs(seen[f"blocks.{l}.attn.hook_z"])      # (B, T, H, d)
        for h in range(model.cfg.n_head):
            writes[f"L{l}H{h}"] = per_head[:, :, h]
        writes[f"L{l} attn bias"] = block.attn.proj.bias.expand(shape)
        if block.has_mlp:
            writes[f"L{l} mlp"] = seen[f"blocks.{l}.hook_mlp_out"]
    return writes, seen[f"blocks.{L - 1}.hook_resid_post"]


@torch.no_grad()
def direct_logit_attribution(model, tokens, target, other=None, pos: int = -1) -> dict:
    """{component: (B,) its direct contribution to logit(target) - logit(other) at position `pos`}
    (other=None: to logit(target) alone), plus "ln_final bias". target, other: (B,) token ids.
    The values sum to the model's logit (difference) at `pos`: the final LayerNorm's scale is frozen
    at its value on the real residual stream."""
    writes, resid = residual_writes(model, tokens)
    rows = torch.arange(len(tokens))
    direction = model.unembed.weight[target]                                     # (B, d)
    if other is not None:
        direction = direction - model.unembed.weight[other]
    ln = model.ln_final.ln
    if isinstance(ln, torch.nn.LayerNorm):
        x = resid[rows, pos]                                                     # (B, d)
        sigma = (x.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()        # frozen: one scale per row
        gamma, beta = ln.weight, ln.bias
        through_ln = lambda c: (c - c.mean(-1, keepdim=True)) * gamma / sigma    # linear in c
    else:                                                                        # no final LayerNorm
        beta = torch.zeros(model.cfg.d_model)
        through_ln = lambda c: c
    out = {name: (through_ln(c[rows, pos]) * direction).sum(-1) for name, c in writes.items()}
    out["ln_final bias"] = direction @ beta
    return out


def grouped(contributions: dict) -> dict:
    """The per-component values summed per layer's heads: {"embed + pos", "L{l} heads", "L{l} attn bias",
    "L{l} mlp", "ln_final bias"} (same total)."""
    out = {}
    for name, v in contributions.items():
        group = ("embed + pos" if name in ("embed", "pos_embed")
                 else name.split("H")[0] + " heads" if name.startswith("L") and "H" in name else name)
        out[group] = out.get(group, 0) + v
    return out
