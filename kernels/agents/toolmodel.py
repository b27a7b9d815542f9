"""The course's tiny character model, taught to call tools: loading and fast greedy decoding.

The Shakespeare model's vocabulary has no `{ } _ + * / = <`; `extend_vocab` appends the missing
printable ASCII characters as new token ids (new rows of the embedding matrix; the output head is
tied to it, so it grows too) and keeps every old id, so the old weights still mean what they meant.

Decoding uses a small key/value cache (the same idea as lab 04): each new character costs one
position of work instead of a forward pass over the whole prefix.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch
import torch.nn.functional as F

from kernels.tinylm.model import GPT, GPTConfig, Tokenizer, load_checkpoint

CHECKPOINT = Path(__file__).resolve().parent / "tool_model.pt"
EXTRA_CHARS = "".join(ch for ch in string.printable if ch not in "\t\r\x0b\x0c")
# Characters the Shakespeare corpus (almost) never contains. Their embedding rows were only ever
# pushed down as wrong softmax candidates, so they collapsed onto one direction (the ten digit rows
# have pairwise cosine similarity 0.94): the model cannot tell '3' from '7', and no amount of
# fine-tuning teaches it to copy a number (measured: the copy loss stays at 1.4 nats/char). Giving
# them fresh random rows, like the new characters, fixes it (0.2 nats after 150 steps).
REINIT_CHARS = "0123456789"


def extend_vocab(model: GPT, tok: Tokenizer) -> tuple[GPT, Tokenizer]:
    """A copy of `model` whose vocabulary also holds every printable ASCII character (appended)."""
    new_chars = "".join(ch for ch in EXTRA_CHARS if ch not in tok.stoi)
    vocab = tok.vocab + new_chars
    cfg = GPTConfig(**{**model.config.__dict__, "vocab_size": len(vocab)})
    bigger = GPT(cfg)
    state = model.state_dict()
    old = state["tok_emb.weight"]
    gen = torch.Generator().manual_seed(0)
    # fresh rows with the typical norm of the trained ones (LayerNorm follows, so the scale matters little)
    std = float(old.norm(dim=1).mean()) / old.shape[1] ** 0.5
    emb = torch.randn(len(vocab), old.shape[1], generator=gen) * std
    keep = torch.tensor([ch not in REINIT_CHARS for ch in tok.vocab])
    emb[: len(tok)][keep] = old[keep]
    state = {k: v for k, v in state.items() if k not in ("tok_emb.weight", "head.weight")}
    state["tok_emb.weight"] = emb
    state["head.weight"] = emb
    bigger.load_state_dict(state)
    return bigger, Tokenizer(vocab)


def load_tool_model(path: str | Path = CHECKPOINT) -> tuple[GPT, Tokenizer]:
    """The shipped tool-use checkpoint (fp16 on disk, fp32 in memory), eval mode, CPU."""
    return load_checkpoint(path, train_command="python -m kernels.agents.train")


def safe_encode(tok: Tokenizer, text: str) -> torch.Tensor:
    """Encode, replacing characters outside the vocabulary by '?' (an observation may hold any text)."""
    return torch.tensor([tok.stoi.get(ch, tok.stoi["?"]) for ch in text], dtype=torch.long)


@torch.no_grad()
def _forward_cached(model: GPT, idx: torch.Tensor, start: int, cache: list):
    """Logits of the last position of idx (1, T) placed at positions start..start+T-1; fills cache."""
    T = idx.shape[1]
    x = model.tok_emb(idx) + model.pos_emb(torch.arange(start, start + T))
    for i, block in enumerate(model.blocks):
        attn = block.attn
        h = block.ln1(x)
        q, k, v = attn.qkv(h).split(x.shape[-1], dim=2)
        nh = attn.n_head
        q, k, v = (t.view(1, T, nh, -1).transpose(1, 2) for t in (q, k, v))
        if len(cache) > i:
            k = torch.cat([cache[i][0], k], dim=2)
            v = torch.cat([cache[i][1], v], dim=2)
            cache[i] = (k, v)
        else:
            cache.append((k, v))
        # the new positions see all cached ones and the causal part of themselves
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=_mask(T, k.shape[2]))
        x = x + attn.proj(y.transpose(1, 2).reshape(1, T, -1))
        x = x + block.mlp(block.ln2(x))
    return model.head(model.ln_f(x[:, -1]))


def _mask(t_new: int, t_all: int) -> torch.Tensor:
    return torch.ones(t_new, t_all, dtype=torch.bool).tril(t_all - t_new)


@torch.no_grad()
def generate_line(model: GPT, tok: Tokenizer, prompt: str, max_new: int = 72) -> str:
    """Greedy continuation of `prompt` up to (not including) the next newline.

    Only the last block_size characters are kept: the context window of the model."""
    block = model.config.block_size
    ids = safe_encode(tok, prompt)[-(block - 1):]
    cache: list = []
    logits = _forward_cached(model, ids.unsqueeze(0), 0, cache)
    out, pos = [], ids.numel()
    nl = tok.stoi["\n"]
    for _ in range(max_new):
        nxt = int(logits.argmax())
        if nxt == nl:
            break
        out.append(nxt)
        if pos >= block:   # window full: slide it and recompute (rare for the short traces)
            ids = torch.cat([ids, torch.tensor(out[-1:])])[-(block - 1):]
            cache = []
            logits = _forward_cached(model, ids.unsqueeze(0), 0, cache)
            pos = ids.numel()
        else:
            ids = torch.cat([ids, torch.tensor(out[-1:])])
            logits = _forward_cached(model, torch.tensor([[nxt]]), pos, cache)
            pos += 1
    return tok.decode(out)
