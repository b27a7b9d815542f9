"""The course's tiny character model, taught to call tools: its vocabulary, loading, and decoding.

The Shakespeare model's vocabulary has no `{ } _ + * / = <`; `extend_vocab` appends the missing
printable ASCII characters as new token ids (new rows of the embedding matrix; the output head is
tied to it, so it grows too) and keeps every old id, so the old weights still mean what they meant.

Decoding is greedy and uncached: every new character is one forward pass over the (at most 128
characters of) context. For a model this small that costs little more than a key/value cache
would (lab 04 builds one), and it is the plain reading of what the model predicts.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch

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
    return load_checkpoint(path, train_command="python -m kernels.agents.train (in the course repository)")


def safe_encode(tok: Tokenizer, text: str) -> torch.Tensor:
    """Encode, replacing characters outside the vocabulary by '?' (an observation may hold any text)."""
    return torch.tensor([tok.stoi.get(ch, tok.stoi["?"]) for ch in text], dtype=torch.long)


@torch.no_grad()
def generate_line(model: GPT, tok: Tokenizer, prompt: str, max_new: int = 72) -> str:
    """Greedy continuation of `prompt` up to (not including) the next newline.

    The context window holds at most block_size characters: the prompt's last block_size - 1 to
    start with; when a new character would overflow the window, it restarts from the last
    block_size - 1 (rare for the short traces of the tool tasks)."""
    if model.config.vocab_size != len(tok):
        raise ValueError(f"the tokenizer has {len(tok)} characters, the model {model.config.vocab_size}: "
                         f"use the tool model's own (load_tool_model())")
    block = model.config.block_size
    context = safe_encode(tok, prompt)[-(block - 1):].tolist()
    line = []
    while len(line) < max_new:
        best = int(model(torch.tensor([context]))[0, -1].argmax())
        if best == tok.stoi["\n"]:
            break
        line.append(best)
        context.append(best)
        if len(context) > block:
            del context[:len(context) - (block - 1)]
    return tok.decode(line)
