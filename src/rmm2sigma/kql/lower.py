"""Lower a KQL syntax tree into the detection model.

Only what a Sigma rule can carry becomes a predicate; everything else is either refused with a
located error (it would change what the rule detects) or recorded as a note (it only shapes the
output, like ``extend`` or ``project``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import fields, is_dataclass, replace
from datetime import timedelta
from typing import TypeGuard, cast

from ..errors import InexpressibleKqlError, Rmm2SigmaError
from ..model import (
    ANY_COLUMN,
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
    Threshold,
    Value,
    walk,
)
from ..regex import always_captures
from . import syntax as k
from .desugar import desugared
from .printer import to_kql
from .syntax import chain as _chain
from .syntax import names as _names

# operator -> (match, case_sensitive, negated); all KQL string operators are listed in FACTS §2
_STRING_OPERATORS: dict[str, tuple[Match, bool, bool]] = {}
for _name, _match in (
    ("has", Match.HAS),
    ("hasprefix", Match.HASPREFIX),
    ("hassuffix", Match.HASSUFFIX),
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
        ":": (Match.HAS, False, False),  # `Column:"x"`, search's spelling of `has` (valid in `where` too)
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
# ``<`` <-> ``>`` when the operands are swapped (``ago(7d) < Timestamp``)
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!=", "=~": "=~", "!~": "!~"}
# `not(x < 5)` is `x >= 5`, also on a null x (both null, so `where` drops the row)
_COMPLEMENTS = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}
# the event time: a bound on it is the rule's schedule, not a test (Sentinel adds TimeGenerated)
TIME_COLUMNS = frozenset({"Timestamp", "TimeGenerated"})
# functions of one column that keep its value (up to case) and can be folded into the test
_CASE_FUNCTIONS = {"tolower": str.lower, "toupper": str.upper}
# conversions of a JSON key to the number it holds (Defender writes numbers there as numbers)
_NUMBER_FUNCTIONS = ("tolong", "toint")
# a join's kind when the query names none: an inner join of unique left keys, a left outer lookup
_DEFAULT_KINDS = {"join": "innerunique", "lookup": "leftouter"}
# operators that only shape the output, by the ``keyword`` of the syntax node (``top``: see below)
_SHAPING_KEYWORDS = frozenset(
    {"sort", "order", "project-away", "project-rename", "project-reorder", "project-keep", "serialize", "as"}
)
# aggregates building a set or list (KQL's default output name prefix); a second argument caps the size
# a regex anchored at both ends (flags first), whose middle a part's match is found by in the column
_ANCHORED = re.compile(r"(?P<flags>(?:\(\?[a-z]+\))?)\^(?P<inner>.*[^\\])\$", re.DOTALL)
_SET_FUNCTIONS = {"make_set": "set", "makeset": "set", "make_list": "list", "makelist": "list"}
# join kinds whose result holds rows of the right side that no left row selected
_RIGHT_JOINS = frozenset({"rightouter", "fullouter", "rightanti", "rightantisemi", "rightsemi"})
# aggregates that keep a whole row of each group given `*`: the latest, the earliest, any
_ROW_PICKERS = frozenset({"arg_max", "arg_min", "take_any", "any"})
_ROW_PLUGINS = frozenset({"bag_unpack"})  # evaluate plugins that reshape each input row
# Defender's functions that add columns to each row (learn.microsoft.com, advanced hunting)
_ENRICHMENTS = frozenset({"FileProfile", "DeviceFromIP", "SeenBy"})
_PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")  # RFC 1918, as ipv4_is_private
_TIMESPAN = re.compile(r"^(\d+(?:\.\d+)?)([a-z]+)$")
# every unit spelling of Kusto's timespan literals (grammar.lark's TIMESPAN), as timedelta keywords
_TIMESPAN_UNITS = {
    **dict.fromkeys(("d", "day", "days"), "days"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "hours"),
    **dict.fromkeys(("m", "min", "minute", "minutes"), "minutes"),
    **dict.fromkeys(("s", "sec", "second", "seconds"), "seconds"),
    **dict.fromkeys(("ms", "milli", "millis", "millisecond", "milliseconds"), "milliseconds"),
    **dict.fromkeys(("micro", "micros", "microsecond", "microseconds"), "microseconds"),
}

Schema = Mapping[str, Mapping[str, str]]


def lower(query: k.Query, schema: Schema) -> Detection:
    """The detection a query performs; raises ``UnsupportedKqlError`` at the offending node."""
    return lower_kept(query, schema)[0]


def lower_kept(query: k.Query, schema: Schema) -> tuple[Detection, k.Query]:
    """The detection and the part of the query it stands for: without a join side or the
    operators it leaves out (each only widens), which is what a proof runs the rule against."""
    lowering = _Lowering(desugared(query, schema), schema)
    detection = lowering.detection()
    return detection, lowering.kept


_fail = k.refusal  # a refusal: converting would change what the query means


def _skip(message: str, node: object) -> InexpressibleKqlError:
    """A test or operator Sigma cannot carry: left out where that only widens, else a refusal."""
    pos = getattr(node, "pos", k.NOWHERE)
    return InexpressibleKqlError(message, line=pos.line or None, column=pos.column or None)


class _Lowering:
    def __init__(self, query: k.Query, schema: Schema) -> None:
        self.query = query
        self.schema = schema
        self.scalars: dict[str, k.Expr] = {}
        self.tables: dict[str, k.Pipeline] = {}
        self.functions: dict[str, k.FunctionDef] = {}
        for let in query.lets:
            if isinstance(let.value, k.Pipeline):
                self.tables[let.name] = let.value
            elif isinstance(let.value, k.FunctionDef):  # a call to a function stays unresolved
                self.functions[let.name] = let.value
            else:
                self.scalars[let.name] = let.value
        self.notes: list[str] = []
        self.parameters: set[str] = set()  # declared query parameters: their value comes with each run
        for setting in query.settings:
            if isinstance(setting, k.DeclareParameters):
                self.parameters.update(param.name for param in setting.params)
            self.notes.append(
                f"`{_shorten(to_kql(setting))}` is a statement about how the query runs, not about its rows; "
                "it is not part of a Sigma rule"
            )
        self.window: timedelta | None = None
        self.computed: dict[str, k.Expr] = {}  # extend columns, inlined where a filter reads them
        # computed columns being inlined: inside its value, `extend X = tolower(X)` reads the column X
        self.expanding: set[str] = set()
        self.set_lengths: dict[str, AggregateFunction] = {}  # extend N = array_length(<a make_set>)
        self.set_caps: dict[str, int] = {}  # make_set(X, cap): the output name's cap
        self.bin_text = ""  # the summarize's `bin(Timestamp, ...)`, for the note when it is left out
        self.inlined: set[str] = set()
        self.computed_by: list[str] = []  # summarize group-by columns computed by extend or `by x = ...`
        self.joined: str | None = None  # the first left outer join or lookup: it adds columns, not rows
        self.deduped: str | None = None  # `summarize arg_max(Timestamp, *) by K`: a row of each group
        # `mv-expand P` of `P = split(Column, sep)`: P -> (Column, sep); a test of one part implies one
        # of the column (``part_test``)
        self.parts: dict[str, tuple[str, str]] = {}

    def detection(self) -> Detection:
        body, left_out = self.body()
        if self.query.earlier:
            raise _fail(
                "a query with several result statements has no Sigma equivalent", self.query.earlier[0]
            )
        if isinstance(body.source, k.Call):
            raise _fail(
                f"a query starting with a call of `{body.source.function}()` has no Sigma equivalent "
                "(rmm2sigma follows a `let` function of scalar parameters named unlike its columns)",
                body.source,
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
        self.columns = dict(self.schema[table])  # plus the JSON keys tests read (json_member)
        conditions: list[Node] = [left_out] if left_out is not None else []
        aggregation: Aggregation | None = None
        extends: list[k.Extend] = []
        end = len(body.operators)
        first_join: tuple[int, int, Aggregation | None] | None = None
        for index, op in enumerate(body.operators):
            try:
                aggregation = self.operator(op, conditions, aggregation, extends)
            except InexpressibleKqlError as error:
                conditions.append(self.leave_out(body.operators[index:], error))
                end = index
                break
            if self.joined and first_join is None:
                first_join = (index, len(conditions), aggregation)
        if first_join and aggregation is first_join[2] and not any(map(_tests, conditions[first_join[1] :])):
            end = min(end, first_join[0])  # nothing after the join is in the rule: the proof stops there
        self.kept = k.Query(self.query.lets, k.Pipeline(body.source, body.operators[:end], body.pos))
        for op in extends:
            unused = [a.name or "" for a in op.columns if (a.name or "") not in self.inlined]
            if unused:
                self.notes.append(f"output shaping `{_shorten(to_kql(op))}` is not part of a Sigma rule")
        predicate: Node | None
        if not conditions:
            predicate = None
        else:
            predicate = conditions[0] if len(conditions) == 1 else And(tuple(conditions))
        if aggregation is not None and aggregation.bin is not None and aggregation.having is None:
            # without a threshold the buckets only shape the summary, which targets rebuild anyway
            self.notes.append(f"the time buckets `{self.bin_text}` of the summary are left out")
            aggregation = replace(aggregation, bin=None)
        at = (body.source.pos.line, body.source.pos.column) if body.source.pos.line else None
        notes = tuple(dict.fromkeys(self.notes))
        return Detection(table, predicate, self.window, aggregation, notes, at)

    def operator(
        self, op: k.Operator, conditions: list[Node], aggregation: Aggregation | None, extends: list[k.Extend]
    ) -> Aggregation | None:
        """Take in one operator: a filter, the summary, or output shaping (a note)."""
        keyword = getattr(op, "keyword", None)
        if isinstance(op, k.Where):
            if aggregation is not None:
                return self.threshold(op, aggregation)
            node = self.condition(op.predicate, top_level=True)
            if node is not None:
                conditions.append(node)
        elif isinstance(op, k.Summarize) and aggregation is None and self.deduped is None and picks_rows(op):
            self.deduped = _shorten(to_kql(op))
            conditions.append(
                Opaque(
                    self.deduped,
                    "it keeps one row of each group and a Sigma rule reports every matching event",
                    op.pos,
                )
            )
        elif isinstance(op, k.Summarize):
            if aggregation is not None:
                raise _skip("a summarize of a summary has no Sigma equivalent", op)
            if self.deduped is not None:
                raise _skip(f"a summary of the rows `{self.deduped}` keeps has no Sigma equivalent", op)
            return self.aggregation(op)
        elif isinstance(op, k.Extend) and aggregation is not None:
            self.set_length(op, aggregation)
        elif isinstance(op, k.Extend):
            extends.append(op)
            for assignment in op.columns:
                if assignment.name:
                    self.computed[assignment.name] = self.inline(assignment.expr)
        elif isinstance(op, k.Take):
            self.notes.append(
                f"`{_shorten(to_kql(op))}` caps the rows a hunting query returns; a Sigma rule "
                "reports every matching event, so it is left out"
            )
        elif isinstance(op, k.Project | k.ProjectRename):
            self.notes.append(f"output shaping `{_shorten(to_kql(op))}` is not part of a Sigma rule")
            for assignment in op.columns:  # `project A = B`: a later filter on A tests B
                if assignment.name:
                    self.computed[assignment.name] = self.inline(assignment.expr)
        elif isinstance(op, k.Distinct) or keyword in _SHAPING_KEYWORDS:
            self.notes.append(f"output shaping `{_shorten(to_kql(op))}` is not part of a Sigma rule")
        elif isinstance(op, k.Join | k.Lookup) and (op.kind or _DEFAULT_KINDS[op.keyword]) == "leftouter":
            self.joined = self.joined or _shorten(to_kql(op), 60)
            self.notes.append(
                f"`{_shorten(to_kql(op))}` adds the columns of another table to each row and keeps every "
                "row, so it is not part of the Sigma rule; tests on the columns it adds are left out"
            )
        elif isinstance(op, k.MvExpand) and (parts := self.split_parts(op)) is not None:
            self.parts.update(parts)
            self.notes.append(
                f"`{_shorten(to_kql(op))}` makes a row of each part of a split column; a test of a part "
                "is matched in the whole column, which holds every part"
            )
        elif keyword == "top" and self.sorts_by_time(op):
            self.notes.append(
                f"`{_shorten(to_kql(op))}` keeps the latest rows of a hunting query; a Sigma rule "
                "reports every matching event, so it is left out"
            )
        else:
            raise _skip(f"`{keyword or type(op).__name__.lower()}` has no Sigma equivalent", op)
        return aggregation

    def brings_rows(self, op: k.Operator) -> str | None:
        """Why an operator returns rows that are not rows of its input, or other than one result of
        them, or None (see ``leave_out``)."""
        if isinstance(op, k.Fork):
            return "returns several results"
        if isinstance(op, k.Consume):
            return "returns no rows"
        if isinstance(op, k.Find):
            return "returns the rows of the tables it searches"
        if isinstance(op, k.Scan):
            return "returns the rows of the sequences its steps match, with the columns the steps compute"
        if isinstance(op, k.Union):
            return "adds the rows of other queries"
        if isinstance(op, k.Join) and (op.kind or "").lower() in _RIGHT_JOINS:
            return f"of kind {op.kind} returns rows of its right side"
        if isinstance(op, k.Evaluate) and op.plugin.function not in _ROW_PLUGINS:
            return f"`{op.plugin.function}` returns rows of its own"
        if isinstance(op, k.Invoke):
            return self.invoked_rows(op.function)
        if isinstance(op, k.GetSchema):
            return "returns the columns of the input, not its rows"
        if isinstance(op, (k.Partition, k.MvApply, k.Facet)):  # their operators run on the rows of each part
            return next(filter(None, map(self.brings_rows, op.operators)), None)
        return None

    def called_rows(self, call: k.Call) -> k.Pipeline | None:
        """``F(1d) | where ...`` of ``let F = (p:timespan) { T | where Timestamp > ago(p) }``: the
        function's query with the arguments in place of its scalar parameters; None for any other
        call, or where a parameter is named like a column of the table (in Kusto the column wins)."""
        function = self.functions.get(call.function)
        if function is None or function.body.lets or function.body.earlier:
            return None
        body = function.body.body
        table = self.schema.get(body.source.name, {}) if isinstance(body.source, k.TableRef) else {}
        if any(param.type_name.startswith("(") or param.name in table for param in function.params):
            return None
        values = _arguments(function, call)
        return None if values is None else cast(k.Pipeline, _substituted(body, values))

    def invoked_rows(self, call: k.Call) -> str | None:
        """``invoke F()``: Defender's enrichment functions add columns to each row; a ``let``
        function is followed through its body, which must start from the rows it is given."""
        if call.function in _ENRICHMENTS:
            return None
        function = self.functions.get(call.function)
        if function is None:
            return f"runs `{call.function}()`, a function rmm2sigma cannot see"
        body = function.body.body
        first = function.params[0].name if function.params else None
        if function.body.earlier or not (isinstance(body.source, k.TableRef) and body.source.name == first):
            return f"runs `{call.function}()`, whose rows are not those of its input"
        return next(filter(None, map(self.brings_rows, body.operators)), None)

    def leave_out(self, rest: tuple[k.Operator, ...], error: InexpressibleKqlError) -> Opaque:
        """The operators from the first one Sigma cannot carry to the end, left out of the rule.

        That widens the rule when each of them only keeps, combines or reshapes rows selected
        before it (a filter, a join kept on the left, a summary); one that brings rows of its own
        (a union, a right join, a plugin) makes leaving them out a different query: a refusal.
        """
        for op in rest:
            reason = self.brings_rows(op)
            if reason is not None:
                raise _fail(f"`{op.keyword}` {reason}: the query has no Sigma equivalent", op)
        what = (
            "it and the operators after it only keep or reshape"
            if len(rest) > 1
            else "it only keeps or reshapes"
        )
        return Opaque(
            _shorten(to_kql(rest[0])),
            f"{_located(error)}; {what} the rows selected before it",
            rest[0].pos,
        )

    def sorts_by_time(self, op: object) -> bool:
        """Whether a ``top`` orders by the event time only (then it just picks the latest rows)."""
        names = set(_names(op))
        return bool(names) and names <= TIME_COLUMNS

    def inline(self, expr: k.Expr) -> k.Expr:
        """An ``extend`` value with earlier computed columns substituted (they may chain)."""
        if isinstance(expr, k.Name) and expr.name in self.computed:
            return self.computed[expr.name]
        if isinstance(expr, k.Call):
            return k.Call(expr.function, tuple(self.inline(a) for a in expr.args), expr.pos)
        return expr

    def body(self) -> tuple[k.Pipeline, Opaque | None]:
        """The pipeline whose rows the query returns, and the join side left out to get it.

        A ``join`` of kind right* returns rows of its right side: that side is the query, the left
        side only choosing among its rows. So is an inner join's right side when nothing filters
        the left one (``T | join (U | where x) on k``): each row it returns has a row of ``U | where
        x``. Leaving the other side out is a widening, stated as an ``Opaque`` condition.
        """
        body = self.expand(self.query.body)
        for index, op in enumerate(body.operators):
            if not isinstance(op, k.Join):
                continue
            kind = (op.kind or "innerunique").lower()
            unfiltered = not any(isinstance(o, k.Where | k.Search) for o in body.operators[:index])
            if kind not in _RIGHT_JOINS and not (unfiltered and kind in ("inner", "innerunique")):
                break
            if kind == "fullouter":
                break  # rows of both sides: a refusal (see ``leave_out``)
            rest = body.operators[index + 1 :] if kind in ("rightsemi", "rightanti", "rightantisemi") else ()
            right = self.expand(op.right)
            reason = (
                f"a Sigma rule cannot join tables; the `join kind={kind}` (query line {op.pos.line}) returns "
                "rows of its right side, which the rule keeps"
                + (", with the operators after the join left out" if not rest else "")
            )
            left = Opaque(
                f"{_shorten(to_kql(k.Pipeline(body.source, body.operators[:index])))} | join", reason, op.pos
            )
            return k.Pipeline(right.source, right.operators + rest, body.pos), left
        return body, None

    def expand(self, body: k.Pipeline) -> k.Pipeline:
        """A pipeline with the tabular ``let`` it starts from put in place: ``let x = T | where a;
        x | where b`` is ``T | where a | where b`` (also through ``materialize()``), and so is a
        call of a ``let`` function (``called_rows``)."""
        seen: set[str] = set()
        while True:
            source = body.source
            named: k.Expr | k.Pipeline | None = None
            if isinstance(source, k.Call) and source.function not in seen:
                seen.add(source.function)
                named = self.called_rows(source)
            elif isinstance(source, k.TableRef) and source.name not in seen:
                seen.add(source.name)
                named = self.tables.get(source.name)
                scalar = self.scalars.get(source.name)
                if scalar is not None and _is_call(scalar, "materialize") and len(scalar.args) == 1:
                    named = scalar.args[0]
                elif isinstance(scalar, k.Call):  # `let x = F(1d);`
                    named = self.called_rows(scalar)
                if isinstance(named, k.SubQuery):
                    named = named.pipeline
            if not isinstance(named, k.Pipeline):
                return body
            body = k.Pipeline(named.source, named.operators + body.operators, body.pos)

    # ------------------------------------------------------------ predicates

    def condition(self, expr: k.Expr, top_level: bool = False) -> Node | None:
        if isinstance(expr, k.Binary) and expr.op in ("and", "or"):
            parts = [self.condition(side, top_level and expr.op == "and") for side in _chain(expr, expr.op)]
            kept = tuple(p for p in parts if p is not None)
            if expr.op == "or" and len(kept) < len(parts):  # an operand true on every row
                reason = "one of its operands holds on every row, so it does"
                return Opaque(_shorten(to_kql(expr)), reason, expr.pos)
            return (And if expr.op == "and" else Or)(kept) if len(kept) > 1 else (kept[0] if kept else None)
        if _is_call(expr, "not") and len(expr.args) == 1 and (flipped := self.flipped_bool(expr.args[0])):
            return self.condition(flipped, top_level)
        if isinstance(expr, k.Call) and expr.function == "not" and len(expr.args) == 1:
            negated = expr.args[0]
            if _orders(negated):  # Sigma's `not` would keep the rows whose value is null: push it in
                return self.condition(_negated(negated), top_level)
            inner = self.condition(negated)
            if inner is None:
                return Opaque(_shorten(to_kql(expr)), "a negated time filter cannot be expressed", expr.pos)
            return Not(inner)
        if isinstance(expr, k.Name) and expr.name in self.computed and expr.name not in self.expanding:
            self.inlined.add(expr.name)
            self.expanding.add(expr.name)
            try:
                return self.condition(self.computed[expr.name], top_level)
            finally:
                self.expanding.discard(expr.name)
        if self.is_bool(expr):  # `where IsSigned`
            return self.condition(k.Binary("==", expr, k.BoolLit(True, expr.pos), expr.pos), top_level)
        if self.parts and set(_names(expr)) & set(self.parts):
            return self.part_test(expr)
        if isinstance(expr, k.Call) and (body := self.applied(expr)) is not None:
            return self.condition(body, top_level)
        if isinstance(expr, k.Call) and (chosen := self.boolean_choice(expr)) is not None:
            return self.condition(chosen, top_level)
        try:
            return self.leaf(expr, top_level)
        except InexpressibleKqlError as error:
            return Opaque(_shorten(to_kql(expr)), _located(error), expr.pos)

    def split_parts(self, op: k.MvExpand) -> dict[str, tuple[str, str]] | None:
        """The parts ``mv-expand`` makes rows of, when each is of ``split(Column, "sep")`` (written
        there or by an earlier ``extend``): part -> (column, separator); None for anything else."""
        parts: dict[str, tuple[str, str]] = {}
        for item in op.columns:
            name = item.name or (item.expr.name if isinstance(item.expr, k.Name) else None)
            value = (
                self.computed.get(item.expr.name, item.expr) if isinstance(item.expr, k.Name) else item.expr
            )
            if not (name and _is_call(value, "split") and len(value.args) == 2):
                return None
            column, separator = value.args[0], self.resolve(value.args[1])
            if not (isinstance(column, k.Name) and self.columns.get(column.name) == "string"):
                return None
            if not (isinstance(separator, k.StringLit) and separator.value):
                return None
            parts[name] = (column.name, separator.value)
        return parts

    def part_test(self, expr: k.Expr) -> Node:
        """A test of one part of a split column (``mv-expand``): left out, and what it implies of the
        whole column kept: a part equal to, holding, starting or ending with ``x`` (no separator in
        it) means the column holds ``x``; a term or a regex found in a part is found in the column
        (a regex anchored at both ends, with its anchors taken off). Wider, so negated tests imply
        nothing and are only left out."""
        (part, *others) = sorted(set(_names(expr)) & set(self.parts))
        column, separator = self.parts[part]
        reason = f"it tests one part of `split({column}, ...)` that `mv-expand` makes a row of"
        left_out = Opaque(_shorten(to_kql(expr)), reason, expr.pos)
        computed = self.computed.pop(part, None)  # the part, not the split it comes from
        self.columns[part] = "string"
        try:
            node = None if others else self.leaf(expr, top_level=False)
        except InexpressibleKqlError:
            node = None
        finally:
            del self.columns[part]
            if computed is not None:
                self.computed[part] = computed
        implied = _implied_by_part(node, column, separator)
        return And((left_out, implied)) if implied is not None else left_out

    def is_bool(self, expr: k.Expr) -> bool:
        """Whether ``expr`` is a boolean column (``IsSigned``)."""
        return isinstance(expr, k.Name) and self.columns.get(expr.name) == "bool"

    def flipped_bool(self, expr: k.Expr) -> k.Expr | None:
        """``not(IsSigned)`` as ``IsSigned == false``: Kusto's ``not`` of a null is null and drops
        the row, where Sigma's ``not`` keeps an event without the field. (A comparison is no null
        in Kusto: ``IsSigned != true`` holds on a null, as Sigma's ``not Signed: true`` does.)"""
        if self.is_bool(expr):
            return k.Binary("==", expr, k.BoolLit(False, expr.pos), expr.pos)
        return None

    def boolean_choice(self, call: k.Call) -> k.Expr | None:
        """``case(c1, true, c2, true, false)`` or ``iff(c, true, false)`` used as a filter: the ``or``
        of the conditions that choose ``true``, when no ``false`` comes before a ``true`` (that would
        need ``not``, which Kusto's `case` reads differently on a null: as false). None otherwise."""
        if call.function in ("iff", "iif") and len(call.args) == 3:
            pairs, default = [(call.args[0], call.args[1])], call.args[2]
        elif call.function == "case" and len(call.args) >= 3 and len(call.args) % 2:
            pairs, default = list(zip(call.args[:-1:2], call.args[1:-1:2], strict=True)), call.args[-1]
        else:
            return None
        values = [self.resolve(value) for _, value in pairs] + [self.resolve(default)]
        literals = [value for value in values if isinstance(value, k.BoolLit)]
        if len(literals) != len(values):
            return None
        chosen = [literal.value for literal in literals]
        last_true = max((i for i, value in enumerate(chosen) if value), default=-1)
        if last_true in (-1, len(pairs)) or not all(chosen[: last_true + 1]):
            return None  # nothing chooses true, the default does, or a false comes first
        conditions = [condition for condition, _ in pairs[: last_true + 1]]
        result = conditions[0]
        for condition in conditions[1:]:
            result = k.Binary("or", result, condition, call.pos)
        return result

    def applied(self, call: k.Call) -> k.Expr | None:
        """A call of a ``let`` function whose body is one scalar expression, as that expression
        with the arguments in place of the parameters; None for any other call."""
        function = self.functions.get(call.function)
        if function is None or function.body.lets or function.body.earlier or function.body.body.operators:
            return None
        body = function.body.body.source
        values = None if isinstance(body, k.TableRef | k.Pipeline) else _arguments(function, call)
        if values is None:
            return None
        del self.functions[call.function]  # a function calling itself is not followed again
        try:
            return cast(k.Expr, _substituted(body, values))
        finally:
            self.functions[call.function] = function

    def leaf(self, expr: k.Expr, top_level: bool) -> Node | None:
        """A test of one column (or a time bound, which gives None)."""
        if isinstance(expr, k.Call):
            return self.call(expr)
        if isinstance(expr, k.Between):
            return self.between(expr, top_level)
        if isinstance(expr, k.SetOp) and expr.op in _SET_OPERATORS:
            match, case_sensitive, negated, match_all = _SET_OPERATORS[expr.op]
            column, case = self.operand(expr.left)
            values = self.value_list(expr)
            if isinstance(values, Opaque):
                return values
            if not values:  # `!in ()`, `has_all ()`: true of every row; `in ()` of none
                self.every_row(expr, negated == match_all, "an empty list")
                return None
            return self.test(expr, column, case, match, values, case_sensitive, negated, match_all)
        if isinstance(expr, k.Binary) and expr.op in _STRING_OPERATORS:
            left, op, right = expr.left, expr.op, expr.right
            if self.is_column(right) and not self.is_column(left):
                left, op, right = right, _FLIPPED.get(op, op), left
            if _is_time(left):
                self.time_bound(expr, op, right, top_level)
                return None
            if isinstance(left, k.Name) and left.name == ANY_COLUMN:
                return self.any_column(expr, op, right)
            match, case_sensitive, negated = _STRING_OPERATORS[op]
            if match is Match.EQUALS and self.is_extract(left) and self.scalar(right) == "":
                return self.extract_test(left, expr, negated=not negated)
            column, case = self.operand(left)
            if self.is_column(right):
                return self.column_pair(expr, column, case, op, right)
            value = self.scalar(right)
            if self.columns.get(column) == "bool" and value in (0, 1):  # Kusto's `IsSigned == 1` is true
                value = bool(value)
            if value == "" and match is Match.EQUALS and self.columns.get(column) == "string":
                # a Kusto string is never null: `== ""` is isempty(), which Sigma asks of a missing field too
                return Predicate(column, Match.EMPTY, (), negated=negated, text=to_kql(expr), pos=expr.pos)
            if value == "" and match in _EMPTY_HOLDS and self.columns.get(column) == "string":
                self.every_row(expr, negated, "every string contains the empty string")
                return None
            if isinstance(value, str) and match in (Match.LT, Match.LTE, Match.GT, Match.GTE):
                raise _skip(f"`{op}` on a string has no Sigma modifier", expr)
            return self.test(expr, column, case, match, (value,), case_sensitive, negated)
        raise _skip(f"`{_shorten(to_kql(expr))}` has no Sigma equivalent", expr)

    def every_row(self, expr: k.Expr, negated: bool, why: str) -> None:
        """A test true on every row is left out with a note; negated, it is true on none, which a
        Sigma rule cannot say."""
        if negated:
            raise _skip(f"`{_shorten(to_kql(expr))}` holds on no row ({why})", expr)
        self.notes.append(f"`{_shorten(to_kql(expr))}` holds on every row ({why})")

    def call(self, expr: k.Call) -> Node:
        """A boolean function of one column: emptiness and IPv4 ranges."""
        function, args = expr.function, expr.args
        if function in ("isempty", "isnotempty") and len(args) == 1 and self.is_extract(args[0]):
            return self.extract_test(args[0], expr, negated=function == "isempty")
        if function in ("isempty", "isnotempty", "isnull", "isnotnull") and len(args) == 1:
            column, _ = self.operand(args[0])
            negated = function.startswith("isnot")
            if function in ("isnull", "isnotnull") and self.columns.get(column) == "string":
                # Kusto strings are never null: isnull() is always false, isnotnull() always true
                raise _fail(f"`{function}()` of the string column {column} is constant in Kusto", expr)
            match = Match.EMPTY if self.columns.get(column) == "string" else Match.NULL
            return Predicate(column, match, (), negated=negated, text=to_kql(expr), pos=expr.pos)
        if function in ("ipv4_is_in_range", "ipv4_is_match", "ipv4_is_private") and args:
            column, case = self.operand(args[0])
            if case is not None:
                raise _skip(f"`{function}()` of a case-converted column has no Sigma equivalent", expr)
            if function == "ipv4_is_private":
                if len(args) != 1:
                    raise _fail("`ipv4_is_private()` takes one address", expr)
                networks: tuple[Value, ...] = _PRIVATE_NETWORKS
            else:
                networks = (self.network(expr),)
            return Predicate(column, Match.CIDR, networks, text=to_kql(expr), pos=expr.pos)
        raise _skip(f"`{function}()` has no Sigma equivalent", expr)

    def is_extract(self, expr: k.Expr) -> bool:
        """Whether ``expr`` is ``extract(pattern, group, column)`` (through ``extend`` and ``tostring()``)."""
        return _is_call(self.extract_call(expr)[0], "extract")

    def extract_call(self, expr: k.Expr) -> tuple[k.Expr, set[str]]:
        """``expr`` with ``extend`` columns inlined and ``tostring()`` dropped, and those columns."""
        seen: set[str] = set()
        while True:
            name = expr.name if isinstance(expr, k.Name) else None
            if name in self.computed and name not in seen | self.expanding:
                seen.add(name)
                expr = self.computed[name]
            elif _is_call(expr, "tostring") and len(expr.args) == 1:
                expr = expr.args[0]
            else:
                return expr, seen

    def extract_test(self, expr: k.Expr, test: k.Expr, negated: bool) -> Node:
        """``isnotempty(extract(pattern, group, column))`` (``!= ""``): the column matches the
        pattern, when every match gives the group some text (``regex.always_captures``)."""
        call, inlined = self.extract_call(expr)
        assert isinstance(call, k.Call)
        self.inlined.update(inlined)
        pattern = self.scalar(call.args[0]) if len(call.args) == 3 else None
        group = self.scalar(call.args[1]) if len(call.args) == 3 else None
        if not (isinstance(pattern, str) and isinstance(group, int)):
            raise _skip("`extract()` with these arguments has no Sigma equivalent", call)
        if not always_captures(pattern, group):
            raise _skip(
                f"`extract()` of group {group} can be empty where the pattern matches, so its emptiness "
                "is no test of the pattern",
                call,
            )
        column, case = self.operand(call.args[2])
        if case is not None:
            raise _skip(f"`extract()` from `{case}()` has no Sigma equivalent", call)
        text = to_kql(test)
        return Predicate(column, Match.REGEX, (pattern,), True, negated=negated, text=text, pos=test.pos)

    def network(self, expr: k.Call) -> str:
        """The network of ``ipv4_is_in_range(ip, 'a.b.c.d/n')`` or ``ipv4_is_match(ip, 'a.b.c.d'[, n])``."""
        if len(expr.args) not in (2, 3) or (expr.function == "ipv4_is_in_range" and len(expr.args) != 2):
            raise _skip(f"`{expr.function}()` with these arguments has no Sigma equivalent", expr)
        text = self.scalar(expr.args[1])
        prefix = self.scalar(expr.args[2]) if len(expr.args) == 3 else None
        try:
            if prefix is not None:
                if "/" in str(text) or not isinstance(prefix, int):
                    raise ValueError(text)
                text = f"{text}/{prefix}"
            return str(ipaddress.IPv4Network(str(text), strict=False))
        except ValueError:
            raise _fail(f"`{_shorten(to_kql(expr))}` does not give an IPv4 network", expr) from None

    def test(
        self,
        expr: k.Expr,
        column: str,
        case: str | None,
        match: Match,
        values: tuple[Value, ...],
        case_sensitive: bool,
        negated: bool,
        match_all: bool = False,
    ) -> Node:
        """One column test; ``case`` is tolower/toupper applied to the column first."""
        if self.columns.get(column) in ("int", "long"):  # `RemotePort == "3389"`: Kusto converts
            values = tuple(int(v) if isinstance(v, str) and re.fullmatch(r"-?\d+", v) else v for v in values)
        if case is not None and case_sensitive:
            if match is Match.REGEX:
                raise _skip(f"`matches regex` on `{case}()` has no Sigma equivalent", expr)
            convert = _CASE_FUNCTIONS[case]
            # a value the conversion cannot produce never matches: without it the test is the same
            kept = tuple(v for v in values if not isinstance(v, str) or convert(v) == v)
            if not kept:
                raise _fail(
                    f"`{_shorten(to_kql(expr))}` never matches: no {case}() value has that case", expr
                )
            if len(kept) < len(values):
                if match_all:
                    raise _fail(f"`{_shorten(to_kql(expr))}` never matches", expr)
                self.notes.append(
                    f"`{_shorten(to_kql(expr))}`: values that {case}() cannot produce are left out"
                )
            values, case_sensitive = kept, False
        return Predicate(column, match, values, case_sensitive, match_all, negated, to_kql(expr), expr.pos)

    def column_pair(self, expr: k.Binary, column: str, case: str | None, op: str, right: k.Expr) -> Node:
        """``A == B``: Sigma's ``fieldref``."""
        other, other_case = self.operand(right)
        if op not in ("==", "!=", "=~", "!~") or case != other_case:
            raise _skip(f"`{_shorten(to_kql(expr))}` compares two columns in a way Sigma cannot", expr)
        _, case_sensitive, negated = _STRING_OPERATORS[op]
        return Predicate(
            column,
            Match.FIELDREF,
            (other,),
            case_sensitive and case is None,
            False,
            negated,
            to_kql(expr),
            expr.pos,
        )

    def any_column(self, expr: k.Binary, op: str, right: k.Expr) -> Node:
        """``* has 'x'``: a search in every column, Sigma's keywords."""
        match, case_sensitive, negated = _STRING_OPERATORS[op]
        value = self.scalar(right)
        if match not in (Match.HAS, Match.CONTAINS) or not isinstance(value, str):
            raise _skip(f"`{op}` over every column (`*`) has no Sigma equivalent", expr)
        return Predicate(ANY_COLUMN, match, (value,), case_sensitive, False, negated, to_kql(expr), expr.pos)

    def time_bound(self, expr: k.Binary, op: str, value: k.Expr, top_level: bool) -> None:
        """A bound on the event time becomes the rule's look-back window, or a note to schedule it."""
        if not top_level or op not in ("<", "<=", ">", ">="):
            raise _skip("a time filter is only supported as a top-level `>`/`<` or `between`", expr)
        self.note_ingestion_time(expr)
        bound = self.resolve(value)
        if op in ("<", "<="):
            if not (_is_call(bound, "now") and not bound.args):
                self.notes.append(
                    f"time bound `{_shorten(to_kql(expr))}` is not now; schedule the rule yourself"
                )
            return
        self.narrow_window(self.now_offset(bound), expr)

    def note_ingestion_time(self, expr: k.Binary | k.Between) -> None:
        sides = (expr.left, expr.right) if isinstance(expr, k.Binary) else (expr.left,)
        if any(_is_call(side, "ingestion_time") for side in sides):
            self.notes.append(
                f"`{_shorten(to_kql(expr))}` bounds when the rows were stored (`ingestion_time()`), "
                "a little after the events happened: the rule's window reads the events' time"
            )

    def narrow_window(self, offset: timedelta | None, expr: k.Expr) -> None:
        if offset is None:
            self.notes.append(
                f"time range `{_shorten(to_kql(expr))}` is not relative to now; schedule it yourself"
            )
        elif self.window is None or offset < self.window:
            self.window = offset

    def between(self, expr: k.Between, top_level: bool) -> Node | None:
        if _is_time(expr.left):
            if not top_level or expr.negated:
                raise _skip("a time range is only supported as a top-level filter", expr)
            self.note_ingestion_time(expr)
            end = self.resolve(expr.high)
            if not (_is_call(end, "now") and not end.args):
                self.notes.append(
                    f"time range `{_shorten(to_kql(expr))}` does not end now; schedule it yourself"
                )
                return None
            self.narrow_window(self.now_offset(self.resolve(expr.low)), expr)
            return None
        column, case = self.operand(expr.left)
        if case is not None:
            raise _skip(f"`between` on `{case}()` has no Sigma equivalent", expr)
        low, high = self.scalar(expr.low), self.scalar(expr.high)
        text = to_kql(expr)
        if expr.negated:  # not Not(...): Sigma's not would keep an event without the column
            return Or(
                (
                    Predicate(column, Match.LT, (low,), text=text, pos=expr.pos),
                    Predicate(column, Match.GT, (high,), text=text, pos=expr.pos),
                )
            )
        return And(
            (
                Predicate(column, Match.GTE, (low,), text=text, pos=expr.pos),
                Predicate(column, Match.LTE, (high,), text=text, pos=expr.pos),
            )
        )

    def now_offset(self, expr: k.Expr) -> timedelta | None:
        """``now(-5d)`` and ``ago(5d)`` (``let`` constants resolved) as the 5-day distance from now."""
        if not isinstance(expr, k.Call) or len(expr.args) != 1:
            return None
        return _now_offset(k.Call(expr.function, (self.resolve_span(expr.args[0]),), expr.pos))

    def resolve_span(self, expr: k.Expr) -> k.Expr:
        if isinstance(expr, k.Unary):
            return k.Unary(expr.op, self.resolve(expr.operand), expr.pos)
        return self.resolve(expr)

    def is_column(self, expr: k.Expr) -> bool:
        """A column (possibly case-converted or computed by ``extend``), not a ``let`` constant."""
        expr = self.computed.get(expr.name, expr) if isinstance(expr, k.Name) else expr
        while isinstance(expr, k.Call) and expr.function in ("tolower", "toupper", "tostring") and expr.args:
            expr = expr.args[0]
        return isinstance(expr, k.Name) and expr.name not in self.scalars and expr.name in self.columns

    def operand(self, expr: k.Expr) -> tuple[str, str | None]:
        """The column a test reads and the case conversion applied to it (``tolower``/``toupper``).

        ``extend`` columns are inlined; ``tostring()`` of a string column is the column itself.
        """
        case: str | None = None
        substituted = set(self.expanding)  # `extend X = tolower(X)`: X in its value is the column
        while True:
            if isinstance(expr, k.Name) and expr.name in self.computed and expr.name not in substituted:
                self.inlined.add(expr.name)
                substituted.add(expr.name)
                expr = self.computed[expr.name]
            elif isinstance(expr, k.Call) and len(expr.args) == 1 and expr.function in _CASE_FUNCTIONS:
                case = case or expr.function  # the outer conversion wins
                expr = expr.args[0]
            elif isinstance(expr, k.Call) and len(expr.args) == 1 and expr.function == "tostring":
                inner = expr.args[0]
                if self.json_member(inner):
                    expr = inner
                    continue
                if not (isinstance(inner, k.Name) and self.columns.get(inner.name) == "string"):
                    raise _skip("`tostring()` of a non-string value has no Sigma equivalent", expr)
                expr = inner
            elif (member := self.json_member(expr)) is not None:
                return member, case
            elif (
                isinstance(expr, k.Call)
                and len(expr.args) == 1
                and expr.function in _NUMBER_FUNCTIONS
                and (member := self.json_member(expr.args[0])) is not None
            ):  # `tolong(parse_json(AdditionalFields).DesiredAccess)`: the key's number
                self.columns[member] = "long"
                return member, case
            else:
                return self.column(expr, inlined=frozenset(substituted)), case

    def json_member(self, expr: k.Expr) -> str | None:
        """``parse_json(AdditionalFields).PipeName`` (``.x``, ``["x"]``, ``extractjson("$.x", c)``)
        as the column ``AdditionalFields.PipeName``: a key of a JSON column, which the mapping can
        name in Sigma (a pipe's name, a PowerShell command) like any column."""
        column: k.Expr | None = None
        key: str | None = None
        if isinstance(expr, k.Member):
            column, key = expr.target, expr.name
        elif isinstance(expr, k.Index) and isinstance(expr.index, k.StringLit):
            column, key = expr.target, expr.index.value
        elif _is_call(expr, "extractjson") or _is_call(expr, "extract_json"):
            typed = len(expr.args) == 3 and _is_call(expr.args[2], "typeof")  # the value's type
            path = expr.args[0] if len(expr.args) == 2 or typed else None
            if isinstance(path, k.StringLit) and re.fullmatch(r"\$\.\w+", path.value):
                column, key = expr.args[1], path.value[2:]
        inlined = set(self.expanding)  # `extend C = parse_json(C)`: C in its value is the column
        if isinstance(column, k.Name) and column.name in self.computed:  # `extend J = parse_json(C)`
            inlined.add(column.name)
            column = self.computed[column.name]
        if (
            isinstance(column, k.Call)
            and column.function in ("parse_json", "todynamic")
            and len(column.args) == 1
        ):
            column = column.args[0]
        if (
            column is not None and _is_call(column, "tostring") and len(column.args) == 1
        ):  # parse_json(tostring(C))
            column = column.args[0]
        if not (isinstance(column, k.Name) and column.name in self.columns and key and key.isidentifier()):
            return None
        computed = column.name in self.computed and column.name not in inlined
        if computed or self.columns[column.name] not in ("string", "dynamic"):
            return None
        name = f"{column.name}.{key}"
        self.columns[name] = "string"  # a missing key reads as empty, as tostring() gives it
        return name

    def column(self, expr: k.Expr, tested: bool = True, inlined: frozenset[str] = frozenset()) -> str:
        """The column ``expr`` names; a ``tested`` one must be comparable in Sigma (not a datetime).
        ``inlined``: computed columns whose value was put in place, where their name is the column."""
        if isinstance(expr, k.Call):
            raise _skip(f"`{expr.function}()` has no Sigma equivalent", expr)
        if not isinstance(expr, k.Name):
            raise _skip(f"`{_shorten(to_kql(expr))}` is not a column; Sigma tests columns only", expr)
        if expr.name in self.computed and expr.name not in inlined:
            raise _skip(f"{expr.name} is computed by `extend`; Sigma groups by columns only", expr)
        if expr.name in self.scalars:
            raise _skip(f"{expr.name} is a constant (`let`), not a column; Sigma tests columns only", expr)
        if expr.name not in self.columns and self.joined:
            raise _skip(f"{expr.name} is not a column of the table; it comes from `{self.joined}`", expr)
        if expr.name not in self.columns:
            raise _fail(f"unknown column {expr.name!r} for this table", expr)
        if tested and self.columns[expr.name] == "datetime":
            raise _skip(f"a test on the datetime column {expr.name} has no Sigma equivalent", expr)
        return expr.name

    def resolve(self, expr: k.Expr) -> k.Expr:
        seen: set[str] = set()
        while isinstance(expr, k.Name) and expr.name in self.scalars and expr.name not in seen:
            seen.add(expr.name)
            expr = self.scalars[expr.name]
        return expr

    def scalar(self, expr: k.Expr) -> Value:
        expr = self.resolve(expr)
        if isinstance(expr, k.StringLit | k.NumberLit | k.BoolLit):
            return expr.value
        if isinstance(expr, k.Unary) and expr.op == "-" and isinstance(expr.operand, k.NumberLit):
            return -expr.operand.value
        if isinstance(expr, k.Call):
            raise _skip(f"`{expr.function}()` has no Sigma equivalent", expr)
        if isinstance(expr, k.Name) and expr.name in self.parameters:
            raise _skip(f"`{expr.name}` is a query parameter, whose value each run of the query gives", expr)
        raise _skip(f"`{_shorten(to_kql(expr))}` is not a literal value", expr)

    def value_list(self, expr: k.SetOp) -> tuple[Value, ...] | Opaque:
        values: list[Value] = []
        for item in expr.items:
            item = self.resolve(item)
            if _is_call(item, "materialize") and len(item.args) == 1:  # a cached sub-query: the same rows
                item = item.args[0]
            if isinstance(item, k.Name) and item.name in self.tables:
                item = k.SubQuery(self.tables[item.name], item.pos)
            if isinstance(item, k.SubQuery):
                rows = self.sub_query_values(item.pipeline)
                if rows is None:
                    return Opaque(to_kql(expr), self._rows_reason(item.pipeline), expr.pos)
                values.extend(rows)
            elif _is_call(item, "dynamic") and item.args and isinstance(item.args[0], k.ArrayLit):
                values.extend(self.scalar(v) for v in item.args[0].items)
            elif _is_call(item, "pack_array"):
                values.extend(self.scalar(v) for v in item.args)
            else:
                values.append(self.scalar(item))
        return tuple(values)

    def _rows_reason(self, pipeline: k.Pipeline) -> str:
        """Why an ``in`` over a sub-query's rows has no Sigma equivalent: a feed read at run time,
        or another query's rows."""
        source = self.expand(pipeline).source
        if isinstance(source, k.Externaldata):
            return (
                f"it compares with the rows of an `externaldata` feed (query line {source.pos.line}, column "
                f"{source.pos.column}), read when the query runs, which a Sigma rule cannot read"
            )
        return "it compares with the rows of another query (a join), which a Sigma rule cannot do"

    def sub_query_values(self, pipeline: k.Pipeline) -> list[Value] | None:
        """Values of a one-column sub-query over constants (a ``datatable``, or ``print`` of a list
        that ``mv-expand`` makes rows of); None when it reads a real table."""
        source = pipeline.source
        if isinstance(source, k.TableRef) and source.name in self.tables:
            inner = self.tables[source.name]
            return self.sub_query_values(k.Pipeline(inner.source, inner.operators + pipeline.operators))
        if isinstance(source, k.Datatable):
            names = [name for name, _ in source.columns]
            width = len(names)
            values = [self.constant(v, {}) for v in source.values]
            rows: list[dict[str, ConstantCell]] = [
                dict(zip(names, values[start : start + width], strict=True))
                for start in range(0, len(values), width)
            ]
        elif isinstance(source, k.Print):
            names = [a.name or _output_name(a.expr) or f"print_{i}" for i, a in enumerate(source.columns)]
            rows = [{name: self.constant(a.expr, {}) for name, a in zip(names, source.columns, strict=True)}]
        else:
            return None
        for op in pipeline.operators:
            names, rows = self.constant_step(op, names, rows)
        if len(names) != 1:
            raise _skip("a value list must have one column", pipeline)
        found = [row[names[0]] for row in rows]
        if any(isinstance(value, list) for value in found):
            raise _skip("a value list must hold single values (`mv-expand` a list first)", pipeline)
        return cast(list[Value], found)

    def constant(self, expr: k.Expr, row: Mapping[str, ConstantCell]) -> ConstantCell:
        """A constant table's cell: a literal, a list (``dynamic([...])``, ``pack_array``), a
        column of the row, or ``tostring``/``tolower``/``toupper`` of one of those."""
        expr = self.resolve(expr)
        if isinstance(expr, k.Name) and expr.name in row:
            return row[expr.name]
        if _is_call(expr, "dynamic") and expr.args and isinstance(expr.args[0], k.ArrayLit):
            return [self.scalar(v) for v in expr.args[0].items]
        if _is_call(expr, "pack_array"):
            return [self.scalar(v) for v in expr.args]
        if isinstance(expr, k.Call) and expr.function in _CONSTANT_FUNCTIONS and len(expr.args) == 1:
            value = self.constant(expr.args[0], row)
            if isinstance(value, list):
                raise _skip(f"`{_shorten(to_kql(expr))}` of a list is no value list", expr)
            return _CONSTANT_FUNCTIONS[expr.function](value)
        return self.scalar(expr)

    def constant_step(
        self, op: k.Operator, names: list[str], rows: list[dict[str, ConstantCell]]
    ) -> tuple[list[str], list[dict[str, ConstantCell]]]:
        """A constant table after ``project``, ``distinct`` (or ``summarize by``) or ``mv-expand`` of
        one list column."""
        if isinstance(op, k.Project | k.Distinct) or (isinstance(op, k.Summarize) and not op.aggregates):
            picked = _picked(op)
            out = [a.name or _output_name(a.expr) or f"Column{i + 1}" for i, a in enumerate(picked)]
            kept = [{n: self.constant(a.expr, row) for n, a in zip(out, picked, strict=True)} for row in rows]
            if not isinstance(op, k.Project):
                kept = list({repr(sorted(row.items())): row for row in kept}.values())
            return out, kept
        if isinstance(op, k.MvExpand) and len(op.columns) == 1 and op.limit is None:
            item = op.columns[0]
            name = item.name or _output_name(item.expr)
            if name is None:
                raise _skip(f"`{_shorten(to_kql(op))}` must name the column it expands", op)
            expanded: list[dict[str, ConstantCell]] = []
            for row in rows:
                value = self.constant(item.expr, row)
                for part in value if isinstance(value, list) else [value]:
                    expanded.append({**row, name: part})
            return [*names, *([name] if name not in names else [])], expanded
        raise _skip(
            "only `project`, `distinct`, `summarize by` and `mv-expand` of constants (a datatable, "
            "`print`) can give a value list",
            op,
        )

    # ------------------------------------------------------------ aggregation

    def aggregation(self, op: k.Summarize) -> Aggregation:
        """The summary a hunting query returns; it never changes which events match, only how they
        are reported, so a size limit or a time bucket it cannot carry is left out with a note."""
        functions: list[AggregateFunction] = []
        for assignment in op.aggregates:
            call = assignment.expr
            if not isinstance(call, k.Call) or not (
                len(call.args) <= 1 or (len(call.args) == 2 and call.function in _SET_FUNCTIONS)
            ):
                raise _skip(f"aggregate `{_shorten(to_kql(call))}` is not supported", call)
            column = self.aggregated_column(call.args[0]) if call.args else None
            # KQL's default output names: count_, dcount_Column, set_Column
            name = assignment.name or f"{_SET_FUNCTIONS.get(call.function, call.function)}_{column or ''}"
            if len(call.args) == 2:
                cap = self.scalar(call.args[1])
                if not isinstance(cap, int):
                    raise _fail(f"`{_shorten(to_kql(call))}`: the size cap must be a whole number", call)
                self.set_caps[name] = cap
                self.notes.append(f"the size limit of `{_shorten(to_kql(call))}` only shortens the output")
            functions.append(AggregateFunction(name, call.function, column))
        by = []
        span: timedelta | None = None
        for assignment in op.by:
            expr = assignment.expr
            if _is_call(expr, "bin") and len(expr.args) == 2 and span is None:
                span = self.time_bin(expr)
                self.bin_text = _shorten(to_kql(expr))
                continue
            if assignment.name is not None or (isinstance(expr, k.Name) and expr.name in self.computed):
                # without a threshold the groups only shape the summary; with one, see threshold()
                self.computed_by.append(_shorten(to_kql(assignment)))
                # `extend X = f(X) | summarize by X`: the summary groups by the stored X
                if isinstance(expr, k.Name) and assignment.name is None and expr.name in self.columns:
                    by.append(expr.name)
                continue
            by.append(self.column(expr, tested=False))
        if self.computed_by:
            self.notes.append(
                f"the summary's group-by {', '.join(self.computed_by)} is computed: targets rebuild the "
                "summary by the stored columns"
            )
        return Aggregation(tuple(functions), tuple(by), bin=span)

    def aggregated_column(self, expr: k.Expr) -> str:
        """The column an aggregate reads; ``tostring()`` of a string column is the column itself."""
        if _is_call(expr, "tostring") and len(expr.args) == 1:
            inner = expr.args[0]
            if isinstance(inner, k.Name) and self.columns.get(inner.name) == "string":
                return inner.name
        return self.column(expr, tested=False)

    def time_bin(self, expr: k.Call) -> timedelta:
        """``bin(Timestamp, 1h)``: the buckets a threshold counts in."""
        column, size = expr.args
        span = _timespan(self.resolve(size))
        if not (isinstance(column, k.Name) and column.name in TIME_COLUMNS) or span is None:
            raise _skip(f"`{_shorten(to_kql(expr))}`: only `bin()` of the event time is supported", expr)
        return span

    def set_length(self, op: k.Extend, aggregation: Aggregation) -> None:
        """``extend N = array_length(set_X)`` after summarize: N is the count of distinct X.

        Other columns computed from the groups (entity names, say) only shape the output.
        """
        sets = {f.name: f for f in aggregation.functions if f.function in _SET_FUNCTIONS}
        for assignment in op.columns:
            expr = assignment.expr
            if not (
                assignment.name
                and _is_call(expr, "array_length")
                and len(expr.args) == 1
                and isinstance(expr.args[0], k.Name)
                and expr.args[0].name in sets
                and sets[expr.args[0].name].function in ("make_set", "makeset")
            ):
                self.notes.append(
                    f"output shaping `{_shorten(to_kql(assignment))}` is not part of a Sigma rule"
                )
                continue
            self.set_lengths[assignment.name] = sets[expr.args[0].name]

    def threshold(self, op: k.Where, aggregation: Aggregation) -> Aggregation:
        """``| where Count > 5`` after summarize: a lower bound on one count, or a located refusal."""
        expr = op.predicate
        names = {function.name: function for function in aggregation.functions} | self.set_lengths
        if self.computed_by:
            raise _skip(f"a threshold on groups of computed group-by {', '.join(self.computed_by)}", op)
        if aggregation.having is not None or not isinstance(expr, k.Binary):
            raise _skip("only one threshold `| where Count > N` after summarize is supported", op)
        left, comparison, right = expr.left, expr.op, expr.right
        if isinstance(right, k.Name) and right.name in names:
            left, comparison, right = right, _FLIPPED.get(comparison, comparison), left
        if not (isinstance(left, k.Name) and left.name in names):
            raise _skip("a filter after summarize must compare a count with a number", op)
        function = names[left.name]
        length = left.name if left.name in self.set_lengths else None
        if function.function not in ("count", "dcount") and length is None:
            raise _skip(f"a threshold on `{function.function}()` has no Sigma correlation", op)
        if comparison not in (">", ">="):
            raise _skip(
                f"`{_shorten(to_kql(expr))}` keeps the groups under a count: a target that counts "
                "more events or in shorter buckets would drop some, so only `>` and `>=` convert",
                op,
            )
        value = self.scalar(right)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _skip(f"`{_shorten(to_kql(expr))}`: the threshold must be a whole number", op)
        match = Match.GT if comparison == ">" else Match.GTE
        cap = self.set_caps.get(function.name)
        if length is not None and cap is not None and cap <= value + (match is Match.GT):
            raise _fail(f"`{_shorten(to_kql(expr))}` never holds: the set is capped at {cap}", op)
        return replace(aggregation, having=Threshold(function, match, value, to_kql(expr), length))


