"""MinHash signatures of shingled documents, for near-duplicate detection (lab 05).

A document is a set S of shingles (word k-grams); each shingle is hashed once to an integer
x < P (`shingle_hashes`). MinHash draws H random hash functions h_i(x) = (a_i x + b_i) mod P and
keeps, per document and function, the smallest value over the document's shingles:

    sig[d, i] = min_{x in S_d} (a_i * x + b_i) mod P

For two documents, P(sig[A, i] == sig[B, i]) = |A n B| / |A u B| (the Jaccard similarity), so the
fraction of equal entries of two signatures estimates it, with standard error sqrt(J (1 - J) / H).

Overflow. P = 2^31 - 1 is a Mersenne prime. Shingle hashes are reduced below P, and a, b are drawn
in [1, P) and [0, P), so a * x + b < 2^62 + 2^31: exact in signed 64-bit integers, which is what
every reference here computes in (NumPy int64, torch int64, Triton tl.int64). (The other classic
choice, 32-bit multiply-shift h(x) = (a x mod 2^64) >> 32, is faster on a GPU but is not a
universal family for MinHash's purposes; the course uses the prime.) The kernel reduces mod P with
the Mersenne trick y mod P = (y & P) + (y >> 31), applied twice, then one conditional subtraction:
no division.

Layout. `shingles` is (n_docs, max_len) int64, each row padded past `lengths[d]` (any value);
`a`, `b` are (n_hash,) int64; the signature is (n_docs, n_hash) int64. An empty document gets the
sentinel P in every entry (no shingle was smaller): callers must treat it as "no signature".
Grid: (n_docs, cdiv(n_hash, BLOCK_H)); each program walks its document's shingles BLOCK_S at a
time and keeps a running minimum for BLOCK_H hash functions, a (BLOCK_S x BLOCK_H) tile per step.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
import triton
import triton.language as tl

from genfast import runtime

P = (1 << 31) - 1  # Mersenne prime 2^31 - 1


# ----------------------------------------------------------------------------------------------
# hashing the shingles, and the random hash functions
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# references: NumPy (one document at a time) and torch (vectorised, chunked)
# ----------------------------------------------------------------------------------------------
def numpy_minhash(hash_sets: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The definition, in NumPy int64: sig[d, i] = min over x in hash_sets[d] of (a_i x + b_i) % P."""
    sig = np.full((len(hash_sets), len(a)), P, dtype=np.int64)
    for d, x in enumerate(hash_sets):
        if len(x):
            sig[d] = ((np.asarray(x, dtype=np.int64)[:, None] * a[None, :] + b[None, :]) % P).min(axis=0)
    return sig


