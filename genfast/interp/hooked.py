"""A small transformer whose every activation can be read and overwritten: the course's hook API.

In the spirit of TransformerLens (same hook names), but ~150 lines. Every intermediate
activation passes through a `HookPoint`, an identity module with a name:

    hook_embed, hook_pos_embed                      token and position embeddings   (B, T, d)
    blocks.{l}.hook_resid_pre                       residual stream entering block l (B, T, d)
    blocks.{l}.attn.hook_q / hook_k / hook_v        per-head queries, keys, values   (B, T, H, d_head)
    blocks.{l}.attn.hook_pattern                    attention probabilities           (B, H, T_q, T_k)
    blocks.{l}.attn.hook_z                          per-head outputs before W_O       (B, T, H, d_head)
    blocks.{l}.hook_attn_out, hook_resid_mid        attention output, residual after attention
    blocks.{l}.mlp.hook_pre / hook_post             MLP neurons before / after the GELU (B, T, d_mlp)
    blocks.{l}.hook_mlp_out, hook_resid_post        MLP output, residual leaving block l
    ln_final.hook_normalized                        what the unembedding reads

A hook is `fn(activation, hook) -> None or a replacement tensor`, so the same mechanism reads
(a cache), ablates (return zeros), patches (return another run's activation) and steers (return
activation + direction):

    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", fn)])
    with model.hooks([(name, fn)]): ...                    # the same, as a context manager

There is no `run_with_cache` here: reading activations into a cache is lab 07's first exercise
(`get_cache`), and the notebook reads activations with the learner's own from then on.

Models with d_mlp = 0 are attention-only (no MLP sublayer). `from_tinylm` converts the course's
Shakespeare GPT (genfast/tinylm) into this class with identical logits. The shipped checkpoints
(`load`) live next to this file; the instructor trains them (deterministic, on a CPU).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

CHECKPOINT_DIR = Path(__file__).resolve().parent


@dataclass
class Config:
    vocab_size: int
    n_ctx: int
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    d_mlp: int = 0          # 0: attention-only
    ln: bool = True         # pre-LayerNorm before attention, MLP and unembedding


class HookPoint(nn.Module):
    """Identity, unless hooks are attached: each may read the activation or return a replacement."""

    def __init__(self):
        super().__init__()
        self.name = ""
        self.fns = []

    def forward(self, x):
        for fn in self.fns:
            out = fn(x, self)
            if out is not None:
                x = out
        return x


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_model // cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)          # W_O: the heads' outputs, concatenated, -> d
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_pattern, self.hook_z = HookPoint(), HookPoint()

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, self.d_head) for t in self.qkv(x).split(C, dim=2))
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.d_head)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        pattern = self.hook_pattern(scores.masked_fill(~causal, float("-inf")).softmax(-1))
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        return self.proj(z.reshape(B, T, C))

    def head_outputs(self, z):
        """Each head's own contribution to the residual stream: (B, T, H, d_head) -> (B, T, H, d_model).
        Their sum over heads plus the bias is the attention output."""
        W = self.proj.weight.view(-1, self.n_head, self.d_head)   # (d_model, H, d_head)
        return torch.einsum("bthd,mhd->bthm", z, W)


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_mlp)     # keys: one row per neuron
        self.proj = nn.Linear(cfg.d_mlp, cfg.d_model)   # values: one column per neuron
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x):
        return self.proj(self.hook_post(F.gelu(self.hook_pre(self.fc(x)))))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        norm = (lambda: nn.LayerNorm(cfg.d_model)) if cfg.ln else nn.Identity
        self.ln1, self.attn = norm(), Attention(cfg)
        self.has_mlp = cfg.d_mlp > 0
        if self.has_mlp:
            self.ln2, self.mlp = norm(), MLP(cfg)
        for name in ("resid_pre", "attn_out", "resid_mid") + (("mlp_out",) if self.has_mlp else ()) + ("resid_post",):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, x):
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
        if self.has_mlp:
            x = x + self.hook_mlp_out(self.mlp(self.ln2(x)))
        return self.hook_resid_post(x)


class LNFinal(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.ln = nn.LayerNorm(cfg.d_model) if cfg.ln else nn.Identity()
        self.hook_normalized = HookPoint()

    def forward(self, x):
        return self.hook_normalized(self.ln(x))


class HookedTransformer(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_final = LNFinal(cfg)
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.hook_points = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_points[name] = module

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, vocab)."""
        T = tokens.shape[1]
        x = self.hook_embed(self.tok_emb(tokens)) + self.hook_pos_embed(self.pos_emb.weight[:T])
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))

    # ---------------------------------------------------------------- hooks
    @contextmanager
    def hooks(self, fwd_hooks):
        """Attach [(name, fn), ...] for the duration of a `with` block; always removed afterwards."""
        attached = []
        try:
            for name, fn in fwd_hooks:
                if name not in self.hook_points:
                    raise KeyError(f"no hook point {name!r}; see model.hook_points")
                self.hook_points[name].fns.append(fn)
                attached.append((name, fn))
            yield self
        finally:
            for name, fn in attached:
                self.hook_points[name].fns.remove(fn)

    def run_with_hooks(self, tokens, fwd_hooks=()):
        with self.hooks(fwd_hooks):
            return self(tokens)

    # ---------------------------------------------------------------- helpers
    def to_logits(self, resid):
        """Unembed a residual-stream state as the final layer would (final LayerNorm, then W_U)."""
        return self.unembed(self.ln_final.ln(resid))


def save(model: HookedTransformer, name: str, **info) -> Path:
    """fp16 weights and the config, in genfast/interp/<name>.pt (the instructor's training script)."""
    state = {k: v.detach().half() for k, v in model.state_dict().items()}
    path = CHECKPOINT_DIR / f"{name}.pt"
    torch.save({"config": asdict(model.cfg), "state_dict": state, "info": info}, path)
    return path


def load(name: str) -> HookedTransformer:
    """A shipped checkpoint ('induction', 'modadd', 'facts') in eval mode on the CPU; `.info` has
    what the training script recorded (task parameters, final metrics)."""
    path = CHECKPOINT_DIR / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}: the course's checkpoints ship with genfast "
                                f"(induction, modadd, facts); reinstall it")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = HookedTransformer(Config(**ckpt["config"]))
    model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    model.info = ckpt["info"]
    return model.eval()


def from_tinylm(gpt) -> HookedTransformer:
    """The course's char-level GPT (genfast.tinylm.GPT) as a HookedTransformer with identical logits.
    The layouts match by construction (pre-LN blocks, fused qkv, GELU MLP); only names differ."""
    c = gpt.config
    model = HookedTransformer(Config(vocab_size=c.vocab_size, n_ctx=c.block_size, d_model=c.n_embd,
                                     n_layer=c.n_layer, n_head=c.n_head, d_mlp=4 * c.n_embd))
    rename = {"ln_f.": "ln_final.ln.", "head.": "unembed.", "mlp.fc.": "mlp.fc.", "attn.proj.": "attn.proj."}
    state = {}
    for k, v in gpt.state_dict().items():
        for old, new in rename.items():
            if k.startswith(old):
                k = new + k[len(old):]
        state[k] = v.detach().clone()
    model.load_state_dict(state)
    return model.eval()