def _implied_by_part(node: Node | None, column: str, separator: str) -> Predicate | None:
    """The test of ``column`` that a test of one of its parts (split by ``separator``) implies."""
    if not isinstance(node, Predicate) or node.negated or node.match_all:
        return None
    values = [str(value) for value in node.values]
    if not values or any(separator in value or not value for value in values):
        return None
    if node.match in (Match.EQUALS, Match.CONTAINS, Match.STARTSWITH, Match.ENDSWITH):
        return replace(node, column=column, match=Match.CONTAINS)
    if node.match in (Match.HAS, Match.HASPREFIX, Match.HASSUFFIX) and not separator.isalnum():
        return replace(node, column=column)
    if node.match is Match.REGEX:
        found = [_ANCHORED.fullmatch(value) for value in values]
        if all(f is not None and "|" not in f["inner"] for f in found):  # ^...$: found inside the column
            return replace(node, column=column, values=tuple(f"{f['flags']}{f['inner']}" for f in found if f))
        return (
            replace(node, column=column)
            if not any(v.startswith(("^", "(?i)^")) or v.endswith("$") for v in values)
            else None
        )
    return None


# a cell of a constant table (``datatable``, ``print``): a value, or a list ``mv-expand`` makes rows of
ConstantCell = Value | list[Value]
# functions of one constant a value list may apply (Kusto's `tostring` writes booleans in small letters)
_CONSTANT_FUNCTIONS = {
    "tostring": lambda value: str(value).lower() if isinstance(value, bool) else str(value),
    "tolower": lambda value: str(value).lower(),
    "toupper": lambda value: str(value).upper(),
}


