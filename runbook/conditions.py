"""Conditions on a measured value (``"result < 0.01"``), parsed and walked, never ``eval``-ed.

A canary's success and failure conditions come from a runbook file, which an approver reads but
does not run: only comparisons of ``result`` with numbers, chained, combined with ``and`` / ``or``
/ ``not`` are accepted, so a condition cannot smuggle code into the decision to promote.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Condition", "ConditionError"]

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class ConditionError(ValueError):
    """A condition string uses something other than ``result``, numbers and comparisons."""


def _check(node: ast.AST, text: str) -> None:
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, text)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check(node.operand, text)
    elif isinstance(node, ast.Compare):
        if not all(type(op) in _COMPARE for op in node.ops):
            raise ConditionError(f"{text!r}: only <, <=, >, >=, ==, != compare")
        for operand in (node.left, *node.comparators):
            _operand(operand, text)
    else:
        raise ConditionError(
            f"{text!r}: expected comparisons of result with numbers "
            f"(joined by and/or/not), got {ast.unparse(node)!r}"
        )


def _operand(node: ast.AST, text: str) -> None:
    shown = node
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    if isinstance(node, ast.Name) and node.id == "result":
        return
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return
    raise ConditionError(f"{text!r}: {ast.unparse(shown)!r} is neither result nor a number")


def _eval(node: ast.AST, result: float) -> Any:
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, result) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        inner = _eval(node.operand, result)
        if isinstance(node.op, ast.Not):
            return not inner
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Compare):
        left = _eval(node.left, result)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, result)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Name):
        return result
    assert isinstance(node, ast.Constant)
    return node.value


@dataclass(frozen=True)
class Condition:
    """A parsed condition on ``result``; ``holds(value)`` walks the tree (no ``eval``)."""

    text: str
    tree: ast.expr = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: Any) -> Condition:
        if not isinstance(text, str) or not text.strip():
            raise ConditionError(f"a condition must be a non-empty string, got {text!r}")
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ConditionError(f"{text!r} is not a condition: {exc.msg}") from None
        _check(tree, text)
        if not any(isinstance(n, ast.Name) for n in ast.walk(tree)):
            raise ConditionError(f"{text!r} does not look at result")
        return cls(text.strip(), tree)

    def holds(self, value: float) -> bool:
        """Whether ``value`` passes: evaluated on the parsed expression, never with ``eval``."""
        return bool(_eval(self.tree, value))
