"""The reference of lab 05's opt-out step, and the pipeline run with every reference step.

The pipeline's frame (stages, report, summary, publishing) is the learner's machinery,
`genfast.curation.pipeline`: it chains whatever steps it is given. `REFERENCE` holds the
instructor's versions of the graded steps; `run` here is the frame with them (strict: a
reference that raises is a bug, not a step to skip).
"""
from __future__ import annotations

from genfast.curation import pipeline as _frame
from genfast.curation.pipeline import (COLUMNS, FLAG_KINDS, REMOVED_KINDS, Report, Steps, publish,  # noqa: F401
                                       resolve_versions, to_dataset)

from kernels import minhash

from . import clean, dedup, licenses


def apply_opt_outs(records: list[dict], opt_outs: dict | None) -> tuple[list[dict], int]:
    """(records whose id, source and authors are all off the opt-out list, number removed);
    matching is case-insensitive."""
    opt_outs = opt_outs or {}
    sources = {s.casefold() for s in opt_outs.get("sources", ())}
    authors = {a.casefold() for a in opt_outs.get("authors", ())}
    kept = [r for r in records
            if not ({r["id"].casefold(), r["source"].casefold()} & sources or {a.casefold() for a in r["authors"]} & authors)]
    return kept, len(records) - len(kept)


REFERENCE = Steps(classify=licenses.classify, decide=licenses.decide, apply_opt_outs=apply_opt_outs,
                  strip_gutenberg_header=clean.strip_gutenberg, scrub_emails=clean.scrub_emails,
                  minhash=minhash.reference_signatures, lsh_candidate_pairs=dedup.lsh_candidates,
                  estimate_jaccard=dedup.estimate_jaccard)


def license_info(r: dict) -> licenses.LicenseInfo:
    """Normalised licence of a record (the reference classify), with `method` saying where it came from."""
    return _frame.license_info(r, licenses.classify)


def run(records: list[dict], policy: licenses.Policy = licenses.Policy(), opt_outs: dict | None = None,
        report: Report | None = None, n_hash=128, bands=32, rows=4, threshold=0.7):
    """(kept rows as dicts with COLUMNS, report, summary for the card), with the reference steps."""
    return _frame.run(records, policy, opt_outs, REFERENCE, report=report, n_hash=n_hash, bands=bands, rows=rows,
                      threshold=threshold, strict=True)
