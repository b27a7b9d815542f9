"""Build an nbgrader source notebook from a percent-format Python script.

An authoring aid for instructors who prefer an editor to JupyterLab's "Create
Assignment" toolbar. The notebook it writes is the source of truth afterwards.

    # %% [markdown]
    # Text, as markdown with the leading '# ' removed.
    # %%
    plain_code()                      # runs for everyone, not graded
    # %% solution id=softmax_kernel
    def f():                          # the learner's part sits between
        ### BEGIN SOLUTION            # BEGIN/END SOLUTION markers
        ...
        ### END SOLUTION
    # %% test id=test_softmax points=3
    checks.check_function(...)        # autograded; may hold ### BEGIN HIDDEN TESTS

Usage: python -m autograder build-notebook lab.py solutions/labXX/labXX.ipynb
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

HEADER = re.compile(r"^# %%(?P<rest>.*)$")


def _nbgrader_meta(kind: str, grade_id: str, points: float) -> dict:
    base = {"grade_id": grade_id, "schema_version": 3}
    if kind == "solution":
        return {**base, "solution": True, "grade": False, "locked": False}
    if kind == "test":
        return {**base, "solution": False, "grade": True, "locked": True, "points": points}
    if kind == "readonly":
        return {**base, "solution": False, "grade": False, "locked": True}
    raise ValueError(f"unknown cell kind {kind!r}")


def _parse_header(rest: str) -> tuple[str, dict]:
    words = rest.split()
    kind = words[0] if words and "=" not in words[0] else "code"
    options = dict(w.split("=", 1) for w in words if "=" in w)
    return kind, options


def build(script: str) -> nbformat.NotebookNode:
    blocks: list[tuple[str, list[str]]] = []
    for line in script.splitlines():
        match = HEADER.match(line)
        if match:
            blocks.append((match["rest"].strip(), []))
        elif blocks:
            blocks[-1][1].append(line)
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (header, lines) in enumerate(blocks):
        while lines and not lines[-1].strip():
            lines.pop()
        if header.startswith("[markdown]"):
            text = "\n".join(re.sub(r"^# ?", "", line) for line in lines)
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            kind, options = _parse_header(header)
            cell = nbformat.v4.new_code_cell("\n".join(lines))
            if kind != "code":
                cell.metadata["nbgrader"] = _nbgrader_meta(kind, options["id"], float(options.get("points", 0)))
        cell.id = f"cell-{index:03d}"  # stable ids keep regenerated notebooks diff-free
        nb.cells.append(cell)
    return nb


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    script, out = Path(argv[0]), Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build(script.read_text()), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
