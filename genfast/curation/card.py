"""The dataset card: YAML metadata the hub reads, the recommended sections, a card built from a run.

A card is a README.md: a YAML block between '---' lines (licence, language, size category,
source datasets, task categories: what the hub indexes and filters on), then markdown.

Two templates. The checker's five sections (RECOMMENDED_SECTIONS) are the top-level headings of
the LEGACY dataset card template (the `datasets` library's card guide), the ones the large-scale
study of hub dataset cards counted (Yang et al., ICLR 2024: 86.0% of the 100 most-downloaded
cards fill every one of these sections, against 7.9% of cards with no downloads; the source's
figures, not re-measured here). The CURRENT template, the one `huggingface_hub` ships
(huggingface_hub/templates/datasetcard_template.md, `DatasetCard.from_template`), renames and
splits them; SECTION_HEADINGS says which of its top-level headings carry each of the five, so a
card in either template can be checked. Whether a card fills them is lab 05's checker
(`card_completeness`), written on `section_texts`, `SECTION_HEADINGS` and `PLACEHOLDER`.

Everything here is offline: `huggingface_hub.DatasetCard` parses and writes cards without the
network (only `card.validate()` and `push_to_hub` call the hub, and they are never used).
"""
from __future__ import annotations

import re

from huggingface_hub import DatasetCard, DatasetCardData

RECOMMENDED_SECTIONS = ("Dataset Description", "Dataset Structure", "Dataset Creation",
                        "Considerations for Using the Data", "Additional Information")
# The top-level ('## ') headings that carry each recommended section: the legacy template's own
# title first, then the current huggingface_hub template's. Where each current heading goes,
# its subsections ('###', '####') with it:
#   Dataset Details (> Dataset Description, Dataset Sources)      -> Dataset Description
#   Dataset Structure                                             -> Dataset Structure
#   Dataset Creation (> Curation Rationale, Source Data, Annotations,
#                       Personal and Sensitive Information)       -> Dataset Creation (as in the legacy one)
#   Uses (> Direct Use, Out-of-Scope Use)                         -> Considerations for Using the Data
#   Bias, Risks, and Limitations (> Recommendations)              -> Considerations for Using the Data
#   Citation, Glossary, More Information, Dataset Card Authors,
#   Dataset Card Contact                                          -> Additional Information
# (The legacy Considerations held Social Impact, Discussion of Biases, Other Known Limitations;
# its Additional Information held Dataset Curators, Licensing and Citation Information, Contributions.)
SECTION_HEADINGS = {
    "Dataset Description": ("Dataset Description", "Dataset Details"),
    "Dataset Structure": ("Dataset Structure",),
    "Dataset Creation": ("Dataset Creation",),
    "Considerations for Using the Data": ("Considerations for Using the Data", "Uses", "Bias, Risks, and Limitations"),
    "Additional Information": ("Additional Information", "Citation", "Glossary", "More Information",
                               "Dataset Card Authors", "Dataset Card Contact"),
}
# What an unfilled section holds: the templates' "[More Information Needed]", HTML comments
# (their instructions), TODO-like lines, and two things the current template renders when
# nothing is given: a bold label with no value ("- **Curated by:** [More Information Needed]",
# "**BibTeX:**") and its stock Recommendations sentence.
PLACEHOLDER = re.compile(r"\[More Information Needed\]|<!--.*?-->|^\s*(TODO|TBD|N/?A)\.?\s*$"
                         r"|^[ \t]*(?:[-*][ \t]*)?\*\*[^*\n]+\*\*[ \t]*(?:\[More Information Needed\])?[ \t]*$"
                         r"|Users should be made aware of the risks, biases and limitations of the dataset\. "
                         r"More information needed for further recommendations\.", re.S | re.M | re.I)
REQUIRED_YAML = ("license", "language", "size_categories", "source_datasets", "task_categories")
HUB_IDS = {"MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "MPL-2.0", "GPL-3.0", "CC0-1.0",
           "Unlicense", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "Zlib", "BSL-1.0", "PSF-2.0", "0BSD"}


