"""Train the shipped tiny Shakespeare models on a CPU, deterministically.

    python -m genfast.tinylm.train                 # both models (a few minutes on 2 cores)
    python -m genfast.tinylm.train shakespeare_draft

Writes genfast/tinylm/<name>.pt (fp16 weights, a few hundred KB each). Same seeds, same
data order, same thread count: a rerun on the same machine gives the same checkpoint.

- shakespeare:       the target model (4 layers, 4 heads, d=128, context 128)
- shakespeare_draft: a much smaller draft model for speculative decoding (1 layer, d=64),
                     same tokenizer, so its proposals can be checked by the target
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import data
from .model import GPT, GPTConfig, Tokenizer, save

RUNS = {
    "shakespeare": dict(config=dict(n_layer=4, n_head=4, n_embd=128, block_size=128),
                        steps=500, batch_size=32, lr=3e-3),
    "shakespeare_draft": dict(config=dict(n_layer=1, n_head=2, n_embd=64, block_size=128),
                              steps=500, batch_size=32, lr=3e-3),
}
SEED = 1337
EVAL_BATCHES = 8


def tokens() -> tuple[Tokenizer, torch.Tensor, torch.Tensor]:
    """(tokenizer, train ids, validation ids) of the corpus."""
    tok = Tokenizer(data.vocabulary())
    train, val = data.corpus()
    return tok, tok.encode(train), tok.encode(val)


def batch(ids: torch.Tensor, batch_size: int, block: int, gen: torch.Generator):
    """Random windows: inputs ids[i:i+block], targets shifted by one, ids[i+1:i+block+1]."""
    start = torch.randint(len(ids) - block - 1, (batch_size,), generator=gen)
    x = torch.stack([ids[s:s + block] for s in start])
    y = torch.stack([ids[s + 1:s + block + 1] for s in start])
    return x, y


@torch.no_grad()
def evaluate(model: GPT, ids: torch.Tensor, batches: int = EVAL_BATCHES, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats per character) on fixed windows of `ids`."""
    was_training = model.training
    model.eval()
    block = model.config.block_size
    gen = torch.Generator().manual_seed(0)   # the same windows every time
    losses = []
    for _ in range(batches):
        x, y = batch(ids, batch_size, block, gen)
        logits = model(x)
        losses.append(F.cross_entropy(logits.flatten(0, 1), y.flatten()).item())
    model.train(was_training)
    return sum(losses) / len(losses)


def unigram_baseline(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy on `val_ids` of the best context-free model: character frequencies of train."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0   # add-one smoothing
    logp = (counts / counts.sum()).log()
    return float(-logp[val_ids].mean())


def train(name: str, progress: bool = True) -> dict:
    run = RUNS[name]
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    tok, train_ids, val_ids = tokens()
    cfg = GPTConfig(vocab_size=len(tok), **run["config"])
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=run["lr"], betas=(0.9, 0.99), weight_decay=0.1)
    steps, warmup = run["steps"], 50
    # linear warm-up, then cosine decay to a tenth of the peak learning rate
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.time()
    bar = tqdm(range(steps), desc=f"train {name} ({model.num_params() / 1e6:.2f}M params)", disable=not progress)
    for step in bar:
        x, y = batch(train_ids, run["batch_size"], cfg.block_size, gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.time() - t0
    val = evaluate(model, val_ids)
    base = unigram_baseline(train_ids, val_ids, len(tok))
    info = dict(val_loss=round(val, 4), unigram_val_loss=round(base, 4), train_seconds=round(seconds, 1),
                steps=steps, batch_size=run["batch_size"], seed=SEED, params=model.num_params())
    path = save(model, tok, name, **info)
    print(f"{name}: validation loss {val:.3f} nats/char (unigram baseline {base:.3f}), "
          f"{seconds:.0f} s of training, wrote {path} ({path.stat().st_size / 1e3:.0f} KB)")
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"models to train (default: all of {list(RUNS)})")
    args = parser.parse_args(argv)
    for name in args.names or list(RUNS):
        if name not in RUNS:
            parser.error(f"unknown model {name!r}; choose from {list(RUNS)}")
        train(name)


if __name__ == "__main__":
    main()
