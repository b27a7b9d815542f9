"""Synthetic tasks whose mechanism is known, so that interpretability tools can be checked.

- induction: BOS + a random segment + the same segment again (+ random filler). The second copy is
  predictable only by *in-context copying*: find the earlier occurrence of the current token and
  predict the token that followed it (an induction head, helped by a previous-token head).
  The segment length varies, so no fixed positional offset can do the job.
- modadd: "a b =" -> (a + b) mod p, learned from half of all pairs, tested on the other half.
- facts: "subject relation" -> attribute, a random lookup table memorised by the MLPs; the model
  that the rank-one edit (ROME) rewrites.
All generators are deterministic given a seed.
"""
from __future__ import annotations

import torch

# ----------------------------------------------------------------- induction
IND_VOCAB, IND_CTX, BOS = 64, 48, 0


def induction_batch(batch: int, seed: int, seg_len: int | None = None, vocab: int = IND_VOCAB,
                    n_ctx: int = IND_CTX):
    """(tokens (B, n_ctx), seg_len (B,)): BOS, segment, segment again, filler. Tokens 1..vocab-1.
    seg_len=None draws each row's length from [6, (n_ctx - 1) // 2]."""
    gen = torch.Generator().manual_seed(seed)
    toks = torch.randint(1, vocab, (batch, n_ctx), generator=gen)
    toks[:, 0] = BOS
    if seg_len is None:
        lens = torch.randint(6, (n_ctx - 1) // 2 + 1, (batch,), generator=gen)
    else:
        lens = torch.full((batch,), seg_len)
    for i, L in enumerate(lens.tolist()):
        toks[i, 1 + L:1 + 2 * L] = toks[i, 1:1 + L]
    return toks, lens


def repeated_tokens(batch: int, seg_len: int, seed: int = 0, vocab: int = IND_VOCAB):
    """BOS + r + r with r random of length seg_len: the standard induction test, (B, 1 + 2 seg_len)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(1, vocab, (batch, seg_len), generator=gen)
    return torch.cat([torch.full((batch, 1), BOS), r, r], dim=1)


def halves_loss(model, tokens, seg_len):
    """Mean next-token loss (nats) on the first copy and on the second (repeated) copy of
    `repeated_tokens`, leaving out the first token of each copy (unpredictable in both). The first
    copy is random: ~ln(vocab - 1); in-context copying makes the second ~0."""
    logits = model(tokens)
    lp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]   # lp[:, t]: predicting token t+1
    first = -lp[:, 1:seg_len].mean()           # predicting tokens 2 .. seg_len (first copy)
    second = -lp[:, seg_len + 1:].mean()       # predicting tokens 2 .. seg_len of the second copy (copyable)
    return first.item(), second.item()


# ----------------------------------------------------------------- modular addition
P = 53


def modadd_data(p: int = P, train_frac: float = 0.5, seed: int = 0):
    """All p^2 pairs as tokens (p^2, 3) = [a, b, p] ('=' is token p), labels (a + b) mod p, and a
    boolean train mask (a random half)."""
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).T
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    labels = (a + b) % p
    gen = torch.Generator().manual_seed(seed)
    train = torch.zeros(p * p, dtype=torch.bool)
    train[torch.randperm(p * p, generator=gen)[: int(train_frac * p * p)]] = True
    return tokens, labels, train


# ----------------------------------------------------------------- facts
N_SUBJ, N_REL, N_ATTR = 64, 4, 16


def facts_table(seed: int = 0):
    """attr[s, r]: the attribute (0..N_ATTR-1) of subject s under relation r, random."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, N_ATTR, (N_SUBJ, N_REL), generator=gen)


def facts_vocab():
    """Token ids: subjects 0..63, relations 64..67, attributes 68..83."""
    return dict(subj=0, rel=N_SUBJ, attr=N_SUBJ + N_REL, size=N_SUBJ + N_REL + N_ATTR)


def facts_data(seed: int = 0):
    """tokens (S*R, 2) = [subject, relation] and the attribute token to predict at position 1."""
    v, table = facts_vocab(), facts_table(seed)
    s, r = torch.cartesian_prod(torch.arange(N_SUBJ), torch.arange(N_REL)).T
    return torch.stack([s + v["subj"], r + v["rel"]], dim=1), table[s, r] + v["attr"]
