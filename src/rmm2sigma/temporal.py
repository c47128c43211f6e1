"""A join of two filters on shared keys as a Sigma ``temporal`` correlation (specification v2).

``A | where a | join kind=inner (B | where b) on DeviceName`` reports the devices on which both
filters matched within the query's time range. That is a ``temporal`` correlation of two rules,
one per side, grouped by the keys' Sigma fields, its timespan the query's range (else the 30 days
advanced hunting keeps). Each group the join reports is a group the correlation reports when both
sides' rules select the events the sides' filters do; so a label on groups is the worse of the two
sides' labels on rows, then:

- a key with a Sigma field on each side is grouped by (``aliases`` when the names differ); a key
  both sides compute as ``bin(Timestamp, span)`` is the timespan itself (``Join.bucket``);
- ``DeviceId`` has none: the device's name (``Computer``) stands for it, approximate (a renamed
  device is two names, two devices of one name are one);
- a key with no field is left out: coarser groups, wider;
- a test after the join reading one side's columns filters that side (exact); one reading both is
  left out (wider), its two-way bound on the sides' times, if any, the timespan (``Join.gap``);
  other operators after the join reshape rows, or drop them (left out: wider);
- targets: splunk and esql count the two rules once over the time range
  (``targets.WHOLE_RANGE``; in buckets for a time-bucket key), eql writes a ``sample by`` the keys
  (no time bound: wider), kusto gets the join back (each side's query joined on the original
  columns, then the tests reading both sides), lucene cannot correlate and returns the left side's
  events (every reported group has some: wider), and so do esql and eql for aliased keys.

A semi-join reports the keys an inner join does: ``join kind=leftsemi`` (after it only the left
side's columns exist, so a test after it reads that side), ``kind=rightsemi`` (the right's), and
``T | where a and K in (U | where b | distinct C)`` (also through a tabular ``let`` or
``materialize()``), which is ``T | where a | join kind=leftsemi (U | where b | distinct C) on
$left.K == $right.C``; kusto gets each back as written. ``in~`` compares the keys without case, as
the correlation's Sigma backend groups them (pysigma-backend-sqlite); splunk, esql and eql group
with case, so they return the left side's events (wider).

Anything else (an outer or anti join, ``!in``, an ``in`` under ``or``, a side that is a whole
table or holds a threshold, a computed key) keeps the one-sided conversion of ``kql.lower``, which
widens the join away.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from itertools import takewhile
from typing import Any, cast

from . import targets
from .correlation import CORRELATION_KEY_ORDER, HUNTING_RETENTION, group_fields
from .errors import InexpressibleKqlError
from .kql import syntax as k
from .kql.columns import output_column, outputs
from .kql.desugar import desugared
from .kql.lower import (
    _DEFAULT_KINDS,
    _SHAPING_KEYWORDS,
    Schema,
    _Lowering,
    _shorten,
    _substituted,
    _timespan,
)
from .kql.printer import to_kql
from .mapping import MappedRule, hex_fields
from .model import Fidelity
from .yaml_text import dump_yaml

BUCKET = "rmm2sigma_bucket"  # the kusto join's time bucket key
# join kinds that return a row for each pair of matching left and right rows (or left rows with one)
_INNER = frozenset({"inner", "innerunique"})
# join kinds that return the rows of one side that have a match: the keys an inner join reports
_SEMI = frozenset({"leftsemi", "rightsemi"})
# a Defender column with no Sigma field that another column of the same device stands for
STAND_INS = {"DeviceId": "DeviceName"}
# operators that keep every key of the rows they are given (a summary by the key, say)
_KEEPING = (k.Extend, k.Project, k.ProjectRename, k.Distinct, k.Summarize)
# operators a side may hold: filters (``lower`` takes them in) and the above
_SIDE = (k.Where, k.Take, *_KEEPING)


@dataclass(frozen=True)
class Join:
    """A query joining two filters: each side as a query of its own, and the key columns."""

    left: k.Query
    right: k.Query
    through: k.Query  # the query through the tests right after the join: the rows whose keys it reports
    keys: tuple[tuple[str, str], ...]  # (left table column, right table column)
    names: tuple[str, ...]  # the join's output column of each key (what the original projects)
    text: str  # the join, for notes
    filtered_after: tuple[str, ...]  # operators after the join that can drop rows, left out (wider)
    bucket: timedelta | None = None  # a key `bin(Timestamp, span)` on both sides: the same time bucket
    # the tests after the join reading both sides, in the columns of kusto's join of the two rules'
    # queries (the right's `Name1` where the left table has Name); None: a column is computed
    crossing: tuple[k.Expr, ...] | None = ()
    gap: timedelta | None = None  # how far apart in time those tests keep the sides' events, if bounded
    after: tuple[str, ...] = ()  # the operators after the join, but the crossing tests, that drop rows
    kind: str = "inner"  # the join's kind as kusto writes it back: inner, leftsemi or rightsemi
    operator: str | None = None  # ``in`` or ``in~`` for the semi-join a ``K in (sub-query)`` test is

    @property
    def returned(self) -> int:
        """The side (0 left, 1 right) whose rows, hence key columns, the join returns."""
        return 1 if self.kind == "rightsemi" else 0

    @property
    def caseless(self) -> bool:
        """Whether the keys are compared without case (``in~``)."""
        return self.operator == "in~"


@dataclass(frozen=True)
class Plan:
    """The correlation: its group-by fields, their names in each rule, and what it changes."""

    group_by: tuple[str, ...]
    aliases: dict[str, tuple[str, str]]  # group-by name -> (left field, right field) where they differ
    keys: tuple[tuple[str, str], ...]  # the Defender columns each group-by field stands for
    window: timedelta  # the range both rules are read over
    bucket: timedelta | None  # the time buckets the join pairs rows in (``Join.bucket``)
    timespan: str
    notes: tuple[str, ...]
    approximate: bool  # a stand-in key (DeviceName for DeviceId)
    wider: bool  # keys or filters after the join left out
    caseless: bool = False  # the keys are compared without case (``Join.caseless``)


def find(query: k.Query, schema: Schema) -> Join | None:
    """The join of two filters a query is, or None (then ``kql.lower`` widens any join away)."""
    query = desugared(query, schema)
    if query.earlier:
        return None
    lowering = _Lowering(query, schema)
    original = lowering.expand(query.body)
    body, test = _semi_joined(original, lowering)
    index = next((i for i, op in enumerate(body.operators) if isinstance(op, k.Join)), None)
    if index is None:
        return None
    join = body.operators[index]
    assert isinstance(join, k.Join)
    kind = (join.kind or _DEFAULT_KINDS["join"]).lower()
    if kind not in _INNER | _SEMI:
        return None
    kind = "inner" if kind in _INNER else kind
    left = k.Pipeline(body.source, body.operators[:index], body.pos)
    right = lowering.expand(join.right)
    rest = body.operators[index + 1 :]
    # a semi-join returns one side's columns only: a test after it reads that side
    columns = (
        [] if kind == "rightsemi" else outputs(left, schema),
        [] if kind == "leftsemi" else outputs(right, schema),
    )
    pushed, crossing, rest = _pushed(rest, left, right, lowering, columns)
    left = k.Pipeline(left.source, (*left.operators, *pushed[0]), left.pos)
    right = k.Pipeline(right.source, (*right.operators, *pushed[1]), right.pos)
    if not (_filter(left, schema) and _filter(right, schema)) or any(map(lowering.brings_rows, rest)):
        return None
    found = _keys(join, left, right, lowering, 1 if kind == "rightsemi" else 0)
    if found is None:
        return None
    keys, bucket = found
    # the query through the tests after the join: what the correlation stands for (the proof's
    # original), as written (an `in` test, not the join it is)
    through = original.operators[: len(original.operators) - len(rest)]
    after = tuple(_shorten(to_kql(op)) for op in rest if not _keeps_keys(op))
    joined = _joined_columns(crossing, left, right, lowering, columns)
    return Join(
        k.Query(query.lets, left, query.pos),
        k.Query(query.lets, right, query.pos),
        k.Query(query.lets, k.Pipeline(body.source, through, body.pos), query.pos),
        tuple(pair for pair, _ in keys),
        tuple(name for _, name in keys),
        _shorten(to_kql(test or join), 80),
        (*(_shorten(to_kql(test)) for test in crossing), *after),
        bucket,
        joined,
        _gap(joined or (), lowering),
        after,
        kind,
        test.op if test else None,
    )


def _semi_joined(body: k.Pipeline, lowering: _Lowering) -> tuple[k.Pipeline, k.SetOp | None]:
    """The body with its first ``where ... and K in (U | where b | distinct C)`` before any join
    written as the semi-join it is (``| where ... | join kind=leftsemi (U | where b | distinct C) on
    $left.K == $right.C``), and that test; else the body and None.

    Only a conjunct of the ``where`` (under ``or`` or negated it is no semi-join), whose sub-query
    (inline, a tabular ``let``, ``materialize()``) filters an event table into one column."""
    for index, op in enumerate(body.operators):
        if isinstance(op, k.Join):
            break
        if not isinstance(op, k.Where):
            continue
        tests = k.chain(op.predicate, "and")
        for position, test in enumerate(tests):
            if not (isinstance(test, k.SetOp) and test.op in ("in", "in~") and isinstance(test.left, k.Name)):
                continue
            right = _rows_of(test.items, lowering)
            columns = outputs(right, lowering.schema) if right and _filter(right, lowering.schema) else None
            if right is None or columns is None or len(columns) != 1:
                continue
            key = k.Binary(
                "==", k.Member(k.Name("$left"), test.left.name), k.Member(k.Name("$right"), columns[0])
            )
            others = [k.Where(other, op.pos) for other in (*tests[:position], *tests[position + 1 :])]
            join = k.Join("leftsemi", right, (key,), pos=test.pos)
            operators = (*body.operators[:index], *others, join, *body.operators[index + 1 :])
            return k.Pipeline(body.source, operators, body.pos), test
    return body, None


def _rows_of(items: tuple[k.Expr, ...], lowering: _Lowering) -> k.Pipeline | None:
    """The rows an ``in`` list of one sub-query reads (inline, a tabular ``let``, ``materialize()``)."""
    if len(items) != 1:
        return None
    (item,) = items
    if isinstance(item, k.Call) and item.function == "materialize" and len(item.args) == 1:
        item = item.args[0]
    if isinstance(item, k.SubQuery):
        return lowering.expand(item.pipeline)
    if isinstance(item, k.Name) and (item.name in lowering.tables or item.name in lowering.scalars):
        return lowering.expand(k.Pipeline(k.TableRef(item.name, item.pos), (), item.pos))
    return None


Pushed = tuple[list[k.Where], list[k.Where]]
Columns = tuple[list[str] | None, list[str] | None]  # each side's columns after the join (None: unknown)


def _pushed(
    rest: tuple[k.Operator, ...], left: k.Pipeline, right: k.Pipeline, lowering: _Lowering, columns: Columns
) -> tuple[Pushed, tuple[k.Expr, ...], tuple[k.Operator, ...]]:
    """The tests of the ``where`` right after a join that read one side's columns only, as filters
    of that side (a right column a left one shadows is ``Name1`` there), the tests reading both
    sides, and the operators after those ``where``.

    ``L | join R on k | where c(R)`` pairs the same rows as ``L | join (R | where c) on k``; a test
    reading both sides (how far apart their times are) stays after the join and is left out."""
    pushed: Pushed = ([], [])
    if columns[0] is None or columns[1] is None:
        return pushed, (), rest
    # a test after a side's summary may read an aggregate: a threshold there, which is not built
    summarized = [any(isinstance(op, k.Summarize) for op in side.operators) for side in (left, right)]
    kept: list[k.Expr] = []
    wheres = [op for op in takewhile(lambda op: isinstance(op, k.Where), rest) if isinstance(op, k.Where)]
    for op in wheres:
        for test in k.chain(op.predicate, "and"):
            moved = _one_side(test, (columns[0], columns[1]), lowering)
            if moved is None or summarized[moved[0]]:
                kept.append(test)
                continue
            pushed[moved[0]].append(k.Where(moved[1], op.pos))
    return pushed, tuple(kept), rest[len(wheres) :]


def _joined_columns(
    tests: tuple[k.Expr, ...], left: k.Pipeline, right: k.Pipeline, lowering: _Lowering, columns: Columns
) -> tuple[k.Expr, ...] | None:
    """Tests after the join in the columns of kusto's join of the two rules' queries, which
    return whole table rows (a right column the left table also has is ``Name1``), constants in
    place; None when a test reads a computed column."""
    if columns[0] is None or columns[1] is None:
        return None
    sides = (left, right)
    tables = [_table_columns(side, lowering) for side in sides]
    joined: list[k.Expr] = []
    for test in tests:
        names = set(k.names(test)) - set(lowering.tables)
        # the joined query has no `let`: the constants a test reads are written in place
        renamed = {name: lowering.resolve(k.Name(name)) for name in names & set(lowering.scalars)}
        if any(isinstance(value, k.Name) for value in renamed.values()):
            return None
        for name in names - set(lowering.scalars):
            side, column = _side_of(name, columns[0], columns[1])
            origin = None if side is None else _origin(sides[side], column)
            if side is None or not isinstance(origin, k.Name) or origin.name not in tables[side]:
                return None
            renamed[name] = k.Name(origin.name + ("1" if side and origin.name in tables[0] else ""))
        joined.append(cast(k.Expr, _substituted(test, renamed)))
    return tuple(joined)


def _table_columns(side: k.Pipeline, lowering: _Lowering) -> Mapping[str, str]:
    return lowering.schema[side.source.name] if isinstance(side.source, k.TableRef) else {}


# the event time of each side in kusto's join of the two rules' queries
_LEFT_TIMES = frozenset({"Timestamp", "TimeGenerated"})
_RIGHT_TIMES = frozenset({"Timestamp1", "TimeGenerated1"})


def _gap(tests: tuple[k.Expr, ...], lowering: _Lowering) -> timedelta | None:
    """The most the sides' event times can differ where a test bounds it both ways:
    ``R between (L .. L + 5m)``, ``(R - L) between (0m .. 5m)``, ``abs(R - L) < 5m``, the same with
    ``datetime_diff('minute', R, L)`` and a number of minutes."""
    gaps = [gap for test in tests if (gap := _bounded(test, lowering)) is not None]
    return min(gaps, default=None)


def _bounded(test: k.Expr, lowering: _Lowering) -> timedelta | None:
    if isinstance(test, k.Between) and not test.negated:
        if (unit := _difference(test.left)) is not None:  # (R - L) between (a .. b)
            low, high = _amount(test.low, unit, lowering), _amount(test.high, unit, lowering)
        else:  # R between (L + a .. L + b): the offsets from the other side's time
            low, high = _offset(test.low, test.left, lowering), _offset(test.high, test.left, lowering)
        return None if low is None or high is None else max(abs(low), abs(high))
    if (
        isinstance(test, k.Binary)
        and test.op in ("<", "<=")
        and isinstance(test.left, k.Call)
        and test.left.function == "abs"
        and len(test.left.args) == 1
        and (unit := _difference(test.left.args[0])) is not None
    ):  # abs(R - L) < b
        return _amount(test.right, unit, lowering)
    return None


def _difference(expr: k.Expr) -> str | None:
    """The unit an expression counts the difference of the two sides' event times in: ``""`` for
    ``R - L`` (a timespan), ``minute`` for ``datetime_diff('minute', R, L)``; None for another."""
    if isinstance(expr, k.Binary) and expr.op == "-":
        unit, times = "", (expr.left, expr.right)
    elif isinstance(expr, k.Call) and expr.function == "datetime_diff" and len(expr.args) == 3:
        first, *rest = expr.args
        if not isinstance(first, k.StringLit):
            return None
        unit, times = first.value.lower(), (rest[0], rest[1])
    else:
        return None
    names = {getattr(time, "name", None) for time in times}
    return unit if names & _LEFT_TIMES and names & _RIGHT_TIMES else None


def _amount(bound: k.Expr, unit: str, lowering: _Lowering) -> timedelta | None:
    """A bound on a time difference: a timespan, or a number of ``unit`` (``datetime_diff``)."""
    if not unit:
        return _span(bound, lowering)
    count = lowering.resolve(bound)
    negative = isinstance(count, k.Unary) and count.op == "-"
    count = count.operand if isinstance(count, k.Unary) and count.op in ("-", "+") else count
    if not isinstance(count, k.NumberLit):
        return None
    span = _span(k.TimespanLit(f"{abs(count.value)}{unit}"), lowering)
    return None if span is None else -span if negative else span


def _offset(bound: k.Expr, time: k.Expr, lowering: _Lowering) -> timedelta | None:
    """How far ``bound`` is from the other side's time (``L``, ``L + 5m``, ``datetime_add('minute',
    5, L)``), where ``time`` is one side's time and ``L`` the other's."""
    own = getattr(time, "name", None)
    other = _RIGHT_TIMES if own in _LEFT_TIMES else _LEFT_TIMES if own in _RIGHT_TIMES else frozenset()
    if isinstance(bound, k.Name) and bound.name in other:
        return timedelta(0)
    if isinstance(bound, k.Binary) and bound.op in ("+", "-") and getattr(bound.left, "name", None) in other:
        span = _span(bound.right, lowering)
        return None if span is None else span if bound.op == "+" else -span
    if isinstance(bound, k.Call) and bound.function == "datetime_add" and len(bound.args) == 3:
        unit, amount, base = bound.args
        count = lowering.resolve(amount)
        if isinstance(unit, k.StringLit) and isinstance(count, k.NumberLit):
            span = _span(k.TimespanLit(f"{count.value}{unit.value.lower()}"), lowering)
            return span if getattr(base, "name", None) in other else None
    return None


def _span(expr: k.Expr, lowering: _Lowering) -> timedelta | None:
    resolved = lowering.resolve_span(expr)
    if isinstance(resolved, k.Unary) and resolved.op == "-":
        span = _timespan(resolved.operand)
        return None if span is None else -span
    return _timespan(resolved)


def _one_side(
    test: k.Expr, columns: tuple[list[str], list[str]], lowering: _Lowering
) -> tuple[int, k.Expr] | None:
    """The side (0 left, 1 right) whose columns alone a test after the join reads, and the test
    in that side's names; None for a test reading both sides, or no column."""
    names = set(k.names(test)) - set(lowering.scalars) - set(lowering.tables)
    found = {name: _side_of(name, *columns) for name in names}
    sides = {side for side, _ in found.values()}
    if len(sides) != 1 or None in sides:
        return None
    renamed = {name: k.Name(column) for name, (_, column) in found.items() if name != column}
    return sides.pop() or 0, cast(k.Expr, _substituted(test, renamed))


