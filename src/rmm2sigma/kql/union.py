"""Split a query over a ``union`` into one query per branch.

A Sigma rule reads one log source, so ``union A, (B | where x) | where y`` becomes the queries
``A | where y`` and ``B | where x | where y``: the rows a union returns are exactly the rows of its
branches, each filtered by the operators after it, so the branch queries together select what the
union selects, and each can be converted (and proved) on its own.

Kusto's union gives a branch the columns of the other branches as empty strings (a string column)
or nulls (any other: ``==`` and ``in`` false, ``!=`` and ``!in`` true, an ordering null). So every
test of such a column in a ``where`` after the union has a value in that branch, which is folded in:
an or-operand that is false and an operand that is true are dropped, a ``where`` that is false
makes the branch empty, reported with the reason, never a rule testing a column its table lacks.
``extend``, ``project``, ``summarize`` read the column's value instead, so the branch query runs on
its table alone. A test whose value is not known here is left to the lowering, which refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import cast

from ..errors import Rmm2SigmaError
from . import syntax as k
from .columns import outputs
from .desugar import desugared
from .lower import (
    _CASE_FUNCTIONS,
    Schema,
    _fail,
    _Lowering,
    _picked,
    _shorten,
    _substituted,
)
from .printer import to_kql


@dataclass(frozen=True)
class Branch:
    """One branch of a union: its query and its table; ``empty`` says why it selects no row."""

    index: int
    table: str
    query: k.Query
    empty: str | None = None
    missing: tuple[str, ...] = ()  # columns the query reads that only other branches' tables have
    kind: str | None = None  # the kind of events (a Sigma log source) a read of many kinds is cut to
    whole: bool = False  # the kinds' cuts together read what the query reads
    in_union: bool = True  # False: the query itself, cut by kind of events

    @property
    def text(self) -> str:
        """The branch query as KQL: what its rule is converted from and proved against."""
        return to_kql(self.query)


def split_union(query: k.Query, schema: Schema) -> list[Branch] | None:
    """The branches of a query whose source is a union (or that pipes into one); None otherwise.

    Operators after the union apply to every branch. Positions stay those of the original query.
    Raises ``UnsupportedKqlError`` at an operator that reads the union as a whole (its
    ``withsource`` column).
    """
    query = desugared(query, schema)
    tables: dict[str, k.Pipeline] = {}
    for let in query.lets:  # tabular lets; ``let y = DeviceFileEvents;`` parses as a name
        if isinstance(let.value, k.Pipeline):
            tables[let.name] = let.value
        elif isinstance(let.value, k.Name) and (let.value.name in schema or let.value.name in tables):
            tables[let.name] = k.Pipeline(k.TableRef(let.value.name, let.value.pos), (), let.value.pos)
    body = _resolved(query.body, tables)
    at = next((i for i, op in enumerate(body.operators) if isinstance(op, k.Union)), None)
    before: k.Pipeline | None = None
    if isinstance(body.source, k.Union):
        union, after = body.source, body.operators
    elif at is not None:
        operator = body.operators[at]
        assert isinstance(operator, k.Union)
        union = operator
        before = k.Pipeline(body.source, body.operators[:at], body.pos)
        after = body.operators[at + 1 :]
    else:
        return None
    params = dict(union.params)
    source_column = params.get("withsource") or params.get("withSource")
    for op in after:
        if source_column and source_column in set(k.names(op)):
            raise _fail(
                f"`{_shorten(to_kql(op))}` reads {source_column}, the column naming each row's table "
                "(`withsource`): it compares the tables of a union, which one Sigma rule per table cannot do",
                op,
            )
    pipelines: list[k.Pipeline] = [before] if before is not None else []
    for pipeline in union.tables:
        pipelines.extend(_expanded(pipeline, schema))
    # ``kind=inner`` keeps only the columns every branch has: a missing one is an error, not empty
    inner_kind = params.get("kind") == "inner"
    # the columns each branch brings to the union: its table's as its operators leave them (its
    # `project` keeps some); None where an operator makes them unknown here
    brought = [outputs(_resolved(p, tables), schema) for p in pipelines]
    kinds: dict[str, set[str]] = {}
    for p, columns_of_p in zip(pipelines, brought, strict=True):
        table = schema.get(_table(p, tables), {})
        for column in table if columns_of_p is None else columns_of_p:
            if column in table:
                kinds.setdefault(column, set()).add("bool" if table[column] == "boolean" else table[column])
    # a column of two types becomes one column per type (``RemoteIP_string``): not folded
    columns = {column: next(iter(types)) for column, types in kinds.items() if len(types) == 1}
    start = after[0].pos if after else None
    branches: list[Branch] = []
    for pipeline, columns_brought in zip(pipelines, brought, strict=True):
        pipeline = _resolved(pipeline, tables)
        whole = replace(query, body=k.Pipeline(pipeline.source, pipeline.operators + after, pipeline.pos))
        inner = split_union(whole, schema)
        brings = columns_brought if inner is None else None
        for branch in inner if inner is not None else [Branch(0, _table(pipeline, tables), whole)]:
            own = schema.get(branch.table, {})
            read = set(k.names(branch.query.body.operators))
            has = own if brings is None else brings
            missing = tuple(sorted(c for c in read if c in kinds and c not in has)) if own else ()
            branch_query, empty = branch.query, branch.empty
            if not (inner_kind or empty or not own or start is None):
                lacked = {c: kind for c, kind in columns.items() if c in missing}
                branch_query, empty = _without_missing(
                    branch.query, lacked, branch.table, start, at_union=brings is not None
                )
            branches.append(Branch(len(branches), branch.table, branch_query, empty, missing))
    return branches


def _without_missing(
    query: k.Query, missing: dict[str, str], table: str, after: k.Pos | None, at_union: bool = False
) -> tuple[k.Query, str | None]:
    """The branch query with each test of a column its table lacks (``missing``: name -> type)
    replaced by its value where the union gives that column an empty string or a null, and why the
    branch selects nothing when a ``where`` becomes false.

    Only the operators after the union (from position ``after``) are folded: inside a branch such
    a column is an error in Kusto. ``at_union``: ``missing`` are the columns the branch lacks where
    it joins the union (its ``project`` dropped some); else its table's, followed from the start.
    The columns are followed through ``extend``, ``project``,
    ``project-rename``, ``summarize`` ...; folding stops at an operator that could bring them from
    elsewhere (a join, ``mv-expand``, ``parse`` ...), where the lowering decides.
    """
    lowering = _Lowering(query, {})
    missing = {name: kind for name, kind in missing.items() if name not in lowering.scalars}
    operators: list[k.Operator] = []
    ops = query.body.operators
    for index, op in enumerate(ops):
        folding = after is None or (op.pos.line, op.pos.column) >= (after.line, after.column)
        if at_union and not folding:
            operators.append(op)
            continue
        if isinstance(op, k.Where) and folding:
            folded = _fold(op.predicate, missing, lowering, True)
            if folded is False:
                read = sorted(set(k.names(op.predicate)) & set(missing))
                return query, (
                    f"{', '.join(read)} {'is not a column' if len(read) == 1 else 'are not columns'} "
                    f"of {table}, so the union gives {'it' if len(read) == 1 else 'them'} an empty "
                    f"value there and `{_shorten(to_kql(op.predicate))}` is false on every row"
                )
            if folded is not True:
                operators.append(replace(op, predicate=folded))
            continue
        following = _missing_after(op, missing)
        if following is None:
            operators.extend(ops[index:])
            break
        operators.append(_filled(op, missing) if folding else op)
        missing = following
    return replace(query, body=replace(query.body, operators=tuple(operators))), None


_KEEPS_COLUMNS = (k.Where, k.Take, k.Sort, k.Top, k.Serialize, k.Render, k.ProjectReorder, k.Sample)


def _missing_after(op: k.Operator, missing: dict[str, str]) -> dict[str, str] | None:
    """The missing columns (name -> type) after ``op``; None after an operator that may bring
    columns of its own (then nothing after it is folded)."""
    if isinstance(op, _KEEPS_COLUMNS):
        return missing
    if isinstance(op, k.Extend):
        extended = dict(missing)
        for assignment in op.columns:
            name = assignment.name or _column_name(assignment.expr)
            if name is None:
                continue
            kind = _missing_kind(assignment.expr, missing)
            if kind is None:
                extended.pop(name, None)
            else:
                extended[name] = kind
        return extended
    if isinstance(op, k.Project | k.Summarize | k.Distinct):
        projected: dict[str, str] = {}
        for assignment in _picked(op):
            name = assignment.name or _column_name(assignment.expr)
            kind = _missing_kind(assignment.expr, missing)
            if name is not None and kind is not None:
                projected[name] = kind
        return projected
    if isinstance(op, k.ProjectRename):
        renamed = dict(missing)
        for assignment in op.columns:
            kind = renamed.pop(assignment.expr.name, None) if isinstance(assignment.expr, k.Name) else None
            renamed.pop(assignment.name or "", None)
            if assignment.name and kind is not None:
                renamed[assignment.name] = kind
        return renamed
    if isinstance(op, k.ProjectAway | k.ProjectKeep):
        named = {column.name for column in op.columns}
        away = isinstance(op, k.ProjectAway)
        return {name: kind for name, kind in missing.items() if (name in named) != away}
    return None


def _filled(op: k.Operator, missing: dict[str, str]) -> k.Operator:
    """``extend``, ``project`` or ``summarize`` with each missing column it reads replaced by the
    union's value for it (``''``, or a null of its type), so the branch query runs on its table."""
    if not (isinstance(op, k.Extend | k.Project | k.Summarize) and set(k.names(op)) & set(missing)):
        return op
    values: dict[str, k.Expr] = {
        name: k.StringLit("") if kind == "string" else k.TypedLit(kind, "null")
        for name, kind in missing.items()
    }

    def fill(assignment: k.Assignment) -> k.Assignment:
        missing_name = _column_name(assignment.expr) if _missing_kind(assignment.expr, missing) else None
        name = assignment.name or missing_name  # `project RemoteIP` keeps its name
        return replace(assignment, name=name, expr=cast(k.Expr, _substituted(assignment.expr, values)))

    if isinstance(op, k.Summarize):
        return replace(op, aggregates=tuple(map(fill, op.aggregates)), by=tuple(map(fill, op.by)))
    return replace(op, columns=tuple(map(fill, op.columns)))


