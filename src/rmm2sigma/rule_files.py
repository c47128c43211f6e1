"""JSON rule files that hold several queries: Sentinel ARM exports and Defender custom detections.

- The ARM template the Sentinel portal exports: ``resources`` whose ``type`` ends in ``alertRules``
  (``Microsoft.SecurityInsights/alertRules`` or the older
  ``Microsoft.OperationalInsights/workspaces/providers/alertRules``), each with ``properties``
  holding ``displayName``, ``query``, ``severity``, ``queryFrequency``, ``tactics`` ...
- Defender custom detections (Microsoft Graph ``detectionRule``): ``queryCondition.queryText``,
  ``detectionAction.alertTemplate`` for title, description, severity and MITRE techniques; one
  object, a list, or a Graph ``{"value": [...]}`` page. Azure-Sentinel's "XDR Detections" files
  (``kind: CustomDetection``, YAML or JSON) nest the same rule under ``properties``, beside a
  ``contentProvenance`` naming the Sentinel rule they came from; ``sources.read_yaml`` reads the
  YAML ones with ``custom_detection`` and ``defender_fields`` from here.

A query is a JSON string, so it sits on one line of the file. Each ``SourceRule`` records where
that string starts and ``escaped=True``: ``json_column`` turns a position inside the query into the
column of the file, so errors still point at the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from .errors import InputError
from .sources import SourceRule, _sentinel_rule


def looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[")


def read_json_rules(path: str, text: str) -> tuple[SourceRule, ...]:
    """Every query of an ARM template or of Defender custom detections, in file order."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"not valid JSON: {error.msg}", source=path, line=error.lineno, column=error.colno
        ) from None
    found = list(_rules(document))
    if not found:
        raise InputError(
            "JSON holds no Sentinel alert rule (`resources[].properties.query`) "
            "nor Defender custom detection (`queryCondition.queryText`)",
            source=path,
            line=1,
            column=1,
        )
    positions = _string_positions(text, ("query", "queryText"))
    rules = []
    for index, (where, fields) in enumerate(found):
        line, column = positions[index] if index < len(positions) else (1, 1)
        rule = _sentinel_rule(path, fields, fields["query"], (line, column))
        rules.append(replace(rule, escaped=True, where=where))
    return tuple(rules)


def json_column(query: str, line: int, column: int) -> int:
    """Columns into the JSON string (1-based, after its quote) of the query's ``line``:``column``."""
    lines = query.split("\n")
    offset = sum(len(text) + 1 for text in lines[: line - 1]) + column - 1
    return len(json.dumps(query[:offset], ensure_ascii=False)) - 2 + 1


