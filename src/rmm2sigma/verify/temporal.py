"""Prove a join's temporal correlation (``rmm2sigma.temporal``) on the keys it reports.

Each side's filter gets its own distinguishing rows (``events.generate``), dealt over a few hosts
(``DeviceName`` and ``DeviceId`` of one host go together, as on a real device) and a few values of
any other key column the filters do not test, so some keys have rows of both sides and some of
one, and about half of the right side's keys in upper case, which only a caseless compare matches
(``in~``, and the correlation's sqlite backend). duckdb-kql runs the original up to the join (an
``in`` test as written) and the emitted kusto join, each projecting the keys of the side whose
rows it returns; pysigma-backend-sqlite
runs the Sigma correlation over the rules' events, its pipeline adding each log source's
condition as a SIEM's does (so one side's rule never reads the other side's events). Each reports
its keys; the original's are also named as the correlation groups them (case-insensitively, on
the keys with a Sigma field).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .. import kql, temporal
from ..convert import _category, convert_rules, defender_schema
from ..kql import syntax as k
from ..kql.lower import lower
from ..kql.printer import to_kql
from ..mapping import MappedRule, map_detection
from ..model import Detection, Predicate, walk
from ..sigma import Options
from ..sources import SourceRule
from .engines import (
    KqlEngine,
    NotExecutable,
    SigmaEngine,
    row_selecting,
    sigma_fields,
    sigma_rows,
    target_rows,
)
from .events import ID, Row, generate
from .groups import _caseless
from .proof import verdict

Key = tuple[Any, ...]
_HOSTS = 6
_VALUES = 4
_DEVICE = frozenset({"DeviceName", "DeviceId"})  # dealt as hosts
# the key values dealt to a column of each type: a null key pairs nothing (Kusto's join)
_DEALT: dict[str, Callable[[int], Any]] = {
    "string": lambda n: f"key-{n}",
    "int": lambda n: 1000 + n,
    "long": lambda n: 1000 + n,
}
_CATEGORY = "rmm2sigma_proof_category"  # the log source condition the proof's pipeline adds


@dataclass(frozen=True)
class TemporalProof:
    original: frozenset[Key]  # the keys the original join reports (left key columns, cased)
    kusto: frozenset[Key] | None  # the same for the emitted kusto join; None: not converted
    sigma: frozenset[Key]  # the correlation's groups (lowercased by the backend)
    original_as_sigma: frozenset[Key]  # the original's keys as the correlation groups them
    not_executed: dict[str, str] = field(default_factory=dict)  # kusto: why duckdb-kql could not run it


def prove(source: SourceRule, options: Options, now: datetime, seed: int = 0) -> TemporalProof:
    """Run the original join, the emitted kusto join and the Sigma correlation over dealt rows."""
    schema = defender_schema()
    join = temporal.find(kql.parse(source.kql), schema)
    if join is None:
        raise ValueError(f"{source.path}: the query is no join of two filters")
    detections = (lower(join.left, schema), lower(join.right, schema))
    sides = tuple(
        map_detection(replace(d, aggregation=None), exact=options.exact, schema=schema) for d in detections
    )
    chosen = temporal.plan(join, sides[0], sides[1])
    if chosen is None:
        raise ValueError(f"{source.path}: no join key has a Sigma field")
    (converted,), _ = convert_rules(source, options, ("kusto",))
    engine = KqlEngine(schema)
    rows = _dealt(join, detections, sides, engine, now, seed)
    device_names = {row["DeviceId"]: row["DeviceName"] for side in rows for row in side}
    _load(engine, detections, rows)
    original = engine.rows(f"{to_kql(join.through)}\n| project {', '.join(join.names)}", now)
    kusto, not_executed = None, {}
    if "kusto" in converted.queries:  # the key columns of the side whose rows the join returns
        columns = ", ".join(pair[join.returned] for pair in join.keys)
        try:
            kusto = frozenset(engine.rows(f"{converted.queries['kusto']}\n| project {columns}", now))
        except NotExecutable as error:
            not_executed["kusto"] = str(error)
    kept = [join.keys.index(pair) for pair in chosen.keys]
    stood_in = {i for i in kept if join.keys[i][0] in temporal.STAND_INS}  # DeviceId: named
    as_sigma = {
        tuple(_caseless(device_names.get(key[i], key[i]) if i in stood_in else key[i]) for i in kept)
        for key in original
    }
    events: list[Row] = []
    for side, (mapped, generated) in enumerate(zip(sides, rows, strict=True)):
        mapped_rows = target_rows(generated, mapped.renamed)
        for event, row in zip(sigma_rows(mapped_rows, mapped.table), generated, strict=True):
            event.update(_group_values(chosen, side, row), timestamp=row["Timestamp"].isoformat())
            event[_CATEGORY] = _category(mapped)
            events.append(event)
    reported = _correlation_groups(converted.yaml, sides, chosen, events)
    return TemporalProof(frozenset(original), kusto, reported, frozenset(as_sigma), not_executed)


def _dealt(
    join: temporal.Join,
    detections: tuple[Detection, ...],
    sides: tuple[MappedRule, ...],
    engine: KqlEngine,
    now: datetime,
    seed: int,
) -> list[list[Row]]:
    """Each side's distinguishing rows, dealt over a few hosts (a host's DeviceName and DeviceId
    go together), each row its side's filter keeps copied (once or twice) to about half of the hosts, so some
    hosts have kept rows of both sides and some of one. A key column one side tests takes the
    other side's values of it from that side's rows; one neither tests, a few shared values."""
    rng = random.Random(seed)
    schema = engine.schema
    rows = [generate(d, schema, seed=seed + side, now=now) for side, d in enumerate(detections)]
    for row in rows[1]:
        row[ID] += 1_000_000  # ids unique across both sides
    tested = [_tested(detection) for detection in detections]
    _load(engine, detections, rows)
    kept = [_kept(engine, query, now) for query in (join.left, join.right)]
    next_id = 1 + max(row[ID] for side in rows for row in side)
    for side, generated in enumerate(rows):
        if _DEVICE & tested[side]:  # the filter tests the device: its rows stay as they are
            continue
        copies: list[Row] = []
        for row in generated:
            host = rng.randrange(_HOSTS)
            row.update(_device(host))
            for other in range(_HOSTS) if row[ID] in kept[side] else ():
                # one or two copies, so a count after the join can pass a threshold of two
                for _ in range(rng.choice((1, 2)) if other != host and rng.random() < 0.5 else 0):
                    copies.append({**row, ID: next_id, **_device(other)})
                    next_id += 1
        generated.extend(copies)
    # a column whose Sigma field a test reads is not free: FileName's test reads FolderPath's field
    fields = [_tested(side.detection) for side in sides]
    for columns in join.keys:
        kinds = [schema[detections[side].table].get(column) for side, column in enumerate(columns)]
        free = [
            column not in tested[side] | _DEVICE
            and kinds[side] in _DEALT
            and _field(sides[side], column) not in fields[side]
            for side, column in enumerate(columns)
        ]
        for side in (0, 1):
            if not free[side]:
                continue
            other = 1 - side
            pool: list[Any] = [_DEALT[kinds[side] or ""](value) for value in range(_VALUES)]
            if not free[other]:
                pool = [row.get(columns[other]) for row in rows[other] if row.get(columns[other]) is not None]
            for row in rows[side]:
                row[columns[side]] = rng.choice(pool) if pool else None
    # right rows the filter keeps with, in upper case, a key only left rows have: a case-sensitive
    # join leaves them apart, a caseless compare (`in~`, the correlation's sqlite backend) pairs them
    templates = [row for row in rows[1] if row[ID] in kept[1]]
    for left_column, right_column in join.keys if templates else ():
        right_values = {row.get(right_column) for row in rows[1]}
        lone = sorted({row.get(left_column) for row in rows[0]} - right_values, key=str)
        for value in [v for v in lone if isinstance(v, str)][::2]:
            rows[1].append({**rng.choice(templates), ID: next_id, right_column: value.upper()})
            next_id += 1
    return rows


def _tested(detection: Detection) -> set[str]:
    """The columns (or Sigma fields, of a mapped detection) the filter tests."""
    return {leaf.column for leaf in walk(detection.predicate) if isinstance(leaf, Predicate)}


def _field(side: MappedRule, column: str) -> str | None:
    spec = side.table.fields.get(column)
    return spec.field if spec else None


def _device(host: int) -> Row:
    return {"DeviceName": f"host-{host}", "DeviceId": f"{host:040x}"}


def _kept(engine: KqlEngine, side: k.Query, now: datetime) -> set[int]:
    """The rows a side's filter keeps; none known when duckdb-kql cannot select them by id (a
    ``project`` before a ``where``): then no row is copied to other hosts."""
    try:
        return engine.select(row_selecting(side), now)
    except NotExecutable:
        return set()


def _load(engine: KqlEngine, detections: tuple[Detection, ...], rows: list[list[Row]]) -> None:
    """Both sides' rows in duckdb-kql (one table when both sides read the same)."""
    loads: dict[str, list[Row]] = {}
    for detection, generated in zip(detections, rows, strict=True):
        loads.setdefault(detection.table, []).extend(generated)
    engine.load(loads)


