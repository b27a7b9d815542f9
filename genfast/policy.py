"""The code policy for learner-editable cells, checked on their syntax tree.

A graded cell must earn its points with its own code. The grader checks every cell a
learner can edit (solution cells, and any other cell that differs from the released lab)
and a finding costs that part: the cell is replaced by stubs that raise `PolicyViolation`
with the line and the reason, so its checks fail with that message. Run the same policy
yourself before submitting:

    python -m genfast.policy lab00_triton_warmup.ipynb

The rules:
- imports only from an allowlist (torch, triton, math, numpy, numba, genfast, ... and what
  a lab really needs, each with its reason), never the instructor's `kernels` or `autograder`;
- no assignment to, or deletion of, an attribute or item of anything imported (patching
  `torch.allclose`, `checks.compare`, `torch.cuda.Event.elapsed_time`, a dict of a module);
- no dunder names or attributes (`__import__`, `x.__class__`, `__builtins__`), no `eval`,
  `exec`, `compile`, `globals`, `vars`, `locals`, `setattr`, `delattr`, `getattr` with a
  computed name, `open`, `breakpoint`, `get_ipython`, IPython's history (`In`, `Out`, `_ih`),
  and no attributes that lead to the interpreter's machinery (`.modules`, `.f_back`, ...).

It is a policy, not a sandbox: the sandbox (no network, read-only files, hidden solutions)
is what contains code; the policy is what keeps a notebook's own checks honest.
"""
from __future__ import annotations

import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# Modules any lab may import (a prefix allows its submodules).
ALLOWED_IMPORTS = {
    "torch": "the labs are written in PyTorch",
    "triton": "the kernels are Triton",
    "numba": "lab00's CUDA kernel is numba-cuda",
    "numpy": "array helpers",
    "math": "scalar math",
    "genfast": "the course's checks, models and environments (no answers in it)",
    "matplotlib": "plots",
    "functools": "functools.partial and caching",
    "itertools": "iteration helpers",
    "collections": "Counter, defaultdict, deque",
    "dataclasses": "small records",
    "typing": "type hints",
    "heapq": "priority queues (beam search, top-k)",
    "random": "seeded randomness",
    "string": "character classes",
    "operator": "operator functions",
}

# What one lab needs beyond ALLOWED_IMPORTS, each with the reason beside it.
LAB_IMPORTS: dict[str, dict[str, str]] = {
    "lab02_attention": {
        "time": "the cost cell times naive attention with time.perf_counter",
    },
    "lab05_dataset_cards": {
        "re": "regular expressions: the Gutenberg markers and e-mail addresses (strip_gutenberg_header, scrub_emails)",
        "license_expression": "the SPDX parse tree that classify walks (AND, OR, LicenseWithExceptionSymbol)",
    },
    "lab06_agents": {
        "ast": "the calculator parses arithmetic without eval",
        "json": "tool calls are JSON",
        "re": "regular expressions, if you tokenise or parse text your own way",
        "time": "timing the sandbox's limits and the evaluation; tools that sleep in the loop's checks",
    },
}

NEVER = ("kernels", "autograder", "solutions")  # the instructor side, whatever a lab allows

FORBIDDEN_CALLS = {
    "eval", "exec", "compile", "__import__", "globals", "vars", "locals", "setattr", "delattr",
    "open", "breakpoint", "get_ipython", "exit", "quit",
}
# IPython's history and namespace: a function could read the test cell that called it.
FORBIDDEN_NAMES = {"In", "Out", "_ih", "_oh", "_dh", "_i", "_ii", "_iii", "get_ipython", "__builtins__"}
HISTORY_NAME = re.compile(r"^_(i|ii|iii|i\d+|\d+)$")
# Attributes that lead from an ordinary object to modules, frames or the interpreter.
FORBIDDEN_ATTRIBUTES = {
    "modules", "sys", "os", "gc", "builtins", "importlib", "inspect", "ctypes", "subprocess",
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame", "tb_next", "gi_frame",
    "cr_frame", "ag_frame", "gi_code", "co_consts", "user_ns", "user_global_ns", "shell",
    "system", "popen", "load_module", "exec_module", "import_module", "loader", "spec",
}
GRADER_PREFIX = "GRADER"  # names the grader binds for hidden tests
# Dunder attributes that honest code uses and that lead nowhere (`type(x).__name__`,
# `super().__init__()`); every other dunder (`__globals__`, `__class__`, `__subclasses__`,
# `__dict__`, `__code__`, ...) is a way into the interpreter.
SAFE_DUNDERS = {"__init__", "__name__", "__qualname__", "__doc__", "__len__", "__iter__", "__next__",
                "__enter__", "__exit__", "__repr__", "__str__", "__call__", "__getitem__", "__contains__",
                "__post_init__"}


