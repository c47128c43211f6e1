"""The KQL syntax tree: small frozen dataclasses with positions.

Positions (1-based line and column in the parsed text) never take part in equality, so a tree
printed and parsed again compares equal to the original.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import UnsupportedKqlError

__all__ = [
    "NOWHERE",
    "ArrayLit",
    "As",
    "Assignment",
    "Between",
    "Binary",
    "BoolLit",
    "Call",
    "Consume",
    "Count",
    "Datatable",
    "DeclareParameters",
    "Distinct",
    "Evaluate",
    "ExpandColumn",
    "Expr",
    "Extend",
    "Externaldata",
    "Facet",
    "Find",
    "Fork",
    "ForkBranch",
    "FunctionDef",
    "FunctionParam",
    "GetSchema",
    "Index",
    "Invoke",
    "Join",
    "Let",
    "Lookup",
    "MakeSeries",
    "Member",
    "MvApply",
    "MvExpand",
    "Name",
    "NullLit",
    "NumberLit",
    "ObjectLit",
    "Operator",
    "Option",
    "Parse",
    "ParseColumn",
    "ParseKv",
    "ParseWhere",
    "Partition",
    "Pipeline",
    "Pos",
    "Print",
    "Project",
    "ProjectAway",
    "ProjectKeep",
    "ProjectRename",
    "ProjectReorder",
    "Query",
    "Range",
    "Reduce",
    "Render",
    "Sample",
    "SampleDistinct",
    "Scan",
    "ScanStep",
    "Search",
    "Serialize",
    "SeriesAggregate",
    "SetOp",
    "SetOption",
    "Sort",
    "SortKey",
    "Source",
    "StringLit",
    "SubQuery",
    "Summarize",
    "TableRef",
    "Take",
    "TimespanLit",
    "Top",
    "TopHitters",
    "TopNested",
    "TopNestedLevel",
    "TupleAssignment",
    "TypedLit",
    "Unary",
    "Union",
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
    """A tabular expression used as a value: ``(rmm_networkSet | distinct URI)``,
    ``materialize(T | where x)``, ``toscalar(T | count)``."""

    pipeline: Pipeline
    pos: Pos = _pos()


@dataclass(frozen=True)
class Member:
    """``x.y``: ``$left.DeviceId``, ``parse_json(x).Foo``, ``AdditionalFields.Bar``."""

    target: Expr
    name: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class TypedLit:
    """A literal whose text Kusto reads by type: ``datetime(2021-01-01)``, ``long(null)``,
    ``timespan(1d)``, ``guid(...)``; ``text`` is what stands between the parentheses, trimmed."""

    type_name: str
    text: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class NullLit:
    """``null`` inside ``dynamic(...)``."""

    pos: Pos = _pos()


@dataclass(frozen=True)
class ObjectLit:
    """``{"a": 1, "b": [2]}`` inside ``dynamic(...)``."""

    items: tuple[tuple[str, Expr], ...]
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
    | Member
    | TypedLit
    | NullLit
    | ObjectLit
)


# ---------------------------------------------------------------- tabular operators


@dataclass(frozen=True)
class Assignment:
    """``name = expr`` in ``summarize``, ``extend``, ``project``; ``name`` is None when absent."""

    name: str | None
    expr: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class TupleAssignment(Assignment):
    """``(a, b) = arg_max(x, y)``: one expression naming several columns; ``name`` is None."""

    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Where:
    keyword: ClassVar[str] = "where"
    predicate: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class Summarize:
    keyword: ClassVar[str] = "summarize"
    aggregates: tuple[Assignment, ...]
    by: tuple[Assignment, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Project:
    keyword: ClassVar[str] = "project"
    columns: tuple[Assignment, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Extend:
    keyword: ClassVar[str] = "extend"
    columns: tuple[Assignment, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Distinct:
    keyword: ClassVar[str] = "distinct"
    columns: tuple[Assignment, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Take:
    """``take n`` and ``limit n``."""

    keyword: ClassVar[str] = "take"

    count: int
    pos: Pos = _pos()


Option = tuple[str, str]
"""An operator parameter as written: ``("kind", "leftanti")``, ``("hint.strategy", "shuffle")``."""


@dataclass(frozen=True)
class SortKey:
    """``expr [asc|desc] [nulls first|last]`` in ``sort``, ``top``, ``project-reorder``."""

    expr: Expr
    order: str | None = None
    nulls: str | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class Sort:
    """``sort by`` and its synonym ``order by``."""

    keyword: ClassVar[str] = "sort"
    by: tuple[SortKey, ...]
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Top:
    keyword: ClassVar[str] = "top"
    count: Expr
    by: SortKey
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class TopNestedLevel:
    """``top-nested [n] of expr [with others = x] by aggregate [asc|desc]``."""

    count: Expr | None
    of: Assignment
    others: Expr | None
    by: Assignment
    order: str | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class TopNested:
    keyword: ClassVar[str] = "top-nested"
    levels: tuple[TopNestedLevel, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Join:
    """``join kind=... (right) on a, $left.b == $right.c``; ``params`` holds all but ``kind``."""

    keyword: ClassVar[str] = "join"
    kind: str | None
    right: Pipeline
    on: tuple[Expr, ...] = ()
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Lookup:
    keyword: ClassVar[str] = "lookup"
    kind: str | None
    right: Pipeline
    on: tuple[Expr, ...] = ()
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Union:
    """``union [withsource=x] [isfuzzy=true] T, Device*, (U | where ...)``: a source or an operator."""

    keyword: ClassVar[str] = "union"
    tables: tuple[Pipeline, ...]
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class ExpandColumn:
    """``[name =] expr [to typeof(type)]`` in ``mv-expand`` and ``mv-apply``."""

    name: str | None
    expr: Expr
    to_type: str | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class MvExpand:
    """``mv-expand`` and its old spelling ``mvexpand``."""

    keyword: ClassVar[str] = "mv-expand"
    columns: tuple[ExpandColumn, ...]
    limit: Expr | None = None
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class MvApply:
    """``mv-apply [options] columns [limit n] on (operators)``: the operators run on the rows each
    input row's lists expand to, and their rows replace it."""

    keyword: ClassVar[str] = "mv-apply"
    columns: tuple[ExpandColumn, ...]
    operators: tuple[Operator, ...]
    limit: Expr | None = None
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class ParseColumn:
    """A column a ``parse`` pattern extracts: ``name`` or ``name:type``."""

    name: str
    type_name: str | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class Parse:
    """``parse [kind=...] expr with * "a" col:type ...``; the pattern holds strings, ``Name("*")``
    and ``ParseColumn``s."""

    keyword: ClassVar[str] = "parse"
    source: Expr
    pattern: tuple[StringLit | Name | ParseColumn, ...]
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class ParseWhere(Parse):
    """``parse-where``: ``parse`` that also drops the rows the pattern does not match."""

    keyword: ClassVar[str] = "parse-where"


