"""The references of lab 05's dedup steps: the Jaccard estimate of two signatures, LSH banding.

Two MinHash signatures agree at each position with probability J (their documents' Jaccard
similarity), so the fraction of agreeing positions estimates J. LSH cuts each signature into b
bands of r rows; two documents are candidates when all r rows of at least one band agree: one
hash table per band, O(n b) instead of comparing all O(n^2) pairs.

Exact dedup, the S-curve and the clustering of candidates are the learner's machinery
(`genfast.curation.dedup`); `near_duplicates` here is that one with these references.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from genfast.curation import dedup as _machinery
from genfast.curation.dedup import candidate_probability, exact_duplicates, jaccard, text_hash  # noqa: F401


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of positions where two MinHash signatures agree."""
    return float(np.mean(np.asarray(sig_a) == np.asarray(sig_b)))


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
    """{index of a near-duplicate: (index it duplicates, estimated Jaccard)}; earlier indices win."""
    return _machinery.near_duplicates(signatures, lsh_candidates, estimate_jaccard, threshold, bands, rows, empty)
