"""A sparse autoencoder (SAE): rewrite an activation as a sparse sum of learned directions.

    a = ReLU(W_enc (h - b_dec) + b_enc)            (n_features,)  sparse codes, >= 0
    h_hat = sum_i a_i v_i + b_dec = a @ W_dec + b_dec   the rows v_i of W_dec have unit norm
    loss = ||h - h_hat||^2 + lambda * sum_i |a_i|      (mean over the batch)

The L1 term pushes most a_i to exactly 0, so each activation is explained by a few features;
unit-norm decoder rows stop the model from cheating the penalty by shrinking a and growing v.
Activations are divided by their mean norm first, so lambda means the same on any layer.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

CHECKPOINT_DIR = Path(__file__).resolve().parent


class SAE(nn.Module):
    def __init__(self, d: int, n_features: int):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        W = torch.randn(n_features, d, generator=gen)
        self.W_dec = nn.Parameter(W / W.norm(dim=1, keepdim=True))       # (n_features, d): rows v_i
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone())         # (d, n_features)
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.register_buffer("scale", torch.ones(()))                    # mean activation norm

    def init_from(self, acts):
        self.scale.fill_(acts.norm(dim=-1).mean().item())
        self.b_dec.data = (acts / self.scale).median(dim=0).values

    def encode(self, h):
        return torch.relu((h / self.scale - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, a):
        return (a @ self.W_dec + self.b_dec) * self.scale

    def forward(self, h):
        a = self.encode(h)
        return self.decode(a), a

    @torch.no_grad()
    def normalize_decoder(self):
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True)


def sae_loss(sae: SAE, h, l1: float):
    """(loss, reconstruction term, sparsity term), in the SAE's normalised units."""
    a = sae.encode(h)
    h_hat = a @ sae.W_dec + sae.b_dec
    recon = ((h / sae.scale - h_hat) ** 2).sum(-1).mean()
    sparsity = a.abs().sum(-1).mean()
    return recon + l1 * sparsity, recon, sparsity


@torch.no_grad()
def evaluate(sae: SAE, h) -> dict:
    """Fraction of variance unexplained, mean number of active features (L0), dead features."""
    h_hat, a = sae(h)
    fvu = ((h - h_hat) ** 2).sum() / ((h - h.mean(0)) ** 2).sum()
    return dict(fvu=fvu.item(), l0=(a > 0).float().sum(-1).mean().item(),
                dead_frac=((a > 0).sum(0) == 0).float().mean().item())


@torch.no_grad()
def shakespeare_activations(model, hook: str, n_windows=32, split="val", seed=0, return_tokens=False):
    """Activations (N, d) at `hook` of the hooked Shakespeare model over n_windows windows of 128 characters
    (and the token windows (n_windows, 128) if asked)."""
    from genfast.tinylm import load as load_tinylm
    from genfast.tinylm.data import corpus
    _, tok = load_tinylm("shakespeare")
    text = corpus()[0 if split == "train" else 1]
    gen = torch.Generator().manual_seed(seed)
    T = model.cfg.n_ctx
    starts = torch.randint(0, len(text) - T, (n_windows,), generator=gen).tolist()
    windows = torch.stack([tok.encode(text[s:s + T]) for s in starts])
    _, cache = model.run_with_cache(windows, names=[hook])
    acts = cache[hook].reshape(-1, cache[hook].shape[-1])
    return (acts, windows) if return_tokens else acts


def save_sae(sae: SAE, name: str, **info) -> Path:
    path = CHECKPOINT_DIR / f"{name}.pt"
    torch.save({"shape": tuple(sae.W_dec.shape), "state_dict": {k: v.half() for k, v in sae.state_dict().items()},
                "info": info}, path)
    return path


def load_sae(name: str = "sae_shakespeare") -> SAE:
    ckpt = torch.load(CHECKPOINT_DIR / f"{name}.pt", map_location="cpu", weights_only=True)
    n, d = ckpt["shape"]
    sae = SAE(d, n)
    sae.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    sae.info = ckpt["info"]
    return sae
