"""Retrieval for the agent: tokens and idf, the course notes, a search index, the agent's memory.

TF-IDF. A document d becomes a vector over the vocabulary with entry, for term t,

    tfidf(t, d) = tf(t, d) * idf(t),    idf(t) = log((1 + N) / (1 + df(t))) + 1

where tf counts t in d, N is the number of documents and df(t) how many contain t (the smoothed
idf of scikit-learn: a term in every document still weighs 1, never 0). Rows are L2-normalised,
so a dot product is the cosine similarity. A query is vectorised with the documents' vocabulary
and idf (terms the collection never saw are dropped). top-k = the k largest of q @ D^T, ties
broken by the lower document index, k larger than the collection gives them all.

The TF-IDF rows and the top-k are lab 06's exercises (`tfidf_matrix`, `top_k`): the index, the
search tool and the memory here take them as arguments, so they run on whichever you give them.
An embedding model would catch synonyms TF-IDF misses; the course ships none (no download), so
TF-IDF is the default, always-available backend.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import torch

from .tools import Tool, schema

NOTES = Path(__file__).resolve().parent / "course_notes.json"  # course/*/notes.md, cut into passages
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric runs ("Top-k, KV-cache!" -> ['top', 'k', 'kv', 'cache'])."""
    return _TOKEN.findall(text.lower())


def fit_idf(token_lists: list[list[str]]) -> tuple[dict[str, int], torch.Tensor]:
    """Vocabulary (sorted terms) and smoothed idf from tokenised documents."""
    vocab = {t: i for i, t in enumerate(sorted({t for toks in token_lists for t in toks}))}
    df = torch.zeros(len(vocab))
    for toks in token_lists:
        for t in set(toks):
            df[vocab[t]] += 1
    n = len(token_lists)
    return vocab, torch.log((1 + n) / (1 + df)) + 1


# ----------------------------------------------------------------------------------------------
# the course notes as a searchable collection
# ----------------------------------------------------------------------------------------------
def split_notes(course_dir: str | Path, max_chars: int = 1200) -> tuple[list[str], list[dict]]:
    """The course notes (course_dir/*/notes.md) cut at '## ' headings into passages."""
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


def write_notes(course_dir: str | Path, path: Path = NOTES) -> Path:
    """Save `split_notes(course_dir)` where `course_passages` reads it (the course's own notes ship
    with this package)."""
    docs, meta = split_notes(course_dir)
    Path(path).write_text(json.dumps({"docs": docs, "meta": meta}, ensure_ascii=False, indent=0) + "\n",
                          encoding="utf-8")
    return Path(path)


def course_passages() -> tuple[list[str], list[dict]]:
    """(passages, [{'source': 'NN_module/notes.md', 'section': ...}]) of the course notes."""
    data = json.loads(NOTES.read_text(encoding="utf-8"))
    return data["docs"], data["meta"]


# ----------------------------------------------------------------------------------------------
# an index, the search tool, and the agent's memory, on the TF-IDF and top-k they are given
# ----------------------------------------------------------------------------------------------
Vectorize = Callable[[list, dict, torch.Tensor], torch.Tensor]   # (token lists, vocab, idf) -> (N, V) rows
TopK = Callable[[torch.Tensor, torch.Tensor, int], tuple]      # (queries, docs, k) -> (scores, indices)


class TfidfIndex:
    """TF-IDF rows of a collection (`tfidf_matrix(token_lists, vocab, idf)`) and search over them
    (`top_k(queries, docs, k)`)."""

    def __init__(self, docs: list[str], tfidf_matrix: Vectorize, top_k: TopK, meta: list[dict] | None = None):
        self.docs, self.meta = list(docs), list(meta or [{} for _ in docs])
        self._tfidf, self._top_k = tfidf_matrix, top_k
        tokens = [tokenize(d) for d in self.docs]
        self.vocab, self.idf = fit_idf(tokens)
        self.matrix = tfidf_matrix(tokens, self.vocab, self.idf)

    def vectorize(self, texts: list[str]) -> torch.Tensor:
        return self._tfidf([tokenize(t) for t in texts], self.vocab, self.idf)

    def search(self, query: str, k: int = 3) -> list[tuple[int, float]]:
        """[(document index, cosine similarity)] of the k best documents, best first."""
        scores, idx = self._top_k(self.vectorize([query]), self.matrix, k)
        return [(int(i), float(s)) for i, s in zip(idx[0], scores[0])]


def search_tool(index: TfidfIndex, k: int = 2, snippet: int = 300) -> Tool:
    """A tool `search(query, k)` over `index` (for example the course notes): the best passages
    with their source."""
    def search(query: str, k: int = k) -> str:
        hits = [(i, s) for i, s in index.search(query, int(k)) if s > 0]
        if not hits:
            return "no passage matches"
        return "\n".join(f"[{index.meta[i].get('source', i)} / {index.meta[i].get('section', '')}] (score {s:.2f}) "
                         + " ".join(index.docs[i].split())[:snippet] for i, s in hits)
    return Tool("search", "Search the course notes; returns the best passages with their source.",
                schema({"query": {"type": "string"}, "k": {"type": "integer"}}, required=["query"]), search)


class Memory:
    """A list of notes; reading is retrieval (top-k over the notes' TF-IDF rows, refitted on write)."""

    def __init__(self, tfidf_matrix: Vectorize, top_k: TopK):
        self._tfidf, self._top_k = tfidf_matrix, top_k
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
            self._index = TfidfIndex(self.notes, self._tfidf, self._top_k, self.meta)
        return [(self.notes[i], self.meta[i], s) for i, s in self._index.search(query, k) if s > min_score]

    def __len__(self):
        return len(self.notes)
