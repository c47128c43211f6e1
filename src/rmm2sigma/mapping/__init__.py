"""Move a detection from Defender's tables into Sigma's taxonomy, deciding every semantic change.

Everything that changes what a rule matches happens here, with a note and a fidelity label:
``has`` (whole terms) becomes ``contains`` (wider) or a term-bounded regex (``exact=True``, and
always under a negation, where widening a test would narrow the rule); ``FileName`` becomes a test
on the end of ``Image``; a column with no Sigma field is replaced by the constant that widens.
A query the table's category keeps nothing of falls back, when that keeps a test, to another table
or category (``DeviceFileEvents``' hashes: ``file_executable_detected``; its download URLs: the
Zone.Identifier stream, ``create_stream_hash``), a change of data model.
The data lives in ``defender.yml``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any, cast

from ..errors import UnsupportedKqlError
from ..model import (
    ANY_COLUMN,
    And,
    Detection,
    Fidelity,
    Match,
    Node,
    Not,
    Opaque,
    Or,
    Predicate,
    Value,
    simplify,
    walk,
)
from ..regex import scoped_flags
from ..sigmahq import safe_load

# KQL's term operators: Sigma has no modifier for them, ``contains`` is the sound widening
_TERM_MATCHES = (Match.HAS, Match.HASPREFIX, Match.HASSUFFIX)


def _term_class(last: int = 0x52F) -> str:
    """Kusto's term characters (Unicode letters and digits) up to ``last``, as literal ranges.

    Sigma regexes must mean the same in Python, RE2 (Kusto) and PCRE, and literal ranges do where
    ``\\pL`` does not (Python's ``re`` lacks it). The range covers ASCII, Latin-1, Latin Extended,
    IPA, Greek and Cyrillic: text in other scripts next to a needle is where ``--exact`` can still
    differ from ``has``.
    """
    ranges: list[str] = []
    start: int | None = None
    for code in range(last + 2):
        is_term = code <= last and (chr(code).isalpha() or chr(code).isnumeric())
        if is_term and start is None:
            start = code
        elif not is_term and start is not None:
            ranges.append(chr(start) if start == code - 1 else f"{chr(start)}-{chr(code - 1)}")
            start = None
    return "".join(ranges)


TERM_CLASS = _term_class()
_TERM_CHAR = re.compile(f"[{TERM_CLASS}]")
_NOT_TERM = f"[^{TERM_CLASS}]"


@dataclass(frozen=True)
class FieldSpec:
    field: str
    part: str | None = None  # "file_name": the column holds the last part of the field's path
    values: Mapping[str, Value] | None = None  # Defender value -> Sigma value (e.g. logon types)
    prefix: str | None = None  # Defender writes this before the field's value (\\Device\\NamedPipe)
    # how Windows writes the column's value in the field (defender.yml, spelling): "hex" (a number as
    # hex text), "invocation" (a PowerShell command in Payload), "host" (ContextInfo's host line)
    spelling: str | None = None
    suffix: str | None = None  # the Sigma field holds the value followed by this (:Zone.Identifier)
    line: str | None = None  # the Sigma field is text of `key=value` lines; the value is this key's

    @property
    def whole(self) -> bool:
        """Whether the field holds the column's value and nothing else (not a path around a file
        name, not a text around a command), so that grouping by one is grouping by the other."""
        return self.part is None and self.spelling not in ("invocation", "host")

    def sigma_value(self, value: Any) -> Any:
        """A Defender value as the Sigma field holds it: the prefix taken off, the suffix added (to
        a value: an empty one stays empty), a number in hex (``2097151`` as Sysmon's ``0x1fffff``),
        a command as module logging invokes it, nothing else."""
        if self.prefix and isinstance(value, str) and value.lower().startswith(self.prefix.lower() + "\\"):
            return value[len(self.prefix) :]
        if self.suffix and isinstance(value, str) and value:
            return value + self.suffix
        if self.spelling == "hex" and (number := _decimal(value)) is not None:
            return hex(number)
        if self.spelling == "invocation" and isinstance(value, str) and value:
            return f'{INVOCATION.format(value)}: "{value}"'
        return value


LINE_BREAK = "  "  # how Sysmon's event 15 writes a stream's line break in Contents (SigmaHQ's rules)


def with_line(text: str, key: str, value: Any) -> str:
    """``text`` with the line ``key=value`` after its others; an empty value writes no line, as
    Windows writes no ``HostUrl=`` for a download it has no address of."""
    if value is None or value == "":
        return text
    return LINE_BREAK.join(part for part in (text, f"{key}={value}") if part)


# how module logging (event 4103) writes a command in Payload and the host process in ContextInfo
INVOCATION = "CommandInvocation({})"
HOST_LINE = "Host Application = "
_SUBSTRING_MATCHES = (Match.CONTAINS, *_TERM_MATCHES)
# the tests on a column that hold on a text holding its value, by spelling (mapping._Mapper.inside)
_INSIDE = {
    "invocation": (Match.EQUALS, Match.STARTSWITH, *_SUBSTRING_MATCHES),
    "host": (Match.EQUALS, Match.STARTSWITH, Match.ENDSWITH, *_SUBSTRING_MATCHES),
}


def _decimal(value: Any) -> int | None:
    """The whole number a value is, written as Defender writes it (``2097151``, or its text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"0|[1-9][0-9]*", value):
        return int(value)
    return None


@dataclass(frozen=True)
class TableSpec:
    name: str
    logsource: Mapping[str, str]
    file_prefix: str
    fields: Mapping[str, FieldSpec]
    approximate: str | None = None
    kusto_table: str | None = None
    fallbacks: tuple[Fallback, ...] = ()  # where a query this category keeps nothing of goes instead
    action_types: tuple[str, ...] = ()  # the ActionType values this category stands for
    categories: tuple[TableSpec, ...] = ()  # the table's other categories, chosen by ActionType
    conditions: Mapping[str, Value | list[Value]] | None = None  # Sigma tests the category implies
    unselected_note: str | None = None  # why the default category is approximate without ActionType
    sigmahq_rule: str | None = None  # SigmaHQ's rule that is this category's event kind alone


@dataclass(frozen=True)
class Fallback:
    """Another table (its columns renamed into it) or another category of the same table, where a
    query its own category keeps nothing of is mapped instead (``defender.yml``, ``fallback``)."""

    note: str | None
    table: str | None = None
    columns: Mapping[str, str] | None = None
    category: TableSpec | None = None


@dataclass(frozen=True)
class MappedRule:
    """A detection expressed over Sigma fields, ready to emit."""

    detection: Detection  # predicate columns are Sigma fields; table is the Defender table used
    table: TableSpec
    fidelity: Fidelity
    notes: tuple[str, ...]
    measurable: Fidelity  # what comparing events can show: ``fidelity`` without data-model changes
    # the columns a fallback renamed into the table it reads instead (the acting process's creation):
    # the proof's events for it; None when the rule reads the query's own rows
    renamed: Mapping[str, str] | None = None
    # the query's ActionType test is `in~` the kinds of the category it chose, which kusto writes back
    kinds_written: bool = False


@cache
def _mapping_data() -> Mapping[str, Any]:
    return cast(
        Mapping[str, Any],
        safe_load(resources.files(__package__).joinpath("defender.yml").read_text(encoding="utf-8")),
    )


@cache
def tables() -> Mapping[str, TableSpec]:
    """The mapping data, read once from the packaged ``defender.yml``: each table's default category."""
    return {name: _table_spec(name, spec) for name, spec in _mapping_data()["tables"].items()}


@cache
def common_fields() -> Mapping[str, str]:
    """Columns every event has -> their Sigma field, mapped where the taxonomy has it (``defender.yml``)."""
    return cast(Mapping[str, str], _mapping_data()["common_fields"])


@cache
def caseless_fields() -> Mapping[str, str]:
    """Sigma fields Defender and Windows write in different case, and how (``defender.yml``)."""
    return cast(Mapping[str, str], _mapping_data()["caseless_fields"])


@cache
def hex_fields() -> frozenset[str]:
    """Sigma fields holding hex digests, which a correlation does not group by (``defender.yml``)."""
    return frozenset(_mapping_data()["hex_fields"])


def ip_types() -> Mapping[str, Any]:
    """Address-kind columns and the networks a public address is outside (``defender.yml``)."""
    return cast(Mapping[str, Any], _mapping_data()["ip_types"])


def unmapped_tables() -> Mapping[str, str]:
    """Defender tables with no Sigma log source, and why (``defender.yml``, ``unmapped``)."""
    return cast(Mapping[str, str], _mapping_data()["unmapped"])


def all_specs() -> list[TableSpec]:
    """Every (table, category) pair, the categories chosen by ActionType included."""
    return [
        spec
        for table in tables().values()
        for category in (table, *table.categories)
        for spec in (category, *(fallback.category for fallback in category.fallbacks))
        if spec is not None
    ]


def _table_spec(name: str, spec: Mapping[str, Any]) -> TableSpec:
    fields = {
        column: FieldSpec(target)
        if isinstance(target, str)
        else FieldSpec(
            target["field"],
            target.get("part"),
            target.get("values"),
            target.get("prefix"),
            target.get("spelling"),
            target.get("suffix"),
            target.get("line"),
        )
        for column, target in spec["fields"].items()
    }
    held = _taxonomy_fields(spec["logsource"])
    for column, field in common_fields().items():
        if field in held:
            fields.setdefault(column, FieldSpec(field))
    fallbacks = spec.get("fallback") or []
    return TableSpec(
        name=name,
        logsource=dict(spec["logsource"]),
        file_prefix=spec["file_prefix"],
        fields=fields,
        approximate=_one_line(spec.get("approximate")),
        kusto_table=spec.get("kusto_table"),
        fallbacks=tuple(
            Fallback(
                _one_line(fallback.get("note")),
                fallback.get("table"),
                fallback.get("columns"),
                _table_spec(name, fallback["category"]) if "category" in fallback else None,
            )
            for fallback in (fallbacks if isinstance(fallbacks, list) else [fallbacks])
        ),
        action_types=tuple(spec.get("action_types") or ()),
        categories=tuple(_table_spec(name, category) for category in spec.get("categories") or ()),
        conditions=spec.get("conditions"),
        unselected_note=_one_line(spec.get("unselected_note")),
        sigmahq_rule=spec.get("sigmahq_rule"),
    )


def _taxonomy_fields(logsource: Mapping[str, str]) -> frozenset[str]:
    """The fields SigmaHQ's taxonomy gives a log source (``common_fields`` are mapped only there)."""
    key = "_".join(logsource.get(part) or "none" for part in ("product", "category", "service"))
    entry = _taxonomy().get(key)
    return frozenset(entry["field"]["native"] + entry["field"]["custom"]) if entry else frozenset()


@cache
def _taxonomy() -> Mapping[str, Any]:
    data = resources.files("rmm2sigma").joinpath("data", "sigmahq", "sigmahq_taxonomy.json")
    return cast(Mapping[str, Any], json.loads(data.read_text(encoding="utf-8"))["taxonomy"])


def _one_line(text: str | None) -> str | None:
    return " ".join(text.split()) if text else None


def map_detection(
    detection: Detection, exact: bool = False, schema: Mapping[str, Mapping[str, str]] | None = None
) -> MappedRule:
    """Map a detection to Sigma fields; raises ``UnsupportedKqlError`` when nothing can be kept.

    ``schema`` (Defender table -> columns) lets a fallback drop group-by columns its table lacks.
    """
    specs = tables()
    if detection.table not in specs:
        why = unmapped_tables().get(detection.table, "rmm2sigma has no mapping for it")
        raise _at_table(f"table {detection.table!r} has no Sigma log source: {why}", detection.at)
    if detection.predicate is None:
        raise _at_table("the query has no condition: a Sigma rule would match every event", detection.at)
    table = specs[detection.table]
    spec, source_predicate, category_note, kinds_written = _select_category(
        table, detection.predicate, detection.at
    )
    acting = _table_fallback(table)  # the acting process's creation, chosen for a whole DeviceEvents read
    renamed = acting.columns if acting and spec.name == acting.table and spec is not table else None
    # a kind of event the query's ActionType test chose, which the Security or Defender log numbers
    # (UserAccountCreated: EventID 4720), is a Sigma condition by itself; a table read whole (every
    # logon) or another category needs a test of its own
    kind_alone = bool(spec.conditions) and category_note not in (None, table.unselected_note)
    if source_predicate is None and not kind_alone:
        raise _at_table("the query tests only the ActionType: a Sigma rule needs a condition", detection.at)
    lowered, detection = detection.predicate, replace(detection, predicate=source_predicate)
    mapper = _Mapper(spec, exact)
    if category_note:
        mapper.change_model(category_note)
    predicate = True if source_predicate is None else mapper.node(source_predicate, positive=True)
    # a category keeping only the device's name is no better than keeping nothing: a fallback that
    # leaves out fewer tests is taken
    device_only = not isinstance(predicate, bool) and {
        leaf.column for leaf in walk(predicate) if isinstance(leaf, Predicate)
    } <= set(common_fields().values())
    tried = (predicate is True or device_only) and source_predicate is not None
    fallback = _fallback(spec, lowered, exact) if tried else None
    if fallback and (predicate is True or fallback[1].left_out < mapper.left_out):
        spec, mapper, predicate, renames = fallback
        if renames:
            detection = _fallback_aggregation(detection, renames, schema, spec.name)
            renamed = renames
    if predicate is False or (predicate is True and not kind_alone):
        raise _nothing_left(source_predicate, mapper.notes)
    if predicate is not True:
        predicate = regexes_one_by_one(literal_wildcards(predicate))
    if spec.approximate:
        mapper.change_model(spec.approximate, first=True)
    implied = tuple(
        Predicate(field, Match.EQUALS, tuple(value if isinstance(value, list) else [value]))
        for field, value in (spec.conditions or {}).items()
    )
    if predicate is True:  # every other test was left out: the kind of event alone, wider
        if spec.sigmahq_rule:  # a copy would fail SigmaHQ's duplicate-detection check
            raise UnsupportedKqlError(
                f"{category_note}, and no other test of the query can be expressed in it: the rule would "
                f"be {_source_name(spec)} alone, which is SigmaHQ's rule {spec.sigmahq_rule}; use that rule"
            )
        predicate = implied[0] if len(implied) == 1 else And(implied)
    elif implied:
        predicate = And((*implied, predicate))
    detection = _groupable(detection, spec, mapper)
    mapped = replace(detection, table=spec.name, predicate=simplify(predicate))
    notes = tuple(dict.fromkeys(n for n in (*mapper.notes, *detection.notes) if n))
    return MappedRule(mapped, spec, mapper.fidelity, notes, mapper.measurable, renamed, kinds_written)


ACTION_TYPE = "ActionType"


def _nothing_left(predicate: Node | None, notes: list[str]) -> UnsupportedKqlError:
    """The refusal of a query whose every test was left out, at the first one and saying why."""
    first = next((leaf.pos for leaf in walk(predicate) if leaf.pos.line), None)
    notes = [note for note in notes if "left out" in note] or notes  # the reasons, before the context
    why = f": {notes[0]}" + (f" (and {len(notes) - 1} more)" if len(notes) > 1 else "") if notes else ""
    return UnsupportedKqlError(
        f"no condition of this query can be expressed with Sigma fields{why}",
        line=first.line if first else None,
        column=first.column if first else None,
    )


def _select_category(
    table: TableSpec, predicate: Node, at: tuple[int, int] | None = None
) -> tuple[TableSpec, Node | None, str | None, bool]:
    """The category an ``ActionType ==``/``in`` conjunct selects, the predicate without it, a note,
    and whether the conjunct is ``ActionType in~`` the category's kinds (what kusto gives back).

    A Defender table with several event kinds (``DeviceFileEvents``: created, deleted, renamed ...)
    maps to one Sigma category per kind. The conjunct that names the kind becomes the category;
    an ActionType test that selects no single category stays a test (left out: no Sigma field),
    except in a table with no default category (``DeviceEvents``), where the query is refused with
    the reason: no ActionType test, kinds with no Sigma log source, or kinds of several.
    """
    if not table.categories:
        return table, predicate, None, False
    flat = simplify(predicate)  # conjuncts of several `where` operators are one AND
    items = flat.items if isinstance(flat, And) else (predicate,)
    refusal: UnsupportedKqlError | None = None
    for index, item in enumerate(items):
        if not (isinstance(item, Predicate) and item.column == ACTION_TYPE):
            continue
        if item.match is not Match.EQUALS or item.negated or not item.values:
            refusal = refusal or _located(_unnamed_kinds(table, item), item)
            continue
        spec = _category_of(table, item)
        if isinstance(spec, str):
            refusal = _located(spec, item)
            continue
        wanted = {kind for kind in spec.action_types if _kind_holds(item, kind)}
        # another ActionType test every chosen kind passes says nothing more (a query cut by kind)
        rest = tuple(
            other
            for other in items[:index] + items[index + 1 :]
            if not (
                isinstance(other, Predicate)
                and other.column == ACTION_TYPE
                and not other.negated
                and all(_kind_holds(other, kind) for kind in wanted)
            )
        )
        kept: Node | None = (rest[0] if len(rest) == 1 else And(rest)) if rest else None
        written = not item.case_sensitive and wanted == set(spec.action_types)
        return spec, kept, _selection_note(item, spec, wanted), written
    if table.action_types:
        return table, predicate, table.unselected_note, False
    if refusal:
        raise refusal
    acting = None if _tests_action_type(flat) else _acting_process(table, predicate)
    if acting:
        return (*acting, False)
    sources = ", ".join(dict.fromkeys(_source_name(spec, conditions=False) for spec in table.categories))
    reads = (
        "this query's ActionType tests do not choose one (only an `ActionType ==`/`in` test that every "
        "event must pass does)"
        if _tests_action_type(flat)
        else "this query has no ActionType test, so it reads them all"
    )
    raise _at_table(
        f"{table.name} holds many kinds of events and {reads}; no Sigma log source holds every kind, so "
        f"it is not converted (kinds of events have these log sources: {sources})",
        at,
    )


def _unnamed_kinds(table: TableSpec, item: Predicate) -> str:
    """Why an ActionType test that is no ``==``/``in`` chooses no log source: it holds on no kind
    that has one (``startswith "SmartScreen"``), or it names none (a negation, kinds of several)."""
    kinds = (kind for spec in (table, *table.categories) for kind in spec.action_types)
    if not item.negated and item.values and not any(_kind_holds(item, kind) for kind in kinds):
        return (
            f"`{item.text}` holds on no kind of {table.name} events that Sigma has a log source for, "
            "so the query is not converted"
        )
    return (
        f"`{item.text}` does not name kinds of {table.name} events: only an `ActionType ==`/`in` "
        "test chooses a Sigma log source"
    )


@cache
def kind_tables() -> frozenset[str]:
    """The tables of many kinds with no default (``DeviceEvents``): ``kind_cuts`` cuts them."""
    return frozenset(name for name, spec in tables().items() if spec.categories and not spec.action_types)


@dataclass(frozen=True)
class KindCut:
    """One rule's share of a query cut by kind of events (``kind_cuts``)."""

    name: str  # the category's log source, as notes and titles name it
    kinds: tuple[str, ...]  # the ActionType values the rule reads
    complete: bool  # the cuts together read every event the query does
    caseless: bool = True  # the kinds are compared without case (as the query's test does, or none)


def kind_cuts(detection: Detection) -> tuple[KindCut, ...]:
    """The categories a query over a table of many kinds (``DeviceEvents``) is cut into, one rule
    each (``convert``), or () when one rule does:

    - no ActionType test (and more than the acting process tested): each category whose fields
      hold every column the query tests, all its kinds; the kinds of no such category are read by
      no rule (incomplete);
    - an ``ActionType ==``/``in`` conjunct naming known kinds of several categories: each of them
      with the kinds it names there (complete); the kinds it names that no category holds are a
      cut of their own (first), which the mapping refuses by name: the others are then incomplete;
    - ``ActionType`` conjuncts that name no kind (``startswith "Asr"``, and ``endswith "Blocked"``):
      each category of the known kinds they all hold on, those kinds (incomplete: a kind this
      mapping does not know is read by no rule).
    """
    table = tables().get(detection.table)
    predicate = detection.predicate
    if table is None or not table.categories or predicate is None:
        return ()
    flat = simplify(predicate)
    tests = [
        item
        for item in (flat.items if isinstance(flat, And) else (flat,))
        if isinstance(item, Predicate) and item.column == ACTION_TYPE and not item.negated
    ]
    if not _tests_action_type(predicate):
        if table.action_types or _acting_process(table, predicate):
            return ()
        columns = {leaf.column for leaf in walk(predicate) if isinstance(leaf, Predicate)}
        held = [spec for spec in table.categories if columns and columns <= set(spec.fields)]
        return tuple(KindCut(_source_name(spec), spec.action_types, False) for spec in held)
    if not tests or not all(test.values for test in tests):
        return ()
    groups: dict[int, tuple[TableSpec, list[str]]] = {}
    for spec in (table, *table.categories):
        for kind in spec.action_types:
            if all(_kind_holds(test, kind) for test in tests):
                groups.setdefault(id(spec), (spec, []))[1].append(kind)
    # one `==`/`in` names the kinds the query reads; other tests (`startswith "Asr"` and
    # `endswith "Blocked"`) hold on the known kinds they select, and maybe on unknown ones
    complete = len(tests) == 1 and tests[0].match is Match.EQUALS
    fold = (lambda text: text) if tests[0].case_sensitive else str.lower
    known = {fold(kind) for _, kinds in groups.values() for kind in kinds}
    # the kinds an `==`/`in` names that no log source holds (other tests name no kind)
    named = tests[0].values if complete else ()
    unknown = tuple(dict.fromkeys(str(v) for v in named if fold(str(v)) not in known))
    if not groups or (complete and not unknown and len(groups) < 2):
        return ()  # only kinds with no log source (refused by name), or one category (one rule)
    caseless = not any(test.case_sensitive for test in tests)
    cuts = tuple(
        KindCut(_source_name(spec), tuple(kinds), complete and not unknown, caseless)
        for spec, kinds in groups.values()
    )
    # the kinds an `==`/`in` names that no log source holds: a cut of their own, which the mapping
    # refuses by name (first: the reason given when no cut converts), so the query's other kinds
    # still give their rules (a partial input)
    return (KindCut(", ".join(unknown), unknown, False, caseless), *cuts) if unknown else cuts


def _kind_holds(test: Predicate, kind: str) -> bool:
    """Whether an ActionType test (``==``/``in``, ``startswith``, ``endswith``, ``contains``,
    ``has``) holds on the kind's name."""
    fold = (lambda text: text) if test.case_sensitive else str.lower
    name, values = fold(kind), [fold(str(v)) for v in test.values]
    checks = {
        Match.EQUALS: name.__eq__,
        Match.STARTSWITH: name.startswith,
        Match.ENDSWITH: name.endswith,
        Match.CONTAINS: name.__contains__,
        Match.HAS: name.__contains__,  # a kind's name is one term: a term inside it is its prefix only
    }
    check = checks.get(test.match)
    if check is None:
        return False
    if test.match is Match.HAS:
        return any(name == value for value in values)
    return any(check(value) for value in values)


def _acting_process(table: TableSpec, predicate: Node) -> tuple[TableSpec, Node, str | None] | None:
    """A table of many kinds read whole (``DeviceEvents``) with tests of the process that acts
    only (its hash, path, command line): its fallback table, the creation of that process, whatever
    the kind of event; None when a test reads anything else."""
    fallback = _table_fallback(table)
    renames = (fallback.columns if fallback else None) or {}
    columns = [leaf.column for leaf in walk(predicate) if isinstance(leaf, Predicate)]
    if fallback is None or not fallback.table or not columns or not all(c in renames for c in columns):
        return None
    return tables()[fallback.table], _rename_columns(predicate, renames), fallback.note


def _table_fallback(table: TableSpec) -> Fallback | None:
    """The fallback of ``table`` into another table (the acting process's creation), if any."""
    return next((fallback for fallback in table.fallbacks if fallback.table), None)


def _tests_action_type(node: Node | None) -> bool:
    if isinstance(node, Predicate):
        return node.column == ACTION_TYPE
    if isinstance(node, Not):
        return _tests_action_type(node.item)
    if isinstance(node, And | Or):
        return any(_tests_action_type(item) for item in node.items)
    return False


def _category_of(table: TableSpec, item: Predicate) -> TableSpec | str:
    """The one category whose kinds hold every value of ``item``, or why there is none."""
    by_kind: dict[str, TableSpec] = {}
    for spec in (table, *table.categories):
        for name in spec.action_types:
            by_kind.setdefault(name if item.case_sensitive else name.lower(), spec)
    values = [str(v) for v in item.values]
    found = {value: by_kind.get(value if item.case_sensitive else value.lower()) for value in values}
    unknown = [value for value, spec in found.items() if spec is None]
    if unknown:
        kinds = ", ".join(unknown)
        return (
            f"`{item.text}`: Sigma has no log source for the {kinds} events of {table.name}, "
            "so the query is not converted"
        )
    chosen = {id(spec): spec for spec in found.values() if spec is not None}
    if len(chosen) > 1:
        parts = "; ".join(
            f"{_source_name(spec)}: {', '.join(v for v, s in found.items() if s is spec)}"
            for spec in chosen.values()
        )
        return f"`{item.text}` names kinds of events of several Sigma log sources ({parts}); a rule has one"
    return next(iter(chosen.values()))


def _selection_note(item: Predicate, spec: TableSpec, wanted: set[str]) -> str:
    others = [name for name in spec.action_types if name not in wanted]
    if len(others) > 4:
        wider = f", which also holds {len(others)} other kinds of events: the rule is wider"
    elif others:
        wider = f", which also holds {', '.join(sorted(others))}: the rule is wider"
    else:
        wider = ""
    return f"`{item.text}` selects Sigma's {_source_name(spec)} log source{wider}"


def _source_name(spec: TableSpec, conditions: bool = True) -> str:
    """``dns_query``, or ``security (EventID 4720)`` for a log whose events the EventID tells apart."""
    name = spec.logsource.get("category") or spec.logsource.get("service") or "?"
    if not conditions:
        return name
    implied = ", ".join(
        f"{field} {' or '.join(str(v) for v in value) if isinstance(value, list) else value}"
        for field, value in (spec.conditions or {}).items()
    )
    return f"{name} ({implied})" if implied else name


def _at_table(message: str, at: tuple[int, int] | None) -> UnsupportedKqlError:
    """A refusal of the whole query, at its table (``Detection.at``) when the lowering knew it."""
    line, column = at or (None, None)
    return UnsupportedKqlError(message, line=line, column=column)


def _located(message: str, item: Predicate) -> UnsupportedKqlError:
    return UnsupportedKqlError(message, line=item.pos.line or None, column=item.pos.column or None)


def _fallback(
    spec: TableSpec, predicate: Node, exact: bool
) -> tuple[TableSpec, _Mapper, Node | bool, Mapping[str, str]] | None:
    """The table or category ``spec`` falls back to, with the query mapped there, when that keeps a
    test: of several, the one that leaves out the fewest tests (the first of equals). The whole
    query: its ActionType test too, which the fallback's category does not say."""
    chosen: tuple[TableSpec, _Mapper, Node | bool, Mapping[str, str]] | None = None
    for fallback in spec.fallbacks:
        target = fallback.category or (tables()[fallback.table] if fallback.table else None)
        if target is None:
            continue
        renames = fallback.columns or {}
        mapper = _Mapper(target, exact)
        kept = mapper.node(_rename_columns(predicate, renames, fallback.table), positive=True)
        if kept is True or (chosen is not None and mapper.left_out >= chosen[1].left_out):
            continue
        mapper.change_model(fallback.note or "")
        chosen = target, mapper, kept, renames
    return chosen


def _fallback_aggregation(
    detection: Detection,
    renames: Mapping[str, str],
    schema: Mapping[str, Mapping[str, str]] | None,
    table: str,
) -> Detection:
    """Group-by columns renamed into the fallback table; those it does not have are left out."""
    if detection.aggregation is None:
        return detection
    by = tuple(renames.get(column, column) for column in detection.aggregation.by)
    kept = tuple(column for column in by if schema is None or column in schema.get(table, {}))
    notes = tuple(
        f"group-by column {column} does not exist in {table}; left out" for column in by if column not in kept
    )
    return replace(
        detection, aggregation=replace(detection.aggregation, by=kept), notes=detection.notes + notes
    )


def _groupable(detection: Detection, spec: TableSpec, mapper: _Mapper) -> Detection:
    """The detection without its threshold when no group-by column has a Sigma field: SigmaHQ
    refuses a correlation without ``group-by``, so the rule reports every event (wider), noted."""
    from ..correlation import group_fields  # it imports this module

    aggregation = detection.aggregation
    if aggregation is None or aggregation.having is None or group_fields(spec, aggregation.by)[0]:
        return detection
    by = ", ".join(aggregation.by)
    verb = "has" if len(aggregation.by) == 1 else "have"
    per = f"per {by}, which {verb} no Sigma field" if by else "over all events"
    mapper.leave_out(
        f"the threshold `{aggregation.having.text}` was left out: it counts {per}, and SigmaHQ refuses a "
        "correlation without a group-by field; every matching event is reported, so the rule is wider"
    )
    return replace(detection, aggregation=replace(aggregation, having=None, bin=None))


# columns of the device, which the acting process's creation has as the event itself does
_DEVICE_COLUMNS = frozenset({"DeviceId", "DeviceName"})


def _rename_columns(node: Node, renames: Mapping[str, str], table: str | None = None) -> Node:
    """``node`` over the columns of another table. Into ``table`` (a fallback into another table),
    a column neither renamed nor the device's is the event's own, which that table's column of the
    same name is not (a file's SHA1 is not its creator's): left out."""
    if isinstance(node, Predicate):
        if node.column in renames:
            return replace(node, column=renames[node.column])
        if table is None or node.column in _DEVICE_COLUMNS:
            return node
        reason = f"{node.column} describes the event, not the process that acts, whose creation {table} holds"
        return Opaque(node.text, reason, node.pos)
    if isinstance(node, Not):
        return Not(_rename_columns(node.item, renames, table))
    if isinstance(node, And | Or):
        return type(node)(tuple(_rename_columns(item, renames, table) for item in node.items))
    return node


class _Mapper:
    def __init__(self, spec: TableSpec, exact: bool) -> None:
        self.spec = spec
        self.exact = exact
        self.notes: list[str] = []
        self.fidelity = Fidelity.EXACT
        self.measurable = Fidelity.EXACT
        self.left_out = 0  # tests replaced by a constant: how much of the query this category loses

    def widen(self, note: str) -> None:
        """A test that matches more than the original's."""
        self.notes.append(note)
        self.fidelity = Fidelity.worst(self.fidelity, Fidelity.WIDENED)
        self.measurable = Fidelity.worst(self.measurable, Fidelity.WIDENED)

    def leave_out(self, note: str) -> None:
        """A test with no Sigma counterpart, replaced by the constant that widens."""
        self.notes.append(note)
        self.left_out += 1
        self.fidelity = Fidelity.APPROXIMATE
        self.measurable = Fidelity.worst(self.measurable, Fidelity.WIDENED)

    def change_model(self, note: str, first: bool = False) -> None:
        """Another category or table: events cannot show it, so only the label says it."""
        self.notes.insert(0, note) if first else self.notes.append(note)
        self.fidelity = Fidelity.APPROXIMATE

    def node(self, node: Node, positive: bool) -> Node | bool:
        """The mapped node, or the constant True/False it collapses to."""
        if isinstance(node, Opaque):
            self.leave_out(f"`{node.text}` was left out because {node.reason}; the rule is wider")
            return positive
        if isinstance(node, Predicate):
            return self.predicate(node, positive)
        if isinstance(node, Not):
            inner = self.node(node.item, not positive)
            return (not inner) if isinstance(inner, bool) else Not(inner)
        is_and = isinstance(node, And)
        items: list[Node] = []
        for item in node.items:
            mapped = self.node(item, positive)
            if isinstance(mapped, bool):
                if mapped != is_and:  # FALSE in an AND, TRUE in an OR decides the group
                    return mapped
                continue
            items.append(mapped)
        if not items:
            return is_and
        return items[0] if len(items) == 1 else type(node)(tuple(items))

    def predicate(self, leaf: Predicate, positive: bool) -> Node | bool:
        widening_allowed = positive != leaf.negated and not self.exact
        if leaf.column == ANY_COLUMN:
            return self.keywords(leaf, positive, widening_allowed)
        spec = self.spec.fields.get(leaf.column)
        if spec is None and leaf.column in ip_types()["columns"]:
            return self.ip_type(leaf, positive, widening_allowed)
        if spec is None and leaf.column == ACTION_TYPE:
            why = (
                "it does not choose one Sigma category (only an `ActionType ==`/`in` conjunct naming kinds "
                "of one category does)"
                if self.spec.action_types
                else f"Sigma's {_source_name(self.spec)} category does not tell kinds of events apart"
            )
            self.leave_out(f"`{leaf.text}` was left out: {why}; the rule is wider")
            return positive
        if spec is None:
            self.leave_out(
                f"`{leaf.text}` was left out: {leaf.column} has no field in Sigma's "
                f"{self.spec.logsource.get('category') or self.spec.logsource.get('service')} "
                "category; the rule is wider"
            )
            return positive
        if spec.suffix is not None:
            return self.suffixed(leaf, spec, spec.suffix, positive, widening_allowed)
        return self.field_test(leaf, spec, positive, widening_allowed)

    def field_test(
        self, leaf: Predicate, spec: FieldSpec, positive: bool, widening_allowed: bool
    ) -> Node | bool:
        """A test of a column that has a Sigma field, on that field."""
        mapped = replace(leaf, column=spec.field)
        if leaf.match is Match.REGEX:  # RE2's mid-pattern (?i) in a form Python and pySigma accept
            mapped = replace(mapped, values=tuple(scoped_flags(str(v)) for v in leaf.values))
        if spec.values is not None:
            return self.translate(mapped, spec.values, positive)
        if spec.spelling == "hex":
            return self.hex_number(mapped, positive)
        if spec.spelling in ("invocation", "host"):
            return self.inside(mapped, spec.spelling, positive)
        if spec.prefix is not None:
            respelled = self.respell(mapped, spec.prefix, positive, widening_allowed)
            if isinstance(respelled, bool):
                return respelled
            mapped = respelled
        if spec.line is not None:
            return self.line(mapped, spec.line, positive, widening_allowed)
        if leaf.match is Match.FIELDREF:
            return self.field_pair(mapped, spec, positive, widening_allowed)
        spelled = caseless_fields().get(spec.field)
        if spelled and leaf.case_sensitive and leaf.match is not Match.REGEX:
            if widening_allowed:
                self.widen(
                    f"`{leaf.text}` is compared without case: {spelled}, which a case-sensitive test "
                    "would miss"
                )
                mapped = replace(mapped, case_sensitive=False)
            elif positive == leaf.negated:  # under a negation, ignoring case would drop more events
                self.notes.append(
                    f"`{leaf.text}` stays case-sensitive under its negation (ignoring case would drop "
                    f"more events); {spelled}, so on events written so it may exclude nothing and the "
                    "rule is wider there"
                )
            else:
                self.notes.append(
                    f"`{leaf.text}` stays case-sensitive, as --exact asks; {spelled}, so on events "
                    "written so it may match nothing"
                )
        if leaf.match is Match.CIDR and positive == leaf.negated:
            # Kusto's ipv4_is_in_range() of a missing address is null, so its negation drops the row
            self.widen(f"`{leaf.text}` is negated: Sigma also matches events without an address")
        if spec.part == "file_name":
            return self.file_name(mapped, widening_allowed)
        if leaf.match in _TERM_MATCHES and all(_bounded(str(v), leaf.match) for v in leaf.values):
            return replace(mapped, match=Match.CONTAINS)  # `has '-enc '`: its own ends bound the term
        if leaf.match in _TERM_MATCHES:
            if widening_allowed:
                self.widen(f"`{leaf.text}` matches whole terms; Sigma `contains` also matches inside words")
                return replace(mapped, match=Match.CONTAINS)
            return _term_regex(mapped)
        return mapped

    def field_pair(
        self, leaf: Predicate, spec: FieldSpec, positive: bool, widening_allowed: bool
    ) -> Node | bool:
        """``A == B`` as Sigma's ``fieldref``, which compares case-insensitively like every Sigma value."""
        other = self.spec.fields.get(str(leaf.values[0]))
        if other is None or spec.part or other.part:
            self.leave_out(
                f"`{leaf.text}` was left out: Sigma has no pair of fields to compare; the rule is wider"
            )
            return positive
        if leaf.case_sensitive and not widening_allowed:
            self.leave_out(
                f"`{leaf.text}` (case-sensitive, negated) was left out: Sigma's fieldref ignores case"
            )
            return positive
        if leaf.case_sensitive:
            self.widen(f"`{leaf.text}` compares case-sensitively; Sigma's fieldref ignores case")
        # Kusto strings are never null: two empty values are equal there, and absent fields never are
        # in Sigma, so the empty pair is said explicitly
        equal = replace(leaf, values=(other.field,), case_sensitive=False, negated=False)
        both_empty = And(tuple(Predicate(f, Match.EMPTY, text=leaf.text) for f in (leaf.column, other.field)))
        node = Or((equal, both_empty))
        return Not(node) if leaf.negated else node

    def ip_type(self, leaf: Predicate, positive: bool, widening_allowed: bool) -> Node | bool:
        """``RemoteIPType == "Public"`` as the address outside the networks Defender never calls
        Public (``defender.yml``, ``ip_types``); any other test of the kind is left out."""
        address = ip_types()["columns"][leaf.column]
        public = leaf.match is Match.EQUALS and [str(v).lower() for v in leaf.values] == ["public"]
        if not (public and widening_allowed and address in self.spec.fields):
            self.leave_out(
                f"`{leaf.text}` was left out: Sigma has no field for the kind of an address (only "
                f'`{leaf.column} == "Public"` is matched, by its address); the rule is wider'
            )
            return positive
        self.widen(
            f"`{leaf.text}` is matched as {address} outside the private, loopback and link-local IPv4 "
            "networks, and not empty: other kinds of addresses Defender tells apart (IPv6 private, "
            "multicast, reserved) pass too, so the rule is wider"
        )
        networks = tuple(ip_types()["not_public"])
        outside = And(
            (
                Not(Predicate(address, Match.CIDR, networks, text=leaf.text, pos=leaf.pos)),
                Not(Predicate(address, Match.EMPTY, (), text=leaf.text, pos=leaf.pos)),
            )
        )
        return self.node(Not(outside) if leaf.negated else outside, positive)

    def translate(self, leaf: Predicate, values: Mapping[str, Value], positive: bool) -> Node | bool:
        """A column whose values Sigma's field spells differently (``Network`` logon type -> 3)."""
        by_name = {name.lower(): value for name, value in values.items()}
        wanted = [str(v).lower() for v in leaf.values]
        if leaf.match is not Match.EQUALS or not all(v in by_name for v in wanted):
            self.leave_out(f"`{leaf.text}` was left out: its values have no {leaf.column} equivalent")
            return positive
        return replace(leaf, values=tuple(by_name[v] for v in wanted), case_sensitive=False)

    def hex_number(self, leaf: Predicate, positive: bool) -> Node | bool:
        """A number Defender writes in decimal (``DesiredAccess`` 2097151) on the field Windows
        writes as hex text (Sysmon's ``GrantedAccess`` 0x1fffff): equality (``==``, ``in``, negated
        too) is the same test on the hex text, which Sigma compares without case; any other test
        (a bound, a substring, a bit mask) has no Sigma counterpart and is left out."""
        numbers = [_decimal(value) for value in leaf.values]
        if leaf.match in (Match.EMPTY, Match.NULL):
            return leaf
        if leaf.match is Match.EQUALS and numbers and all(n is not None for n in numbers):
            return replace(leaf, values=tuple(hex(cast(int, n)) for n in numbers), case_sensitive=False)
        self.leave_out(
            f"`{leaf.text}` was left out: Defender writes {leaf.column} as a decimal number and Windows "
            "as hex text, so only equality with whole numbers can be respelled; the rule is wider"
        )
        return positive

    def inside(self, leaf: Predicate, spelling: str, positive: bool) -> Node | bool:
        """A column whose value Sigma's field holds inside a longer text, as PowerShell's module
        logging (event 4103) writes it: a command in Payload (``CommandInvocation(Get-Process):
        "Get-Process"``), the host process in ContextInfo (``Host Application = C:\\...\\wsmprovhost.exe
        -Embedding``). A test that holds on the column holds on such a text: ``==`` a command is
        ``contains`` its invocation, a host's name, path or command line is ``contains`` it (without
        a final ``.exe``, which a command line may omit). That is wider, so a negated test (a pipeline
        logs several commands in one Payload; several hosts can share a name), any other (a regex, a
        command's end, an empty value) and, under ``--exact``, one the events show wider, is left out.
        """
        values = [str(v) for v in leaf.values]
        held = "the command" if spelling == "invocation" else "the host process"
        unbounded = leaf.match in _TERM_MATCHES and not all(_bounded(v, leaf.match) for v in values)
        wider = spelling == "host" or leaf.case_sensitive or unbounded  # what events of the kind show
        needles: list[str] = []
        allowed = positive != leaf.negated and not (self.exact and wider) and not leaf.match_all
        # kusto reads a command back from its invocation, or in the JSON text (which escapes " and \\)
        readable = spelling == "host" or not any(c in v for v in values for c in '()"\\')
        if allowed and readable and leaf.match in _INSIDE[spelling]:
            if spelling == "host":
                needles = [re.sub(r"(?i)\.exe$", "", v) for v in values]
            elif leaf.match in (Match.EQUALS, Match.STARTSWITH):  # up to the invocation's `)` or not
                needles = [INVOCATION.format(v)[: None if leaf.match is Match.EQUALS else -1] for v in values]
            else:
                needles = values
        if not needles or not all(needles):
            self.leave_out(
                f"`{leaf.text}` was left out: Sigma's {leaf.column} holds {held} inside a longer text, "
                "where only a test that holds on the column can be matched (as `contains`); the rule is wider"
            )
            return positive
        note = (
            f"`{leaf.text}` is matched as {leaf.column} containing {', '.join(repr(n) for n in needles)}: "
            f"Sigma's {leaf.column} holds {held} inside a longer text, in any case; the rule is wider"
        )
        if wider:
            self.widen(note)  # more text, another case, a term inside a word: events show it
        else:  # the command itself is the same test; a Payload holding several commands is 4103's own
            self.change_model(note)
        return replace(leaf, match=Match.CONTAINS, values=tuple(needles), case_sensitive=False)

    def respell(
        self, leaf: Predicate, prefix: str, positive: bool, widening_allowed: bool
    ) -> Predicate | bool:
        """A test of a column Defender writes under ``prefix`` (``\\Device\\NamedPipe\\name``) on the
        Sigma field that holds the rest (Sysmon's ``\\name``).

        ``==``/``startswith`` a value under the prefix lose it: the same test. A substring test
        (``contains``, ``endswith``, ``has`` ...) carries when its value cannot reach into the
        prefix. Otherwise the test is widened (a value not under the prefix is kept, which also
        matches the pipe of that name) or, where that is not sound, left out.
        """
        values = [str(v) for v in leaf.values]
        if leaf.match in (Match.EMPTY, Match.NULL):
            return leaf
        if leaf.match in (Match.CONTAINS, Match.ENDSWITH, *_TERM_MATCHES):
            if not any(_reaches_into(value, prefix) for value in values):
                return leaf
        elif leaf.match in (Match.EQUALS, Match.STARTSWITH) and not _WILDCARD.search("".join(values)):
            head = prefix + "\\"
            under = [
                v.startswith(head) if leaf.case_sensitive else v.lower().startswith(head.lower())
                for v in values
            ]
            if all(under):
                return replace(leaf, values=tuple(value[len(prefix) :] for value in values))
            reaching = leaf.match is Match.STARTSWITH and any(
                head.lower().startswith(v.lower()) for v in values
            )
            if not any(under) and not reaching and not any(v.startswith("\\") for v in values):
                return leaf  # no name Windows writes either (they start with a backslash): the same test
            if widening_allowed and not any(under) and not reaching:
                self.widen(
                    f"`{leaf.text}`: Defender writes {leaf.column} under {prefix}\\, Sigma's field "
                    "without it; the value is kept, so the rule also matches the name without that prefix"
                )
                return leaf
        self.leave_out(
            f"`{leaf.text}` was left out: Defender writes {leaf.column} under {prefix}\\ and Sigma's field "
            "without it, and this test cannot be respelled; the rule is wider"
        )
        return positive

    def suffixed(
        self, leaf: Predicate, spec: FieldSpec, suffix: str, positive: bool, widening_allowed: bool
    ) -> Node | bool:
        """A test of a column whose Sigma field holds the value followed by ``suffix`` (a stream's
        name: the file's path and ``:Zone.Identifier``).

        ``==`` and ``endswith`` get the suffix; ``startswith``, ``contains`` and term tests carry
        when their value cannot reach into the suffix; emptiness carries (an empty path has no
        stream name). Any other test is left out.
        """
        mapped = self.field_test(leaf, replace(spec, suffix=None), positive, widening_allowed)
        if isinstance(mapped, bool):
            return mapped
        if isinstance(mapped, Predicate) and mapped.match in (Match.EMPTY, Match.NULL):
            return mapped
        if isinstance(mapped, Predicate) and mapped.match in (Match.EQUALS, Match.ENDSWITH):
            return replace(mapped, values=tuple(f"{v}{suffix}" for v in mapped.values))
        if (
            isinstance(mapped, Predicate)
            and mapped.match in (Match.STARTSWITH, Match.CONTAINS, *_TERM_MATCHES)
            and not any(_reaches_into(str(v)[::-1], suffix[::-1]) for v in mapped.values)
        ):
            return mapped
        self.leave_out(
            f"`{leaf.text}` was left out: Sigma's {spec.field} holds the value followed by {suffix}, and "
            "this test cannot be respelled for it; the rule is wider"
        )
        return positive

    def line(self, leaf: Predicate, key: str, positive: bool, widening_allowed: bool) -> Node | bool:
        """A test of a column Sigma's field holds as its ``key=value`` line, among others (a
        Zone.Identifier stream's ``HostUrl=...``).

        ``startswith U`` is the field containing ``key=U``, and emptiness the line's absence: the
        same tests. ``==``, ``contains``, ``endswith`` and term tests become the field containing
        the value, which the other lines can hold too: wider, so under a negation they are left
        out, as is any other test.
        """
        head = f"{key}="
        values = [str(v) for v in leaf.values]
        if leaf.match is Match.EMPTY:
            return replace(leaf, match=Match.CONTAINS, values=(head,), negated=not leaf.negated)
        if leaf.match is Match.STARTSWITH and all(values):
            return replace(leaf, match=Match.CONTAINS, values=tuple(head + v for v in values))
        wider = (Match.EQUALS, Match.CONTAINS, Match.ENDSWITH, *_TERM_MATCHES)
        if leaf.match in wider and widening_allowed and all(values):
            self.widen(
                f"`{leaf.text}` is matched anywhere in {leaf.column}, which holds the other lines of "
                f"the stream too (the value follows `{head}` there): the rule is wider"
            )
            prefixed = leaf.match is Match.EQUALS
            return replace(
                leaf,
                match=Match.CONTAINS,
                values=tuple(head + v if prefixed else v for v in values),
                match_all=leaf.match_all,
            )
        self.leave_out(
            f"`{leaf.text}` was left out: Sigma's {leaf.column} holds it as a `{head}` line among others, "
            "where this test cannot be said; the rule is wider"
        )
        return positive

    def keywords(self, leaf: Predicate, positive: bool, widening_allowed: bool) -> Node | bool:
        """``* has 'x'``: Sigma keywords, a search over the whole event, as a substring."""
        if leaf.match is Match.CONTAINS and not leaf.case_sensitive:
            return leaf
        if widening_allowed:
            self.widen(f"`{leaf.text}` becomes a keyword, which Sigma matches anywhere in the event text")
            return replace(leaf, match=Match.CONTAINS, case_sensitive=False)
        self.leave_out(f"`{leaf.text}` was left out: a negated or exact term search has no Sigma keyword")
        return positive

    def file_name(self, leaf: Predicate, widening_allowed: bool) -> Node | bool:
        """A test on a path's last part, as a test on the whole path (backslash-separated)."""
        match = leaf.match
        if match is Match.EQUALS:
            return replace(leaf, match=Match.ENDSWITH, values=tuple("\\" + str(v) for v in leaf.values))
        if match in (Match.ENDSWITH, Match.EMPTY):
            return leaf
        if match in (Match.STARTSWITH, Match.CONTAINS, *_TERM_MATCHES) and widening_allowed:
            self.widen(
                f"`{leaf.text}` tests the file name; the Sigma rule tests the whole {leaf.column} path"
            )
            if match is Match.STARTSWITH:
                return replace(leaf, match=Match.CONTAINS, values=tuple("\\" + str(v) for v in leaf.values))
            return replace(leaf, match=Match.CONTAINS)
        if match is Match.STARTSWITH:
            patterns = tuple(r"\\" + regex_escape(str(v)) + r"[^\\]*$" for v in leaf.values)
        elif match is Match.CONTAINS:
            patterns = tuple(regex_escape(str(v)) + r"[^\\]*$" for v in leaf.values)
        elif match in _TERM_MATCHES:
            patterns = tuple(_term_pattern(str(v), match, tail=r"[^\\]*$") for v in leaf.values)
        else:
            self.leave_out(f"`{leaf.text}` tests the file name; it cannot be rewritten on {leaf.column}")
            return True if widening_allowed else leaf
        return replace(leaf, match=Match.REGEX, values=patterns)


def _reaches_into(needle: str, prefix: str) -> bool:
    """Whether ``needle`` can match where ``prefix`` is: inside it, or starting in it and running
    on (a case-blind check, so it errs towards leaving the test out)."""
    needle, prefix = needle.lower(), prefix.lower()
    return needle in prefix or any(needle.startswith(prefix[i:]) for i in range(len(prefix)))


def _bounded(needle: str, match: Match) -> bool:
    """Whether a term match is a plain substring match: the needle's ends that the match bounds
    are not term characters (letters, digits), so whatever surrounds them cannot extend a term."""
    if not any(c.isalnum() for c in needle):
        return False  # no term at all: leave Kusto's reading of it to the widening
    start = match is Match.HASSUFFIX or not needle[0].isalnum()
    end = match is Match.HASPREFIX or not needle[-1].isalnum()
    return start and end


# Where a regex must match for each plain test: anywhere, or from the start and/or to the end
_ANCHORS = {
    Match.CONTAINS: ("", ""),
    Match.STARTSWITH: ("^", ""),
    Match.ENDSWITH: ("", "$"),
    Match.EQUALS: ("^", "$"),
}
_WILDCARD = re.compile(r"[*?]")


def literal_wildcards(node: Node) -> Node:
    """Values holding a ``*`` or ``?``, which KQL reads literally, as the regex that matches them.

    A Sigma value can only say "a literal star" as ``\\*``, which SigmaHQ's ``escaped_wildcard``
    check reports on every rule; the escaped regex is the same test (``contains`` unanchored,
    ``startswith`` ``^``, ``endswith`` ``$``, ``==`` both, case as the test's). A test's other values
    stay plain: any of them (``in``) is an OR of the two tests, all of them (``has_all``) an AND,
    and a negation flips which. Keywords (a search over the whole event) have no regex and stay.
    """
    if isinstance(node, Not):
        return Not(literal_wildcards(node.item))
    if isinstance(node, And | Or):
        return type(node)(tuple(literal_wildcards(item) for item in node.items))
    if not isinstance(node, Predicate) or node.column == ANY_COLUMN or node.match not in _ANCHORS:
        return node
    literal = [v for v in node.values if isinstance(v, str) and _WILDCARD.search(v)]
    if not literal:
        return node
    start, end = _ANCHORS[node.match]
    patterns = [start + regex_escape(str(value)) + end for value in literal]
    plain = tuple(v for v in node.values if v not in literal)
    # one regex per test under `all`: a regex value list means any of them
    regexes = [(pattern,) for pattern in patterns] if node.match_all else [tuple(patterns)]
    tests = [replace(node, match=Match.REGEX, values=values, match_all=False) for values in regexes]
    if plain:
        tests.insert(0, replace(node, values=plain))
    if len(tests) == 1:
        return tests[0]
    return (And if node.match_all != node.negated else Or)(tuple(tests))


def regexes_one_by_one(node: Node) -> Node:
    """A test that all of several regexes match (``has_all`` under ``--exact``) as one test per
    regex: pySigma reads ``|re|all`` as intended, but SigmaHQ's ``invalid_modifier_combinations``
    check refuses ``all`` without ``contains``. A negation flips the AND into an OR."""
    if isinstance(node, Not):
        return Not(regexes_one_by_one(node.item))
    if isinstance(node, And | Or):
        return type(node)(tuple(regexes_one_by_one(item) for item in node.items))
    if not isinstance(node, Predicate) or node.match is not Match.REGEX or not node.match_all:
        return node
    if len(node.values) < 2:
        return node
    tests = tuple(replace(node, values=(value,), match_all=False) for value in node.values)
    return Or(tests) if node.negated else And(tests)


def _term_regex(leaf: Predicate) -> Predicate:
    """KQL ``has``: the needle bounded by non-term characters (RE2-compatible, no look-around).

    ``hasprefix`` bounds only the start, ``hassuffix`` only the end.
    """
    patterns = tuple(_term_pattern(str(v), leaf.match) for v in leaf.values)
    return replace(leaf, match=Match.REGEX, values=patterns)


def _term_pattern(needle: str, match: Match = Match.HAS, tail: str = "") -> str:
    bounded_start = match is not Match.HASSUFFIX and needle[:1] and _TERM_CHAR.match(needle[0])
    head = f"(^|{_NOT_TERM})" if bounded_start else ""
    if match is Match.HASPREFIX:
        end = tail
    elif needle[-1:] and _TERM_CHAR.match(needle[-1]):
        end = f"($|{_NOT_TERM})" if not tail else f"($|[^{TERM_CLASS}\\\\]{tail})"
    else:
        end = tail
    return head + regex_escape(needle) + end


def regex_escape(text: str) -> str:
    """Escape only the regex metacharacters, so the pattern stays readable and RE2-compatible."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)
