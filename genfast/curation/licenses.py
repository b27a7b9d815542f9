"""Licence declarations -> SPDX expressions; the categories, and the policies a publisher chooses.

Package metadata declares licences in three places, in decreasing order of precision:

1. `License-Expression` (PEP 639, core metadata 2.4): an SPDX expression, e.g. "MPL-2.0 AND MIT";
2. `License`: free text, anything from "MIT" to "Apache 2.0" to the whole licence text;
3. `Classifier: License :: ...` trove classifiers, e.g. "License :: OSI Approved :: BSD License"
   (which does not say which BSD).

`normalize` tries them in that order, parses with `license-expression` (SPDX licence list), and
says how it decided (`method`). When two sources disagree (an expression says MIT, a classifier
says Apache) the result is flagged `conflict`: a curator must look, the pipeline must not guess.

Categories of one SPDX licence id (`category_of_id`): public-domain, permissive, copyleft,
non-commercial, unknown. The category of a whole expression (`A AND B`, `A OR B`, `A WITH
exception`) is what lab 05 asks you to compute (`classify`); `normalize` takes that function as
an argument. What a policy does with a category (keep, exclude, flag) is yours too (`decide`).

`A AND B` usually means "as restrictive as the stricter of the two", but not always: where the
two sets of terms contradict each other nobody can meet both, and the combination may not be
redistributed at all (GPL-2.0-only AND Apache-2.0). `incompatible` knows a short table of such
pairs (INCOMPATIBLE); `resolve_declarations` marks an expression that combines one in every
choice its ORs allow as a conflict (`conflict=True`, with the reason in `problems`), so a
`decide` that flags conflicts holds it back for a person.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

CATEGORIES = ("public-domain", "permissive", "copyleft", "non-commercial", "unknown")
# most permissive first
RANK = {"public-domain": 0, "permissive": 1, "copyleft": 2, "non-commercial": 3, "unknown": 4}

PUBLIC_DOMAIN = {"CC0-1.0", "Unlicense", "CC-PDDC", "PDDL-1.0", "0BSD", "LicenseRef-Public-Domain",
                 "LicenseRef-Gutenberg-Public-Domain"}
PERMISSIVE = {"MIT", "MIT-0", "MIT-CMU", "ISC", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "PSF-2.0",
              "Python-2.0", "Zlib", "BSL-1.0", "TCL", "HPND", "CC-BY-4.0", "CC-BY-3.0", "Unicode-3.0",
              "BSD-3-Clause-Clear", "X11", "NCSA", "UPL-1.0", "W3C", "OFL-1.1", "Artistic-2.0"}
COPYLEFT_PREFIXES = ("GPL-", "LGPL-", "AGPL-", "MPL-", "EPL-", "EUPL-", "CDDL-", "OSL-", "CC-BY-SA-", "GFDL-")
NON_COMMERCIAL_MARK = "-NC"   # CC-BY-NC-4.0, CC-BY-NC-SA-4.0, CC-BY-NC-ND-4.0 ...

# free-text `License` fields and classifiers seen in real metadata -> SPDX
ALIASES = {
    "mit": "MIT", "mit license": "MIT", "the mit license": "MIT", "mit licence": "MIT",
    "apache 2.0": "Apache-2.0", "apache-2": "Apache-2.0", "apache software license": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0", "apache license 2.0": "Apache-2.0", "apache 2": "Apache-2.0",
    "bsd 3-clause license": "BSD-3-Clause", "bsd-3": "BSD-3-Clause", "new bsd": "BSD-3-Clause",
    "bsd 2-clause license": "BSD-2-Clause", "simplified bsd": "BSD-2-Clause",
    "isc license": "ISC", "isc license (iscl)": "ISC", "isc": "ISC",
    "psfl": "PSF-2.0", "psf": "PSF-2.0", "python software foundation license": "PSF-2.0",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0",
    "gnu gpl 3": "GPL-3.0-only", "gplv3": "GPL-3.0-only", "gpl-3": "GPL-3.0-only",
    "gnu general public license v3 (gplv3)": "GPL-3.0-only",
    "gnu general public license v3 or later (gplv3+)": "GPL-3.0-or-later",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0-only",
    "public domain": "LicenseRef-Public-Domain", "cc0 1.0 universal (cc0 1.0) public domain dedication": "CC0-1.0",
    "the unlicense (unlicense)": "Unlicense", "zlib/libpng license": "Zlib",
}
# a trove classifier that names a family but not the licence: recorded, never turned into an id
AMBIGUOUS = {"bsd", "bsd license", "gnu general public license (gpl)", "gnu library or lesser general public license (lgpl)",
             "other/proprietary license", "freely distributable", "dfsg approved", "unknown", "", "none", "license"}
# a full licence text in the `License` field: its first line usually names it
TITLES = [(re.compile(p, re.I), spdx) for p, spdx in [
    (r"^\W*bsd 3-clause", "BSD-3-Clause"), (r"^\W*bsd 2-clause", "BSD-2-Clause"),
    (r"^\W*(the )?mit licen[cs]e", "MIT"), (r"^\W*apache license", "Apache-2.0"),
    (r"^\W*gnu general public license", None), (r"redistribution and use in source and binary forms", None)]]


@lru_cache(maxsize=1)
def spdx():
    """The SPDX licensing of `license-expression`: `spdx().parse(text)` gives the expression's tree."""
    from license_expression import get_spdx_licensing
    return get_spdx_licensing()


