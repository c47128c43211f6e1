"""Syntax tree back to KQL text, such that ``parse(to_kql(tree)) == tree``.

Parentheses are not kept in the tree, so the printer adds them wherever precedence or left
associativity needs them, and always around an ``and`` inside an ``or`` (or the reverse), which
is easier to read. It works from an explicit stack rather than by recursion, so the 5000-deep
``or`` chains the parser accepts print as easily as they parse.
"""

from __future__ import annotations

import re

from .parser import KEYWORDS
from .syntax import (
    ArrayLit,
    Assignment,
    Between,
    Binary,
    BoolLit,
    Call,
    Datatable,
    Distinct,
    Expr,
    Extend,
    Index,
    Let,
    Name,
    NumberLit,
    Operator,
    Pipeline,
    Project,
    Query,
    SetOp,
    StringLit,
    SubQuery,
    Summarize,
    TableRef,
    Take,
    TimespanLit,
    Unary,
    Where,
)

__all__ = ["to_kql"]

Node = Query | Let | Pipeline | TableRef | Datatable | Operator | Assignment | Expr

# Binding strength, loosest first; a child binding looser than its slot needs parentheses.
_OR, _AND, _PREDICATE, _SUM, _PRODUCT, _UNARY, _POSTFIX = range(1, 8)
_STRING_OPS = {
    f"{negation}{word}{suffix}"
    for negation in ("", "!")
    for word in ("has", "contains", "startswith", "endswith", "hasprefix", "hassuffix")
    for suffix in ("", "_cs")
}
_BINDING = {
    "or": _OR,
    "and": _AND,
    **dict.fromkeys(("==", "!=", "=~", "!~", "<", "<=", ">", ">="), _PREDICATE),
    **dict.fromkeys(("matches regex", *_STRING_OPS), _PREDICATE),
    **dict.fromkeys(("+", "-"), _SUM),
    **dict.fromkeys(("*", "/", "%"), _PRODUCT),
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
_TO_ESCAPE = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")

# A printing step: text, or a node to print, with parentheses when the flag is set.
Part = str | tuple[Node, bool]


def to_kql(node: Node) -> str:
    """Print a query, a pipeline, an operator or an expression as KQL."""
    out: list[str] = []
    stack: list[Part] = [(node, False)]
    while stack:
        part = stack.pop()
        if isinstance(part, str):
            out.append(part)
            continue
        child, parenthesise = part
        parts = _parts(child)
        if parenthesise:
            parts = ["(", *parts, ")"]
        stack.extend(reversed(parts))
    return "".join(out)


def _binding(expr: Expr) -> int:
    if isinstance(expr, Binary):
        if expr.op not in _BINDING:
            raise ValueError(f"cannot print the operator {expr.op!r}")
        return _BINDING[expr.op]
    if isinstance(expr, SetOp | Between):
        return _PREDICATE
    if isinstance(expr, Unary):
        return _UNARY
    return _POSTFIX


def _at_least(expr: Expr, binding: int) -> Part:
    return (expr, _binding(expr) < binding)


def _logical(expr: Binary) -> list[Part]:
    """``and``/``or``: the left side may continue the same chain; any other mix is parenthesised."""
    left_continues = isinstance(expr.left, Binary) and expr.left.op == expr.op
    left = (expr.left, not left_continues and _binding(expr.left) < _PREDICATE)
    return [left, f" {expr.op} ", _at_least(expr.right, _PREDICATE)]


def _binary(expr: Binary) -> list[Part]:
    if expr.op in ("and", "or"):
        return _logical(expr)
    binding = _binding(expr)
    # Comparisons do not chain; arithmetic is left-associative.
    left = binding + 1 if binding == _PREDICATE else binding
    return [_at_least(expr.left, left), f" {expr.op} ", _at_least(expr.right, binding + 1)]


def _list(items: tuple[Node, ...], separator: str = ", ") -> list[Part]:
    parts: list[Part] = []
    for item in items:
        if parts:
            parts.append(separator)
        parts.append((item, False))
    return parts


def _pipeline(pipeline: Pipeline, separator: str) -> list[Part]:
    parts: list[Part] = [(pipeline.source, False)]
    for operator in pipeline.operators:
        parts += [separator, (operator, False)]
    return parts


def _parts(node: Node) -> list[Part]:
    match node:
        case Query(lets=lets, body=body):
            parts: list[Part] = []
            for let in lets:
                parts += [(let, False), ";\n"]
            return [*parts, (body, False)]
        case Let(name=name, value=value):
            return [f"let {name} = ", (value, False)]
        case Pipeline():
            return _pipeline(node, "\n| ")
        case TableRef(name=name):
            return [name]
        case Datatable(columns=columns, values=values):
            header = ", ".join(f"{_name(column)}:{type_name}" for column, type_name in columns)
            parts = [f"datatable({header})["]
            for start in range(0, len(values), len(columns)):
                parts += ["\n    ", *_list(values[start : start + len(columns)])]
                parts.append("," if start + len(columns) < len(values) else "\n")
            return [*parts, "]"]
        case Where(predicate=predicate):
            return ["where ", (predicate, False)]
        case Summarize(aggregates=aggregates, by=by):
            parts = ["summarize", " " if aggregates else "", *_list(aggregates)]
            return [*parts, " by ", *_list(by)] if by else parts
        case Project(columns=columns):
            return ["project ", *_list(columns)]
        case Extend(columns=columns):
            return ["extend ", *_list(columns)]
        case Distinct(columns=columns):
            return ["distinct ", *_list(columns)]
        case Take(count=count):
            return [f"take {count}"]
        case Assignment(name=None, expr=expr):
            return [(expr, False)]
        case Assignment(name=str(name), expr=expr):
            return [f"{_name(name)}=", (expr, False)]
        case StringLit(value=value, verbatim=verbatim):
            return [_string(value, verbatim)]
        case NumberLit(value=value):
            return [str(value)]
        case TimespanLit(text=text):
            return [text]
        case BoolLit(value=value):
            return ["true" if value else "false"]
        case Name(name=name):
            return [_name(name)]
        case Call(function=function, args=args):
            return [f"{function}(", *_list(args), ")"]
        case ArrayLit(items=items):
            return ["[", *_list(items), "]"]
        case Unary(op=op, operand=operand):
            return [op, _at_least(operand, _UNARY)]
        case Binary():
            return _binary(node)
        case SetOp(op=op, left=left, items=items):
            return [_at_least(left, _SUM), f" {op} (", *_list(items), ")"]
        case Between(left=left, low=low, high=high, negated=negated):
            op = "!between" if negated else "between"
            bounds = [_at_least(low, _SUM), " .. ", _at_least(high, _SUM)]
            return [_at_least(left, _SUM), f" {op} (", *bounds, ")"]
        case Index(target=target, index=index):
            return [_at_least(target, _POSTFIX), "[", (index, False), "]"]
        case SubQuery(pipeline=pipeline):
            return ["(", *_pipeline(pipeline, " | "), ")"]
    raise TypeError(f"not a KQL syntax node: {node!r}")


def _name(name: str) -> str:
    """A bare identifier when the lexer would read it back as one, else ``['...']``."""
    if _IDENTIFIER.fullmatch(name) and name not in KEYWORDS:
        return name
    return f"[{_string(name, verbatim=False)}]"


def _string(value: str, verbatim: bool) -> str:
    if verbatim:
        if "\n" in value or "\r" in value:
            raise ValueError("a verbatim string cannot hold a line break")
        return "@'" + value.replace("'", "''") + "'"
    return "'" + _TO_ESCAPE.sub(lambda match: _ESCAPES[match.group()], value) + "'"
