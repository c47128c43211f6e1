"""The KQL front end: ``parse`` text to a syntax tree, ``to_kql`` a tree back to text."""

from typing import TYPE_CHECKING

from .syntax import (
    NOWHERE,
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
    Pos,
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

if TYPE_CHECKING:
    from .parser import parse
    from .printer import to_kql

__all__ = [
    "NOWHERE",
    "ArrayLit",
    "Assignment",
    "Between",
    "Binary",
    "BoolLit",
    "Call",
    "Datatable",
    "Distinct",
    "Expr",
    "Extend",
    "Index",
    "Let",
    "Name",
    "NumberLit",
    "Operator",
    "Pipeline",
    "Pos",
    "Project",
    "Query",
    "SetOp",
    "StringLit",
    "SubQuery",
    "Summarize",
    "TableRef",
    "Take",
    "TimespanLit",
    "Unary",
    "Where",
    "parse",
    "to_kql",
]


def __getattr__(name: str) -> object:
    """``parse`` and ``to_kql`` load Lark on first use, not when the syntax tree is imported."""
    if name == "parse":
        from .parser import parse

        return parse
    if name == "to_kql":
        from .printer import to_kql

        return to_kql
    raise AttributeError(name)