def parse_spdx(text: str) -> tuple[str | None, str]:
    """(normalised SPDX expression or None, error). LicenseRef-* ids are accepted as they are."""
    text = (text or "").strip()
    if not text:
        return None, "empty licence string"
    if not re.fullmatch(r"[A-Za-z0-9.+\-:_() ]+", text):
        return None, f"characters that no SPDX expression contains in {text[:60]!r}"
    try:
        result = spdx().validate(text)
    except Exception as exc:   # the library raises on some malformed strings instead of reporting them
        return None, f"{type(exc).__name__}: {exc}"
    if result.errors and result.invalid_symbols and all(str(s).startswith("LicenseRef-") for s in result.invalid_symbols):
        return re.sub(r"\s+", " ", text), ""     # user-defined refs are valid SPDX; the library does not know them
    if result.errors:
        return None, "; ".join(result.errors)
    return result.normalized_expression, ""


def license_ids(expression: str) -> list[str]:
    """The licence ids of an expression (exceptions left out), in order of appearance."""
    ids = re.findall(r"[A-Za-z0-9.+\-]+", expression or "")
    return [i for i in ids if i not in ("AND", "OR", "WITH", "and", "or", "with") and not i.endswith("exception")
            and not re.match(r".*-exception(-[0-9.]+)?$", i)]


def category_of_id(license_id: str) -> str:
    """Category of one SPDX licence id (see the module docstring)."""
    lid = license_id.strip().rstrip("+")
    if lid in PUBLIC_DOMAIN:
        return "public-domain"
    if NON_COMMERCIAL_MARK in lid.upper() and lid.upper().startswith("CC-"):
        return "non-commercial"
    if lid in PERMISSIVE:
        return "permissive"
    if lid.startswith(COPYLEFT_PREFIXES):
        return "copyleft"
    return "unknown"


# Licence pairs that may not be redistributed together, whatever their categories: "A AND B"
# needs both sets of terms at once, and these contradict each other. A short table of
# well-known cases, each with its source; not a compatibility matrix (that is a lawyer's
# question: the pipeline flags, a person decides). Exceptions (WITH) are not looked at: the base
# licence decides, which errs on the side of a flag.
def _gpl2_only(lid: str) -> bool:
    return lid in ("GPL-2.0-only", "GPL-2.0")


def _version3_copyleft(lid: str) -> bool:
    return lid.startswith(("GPL-3.0", "LGPL-3.0", "AGPL-3.0"))


