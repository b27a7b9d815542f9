"""The course's tiny character model, taught to call tools: loading and fast greedy decoding.

The Shakespeare model's vocabulary has no `{ } _ + * / = <`; `extend_vocab` appends the missing
printable ASCII characters as new token ids (new rows of the embedding matrix; the output head is
tied to it, so it grows too) and keeps every old id, so the old weights still mean what they meant.

Decoding uses lab 04's key/value cache (`kernels.kv_press.forward_cached`): each new character
costs one position of work instead of a forward pass over the whole prefix.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch

from kernels.kv_press import KVCache, forward_cached
from genfast.tinylm.model import GPT, GPTConfig, Tokenizer, load_checkpoint

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
def generate_line(model: GPT, tok: Tokenizer, prompt: str, max_new: int = 72) -> str:
    """Greedy continuation of `prompt` up to (not including) the next newline.

    Only the last block_size characters are kept: the context window of the model."""
    block = model.config.block_size
    ids = safe_encode(tok, prompt)[-(block - 1):]
    cache = KVCache(len(model.blocks))
    logits = forward_cached(model, ids[None], cache)[0, -1]
    out = []
    nl = tok.stoi["\n"]
    for _ in range(max_new):
        nxt = int(logits.argmax())
        if nxt == nl:
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([nxt])])
        if cache.seen >= block:   # window full: keep the last characters and start over (rare for short traces)
            ids = ids[-(block - 1):]
            cache = KVCache(len(model.blocks))
            logits = forward_cached(model, ids[None], cache)[0, -1]
        else:
            logits = forward_cached(model, torch.tensor([[nxt]]), cache)[0, -1]
    return tok.decode(out)
