"""The references of lab 05's licence steps: the category of an SPDX expression, the policy decision.

For an expression: `A AND B` needs both licences' terms, so it takes the MORE restrictive
category; `A OR B` lets the user choose, so it takes the LESS restrictive; `A WITH exception`
takes A's category (exceptions only grant extra permissions). The category is not the whole
story for AND: some pairs cannot be redistributed together at all (GPL-2.0-only AND Apache-2.0);
`genfast.curation.licenses.incompatible` knows a short table of them and `resolve_declarations`
marks such an expression as a conflict, which `decide` flags. Precedence as in SPDX:
WITH > AND > OR. The reference parses the tokens itself (the learner walks the parse tree of
`license-expression`); both agree on every expression the lab uses.

The licence vocabulary, the SPDX parsing of declarations and the policies are the learner's
machinery (`genfast.curation.licenses`); `normalize` here is that one with this `classify`.
"""
from __future__ import annotations

import re

from genfast.curation import licenses as _machinery
from genfast.curation.licenses import (CATEGORIES, POLICIES, RANK, LicenseInfo, Policy, category_of_id,  # noqa: F401
                                       license_ids, parse_spdx, resolve_declarations, spdx)


def _tokens(expression: str) -> list[str]:
    return re.findall(r"\(|\)|[A-Za-z0-9.+\-]+", expression)


def classify(expression: str | None) -> str:
    """Category of an SPDX expression: AND -> most restrictive, OR -> least, WITH -> the base licence.

    None or an empty string is 'unknown'. Precedence as in SPDX: WITH > AND > OR."""
    if not expression or not expression.strip():
        return "unknown"
    tokens = _tokens(expression)
    pos = 0

    def parse_chain(operator, parse_operand, combine):
        """operand (OPERATOR operand)*, folded by `combine` over the categories' ranks."""
        nonlocal pos
        cats = [parse_operand()]
        while pos < len(tokens) and tokens[pos].upper() == operator:
            pos += 1
            cats.append(parse_operand())
        return combine(cats, key=RANK.get)

    def parse_or():     # a choice: the most permissive alternative
        return parse_chain("OR", parse_and, min)

    def parse_and():    # all apply: the most restrictive part
        return parse_chain("AND", parse_atom, max)

    def parse_atom():
        nonlocal pos
        if pos >= len(tokens):
            return "unknown"
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            cat = parse_or()
            pos += 1   # ')'
        else:
            cat = category_of_id(tok)
        if pos < len(tokens) and tokens[pos].upper() == "WITH":
            pos += 2   # the exception only adds permissions
        return cat

    return parse_or()


def decide(info: LicenseInfo, allowed) -> str:
    """'keep', 'exclude' (a known licence outside the policy) or 'flag' (unknown or conflicting)."""
    if info.conflict or info.category == "unknown" or info.expression is None:
        return "flag"
    return "keep" if info.category in allowed else "exclude"


def normalize(expression: str | None = None, license_field: str | None = None,
              classifiers: list[str] | tuple = ()) -> LicenseInfo:
    """Best SPDX expression from package-style metadata, its category (the reference `classify`),
    how it was found, and any problems."""
    return _machinery.normalize(expression, license_field, classifiers, classify=classify)
