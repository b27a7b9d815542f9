"""Exact dedup by hash; near-duplicates by MinHash signatures and LSH banding.

Exact: SHA-256 of the whitespace-normalised, lower-cased text; the first record of each hash stays.

Near: MinHash (kernels/minhash.py) gives each document H numbers such that two documents agree
on each one with probability J, their Jaccard similarity. Comparing all pairs is O(n^2); LSH
cuts the signature into b bands of r rows (H = b r) and calls two documents candidates if ALL r
rows of ANY band agree, which happens with probability

    P(candidate | J) = 1 - (1 - J^r)^b,

an S-curve with its steepest point near J* = (1/b)^(1/r). Candidates are then checked with the
signature's Jaccard estimate against the threshold; each near-duplicate cluster keeps its first
record (sources listed first win: the order of the input is the priority).
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np


def text_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def exact_duplicates(texts: list[str]) -> dict[int, int]:
    """{index of a duplicate: index of the first record with the same normalised text}."""
    first, dups = {}, {}
    for i, t in enumerate(texts):
        h = text_hash(t)
        if h in first:
            dups[i] = first[h]
        else:
            first[h] = i
    return dups


def jaccard(a, b) -> float:
    """Exact Jaccard similarity of two sets (1.0 for two empty sets)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of positions where two MinHash signatures agree."""
    return float(np.mean(np.asarray(sig_a) == np.asarray(sig_b)))


def candidate_probability(j, bands: int, rows: int):
    return 1.0 - (1.0 - np.asarray(j, dtype=float) ** rows) ** bands


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, whose signatures agree on every row of at least one band."""
    n, h = signatures.shape
    if bands * rows > h:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} hash functions, the signatures have {h}")
    pairs = set()
    for band in range(bands):
        buckets = defaultdict(list)
        for i in range(n):
            buckets[signatures[i, band * rows:(band + 1) * rows].tobytes()].append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


def near_duplicates(signatures: np.ndarray, threshold: float = 0.7, bands: int = 32, rows: int = 4,
                    empty: np.ndarray | None = None) -> dict[int, tuple[int, float]]:
    """{index of a near-duplicate: (index it duplicates, estimated Jaccard)}; earlier indices win.

    `empty` marks documents without shingles (their signature is the sentinel): never duplicates."""
    empty = np.zeros(len(signatures), dtype=bool) if empty is None else empty
    dups = {}
    for i, j in sorted(lsh_candidates(signatures, bands, rows)):
        if empty[i] or empty[j] or j in dups:
            continue
        est = estimate_jaccard(signatures[i], signatures[j])
        if est >= threshold:
            root = dups[i][0] if i in dups else i
            dups[j] = (root, est)
    return dups
