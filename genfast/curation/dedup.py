"""Exact dedup by hash; the LSH S-curve; near-duplicate clusters from candidate pairs.

Exact: SHA-256 of the whitespace-normalised, lower-cased text; the first record of each hash stays.

Near: MinHash gives each document H numbers such that two documents agree on each one with
probability J, their Jaccard similarity. Comparing all pairs is O(n^2); LSH cuts the signature
into b bands of r rows (H = b r) and calls two documents candidates if ALL r rows of ANY band
agree, which happens with probability

    P(candidate | J) = 1 - (1 - J^r)^b,

an S-curve with its steepest point near J* = (1/b)^(1/r). The banding and the Jaccard estimate
are lab 05's exercises; `near_duplicates` takes them as arguments, checks each candidate's
estimate against the threshold and keeps the first record of each cluster (sources listed first
win: the order of the input is the priority).
"""
from __future__ import annotations

import hashlib
from typing import Callable

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


def candidate_probability(j, bands: int, rows: int):
    """P(a pair of Jaccard j shares a bucket in at least one of `bands` bands of `rows` rows)."""
    return 1.0 - (1.0 - np.asarray(j, dtype=float) ** rows) ** bands


def near_duplicates(signatures: np.ndarray, candidates: Callable, estimate: Callable, threshold: float = 0.7,
                    bands: int = 32, rows: int = 4, empty: np.ndarray | None = None) -> dict[int, tuple[int, float]]:
    """{index of a near-duplicate: (index it duplicates, estimated Jaccard)}; earlier indices win.

    `candidates(signatures, bands, rows)`: the pairs (i, j), i < j, sharing a bucket (LSH banding);
    `estimate(sig_a, sig_b)`: the Jaccard estimate of two signatures. `empty` marks documents
    without shingles (their signature is the sentinel): never duplicates."""
    n, h = signatures.shape
    if bands * rows > h:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} hash functions, the signatures have {h}")
    empty = np.zeros(n, dtype=bool) if empty is None else empty
    dups = {}
    for i, j in sorted(candidates(signatures, bands, rows)):
        if empty[i] or empty[j] or j in dups:
            continue
        est = estimate(signatures[i], signatures[j])
        if est >= threshold:
            root = dups[i][0] if i in dups else i
            dups[j] = (root, est)
    return dups