def _picked(op: k.Project | k.Distinct | k.Summarize) -> tuple[k.Assignment, ...]:
    """The columns a ``project``, a ``distinct`` or a ``summarize by`` keeps."""
    return op.by if isinstance(op, k.Summarize) else op.columns


def _output_name(expr: k.Expr) -> str | None:
    """The column Kusto names an unnamed expression after: a column, or the column a conversion
    of it reads (``tostring(x)`` is ``x``)."""
    if isinstance(expr, k.Name):
        return expr.name
    if isinstance(expr, k.Call) and expr.function in _CONSTANT_FUNCTIONS and len(expr.args) == 1:
        return _output_name(expr.args[0])
    return None


def _orders(expr: k.Expr) -> bool:
    """Whether an ``and``/``or``/``not`` tree holds an ordering (``<``, ``between`` ...), null on a null."""
    if isinstance(expr, k.Binary) and expr.op in ("and", "or"):
        return any(map(_orders, _chain(expr, expr.op)))
    if _is_call(expr, "not") and len(expr.args) == 1:
        return _orders(expr.args[0])
    return isinstance(expr, k.Between) or (isinstance(expr, k.Binary) and expr.op in _COMPLEMENTS)


def _negated(expr: k.Expr) -> k.Expr:
    """``not(expr)`` with the ``not`` moved to the tests (De Morgan, which holds with nulls too)
    and an ordering complemented: ``not(x < 5 or y)`` is ``x >= 5 and not(y)``."""
    if isinstance(expr, k.Binary) and expr.op in ("and", "or"):
        other = "or" if expr.op == "and" else "and"
        return k.Binary(other, _negated(expr.left), _negated(expr.right), expr.pos)
    if _is_call(expr, "not") and len(expr.args) == 1:
        return expr.args[0]
    if isinstance(expr, k.Binary) and expr.op in _COMPLEMENTS:
        return replace(expr, op=_COMPLEMENTS[expr.op])
    if isinstance(expr, k.Between):
        return replace(expr, negated=not expr.negated)
    return k.Call("not", (expr,), expr.pos)


