"""Prove a join's temporal correlation (``rmm2sigma.temporal``) on the keys it reports.

Each side's filter gets its own distinguishing rows (``events.generate``), dealt over a few hosts
(``DeviceName`` and ``DeviceId`` of one host go together, as on a real device) and a few values of
any other key column the filters do not test, so some keys have rows of both sides and some of
one. duckdb-kql runs the original up to the join and the emitted kusto join, each projecting the
keys; pysigma-backend-sqlite runs the Sigma correlation over the rules' events, its pipeline
adding each log source's condition as a SIEM's does (so one side's rule never reads the other
side's events). Each reports its keys; the original's are also named as the correlation groups
them (case-insensitively, on the keys with a Sigma field).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .. import kql, temporal
from ..convert import convert_rules, defender_schema
from ..kql.lower import lower
from ..kql.printer import to_kql
from ..mapping import MappedRule, map_detection, tables
from ..model import Predicate, walk
from ..sigma import Options
from ..sources import SourceRule
from .engines import KqlEngine, NotExecutable, SigmaEngine, sigma_fields, sigma_rows, target_rows
from .events import ID, Row, generate
from .proof import verdict

Key = tuple[Any, ...]
_HOSTS = 6
_VALUES = 4
_CATEGORY = "rmm2sigma_proof_category"  # the log source condition the proof's pipeline adds


@dataclass(frozen=True)
class TemporalProof:
    original: frozenset[Key]  # the keys the original join reports (left key columns, cased)
    kusto: frozenset[Key] | None  # the same for the emitted kusto join; None: not converted
    sigma: frozenset[Key]  # the correlation's groups (lowercased by the backend)
    original_as_sigma: frozenset[Key]  # the original's keys as the correlation groups them
    kusto_not_executed: str | None = None  # why duckdb-kql could not run the kusto join


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
    rng = random.Random(seed)
    rows: list[list[Row]] = []
    device_names: dict[str, str] = {}  # DeviceId -> DeviceName: the name stands for the id
    for number, (detection, columns) in enumerate(zip(detections, zip(*join.keys, strict=True), strict=True)):
        generated = generate(detection, schema, seed=seed + number, now=now)
        tested = {leaf.column for leaf in walk(detection.predicate) if isinstance(leaf, Predicate)}
        free = {c for c in columns if schema[detection.table].get(c) == "string"} - tested
        for row in generated:
            row[ID] += number * 1_000_000  # ids unique across both sides
            host = rng.randrange(_HOSTS)
            row.update(DeviceName=f"host-{host}", DeviceId=f"{host:040x}")
            device_names[row["DeviceId"]] = row["DeviceName"]
            for column in free - {"DeviceName", "DeviceId"}:
                row[column] = f"key-{rng.randrange(_VALUES)}"
        rows.append(generated)
    engine = KqlEngine(schema)
    loads: dict[str, list[Row]] = {}
    for detection, generated in zip(detections, rows, strict=True):
        loads.setdefault(detection.table, []).extend(generated)
    engine.load(loads)
    original = engine.rows(f"{to_kql(join.through)}\n| project {', '.join(join.names)}", now)
    kusto, not_executed = None, None
    if "kusto" in converted.queries:
        left_columns = ", ".join(left for left, _ in join.keys)
        try:
            kusto = frozenset(engine.rows(f"{converted.queries['kusto']}\n| project {left_columns}", now))
        except NotExecutable as error:
            not_executed = str(error)
    kept = [join.keys.index(pair) for pair in chosen.keys]
    stood_in = {i for i in kept if join.keys[i][0] in temporal.STAND_INS}  # DeviceId: named
    as_sigma = {
        tuple(_caseless(device_names[key[i]] if i in stood_in else key[i]) for i in kept) for key in original
    }
    events: list[Row] = []
    for side, (mapped, generated) in enumerate(zip(sides, rows, strict=True)):
        mapped_rows = target_rows(generated, tables()[detections[side].table], mapped.detection.table)
        for event, row in zip(sigma_rows(mapped_rows, mapped.table), generated, strict=True):
            event.update(_group_values(chosen, side, row), timestamp=row["Timestamp"].isoformat())
            event[_CATEGORY] = _category(mapped)
            events.append(event)
    reported = _correlation_groups(converted.yaml, sides, chosen, events)
    return TemporalProof(frozenset(original), kusto, reported, frozenset(as_sigma), not_executed)


def _category(mapped: MappedRule) -> str:
    return mapped.table.logsource.get("category") or mapped.table.logsource.get("service", "")


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


def _caseless(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def verdicts(proof: TemporalProof) -> dict[str, str]:
    """Each target's verdict on the original's keys (kusto as the original, sigma without case)."""
    out = {"sigma": verdict(proof.original_as_sigma, proof.sigma)}
    if proof.kusto is not None:
        out["kusto"] = verdict(proof.original, proof.kusto)
    return out
