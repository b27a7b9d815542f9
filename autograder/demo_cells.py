"""In a graded run, the cells that only show something are not run.

A lab teaches with cells that draw a plot, print a table or time a run on the learner's own
functions: the perplexity of every eviction policy, a throughput comparison, a table of edited
facts. Their output is for the learner in JupyterLab; the grade comes from the test cells only.
The instructor tags such a cell `demo` in solutions/, and in a graded run `SkipDemoCells` turns
it into a comment that says so: 245 s of the samples' 465 s of cells were such cells.

What keeps this safe:
- The tags are read from the instructor's notebook, never from the submission: a learner cannot
  make the grader skip anything else, and a tag a learner adds does nothing.
- A cell is skipped only if the learner left it exactly as released, and only if no cell after
  it that does run uses a name it binds (a learner's own code that reuses a demo's variable keeps
  that demo). A later cell that cannot be read as Python counts as using every name.
- Changing an earlier object counts as binding it (`results[k] = ...` binds `results`). What
  static reading cannot see, a method that changes its object (`model.train()`), is the
  instructor's promise with the tag; `tests/test_notebooks.py` checks that every tagged cell is a
  plain code cell that no later cell of the source needs, and the sample grades (the README's
  table, tested cell for cell) are those of the runs with the demos skipped.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import nbformat
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor

from . import config

TAG = "demo"
NOTE = ("# (not run by the grader: this cell only shows something, and no later cell needs it;\n"
        "#  run it in JupyterLab to see its output)\n")


def _python(source: str) -> ast.AST | None:
    """The cell's code as Python (IPython's %magics and !commands translated), or None."""
    from IPython.core.inputtransformer2 import TransformerManager
    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError):
        return None


def bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds or changes, at any depth: assignments, loop targets, defs,
    classes, imports, and the object under an item or attribute store (`x[i] = ...` changes x)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, (ast.Store, ast.Del)):
            root = node
            while isinstance(root, (ast.Subscript, ast.Attribute)):
                root = root.value
            if isinstance(root, ast.Name):
                names.add(root.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def _params(node) -> set[str]:
    a = node.args
    return {arg.arg for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if arg}


def free_names(node: ast.AST, bound: frozenset = frozenset()) -> set[str]:
    """The names `node` reads before binding them: what it takes from earlier cells. Statements
    bind in order; a loop or comprehension target before its body; a function's parameters and
    locals inside it. (A name bound in one branch of an `if` counts as bound after it.)"""
    if isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, ast.Load) and node.id not in bound else set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        outside = set().union(*(free_names(d, bound) for d in node.args.defaults + node.args.kw_defaults if d),
                              *(free_names(d, bound) for d in getattr(node, "decorator_list", [])))
        body = node.body if isinstance(node.body, list) else [node.body]
        inner = frozenset(bound | _params(node) | set().union(*(bound_names(s) for s in body)))
        return outside | set().union(*(free_names(s, inner) for s in body))
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        free, inner = set(), set(bound)
        for gen in node.generators:
            free |= free_names(gen.iter, frozenset(inner))
            inner |= bound_names(gen.target)
            free |= set().union(*(free_names(cond, frozenset(inner)) for cond in gen.ifs))
        results = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        return free | set().union(*(free_names(r, frozenset(inner)) for r in results))
    if isinstance(node, (ast.For, ast.AsyncFor)):
        inner = frozenset(bound | bound_names(node.target))
        return free_names(node.iter, bound) | free_names(ast.Module(node.body + node.orelse, []), inner)
    free, inner = set(), set(bound)
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Assign):  # the value is read before the targets are bound
            free |= free_names(child.value, frozenset(inner))
            free |= set().union(*(free_names(t, frozenset(inner)) for t in child.targets))
        else:
            free |= free_names(child, frozenset(inner))
        if isinstance(child, ast.stmt):
            inner |= bound_names(child)
    return free


@functools.lru_cache(maxsize=64)
def demo_sources(notebook_path: str) -> dict[str, str]:
    """{cell id: source} of the cells tagged `demo` in the instructor's notebook."""
    path = Path(notebook_path)
    if not path.exists():
        return {}
    nb = nbformat.read(path, as_version=4)
    return {cell.id: cell.source for cell in nb.cells
            if cell.cell_type == "code" and TAG in cell.metadata.get("tags", [])
            and not utils.is_grade(cell) and not utils.is_solution(cell)}


def skippable(cells, demos: dict[str, str]) -> set[int]:
    """Indices of the code cells in `cells` to skip: an unchanged demo whose bound names no later
    cell that runs reads. Decided from the last cell back, so a demo needed only by skipped demos
    is skipped too."""
    skip, needed = set(), set()
    everything = object()  # a later cell we cannot read needs every name
    for index in range(len(cells) - 1, -1, -1):
        cell = cells[index]
        if cell.cell_type != "code":
            continue
        tree = _python(cell.source)
        is_demo = demos.get(cell.get("id")) == cell.source and not utils.is_grade(cell) and not utils.is_solution(cell)
        if is_demo and tree is not None and needed is not everything and not (bound_names(tree) & needed):
            skip.add(index)
        elif tree is None:
            needed = everything
        elif needed is not everything:
            needed |= free_names(tree)
    return skip


def commented(source: str) -> str:
    return NOTE + "\n".join("# " + line if line else "#" for line in source.split("\n"))


class SkipDemoCells(NbGraderPreprocessor):
    """Comment out, in a graded run, the instructor's `demo` cells that nothing later needs."""

    def preprocess(self, nb, resources):
        info = resources.get("nbgrader", {})
        source = config.ROOT / config.SOURCE_DIR / info.get("assignment", "") / f"{info.get('notebook', '')}.ipynb"
        demos = demo_sources(str(source)) if info.get("assignment") else {}
        for index in skippable(nb.cells, demos):
            nb.cells[index].source = commented(nb.cells[index].source)
        return nb, resources
