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
choice, multiply-shift h(x) = (a x mod 2^64) >> 32, is faster on a GPU and (approximately)
universal, but universality bounds collisions of two keys; what MinHash needs is min-wise
independence, which neither family has exactly: see genfast/curation/minhash.py. The course uses
the prime and hashes shingles first.) The kernel reduces mod P with
the Mersenne trick y mod P = (y & P) + (y >> 31), applied twice, then one conditional subtraction:
no division.

The inputs (shingle hashes, the hash functions, padding, random test inputs) and the tile sizes
are the learner's machinery, `genfast.curation.minhash`: the learner's launcher and this one use
the same `block_config`, so both race with the same class of configuration.

Layout. `shingles` is (n_docs, max_len) int64, each row padded past `lengths[d]` (any value);
`a`, `b` are (n_hash,) int64; the signature is (n_docs, n_hash) int64. An empty document gets the
sentinel P in every entry (no shingle was smaller): callers must treat it as "no signature".
Grid: (n_docs, cdiv(n_hash, BLOCK_H)); each program walks its document's shingles BLOCK_S at a
time and keeps a running minimum for BLOCK_H hash functions, a (BLOCK_S x BLOCK_H) tile per step.
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from genfast import runtime
from genfast.curation.minhash import (P, block_config, hash_coefficients, pack, random_inputs,  # noqa: F401
                                      shingle_hashes, shingles)


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


def minhash_signatures(shingles: torch.Tensor, lengths: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n_docs, n_hash) int64 signatures of padded int64 shingle hashes (see the module docstring)."""
    n_docs = shingles.shape[0]
    n_hash = a.numel()
    sig = torch.empty(n_docs, n_hash, dtype=torch.int64, device=shingles.device)
    if n_docs == 0 or n_hash == 0:
        return sig
    cfg = block_config(n_hash, shingles.shape[1])
    grid = (n_docs, triton.cdiv(n_hash, cfg["BLOCK_H"]))
    _minhash_kernel[grid](shingles, lengths, a, b, sig, n_hash, *shingles.stride(), *sig.stride(), **cfg)
    return sig


def reference_signatures(shingles: torch.Tensor, lengths: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference for the lab's `my_minhash(x, lengths, a, b)` where speed matters (the pipeline):
    the Triton kernel on a GPU; NumPy on the CPU, where the interpreter would take seconds."""
    if runtime.on_gpu():
        return minhash_signatures(shingles, lengths, a, b)
    sets = [shingles[i, :int(lengths[i])].cpu().numpy() for i in range(shingles.shape[0])]
    return torch.from_numpy(numpy_minhash(sets, a.cpu().numpy(), b.cpu().numpy())).to(shingles.device)


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


if __name__ == "__main__":
    from genfast import bench, checks
    x, lengths, a, b = random_inputs(5, 300, 130, seed=1)
    want = torch.from_numpy(numpy_minhash([x[i, :lengths[i]].cpu().numpy() for i in range(5)],
                                          a.cpu().numpy(), b.cpu().numpy()))
    checks.check_equal(minhash_signatures(x, lengths, a, b).cpu(), want, what="kernel vs NumPy")
    checks.check_equal(torch_minhash(x, lengths, a, b).cpu(), want, what="torch vs NumPy")
    print("minhash: kernel, torch and NumPy agree")
    if runtime.on_gpu():
        big = random_inputs(4096, 1024, 128)
        for name, fn in (("kernel", minhash_signatures), ("torch", torch_minhash)):
            t = bench.time_gpu(lambda: fn(*big))
            print(f"{name:<7} {t}  {hash_ops(4096, 1024, 128) / (t.median_ms * 1e-3) / 1e12:.2f} Tops/s")