def _arguments(function: k.FunctionDef, call: k.Call) -> dict[str, k.Expr] | None:
    """A function's parameters -> the call's arguments (a parameter's default for one left out);
    None when the call gives too many or leaves out one without a default."""
    if len(call.args) > len(function.params):
        return None
    values: dict[str, k.Expr] = {}
    for index, param in enumerate(function.params):
        value = call.args[index] if index < len(call.args) else param.default
        if value is None:
            return None
        values[param.name] = value
    return values


def _substituted(node: object, values: Mapping[str, k.Expr]) -> object:
    """A syntax node with each name in ``values`` replaced by its value (a function's arguments)."""
    if isinstance(node, k.Name):
        return values.get(node.name, node)
    if isinstance(node, tuple):
        return tuple(_substituted(item, values) for item in node)
    if is_dataclass(node) and not isinstance(node, type | k.Pos):
        changes = {f.name: _substituted(getattr(node, f.name), values) for f in fields(node)}
        return replace(node, **changes)
    return node


def _tests(condition: Node) -> bool:
    """Whether a condition keeps a test in the rule (one wholly left out does not)."""
    return not all(isinstance(leaf, Opaque) for leaf in walk(condition))


# the empty string is inside, at the start and at the end of every string
_EMPTY_HOLDS = frozenset({Match.CONTAINS, Match.STARTSWITH, Match.ENDSWITH})


