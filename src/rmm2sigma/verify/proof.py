"""Measure a conversion: run the original KQL and every target over the same generated events.

Each target's selected events are compared with the original's: ``exact`` (the same),
``widened`` (a superset), ``narrowed`` (a subset), ``diverged`` (neither), ``not_executed``
with the reason, or ``unproven`` when the original selects none of the events (generated
again with other seeds and more rows first): then no comparison says anything. Every
difference comes with one example event, the Defender row, for each direction. The Sigma rule
itself, executed through SQLite, is the target ``sigma``.

The original is run as far as the rule stands for it (``lower_kept``): an operator the lowering
left out (a join, a summary, ``mv-expand`` ...) only keeps or reshapes the rows selected before
it, so the rule is wider than the whole query by construction, and labelled approximate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sigma.pipelines.common import windows_logsource_mapping

from .. import kql, targets
from ..convert import defender_schema
from ..errors import Rmm2SigmaError
from ..fidelity import SIGMA, agrees, ecs_field_names, target_fidelity
from ..kql.lower import lower_kept
from ..mapping import TableSpec, map_detection
from ..sigma import Options, emit
from ..sources import SourceRule
from .engines import (
    EqlEngine,
    KqlEngine,
    NotExecutable,
    NotParsed,
    SigmaEngine,
    ecs_rows,
    lucene_error,
    row_selecting,
    sigma_fields,
    sigma_rows,
    target_rows,
    with_ids,
)
from .events import ID, Row, generate

EXACT, WIDENED, NARROWED, DIVERGED, NOT_EXECUTED = "exact", "widened", "narrowed", "diverged", "not_executed"
UNPROVEN = "unproven"
VACUOUS = "the original selects none of the generated events, so this label cannot be checked"
_RETRIES = 3  # further generations, with other seeds and more random rows, when the original selects none
_RETRY_ROWS = 400
TARGETS = (SIGMA, *targets.TARGETS)
_NO_ENGINE = {
    "splunk": "no Splunk engine runs here",
    "esql": "no ES|QL engine runs here",
    "lucene": "no Lucene engine runs here; luqum parses the query",
}


@dataclass(frozen=True)
class TargetProof:
    """One target's measurement; ``missed``/``extra`` are example events of each difference."""

    target: str
    verdict: str
    reason: str = ""
    selected: int = 0
    missed: Row | None = None  # selected by the original, not by the target
    extra: Row | None = None  # selected by the target, not by the original
    label: str | None = None  # the fidelity label the report declares for this target
    agrees: bool | None = None  # label vs measurement; None when not executed


@dataclass(frozen=True)
class RuleProof:
    source: str
    title: str = ""
    exact_mode: bool = False
    error: str | None = None  # the input does not convert, or the original does not execute
    events: int = 0
    original: int = 0  # events the original selects
    targets: dict[str, TargetProof] = field(default_factory=dict)
    # a threshold's labels are on groups (tests/test_correlation.py proves them); rows measure its base
    threshold: str | None = None

    @property
    def problems(self) -> list[TargetProof]:
        """Targets that lose events or contradict their label."""
        return [t for t in self.targets.values() if t.verdict in (NARROWED, DIVERGED) or t.agrees is False]


_EVENT_DATA = "winlog.event_data."


def ecs_documents(events: Sequence[Row], spec: TableSpec, also: Mapping[str, str] | None = None) -> list[Row]:
    """Sigma events as the ECS documents of the log source (``engines.ecs_rows``; ``also`` names
    more fields, a correlation's group-by). A Windows log's (the Security log's) carry its channel,
    and their event code and event data as text, as Winlogbeat writes them: the ecs_windows
    pipeline's query tests the channel and the code."""
    logsource = spec.logsource
    names = {**ecs_field_names(logsource.get("category", ""), logsource.get("service", "")), **(also or {})}
    if "category" in logsource:
        return ecs_rows(events, names)
    texts = {field for field, name in names.items() if name.startswith(_EVENT_DATA) or name == "event.code"}
    written = [
        {f: str(v) if f in texts and v is not None else v for f, v in event.items()} for event in events
    ]
    documents = ecs_rows(written, names)
    channel = windows_logsource_mapping.get(logsource.get("service", ""))
    for document in documents if channel else ():
        document.setdefault("winlog", {})["channel"] = channel
    return documents


def verdict(original: AbstractSet[Hashable], target: AbstractSet[Hashable]) -> str:
    """How ``target`` relates to ``original`` (events by id, or groups by key)."""
    if original == target:
        return EXACT
    if original < target:
        return WIDENED
    if target < original:
        return NARROWED
    return DIVERGED


@cache
def _engines() -> tuple[KqlEngine, SigmaEngine, EqlEngine]:
    """One engine of each kind per process: connections and backends are reused across rules."""
    return KqlEngine(defender_schema()), SigmaEngine(), EqlEngine()