def _side_of(name: str, left: list[str], right: list[str]) -> tuple[int | None, str]:
    """Which side's output column a name after a join is (0 left, 1 right), and its name there."""
    if name in left:
        return 0, name
    if name in right:
        return 1, name
    if name.endswith("1") and name[:-1] in left and name[:-1] in right:
        return 1, name[:-1]
    return None, name


def _filter(side: k.Pipeline, schema: Schema) -> bool:
    """Whether a side is an event table's rows kept by at least one ``where`` (and shaped)."""
    return (
        isinstance(side.source, k.TableRef)
        and side.source.name in schema
        and any(isinstance(op, k.Where) for op in side.operators)
        and all(isinstance(op, _SIDE) or _keeps_keys(op) for op in side.operators)
    )


def _keeps_keys(op: k.Operator) -> bool:
    """Whether an operator keeps a row for every key value it is given (it only reshapes)."""
    return isinstance(op, _KEEPING) or getattr(op, "keyword", None) in _SHAPING_KEYWORDS


def _keys(
    join: k.Join, left: k.Pipeline, right: k.Pipeline, lowering: _Lowering, returned: int
) -> tuple[list[tuple[tuple[str, str], str]], timedelta | None] | None:
    """Each key as the (left, right) table columns it compares and its output column name (on the
    ``returned`` side: 1 for a right semi-join), and the span of a key both sides compute as
    ``bin(Timestamp, span)`` (the same time bucket)."""
    pairs: list[tuple[tuple[str, str], str]] = []
    bucket: timedelta | None = None
    for expr in join.on:
        if isinstance(expr, k.Name):
            names = (expr.name, expr.name)
        elif isinstance(expr, k.Binary) and expr.op == "==":
            sides = {_side(expr.left): _member(expr.left), _side(expr.right): _member(expr.right)}
            if set(sides) != {"$left", "$right"}:
                return None
            names = (sides["$left"] or "", sides["$right"] or "")
        else:
            return None
        origins = (_origin(left, names[0]), _origin(right, names[1]))
        spans = [_bucket(origin, lowering) for origin in origins]
        if spans[0] is not None and spans[0] == spans[1] and bucket in (None, spans[0]):
            bucket = spans[0]
            continue
        columns = [
            origin.name
            if isinstance(origin, k.Name) and origin.name in lowering.schema[side.source.name]
            else None
            for origin, side in ((origins[0], left), (origins[1], right))
            if isinstance(side.source, k.TableRef)
        ]
        if len(columns) != 2 or columns[0] is None or columns[1] is None:
            return None
        pairs.append(((columns[0], columns[1]), names[returned]))
    return (pairs, bucket) if pairs else None