def torch_minhash(shingles: torch.Tensor, lengths: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  docs_per_chunk: int | None = None) -> torch.Tensor:
    """Same as the kernel, in torch int64 on any device; chunked over documents to bound memory."""
    n_docs, width = shingles.shape
    if docs_per_chunk is None:   # keep the (docs, width, n_hash) temporary under ~256 MB
        docs_per_chunk = max(1, (32 << 20) // max(1, width * a.numel()))
    valid = torch.arange(width, device=shingles.device)[None, :] < lengths[:, None]
    out = []
    for s in range(0, n_docs, docs_per_chunk):
        x, ok = shingles[s:s + docs_per_chunk], valid[s:s + docs_per_chunk]
        h = (x[:, :, None] * a[None, None, :] + b[None, None, :]) % P
        h = torch.where(ok[:, :, None], h, torch.full_like(h, P))
        out.append(h.min(dim=1).values)
    return torch.cat(out) if out else torch.empty(0, a.numel(), dtype=torch.int64, device=shingles.device)


# ----------------------------------------------------------------------------------------------
# the Triton kernel
# ----------------------------------------------------------------------------------------------
@triton.jit
def _mod_mersenne31(y):
    """y mod (2^31 - 1) for 0 <= y < 2^62 + 2^31, without a division."""
    p = 2147483647
    y = (y & p) + (y >> 31)      # < 2^32 + 2^31
    y = (y & p) + (y >> 31)      # < 2^31 + 2
    return tl.where(y >= p, y - p, y)


@triton.jit
def _minhash_kernel(X, LENGTHS, A, B, SIG, n_hash, stride_xd, stride_xs, stride_sd, stride_sh,
                    BLOCK_S: tl.constexpr, BLOCK_H: tl.constexpr):
    doc = tl.program_id(0).to(tl.int64)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = offs_h < n_hash
    a = tl.load(A + offs_h, mask=h_ok, other=0)
    b = tl.load(B + offs_h, mask=h_ok, other=0)
    length = tl.load(LENGTHS + doc)
    acc = tl.full([BLOCK_H], 2147483647, tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    for start in range(0, length, BLOCK_S):
        s_ok = start + offs_s < length
        x = tl.load(X + doc * stride_xd + (start + offs_s) * stride_xs, mask=s_ok, other=0)
        h = _mod_mersenne31(x[:, None] * a[None, :] + b[None, :])
        h = tl.where(s_ok[:, None], h, 2147483647)
        acc = tl.minimum(acc, tl.min(h, axis=0))
    tl.store(SIG + doc * stride_sd + offs_h * stride_sh, acc, mask=h_ok)


def block_config(n_hash: int) -> dict:
    """Tile sizes: small tiles in the interpreter (NumPy per program), larger on a GPU."""
    if runtime.on_gpu():
        return dict(BLOCK_S=64, BLOCK_H=min(64, triton.next_power_of_2(n_hash)), num_warps=4)
    return dict(BLOCK_S=64, BLOCK_H=min(64, triton.next_power_of_2(n_hash)))


def minhash_signatures(shingles: torch.Tensor, lengths: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n_docs, n_hash) int64 signatures of padded int64 shingle hashes (see the module docstring)."""
    n_docs = shingles.shape[0]
    n_hash = a.numel()
    sig = torch.empty(n_docs, n_hash, dtype=torch.int64, device=shingles.device)
    if n_docs == 0 or n_hash == 0:
        return sig
    cfg = block_config(n_hash)
    grid = (n_docs, triton.cdiv(n_hash, cfg["BLOCK_H"]))
    _minhash_kernel[grid](shingles, lengths, a, b, sig, n_hash, *shingles.stride(), *sig.stride(), **cfg)
    return sig


def signatures(texts: list[str], n_hash: int = 128, k: int = 5, seed: int = 0, use_kernel: bool | None = None):
    """Signatures of raw texts: the Triton kernel on a GPU (or when asked), NumPy otherwise."""
    sets = [shingle_hashes(t, k) for t in texts]
    a, b = hash_coefficients(n_hash, seed)
    if use_kernel is None:
        use_kernel = runtime.on_gpu()
    if not use_kernel:
        return numpy_minhash(sets, a, b)
    dev = runtime.device()
    x, lengths = pack(sets, dev)
    return minhash_signatures(x, lengths, torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)).cpu().numpy()


def random_inputs(n_docs, max_len, n_hash, device=None, seed=0):
    """Random shingle hashes (lengths between 1 and max_len, row 0 full) and coefficients."""
    device = device or runtime.device()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, P, (n_docs, max_len), generator=gen, dtype=torch.int64)
    lengths = torch.randint(1, max_len + 1, (n_docs,), generator=gen, dtype=torch.int64)
    lengths[0] = max_len
    a, b = hash_coefficients(n_hash, seed)
    return x.to(device), lengths.to(device), torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)


def hash_ops(n_docs, max_len, n_hash):
    """Integer operations of the full padded problem: multiply, add, reduce (~4), min per entry."""
    return 7 * n_docs * max_len * n_hash


def bench_cases(BenchCase, randn):
    """BenchCase row: 4096 documents x 1024 shingles x 128 hash functions, int64, against the
    chunked torch reference; throughput in tera integer ops per second (reported as TFLOP/s).

    `randn` is accepted for the common interface; the inputs come from `random_inputs`."""
    def inputs(shape, dtype, device):
        return random_inputs(*shape, device=device)

    return [BenchCase("minhash", (4096, 1024, 128), torch.int64, inputs, minhash_signatures, torch_minhash,
                      lambda s, d: hash_ops(*s), unit="TFLOP/s", test_scale=0.01)]