def measure(source: SourceRule, options: Options, now: datetime | None = None) -> RuleProof:
    """Convert ``source`` as ``rmm2sigma convert`` does and measure every target."""
    schema = defender_schema()
    try:
        query = kql.parse(source.kql)
        detection, kept = lower_kept(query, schema)
        mapped = map_detection(detection, exact=options.exact, schema=schema)
    except Rmm2SigmaError as error:
        return RuleProof(source.path, exact_mode=options.exact, error=f"not convertible: {error}")
    emitted = emit(source, mapped, options)
    document = emitted.document  # not rule.to_dict(): see convert._convert
    moment = (now or datetime.now(UTC)).replace(tzinfo=None, microsecond=0)
    seed = int.from_bytes(hashlib.sha256(source.kql.encode()).digest()[:4], "big")
    kql_engine, sigma_engine, eql_engine = _engines()
    mapped_spec = mapped.table
    title = emitted.rule.title
    for attempt in range(1 + _RETRIES):  # more events until the original selects some
        more: dict[str, int] = {} if attempt == 0 else {"random_rows": _RETRY_ROWS}
        rows = generate(detection, schema, seed=seed + attempt, now=moment, **more)
        mapped_rows = target_rows(rows, mapped.renamed)
        loads = {detection.table: rows}
        if mapped.renamed is not None:  # a fallback's events beside the original's (one table for a parent)
            loads[mapped.detection.table] = [*loads.get(mapped.detection.table, []), *mapped_rows]
        kql_engine.load(loads)
        try:
            original = kql_engine.select(row_selecting(kept), moment)
        except NotExecutable as error:
            return RuleProof(
                source.path, title, options.exact, f"the original KQL does not execute: {error}", len(rows)
            )
        if original:
            break
    by_id = {row[ID]: row for row in rows}

    def make_rule() -> Any:
        from sigma.rule import SigmaRule

        return SigmaRule.from_dict(document)

    # a threshold's base rule: see groups.py
    labels = target_fidelity(mapped, TARGETS, groups=False, splunk_data_model=options.splunk_data_model)
    results: dict[str, TargetProof] = {}
    events = sigma_rows(mapped_rows, mapped_spec)
    for target in TARGETS:
        label = labels[target].label
        if labels[target].refusal:  # no query is shipped for it: nothing to measure
            results[target] = TargetProof(target, NOT_EXECUTED, labels[target].refusal or "", label=label)
            continue
        try:
            if target == SIGMA:
                selected = sigma_engine.select(
                    sigma_engine.query(make_rule()), events, sigma_fields(mapped_spec)
                )
            elif target in ("kusto", "eql"):
                converted = targets.convert(target, make_rule, {})
                if converted.query is None:
                    raise NotExecutable(converted.error or "conversion failed")
                if target == "kusto":
                    selected = kql_engine.select(with_ids(converted.query), moment)
                else:
                    selected = eql_engine.select(converted.query, ecs_documents(events, mapped_spec))
            else:
                model = targets.data_model(target, options.splunk_data_model)
                results[target] = _not_executed(target, make_rule, label, model)
                continue
        except NotExecutable as error:  # a query its engine's parser rejects breaks the label
            broken = False if isinstance(error, NotParsed) else None
            results[target] = TargetProof(target, NOT_EXECUTED, str(error), label=label, agrees=broken)
            continue
        measured = verdict(original, selected)
        checked: bool | None = agrees(label, measured)
        reason = ""
        if not original:  # no event can show what the original misses or keeps: nothing is proven
            measured, checked, reason = UNPROVEN, None, VACUOUS
        results[target] = TargetProof(
            target,
            measured,
            reason,
            selected=len(selected),
            missed=_example(original - selected, by_id),
            extra=_example(selected - original, by_id),
            label=label,
            agrees=checked,
        )
    having = mapped.detection.aggregation.having if mapped.detection.aggregation else None
    return RuleProof(
        source.path,
        title,
        options.exact,
        None,
        len(rows),
        len(original),
        results,
        having.text if having else None,
    )


def _not_executed(target: str, make_rule: Any, label: str, model: str | None) -> TargetProof:
    converted = targets.convert(target, make_rule, {}, model)
    if converted.query is None:
        return TargetProof(target, NOT_EXECUTED, converted.error or "conversion failed", label=label)
    error = lucene_error(converted.query) if target == "lucene" else None
    return TargetProof(
        target, NOT_EXECUTED, error or _NO_ENGINE[target], label=label, agrees=False if error else None
    )


def _example(ids: set[int], by_id: dict[int, Row]) -> Row | None:
    """The first differing event, as a JSON-friendly Defender row."""
    if not ids:
        return None
    row = by_id[min(ids)]
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


def summary(proofs: Sequence[RuleProof]) -> dict[str, dict[str, int]]:
    """Counts per target and verdict (``not_executed`` included)."""
    counts: dict[str, dict[str, int]] = {}
    for proof in proofs:
        for target, result in proof.targets.items():
            entry = counts.setdefault(target, {})
            entry[result.verdict] = entry.get(result.verdict, 0) + 1
    return counts
