"""Move a detection from Defender's tables into Sigma's taxonomy, deciding every semantic change.

Everything that changes what a rule matches happens here, with a note and a fidelity label:
``has`` (whole terms) becomes ``contains`` (wider) or a term-bounded regex (``exact=True``, and
always under a negation, where widening a test would narrow the rule); ``FileName`` becomes a test
on the end of ``Image``; a column with no Sigma field is replaced by the constant that widens.
The data lives in ``defender.yml``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

from ..errors import UnsupportedKqlError
from ..model import And, Detection, Fidelity, Match, Node, Not, Opaque, Or, Predicate, simplify
from ..regex import scoped_flags


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


@dataclass(frozen=True)
class TableSpec:
    name: str
    logsource: Mapping[str, str]
    file_prefix: str
    fields: Mapping[str, FieldSpec]
    approximate: str | None = None
    kusto_table: str | None = None
    fallback_table: str | None = None
    fallback_columns: Mapping[str, str] | None = None
    fallback_note: str | None = None


@dataclass(frozen=True)
class MappedRule:
    """A detection expressed over Sigma fields, ready to emit."""

    detection: Detection  # predicate columns are Sigma fields; table is the Defender table used
    table: TableSpec
    fidelity: Fidelity
    notes: tuple[str, ...]
    measurable: Fidelity  # what comparing events can show: ``fidelity`` without data-model changes


@cache
def tables() -> Mapping[str, TableSpec]:
    """The mapping data, read once from the packaged ``defender.yml``."""
    raw = yaml.safe_load(resources.files(__package__).joinpath("defender.yml").read_text(encoding="utf-8"))
    return {name: _table_spec(name, spec) for name, spec in raw["tables"].items()}


def _table_spec(name: str, spec: Mapping[str, Any]) -> TableSpec:
    fields = {
        column: FieldSpec(target)
        if isinstance(target, str)
        else FieldSpec(target["field"], target.get("part"))
        for column, target in spec["fields"].items()
    }
    fallback = spec.get("fallback") or {}
    return TableSpec(
        name=name,
        logsource=dict(spec["logsource"]),
        file_prefix=spec["file_prefix"],
        fields=fields,
        approximate=_one_line(spec.get("approximate")),
        kusto_table=spec.get("kusto_table"),
        fallback_table=fallback.get("table"),
        fallback_columns=fallback.get("columns"),
        fallback_note=_one_line(fallback.get("note")),
    )


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
        raise UnsupportedKqlError(f"table {detection.table!r} has no Sigma log source mapping")
    if detection.predicate is None:
        raise UnsupportedKqlError("the query has no condition: a Sigma rule would match every event")
    spec = specs[detection.table]
    mapper = _Mapper(spec, exact)
    predicate = mapper.node(detection.predicate, positive=True)
    if predicate is True and spec.fallback_table and spec.fallback_columns:
        renamed = _rename_columns(detection.predicate, spec.fallback_columns)
        fallback = _Mapper(specs[spec.fallback_table], exact)
        predicate = fallback.node(renamed, positive=True)
        fallback.change_model(specs[detection.table].fallback_note or "")
        mapper = fallback
        detection = _fallback_aggregation(
            detection, spec.fallback_columns, schema, specs[spec.fallback_table].name
        )
        spec = specs[spec.fallback_table]
    if predicate is True or predicate is False:
        raise UnsupportedKqlError("no condition of this query can be expressed with Sigma fields")
    if spec.approximate:
        mapper.change_model(spec.approximate, first=True)
    mapped = replace(detection, table=spec.name, predicate=simplify(predicate))
    notes = tuple(dict.fromkeys(n for n in (*mapper.notes, *detection.notes) if n))
    return MappedRule(mapped, spec, mapper.fidelity, notes, mapper.measurable)


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


def _rename_columns(node: Node, renames: Mapping[str, str]) -> Node:
    if isinstance(node, Predicate):
        return replace(node, column=renames.get(node.column, node.column))
    if isinstance(node, Not):
        return Not(_rename_columns(node.item, renames))
    if isinstance(node, And | Or):
        return type(node)(tuple(_rename_columns(item, renames) for item in node.items))
    return node


class _Mapper:
    def __init__(self, spec: TableSpec, exact: bool) -> None:
        self.spec = spec
        self.exact = exact
        self.notes: list[str] = []
        self.fidelity = Fidelity.EXACT
        self.measurable = Fidelity.EXACT

    def widen(self, note: str) -> None:
        """A test that matches more than the original's."""
        self.notes.append(note)
        self.fidelity = Fidelity.worst(self.fidelity, Fidelity.WIDENED)
        self.measurable = Fidelity.worst(self.measurable, Fidelity.WIDENED)

    def leave_out(self, note: str) -> None:
        """A test with no Sigma counterpart, replaced by the constant that widens."""
        self.notes.append(note)
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
        spec = self.spec.fields.get(leaf.column)
        if spec is None:
            self.leave_out(
                f"`{leaf.text}` was left out: {leaf.column} has no field in Sigma's "
                f"{self.spec.logsource['category']} category; the rule is wider"
            )
            return positive
        mapped = replace(leaf, column=spec.field)
        if leaf.match is Match.REGEX:  # RE2's mid-pattern (?i) in a form Python and pySigma accept
            mapped = replace(mapped, values=tuple(scoped_flags(str(v)) for v in leaf.values))
        widening_allowed = positive != leaf.negated and not self.exact
        if spec.part == "file_name":
            return self.file_name(mapped, widening_allowed)
        if leaf.match is Match.HAS:
            if widening_allowed:
                self.widen(f"`{leaf.text}` matches whole terms; Sigma `contains` also matches inside words")
                return replace(mapped, match=Match.CONTAINS)
            return _term_regex(mapped)
        return mapped

    def file_name(self, leaf: Predicate, widening_allowed: bool) -> Node | bool:
        """A test on a path's last part, as a test on the whole path (backslash-separated)."""
        match = leaf.match
        if match is Match.EQUALS:
            return replace(leaf, match=Match.ENDSWITH, values=tuple("\\" + str(v) for v in leaf.values))
        if match in (Match.ENDSWITH, Match.EMPTY):
            return leaf
        if match in (Match.STARTSWITH, Match.CONTAINS, Match.HAS) and widening_allowed:
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
        elif match is Match.HAS:
            patterns = tuple(_term_pattern(str(v), tail=r"[^\\]*$") for v in leaf.values)
        else:
            self.leave_out(f"`{leaf.text}` tests the file name; it cannot be rewritten on {leaf.column}")
            return True if widening_allowed else leaf
        return replace(leaf, match=Match.REGEX, values=patterns)


def _term_regex(leaf: Predicate) -> Predicate:
    """KQL ``has``: the needle bounded by non-term characters (RE2-compatible, no look-around)."""
    return replace(leaf, match=Match.REGEX, values=tuple(_term_pattern(str(v)) for v in leaf.values))


def _term_pattern(needle: str, tail: str = "") -> str:
    head = f"(^|{_NOT_TERM})" if needle[:1] and _TERM_CHAR.match(needle[0]) else ""
    if needle[-1:] and _TERM_CHAR.match(needle[-1]):
        end = f"($|{_NOT_TERM})" if not tail else f"($|[^{TERM_CLASS}\\\\]{tail})"
    else:
        end = tail
    return head + regex_escape(needle) + end


def regex_escape(text: str) -> str:
    """Escape only the regex metacharacters, so the pattern stays readable and RE2-compatible."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)