@dataclass(frozen=True)
class ProjectAway:
    """Columns (``Name``, possibly with ``*`` wildcards) to drop."""

    keyword: ClassVar[str] = "project-away"
    columns: tuple[Name, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class ProjectKeep:
    keyword: ClassVar[str] = "project-keep"
    columns: tuple[Name, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class ProjectRename:
    """``project-rename new = old``: an ``Assignment`` of a ``Name``."""

    keyword: ClassVar[str] = "project-rename"
    columns: tuple[Assignment, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class ProjectReorder:
    keyword: ClassVar[str] = "project-reorder"
    columns: tuple[SortKey, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Search:
    """``search [kind=...] [in (T, U)] predicate``: a source or an operator."""

    keyword: ClassVar[str] = "search"
    tables: tuple[str, ...]
    predicate: Expr
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Evaluate:
    """``evaluate plugin(...) [: (schema)]``: ``schema`` declares the plugin's output columns,
    after the input's own when ``extends_input`` (``: (*, a:string)``)."""

    keyword: ClassVar[str] = "evaluate"
    plugin: Call
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()
    schema: tuple[tuple[str, str], ...] | None = None
    extends_input: bool = False


@dataclass(frozen=True)
class Invoke:
    keyword: ClassVar[str] = "invoke"
    function: Call
    pos: Pos = _pos()


@dataclass(frozen=True)
class Partition:
    """``partition [hint...] by Column (operators)``: the operators run on each partition."""

    keyword: ClassVar[str] = "partition"
    by: Expr
    operators: tuple[Operator, ...]
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Count:
    keyword: ClassVar[str] = "count"
    pos: Pos = _pos()


@dataclass(frozen=True)
class GetSchema:
    keyword: ClassVar[str] = "getschema"
    pos: Pos = _pos()


@dataclass(frozen=True)
class Serialize:
    keyword: ClassVar[str] = "serialize"
    columns: tuple[Assignment, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class As:
    keyword: ClassVar[str] = "as"
    name: str
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Sample:
    keyword: ClassVar[str] = "sample"
    count: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class Render:
    """``render timechart with (title='x')``: how a client draws the result."""

    keyword: ClassVar[str] = "render"
    visualization: str
    options: tuple[Assignment, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class SeriesAggregate:
    """``aggregate [default = value]`` in ``make-series``."""

    aggregate: Assignment
    default: Expr | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class MakeSeries:
    """``make-series [kind=...] aggregates on axis from start to stop step step [by columns]``;
    ``in_range`` records the old ``on axis in range(start, stop, step)`` form."""

    keyword: ClassVar[str] = "make-series"
    aggregates: tuple[SeriesAggregate, ...]
    on: Assignment
    start: Expr | None
    stop: Expr | None
    step: Expr
    by: tuple[Assignment, ...] = ()
    in_range: bool = False
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class ForkBranch:
    """``[name =] (operators)``: one of the results of ``fork``."""

    name: str | None
    operators: tuple[Operator, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Fork:
    """``fork (operators) (operators) ...``: several results from one input."""

    keyword: ClassVar[str] = "fork"
    branches: tuple[ForkBranch, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Facet:
    """``facet by a, b [with (operators)]``: a table of counts per column, as several results."""

    keyword: ClassVar[str] = "facet"
    columns: tuple[Name, ...]
    operators: tuple[Operator, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Reduce:
    """``reduce by expr [with threshold=..., characters=...]``: rows grouped by a text pattern."""

    keyword: ClassVar[str] = "reduce"
    by: Assignment
    options: tuple[Assignment, ...] = ()
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class SampleDistinct:
    """``sample-distinct n of column``: up to n distinct values."""

    keyword: ClassVar[str] = "sample-distinct"
    count: Expr
    of: Assignment
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class TopHitters:
    """``top-hitters n of column [by weight]``: an estimate of the most frequent values."""

    keyword: ClassVar[str] = "top-hitters"
    count: Expr
    of: Assignment
    by: Assignment | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class Consume:
    """``consume``: reads its input and returns no rows."""

    keyword: ClassVar[str] = "consume"
    pos: Pos = _pos()


@dataclass(frozen=True)
class ParseKv:
    """``parse-kv expr as (a:string, ...) [with (pair_delimiter=..., ...)]``: key=value pairs
    of a text become columns."""

    keyword: ClassVar[str] = "parse-kv"
    source: Expr
    columns: tuple[tuple[str, str], ...]
    options: tuple[Assignment, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Find:
    """``find [withsource=x] [in (T, U*)] where predicate [project ...]``: rows of any table the
    predicate matches; ``project`` holds ``ParseColumn``s, ``Name("*")`` and ``pack(*)``, and
    ``project_smart`` records ``project-smart``. A source, also accepted after a pipe."""

    keyword: ClassVar[str] = "find"
    tables: tuple[str, ...]
    predicate: Expr
    project: tuple[ParseColumn | Name | Call, ...] = ()
    project_smart: bool = False
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class ScanStep:
    """``step name [output=...]: predicate [=> assignments];`` of ``scan``."""

    name: str
    predicate: Expr
    assignments: tuple[Assignment, ...] = ()
    output: str | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class Scan:
    """``scan [order by ...] [partition by ...] [declare (...)] with (steps)``: matches sequences
    of rows, step by step."""

    keyword: ClassVar[str] = "scan"
    steps: tuple[ScanStep, ...]
    order_by: tuple[SortKey, ...] = ()
    partition_by: tuple[Expr, ...] = ()
    declare: tuple[FunctionParam, ...] | None = None
    params: tuple[Option, ...] = ()
    pos: Pos = _pos()


Operator = (
    Where
    | Summarize
    | Project
    | Extend
    | Distinct
    | Take
    | Sort
    | Top
    | TopNested
    | Join
    | Lookup
    | Union
    | MvExpand
    | MvApply
    | Parse
    | ProjectAway
    | ProjectKeep
    | ProjectRename
    | ProjectReorder
    | Search
    | Evaluate
    | Invoke
    | Partition
    | Count
    | GetSchema
    | Serialize
    | As
    | Sample
    | Render
    | MakeSeries
    | Fork
    | Facet
    | Reduce
    | SampleDistinct
    | TopHitters
    | Consume
    | ParseKv
    | Find
    | Scan
)


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
class Externaldata:
    """``externaldata(a:string)["https://..."] with (format="csv")``."""

    keyword: ClassVar[str] = "externaldata"
    columns: tuple[tuple[str, str], ...]
    urls: tuple[Expr, ...]
    options: tuple[Assignment, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Print:
    """``print x = 1, y``: a one-row table."""

    keyword: ClassVar[str] = "print"
    columns: tuple[Assignment, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Range:
    """``range x from 1 to 10 step 1``: a one-column table of a series."""

    keyword: ClassVar[str] = "range"
    name: str
    start: Expr
    stop: Expr
    step: Expr
    pos: Pos = _pos()


Source = TableRef | Datatable | Union | Search | Find | Externaldata | Print | Range | Expr
"""What a pipeline starts from; a bare name is always a ``TableRef``, other expressions
(``materialize(...)``, ``f(x)``, ``toscalar(...)``) stand as themselves."""


@dataclass(frozen=True)
class Pipeline:
    source: Source
    operators: tuple[Operator, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class FunctionParam:
    """``name:type [= default]``; a tabular parameter's type is its schema text, ``(*)``."""

    name: str
    type_name: str
    default: Expr | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class FunctionDef:
    """``(a:string, b:int = 1) { ... }`` and ``view () { ... }`` as a ``let`` value."""

    params: tuple[FunctionParam, ...]
    body: Query
    view: bool = False
    pos: Pos = _pos()


@dataclass(frozen=True)
class Let:
    """``let name = value;`` where value is a scalar expression, a tabular pipeline or a function."""

    name: str
    value: Expr | Pipeline | FunctionDef
    pos: Pos = _pos()


@dataclass(frozen=True)
class SetOption:
    """``set name [= value];``: a request property for the query; it changes no row."""

    keyword: ClassVar[str] = "set"
    name: str
    value: Expr | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class DeclareParameters:
    """``declare query_parameters(name:type [= default], ...);``: values the caller passes in."""

    keyword: ClassVar[str] = "declare query_parameters"
    params: tuple[FunctionParam, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Query:
    """``let`` statements and the query statements; ``body`` is the last query statement and
    ``earlier`` any before it (each returns its own result); ``settings`` holds the ``set`` and
    ``declare query_parameters`` statements."""

    lets: tuple[Let, ...]
    body: Pipeline
    pos: Pos = _pos()
    earlier: tuple[Pipeline, ...] = ()
    settings: tuple[SetOption | DeclareParameters, ...] = ()


def chain(expr: Expr, op: str) -> list[Expr]:
    """The operands of an ``and``/``or`` chain, left to right, without recursion (chains can be long)."""
    operands: list[Expr] = []
    stack = [expr]
    while stack:
        item = stack.pop()
        if isinstance(item, Binary) and item.op == op:
            stack.extend((item.right, item.left))
        else:
            operands.append(item)
    return operands


def names(node: object) -> Iterator[str]:
    """Every column name inside a syntax node, whatever its shape (sort keys, assignments ...)."""
    if isinstance(node, Name):
        yield node.name
    elif isinstance(node, tuple | list):
        for item in node:
            yield from names(item)
    elif hasattr(node, "__dict__") and not isinstance(node, Pos):
        for value in vars(node).values():
            yield from names(value)


def refusal(message: str, node: object) -> UnsupportedKqlError:
    """A refusal located at ``node``: converting would change what the query means (or it means
    nothing a rule can)."""
    pos = getattr(node, "pos", NOWHERE)
    return UnsupportedKqlError(message, line=pos.line or None, column=pos.column or None)
