"""A threshold after ``summarize`` as a Sigma correlation rule (Sigma specification v2).

``summarize count() by A | where count_ > 5`` becomes the base rule (the filter, with a ``name``)
and an ``event_count`` correlation over it (``dcount(X) > 5``: a ``value_count`` of X's field),
grouped by the Sigma fields of the ``by`` columns, its timespan from ``bin()``, else the time
window. Both go in one multi-document YAML file, the correlation first as in the specification's
own example; ``generate`` keeps its default (false): only the correlation is a detection.

Every change is a widening, noted: a group-by column with no Sigma field is left out (coarser
groups count more), a counted column with no Sigma field makes the distinct count an event count
(never smaller). Targets: splunk, esql and eql convert the pair through pySigma's correlation
support; kusto gets ``summarize`` and ``where`` back natively (the aggregation template); lucene
cannot count, so it gets the base rule's query, every event of every group, and so does eql where
its sequences cannot count (distinct values, a bound of one event). splunk and esql count in
buckets of the timespan where the original has ``bin()``; without it the original counts once
over its time range, and so do they (the correlation method ``targets.WHOLE_RANGE``: no buckets,
the range ``earliest=-7d`` / ``NOW() - 7days`` in the query).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import targets
from .mapping import MappedRule, TableSpec
from .model import Fidelity, Threshold
from .sigma import Options, rule_document
from .sources import SourceRule
from .yaml_text import dump_yaml

if TYPE_CHECKING:
    from .fidelity import TargetFidelity

SIGMA_TARGET = "sigma"  # fidelity.SIGMA: the Sigma rule itself
# Defender's advanced hunting keeps 30 days of data: a query without a time range counts over them
HUNTING_RETENTION = timedelta(days=30)
CORRELATION_KEY_ORDER = (
    "title",
    "id",
    "status",
    "description",
    "references",
    "author",
    "date",
    "tags",
    "correlation",
    "falsepositives",
    "level",
)


@dataclass(frozen=True)
class Plan:
    """What the correlation keeps of the threshold, and what it changes (notes)."""

    threshold: Threshold
    kind: str  # event_count | value_count
    field: str | None  # the counted field of a value_count
    group_by: tuple[str, ...]
    dropped: tuple[str, ...]  # group-by columns with no Sigma field, left out
    timespan: str
    from_bin: bool
    notes: tuple[str, ...]


def plan(mapped: MappedRule) -> Plan | None:
    """The correlation a mapped rule's threshold becomes, or None without a threshold."""
    aggregation = mapped.detection.aggregation
    if aggregation is None or aggregation.having is None:
        return None
    threshold = aggregation.having
    group_by, dropped = group_fields(mapped.table, aggregation.by)
    notes: list[str] = []
    if dropped:
        notes.append(
            f"group-by column(s) {', '.join(dropped)} have no Sigma field to group by (a file name is "
            "only part of a path): the correlation counts over coarser groups, which only adds groups"
        )
    kind, field = "event_count", None
    if threshold.function.function != "count":  # dcount(X), array_length(make_set(X))
        column = threshold.function.column or ""
        spec = mapped.table.fields.get(column)
        if spec is None:
            notes.append(
                f"{column} has no Sigma field: `{threshold.text}` becomes a count of events, which is "
                "never below the count of distinct values (wider)"
            )
        else:
            kind, field = "value_count", spec.field
            if spec.part:
                notes.append(
                    f"the distinct {column} values are counted as distinct {spec.field} paths, never "
                    "fewer (wider)"
                )
    span, from_bin = aggregation.bin, True
    if span is None:
        span, from_bin = mapped.detection.window, False
    if span is None:
        span = HUNTING_RETENTION
        notes.append(
            "the query has no time range: the correlation counts over 30d, what Defender's advanced "
            "hunting keeps"
        )
    timespan = targets.compact_timespan(span)
    verb = "distinct values" if kind == "value_count" else "events"
    notes.insert(
        0,
        f"the threshold `{threshold.text}` becomes a Sigma {kind} correlation: {verb} per "
        f"{', '.join(group_by) or 'rule'} within {timespan}",
    )
    others = [f.name for f in aggregation.functions if f != threshold.function]
    if others:
        notes.append(f"the other aggregates ({', '.join(others)}) are output, not part of the correlation")
    return Plan(threshold, kind, field, tuple(group_by), tuple(dropped), timespan, from_bin, tuple(notes))


