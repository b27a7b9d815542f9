"""python -m autograder similarity [LAB ...]: which submissions look copied, for the instructor.

It only flags pairs for a person to look at; it never changes a grade or the gradebook.

How two submissions are compared (winnowing: Schleimer, Wilkerson and Aiken, SIGMOD 2003):

1. Keep the learner's own code: the solution cells (keyed by nbgrader grade id) without
   the lines the released lab already has (signatures, docstrings, the `# YOUR CODE HERE`
   stub) and without the `### BEGIN/END SOLUTION` markers of the reference solution.
2. Tokenize it and normalise the tokens: identifiers become V, numbers N, strings S;
   keywords, builtins and operators stay; comments and layout go. Renaming variables
   or reflowing a statement over several lines then changes nothing.
3. Hash every k-gram (K consecutive tokens) and slide a window over W consecutive hashes,
   keeping the smallest hash of each window. These fingerprints are a small subset of the
   hashes, yet any shared run of at least W + K - 1 tokens is sure to share one.
   K = 7 rather than 5: the labs force idioms such as `V[:, None] * V + V[None, :] * V`
   on everyone, and with 5-grams an honest lab00 solution scored 0.6 against the reference.
4. Similarity = |F_a & F_b| / min(|F_a|, |F_b|) on *sets* of fingerprints, so moving cells
   or functions around does not hide a copy; 1.0 means one is contained in the other.
"""
from __future__ import annotations

import builtins
import csv
import hashlib
import html
import io
import itertools
import keyword
import tokenize
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import config

K, W = 7, 4  # k-gram length in tokens, winnowing window in k-grams
MIN_FINGERPRINTS = 10  # fewer than this: almost no code of one's own (the untouched lab)
REFERENCE = "(reference solution)"
MARKERS = {"### BEGIN SOLUTION", "### END SOLUTION"}
KEPT_NAMES = set(keyword.kwlist) | set(dir(builtins))
COLUMNS = ["lab", "student_a", "student_b", "similarity", "matched_fingerprints", "flagged"]
STRING_TOKENS = {tokenize.STRING, getattr(tokenize, "FSTRING_START", tokenize.STRING)}


@dataclass
class Code:
    """A learner's own lines of one cell, and its fingerprints: hash -> indices of the lines."""
    lines: list[str]
    prints: dict[int, set[int]]


# --- fingerprints -------------------------------------------------------------------------

def _raw_tokens(text: str) -> list[tokenize.TokenInfo]:
    toks = []
    try:
        toks.extend(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        pass  # an unfinished statement (say an unclosed bracket): keep what was read
    return toks


def tokens(lines: list[str], keep_attributes: bool = False) -> list[tuple[str, int]]:
    """Normalised tokens of `lines`, each with the index of the line it starts on.

    keep_attributes=True keeps the names after a dot (`torch.cat`, `tl.load`): stricter, for
    asking whether a file holds a given solution rather than whether two learners copied."""
    text = "\n".join(line.strip() for line in lines) + "\n"  # no indentation to get wrong
    out, previous = [], ""
    for tok in _raw_tokens(text):
        if tok.type == tokenize.NAME:
            kept = tok.string in KEPT_NAMES or (keep_attributes and previous == ".")
            norm = tok.string if kept else "V"
        elif tok.type == tokenize.NUMBER:
            norm = "N"
        elif tok.type in STRING_TOKENS:
            norm = "S"
        elif tok.type == tokenize.OP:
            norm = tok.string
        else:
            continue  # comments, newlines, the end marker
        out.append((norm, tok.start[0] - 1))
        previous = tok.string
    return out


def _hash(gram) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(gram).encode(), digest_size=8).digest(), "big")


