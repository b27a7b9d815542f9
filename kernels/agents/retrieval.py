"""Retrieval for the agent: TF-IDF vectors in torch, top-k by cosine similarity, a memory store.

TF-IDF. A document d becomes a vector over the vocabulary with entry, for term t,

    tfidf(t, d) = tf(t, d) * idf(t),    idf(t) = log((1 + N) / (1 + df(t))) + 1

where tf counts t in d, N is the number of documents and df(t) how many contain t (the smoothed
idf of scikit-learn: a term in every document still weighs 1, never 0). Rows are L2-normalised,
so a dot product is the cosine similarity. A query is vectorised with the documents' vocabulary
and idf (terms the collection never saw are dropped). top-k = the k largest of q @ D^T, ties
broken by the lower document index (a stable sort), k larger than the collection gives them all.

An embedding model would catch synonyms TF-IDF misses; the course ships none (no download), so
TF-IDF is the default, always-available backend. `kernels/similarity_topk.py` fuses the scoring and
the top-k in one Triton kernel.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .tools import Tool, schema

COURSE_DIR = Path(__file__).resolve().parents[2] / "course"
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric runs ("Top-k, KV-cache!" -> ['top', 'k', 'kv', 'cache'])."""
    return _TOKEN.findall(text.lower())


@dataclass
class TfidfIndex:
    vocab: dict[str, int]
    idf: torch.Tensor            # (V,)
    matrix: torch.Tensor         # (N, V) L2-normalised rows
    docs: list[str] = field(default_factory=list)
    meta: list[dict] = field(default_factory=list)

    def vectorize(self, texts: list[str]) -> torch.Tensor:
        return tfidf_vectors([tokenize(t) for t in texts], self.vocab, self.idf)

    def search(self, query: str, k: int = 3) -> list[tuple[int, float]]:
        """[(document index, cosine similarity)] of the k best documents, best first."""
        scores, idx = topk_scores(self.vectorize([query]), self.matrix, k)
        return [(int(i), float(s)) for i, s in zip(idx[0], scores[0])]


def fit_idf(token_lists: list[list[str]]) -> tuple[dict[str, int], torch.Tensor]:
    """Vocabulary (sorted terms) and smoothed idf from tokenised documents."""
    vocab = {t: i for i, t in enumerate(sorted({t for toks in token_lists for t in toks}))}
    df = torch.zeros(len(vocab))
    for toks in token_lists:
        for t in set(toks):
            df[vocab[t]] += 1
    n = len(token_lists)
    return vocab, torch.log((1 + n) / (1 + df)) + 1


def tfidf_vectors(token_lists: list[list[str]], vocab: dict[str, int], idf: torch.Tensor) -> torch.Tensor:
    """(len(token_lists), V) float32, rows L2-normalised (an empty row stays zero)."""
    out = torch.zeros(len(token_lists), len(vocab))
    for r, toks in enumerate(token_lists):
        for t in toks:
            if t in vocab:
                out[r, vocab[t]] += 1.0
    out *= idf
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)


def build_index(docs: list[str], meta: list[dict] | None = None) -> TfidfIndex:
    tokens = [tokenize(d) for d in docs]
    vocab, idf = fit_idf(tokens)
    return TfidfIndex(vocab, idf, tfidf_vectors(tokens, vocab, idf), list(docs), list(meta or [{} for _ in docs]))


def topk_scores(queries: torch.Tensor, docs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices), each (Q, min(k, N)): the largest q . d, ties to the lower index."""
    scores = queries @ docs.T
    k = min(k, docs.shape[0])
    values, order = torch.sort(scores, dim=1, descending=True, stable=True)
    return values[:, :k], order[:, :k]


# ----------------------------------------------------------------------------------------------
# the course notes as a searchable collection, and the search tool
# ----------------------------------------------------------------------------------------------
def course_passages(course_dir: Path = COURSE_DIR, max_chars: int = 1200) -> tuple[list[str], list[dict]]:
    """The course notes (course/*/notes.md) cut at '## ' headings into passages."""
    docs, meta = [], []
    for path in sorted(Path(course_dir).glob("*/notes.md")):
        section = "intro"
        for block in re.split(r"(?m)^(?=## )", path.read_text(encoding="utf-8")):
            if not block.strip():
                continue
            first = block.strip().splitlines()[0]
            if first.startswith("## "):
                section = first[3:].strip()
            for s in range(0, len(block), max_chars):
                docs.append(block[s:s + max_chars])
                meta.append({"source": f"{path.parent.name}/notes.md", "section": section})
    return docs, meta


_COURSE_INDEX: TfidfIndex | None = None


def course_index() -> TfidfIndex:
    global _COURSE_INDEX
    if _COURSE_INDEX is None:
        _COURSE_INDEX = build_index(*course_passages())
    return _COURSE_INDEX


def search_tool(index: TfidfIndex | None = None, k: int = 2, snippet: int = 300) -> Tool:
    def search(query: str, k: int = k) -> str:
        idx = index or course_index()
        hits = [(i, s) for i, s in idx.search(query, int(k)) if s > 0]
        if not hits:
            return "no passage matches"
        return "\n".join(f"[{idx.meta[i].get('source', i)} / {idx.meta[i].get('section', '')}] (score {s:.2f}) "
                         + " ".join(idx.docs[i].split())[:snippet] for i, s in hits)
    return Tool("search", "Search the course notes; returns the best passages with their source.",
                schema({"query": {"type": "string"}, "k": {"type": "integer"}}, required=["query"]), search)


# ----------------------------------------------------------------------------------------------
# the agent's memory: write notes, read back the ones closest to the current goal
# ----------------------------------------------------------------------------------------------
class Memory:
    """A list of notes; reading is retrieval (TF-IDF top-k over the notes, refitted on write)."""

    def __init__(self):
        self.notes: list[str] = []
        self.meta: list[dict] = []
        self._index: TfidfIndex | None = None

    def write(self, note: str, **meta) -> None:
        self.notes.append(note)
        self.meta.append(meta)
        self._index = None

    def read(self, query: str, k: int = 1, min_score: float = 0.0) -> list[tuple[str, dict, float]]:
        if not self.notes:
            return []
        if self._index is None:
            self._index = build_index(self.notes, self.meta)
        return [(self.notes[i], self.meta[i], s) for i, s in self._index.search(query, k) if s > min_score]

    def __len__(self):
        return len(self.notes)