def _origin(side: k.Pipeline, name: str) -> k.Expr | None:
    """What a side's output column ``name`` holds: a table column through plain renames, or the
    expression an ``extend`` or a summary's group-by computes it with (None: a summary drops it)."""
    expr: k.Expr = k.Name(name)
    for op in reversed(side.operators):
        if not isinstance(expr, k.Name):
            break
        if isinstance(op, k.Summarize) and not any(output_column(a) == expr.name for a in op.by):
            return None
        assignments = op.by if isinstance(op, k.Summarize) else ()
        if isinstance(op, k.Extend | k.Project | k.ProjectRename):
            assignments = op.columns
        expr = next((a.expr for a in assignments if output_column(a) == expr.name), expr)
    return expr


def _bucket(origin: k.Expr | None, lowering: _Lowering) -> timedelta | None:
    """The span of ``bin(Timestamp, span)``, else None."""
    if not (isinstance(origin, k.Call) and origin.function == "bin" and len(origin.args) == 2):
        return None
    try:
        return lowering.time_bin(origin)
    except InexpressibleKqlError:
        return None


def _side(expr: k.Expr) -> str | None:
    return expr.target.name if isinstance(expr, k.Member) and isinstance(expr.target, k.Name) else None


def _member(expr: k.Expr) -> str | None:
    return expr.name if isinstance(expr, k.Member) else None