def _column_name(expr: k.Expr) -> str | None:
    return expr.name if isinstance(expr, k.Name) else None


def _missing_kind(expr: k.Expr, missing: dict[str, str]) -> str | None:
    """The type of a missing column ``expr`` copies (``tolower()`` of an empty string is empty)."""
    while isinstance(expr, k.Call) and expr.function in _CASE_FUNCTIONS and len(expr.args) == 1:
        if _missing_kind(expr.args[0], missing) != "string":
            return None
        expr = expr.args[0]
    return missing.get(expr.name) if isinstance(expr, k.Name) else None


# Kusto's value of a test on the empty string, for a needle that is not empty (FACTS §2)
_STRING_TESTS = frozenset(
    f"{test}{case}"
    for test in ("has", "contains", "startswith", "endswith", "hasprefix", "hassuffix")
    for case in ("", "_cs")
)
_NULL = "null"  # a comparison with a null: neither true nor false (``where`` drops the row)


def _fold(expr: k.Expr, missing: dict[str, str], lowering: _Lowering, positive: bool) -> k.Expr | bool:
    """``expr`` with each test of a missing column replaced by its value there, folded.

    A null test (``Port > 1`` on a null ``Port``) is false where an even number of ``not`` wrap it
    and true where an odd number do: ``where`` keeps a row only when its predicate is true, and
    under Kleene's logic a formula is true exactly when it is true with its null tests so replaced.
    """
    if isinstance(expr, k.Binary) and expr.op in ("and", "or"):
        parts = [_fold(part, missing, lowering, positive) for part in k.chain(expr, expr.op)]
        decisive = expr.op == "or"  # TRUE decides an OR, FALSE an AND
        if decisive in parts:
            return decisive
        kept = [part for part in parts if not isinstance(part, bool)]
        if not kept:
            return not decisive
        result = kept[0]
        for part in kept[1:]:
            result = k.Binary(expr.op, result, part, expr.pos)
        return result
    if isinstance(expr, k.Call) and expr.function == "not" and len(expr.args) == 1:
        inner = _fold(expr.args[0], missing, lowering, not positive)
        return (not inner) if isinstance(inner, bool) else replace(expr, args=(inner,))
    value = _missing_test(expr, missing, lowering)
    if value is None:
        return expr
    return (not positive) if value == _NULL else value == "true"