class PolicyViolation(RuntimeError):
    """Raised by a graded function whose cell broke the code policy (it was not graded)."""


@dataclass
class Finding:
    line: int
    code: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: `{self.code}` {self.reason}"


def allowed_imports(lab: str | None) -> dict[str, str]:
    return {**ALLOWED_IMPORTS, **LAB_IMPORTS.get(lab or "", {})}


def _import_ok(module: str, allowed: dict[str, str]) -> bool:
    if module.split(".")[0] in NEVER:
        return False
    return any(module == name or module.startswith(name + ".") for name in allowed)


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class _Visitor(ast.NodeVisitor):
    def __init__(self, allowed: dict[str, str], lines: list[str]):
        self.allowed, self.lines = allowed, lines
        self.imported: set[str] = set()   # names bound by an import: modules and what they export
        self.imported_elsewhere: set[str] = set()  # ... by other cells (the lab's own imports)
        self.findings: list[Finding] = []

    def flag(self, node: ast.AST, reason: str) -> None:
        line = getattr(node, "lineno", 1)
        code = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        self.findings.append(Finding(line, code[:100], reason))

    # imports -----------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not _import_ok(alias.name, self.allowed):
                self.flag(node, f"imports {alias.name}, which graded cells may not use")
            self.imported.add((alias.asname or alias.name).split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or not _import_ok(module, self.allowed):
            self.flag(node, f"imports from {'.' * node.level}{module}, which graded cells may not use")
        for alias in node.names:
            if alias.name == "*":
                self.flag(node, "uses `import *` (name what you import)")
            self.imported.add(alias.asname or alias.name)

    # names, attributes, calls -------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if _dunder(node.id) or node.id in FORBIDDEN_NAMES or HISTORY_NAME.match(node.id):
            self.flag(node, f"uses `{node.id}`, which reaches the interpreter or the notebook's history")
        elif node.id.startswith(GRADER_PREFIX):
            self.flag(node, f"uses `{node.id}`, a name reserved for the grader")
        elif node.id in FORBIDDEN_CALLS:
            self.flag(node, f"uses `{node.id}`, which graded cells may not use")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _dunder(node.attr) and node.attr not in SAFE_DUNDERS:
            self.flag(node, f"reads the dunder attribute `.{node.attr}`")
        elif node.attr in FORBIDDEN_ATTRIBUTES:
            self.flag(node, f"reads `.{node.attr}`, which leads to the interpreter's machinery")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "getattr":
            name = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                self.flag(node, "calls getattr with a computed name")
            elif _dunder(name.value) or name.value in FORBIDDEN_ATTRIBUTES:
                self.flag(node, f"reads `{name.value}` through getattr")
            for arg in node.args[2:]:
                self.visit(arg)
            self.visit(node.args[0]) if node.args else None
            return
        self.generic_visit(node)

    # writes into imported things ----------------------------------------------------
    def _check_target(self, target: ast.AST, verb: str) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._check_target(elt, verb)
        elif isinstance(target, ast.Starred):
            self._check_target(target.value, verb)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            root = _root_name(target)
            if root in self.imported or isinstance(target, ast.Attribute) and root is None:
                self.flag(target, f"{verb} an attribute or item of `{root or 'an expression'}`, "
                                  f"which was imported: graded cells may not patch what they import")
        elif isinstance(target, ast.Name) and target.id in self.imported and verb == "deletes":
            self.flag(target, f"deletes the imported name `{target.id}`")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_target(target, "assigns to")
            for name in _bound_names(target):
                self._check_rebinding(target, name)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target, "modifies")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_target(node.target, "assigns to")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._check_target(target, "deletes")
        self.generic_visit(node)

    def _check_rebinding(self, node: ast.AST, name: str) -> None:
        if name in self.imported_elsewhere:
            self.flag(node, f"rebinds `{name}`, which the lab imports: graded cells may not replace it")

    def visit_FunctionDef(self, node) -> None:
        self._check_rebinding(node, node.name)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            if name.startswith(GRADER_PREFIX) or _dunder(name):
                self.flag(node, f"rebinds `{name}`")


def _python_source(source: str) -> str:
    """Cell source as Python: IPython magics (`%time`, `!ls`) become the calls they stand for."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(source)
    except Exception:  # IPython missing or the transform failed: parse the text as it is
        return source


def imported_names(source: str) -> set[str]:
    """Names that a cell's import statements bind."""
    try:
        tree = ast.parse(_python_source(source))
    except SyntaxError:
        return set()
    return {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}