def plan(join: Join, left: MappedRule, right: MappedRule) -> Plan | None:
    """The correlation of two mapped sides, or None when no key has a Sigma field on both."""
    group_by: list[str] = []
    aliases: dict[str, tuple[str, str]] = {}
    kept: list[tuple[str, str]] = []
    notes: list[str] = []
    approximate = False
    for left_column, right_column in join.keys:
        fields: list[str | None] = []
        for mapped, column in ((left, left_column), (right, right_column)):
            field = _field(mapped, column)
            stand_in = STAND_INS.get(column)
            if field is None and stand_in and (field := _field(mapped, stand_in)):
                approximate = True
                notes.append(
                    f"{column} has no Sigma field: the correlation groups by the device's name "
                    f"({field}), which a renamed device changes"
                )
            fields.append(field)
        if not (fields[0] and fields[1]):
            notes.append(
                f"the join key {left_column} = {right_column} has no Sigma field: the correlation "
                "groups more coarsely, which only adds groups (wider)"
            )
            continue
        name = fields[0] if fields[0] == fields[1] else f"{fields[0]}_{fields[1]}"
        if name in group_by:
            continue
        group_by.append(name)
        kept.append((left_column, right_column))
        if fields[0] != fields[1]:
            aliases[name] = (fields[0], fields[1])
    if not group_by:  # SigmaHQ refuses a correlation without group-by
        return None
    windows = (left.detection.window, right.detection.window)
    window = HUNTING_RETENTION if None in windows else max(w for w in windows if w is not None)
    if windows == (None, None):
        notes.append("the query has no time range: the correlation spans 30d, what advanced hunting keeps")
    elif windows[0] != windows[1]:
        notes.append(
            f"the sides read different time ranges: the correlation spans the longer one, "
            f"{targets.compact_timespan(window)}, on both (wider)"
        )
    span = join.bucket or window
    if join.gap is not None and join.bucket is None and join.gap < span:  # buckets of it would split pairs
        span = join.gap
        notes.append(
            f"the test(s) after the join bound how far apart in time the sides' events are: the "
            f"correlation's timespan is {targets.compact_timespan(span)}, in either order (wider)"
        )
    timespan = targets.compact_timespan(span)
    pairs = "in one time bucket" if join.bucket else "in the query's range"
    notes.insert(
        0,
        f"`{join.text}` becomes a Sigma temporal correlation: both rules match events of one "
        f"{', '.join(group_by)} within {timespan}, as the join pairs rows of both sides {pairs}",
    )
    if join.filtered_after:
        notes.append(
            f"the filter(s) after the join ({'; '.join(join.filtered_after)}) are left out: the "
            "correlation reports every group the join pairs (wider)"
        )
    if join.caseless:
        notes.append(
            f"`{join.operator}` compares the keys without case: the correlation must group them so "
            "(pysigma-backend-sqlite does; a backend grouping with case misses keys)"
        )
    wider = bool(join.filtered_after) or len(kept) < len(join.keys) or windows[0] != windows[1]
    return Plan(
        tuple(group_by),
        aliases,
        tuple(kept),
        window,
        join.bucket,
        timespan,
        tuple(notes),
        approximate,
        wider,
        join.caseless,
    )


