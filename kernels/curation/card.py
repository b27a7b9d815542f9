"""The reference of lab 05's card checker: is each recommended section there and filled?

A section is filled when its body has a line of real content once placeholders (`[More
Information Needed]`, HTML comments, TODO) are removed and headings and blank lines ignored. The
card's template, its sections and YAML, and the section parser are the learner's machinery
(`genfast.curation.card`).
"""
from __future__ import annotations

from genfast.curation.card import (HUB_IDS, PLACEHOLDER, RECOMMENDED_SECTIONS, REQUIRED_YAML,  # noqa: F401
                                   build_card, hub_licenses, section_texts, size_category)


def is_filled(body: str) -> bool:
    """True if a section body has content beyond headings, placeholders and comments."""
    text = PLACEHOLDER.sub("", body)
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def completeness(card_text: str, sections=RECOMMENDED_SECTIONS) -> dict[str, bool]:
    """{recommended section: filled?} (a missing section is not filled)."""
    found = {k.lower(): v for k, v in section_texts(card_text).items()}
    return {s: s.lower() in found and is_filled(found[s.lower()]) for s in sections}
