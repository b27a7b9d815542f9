"""The reference calculator (lab 06's graded `calculate`), and the course's tools built on it.

The calculator evaluates arithmetic by walking Python's syntax tree, allowing only numbers and the
operators + - * / // % ** (with a bound on exponents), unary minus and parentheses. `eval` would
happily run `__import__('os').system(...)`; a whitelist over the tree cannot. Arithmetic alone can
still be abused through size, so it also bounds the expression's length (MAX_EXPRESSION) and every
result (an int of more than MAX_RESULT_DIGITS digits, a float OverflowError), and refuses complex
results ((-8)**0.5): `((9**64)**64)**64` has every exponent within the limit and would have about
250,000 digits. Lab 06's spec asks for the same bounds.

The tool machinery itself (Tool, schemas, the Toolbox that turns every outcome into an
observation) is the learner's `genfast.agents.tools`; it is re-exported here so that instructor
code can use one module.
"""
from __future__ import annotations

import ast
import operator

from genfast.agents.tools import (MAX_EXPONENT, MAX_EXPRESSION, MAX_OBSERVATION, MAX_RESULT_DIGITS,  # noqa: F401
                                  Tool, ToolError, Toolbox, format_number, schema)
from genfast.agents import tools as _tools

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def calculate(expression: str):
    """The value (int or float) of an arithmetic expression; ToolError on anything else."""
    if not isinstance(expression, str):
        raise ToolError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ToolError(f"not a valid expression: {e.msg}") from None
    return _eval(tree.body)


def _eval(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(b) > MAX_EXPONENT:
            raise ToolError(f"exponent {b} too large (the limit is {MAX_EXPONENT})")
        try:
            value = _BINOPS[type(node.op)](a, b)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("result too large") from None
        if isinstance(value, complex):
            raise ToolError("complex result (a negative number to a fractional power)")
        if isinstance(value, int) and value.bit_length() > MAX_RESULT_DIGITS * 3.33:
            raise ToolError(f"result has more than {MAX_RESULT_DIGITS} digits")
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        raise ToolError(f"names are not allowed: {node.id!r} (only numbers and + - * / // % **)")
    if isinstance(node, ast.Call):
        raise ToolError("function calls are not allowed (only numbers and + - * / // % **)")
    if isinstance(node, ast.Attribute):
        raise ToolError(f"attribute access is not allowed: .{node.attr}")
    raise ToolError(f"{type(node).__name__} is not allowed (only numbers and + - * / // % **)")


def calculator_tool() -> Tool:
    """The calculator tool with the reference `calculate`."""
    return _tools.calculator_tool(calculate)


def default_toolbox(with_python: bool = True, with_search: bool = True, search_index=None) -> Toolbox:
    """calculator, python (sandboxed) and search over the course notes, all with the references."""
    found = [calculator_tool()]
    if with_python:
        from genfast.agents.pysandbox import python_tool
        found.append(python_tool())
    if with_search:
        from .retrieval import search_tool
        found.append(search_tool(search_index))
    return Toolbox.of(*found)