def section_texts(card_text: str) -> dict[str, str]:
    """{top-level ('## ') section title: its body, subsections included} of a card's markdown.
    A title's " [optional]" mark (the current template's) is dropped: "## Citation [optional]"
    is "Citation"."""
    body = re.sub(r"\A---\n.*?\n---\n", "", card_text, flags=re.S)
    out, current = {}, None
    for line in body.splitlines():
        m = re.match(r"^(#{1,2})\s+(.*?)\s*#*\s*$", line)
        if m:
            current = re.sub(r"\s*\[optional\]$", "", m[2].strip(), flags=re.I) if len(m[1]) == 2 else None
            if current is not None:
                out.setdefault(current, "")
            continue
        if current is not None:
            out[current] += line + "\n"
    return out


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>1T" if n > 10**12 else "10M<n<100M"


def hub_licenses(expressions) -> list[str]:
    """Hub licence ids for the card's YAML: lower-case SPDX ids, 'other' for anything else."""
    ids = set()
    for expr in expressions:
        for lid in re.findall(r"[A-Za-z0-9.+\-]+", expr or ""):
            if lid in ("AND", "OR", "WITH") or lid.endswith("exception"):
                continue
            ids.add(lid.lower() if lid in HUB_IDS else "other")
    return sorted(ids)


def _table(rows, header) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def build_card(summary: dict, pretty_name: str = "Course curated text") -> DatasetCard:
    """A filled dataset card from a pipeline summary (`pipeline.Report.summary()` plus the counts)."""
    data = DatasetCardData(
        license=hub_licenses(summary["licenses_kept"]) or ["unknown"], language=["en"],
        size_categories=[size_category(summary["n_kept"])],
        source_datasets=["original"], task_categories=["text-generation"], pretty_name=pretty_name,
        tags=["copyright-aware", "deduplicated"])
    src_rows = [(s, lic, cat, how, n_in, n_kept) for (s, lic, cat, how), (n_in, n_kept) in sorted(summary["by_license"].items())]
    removed = summary["removed"]
    flagged = summary["flagged"]
    failed = summary.get("failed_steps") or []
    not_run = (f"\n\nSteps that did not run in this build (see the curation report): {', '.join(failed)}."
               if failed else "")
    text = f"""---
{data.to_yaml()}
---

# {pretty_name}

## Dataset Description

A small English text corpus built offline for an LLM-systems course, from sources whose licences are
known from their own metadata. {summary['n_kept']} documents ({summary['chars_kept']:,} characters) were
kept out of {summary['n_in']} collected.

### Sources and licences

{_table(src_rows, ("source", "licence (SPDX)", "category", "how the licence was determined", "records", "kept"))}

## Dataset Structure

One row per document. Fields: `id`, `source`, `title`, `text`, `version`, `license` (SPDX expression),
`license_category`, `license_method`, `attribution`. Single split `train`.

## Dataset Creation

### Curation Rationale

Only text whose licence allows redistribution under the chosen policy, cleaned of boilerplate and
personal data, without duplicates: quality over quantity.

### Policy applied

**{summary['policy']}**: allowed categories {', '.join(sorted(summary['allowed']))}. Records with an unknown or
conflicting licence are never kept silently: {len(flagged)} were flagged for review and excluded
(listed in the curation report); {removed.get('license', 0)} were excluded because their licence is outside the policy.

### Opt-outs

Applied before anything else: {removed.get('opt-out', 0)} records removed for {summary['n_optout_rules']} opt-out
entries (sources or authors that asked to be excluded).

### Source Data

{', '.join(sorted(summary['sources']))}. Boilerplate removed: {summary['boilerplate_stripped']} licence headers
(attribution moved into the `attribution` field).

### Personal and Sensitive Information

E-mail addresses, phone numbers and IPv4 addresses were replaced by placeholders:
{summary['pii']}. Author names are kept because attribution requires them.

### Deduplication

{removed.get('exact-duplicate', 0)} exact duplicates (SHA-256 of normalised text) and
{removed.get('near-duplicate', 0)} near-duplicates (MinHash, {summary['n_hash']} hash functions, LSH
{summary['bands']} bands x {summary['rows']} rows, Jaccard >= {summary['threshold']}) removed.

## Considerations for Using the Data

### Known limitations

Licences are as declared by each source's metadata, normalised automatically; a declaration can be
wrong or incomplete (a package's licence may not cover every file it ships). Public-domain status of
old texts is judged by the author's death date, which holds in most but not all jurisdictions. The
corpus is small and dominated by early-modern English drama and software documentation.{not_run}

## Additional Information

### Licensing Information

Each row carries its own licence and attribution; redistribute rows under their own terms.

### Citation Information

Cite the original works and packages named in `attribution`.
"""
    return DatasetCard(text)