def _field(mapped: MappedRule, column: str) -> str | None:
    """The Sigma field to group by for ``column``; none for a digest, which Sysmon writes in
    ``Hashes`` (pipelines rewrite a hash test, not a group-by)."""
    fields, _ = group_fields(mapped.table, (column,))
    return fields[0] if fields and fields[0] not in hex_fields() else None


@dataclass(frozen=True)
class Documents:
    correlation: dict[str, Any]
    bases: tuple[dict[str, Any], dict[str, Any]]
    yaml: str
    filename: str


def documents(left: dict[str, Any], right: dict[str, Any], filename: str, chosen: Plan) -> Documents:
    """The correlation and its two rules (the first rule's metadata, named after the file)."""
    stem = filename.removesuffix(".yml")
    names = (f"{stem}_left"[:86], f"{stem}_right"[:86])
    bases = tuple(
        {"title": f"{base['title'][:106]} - Join {side}", "id": base["id"], "name": name}
        | {key: value for key, value in base.items() if key not in ("title", "id")}
        for base, name, side in zip((left, right), names, ("Left", "Right"), strict=True)
    )
    digest = hashlib.sha256(f"{left['id']}|{right['id']}|temporal".encode()).digest()
    body: dict[str, Any] = {"type": "temporal", "rules": list(names), "group-by": list(chosen.group_by)}
    if chosen.aliases:
        body["aliases"] = {
            name: dict(zip(names, fields, strict=True)) for name, fields in chosen.aliases.items()
        }
    body["timespan"] = chosen.timespan
    correlation = {
        **{key: value for key, value in left.items() if key in CORRELATION_KEY_ORDER},
        "id": str(uuid.UUID(bytes=digest[:16], version=4)),
        "correlation": body,
    }
    correlation = {key: correlation[key] for key in CORRELATION_KEY_ORDER if correlation.get(key)}
    text = "---\n".join(dump_yaml(document) for document in (correlation, *bases))
    name = f"correlation_{stem}"[:86].rstrip("_") + ".yml"
    return Documents(correlation, (bases[0], bases[1]), text, name)