def _rules(document: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, Sentinel-style fields)`` for every rule found."""
    if isinstance(document, Mapping) and isinstance(document.get("resources"), list):
        for index, resource in enumerate(document["resources"]):
            kind = str(resource.get("type", "")) if isinstance(resource, Mapping) else ""
            properties = resource.get("properties") if isinstance(resource, Mapping) else None
            if (
                kind.endswith("alertRules")
                and isinstance(properties, Mapping)
                and _text(properties.get("query"))
            ):
                yield f"resources[{index}]", _arm_fields(properties)
        return
    items = document.get("value") if isinstance(document, Mapping) and "value" in document else document
    for index, item in enumerate(items if isinstance(items, list) else [items]):
        found = custom_detection(item)
        if found is not None:
            yield (f"[{index}]" if isinstance(items, list) else ""), defender_fields(found[0], item)


QUERY_TEXT = ("queryCondition", "queryText")


def custom_detection(document: Any) -> tuple[Mapping[str, Any], tuple[str, ...]] | None:
    """A Defender custom detection in ``document`` and the keys leading to its query: the document
    itself (Graph) or its ``properties`` (a ``kind: CustomDetection`` file); None when neither."""
    for keys in ((), ("properties",)):
        item = document
        for key in keys:
            item = item.get(key) if isinstance(item, Mapping) else None
        condition = item.get(QUERY_TEXT[0]) if isinstance(item, Mapping) else None
        if (
            isinstance(item, Mapping)
            and isinstance(condition, Mapping)
            and _text(condition.get(QUERY_TEXT[1]))
        ):
            return item, (*keys, *QUERY_TEXT)
    return None


def _arm_fields(properties: Mapping[str, Any]) -> dict[str, Any]:
    fields = dict(properties)
    fields["name"] = properties.get("displayName")
    fields["relevantTechniques"] = properties.get("techniques")
    for key in ("queryFrequency", "queryPeriod"):  # ARM writes ISO 8601 (PT1H, P14D); YAML rules 1h, 14d
        fields[key] = _span(properties.get(key))
    return fields


_ISO_SPAN = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$", re.IGNORECASE)


def _span(value: Any) -> Any:
    """``PT5H`` -> ``5h``, ``P14D`` -> ``14d``, ``P1DT12H`` -> ``36h``; other values unchanged."""
    match = _ISO_SPAN.match(value) if isinstance(value, str) else None
    if not match or not any(match.groups()):
        return value
    days, hours, minutes = (int(part or 0) for part in match.groups())
    total = (days * 24 + hours) * 60 + minutes
    for unit, size in (("d", 1440), ("h", 60)):
        if total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}m"


def defender_fields(item: Mapping[str, Any], document: Any = None) -> dict[str, Any]:
    """Sentinel-style fields of a custom detection; ``document`` is the file around it, whose
    ``contentProvenance`` gives what the rule itself does not (the source rule's lookback, and
    its tactics and techniques when the alert template names none)."""
    template = _mapping(_mapping(item.get("detectionAction")).get("alertTemplate"))
    schedule = _mapping(item.get("schedule"))
    provenance = _mapping(_mapping(document).get("contentProvenance"))
    source_schedule = _mapping(_mapping(provenance.get("source")).get("schedule"))
    original = _mapping(provenance.get("conversion"))
    tactics, techniques = _template_attack(template)
    mappings = template.get("entityMappings")
    return {
        "id": item.get("id"),
        "name": item.get("displayName") or template.get("title"),
        "description": template.get("description"),
        "severity": template.get("severity"),
        "tactics": tactics or original.get("originalTactics") or [],
        "relevantTechniques": techniques or original.get("originalTechniques") or [],
        "queryFrequency": schedule.get("period") or _span(schedule.get("frequency")),
        "queryPeriod": source_schedule.get("queryPeriod"),
        # Defender groups entity mappings by kind ({accounts: [...]}); Sentinel lists them
        "entityMappings": [{"entityType": kind} for kind in mappings]
        if isinstance(mappings, Mapping)
        else None,
        "query": item["queryCondition"]["queryText"],
    }


def _template_attack(template: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Tactics and techniques of an alert template: Graph's ``category`` and ``mitreTechniques``,
    or the XDR files' ``tactics: [{tactic, techniques: [{technique}]}]``."""
    tactics = [str(template["category"])] if template.get("category") else []
    techniques = [str(t) for t in template.get("mitreTechniques") or [] if isinstance(t, str)]
    for entry in template.get("tactics") or []:
        entry = entry if isinstance(entry, Mapping) else {"tactic": entry}
        if entry.get("tactic"):
            tactics.append(str(entry["tactic"]))
        for technique in entry.get("techniques") or []:
            name = _mapping(technique).get("technique") if isinstance(technique, Mapping) else technique
            if name:
                techniques.append(str(name))
    return list(dict.fromkeys(tactics)), list(dict.fromkeys(techniques))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


_KEY = r'"(?:{keys})"\s*:\s*"'


def _string_positions(text: str, keys: tuple[str, ...]) -> list[tuple[int, int]]:
    """Line and column (1-based) of the first character inside each ``"key": "..."`` string, in order."""
    pattern = re.compile(_KEY.format(keys="|".join(map(re.escape, keys))))
    positions = []
    for match in pattern.finditer(text):
        start = match.end()
        line = text.count("\n", 0, start) + 1
        positions.append((line, start - (text.rfind("\n", 0, start) + 1) + 1))
    return positions
