"""The detection model: what a query detects, independent of KQL text and of Sigma.

A ``Detection`` is a table, a boolean tree of ``Predicate`` leaves over that table's columns, a
time window and an optional aggregation. The KQL front end lowers syntax into it; the mapping
stage moves it into Sigma's taxonomy; the Sigma stage emits it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum

from .kql.syntax import NOWHERE, Pos


class Match(Enum):
    """How a value is compared with a column (the Sigma modifiers map 1:1 onto these)."""

    EQUALS = "equals"
    CONTAINS = "contains"
    STARTSWITH = "startswith"
    ENDSWITH = "endswith"
    HAS = "has"  # KQL whole-term match: no Sigma modifier, widened to CONTAINS or rendered as a regex
    HASPREFIX = "hasprefix"  # a term starts with the value: widened to CONTAINS or a regex, like HAS
    HASSUFFIX = "hassuffix"  # a term ends with the value
    REGEX = "regex"
    EMPTY = "empty"  # null or ""
    NULL = "null"  # null only (a non-string column: Kusto strings are never null)
    CIDR = "cidr"  # an IPv4 address inside one of the networks in ``values``
    FIELDREF = "fieldref"  # equal to the column named in ``values`` (of the same row)
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"


Value = str | int | float
ANY_COLUMN = "*"  # ``where * has 'x'``: any column of the row (Sigma keywords)


class Fidelity(Enum):
    """How a converted rule relates to the original, from best to worst.

    exact: selects the same events; widened: selects every original event and possibly more;
    approximate: the data model changed (another category, a condition with no Sigma field).
    Only a target's own limits give the last two: narrowed (it misses events the original
    selects) and diverged (it misses some and adds others).
    """

    EXACT = "exact"
    WIDENED = "widened"
    APPROXIMATE = "approximate"
    NARROWED = "narrowed"
    DIVERGED = "diverged"

    @staticmethod
    def worst(*labels: Fidelity) -> Fidelity:
        order = list(Fidelity)
        return max(labels, key=order.index, default=Fidelity.EXACT)


@dataclass(frozen=True)
class Predicate:
    """One column test. Several ``values`` mean any of them, or all of them with ``match_all``."""

    column: str
    match: Match
    values: tuple[Value, ...] = ()
    case_sensitive: bool = False
    match_all: bool = False
    negated: bool = False
    text: str = ""  # the KQL this came from, for notes
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class Opaque:
    """A condition with no column-level meaning in Sigma (e.g. a join with another table)."""

    text: str
    reason: str
    pos: Pos = field(default=NOWHERE, compare=False)


Node = Predicate | And | Or | Not | Opaque


@dataclass(frozen=True)
class AggregateFunction:
    """``FirstSeen=min(Timestamp)``: output name, function, argument column (None for count())."""

    name: str
    function: str
    column: str | None


@dataclass(frozen=True)
class Threshold:
    """``| where Count > 5`` after ``summarize``: a bound on one count (a Sigma correlation rule).

    Only lower bounds (``GT``/``GTE``) on ``count()``/``dcount()`` are kept: counting more events
    never drops a group, so a target that widens the events or cannot count widens the rule.
    """

    function: AggregateFunction  # count, dcount, or make_set whose length is compared
    match: Match  # GT or GTE
    value: int
    text: str = ""
    length: str | None = None  # ``extend N = array_length(set_X)``: N, the make_set's distinct count


@dataclass(frozen=True)
class Aggregation:
    functions: tuple[AggregateFunction, ...]
    by: tuple[str, ...]
    having: Threshold | None = None
    bin: timedelta | None = None  # ``bin(Timestamp, 1h)`` in ``by``: the threshold's time buckets


@dataclass(frozen=True)
class Detection:
    """A query's meaning: rows of ``table`` where ``predicate`` holds (None: all rows)."""

    table: str
    predicate: Node | None
    window: timedelta | None = None
    aggregation: Aggregation | None = None
    notes: tuple[str, ...] = ()
    at: tuple[int, int] | None = None  # line and column of the table in the query, for refusals


def simplify(node: Node | None) -> Node | None:
    """Flatten nested AND/OR and drop single-item groups; None stands for TRUE."""
    if node is None or isinstance(node, Predicate | Opaque):
        return node
    if isinstance(node, Not):
        inner = simplify(node.item)
        return None if inner is None else Not(inner)
    kind = type(node)
    items: list[Node] = []
    for child in node.items:
        simple = simplify(child)
        if simple is None:
            if kind is Or:  # TRUE absorbs an OR
                return None
            continue
        items.extend(simple.items if isinstance(simple, kind) else (simple,))
    if not items:
        return None
    return items[0] if len(items) == 1 else kind(tuple(items))


def walk(node: Node | None) -> list[Predicate | Opaque]:
    """All leaves, left to right."""
    if node is None:
        return []
    if isinstance(node, Predicate | Opaque):
        return [node]
    if isinstance(node, Not):
        return walk(node.item)
    return [leaf for child in node.items for leaf in walk(child)]