def convert(
    target: str, pair: Documents, chosen: Plan, queries: tuple[str | None, str | None], join: Join
) -> targets.TargetQuery:
    """One target's query of the correlation; ``queries`` are the target's queries of each rule."""
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    if one_sided(target, chosen):
        return targets.TargetQuery(queries[0], None)
    if target == "kusto":
        if None in queries:
            return targets.TargetQuery(None, "kusto: a side of the join does not convert")
        on = [f"$left.{left} == $right.{right}" for left, right in join.keys]
        sides = list(queries)
        if chosen.bucket:  # the time bucket both sides compute, as a key of its own
            bucket = f"\n| extend {BUCKET} = bin(Timestamp, {targets.compact_timespan(chosen.bucket)})"
            sides = [f"{query}{bucket}" for query in queries]
            on.append(BUCKET)
        tests = "".join(f"\n| where {to_kql(test)}" for test in join.crossing or ())
        if join.operator:  # a `K in (sub-query)` test, written back as such
            ((left, right),) = join.keys
            return targets.TargetQuery(
                f"{sides[0]}\n| where {left} {join.operator} (\n{sides[1]}\n| project {right}\n){tests}"
            )
        joined = f"{sides[0]}\n| join kind={join.kind} (\n{sides[1]}\n) on {', '.join(on)}"
        return targets.TargetQuery(joined + tests)
    correlation = pair.correlation
    # without a time bucket key, splunk and esql count once over the range, as the join pairs rows
    method = targets.WHOLE_RANGE if target in ("splunk", "esql") and not chosen.bucket else None
    range_ = targets.compact_timespan(chosen.window)
    if target == "splunk":  # `earliest=` leads the whole search: the range it counts over
        correlation = {**correlation, "rmm2sigma": {"window": {"compact": range_}}}
    elif method:  # esql's range method counts over the last timespan: the range, not the gap
        correlation = {**correlation, "correlation": {**correlation["correlation"], "timespan": range_}}
    try:
        collection = SigmaCollection.from_dicts([*pair.bases, correlation])
        converted = targets.backend(target).convert(collection, correlation_method=method)
    except (SigmaError, NotImplementedError, ValueError, TypeError, KeyError) as error:
        return targets.TargetQuery(None, f"{target}: {str(error).splitlines()[0]}")
    return targets.TargetQuery("\n".join(str(query) for query in converted))