def _share_alike(lid: str) -> bool:   # licences that forbid further restrictions on the combined work
    return lid.startswith(("GPL-", "LGPL-", "AGPL-", "CC-BY-SA-"))


def _restricts_use_or_redistribution(lid: str) -> bool:
    return category_of_id(lid) == "non-commercial" or bool(
        re.match(r"LicenseRef-.*(proprietary|no-?redistribution|all-?rights-?reserved)", lid, re.I))


INCOMPATIBLE = [
    # Apache Software Foundation, "Apache License v2.0 and GPL Compatibility"
    # (https://www.apache.org/licenses/GPL-compatibility.html); FSF licence list, Apache 2.0
    # (https://www.gnu.org/licenses/license-list.html#apache2): fine with GPL-3.0, not GPL-2.0.
    (_gpl2_only, lambda lid: lid == "Apache-2.0",
     "Apache-2.0's patent termination and indemnity terms are further restrictions GPL-2.0-only "
     "does not allow (Apache-2.0 is compatible with GPL-3.0, not GPL-2.0)"),
    # FSF GPL FAQ, "Is GPLv3 compatible with GPLv2?" and the compatibility matrix
    # (https://www.gnu.org/licenses/gpl-faq.html#v2v3Compatibility, #AllCompatibility).
    (_gpl2_only, _version3_copyleft,
     "each requires the combined work under its own terms, and GPL-2.0-only code may not move to version 3"),
    # GPL-2.0 section 6 and GPL-3.0 section 10 ("no further restrictions"), CC BY-SA 4.0 section
    # 2(a)(5)(C) ("no downstream restrictions"); FSF licence list on CC BY-NC
    # (https://www.gnu.org/licenses/license-list.html#CC-BY-NC).
    (_share_alike, _restricts_use_or_redistribution,
     "a share-alike licence forbids further restrictions on the combined work, and a no-commercial-use "
     "or no-redistribution term is one"),
]


def _choices(node) -> list[frozenset]:
    """The sets of licence ids an expression may be used under: one per way of resolving its ORs."""
    from license_expression import AND, OR, LicenseWithExceptionSymbol
    if isinstance(node, AND):
        out = [frozenset()]
        for child in node.args:
            out = [a | b for a in out for b in _choices(child)][:256]   # bounded: real expressions are short
        return out
    if isinstance(node, OR):
        return [c for child in node.args for c in _choices(child)][:256]
    if isinstance(node, LicenseWithExceptionSymbol):
        return [frozenset({node.license_symbol.key})]
    return [frozenset({node.key})]


def incompatible(expression: str | None) -> list[str]:
    """Why an expression cannot be redistributed: one line per known-incompatible pair it ANDs
    together (INCOMPATIBLE). [] when it has none, or when some choice its ORs allow has none
    ("(GPL-2.0-only OR MIT) AND Apache-2.0" is fine: take MIT)."""
    if not expression or not expression.strip():
        return []
    try:
        tree = spdx().parse(expression, validate=False)
    except Exception:   # unparseable: reported elsewhere
        return []
    if tree is None:
        return []
    reasons = []
    for ids in _choices(tree):
        found = [f"{a} AND {b} cannot be redistributed together: {why}"
                 for left, right, why in INCOMPATIBLE for a in sorted(ids) for b in sorted(ids)
                 if a != b and left(a) and right(b)]
        if not found:
            return []
        reasons += [r for r in found if r not in reasons]
    return reasons


@dataclass
class LicenseInfo:
    """What the pipeline knows about one record's licence."""
    expression: str | None          # normalised SPDX expression, or None when unknown
    method: str                     # how it was determined, for the report and the card
    category: str = "unknown"
    problems: list[str] = field(default_factory=list)   # unparseable strings, conflicts
    conflict: bool = False          # declarations that disagree, or an AND of incompatible licences


