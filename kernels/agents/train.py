"""Fine-tune the course's tiny Shakespeare model into a tool user, deterministically, on a CPU.

    python -m kernels.agents.train          # about 4 minutes on one CPU core; writes genfast/agents/tool_model.pt

The digit embeddings are re-initialised first (see genfast.agents.toolmodel.REINIT_CHARS:
Shakespeare has no digits, their rows had collapsed, and the model could not learn to copy a
number). The checkpoint ships with the learner package; this script and its held-out
measurement (the reference agent loop) are the instructor's.

Data: synthetic episodes of `tasks.trace` (goal, optional tool line, calculator call, observation,
answer), half with tools offered (the model must call the calculator, then copy the observation)
and half without (it must answer directly: a guess, for a model this small). The loss counts only
the characters the model itself must produce (the calls and answers), not the goal or the
observations, which the loop writes. The held-out goals of `tasks.heldout_tasks` are excluded.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F

from genfast.tinylm import load

from genfast.agents import tasks
from genfast.agents.toolmodel import CHECKPOINT, extend_vocab, generate_line

SEED = 606
STEPS = 400
BATCH = 16
LR = 2e-3


def make_batch(rng: random.Random, tok, block: int, exclude: set[str], batch: int = None, tools_frac: float = 0.7):
    """(inputs, targets) with target -100 wherever the loss must not count."""
    batch = batch or BATCH
    x = torch.zeros(batch, block, dtype=torch.long)
    y = torch.full((batch, block), -100, dtype=torch.long)
    for i in range(batch):
        task = tasks.make_task(rng)
        while task.goal in exclude:
            task = tasks.make_task(rng)
        text, spans = tasks.trace(task, tools=rng.random() < tools_frac)
        ids = tok.encode(text)[: block + 1]
        n = ids.numel() - 1
        x[i, :n] = ids[:-1]
        for s, e in spans:   # position p predicts character p + 1
            y[i, max(s - 1, 0):min(e - 1, n)] = ids[max(s, 1):min(e, n + 1)]
    width = int((y != -100).nonzero()[:, 1].max()) + 1   # no compute on the padding past the longest trace
    return x[:, :width], y[:, :width]


def save(model, tok, info: dict) -> None:
    """fp16 weights (the head is tied to the embedding: stored once), config, vocabulary, info."""
    state = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items() if k != "head.weight"}
    torch.save({"config": asdict(model.config), "vocab": tok.vocab, "state_dict": state, "info": info}, CHECKPOINT)


def train(steps: int = STEPS, progress: bool = True) -> dict:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)   # one thread: the same numbers on any machine
    base, tok = load("shakespeare")
    model, tok = extend_vocab(base, tok)
    model.train()
    block = model.config.block_size
    exclude = {t.goal for t in tasks.heldout_tasks(200)}
    rng = random.Random(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.0)
    warmup = 30
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    t0 = time.time()
    for step in range(steps):
        x, y = make_batch(rng, tok, block, exclude)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress and step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.time() - t0:.0f} s", flush=True)
    seconds = time.time() - t0
    model.eval()
    save(model, tok, dict(steps=steps))   # first save: the evaluation below needs the other modules
    # a quick measurement on held-out goals: exact answers with and without the calculator
    from .evaluate import run_tasks
    from genfast.agents.policies import TinyModelPolicy
    held = tasks.heldout_tasks(40)
    rates = {}
    for tools in (True, False):
        res = run_tasks(TinyModelPolicy(model, tok), held, tools=tools)
        rates["with_tools" if tools else "without_tools"] = round(sum(r.success for r in res) / len(res), 3)
    info = dict(steps=steps, batch_size=BATCH, lr=LR, seed=SEED, train_seconds=round(seconds, 1),
                final_loss=round(loss.item(), 4), heldout40=rates)
    save(model, tok, info)
    print(f"wrote {CHECKPOINT} ({CHECKPOINT.stat().st_size / 1e6:.2f} MB) after {seconds:.0f} s; "
          f"held-out success {rates}")
    print("sample:", repr(generate_line(model, tok, tasks.render("123*45", [], True))))
    return info


if __name__ == "__main__":
    train()