def group_fields(table: TableSpec, by: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The Sigma fields a correlation groups by for the ``by`` columns, and the columns with none.

    With none at all the threshold is left out (``mapping.map_detection``): SigmaHQ refuses a
    correlation without ``group-by``."""
    names = targets.aggregation_names()["columns"]
    group_by: list[str] = []
    dropped: list[str] = []
    for column in by:
        field = _sigma_field(table, column) or names.get(column, {}).get("sigma")
        (group_by if field else dropped).append(field or column)
    return group_by, dropped


def _sigma_field(table: TableSpec, column: str) -> str | None:
    """The Sigma field of a group-by column; a file name's field is a whole path, a command's a
    longer text, finer: none."""
    spec = table.fields.get(column)
    return spec.field if spec is not None and spec.whole else None


@dataclass(frozen=True)
class Documents:
    correlation: dict[str, Any]
    base: dict[str, Any]
    yaml: str
    filename: str  # SigmaHQ's validators want ``correlation_`` before a combined file's name
    plan: Plan


def documents(
    source: SourceRule, mapped: MappedRule, options: Options, filename: str, chosen: Plan
) -> Documents:
    """The correlation and its base rule (named after the file), as one multi-document YAML text."""
    base = rule_document(source, mapped, options)
    name = filename.removesuffix(".yml")
    base = {"title": base["title"], "id": base["id"], "name": name, **base}
    base_title = f"{base['title'][:104]} - Single Event"
    correlation_meta = {key: value for key, value in base.items() if key in CORRELATION_KEY_ORDER}
    digest = hashlib.sha256(f"{base['id']}|correlation".encode()).digest()
    condition: dict[str, Any] = {chosen.threshold.match.value: chosen.threshold.value}
    if chosen.field:
        condition = {"field": chosen.field, **condition}
    body: dict[str, Any] = {"type": chosen.kind, "rules": [name]}
    if chosen.group_by:
        body["group-by"] = list(chosen.group_by)
    body.update(timespan=chosen.timespan, condition=condition)
    correlation = {
        **correlation_meta,
        "id": str(uuid.UUID(bytes=digest[:16], version=4)),
        "correlation": body,
    }
    correlation = {key: correlation[key] for key in CORRELATION_KEY_ORDER if correlation.get(key)}
    base["title"] = base_title
    filename = f"correlation_{name}"[:86].rstrip("_") + ".yml"
    text = dump_yaml(correlation) + "---\n" + dump_yaml(base)
    return Documents(correlation, base, text, filename, chosen)


def convert(
    target: str, pair: Documents, attributes: dict[str, Any], model: str | None = None
) -> targets.TargetQuery:
    """The query of one target (in data model ``model``) for a correlation; kusto, lucene (and eql
    where a sequence cannot count) work from the base rule."""
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError
    from sigma.rule import SigmaRule

    counted = attributes.get("having", {}).get("counted")
    if target == "kusto" and counted not in {f["name"] for f in attributes.get("functions", [])}:
        return targets.TargetQuery(
            None, "kusto: the counted column has no equivalent (pipelines/aggregation.yml)"
        )
    if target == "kusto" or unbounded_reason(target, pair.plan):
        return targets.convert(
            target, lambda: SigmaRule.from_dict(pair.base), attributes if target == "kusto" else {}, model
        )
    # without bin(), splunk and esql count once over the time range (the timespan), not in buckets
    method = targets.WHOLE_RANGE if not pair.plan.from_bin and target in ("splunk", "esql") else None
    try:
        correlation = pair.correlation
        window = attributes.get("window")
        if method and target == "splunk":  # the range the count runs over: the correlation's timespan
            window = {"compact": correlation["correlation"]["timespan"]}
        if target == "splunk" and window:  # `earliest=` leads the whole search
            correlation = {**correlation, "rmm2sigma": {"window": window}}
        collection = SigmaCollection.from_dicts([pair.base, correlation])
        queries = targets.backend(target, model).convert(collection, correlation_method=method)
    except (SigmaError, NotImplementedError, ValueError, TypeError, KeyError) as error:
        return targets.TargetQuery(None, f"{target}: {str(error).splitlines()[0]}")
    return targets.TargetQuery("\n".join(str(q) for q in queries))


def threshold_fidelity(target: str, label: TargetFidelity, mapped: MappedRule) -> TargetFidelity:
    """A target's label on groups (``_counted``), and the group of events with no value in a
    group-by field of a column Kusto may leave null (a number), which Kusto's ``summarize`` reports
    and Splunk's ``stats ... by`` and Sigma backends drop: approximate, with that loss declared
    (``fidelity.NULL_GROUPS``)."""
    from .fidelity import NULL_GROUPS

    counted = _counted(target, label, mapped)
    nullable = _nullable_group_fields(mapped) if target in (SIGMA_TARGET, "splunk") else []
    if not nullable:
        return counted
    note = (
        f"{target}: events with no {', '.join(nullable)} value form no group (Splunk's `stats ... by` "
        "and Sigma backends drop them), where the original's summary reports them as one"
    )
    approximate = Fidelity.APPROXIMATE.value if counted.label in _KEEPING else counted.label
    losses = (*counted.losses, NULL_GROUPS)
    return replace(counted, label=approximate, notes=(*counted.notes, note), losses=losses)


# labels a declared loss makes approximate
_KEEPING = (Fidelity.EXACT.value, Fidelity.WIDENED.value, Fidelity.APPROXIMATE.value)


def _nullable_group_fields(mapped: MappedRule) -> list[str]:
    """The Sigma group-by fields of columns Kusto may leave null: every type but string."""
    from .convert import defender_schema

    chosen = plan(mapped)
    aggregation = mapped.detection.aggregation
    if chosen is None or aggregation is None:
        return []
    columns = defender_schema().get(mapped.detection.table, {})
    kept = [column for column in aggregation.by if column not in chosen.dropped]
    return [
        field
        for column, field in zip(kept, chosen.group_by, strict=True)
        if columns.get(column, "string") != "string"
    ]


def _counted(target: str, label: TargetFidelity, mapped: MappedRule) -> TargetFidelity:
    """A target's label on groups, from its label on rows (``label``): what its counting changes.

    kusto renders the original ``summarize`` and ``where``: no change. splunk and esql count per
    bucket where the original has ``bin()``, else once over the time range, as the original does.
    lucene (and eql where a sequence cannot count) return every matching event. Every other change
    widens (more groups; coarser groups make it approximate), except a Sigma value_count, which a
    backend comparing values case-insensitively can count lower: approximate, with that loss
    declared (``fidelity.CASELESS_DISTINCT``).
    """
    from .fidelity import CASELESS_DISTINCT

    chosen = plan(mapped)
    if chosen is None or target == "kusto":
        return label
    notes = list(label.notes)
    base = label.label
    widened = base in (Fidelity.EXACT.value, Fidelity.WIDENED.value)
    if mapped.detection.window is not None and (target == "eql" or (target == "esql" and chosen.from_bin)):
        notes.append(
            f"{target}: the time window is not part of the correlation query: run it over the last "
            f"{targets.compact_timespan(mapped.detection.window)}"
        )
    unbounded = unbounded_reason(target, chosen)
    if unbounded:  # every event of every group: each group the original reports is there
        notes.append(f"{target}: {unbounded}: the query returns every matching event")
        return replace(label, label=Fidelity.WIDENED.value if widened else base, notes=tuple(notes))
    if target in ("splunk", "esql") and not chosen.from_bin:
        notes.append(
            f"{target}: the count runs once over the last {chosen.timespan}, without time buckets, as "
            "the original counts once over its time range"
        )
    if target == SIGMA_TARGET and chosen.kind == "value_count":
        notes.append(
            "sigma: a backend that compares values case-insensitively (pysigma-backend-sqlite) counts "
            f"values differing only in case once, so it can miss a group whose `{chosen.threshold.text}` "
            f"holds only with case variants counted apart; its sliding {chosen.timespan} windows can add "
            "groups"
        )
        losses = (*label.losses, CASELESS_DISTINCT)
        return replace(label, label=Fidelity.APPROXIMATE.value, notes=tuple(notes), losses=losses)
    if target == SIGMA_TARGET:
        notes.append(
            f"sigma: the correlation counts within {chosen.timespan} windows, which a backend may slide "
            "(sqlite, EQL), and compares group values case-insensitively: it reports at least the "
            "original's groups"
        )
    elif target == "eql":
        notes.append(
            f"eql: the count is a sequence of `runs` events within {chosen.timespan}, at least the "
            "threshold, in sliding windows (wider)"
        )
    elif not chosen.dropped:
        return replace(label, notes=tuple(notes))
    return replace(label, label=Fidelity.APPROXIMATE.value if widened else base, notes=tuple(notes))


def unbounded_reason(target: str, chosen: Plan) -> str | None:
    """Why ``target`` gets the base rule's query (every matching event) in place of the threshold."""
    if target == "lucene":
        return f"the threshold `{chosen.threshold.text}` is not expressible in lucene"
    if target != "eql":
        return None
    if chosen.kind == "value_count":
        return (
            f"the threshold `{chosen.threshold.text}` counts distinct values, which an EQL sequence "
            "(events joined on equal values) cannot"
        )
    if chosen.threshold.value <= 1:  # pySigma writes the bound as `with runs=N`; EQL wants two or more
        return f"the threshold `{chosen.threshold.text}` would be a sequence of one event, which is no EQL"
    return None
