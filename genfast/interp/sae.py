"""A sparse autoencoder (SAE) model: an activation rewritten as a sparse sum of learned directions.

    a = ReLU(W_enc^T (h / s - b_dec) + b_enc)       (n_features,)  sparse codes, >= 0
    h_rec = (a @ W_dec + b_dec) * s                   the rows v_i of W_dec have unit norm

s (`scale`) is the mean norm of the training activations, so the sparsity penalty means the same on
any layer; unit-norm decoder rows stop training from cheating the penalty by shrinking a and growing
v. The training loss (reconstruction + lambda * L1, in the normalised units) is lab 07's exercise;
here are the model, the shipped SAE trained on the Shakespeare model, and its evaluation.
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
        """Sparse codes (..., n_features) of activations h (..., d)."""
        return torch.relu((h / self.scale - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, a):
        """Activations (..., d), in the units of h, from codes a."""
        return (a @ self.W_dec + self.b_dec) * self.scale

    def forward(self, h):
        a = self.encode(h)
        return self.decode(a), a

    @torch.no_grad()
    def normalize_decoder(self):
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True)


@torch.no_grad()
def evaluate(sae: SAE, h) -> dict:
    """Fraction of variance unexplained, mean number of active features (L0), dead features."""
    h_rec, a = sae(h)
    fvu = ((h - h_rec) ** 2).sum() / ((h - h.mean(0)) ** 2).sum()
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
    out = []
    model.run_with_hooks(windows, [(hook, lambda x, _: out.append(x.reshape(-1, x.shape[-1])))])
    return (out[0], windows) if return_tokens else out[0]


def save_sae(sae: SAE, name: str, **info) -> Path:
    path = CHECKPOINT_DIR / f"{name}.pt"
    torch.save({"shape": tuple(sae.W_dec.shape), "state_dict": {k: v.half() for k, v in sae.state_dict().items()},
                "info": info}, path)
    return path


def load_sae(name: str = "sae_shakespeare") -> SAE:
    """The shipped SAE (512 features on blocks.2.hook_resid_post of the Shakespeare model); `.info` has
    what its training recorded (hook, l1, steps, fvu, l0, dead_frac)."""
    ckpt = torch.load(CHECKPOINT_DIR / f"{name}.pt", map_location="cpu", weights_only=True)
    n, d = ckpt["shape"]
    sae = SAE(d, n)
    sae.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    sae.info = ckpt["info"]
    return sae
