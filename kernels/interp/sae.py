"""The sparse autoencoder's training loss (lab 07's answer).

    a = ReLU(W_enc^T (h / s - b_dec) + b_enc)          sparse codes, >= 0
    loss = ||h / s - (a @ W_dec + b_dec)||^2 + lambda * sum_i |a_i|      (mean over the batch)

The L1 term pushes most a_i to exactly 0, so each activation is explained by a few features. The
model (SAE), the shipped SAE and its evaluation are the learner's: genfast.interp.sae.
"""
from __future__ import annotations

from genfast.interp.sae import SAE


def sae_loss(sae: SAE, h, l1: float):
    """(loss, reconstruction term, sparsity term), in the SAE's normalised units."""
    a = sae.encode(h)
    h_hat = a @ sae.W_dec + sae.b_dec
    recon = ((h / sae.scale - h_hat) ** 2).sum(-1).mean()
    sparsity = a.abs().sum(-1).mean()
    return recon + l1 * sparsity, recon, sparsity
