"""Split a query over a ``union`` into one query per branch.

A Sigma rule reads one log source, so ``union A, (B | where x) | where y`` becomes the queries
``A | where y`` and ``B | where x | where y``: the rows a union returns are exactly the rows of its
branches, each filtered by the operators after it, so the branch queries together select what the
union selects, and each can be converted (and proved) on its own.

Kusto's union gives a branch the columns of the other branches as nulls (empty strings for a
string column). A branch whose leading ``where`` requires such a column to hold a non-empty value
selects nothing: it is reported as empty with the reason, never converted to a rule that tests a
column its table lacks. Any other use of a missing column is left to the lowering, which refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from . import syntax as k
from .desugar import desugared
from .lower import Schema, _chain, _fail, _names, _shorten
from .printer import to_kql

# string tests that are false on an empty string when their value is not empty (FACTS §2)
_FALSE_ON_EMPTY = frozenset(
    {
        "==",
        "=~",
        "has",
        "has_cs",
        "contains",
        "contains_cs",
        "startswith",
        "startswith_cs",
        "endswith",
        "endswith_cs",
        "hasprefix",
        "hasprefix_cs",
        "hassuffix",
        "hassuffix_cs",
    }
)


@dataclass(frozen=True)
class Branch:
    """One branch of a union: its query and its table; ``empty`` says why it selects no row."""

    index: int
    table: str
    query: k.Query
    empty: str | None = None
    missing: tuple[str, ...] = ()  # columns the query reads that only other branches' tables have

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
    query = desugared(query)
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
        if source_column and source_column in set(_names(op)):
            raise _fail(
                f"`{_shorten(to_kql(op))}` reads the union's `withsource` column {source_column}: "
                "it compares the tables of a union, which one Sigma rule per table cannot do",
                op,
            )
    pipelines: list[k.Pipeline] = [before] if before is not None else []
    for pipeline in union.tables:
        pipelines.extend(_expanded(pipeline, schema))
    # ``kind=inner`` keeps only the columns every branch has: a missing one is an error, not empty
    inner_kind = params.get("kind") == "inner"
    columns = {c: t for p in pipelines for c, t in schema.get(_table(p, tables), {}).items()}
    branches: list[Branch] = []
    for pipeline in pipelines:
        pipeline = _resolved(pipeline, tables)
        whole = replace(query, body=k.Pipeline(pipeline.source, pipeline.operators + after, pipeline.pos))
        inner = split_union(whole, schema)
        for branch in inner if inner is not None else [Branch(0, _table(pipeline, tables), whole)]:
            empty = branch.empty or (None if inner_kind else _empty(branch, schema, columns, query))
            own = schema.get(branch.table, {})
            read = set(_names(branch.query.body.operators))
            missing = tuple(sorted(c for c in read if c in columns and c not in own)) if own else ()
            branch_query, folded = (
                (branch.query, None)
                if inner_kind
                else _without_missing(branch.query, {c for c in missing if columns[c] == "string"})
            )
            branches.append(Branch(len(branches), branch.table, branch_query, empty or folded, missing))
    return branches


def _without_missing(query: k.Query, missing: set[str]) -> tuple[k.Query, str | None]:
    """The branch query with each test of a column its table lacks replaced by its value on the
    empty string the union gives there (``x has 'a'`` is false, ``x !has 'a'`` true), and why the
    branch selects nothing when a ``where`` becomes false. Only ``where`` operators before any
    operator that could define such a column are folded."""
    operators: list[k.Operator] = []
    for index, op in enumerate(query.body.operators):
        if not isinstance(op, k.Where):
            if not isinstance(op, k.Sort | k.Take | k.Distinct):
                operators.extend(query.body.operators[index:])
                break
            operators.append(op)
            continue
        folded = _fold(op.predicate, missing)
        if folded is False:
            absent = ", ".join(sorted(missing))
            return (
                query,
                f"`{_shorten(to_kql(op.predicate))}` is false where the union gives {absent} as empty",
            )
        if folded is not True:
            operators.append(replace(op, predicate=folded))
    body = replace(query.body, operators=tuple(operators))
    return replace(query, body=body), None


def _fold(expr: k.Expr, missing: set[str]) -> k.Expr | bool:
    """``expr`` with tests of ``missing`` (empty string) columns folded into constants."""
    if isinstance(expr, k.Binary) and expr.op in ("and", "or"):
        parts = [_fold(part, missing) for part in _chain(expr, expr.op)]
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
        inner = _fold(expr.args[0], missing)
        return (not inner) if isinstance(inner, bool) else replace(expr, args=(inner,))
    if isinstance(expr, k.Call) and expr.function in ("isempty", "isnotempty") and len(expr.args) == 1:
        argument = expr.args[0]
        return (
            expr.function == "isempty" if isinstance(argument, k.Name) and argument.name in missing else expr
        )
    if not (isinstance(expr, k.Binary) and isinstance(expr.left, k.Name) and expr.left.name in missing):
        return expr
    if not (isinstance(expr.right, k.StringLit) and expr.right.value):
        return expr
    if expr.op in _FALSE_ON_EMPTY:
        return False
    return True if expr.op.startswith("!") and expr.op[1:] in _FALSE_ON_EMPTY | {"=", "~"} else expr


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


def _empty(branch: Branch, schema: Schema, columns: dict[str, str], query: k.Query) -> str | None:
    """Why a branch selects no row: a leading ``where`` requires a non-empty value of a string
    column its table lacks (the union gives it an empty string there)."""
    own = schema.get(branch.table)
    if own is None:
        return None
    scalars = {let.name for let in query.lets}
    for op in branch.query.body.operators:
        if not isinstance(op, k.Where):
            return None  # a later operator may compute or rename columns
        for test in _chain(op.predicate, "and"):
            if not (isinstance(test, k.Binary) and test.op in _FALSE_ON_EMPTY):
                continue
            left, right = test.left, test.right
            if not (isinstance(left, k.Name) and isinstance(right, k.StringLit) and right.value):
                continue
            name = left.name
            if name not in own and name not in scalars and columns.get(name) == "string":
                return (
                    f"{name} is not a column of {branch.table}, so the union gives it an empty "
                    f"string there and `{_shorten(to_kql(test))}` is false on every row"
                )
    return None
