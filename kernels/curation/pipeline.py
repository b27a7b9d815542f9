"""The curation pipeline, in order, with a report of every record it removes or flags.

    opt-outs  ->  versions  ->  licences + policy  ->  cleaning  ->  exact dedup  ->  near dedup

1. Opt-outs first: a source id, a source name or an author on the list removes the record before
   anything else looks at it (nothing of an opted-out work is even cleaned or hashed).
2. Versions: the same record id seen with two different licences (a relicensing) is flagged, all
   versions; otherwise only the newest version is kept.
3. Licences: normalised to SPDX (licenses.normalize), classified, decided by the policy: keep,
   exclude (known licence outside the policy) or flag (unknown, unparseable, conflicting).
   Flagged records are excluded from the published set AND listed for review, never silently.
4. Cleaning: Gutenberg boilerplate stripped (its Title/Author go to `attribution`), README
   badges dropped, e-mail / phone / IP scrubbed; a record left empty is reported.
5. Exact duplicates (hash), then near-duplicates (MinHash + LSH); the earlier record wins.

Every removal is one `Report` entry (kind, record or file, message); `Report.summary` feeds the card.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field


from kernels import minhash

from . import clean, dedup, licenses


@dataclass
class Report:
    entries: list = field(default_factory=list)   # (kind, where, message)

    def add(self, kind: str, where: str, message: str) -> None:
        self.entries.append((kind, where, message))

    def count(self, kind: str | None = None) -> int:
        return sum(1 for k, _, _ in self.entries if kind is None or k == kind)

    def kinds(self) -> collections.Counter:
        return collections.Counter(k for k, _, _ in self.entries)

    def of(self, kind: str) -> list:
        return [e for e in self.entries if e[0] == kind]

    def __str__(self) -> str:
        lines = [f"curation report: {len(self.entries)} entries"]
        for kind, n in sorted(self.kinds().items()):
            lines.append(f"  {kind:<22} {n}")
        return "\n".join(lines)

    def details(self, kinds=None, limit=50) -> str:
        rows = [e for e in self.entries if kinds is None or e[0] in kinds][:limit]
        return "\n".join(f"  [{k}] {w}: {m}" for k, w, m in rows)


REMOVED_KINDS = {"opt-out": "opt-out", "license-excluded": "license", "exact-duplicate": "exact-duplicate",
                 "near-duplicate": "near-duplicate", "older-version": "older-version",
                 "empty-after-cleaning": "empty"}
FLAG_KINDS = ("license-unknown", "license-conflict", "license-changed")


def apply_opt_outs(records: list[dict], opt_outs: dict | None, report: Report) -> list[dict]:
    """Drop records whose id, source or any author is on the opt-out list (case-insensitive)."""
    opt_outs = opt_outs or {}
    sources = {s.casefold() for s in opt_outs.get("sources", ())}
    authors = {a.casefold() for a in opt_outs.get("authors", ())}
    kept = []
    for r in records:
        hit = ({r["id"].casefold(), r["source"].casefold()} & sources) or ({a.casefold() for a in r["authors"]} & authors)
        if hit:
            report.add("opt-out", r["id"], f"removed at the request of {sorted(hit)[0]!r}")
        else:
            kept.append(r)
    return kept


def license_info(r: dict) -> licenses.LicenseInfo:
    """Normalised licence of a record, with `method` saying where it came from."""
    f = r.get("license_fields") or {"expression": r.get("license_raw", "")}
    info = licenses.normalize(f.get("expression"), f.get("license"), f.get("classifiers", ()))
    if r["source"] == "python-docs":
        info.method = f"{info.method}, package metadata"
    elif r.get("license_method"):
        info.method = r["license_method"]
    return info


def resolve_versions(records: list[dict], report: Report) -> list[dict]:
    """One record per id: the newest version, unless the licence changed between versions (flag all)."""
    by_id = collections.OrderedDict()
    for r in records:
        by_id.setdefault(r["id"], []).append(r)
    out = []
    for rid, versions in by_id.items():
        if len(versions) == 1:
            out.append(versions[0])
            continue
        exprs = {v["version"]: (license_info(v).expression or v["license_raw"] or "none") for v in versions}
        if len(set(exprs.values())) > 1:
            history = " -> ".join(f"{ver}: {e}" for ver, e in exprs.items())
            report.add("license-changed", rid, f"licence changed between versions ({history}); all versions held for review")
            continue
        newest = max(versions, key=lambda v: _version_key(v["version"]))
        for v in versions:
            if v is not newest:
                report.add("older-version", rid, f"version {v['version']} superseded by {newest['version']}")
        out.append(newest)
    return out


def _version_key(v: str):
    return tuple(int(p) if p.isdigit() else 0 for p in str(v).replace("-", ".").split("."))


def apply_policy(records: list[dict], policy: licenses.Policy, report: Report) -> list[dict]:
    kept = []
    for r in records:
        info = license_info(r)
        r = dict(r, license=info.expression or "", license_category=info.category, license_method=info.method)
        decision = policy.decide(info)
        if decision == "keep":
            kept.append(r)
        elif decision == "exclude":
            report.add("license-excluded", r["id"], f"{info.expression} is {info.category}, outside the policy "
                                                    f"'{policy.name}'")
        else:
            kind = "license-conflict" if info.conflict else "license-unknown"
            why = "; ".join(info.problems) or "no licence could be determined"
            report.add(kind, r["id"], f"flagged for review, not published: {why} (declared: {r['license_raw'] or 'nothing'})")
    return kept


def clean_records(records: list[dict], report: Report, stats: dict) -> list[dict]:
    out = []
    for r in records:
        text, meta = clean.strip_gutenberg(r["text"])
        attribution = r["attribution"]
        if meta:
            stats["boilerplate_stripped"] += 1
            credit = ", ".join(f"{k}: {v}" for k, v in meta.items() if k in ("Title", "Author", "Release Date"))
            attribution = f"{attribution}; {credit}" if attribution else credit
            report.add("boilerplate", r["id"], f"Project Gutenberg header and licence removed ({len(r['text']) - len(text)} chars)")
        text = clean.strip_markup_noise(text)
        text, counts = clean.scrub_pii(text)
        for k, n in counts.items():
            stats["pii"][k] += n
        if sum(counts.values()):
            report.add("pii-scrubbed", r["id"], ", ".join(f"{n} {k}" for k, n in counts.items() if n))
        if not text.strip():
            report.add("empty-after-cleaning", r["id"], "no text left after cleaning")
            continue
        out.append(dict(r, text=text, attribution=attribution))
    return out


def deduplicate(records: list[dict], report: Report, n_hash=128, bands=32, rows=4, threshold=0.7, k=5,
                use_kernel=None) -> list[dict]:
    texts = [r["text"] for r in records]
    exact = dedup.exact_duplicates(texts)
    for i, j in exact.items():
        report.add("exact-duplicate", records[i]["id"], f"same text as {records[j]['id']}")
    rest = [r for i, r in enumerate(records) if i not in exact]
    if not rest:
        return rest
    sig = minhash.signatures([r["text"] for r in rest], n_hash=n_hash, k=k, use_kernel=use_kernel)
    empty = (sig == minhash.P).all(axis=1)
    near = dedup.near_duplicates(sig, threshold, bands, rows, empty=empty)
    for i, (j, est) in near.items():
        report.add("near-duplicate", rest[i]["id"], f"estimated Jaccard {est:.2f} with {rest[j]['id']}")
    return [r for i, r in enumerate(rest) if i not in near]


COLUMNS = ("id", "source", "title", "text", "version", "license", "license_category", "license_method", "attribution")


def run(records: list[dict], policy: licenses.Policy = licenses.Policy(), opt_outs: dict | None = None,
        report: Report | None = None, n_hash=128, bands=32, rows=4, threshold=0.7, use_kernel=None):
    """(kept rows as dicts with COLUMNS, report, summary for the card)."""
    report = report or Report()
    stats = dict(boilerplate_stripped=0, pii=collections.Counter())
    n_in = len(records)
    collected = collections.Counter((r["source"]) for r in records)
    step = apply_opt_outs(records, opt_outs, report)
    step = resolve_versions(step, report)
    before_policy = {r["id"]: r for r in step}
    step = apply_policy(step, policy, report)
    step = clean_records(step, report, stats)
    step = deduplicate(step, report, n_hash, bands, rows, threshold, use_kernel=use_kernel)
    rows_out = [{c: r.get(c, "") for c in COLUMNS} for r in step]
    # per (source, licence, category, method): records after opt-outs, records kept
    by_license = collections.defaultdict(lambda: [0, 0])
    kept_ids = {r["id"] for r in rows_out}
    for rid, r in before_policy.items():
        info = license_info(r)
        key = (r["source"], info.expression or "unknown", info.category, info.method.split(":")[0][:60])
        by_license[key][0] += 1
        by_license[key][1] += rid in kept_ids
    removed = collections.Counter(REMOVED_KINDS[k] for k, _, _ in report.entries if k in REMOVED_KINDS)
    summary = dict(n_in=n_in, n_kept=len(rows_out), chars_kept=sum(len(r["text"]) for r in rows_out),
                   sources=set(collected), by_license=dict(by_license), removed=dict(removed),
                   flagged=[e for e in report.entries if e[0] in FLAG_KINDS], policy=policy.name,
                   allowed=set(policy.allowed), n_optout_rules=sum(len(v) for v in (opt_outs or {}).values()),
                   boilerplate_stripped=stats["boilerplate_stripped"],
                   pii=", ".join(f"{n} {k}" for k, n in sorted(stats["pii"].items())) or "none found",
                   licenses_kept=sorted({r["license"] for r in rows_out}), n_hash=n_hash, bands=bands, rows=rows,
                   threshold=threshold)
    return rows_out, report, summary


def to_dataset(rows: list[dict]):
    """A `datasets.Dataset` with one column per field of COLUMNS (empty rows: the same schema)."""
    import datasets
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in COLUMNS})


def publish(rows: list[dict], card, folder) -> dict:
    """save_to_disk the dataset under folder/data and the card as folder/README.md; reload both."""
    import datasets
    from pathlib import Path
    from huggingface_hub import DatasetCard
    folder = Path(folder)
    ds = to_dataset(rows)
    ds.save_to_disk(str(folder / "data"))
    card.save(folder / "README.md")
    return dict(dataset=datasets.load_from_disk(str(folder / "data")), card=DatasetCard.load(folder / "README.md"))
