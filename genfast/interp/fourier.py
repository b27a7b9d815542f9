"""The modular-addition model against its known mechanism (Nanda et al. 2023, "Progress measures for grokking").

A transformer that groks (a + b) mod p computes with a few KEY FREQUENCIES w_k = 2 pi k / p:
the embedding maps a token a to cos(w_k a), sin(w_k a) for each key k; attention and the MLP
combine a and b into cos(w_k (a + b)), sin(w_k (a + b)) (trigonometric identities); the unembedding
reads those as

    logit(c) ~ sum_k alpha_k cos(w_k (a + b - c)),

which peaks at c = (a + b) mod p for every k at once. Two measurable consequences, checked here:

1. the embedding's energy, taken along the token axis (a DFT over the p rows of W_E), sits in a
   few frequencies. Frequency k and p - k are the same real wave, so they count together: k runs
   over 0 .. (p - 1) / 2, and k = 0 (the mean over tokens) counts in the total;
2. the logits at the '=' position, centred over c for each pair (softmax ignores a constant per
   pair), are explained by the cosines above at the key frequencies: the fraction of their
   variance explained (R^2) by a least-squares fit of one alpha_k per frequency.

A frequency is "key" if it carries more than `factor` times an even share of the non-constant
energy ((p - 1) / 2 frequencies). A model that did not learn the mechanism (an untrained one)
spreads its energy, and the cosines explain almost none of its logits.
"""
from __future__ import annotations

import math

import torch

from . import tasks


def embedding_spectrum(model, p: int = tasks.P) -> torch.Tensor:
    """Energy of the token embedding (rows 0..p-1) per frequency k = 0 .. (p - 1) // 2, summed over
    the model dimensions; sums to p * ||W_E[:p]||^2 (Parseval)."""
    E = model.tok_emb.weight[:p].detach().double()          # (p, d): the '=' token (id p) is not a number
    F = torch.fft.rfft(E, dim=0)                             # (p // 2 + 1, d): frequencies 0 .. (p - 1) / 2
    energy = (F.abs() ** 2).sum(1)
    energy[1:] *= 2                                          # k and p - k: conjugate pair, same energy (p odd)
    return energy


def key_frequencies(spectrum: torch.Tensor, factor: float = 2.0) -> list[int]:
    """The frequencies k >= 1 with more than `factor` times the mean energy of the k >= 1 ones, by
    energy, largest first."""
    waves = spectrum[1:]
    keys = (waves > factor * waves.mean()).nonzero().flatten() + 1
    return sorted(keys.tolist(), key=lambda k: -spectrum[k].item())


@torch.no_grad()
def answer_logits(model, p: int = tasks.P) -> torch.Tensor:
    """Logits over the p answers at the '=' position for every pair (a, b): (p, p, p), [a, b, c]."""
    tokens, _, _ = tasks.modadd_data(p)
    return model(tokens)[:, -1, :p].double().reshape(p, p, p)


def fourier_logit_fit(logits: torch.Tensor, freqs: list[int]) -> dict:
    """Fit logits[a, b, c] - mean_c ~ sum_k alpha_k cos(w_k (a + b - c)) by least squares.
    {"r2": fraction of the centred logits' variance explained, "alpha": {k: alpha_k}, "accuracy": how
    often the fitted form alone puts its maximum at c = (a + b) mod p}."""
    p = logits.shape[-1]
    n = torch.arange(p, dtype=torch.float64)
    s = n[:, None, None] + n[None, :, None] - n[None, None, :]      # a + b - c, (p, p, p)
    X = torch.stack([torch.cos(2 * math.pi * k / p * s).flatten() for k in freqs], dim=1)
    y = (logits - logits.mean(-1, keepdim=True)).flatten()
    alpha = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    fitted = X @ alpha
    r2 = 1 - ((y - fitted) ** 2).sum() / (y ** 2).sum()
    answer = (n[:, None] + n[None, :]).remainder(p)                  # (p, p)
    accuracy = (fitted.reshape(p, p, p).argmax(-1) == answer).double().mean()
    return {"r2": r2.item(), "alpha": dict(zip(freqs, alpha.tolist())), "accuracy": accuracy.item()}


def check_mechanism(model, p: int = tasks.P, factor: float = 2.0) -> dict:
    """The two checks: {"key_frequencies", "energy_fraction" (of the whole embedding's energy, k = 0
    included, in the key frequencies), "even_share" (what as many frequencies would hold with the
    energy spread evenly over the (p - 1) / 2 non-constant ones), "logit_r2", "alpha",
    "fourier_accuracy" (the fitted cosines alone, argmax over c)}."""
    spectrum = embedding_spectrum(model, p)
    keys = key_frequencies(spectrum, factor)
    fit = fourier_logit_fit(answer_logits(model, p), keys) if keys else {"r2": 0.0, "alpha": {}, "accuracy": 0.0}
    return {"key_frequencies": keys, "energy_fraction": (spectrum[keys].sum() / spectrum.sum()).item(),
            "even_share": len(keys) / (len(spectrum) - 1), "logit_r2": fit["r2"], "alpha": fit["alpha"],
            "fourier_accuracy": fit["accuracy"]}
