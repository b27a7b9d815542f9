"""Train the lab's small models on a CPU and save them as fp16 checkpoints in genfast/interp/ (shipped to learners).

    python -m kernels.interp.train              # all of them (a few minutes on 2 cores)
    python -m kernels.interp.train induction    # or one: induction | modadd | facts | sae

- induction: 2-layer attention-only transformer on repeated random segments (tasks.induction_batch);
  an induction head forms after a few hundred steps (the loss on the second copy drops to ~0).
- modadd: 1-layer transformer with an MLP on (a + b) mod 53 from half the pairs; strong weight
  decay makes it generalise (grokking) to the held-out half.
- facts: 2-layer transformer that memorises 64 subjects x 4 relations -> attribute.
- sae: a sparse autoencoder on the residual stream of the course's Shakespeare model (lab 01).
Deterministic: fixed seeds, one thread, data drawn from seeded generators.
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from genfast.interp import sae as sae_mod
from genfast.interp import tasks
from genfast.interp.hooked import Config, HookedTransformer, from_tinylm, save

from .sae import sae_loss

IND_CFG = dict(vocab_size=32, n_ctx=32, d_model=64, n_layer=2, n_head=4, d_mlp=0)
MOD_CFG = dict(vocab_size=tasks.P + 1, n_ctx=3, d_model=64, n_layer=1, n_head=4, d_mlp=256)
FACTS_CFG = dict(vocab_size=tasks.facts_vocab()["size"], n_ctx=2, d_model=64, n_layer=2, n_head=4, d_mlp=256)
SAE_LAYER, SAE_HOOK, SAE_DICT, SAE_L1 = 2, "blocks.2.hook_resid_post", 512, 0.2


def fit(model, loss_at, steps, **adamw):
    """AdamW on loss_at(step) for `steps` steps; the model is left in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), **adamw)
    for step in range(steps):
        loss = loss_at(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def train_induction(steps=1000, batch=32, name="induction"):
    """Train (and save as `name`; name=None: return the model unsaved)."""
    torch.manual_seed(0)
    model = HookedTransformer(Config(**IND_CFG))
    V, C = IND_CFG["vocab_size"], IND_CFG["n_ctx"]

    def loss_at(step):
        x, _ = tasks.induction_batch(batch, seed=step, vocab=V, n_ctx=C)
        return F.cross_entropy(model(x)[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))

    fit(model, loss_at, steps, lr=3e-3, weight_decay=0.01)
    if name is None:
        return model
    with torch.no_grad():
        first, second = tasks.halves_loss(model, tasks.repeated_tokens(200, 12, seed=999, vocab=V), 12)
    print(f"induction: loss on the first copy {first:.3f} nats, on the repeated copy {second:.3f}")
    return save(model, name, vocab=V, first_copy_loss=first, repeat_loss=second, steps=steps)


def train_modadd(steps=1200):
    torch.manual_seed(0)
    model = HookedTransformer(Config(**MOD_CFG))
    tokens, labels, train = tasks.modadd_data()
    fit(model, lambda step: F.cross_entropy(model(tokens[train])[:, -1], labels[train]), steps,
        lr=3e-3, weight_decay=1.0, betas=(0.9, 0.98))
    with torch.no_grad():
        pred = model(tokens)[:, -1].argmax(-1)
    train_acc = (pred[train] == labels[train]).float().mean().item()
    test_acc = (pred[~train] == labels[~train]).float().mean().item()
    print(f"modadd: train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f}")
    return save(model, "modadd", p=tasks.P, train_acc=train_acc, test_acc=test_acc, steps=steps)


def train_facts(steps=800):
    torch.manual_seed(0)
    model = HookedTransformer(Config(**FACTS_CFG))
    tokens, target = tasks.facts_data()
    fit(model, lambda step: F.cross_entropy(model(tokens)[:, -1], target), steps, lr=3e-3, weight_decay=0.01)
    with torch.no_grad():
        acc = (model(tokens)[:, -1].argmax(-1) == target).float().mean().item()
    print(f"facts: {acc:.4f} of the {len(target)} facts recalled")
    return save(model, "facts", accuracy=acc, steps=steps)


def train_sae(steps=1500, batch=1024):
    from genfast.tinylm import load as load_tinylm
    torch.manual_seed(0)
    model = from_tinylm(load_tinylm("shakespeare")[0])
    acts = sae_mod.shakespeare_activations(model, SAE_HOOK, n_windows=96, split="train")
    sae = sae_mod.SAE(acts.shape[-1], SAE_DICT)
    sae.init_from(acts)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        h = acts[torch.randint(0, len(acts), (batch,), generator=gen)]
        loss, _, _ = sae_loss(sae, h, SAE_L1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sae.normalize_decoder()
    stats = sae_mod.evaluate(sae, sae_mod.shakespeare_activations(model, SAE_HOOK, n_windows=16, split="val"))
    print("sae: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))
    return sae_mod.save_sae(sae, "sae_shakespeare", hook=SAE_HOOK, l1=SAE_L1, steps=steps, **stats)


TRAINERS = {"induction": train_induction, "modadd": train_modadd, "facts": train_facts, "sae": train_sae}


def main(argv=None):
    torch.set_num_threads(1)
    names = (sys.argv[1:] if argv is None else argv) or list(TRAINERS)
    for name in names:
        if name not in TRAINERS:
            raise SystemExit(f"unknown model {name!r}; choose from {', '.join(TRAINERS)}")
        start = time.perf_counter()
        path = TRAINERS[name]()
        print(f"  -> {path} ({path.stat().st_size / 1024:.0f} KB, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
