"""A small nanoGPT-style, character-level, decoder-only transformer.

    tokens (B, T) -> token embedding + position embedding        (B, T, d)
                  -> n_layer x Block:  x = x + Attn(LN(x));  x = x + MLP(LN(x))
                  -> LN -> linear head (weights tied to the token embedding) -> logits (B, T, V)

Causal self-attention lets position t look only at positions <= t, so one forward pass
gives the next-token distribution softmax(logits[:, t]) for every prefix at once (that is
what training uses); generation calls it again and again, one new token each time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

CHECKPOINT_DIR = Path(__file__).resolve().parent


@dataclass
class GPTConfig:
    vocab_size: int = 80
    block_size: int = 128   # longest context the model was trained on (position embeddings)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0


class CausalSelfAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_head) + causal mask) V, for n_head heads in parallel."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)   # Q, K, V in one matrix product
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, d_head): each head attends on its own slice
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # is_causal=True masks scores of future positions (j > t) with -inf before the softmax
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """Position-wise feed-forward network: d -> 4d -> GELU -> d."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block with residual connections."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight   # weight tying: one matrix embeds and un-embeds
        self.apply(self._init)
        for name, p in self.named_parameters():   # GPT-2: scale the residual projections down
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) token ids with T <= block_size -> logits (B, T, vocab_size)."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"context of {T} tokens is longer than the model's block_size "
                             f"{self.config.block_size}; keep only the last block_size tokens")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Tokenizer:
    """Character-level tokenizer: token id i is the character vocab[i]."""

    def __init__(self, vocab: str):
        self.vocab = vocab
        self.stoi = {ch: i for i, ch in enumerate(vocab)}

    def __len__(self):
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown!r}")
        return torch.tensor([self.stoi[ch] for ch in text], dtype=torch.long)

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        return "".join(self.vocab[i] for i in ids)


def checkpoint_path(name: str) -> Path:
    return CHECKPOINT_DIR / f"{name}.pt"


def save(model: GPT, tok: Tokenizer, name: str, **info) -> Path:
    """Write weights as fp16 (half the bytes; the model runs in fp32 after loading)."""
    state = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()
             if k != "head.weight"}   # tied to tok_emb.weight: stored once
    path = checkpoint_path(name)
    torch.save({"config": asdict(model.config), "vocab": tok.vocab, "state_dict": state, "info": info}, path)
    return path


def load(name: str = "shakespeare", device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer]:
    """The shipped checkpoint `name` ('shakespeare' or 'shakespeare_draft') in eval mode, and its tokenizer."""
    return load_checkpoint(checkpoint_path(name), device)


def load_checkpoint(path: Path, device: str | torch.device = "cpu",
                    train_command: str = "python -m genfast.tinylm.train") -> tuple[GPT, Tokenizer]:
    """A checkpoint written by `save` (fp16 on disk, fp32 in memory), in eval mode, and its tokenizer."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}; train it with: {train_command}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**ckpt["config"]))
    state = {k: v.float() for k, v in ckpt["state_dict"].items()}
    state["head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state)
    model.info = ckpt.get("info", {})
    return model.to(device).eval(), Tokenizer(ckpt["vocab"])
