"""The KQL syntax tree: small frozen dataclasses with positions.

Positions (1-based line and column in the parsed text) never take part in equality, so a tree
printed and parsed again compares equal to the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
]


@dataclass(frozen=True)
class Pos:
    line: int
    column: int


NOWHERE = Pos(0, 0)


def _pos() -> Pos:
    return field(default=NOWHERE, compare=False, repr=False)


# ---------------------------------------------------------------- scalar expressions


@dataclass(frozen=True)
class StringLit:
    """A string literal; ``verbatim`` records the ``@'...'`` form (backslashes are literal)."""

    value: str
    verbatim: bool = False
    pos: Pos = _pos()


@dataclass(frozen=True)
class NumberLit:
    value: int | float
    pos: Pos = _pos()


@dataclass(frozen=True)
class TimespanLit:
    """``5d``, ``1h``, ``30m``: kept as text, the model converts it."""

    text: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class BoolLit:
    value: bool
    pos: Pos = _pos()


@dataclass(frozen=True)
class Name:
    """A column, a ``let`` variable or a table name used as a value."""

    name: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class Call:
    """``now(-5d)``, ``isempty(x)``, ``min(Timestamp)``, ``dynamic([...])``, ``not(...)``."""

    function: str
    args: tuple[Expr, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class ArrayLit:
    """``[a, b]`` inside ``dynamic(...)``."""

    items: tuple[Expr, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Unary:
    """``-5d``, ``-1``."""

    op: str
    operand: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class Binary:
    """``and``, ``or``, comparisons and string operators with one right operand.

    ``op`` is the operator as written in lower case (``has``, ``!has``, ``has_cs``, ``==``,
    ``=~``, ``contains``, ``startswith_cs``, ``and``, ``or``, ``<``, ``+`` ...).
    """

    op: str
    left: Expr
    right: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class SetOp:
    """Operators whose right side is a list: ``in``, ``!in``, ``in~``, ``!in~``, ``has_any``,
    ``has_all``. ``items`` holds scalar expressions or one ``SubQuery``."""

    op: str
    left: Expr
    items: tuple[Expr, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Between:
    """``x between (low .. high)`` and ``!between``."""

    left: Expr
    low: Expr
    high: Expr
    negated: bool = False
    pos: Pos = _pos()


@dataclass(frozen=True)
class Index:
    """``split(x, '/')[0]``."""

    target: Expr
    index: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class SubQuery:
    """A tabular expression used as a value list: ``(rmm_networkSet | distinct URI)``."""

    pipeline: Pipeline
    pos: Pos = _pos()


Expr = (
    StringLit
    | NumberLit
    | TimespanLit
    | BoolLit
    | Name
    | Call
    | ArrayLit
    | Unary
    | Binary
    | SetOp
    | Between
    | Index
    | SubQuery
)


# ---------------------------------------------------------------- tabular operators


@dataclass(frozen=True)
class Assignment:
    """``name = expr`` in ``summarize``, ``extend``, ``project``; ``name`` is None when absent."""

    name: str | None
    expr: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class Where:
    predicate: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class Summarize:
    aggregates: tuple[Assignment, ...]
    by: tuple[Assignment, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Project:
    columns: tuple[Assignment, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Extend:
    columns: tuple[Assignment, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Distinct:
    columns: tuple[Expr, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Take:
    """``take n`` and ``limit n``."""

    count: int
    pos: Pos = _pos()


Operator = Where | Summarize | Project | Extend | Distinct | Take


# ---------------------------------------------------------------- tabular sources and queries


@dataclass(frozen=True)
class TableRef:
    """A table or a tabular ``let`` name at the head of a pipeline."""

    name: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class Datatable:
    """``datatable(URI:string, Tool:string)[ 'a', 'b', ... ]``: values row-major."""

    columns: tuple[tuple[str, str], ...]
    values: tuple[Expr, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Pipeline:
    source: TableRef | Datatable
    operators: tuple[Operator, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Let:
    """``let name = value;`` where value is a scalar expression or a tabular pipeline."""

    name: str
    value: Expr | Pipeline
    pos: Pos = _pos()


@dataclass(frozen=True)
class Query:
    lets: tuple[Let, ...]
    body: Pipeline
    pos: Pos = _pos()