def check_source(source: str, lab: str | None = None, imported: set[str] = frozenset()) -> list[Finding]:
    """Findings in one cell's code (an empty list: the cell follows the policy).

    `imported`: names that other cells of the notebook import (patching them is patching too).
    """
    code = _python_source(source)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []  # not Python: it fails on its own when run, with Python's own message
    visitor = _Visitor(allowed_imports(lab), code.splitlines())
    # every import first, so a patch above its import line is still seen as a patch
    visitor.imported |= set(imported) | imported_names(source)
    visitor.imported_elsewhere = set(imported) - imported_names(source)
    visitor.visit(tree)
    return sorted(visitor.findings, key=lambda f: f.line)


def _bound_names(target: ast.AST) -> list[str]:
    """Plain names an assignment target binds (`a, b = ...`), not the roots of `a.x = ...`."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _bound_names(elt)]
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    return []


def top_level_names(source: str) -> list[str]:
    """The names a cell defines at top level (functions, classes, assignments)."""
    try:
        tree = ast.parse(_python_source(source))
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names += _bound_names(target)
    return list(dict.fromkeys(n for n in names if n.isidentifier()))


class _Stub:
    """Stands in for a name defined by a cell that broke the policy: calling it, indexing it
    (a Triton kernel's `kernel[grid]`) or reading an attribute raises PolicyViolation."""

    def __init__(self, name: str, why: str):
        self._name, self._why = name, why

    def _raise(self, *args, **kwargs):
        raise PolicyViolation(f"`{self._name}` was not graded: its cell breaks the code policy ({self._why}). "
                              f"Remove that line and resubmit.")

    __call__ = _raise

    def __getitem__(self, item):
        self._raise()

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        self._raise()


def stub(name: str, why: str) -> _Stub:
    return _Stub(name, why)


def stub_cell(source: str, findings: list[Finding], keep: set[str] = frozenset()) -> str:
    """Code that replaces a violating cell: every name it defined becomes a stub, except the
    names in `keep` (what the lab itself imports: a cell that rebound `lab` does not get to
    take the lab's checks down with it)."""
    why = str(findings[0]) + (f" and {len(findings) - 1} more" if len(findings) > 1 else "")
    lines = ["from genfast.policy import stub as _policy_stub"]
    lines += [f"{name} = _policy_stub({name!r}, {why!r})" for name in top_level_names(source) if name not in keep]
    lines.append("del _policy_stub")
    return "\n".join(lines)


# Notebooks ------------------------------------------------------------------------
def _learner_cells(nb: dict, released: dict | None):
    """(index, cell) of every code cell a learner may have written: solution cells, and
    unlocked cells that differ from the released lab's cell with the same id."""
    released_sources = {}
    if released is not None:
        released_sources = {c.get("id"): _text(c["source"]) for c in released["cells"] if c["cell_type"] == "code"}
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("locked") or (meta.get("grade") and not meta.get("solution")):
            continue  # locked and test cells are restored from the release by nbgrader
        if meta.get("solution") or released is None or released_sources.get(cell.get("id")) != _text(cell["source"]):
            yield i, cell


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def check_notebook(nb: dict, lab: str | None = None, released: dict | None = None) -> list[tuple[int, str, list[Finding]]]:
    """(cell index, cell label, findings) for every learner cell that breaks the policy."""
    report = []
    learner = dict(_learner_cells(nb, released))
    # what the lab's own cells import (patching or replacing those is tampering)
    lab_cells = released["cells"] if released is not None else [c for i, c in enumerate(nb["cells"]) if i not in learner]
    imported = set().union(*(imported_names(_text(c["source"])) for c in lab_cells if c["cell_type"] == "code"))
    for i, cell in learner.items():
        findings = check_source(_text(cell["source"]), lab, imported)
        if findings:
            label = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or f"cell {i + 1}"
            report.append((i, label, findings))
    return report


def report(path: str | Path, lab: str | None = None) -> bool:
    """Print what the grader's policy finds in a notebook; True when it finds nothing."""
    path = Path(path)
    if not path.exists():
        print(f"{path} not found: run this from the lab's folder, with the notebook saved.")
        return False
    lab = lab or path.stem
    found = check_notebook(json.loads(path.read_text()), lab)
    if not found:
        print(f"{path.name}: every cell follows the code policy.")
        return True
    for _, label, findings in found:
        for f in findings:
            print(f"{path.name}, {label}, {f}")
    print(f"\nEach cell above would be graded 0: it is replaced by stubs that say why.")
    return False


if __name__ == "__main__":
    ok = all([report(p) for p in sys.argv[1:]]) if len(sys.argv) > 1 else sys.exit(__doc__)
    sys.exit(0 if ok else 1)