def _group_values(chosen: temporal.Plan, side: int, row: Row) -> Row:
    """The values a side's event holds in the fields the correlation groups by."""
    values: Row = {}
    for name, pair in zip(chosen.group_by, chosen.keys, strict=True):
        column = pair[side]
        field = chosen.aliases[name][side] if name in chosen.aliases else name
        values[field] = row.get(temporal.STAND_INS.get(column, column))
    return values


def _correlation_groups(
    text: str, sides: tuple[MappedRule, ...], chosen: temporal.Plan, events: list[Row]
) -> frozenset[Key]:
    from sigma.backends.sqlite import sqliteBackend
    from sigma.collection import SigmaCollection
    from sigma.processing.conditions import LogsourceCondition
    from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
    from sigma.processing.transformations import AddConditionTransformation

    items = [
        ProcessingItem(
            AddConditionTransformation({_CATEGORY: _category(side)}),
            rule_conditions=[LogsourceCondition(**side.table.logsource)],
        )
        for side in sides
    ]
    engine = SigmaEngine()
    backend: Any = sqliteBackend  # untyped package
    backend = backend(ProcessingPipeline(items), collate_nocase=True, table=SigmaEngine.TABLE)
    (query,) = backend.convert(SigmaCollection.from_yaml(text))
    fields = [_CATEGORY, "timestamp", *[f for side in sides for f in sigma_fields(side.table)]]
    fields += [f for event in events for f in event]
    cursor = engine.execute(str(query), events, fields)
    index = [d[0] for d in cursor.description].index("group_keys")
    return frozenset(
        tuple(json.loads(row[index]).get(name) for name in chosen.group_by) for row in cursor.fetchall()
    )


def verdicts(proof: TemporalProof) -> dict[str, tuple[str, bool]]:
    """Each target's verdict on the original's keys (kusto as the original, sigma without case),
    with no declared loss (the shape of ``groups.group_verdicts``)."""
    out = {"sigma": (verdict(proof.original_as_sigma, proof.sigma), False)}
    if proof.kusto is not None:
        out["kusto"] = (verdict(proof.original, proof.kusto), False)
    return out