def _missing_test(expr: k.Expr, missing: dict[str, str], lowering: _Lowering) -> str | None:
    """``"true"``, ``"false"`` or ``_NULL``: the value of a test on a missing column, where the
    union gives a string column an empty string and any other column a null (Kusto's null
    values: ``==`` and ``in`` are false and ``!=`` and ``!in`` true against a value, an ordering
    null); None when ``expr`` is not such a test or its value is not known here."""
    truth = {True: "true", False: "false"}
    if isinstance(expr, k.Call) and len(expr.args) == 1 and expr.function in _EMPTY_TESTS:
        kind = _missing_kind(expr.args[0], missing)
        if kind is None or kind == "dynamic":
            return None
        is_null = kind != "string"
        return truth[
            {"isempty": True, "isnotempty": False, "isnull": is_null, "isnotnull": not is_null}[expr.function]
        ]
    if isinstance(expr, k.Name):  # a boolean column as the test itself
        return _NULL if missing.get(expr.name) in ("bool", "boolean") else None
    if isinstance(expr, k.Between):
        kind = _missing_kind(expr.left, missing)
        return _NULL if kind not in (None, "string", "dynamic") else None
    if isinstance(expr, k.SetOp):
        kind = _missing_kind(expr.left, missing)
        try:
            values = lowering.value_list(expr) if kind not in (None, "dynamic") else None
        except Rmm2SigmaError:  # not a list of literal values
            return None
        if not isinstance(values, tuple) or not values:
            return None
        negated = expr.op.startswith("!")
        if kind != "string":  # a null is in no list of values
            return truth[negated] if expr.op in ("in", "!in") else None
        if expr.op in ("has_any", "has_all"):
            return "false" if all(values) else None
        return truth[("" in values) != negated]
    if not isinstance(expr, k.Binary):
        return None
    kind = _missing_kind(expr.left, missing)
    right = lowering.resolve(expr.right)
    if kind is None or kind == "dynamic" or not _is_value(right):
        return None
    negated = expr.op.startswith("!")
    test = expr.op[1:] if negated else expr.op
    if kind != "string":
        if expr.op in ("==", "!="):
            return truth[negated]
        return _NULL if expr.op in ("<", "<=", ">", ">=") else None
    if not isinstance(right, k.StringLit):
        return None
    value = right.value
    if test in ("=", "==", "~", "=~"):
        return truth[(value == "") != negated]
    if test in _STRING_TESTS and value:
        return truth[negated]
    return None


