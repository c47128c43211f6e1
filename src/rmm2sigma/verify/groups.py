"""Prove a threshold (``summarize ... | where Count > N``) on the groups it reports, not on rows.

The distinguishing rows of ``events.generate`` are dealt into many groups (hosts, a case variant
of one host, time bins) of seeded random sizes up to twice the threshold, so the threshold keeps
some groups and drops others. The original KQL and the emitted kusto query then run in duckdb-kql,
and the Sigma correlation in pysigma-backend-sqlite, which executes correlation rules (counting in
sliding windows of the timespan, group keys compared case-insensitively), and the eql sequence
(``with runs``) in the ``eql`` engine. Each reports its group keys; the original's are also
projected the way the Sigma correlation sees them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .. import kql
from ..convert import convert_rule, defender_schema
from ..correlation import plan
from ..kql import syntax as k
from ..kql.lower import lower
from ..kql.printer import to_kql
from ..mapping import map_detection, tables
from ..model import Detection, Predicate, walk
from ..sigma import Options
from ..sources import SourceRule
from .engines import (
    EqlEngine,
    KqlEngine,
    SigmaEngine,
    ecs_rows,
    row_selecting,
    sigma_fields,
    sigma_rows,
    target_rows,
)
from .events import ID, Row, generate

Key = tuple[Any, ...]
_HOSTS = 12


@dataclass(frozen=True)
class GroupProof:
    original: frozenset[Key]  # the group keys the original KQL keeps (by columns, then the bin)
    kusto: frozenset[Key]  # the same for the emitted kusto query
    sigma: frozenset[Key]  # the Sigma correlation's group-by values (lowercased by the backend)
    original_as_sigma: frozenset[Key]  # the original's groups as the correlation names them
    groups: int  # groups with at least one event the filter keeps
    eql: frozenset[Key] | None = None  # the eql sequences' groups (lowercased); None: no eql query


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
    converted = convert_rule(source, options, ("kusto", "eql"))
    generated = generate(detection, schema, seed=seed, now=now)
    engine = KqlEngine(schema)
    engine.load({detection.table: generated})
    selected = engine.select(row_selecting(query), now)
    rows = deal([r for r in generated if r[ID] in selected], generated, detection, now, seed)
    keys = [*aggregation.by, *(["Timestamp"] if aggregation.bin else [])]
    projection = "\n| project " + ", ".join(keys)
    engine.load({detection.table: rows})
    original = engine.rows(_up_to_threshold(query) + projection, now)
    kusto = engine.rows(converted.queries["kusto"] + projection, now)
    kept = [column for column in aggregation.by if column not in chosen.dropped]
    as_sigma = {tuple(_caseless(dict(zip(keys, key, strict=True))[c]) for c in kept) for key in original}
    events = sigma_rows(target_rows(rows, tables()[detection.table], mapped.detection.table), mapped.table)
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
    if "eql" in converted.queries:
        category = mapped.table.logsource.get("category", "")
        eql_groups = _eql_groups(converted.queries["eql"], events, category, chosen.group_by)
    return GroupProof(
        frozenset(original),
        frozenset(kusto),
        frozenset(reported),
        frozenset(as_sigma),
        len(everything),
        eql_groups,
    )


def _eql_groups(query: str, events: list[Row], category: str, group_by: tuple[str, ...]) -> frozenset[Key]:
    """The groups of the sequences the eql query finds over the events in ECS (times in seconds)."""
    from ..fidelity import ecs_field_names

    names = dict(ecs_field_names(category))
    by, _ = EqlEngine().sequences(query, [])  # the ECS fields of the correlation's group-by, in order
    names.update(zip(group_by, by, strict=True))
    timed = [
        (datetime.fromisoformat(event["timestamp"]).timestamp(), document)
        for event, document in zip(events, ecs_rows(events, names), strict=True)
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
    """
    aggregation = detection.aggregation
    assert aggregation is not None and aggregation.having is not None
    rng = random.Random(seed)
    span = aggregation.bin or detection.window or timedelta(days=7)
    window = detection.window or span * 4
    bins = max(1, min(3, int(window / span) - 1)) if aggregation.bin else 1
    top = datetime.min + ((now - datetime.min) // span) * span  # the start of the current bin
    hosts = [(f"host-{i}", f"id-{i}") for i in range(_HOSTS)] + [("HOST-0", "id-0")]
    tested = {leaf.column for leaf in walk(detection.predicate) if isinstance(leaf, Predicate)}
    counted = [f.column for f in aggregation.functions if f.function == "dcount" and f.column]
    free = [c for c in (*aggregation.by, *counted) if c not in tested and c not in ("DeviceName", "DeviceId")]
    out: list[Row] = []
    for host, device in hosts:
        for index in range(bins):
            start = top - (index + 1) * span if aggregation.bin else now - span * 0.9
            width = span if aggregation.bin else span * 0.8
            for _ in range(rng.randint(0, 2 * aggregation.having.value + 3)):
                moment = start + width * rng.random()
                pool = selected if selected and rng.random() < 0.75 else rows
                copy = {**rng.choice(pool), ID: len(out), "Timestamp": moment.replace(microsecond=0)}
                copy.update(DeviceName=host, DeviceId=device)
                # columns the filter does not test: a few values each (a count of distinct ones varies)
                copy.update({c: f"{c.lower()}-{rng.randint(0, 2)}" for c in free if c not in counted})
                copy.update({c: f"value-{rng.randint(0, aggregation.having.value + 2)}" for c in counted})
                out.append(copy)
    return out


def _up_to_threshold(query: k.Query, include: bool = True) -> str:
    """The original query up to its threshold (or up to its summarize, without the threshold)."""
    operators = query.body.operators
    first = next(i for i, op in enumerate(operators) if isinstance(op, k.Summarize))
    end = next(i for i, op in enumerate(operators) if i > first and isinstance(op, k.Where))
    return to_kql(k.Query(query.lets, k.Pipeline(query.body.source, operators[: end + include])))


def _caseless(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value
