"""The reference of lab 05's card checker: is each recommended section there and filled?

A recommended section's content is the bodies of the card's top-level sections that carry it
(`SECTION_HEADINGS`: the legacy template's title, or the current huggingface_hub template's
headings, e.g. "Uses" and "Bias, Risks, and Limitations" for "Considerations for Using the
Data"). It is filled when that content has a line of real content once placeholders (`[More
Information Needed]`, HTML comments, TODO, value-less labels) are removed and headings and blank
lines ignored. The card's templates, its sections and YAML, and the section parser are the
learner's machinery (`genfast.curation.card`).
"""
from __future__ import annotations

from genfast.curation.card import (HUB_IDS, PLACEHOLDER, RECOMMENDED_SECTIONS, REQUIRED_YAML,  # noqa: F401
                                   SECTION_HEADINGS, build_card, hub_licenses, section_texts, size_category)


def is_filled(body: str) -> bool:
    """True if a section body has content beyond headings, placeholders and comments."""
    text = PLACEHOLDER.sub("", body)
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def completeness(card_text: str, sections=RECOMMENDED_SECTIONS) -> dict[str, bool]:
    """{recommended section: filled?}, in either template (a missing section is not filled)."""
    found = {k.lower(): v for k, v in section_texts(card_text).items()}
    return {s: is_filled("\n".join(found.get(h.lower(), "") for h in SECTION_HEADINGS.get(s, (s,))))
            for s in sections}
