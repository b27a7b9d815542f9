"""Cleaning: licence boilerplate out (attribution kept in metadata), personal data scrubbed.

Project Gutenberg e-texts wrap the book between two marker lines,

    *** START OF THE PROJECT GUTENBERG EBOOK <TITLE> ***      ("THIS" in older files)
    ...the book...
    *** END OF THE PROJECT GUTENBERG EBOOK <TITLE> ***

with the licence, the credits and the "Title:/Author:/Release date:" block before the start and
the full Project Gutenberg License after the end. Training on that boilerplate teaches a model
the licence by heart; dropping it without a trace loses the attribution. So the header's
Title/Author/Release lines move into the record's metadata and the text keeps only the book.

Personal data: e-mail addresses, phone numbers and IPv4 addresses are replaced by placeholders
(<EMAIL>, <PHONE>, <IP>) and counted. Names are not removed: in this corpus they are authors and
characters, and attribution needs them (see the card's "Personal and Sensitive Information").
"""
from __future__ import annotations

import re

START = re.compile(r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*\*\*\*[ \t]*$", re.I | re.M)
END = re.compile(r"^\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*\*\*\*[ \t]*$", re.I | re.M)
FIELD = re.compile(r"^(Title|Author|Release [Dd]ate|Language|Credits|Translator):\s*(.+)$", re.M)

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"(?<![\w.+])(?:\+?\d{1,3}[ .\-]?)?\(?\d{3}\)?[ .\-]\d{3}[ .\-]\d{4}(?!\w|\.\d)")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")


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


def scrub_pii(text: str) -> tuple[str, dict]:
    """Replace e-mail addresses, phone numbers and IPv4 addresses; return the text and counts."""
    counts = {}
    for name, pattern, token in (("email", EMAIL, "<EMAIL>"), ("ip", IPV4, "<IP>"), ("phone", PHONE, "<PHONE>")):
        text, n = pattern.subn(token, text)
        counts[name] = n
    return text, counts


BADGE = re.compile(r"^\s*(\[!\[[^\n]*|\.\. image::[^\n]*|\s+:(target|alt):[^\n]*)$", re.M)


def strip_markup_noise(text: str) -> str:
    """README noise that is not prose: badge images, image directives; collapse blank runs."""
    text = BADGE.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
