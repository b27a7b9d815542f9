"""Cleaning: README noise out; personal data scrubbed.

Personal data: e-mail addresses, phone numbers and IPv4 addresses are replaced by placeholders
(<EMAIL>, <PHONE>, <IP>) and counted. The e-mail part is lab 05's exercise (`scrub_emails`), so
`scrub_pii` takes it as an argument and adds the other two. Names are not removed: in this corpus
they are authors and characters, and attribution needs them (see the card's "Personal and
Sensitive Information").

Licence boilerplate (the Project Gutenberg header and licence around a book) is the other half of
cleaning, and also yours (`strip_gutenberg_header`); the pipeline runs it before these.
"""
from __future__ import annotations

import re
from typing import Callable

PHONE = re.compile(r"(?<![\w.+])(?:\+?\d{1,3}[ .\-]?)?\(?\d{3}\)?[ .\-]\d{3}[ .\-]\d{4}(?!\w|\.\d)")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")


def scrub_pii(text: str, scrub_emails: Callable[[str], tuple[str, int]]) -> tuple[str, dict]:
    """E-mail addresses (with `scrub_emails`: text -> (text, count)), then IPv4 addresses and phone
    numbers replaced; return the text and the counts {'email': n, 'ip': n, 'phone': n}."""
    text, n_email = scrub_emails(text)
    counts = {"email": n_email}
    for name, pattern, token in (("ip", IPV4, "<IP>"), ("phone", PHONE, "<PHONE>")):
        text, n = pattern.subn(token, text)
        counts[name] = n
    return text, counts


BADGE = re.compile(r"^\s*(\[!\[[^\n]*|\.\. image::[^\n]*|\s+:(target|alt):[^\n]*)$", re.M)


def strip_markup_noise(text: str) -> str:
    """README noise that is not prose: badge images, image directives; collapse blank runs."""
    text = BADGE.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