# targets whose correlation compares group-by values with case (Splunk's `stats by`, ES|QL's
# `STATS BY` and EQL's `sample by` on keyword values)
_CASED = frozenset({"splunk", "esql", "eql"})


def one_sided(target: str, chosen: Plan) -> bool:
    """Whether ``target`` gets the left side's query: lucene cannot correlate, pySigma's esql
    and eql backends cannot rename a field to an alias (Sigma's ``aliases``), and a target that
    groups with case would miss the keys ``in~`` matches without."""
    return (
        target == "lucene"
        or (bool(chosen.aliases) and target in ("esql", "eql"))
        or (chosen.caseless and target in _CASED)
    )


def fidelity(target: str, sides: tuple[str, str], chosen: Plan, join: Join) -> tuple[str, tuple[str, ...]]:
    """A target's label on the groups the join reports, from its labels on each side's rows, and
    the notes saying why it differs from them."""
    if not all(side in Fidelity._value2member_map_ for side in sides):  # a side not proven here
        return next(side for side in sides if side not in Fidelity._value2member_map_), ()
    left, right = Fidelity(sides[0]), Fidelity(sides[1])
    label, wider, notes = Fidelity.worst(left, right), chosen.wider, []
    if one_sided(target, chosen):
        label, wider = left, True
        cannot = (
            "correlate two rules"
            if target == "lucene"
            else "correlate fields of different names"
            if chosen.aliases
            else "group keys without case"
        )
        notes.append(f"{target} cannot {cannot}: the query returns the events of the join's left side")
    elif target == "eql":
        wider = True
        notes.append("eql: a `sample by` the keys has no time bound: run it over the query's range")
    elif target == "sigma" and (chosen.bucket or not chosen.caseless):
        wider = True
        if chosen.bucket:
            notes.append(
                f"sigma: a backend may slide the {chosen.timespan} windows (sqlite does), pairing events "
                "of neighbouring buckets too (wider)"
            )
        if not chosen.caseless:
            notes.append(
                "sigma: a backend may group the keys without case (sqlite does), pairing keys the join "
                "keeps apart because they differ in case (wider)"
            )
    elif target == "kusto":  # the original join and the tests reading both sides: only the rest is lost
        wider = bool(join.after) or join.crossing is None
    elif target in ("splunk", "esql"):
        counted = f"in {chosen.timespan} buckets" if chosen.bucket else "once over the time range"
        notes.append(f"{target}: the two rules are counted {counted}, as the join pairs them")
    if chosen.approximate and target != "kusto":
        label = Fidelity.worst(label, Fidelity.APPROXIMATE)
    elif wider and label is Fidelity.EXACT:
        label = Fidelity.WIDENED
    return label.value, tuple(notes)
