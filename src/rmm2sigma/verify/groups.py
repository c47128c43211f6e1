"""Prove a threshold (``summarize ... | where Count > N``) on the groups it reports, not on rows.

The distinguishing rows of ``events.generate`` are dealt into many groups (hosts, a case variant
of one host, time bins) of seeded random sizes up to twice the threshold, so the threshold keeps
some groups and drops others; without ``bin()`` one more group is dealt across the boundary of
the fixed buckets pySigma's ``stats`` correlations count in, passing the threshold only when
counted once over the whole time range, and for a distinct count one more passes only with two
values that differ in case counted apart (``host-cased``: the loss a Sigma value_count declares).
A counted column the filter tests gets more values from variants of kept rows the original keeps.
The original KQL and the emitted kusto query then run in duckdb-kql, and the Sigma correlation
in pysigma-backend-sqlite, which executes correlation rules (counting in sliding windows of the
timespan, group keys compared case-insensitively), and the eql sequence (``with runs``) in the
``eql`` engine; an eql or lucene query without the threshold returns every event it selects, so
its groups are those of its events. No Splunk or ES|QL engine runs here: their aggregation tails
(``bin``/``date_trunc`` buckets, ``stats`` by the group-by fields, the bound) are evaluated by
``stats_groups``, a model of those commands (case-sensitive keys and distinct values, buckets
from the Unix epoch), over the events the Sigma base rule selects. Each reports its group keys;
the original's are also projected the way the Sigma correlation sees them.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sigma.rule import SigmaRule

from .. import kql
from ..convert import convert_rule, defender_schema
from ..correlation import HUNTING_RETENTION, Plan, plan, unbounded_reason
from ..fidelity import NULL_GROUPS, SIGMA, agrees, target_fidelity
from ..kql import syntax as k
from ..kql.lower import lower
from ..kql.printer import to_kql
from ..mapping import TableSpec, map_detection
from ..model import Aggregation, Detection, Match, Predicate, walk
from ..sigma import Options
from ..sources import SourceRule
from .engines import (
    EqlEngine,
    KqlEngine,
    NotExecutable,
    SigmaEngine,
    row_selecting,
    sigma_fields,
    sigma_rows,
    target_rows,
)
from .events import ID, NAME_COLUMNS, PATH_COLUMNS, Row, generate, set_value
from .proof import ecs_documents, verdict

Key = tuple[Any, ...]
_HOSTS = 12


@dataclass(frozen=True)
class GroupProof:
    original: frozenset[Key]  # the group keys the original KQL keeps (by columns, then the bin)
    kusto: frozenset[Key]  # the same for the emitted kusto query
    sigma: frozenset[Key]  # the Sigma correlation's group-by values (lowercased by the backend)
    original_as_sigma: frozenset[Key]  # the original's groups as the correlation names them
    groups: int  # groups with at least one event the filter keeps
    eql: frozenset[Key] | None = None  # the eql query's groups (lowercased); None: no eql query
    # the Sigma groups missed that the declared loss (distinct values differing only in case,
    # fidelity.CASELESS_DISTINCT) does not explain: each such group's original events, their
    # values compared without case, still pass the threshold
    sigma_unexplained: frozenset[Key] = frozenset()
    original_kept: frozenset[Key] = frozenset()  # the original's groups on the kept columns, cased
    splunk: frozenset[Key] | None = None  # the splunk query's groups (stats_groups), cased
    esql: frozenset[Key] | None = None  # the same for the esql query
    straddling: Key | None = None  # the group dealt across a fixed bucket boundary (no bin())
    plan: Plan | None = None  # the correlation
    # target -> the losses its label declares (fidelity.TargetFidelity.losses)
    declared_losses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    base_events: tuple[Row, ...] = ()  # the events the Sigma base rule selects (Sigma fields)
    not_executed: dict[str, str] = field(default_factory=dict)  # target -> why its engine could not run


def prove(source: SourceRule, options: Options, now: datetime, seed: int = 0) -> GroupProof:
    """Run the original, the emitted kusto query and the Sigma correlation over dealt rows."""
    schema = defender_schema()
    query = kql.parse(source.kql)
    detection = lower(query, schema)
    mapped = map_detection(detection, exact=options.exact, schema=schema)
    chosen = plan(mapped)
    aggregation = mapped.detection.aggregation
    if chosen is None or aggregation is None:
        raise ValueError(f"{source.path}: the query has no threshold after summarize")
    converted = convert_rule(source, options, ("kusto", "splunk", "esql", "eql"))
    labels = target_fidelity(mapped, (SIGMA, *converted.queries))
    generated = generate(detection, schema, seed=seed, now=now)
    engine = KqlEngine(schema)
    engine.load({detection.table: generated})
    selected = engine.select(row_selecting(query), now)
    passing = [r for r in generated if r[ID] in selected]
    passing += _variants(engine, query, passing, detection, now)
    rows = deal(passing, generated, detection, now, seed)
    keys = [*aggregation.by, *([_bin_column(query)] if aggregation.bin else [])]
    projection = "\n| project " + ", ".join(keys)
    engine.load({detection.table: rows})
    original = engine.rows(_up_to_threshold(query) + projection, now)
    emitted = [*aggregation.by, *(["Timestamp"] if aggregation.bin else [])]  # it bins Timestamp
    kusto = engine.rows(converted.queries["kusto"] + "\n| project " + ", ".join(emitted), now)
    kept = [column for column in aggregation.by if column not in chosen.dropped]
    as_sigma = {tuple(_caseless(dict(zip(keys, key, strict=True))[c]) for c in kept) for key in original}
    kept_keys = {tuple(dict(zip(keys, key, strict=True))[c] for c in kept) for key in original}
    events = sigma_rows(target_rows(rows, mapped.renamed), mapped.table)
    for event, row in zip(events, rows, strict=True):
        event.update({field: row.get(column) for column, field in zip(kept, chosen.group_by, strict=True)})
        event["timestamp"] = row["Timestamp"].isoformat()
    sigma = SigmaEngine()
    from sigma.collection import SigmaCollection

    collection = SigmaCollection.from_yaml(converted.yaml)
    (correlation_query,) = sigma.backend.convert(collection)
    fields = [*sigma_fields(mapped.table), *chosen.group_by, "timestamp"]
    cursor = sigma.execute(correlation_query, events, fields)
    index = [d[0] for d in cursor.description].index("group_keys")
    reported = {
        tuple(json.loads(row[index]).get(field) for field in chosen.group_by) for row in cursor.fetchall()
    }
    everything = engine.rows(_up_to_threshold(query, include=False) + projection, now)
    eql_groups = None
    not_executed: dict[str, str] = {}
    try:
        if "eql" in converted.queries and unbounded_reason("eql", chosen):  # the base rule's events
            eql_groups = _event_groups(converted.queries["eql"], events, mapped.table, chosen.group_by)
        elif "eql" in converted.queries:
            eql_groups = _eql_groups(converted.queries["eql"], events, mapped.table, chosen.group_by)
    except NotExecutable as error:
        not_executed["eql"] = str(error)
    kept_ids = engine.select(row_selecting(query), now)
    kept_rows = [r for r in rows if r[ID] in kept_ids]
    losses = {target: label.losses for target, label in labels.items() if label.losses}
    missed = _beyond_null(as_sigma - reported, losses.get(SIGMA))
    unexplained = _unexplained(missed, kept_rows, chosen, aggregation)
    base = sigma.select(sigma.query(SigmaRule.from_dict(converted.document)), events, fields)
    chosen_events = [event for event in events if event[ID] in base]
    modelled = {
        target: stats_groups(target, converted.queries[target], chosen_events, chosen, now)
        for target in ("splunk", "esql")
        if target in converted.queries
    }
    return GroupProof(
        original=frozenset(original),
        kusto=frozenset(kusto),
        sigma=frozenset(reported),
        original_as_sigma=frozenset(as_sigma),
        groups=len(everything),
        eql=eql_groups,
        sigma_unexplained=frozenset(unexplained),
        original_kept=frozenset(kept_keys),
        splunk=modelled.get("splunk"),
        esql=modelled.get("esql"),
        straddling=_straddling_key(rows, kept),
        plan=chosen,
        declared_losses=losses,
        base_events=tuple(chosen_events),
        not_executed=not_executed,
    )


def group_verdicts(proof: GroupProof) -> dict[str, tuple[str, bool]]:
    """Each target's verdict on the original's groups, named as the target names them (kusto as
    the original, sigma and eql without case, splunk and esql on the kept columns with case), and
    whether its label declares a loss that explains every group it misses."""
    out = {
        "kusto": (verdict(proof.original, proof.kusto), False),
        SIGMA: (
            verdict(proof.original_as_sigma, proof.sigma),
            SIGMA in proof.declared_losses and not proof.sigma_unexplained,
        ),
    }
    if proof.eql is not None:
        out["eql"] = (verdict(proof.original_as_sigma, proof.eql), False)
    for target, groups in (("splunk", proof.splunk), ("esql", proof.esql)):
        if groups is not None:
            missed = _beyond_null(set(proof.original_kept - groups), proof.declared_losses.get(target))
            explained = target in proof.declared_losses and not missed
            out[target] = (verdict(proof.original_kept, groups), explained)
    return out


def _beyond_null(missed: set[Key], losses: tuple[str, ...] | None) -> set[Key]:
    """The missed groups a declared loss of null-keyed groups (``fidelity.NULL_GROUPS``) does not
    explain: those with a value in every group-by field."""
    if NULL_GROUPS not in (losses or ()):
        return missed
    return {key for key in missed if None not in key}


def keeps_promise(label: str, measured: str, declared_loss: bool = False) -> bool:
    """A label's promise on groups: ``exact`` the same groups; ``widened`` never fewer (the extra
    events of a widened filter need not make an extra group); ``approximate`` as ``agrees``."""
    return agrees(label, measured, declared_loss) or (label == "widened" and measured == "exact")


def _event_groups(
    query: str, events: list[Row], spec: TableSpec, group_by: tuple[str, ...]
) -> frozenset[Key]:
    """The groups of the events a query without the threshold selects (lowercased)."""
    chosen = EqlEngine().select(query, ecs_documents(events, spec))
    return frozenset(
        tuple(_caseless(event.get(field)) for field in group_by) for event in events if event[ID] in chosen
    )


def _unexplained(missed: set[Key], kept_rows: list[Row], chosen: Plan, aggregation: Aggregation) -> set[Key]:
    """The missed groups (as Sigma names them) the declared loss of a value_count does not explain.

    A backend counting distinct values without case counts at least the distinct values of each
    original group (a window of the timespan covers the group's events), compared without case: a
    missed group is explained when every original group it stands for fails the threshold so
    counted. Any other missed group is unexplained (an event_count declares no loss).
    """
    if chosen.kind != "value_count" or not missed:
        return set(missed)
    column = chosen.threshold.function.column or ""
    span = aggregation.bin
    values: dict[Key, set[Any]] = {}
    for row in kept_rows:
        bucket = datetime.min + ((row["Timestamp"] - datetime.min) // span) * span if span else None
        group = (*(row.get(c) for c in aggregation.by), bucket)
        values.setdefault(group, set()).add(_caseless(row.get(column)))
    kept = [index for index, c in enumerate(aggregation.by) if c not in chosen.dropped]
    passing = {
        tuple(_caseless(group[index]) for index in kept)
        for group, found in values.items()
        if _passes(chosen, len(found - {None}))
    }
    return missed & passing


def _passes(chosen: Plan, count: int) -> bool:
    bound = chosen.threshold.value
    return count > bound if chosen.threshold.match is Match.GT else count >= bound


def stats_groups(target: str, query: str, events: list[Row], chosen: Plan, now: datetime) -> frozenset[Key]:
    """The groups a splunk or esql correlation query reports over ``events`` (in Sigma's fields,
    already selected by the base rule): a model of its aggregation tail, no engine.

    splunk: ``earliest=-S`` (events of the last S), ``| bin _time span=S``, ``| stats count|dc(F)
    as N by [_time] F...``, ``| search N op V``. esql: ``| where @timestamp >= NOW() - S``,
    ``| eval timebucket=date_trunc(S, @timestamp)``, ``| stats N=count()|count_distinct(F) by
    [timebucket, ]F...``, ``| where N op V``. Buckets start at the Unix epoch; keys and distinct
    values are compared with case (both languages do), a null key is no group in splunk and one
    group in esql. The target's field names are the Sigma fields in the correlation's order.
    """
    shape = _SPLUNK if target == "splunk" else _ESQL
    found = {name: pattern.search(query) for name, pattern in shape.items()}
    stats, bound = found["stats"], found["bound"]
    if stats is None or bound is None:
        raise ValueError(f"{target}: not a correlation query this model reads:\n{query}")
    since = found["range"] and now - _span(found["range"].group(1))
    bucket = found["bucket"] and _span(found["bucket"].group(1))
    by = [f.strip() for f in re.split(r"[ ,]+", stats.group("by") or "") if f.strip()]
    by = [f for f in by if f not in ("_time", "timebucket")]
    if len(by) != len(chosen.group_by):
        raise ValueError(f"{target}: group-by {by} is not {chosen.group_by}")
    counts: dict[Key, list[Any]] = {}
    for event in events:
        moment = datetime.fromisoformat(event["timestamp"])
        if since and moment < since:
            continue
        key = tuple(event.get(field) for field in chosen.group_by)
        if target == "splunk" and None in key:
            continue
        slot = _EPOCH + ((moment - _EPOCH) // bucket) * bucket if bucket else None
        counts.setdefault((*key, slot), []).append(event.get(chosen.field) if chosen.field else event[ID])
    op, value = bound.group("op"), int(bound.group("value"))
    reported = set()
    for group, values in counts.items():
        count = len({v for v in values if v is not None}) if chosen.field else len(values)
        if count > value if op == ">" else count >= value:
            reported.add(group[:-1])
    return frozenset(reported)


_EPOCH = datetime(1970, 1, 1)
_SPLUNK = {
    "range": re.compile(r"^earliest=-(\w+) "),
    "bucket": re.compile(r"^\| bin _time span=(\w+)$", re.M),
    "stats": re.compile(r"^\| stats (?:count|dc\([^)]*\)) as \w+(?: by (?P<by>.*))?$", re.M),
    "bound": re.compile(r"^\| search \w+ (?P<op>>=?) (?P<value>\d+)$", re.M),
}
_ESQL = {
    "range": re.compile(r"\| where @timestamp >= NOW\(\) - (\w+) \|"),
    "bucket": re.compile(r"\| eval timebucket=date_trunc\((\w+), @timestamp\)"),
    "stats": re.compile(r"\| stats \w+=(?:count\(\)|count_distinct\([^)]*\))(?: by (?P<by>.*))?$", re.M),
    "bound": re.compile(r"^\| where \w+ (?P<op>>=?) (?P<value>\d+)$", re.M),
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


def _span(text: str) -> timedelta:
    number, unit = re.fullmatch(r"(\d+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return timedelta(seconds=int(number) * _UNITS[unit])


def _straddling_key(rows: list[Row], kept: list[str]) -> Key | None:
    """The kept-column key of the group ``deal`` placed across a bucket boundary, if any."""
    for row in rows:
        if row.get("DeviceName") == _STRADDLING[0]:
            return tuple(row.get(c) for c in kept)
    return None


def _eql_groups(query: str, events: list[Row], spec: TableSpec, group_by: tuple[str, ...]) -> frozenset[Key]:
    """The groups of the sequences the eql query finds over the events in ECS (times in seconds)."""
    by, _ = EqlEngine().sequences(query, [])  # the ECS fields of the correlation's group-by, in order
    documents = ecs_documents(events, spec, dict(zip(group_by, by, strict=True)))
    timed = [
        (datetime.fromisoformat(event["timestamp"]).timestamp(), document)
        for event, document in zip(events, documents, strict=True)
    ]
    _, firsts = EqlEngine().sequences(query, timed)
    return frozenset(tuple(_caseless(_path(first, field)) for field in by) for first in firsts)


def _path(document: Row, dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def deal(selected: list[Row], rows: list[Row], detection: Detection, now: datetime, seed: int) -> list[Row]:
    """Copies of ``rows`` dealt into groups of random sizes around the threshold, inside the window.

    Three copies in four are of rows the filter keeps (``selected``), so kept counts straddle it.
    Without ``bin()``, one more group (``_STRADDLING``) of kept rows just passes the threshold with
    its events on both sides of a boundary of the fixed buckets of the timespan (from the Unix
    epoch, as Splunk's ``bin`` and ES|QL's ``date_trunc``): neither side alone passes. For a
    distinct count, one more group (``_CASED``) passes only with values differing in case.
    """
    aggregation = detection.aggregation
    assert aggregation is not None and aggregation.having is not None
    rng = random.Random(seed)
    span = aggregation.bin or detection.window or timedelta(days=7)
    window = detection.window or span * 4
    bins = max(1, min(3, int(window / span) - 1)) if aggregation.bin else 1
    top = datetime.min + ((now - datetime.min) // span) * span  # the start of the current bin
    # groups of about the threshold's size each: fewer of them for a large threshold, whose
    # correlation the oracles (sqlite's sliding windows, eql's runs) take quadratic time to count
    count = _HOSTS if aggregation.having.value <= 20 else max(4, _HOSTS * 20 // aggregation.having.value)
    hosts = [(f"host-{i}", f"id-{i}") for i in range(count)] + [("HOST-0", "id-0")]
    tested = {leaf.column for leaf in walk(detection.predicate) if isinstance(leaf, Predicate)}
    # the counted column, where the filter does not test it: a few values (the distinct count varies);
    # a tested one varies through the kept rows' variants (``_variants``)
    counted = [c for c in _counted(detection) if c not in tested]
    free = [c for c in (*aggregation.by, *counted) if c not in tested and c not in ("DeviceName", "DeviceId")]
    others = [c for c in free if c not in counted]
    # group-by columns the filter tests: one kept row's value per host, so its groups stay whole
    pinned = [c for c in aggregation.by if c in tested and c not in ("DeviceName", "DeviceId")]
    # up to about twice the threshold in a host's main group (kept rows, first values of the others)
    size = int((2 * aggregation.having.value + 3) / (0.75 * _FIRST ** len(others)))
    out: list[Row] = []
    for host, device in hosts:
        values = {c: rng.choice(selected).get(c) for c in pinned} if selected else {}
        for index in range(bins):
            start = top - (index + 1) * span if aggregation.bin else now - span * 0.9
            width = span if aggregation.bin else span * 0.8
            for _ in range(rng.randint(0, size)):
                moment = start + width * rng.random()
                pool = selected if selected and rng.random() < 0.75 else rows
                copy = {**rng.choice(pool), ID: len(out), "Timestamp": moment.replace(microsecond=0)}
                copy.update(DeviceName=host, DeviceId=device, **values)
                # other group-by columns the filter does not test: mostly one value (groups stay large
                # enough to pass), sometimes one of two others
                copy.update({c: _free(detection.table, c, _mostly_first(rng)) for c in others})
                copy.update({c: f"value-{rng.randint(0, 2 * aggregation.having.value + 2)}" for c in counted})
                out.append(copy)
    if not aggregation.bin:
        out.extend(_straddling(selected, detection, now, free, counted, len(out), rng))
    start = top - span if aggregation.bin else now - span * 0.9  # inside one bin, or the window
    out.extend(_case_apart(selected, detection, start, span * 0.8, free, counted, len(out), rng))
    return [_path_follows(row, counted) for row in out]


def _path_follows(row: Row, counted: list[str]) -> Row:
    """The row with the path of each counted file name ending with it, and the file name of each
    counted path its last part, as Defender writes them (a Sigma value_count counts the path:
    ``FileName`` is part of ``Image``)."""
    for column in counted:
        if column in NAME_COLUMNS or column in PATH_COLUMNS:
            row = set_value(row, column, row.get(column))
    return row


_STRADDLING = ("host-straddling", "id-straddling")
_STRADDLING_VALUE = 7  # the straddling group's value of the other group-by columns


_FIRST = 0.9  # the share of a host's rows with the first value of each untested group-by column


def _mostly_first(rng: random.Random) -> int:
    return 0 if rng.random() < _FIRST else rng.randint(1, 2)


def _free(table: str, column: str, index: int) -> Any:
    """One of a few values of a group-by column the filter does not test, of the column's type."""
    kind = defender_schema().get(table, {}).get(column, "string")
    if kind == "datetime":
        return datetime(2026, 1, 1) + timedelta(hours=index)
    if kind in ("long", "int"):
        return 1000 + index
    if kind == "real":
        return 0.5 + index
    if kind in ("bool", "boolean"):
        return index % 2 == 0
    names = {_STRADDLING_VALUE: "straddling", _CASED_VALUE: "cased"}
    return f"{column.lower()}-{names.get(index, index)}"


_CASED = ("host-cased", "id-cased")
_CASED_VALUE = 8  # the cased group's value of the other group-by columns


def _case_apart(
    selected: list[Row],
    detection: Detection,
    start: datetime,
    width: timedelta,
    free: list[str],
    counted: list[str],
    first: int,
    rng: random.Random,
) -> list[Row]:
    """Kept rows of one group whose distinct count passes the threshold only with two values that
    differ in case counted apart (KQL compares with case): the loss a value_count declares."""
    aggregation = detection.aggregation
    assert aggregation is not None and aggregation.having is not None
    having = aggregation.having
    needed = having.value + 1 if having.match is Match.GT else having.value
    columns = _counted(detection)
    if not columns or needed < 2 or not selected:
        return []
    (column,) = columns
    if column in counted:  # not tested: values of our own
        rows = [rng.choice(selected) for _ in range(needed)]
        values = [f"value-cased-{index}" for index in range(needed - 1)] + ["VALUE-CASED-0"]
    else:  # tested: kept rows' values, distinct even without case, and one of them in other case
        distinct = {value.lower(): row for row in selected if isinstance(value := row.get(column), str)}
        rows = list(distinct.values())[: needed - 1]
        if len(rows) < needed - 1 or rows[0][column].swapcase() == rows[0][column]:
            return []
        rows.append(rows[0])
        values = [row[column] for row in rows[:-1]] + [rows[0][column].swapcase()]
    out: list[Row] = []
    for index, (row, value) in enumerate(zip(rows, values, strict=True)):
        moment = start + width * (index + 1) / (needed + 1)
        copy = {**row, ID: first + index, "Timestamp": moment.replace(microsecond=0), column: value}
        copy.update(DeviceName=_CASED[0], DeviceId=_CASED[1])
        copy.update({c: _free(detection.table, c, _CASED_VALUE) for c in free if c not in counted})
        out.append(copy)
    return out


def _counted(detection: Detection) -> list[str]:
    """The column whose distinct values the threshold counts (``dcount``, ``make_set``), if any."""
    assert detection.aggregation is not None and detection.aggregation.having is not None
    function = detection.aggregation.having.function
    return [function.column] if function.function != "count" and function.column else []


def _variants(
    engine: KqlEngine, query: k.Query, kept: list[Row], detection: Detection, now: datetime
) -> list[Row]:
    """Copies of kept rows whose counted column, tested by the filter, takes new values the filter
    still keeps (a word before or after it), so a group can hold more distinct values than the
    generator made; the original KQL decides which copies it keeps."""
    tested = {leaf.column for leaf in walk(detection.predicate) if isinstance(leaf, Predicate)}
    columns = [c for c in _counted(detection) if c in tested]
    assert detection.aggregation is not None and detection.aggregation.having is not None
    wanted = detection.aggregation.having.value + 3
    if not columns or not kept:
        return []
    (column,) = columns
    first = max(int(r[ID]) for r in kept) + 1_000_000
    candidates: list[tuple[int, Row]] = []
    for index in range(wanted):
        row = kept[index % len(kept)]
        value = row.get(column)
        if isinstance(value, str):
            for shape in ("{} v{}", "v{1} {0}", "{}v{}", "v{1}{0}"):  # its path or name follows
                variant = shape.format(value, index)
                copy = {**set_value(row, column, variant), ID: first + len(candidates)}
                candidates.append((index, copy))
    engine.load({detection.table: [copy for _, copy in candidates]})
    chosen = engine.select(row_selecting(query), now)
    out: dict[int, Row] = {}
    for index, copy in candidates:  # one variant per index: the first shape the filter keeps
        if copy[ID] in chosen:
            out.setdefault(index, copy)
    return list(out.values())


def _straddling(
    selected: list[Row],
    detection: Detection,
    now: datetime,
    free: list[str],
    counted: list[str],
    first: int,
    rng: random.Random,
) -> list[Row]:
    """Kept rows of one group that passes the threshold only counted once over the time range."""
    aggregation = detection.aggregation
    assert aggregation is not None and aggregation.having is not None
    having = aggregation.having
    needed = having.value + 1 if having.match is Match.GT else having.value
    span = detection.window or HUNTING_RETENTION  # the correlation's timespan (correlation.plan)
    boundary = _EPOCH + ((now - _EPOCH) // span) * span
    room = min(boundary - (now - span), now - boundary) / 2
    if needed < 2 or room < timedelta(seconds=needed) or not selected:
        return []
    column = having.function.column if having.function.function != "count" else None
    pool = list(selected)
    if column and column not in counted:  # a tested column: rows whose values differ, even without case
        distinct = {_caseless(row.get(column)): row for row in pool if row.get(column) is not None}
        pool = list(distinct.values())
        if len(pool) < needed:
            return []
    out: list[Row] = []
    for index in range(needed):
        before = index < needed // 2  # neither side alone passes
        offset = room * (index + 1) / (needed + 1)
        moment = boundary - offset if before else boundary + offset
        row = pool[index % len(pool)] if column and column not in counted else rng.choice(pool)
        copy = {**row, ID: first + index, "Timestamp": moment.replace(microsecond=0)}
        copy.update(DeviceName=_STRADDLING[0], DeviceId=_STRADDLING[1])
        copy.update({c: _free(detection.table, c, _STRADDLING_VALUE) for c in free if c not in counted})
        copy.update({c: f"value-straddling-{index}" for c in counted})
        out.append(copy)
    return out


def _bin_column(query: k.Query) -> str:
    """The column the summarize's ``bin()`` names: its time column (Timestamp, TimeGenerated)."""
    summarize = next(op for op in query.body.operators if isinstance(op, k.Summarize))
    for item in summarize.by:
        if isinstance(item.expr, k.Call) and item.expr.function == "bin" and item.expr.args:
            argument = item.expr.args[0]
            return item.name or (argument.name if isinstance(argument, k.Name) else "Timestamp")
    return "Timestamp"


def _up_to_threshold(query: k.Query, include: bool = True) -> str:
    """The original query up to its threshold (or up to its summarize, without the threshold)."""
    operators = query.body.operators
    first = next(i for i, op in enumerate(operators) if isinstance(op, k.Summarize))
    end = next(i for i, op in enumerate(operators) if i > first and isinstance(op, k.Where))
    return to_kql(k.Query(query.lets, k.Pipeline(query.body.source, operators[: end + include])))


def _caseless(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value