_EMPTY_TESTS = frozenset({"isempty", "isnotempty", "isnull", "isnotnull"})


def _is_value(expr: k.Expr) -> bool:
    """Whether ``expr`` is a value that is never null: a literal, ``ago()``, ``now()``."""
    if isinstance(expr, k.Unary) and expr.op == "-":
        expr = expr.operand
    if isinstance(expr, k.Call):
        return expr.function in ("ago", "now")
    if isinstance(expr, k.TypedLit):
        return expr.text.strip().lower() != "null"
    return isinstance(expr, k.StringLit | k.NumberLit | k.BoolLit | k.TimespanLit)


def _resolved(pipeline: k.Pipeline, tables: dict[str, k.Pipeline]) -> k.Pipeline:
    """A pipeline starting from a tabular ``let`` with the let's pipeline put in place."""
    seen: set[str] = set()
    while isinstance(pipeline.source, k.TableRef) and pipeline.source.name not in seen:
        seen.add(pipeline.source.name)
        named = tables.get(pipeline.source.name)
        if not isinstance(named, k.Pipeline):
            break
        pipeline = k.Pipeline(named.source, named.operators + pipeline.operators, pipeline.pos)
    return pipeline


def _expanded(pipeline: k.Pipeline, schema: Schema) -> list[k.Pipeline]:
    """``Device*``: one pipeline per Defender table the wildcard names, in sorted order."""
    source = pipeline.source
    if not (isinstance(source, k.TableRef) and "*" in source.name):
        return [pipeline]
    names = sorted(name for name in schema if fnmatchcase(name, source.name))
    if not names:
        raise _fail(f"no Defender table matches {source.name!r}", source)
    return [k.Pipeline(k.TableRef(name, source.pos), pipeline.operators, pipeline.pos) for name in names]


def _table(pipeline: k.Pipeline, tables: dict[str, k.Pipeline]) -> str:
    source = _resolved(pipeline, tables).source
    return source.name if isinstance(source, k.TableRef) else getattr(source, "keyword", "expression")


def of_kinds(query: k.Query, kinds: tuple[str, ...], schema: Schema, caseless: bool) -> k.Query | None:
    """The query reading only events of ``kinds``: ``ActionType in (...)`` (``in~`` when
    ``caseless``) right after its table (tabular lets written in place); None when its source is
    no table."""
    query = desugared(query, schema)
    body = _Lowering(query, schema).expand(query.body)
    if not isinstance(body.source, k.TableRef):
        return None
    values = tuple(k.StringLit(kind) for kind in kinds)
    kind = k.SetOp("in~" if caseless else "in", k.Name("ActionType", body.pos), values, body.pos)
    test = k.Where(kind, body.pos)
    return replace(query, body=k.Pipeline(body.source, (test, *body.operators), body.pos))