def _from_free_text(text: str) -> tuple[str | None, str]:
    t = (text or "").strip()
    key = re.sub(r"\s+", " ", t.lower()).strip(" .")
    if key in ALIASES:
        return ALIASES[key], "alias"
    if key in AMBIGUOUS:
        return None, "ambiguous"
    if "\n" in t or len(t) > 80:       # a whole licence text
        head = "\n".join(t.splitlines()[:3])
        for pattern, spdx_id in TITLES:
            if pattern.search(head) and spdx_id:
                return spdx_id, "licence text title"
        return None, "licence text not recognised"
    expr, err = parse_spdx(t)
    return (expr, "spdx") if expr else (None, err or "unparseable")


def from_classifier(classifier: str) -> tuple[str | None, str]:
    """'License :: OSI Approved :: MIT License' -> ('MIT', 'alias'); ambiguous families -> (None, ...)."""
    last = classifier.split("::")[-1].strip()
    return _from_free_text(last)


def _equivalent(a: str, b: str) -> bool:
    return set(license_ids(a)) == set(license_ids(b)) or set(license_ids(b)) <= set(license_ids(a))


def resolve_declarations(expression: str | None = None, license_field: str | None = None,
                         classifiers: list[str] | tuple = ()) -> LicenseInfo:
    """Best SPDX expression from package-style metadata, how it was found, and any problems
    (the category is left "unknown": `normalize` fills it in)."""
    problems, vague, found = [], [], []   # found: (expression, method)
    if expression and expression.strip():
        expr, err = parse_spdx(expression)
        if expr:
            found.append((expr, "License-Expression (SPDX)"))
        else:
            problems.append(f"unparseable License-Expression {expression.strip()[:60]!r}: {err}")
    if license_field and license_field.strip() and license_field.strip().upper() != "UNKNOWN":
        expr, how = _from_free_text(license_field)
        if expr:
            found.append((expr, f"License field ({how})"))
        elif how not in ("ambiguous",):
            problems.append(f"unparseable License field {license_field.strip().splitlines()[0][:60]!r} ({how})")
    for c in classifiers or ():
        if c.startswith("License ::"):
            expr, how = from_classifier(c)
            if expr:
                found.append((expr, "classifier"))
            elif how == "ambiguous":
                vague.append(f"classifier {c!r} names a licence family, not a licence")
    if not found:
        problems += vague
        return LicenseInfo(None, "none declared" if not problems else "unresolved", "unknown",
                           problems or ["no licence declared"])
    expr, method = found[0]
    info = LicenseInfo(expr, method, "unknown", problems)
    for other, other_method in found[1:]:
        if not _equivalent(expr, other):
            info.conflict = True
            info.problems.append(f"conflict: {method} says {expr!r} but {other_method} says {other!r}")
    for why in incompatible(expr):
        info.conflict = True
        info.problems.append(f"incompatible licences: {why}")
    return info


def normalize(expression: str | None = None, license_field: str | None = None,
              classifiers: list[str] | tuple = (), *, classify: Callable[[str], str]) -> LicenseInfo:
    """`resolve_declarations`, with the category of the expression found given by `classify`
    (an SPDX expression -> one of CATEGORIES); no expression found: "unknown"."""
    info = resolve_declarations(expression, license_field, classifiers)
    if info.expression is not None:
        info.category = classify(info.expression)
    return info


@dataclass(frozen=True)
class Policy:
    """What the published dataset may contain: allowed categories; attribution kept in metadata.
    Per record the decision is keep, exclude or flag (lab 05's `decide(info, policy.allowed)`)."""
    allowed: frozenset = frozenset({"public-domain", "permissive"})
    keep_attribution: bool = True
    name: str = "permissive or public domain, attribution kept"


POLICIES = {
    "permissive or public domain, attribution kept": Policy(),
    "public domain only": Policy(frozenset({"public-domain"}), name="public domain only"),
    "anything but non-commercial": Policy(frozenset({"public-domain", "permissive", "copyleft"}),
                                          name="anything but non-commercial"),
    "research (non-commercial allowed)": Policy(frozenset({"public-domain", "permissive", "copyleft", "non-commercial"}),
                                                name="research (non-commercial allowed)"),
}
