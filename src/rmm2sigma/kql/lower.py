"""Lower a KQL syntax tree into the detection model.

Only what a Sigma rule can carry becomes a predicate; everything else is either refused with a
located error (it would change what the rule detects) or recorded as a note (it only shapes the
output, like ``extend`` or ``project``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TypeGuard

from ..errors import UnsupportedKqlError
from ..model import (
    AggregateFunction,
    Aggregation,
    And,
    Detection,
    Match,
    Node,
    Not,
    Opaque,
    Or,
    Predicate,
    Value,
    walk,
)
from . import syntax as k
from .printer import to_kql

# operator -> (match, case_sensitive, negated); all KQL string operators are listed in FACTS §2
_STRING_OPERATORS: dict[str, tuple[Match, bool, bool]] = {}
for _name, _match in (
    ("has", Match.HAS),
    ("contains", Match.CONTAINS),
    ("startswith", Match.STARTSWITH),
    ("endswith", Match.ENDSWITH),
):
    _STRING_OPERATORS[_name] = (_match, False, False)
    _STRING_OPERATORS["!" + _name] = (_match, False, True)
    _STRING_OPERATORS[_name + "_cs"] = (_match, True, False)
    _STRING_OPERATORS["!" + _name + "_cs"] = (_match, True, True)
_STRING_OPERATORS.update(
    {
        "==": (Match.EQUALS, True, False),
        "!=": (Match.EQUALS, True, True),
        "=~": (Match.EQUALS, False, False),
        "!~": (Match.EQUALS, False, True),
        "matches regex": (Match.REGEX, True, False),
        "<": (Match.LT, True, False),
        "<=": (Match.LTE, True, False),
        ">": (Match.GT, True, False),
        ">=": (Match.GTE, True, False),
    }
)
# operator -> (match, case_sensitive, negated, match_all)
_SET_OPERATORS: dict[str, tuple[Match, bool, bool, bool]] = {
    "in": (Match.EQUALS, True, False, False),
    "!in": (Match.EQUALS, True, True, False),
    "in~": (Match.EQUALS, False, False, False),
    "!in~": (Match.EQUALS, False, True, False),
    "has_any": (Match.HAS, False, False, False),
    "has_all": (Match.HAS, False, False, True),
}
_TIMESPAN = re.compile(r"^(\d+(?:\.\d+)?)(d|h|m|s|ms)$")
_TIMESPAN_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds", "ms": "milliseconds"}

Schema = Mapping[str, Mapping[str, str]]


def lower(query: k.Query, schema: Schema) -> Detection:
    """The detection a query performs; raises ``UnsupportedKqlError`` at the offending node."""
    return _Lowering(query, schema).detection()


def _fail(message: str, node: object) -> UnsupportedKqlError:
    pos = getattr(node, "pos", k.NOWHERE)
    return UnsupportedKqlError(message, line=pos.line or None, column=pos.column or None)


class _Lowering:
    def __init__(self, query: k.Query, schema: Schema) -> None:
        self.query = query
        self.schema = schema
        self.scalars: dict[str, k.Expr] = {}
        self.tables: dict[str, k.Pipeline] = {}
        for let in query.lets:
            if isinstance(let.value, k.Pipeline):
                self.tables[let.name] = let.value
            elif not isinstance(let.value, k.FunctionDef):  # a call to a function stays unresolved
                self.scalars[let.name] = let.value
        self.notes: list[str] = []
        self.window: timedelta | None = None

    def detection(self) -> Detection:
        body = self.query.body
        if self.query.earlier:
            raise _fail(
                "a query with several result statements has no Sigma equivalent", self.query.earlier[0]
            )
        if not isinstance(body.source, k.TableRef | k.Datatable):
            raise _fail(
                f"a query starting with `{getattr(body.source, 'keyword', 'an expression')}` "
                "has no Sigma equivalent",
                body.source,
            )
        if not isinstance(body.source, k.TableRef) or body.source.name in self.tables:
            raise _fail("the query must start from a Defender table", body.source)
        table = body.source.name
        if table not in self.schema:
            raise _fail(f"unknown table {table!r} (not in the Defender schema)", body.source)
        self.columns = self.schema[table]
        conditions: list[Node] = []
        aggregation: Aggregation | None = None
        reshaped: set[str] = set()
        for op in body.operators:
            if isinstance(op, k.Where):
                if aggregation is not None:
                    raise _fail("a filter after summarize (a threshold) has no Sigma rule equivalent", op)
                node = self.condition(op.predicate, top_level=True)
                for leaf_column in {leaf.column for leaf in walk(node) if isinstance(leaf, Predicate)}:
                    if leaf_column in reshaped:
                        raise _fail(f"filter on {leaf_column!r} after it was redefined by extend", op)
                if node is not None:
                    conditions.append(node)
            elif isinstance(op, k.Summarize):
                aggregation = self.aggregation(op)
            elif isinstance(op, k.Extend):
                reshaped.update(a.name for a in op.columns if a.name)
                self.notes.append(f"output shaping `{_shorten(to_kql(op))}` is not part of a Sigma rule")
            elif isinstance(op, k.Project | k.Distinct | k.Take):
                self.notes.append(f"output shaping `{_shorten(to_kql(op))}` is not part of a Sigma rule")
            else:
                raise _fail(f"`{op.keyword}` has no Sigma equivalent", op)
        predicate: Node | None
        if not conditions:
            predicate = None
        else:
            predicate = conditions[0] if len(conditions) == 1 else And(tuple(conditions))
        return Detection(table, predicate, self.window, aggregation, tuple(self.notes))

    # ------------------------------------------------------------ predicates

    def condition(self, expr: k.Expr, top_level: bool = False) -> Node | None:
        if isinstance(expr, k.Binary) and expr.op in ("and", "or"):
            parts = [self.condition(side, top_level and expr.op == "and") for side in _chain(expr, expr.op)]
            kept = tuple(p for p in parts if p is not None)
            if expr.op == "or" and len(kept) < 2:
                raise _fail("a time filter inside `or` cannot be expressed", expr)
            return (And if expr.op == "and" else Or)(kept) if len(kept) > 1 else (kept[0] if kept else None)
        if isinstance(expr, k.Call) and expr.function == "not" and len(expr.args) == 1:
            inner = self.condition(expr.args[0])
            if inner is None:
                raise _fail("a negated time filter cannot be expressed", expr)
            return Not(inner)
        if isinstance(expr, k.Call) and expr.function in ("isempty", "isnotempty", "isnull", "isnotnull"):
            column = self.column(expr.args[0] if expr.args else expr)
            negated = expr.function in ("isnotempty", "isnotnull")
            return Predicate(column, Match.EMPTY, (), negated=negated, text=to_kql(expr), pos=expr.pos)
        if isinstance(expr, k.Between):
            return self.between(expr, top_level)
        if isinstance(expr, k.SetOp) and expr.op in _SET_OPERATORS:
            match, case_sensitive, negated, match_all = _SET_OPERATORS[expr.op]
            column = self.column(expr.left)
            values = self.value_list(expr)
            if isinstance(values, Opaque):
                return values
            return Predicate(
                column, match, values, case_sensitive, match_all, negated, to_kql(expr), expr.pos
            )
        if isinstance(expr, k.Binary) and expr.op in _STRING_OPERATORS:
            match, case_sensitive, negated = _STRING_OPERATORS[expr.op]
            column = self.column(expr.left)
            value = self.scalar(expr.right)
            if isinstance(value, str) and match in (Match.LT, Match.LTE, Match.GT, Match.GTE):
                raise _fail(f"`{expr.op}` on a string has no Sigma modifier", expr)
            return Predicate(column, match, (value,), case_sensitive, False, negated, to_kql(expr), expr.pos)
        raise _fail(f"`{_shorten(to_kql(expr))}` has no Sigma equivalent", expr)

    def between(self, expr: k.Between, top_level: bool) -> Node | None:
        column = self.column(expr.left)
        if self.columns.get(column) == "datetime":
            if not top_level or expr.negated:
                raise _fail("a time range is only supported as a top-level filter", expr)
            self.window = self.time_window(expr)
            return None
        low, high = self.scalar(expr.low), self.scalar(expr.high)
        text = to_kql(expr)
        node = And(
            (
                Predicate(column, Match.GTE, (low,), text=text, pos=expr.pos),
                Predicate(column, Match.LTE, (high,), text=text, pos=expr.pos),
            )
        )
        return Not(node) if expr.negated else node

    def time_window(self, expr: k.Between) -> timedelta | None:
        start, end = self.resolve(expr.low), self.resolve(expr.high)
        if not (_is_call(end, "now") and not end.args):
            self.notes.append(f"time range `{_shorten(to_kql(expr))}` does not end now; schedule it yourself")
            return None
        offset = _now_offset(start)
        if offset is None:
            self.notes.append(f"time range `{_shorten(to_kql(expr))}` not understood; schedule it yourself")
        return offset

    def column(self, expr: k.Expr) -> str:
        if not isinstance(expr, k.Name):
            raise _fail(f"`{_shorten(to_kql(expr))}` is not a column; Sigma tests columns only", expr)
        if expr.name not in self.columns:
            raise _fail(f"unknown column {expr.name!r} for this table", expr)
        return expr.name

    def resolve(self, expr: k.Expr) -> k.Expr:
        seen: set[str] = set()
        while isinstance(expr, k.Name) and expr.name in self.scalars and expr.name not in seen:
            seen.add(expr.name)
            expr = self.scalars[expr.name]
        return expr

    def scalar(self, expr: k.Expr) -> Value:
        expr = self.resolve(expr)
        if isinstance(expr, k.StringLit | k.NumberLit):
            return expr.value
        if isinstance(expr, k.Unary) and expr.op == "-" and isinstance(expr.operand, k.NumberLit):
            return -expr.operand.value
        raise _fail(f"`{_shorten(to_kql(expr))}` is not a literal value", expr)

    def value_list(self, expr: k.SetOp) -> tuple[Value, ...] | Opaque:
        values: list[Value] = []
        for item in expr.items:
            item = self.resolve(item)
            if isinstance(item, k.Name) and item.name in self.tables:
                item = k.SubQuery(self.tables[item.name], item.pos)
            if isinstance(item, k.SubQuery):
                rows = self.sub_query_values(item.pipeline)
                if rows is None:
                    return Opaque(
                        to_kql(expr),
                        "it compares with the rows of another query (a join), which a Sigma rule cannot do",
                        expr.pos,
                    )
                values.extend(rows)
            elif _is_call(item, "dynamic") and item.args and isinstance(item.args[0], k.ArrayLit):
                values.extend(self.scalar(v) for v in item.args[0].items)
            else:
                values.append(self.scalar(item))
        return tuple(values)

    def sub_query_values(self, pipeline: k.Pipeline) -> list[Value] | None:
        """Values of a one-column sub-query over a ``datatable``; None when it reads a real table."""
        source = pipeline.source
        if isinstance(source, k.TableRef) and source.name in self.tables:
            inner = self.tables[source.name]
            return self.sub_query_values(k.Pipeline(inner.source, inner.operators + pipeline.operators))
        if not isinstance(source, k.Datatable):
            return None
        names = [name for name, _ in source.columns]
        if len(pipeline.operators) != 1 or not isinstance(pipeline.operators[0], k.Distinct | k.Project):
            raise _fail(
                "only `distinct COLUMN` or `project COLUMN` of a datatable can be a value list", pipeline
            )
        operator = pipeline.operators[0]
        picked = (
            operator.columns if isinstance(operator, k.Distinct) else tuple(a.expr for a in operator.columns)
        )
        if len(picked) != 1 or not isinstance(picked[0], k.Name) or picked[0].name not in names:
            raise _fail("the value list must select one datatable column", operator)
        index, width = names.index(picked[0].name), len(names)
        column = [self.scalar(v) for v in source.values[index::width]]
        return list(dict.fromkeys(column)) if isinstance(operator, k.Distinct) else column

    # ------------------------------------------------------------ aggregation

    def aggregation(self, op: k.Summarize) -> Aggregation:
        functions: list[AggregateFunction] = []
        for assignment in op.aggregates:
            call = assignment.expr
            if not isinstance(call, k.Call) or len(call.args) > 1:
                raise _fail(f"aggregate `{_shorten(to_kql(call))}` is not supported", call)
            column = self.column(call.args[0]) if call.args else None
            functions.append(AggregateFunction(assignment.name or call.function, call.function, column))
        by = []
        for assignment in op.by:
            if assignment.name is not None:
                raise _fail("computed group-by columns are not supported", assignment)
            by.append(self.column(assignment.expr))
        return Aggregation(tuple(functions), tuple(by))


def _chain(expr: k.Expr, op: str) -> list[k.Expr]:
    """The operands of an ``and``/``or`` chain, left to right, without recursion (chains can be long)."""
    operands: list[k.Expr] = []
    stack = [expr]
    while stack:
        item = stack.pop()
        if isinstance(item, k.Binary) and item.op == op:
            stack.extend((item.right, item.left))
        else:
            operands.append(item)
    return operands


def _is_call(expr: k.Expr, name: str) -> TypeGuard[k.Call]:
    return isinstance(expr, k.Call) and expr.function == name


def _now_offset(expr: k.Expr) -> timedelta | None:
    """``now(-5d)`` and ``ago(5d)`` as the 5-day distance from now."""
    if not isinstance(expr, k.Call) or len(expr.args) != 1:
        return None
    arg, sign = expr.args[0], 1
    if isinstance(arg, k.Unary) and arg.op == "-":
        arg, sign = arg.operand, -1
    if not isinstance(arg, k.TimespanLit) or not (match := _TIMESPAN.match(arg.text)):
        return None
    span = timedelta(**{_TIMESPAN_UNITS[match.group(2)]: float(match.group(1))})
    if expr.function == "ago" and sign == 1:
        return span
    if expr.function == "now" and sign == -1:
        return span
    return None


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