def _is_time(expr: k.Expr) -> bool:
    """The events' time: ``Timestamp``, ``TimeGenerated``, or when the row was stored,
    ``ingestion_time()`` (FalconFriday's hunts bound that)."""
    return (isinstance(expr, k.Name) and expr.name in TIME_COLUMNS) or (
        _is_call(expr, "ingestion_time") and not expr.args
    )


def picks_rows(op: k.Summarize) -> bool:
    """Whether a summary keeps whole rows, one of each group (``arg_max(Timestamp, *)``,
    ``take_any(*)``): then the rows after it are rows of its input, as a filter's are."""
    return bool(op.aggregates) and all(
        isinstance(call := assignment.expr, k.Call)
        and call.function in _ROW_PICKERS
        and isinstance(call.args[-1], k.Name)
        and call.args[-1].name == "*"
        and len(call.args) == (1 if call.function in ("take_any", "any") else 2)
        for assignment in op.aggregates
    )


def _is_call(expr: k.Expr, name: str) -> TypeGuard[k.Call]:
    return isinstance(expr, k.Call) and expr.function == name


def _timespan(expr: k.Expr) -> timedelta | None:
    if not isinstance(expr, k.TimespanLit) or not (match := _TIMESPAN.match(expr.text)):
        return None
    unit = _TIMESPAN_UNITS.get(match.group(2))  # ticks (100 ns) are not followed
    return timedelta(**{unit: float(match.group(1))}) if unit else None


def _now_offset(expr: k.Expr) -> timedelta | None:
    """``now(-5d)`` and ``ago(5d)`` as the 5-day distance from now."""
    if not isinstance(expr, k.Call) or len(expr.args) != 1:
        return None
    arg, sign = expr.args[0], 1
    if isinstance(arg, k.Unary) and arg.op == "-":
        arg, sign = arg.operand, -1
    span = _timespan(arg)
    if span is None:
        return None
    if expr.function == "ago" and sign == 1:
        return span
    if expr.function == "now" and sign == -1:
        return span
    return None


def _located(error: Rmm2SigmaError) -> str:
    """An error message with its place, for a note: ``... (line 3, column 7)``."""
    if error.line is None:
        return error.message
    return f"{error.message} (query line {error.line}, column {error.column})"


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
