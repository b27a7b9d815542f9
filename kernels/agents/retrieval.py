"""The reference TF-IDF rows and top-k (lab 06's graded `tfidf_matrix` and `top_k`), and the
course's index, search tool and memory built on them.

The tokenizer, the idf, the course notes, the index, the search tool and the memory are the
learner's `genfast.agents.retrieval` (they take the TF-IDF and top-k functions as arguments);
`kernels/similarity_topk.py` fuses the scoring and the top-k in one Triton kernel.

    python -m kernels.agents.retrieval     # rewrites genfast/agents/course_notes.json from course/*/notes.md
"""
from __future__ import annotations

from pathlib import Path

import torch

from genfast.agents import retrieval as _retrieval
from genfast.agents.retrieval import TfidfIndex, course_passages, fit_idf, tokenize  # noqa: F401

COURSE_DIR = Path(__file__).resolve().parents[2] / "course"


def tfidf_vectors(token_lists: list[list[str]], vocab: dict[str, int], idf: torch.Tensor) -> torch.Tensor:
    """(len(token_lists), V) float32, rows L2-normalised (an empty row stays zero)."""
    out = torch.zeros(len(token_lists), len(vocab))
    for r, toks in enumerate(token_lists):
        for t in toks:
            if t in vocab:
                out[r, vocab[t]] += 1.0
    out *= idf
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)


def topk_scores(queries: torch.Tensor, docs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices), each (Q, min(k, N)): the largest q . d, ties to the lower index."""
    scores = queries @ docs.T
    k = min(k, docs.shape[0])
    values, order = torch.sort(scores, dim=1, descending=True, stable=True)
    return values[:, :k], order[:, :k]


def build_index(docs: list[str], meta: list[dict] | None = None) -> TfidfIndex:
    return TfidfIndex(docs, tfidf_vectors, topk_scores, meta)


_COURSE_INDEX: TfidfIndex | None = None


def course_index() -> TfidfIndex:
    global _COURSE_INDEX
    if _COURSE_INDEX is None:
        _COURSE_INDEX = build_index(*course_passages())
    return _COURSE_INDEX


def search_tool(index: TfidfIndex | None = None, k: int = 2, snippet: int = 300):
    return _retrieval.search_tool(index or course_index(), k, snippet)


class Memory(_retrieval.Memory):
    """The agent's memory with the reference TF-IDF and top-k."""

    def __init__(self):
        super().__init__(tfidf_vectors, topk_scores)


if __name__ == "__main__":
    print("wrote", _retrieval.write_notes(COURSE_DIR))
