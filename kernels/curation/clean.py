"""The references of lab 05's cleaning steps: Gutenberg boilerplate out (attribution kept), e-mails scrubbed.

Project Gutenberg e-texts wrap the book between two marker lines,

    *** START OF THE PROJECT GUTENBERG EBOOK <TITLE> ***      ("THIS" in older files)
    ...the book...
    *** END OF THE PROJECT GUTENBERG EBOOK <TITLE> ***

with the licence, the credits and the "Title:/Author:/Release date:" block before the start and
the full Project Gutenberg License after the end. Training on that boilerplate teaches a model
the licence by heart; dropping it without a trace loses the attribution. So the header's
Title/Author/Release lines move into the record's metadata and the text keeps only the book.

Phone numbers, IP addresses and README noise are the learner's machinery
(`genfast.curation.clean`); `scrub_pii` here is that one with this `scrub_emails`.
"""
from __future__ import annotations

import re

from genfast.curation import clean as _machinery
from genfast.curation.clean import IPV4, PHONE, strip_markup_noise  # noqa: F401

START = re.compile(r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*\*\*\*[ \t]*$", re.I | re.M)
END = re.compile(r"^\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*\*\*\*[ \t]*$", re.I | re.M)
FIELD = re.compile(r"^(Title|Author|Release [Dd]ate|Language|Credits|Translator):\s*(.+)$", re.M)

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def strip_gutenberg(text: str) -> tuple[str, dict]:
    """(the book without Gutenberg's header and licence, {'Title': ..., 'Author': ...} from the header).

    A text without the markers comes back unchanged with {}."""
    start, end = START.search(text), END.search(text)
    if not start:
        return text, {}
    header = text[:start.start()]
    meta = {k.title(): v.strip() for k, v in FIELD.findall(header)}
    body = text[start.end():end.start() if end and end.start() > start.end() else len(text)]
    return body.strip() + "\n", meta


def scrub_emails(text: str) -> tuple[str, int]:
    """Every e-mail address replaced by <EMAIL>; (text, count)."""
    return EMAIL.subn("<EMAIL>", text)


def scrub_pii(text: str) -> tuple[str, dict]:
    """Replace e-mail addresses, phone numbers and IPv4 addresses; return the text and counts."""
    return _machinery.scrub_pii(text, scrub_emails)
