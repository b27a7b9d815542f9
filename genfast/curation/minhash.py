"""MinHash's inputs (lab 05): shingles and their hashes, the random hash functions, padding, tile sizes.

A document is a set S of shingles (word k-grams); each shingle is hashed once to an integer
x < P (`shingle_hashes`). MinHash draws H random hash functions h_i(x) = (a_i x + b_i) mod P
(`hash_coefficients`) and keeps, per document and function, the smallest value over the
document's shingles: sig[d, i] = min over x in S_d of (a_i x + b_i) mod P. Computing that is lab
05's Triton kernel; this module only makes what it reads.

The hash family. MinHash's estimate is unbiased when every element of A u B is equally likely
to hold the minimum: min-wise independence (Broder et al., 1998), not universality (a bound on
two keys colliding). (a x + b) mod P is pairwise independent but not min-wise independent. In
practice it behaves on keys that look random, which is why shingles are hashed (crc32) before
it; on structured keys such as runs of consecutive integers it underestimates J (measured in
tests/test_lab05.py, numbers in course/05_dataset_cards/notes.md).

Overflow. P = 2^31 - 1 is a Mersenne prime. Shingle hashes are reduced below P, and a, b are drawn
in [1, P) and [0, P), so a * x + b < 2^62 + 2^31: exact in signed 64-bit integers (tl.int64).

Layout. `pack` pads a list of hash sets into (n_docs, max_len) int64, row d valid for its first
lengths[d] entries; `a`, `b` are (n_hash,) int64; the signature is (n_docs, n_hash) int64. An
empty document keeps the sentinel P in every entry (no shingle was smaller). Grid:
(n_docs, cdiv(n_hash, BLOCK_H)); `block_config` gives the tile sizes, the same for your launcher
and for the reference kernel your grader races it against.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from genfast import runtime

P = (1 << 31) - 1  # Mersenne prime 2^31 - 1


def shingles(text: str, k: int = 5) -> list[str]:
    """Word k-grams of `text`, lower-cased, whitespace-normalised (a shorter text: one shingle)."""
    words = text.lower().split()
    if not words:
        return []
    if len(words) <= k:
        return [" ".join(words)]
    return [" ".join(words[i:i + k]) for i in range(len(words) - k + 1)]


def shingle_hashes(text: str, k: int = 5) -> np.ndarray:
    """The set of a document's shingles as sorted unique int64 hashes in [0, P) (crc32, stable)."""
    values = {zlib.crc32(s.encode("utf-8")) % P for s in shingles(text, k)}
    return np.array(sorted(values), dtype=np.int64)


def hash_coefficients(n_hash: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of n_hash functions h(x) = (a x + b) mod P: a in [1, P), b in [0, P), int64."""
    rng = np.random.default_rng(seed)
    return (rng.integers(1, P, size=n_hash, dtype=np.int64), rng.integers(0, P, size=n_hash, dtype=np.int64))


def pack(hash_sets: list[np.ndarray], device: str | None = None, pad_to: int | None = None):
    """Pad a list of 1-D int64 arrays into (n_docs, max_len) int64 plus lengths (n_docs,) int64."""
    n = len(hash_sets)
    width = max([len(h) for h in hash_sets] + [1, pad_to or 1])
    out = np.zeros((n, width), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    for i, h in enumerate(hash_sets):
        out[i, :len(h)] = h
        lengths[i] = len(h)
    device = device or runtime.device()
    return torch.from_numpy(out).to(device), torch.from_numpy(lengths).to(device)


def random_inputs(n_docs, max_len, n_hash, device=None, seed=0):
    """Random shingle hashes (lengths between 1 and max_len, row 0 full) and coefficients."""
    device = device or runtime.device()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, P, (n_docs, max_len), generator=gen, dtype=torch.int64)
    lengths = torch.randint(1, max_len + 1, (n_docs,), generator=gen, dtype=torch.int64)
    lengths[0] = max_len
    a, b = hash_coefficients(n_hash, seed)
    return x.to(device), lengths.to(device), torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)


LONG_ROWS = 2048  # in the CPU interpreter, rows longer than this get long tiles


def block_config(n_hash: int, max_len: int | None = None) -> dict:
    """Tile sizes of the MinHash launch: BLOCK_S shingles x BLOCK_H hash functions per step.

    On a GPU: 64 x up to 64, 4 warps. In the CPU interpreter each step of a program's loop is a
    handful of NumPy calls whose cost hardly depends on the tile, so rows longer than LONG_ROWS
    (a whole play) take 1024 shingles a step, about 30 steps instead of 450; shorter rows keep
    the GPU's 64, so the checks still walk several steps."""
    block_h = min(64, 1 << (max(1, n_hash) - 1).bit_length())  # next power of two, at most 64
    if runtime.on_gpu():
        return dict(BLOCK_S=64, BLOCK_H=block_h, num_warps=4)
    return dict(BLOCK_S=1024 if max_len and max_len > LONG_ROWS else 64, BLOCK_H=block_h)