def winnow(toks: list[tuple[str, int]]) -> dict[int, set[int]]:
    """Winnowed k-gram hashes of `toks`: hash -> the lines its k-gram spans."""
    texts = [t for t, _ in toks]
    hashes = [_hash(texts[i:i + K]) for i in range(len(toks) - K + 1)]
    if not hashes:
        return {}
    picked = set()
    for start in range(max(1, len(hashes) - W + 1)):
        window = range(start, min(start + W, len(hashes)))
        picked.add(min(window, key=lambda i: (hashes[i], -i)))  # the rightmost minimum
    prints: dict[int, set[int]] = {}
    for i in picked:
        prints.setdefault(hashes[i], set()).update(range(toks[i][1], toks[i + K - 1][1] + 1))
    return prints


# --- submissions --------------------------------------------------------------------------

def solution_cells(path: Path) -> dict[str, str]:
    nb = nbformat.read(path, as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


def own_code(cells: dict[str, str], given: dict[str, set[str]]) -> dict[str, Code]:
    """Each cell without the released lab's lines, markers and blank lines, fingerprinted."""
    result = {}
    for grade_id, source in cells.items():
        drop = given.get(grade_id, set()) | MARKERS
        lines = [line for line in source.splitlines() if line.strip() and line.strip() not in drop]
        result[grade_id] = Code(lines, winnow(tokens(lines)))
    return result


def submissions(lab: str) -> dict[str, dict[str, Code]]:
    """{student: own code} for the reference solution and every submission of `lab`."""
    given = {gid: {line.strip() for line in src.splitlines()}
             for gid, src in solution_cells(config.release_dir() / lab / f"{lab}.ipynb").items()}
    paths = {REFERENCE: config.ROOT / config.SOURCE_DIR / lab / f"{lab}.ipynb"}
    submitted = config.grading_dir() / "submitted"
    if submitted.is_dir():
        paths |= {s.name: s / lab / f"{lab}.ipynb" for s in sorted(submitted.iterdir())
                  if (s / lab / f"{lab}.ipynb").is_file()}
    return {student: own_code(solution_cells(path), given) for student, path in paths.items()}


def all_prints(code: dict[str, Code]) -> set[int]:
    return set().union(*(c.prints for c in code.values()))


# --- comparison ---------------------------------------------------------------------------

def overlap(a: set[int], b: set[int]) -> tuple[float, int]:
    """(|a & b| / min(|a|, |b|), |a & b|); 0 when either side is empty."""
    shared = len(a & b)
    return (shared / min(len(a), len(b)) if a and b else 0.0), shared


def compare(lab: str, subs: dict[str, dict[str, Code]], threshold: float) -> tuple[list[dict], list[str]]:
    """Pair rows sorted by similarity (flagged ones first), and the students left out."""
    ignored = [s for s, code in subs.items() if len(all_prints(code)) < MIN_FINGERPRINTS]
    names = [s for s in subs if s not in ignored]
    rows = []
    for a, b in itertools.combinations(names, 2):
        score, shared = overlap(all_prints(subs[a]), all_prints(subs[b]))
        cells = {gid: round(overlap(set(subs[a][gid].prints), set(subs[b][gid].prints))[0], 3)
                 for gid in subs[a] if gid in subs[b]}
        rows.append(dict(lab=lab, student_a=a, student_b=b, similarity=round(score, 3),
                         matched_fingerprints=shared, flagged=score >= threshold, cells=cells))
    rows.sort(key=lambda r: (not r["flagged"], -r["similarity"], r["student_a"], r["student_b"]))
    return rows, ignored


# --- output -------------------------------------------------------------------------------

CSS = """body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 8px;vertical-align:top} tr.flagged{background:#fdd}
pre{margin:0;font-size:12px} .hit{background:#ff8} .no{color:#999}"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def _listing(code: Code, other: set[int]) -> str:
    hits = set().union(*(lines for h, lines in code.prints.items() if h in other))
    return "<pre>" + "\n".join(
        f"<span class='{'hit' if i in hits else 'no'}'>{i + 1:3} {html.escape(line)}</span>"
        for i, line in enumerate(code.lines)) + "</pre>"


def side_by_side(row: dict, subs: dict[str, dict[str, Code]]) -> str:
    """Per cell, the two students' own lines next to each other, the matching ones highlighted."""
    a, b = subs[row["student_a"]], subs[row["student_b"]]
    fa, fb = all_prints(a), all_prints(b)
    out = [f"<tr><th>cell</th><th>{html.escape(row['student_a'])}</th><th>{html.escape(row['student_b'])}</th></tr>"]
    for gid in a:
        if gid in b and (a[gid].lines or b[gid].lines):
            out.append(f"<tr><td>{html.escape(gid)}<br>{row['cells'].get(gid, 0):.2f}</td>"
                       f"<td>{_listing(a[gid], fb)}</td><td>{_listing(b[gid], fa)}</td></tr>")
    return "<table>" + "".join(out) + "</table>"


def lab_html(lab: str, rows: list[dict], ignored: list[str], subs, threshold: float) -> str:
    flagged = [r for r in rows if r["flagged"]]
    body = [f"<p>Threshold {threshold:.2f}: a pair is flagged when |F_a &amp; F_b| / min(|F_a|, |F_b|) "
            f"&ge; {threshold:.2f} (k = {K} tokens, window = {W}). {len(rows)} pairs compared, "
            f"{len(flagged)} flagged. A flag asks for a look; it changes no grade.</p>"]
    if ignored:
        body.append(f"<p>Ignored (fewer than {MIN_FINGERPRINTS} fingerprints of their own): "
                    f"{html.escape(', '.join(ignored))}</p>")
    body.append("<table><tr><th></th><th>student a</th><th>student b</th><th>similarity</th>"
                "<th>matched</th><th>per cell</th></tr>")
    for i, r in enumerate(rows):
        mark = f"<a href='#pair{i}'>FLAGGED</a>" if r["flagged"] else ""
        cells = ", ".join(f"{html.escape(g)} {s:.2f}" for g, s in r["cells"].items())
        body.append(f"<tr class='{'flagged' if r['flagged'] else ''}'><td>{mark}</td>"
                    f"<td>{html.escape(r['student_a'])}</td><td>{html.escape(r['student_b'])}</td>"
                    f"<td>{r['similarity']:.3f}</td><td>{r['matched_fingerprints']}</td><td>{cells}</td></tr>")
    body.append("</table>")
    for i, r in enumerate(flagged):
        body.append(f"<h2 id='pair{i}'>{html.escape(r['student_a'])} vs {html.escape(r['student_b'])}: "
                    f"{r['similarity']:.3f}</h2>{side_by_side(r, subs)}")
    return _page(f"Similarity: {lab}", "\n".join(body))


def index_html(out: Path) -> str:
    items = []
    for path in sorted(out.glob("*.csv")):
        with path.open() as f:
            rows = list(csv.DictReader(f))
        n_flagged = sum(r["flagged"] == "True" for r in rows)
        items.append(f"<li><a href='{html.escape(path.stem)}.html'>{html.escape(path.stem)}</a>: "
                     f"{len(rows)} pairs, {n_flagged} flagged</li>")
    return _page("Similarity report", "<ul>" + "".join(items) + "</ul>")


def report(labs: list[str], threshold: float = 0.6, out: Path | None = None) -> dict:
    """Write <lab>.csv, <lab>.html and index.html under `out` (grading/similarity); {lab: pair rows}."""
    out = Path(out) if out else config.grading_dir() / "similarity"
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for lab in labs:
        subs = submissions(lab)
        rows, ignored = compare(lab, subs, threshold)
        with (out / f"{lab}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        (out / f"{lab}.html").write_text(lab_html(lab, rows, ignored, subs, threshold))
        result[lab] = rows
    (out / "index.html").write_text(index_html(out))
    return result


def main(labs: list[str], threshold: float = 0.6, out: Path | None = None) -> None:
    out = Path(out) if out else config.grading_dir() / "similarity"
    for lab, rows in report(labs, threshold, out).items():
        print(f"{lab}: {len(rows)} pairs compared, {sum(r['flagged'] for r in rows)} flagged "
              f"(threshold {threshold:.2f})")
        for r in rows[:5]:
            print(f"  {'!' if r['flagged'] else ' '} {r['similarity']:.3f}  {r['student_a']} / {r['student_b']}")
    print(f"report: {out / 'index.html'}")
