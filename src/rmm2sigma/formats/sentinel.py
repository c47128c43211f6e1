"""Microsoft Sentinel scheduled analytic rules, one YAML file per rule, as the Azure-Sentinel
content repository keeps them (``Detections/**.yaml``, ``Solutions/*/Analytic Rules``).

The fields and limits are those its template validation checks (``.script/tests/
detectionTemplateSchemaValidation``): a GUID ``id``, ``kind: Scheduled``, severity Informational
to High, ``queryFrequency``/``queryPeriod`` between 5m and 14d with the period at least the
frequency, ``triggerOperator``/``triggerThreshold``, tactics from ATT&CK's names, a ``version``.
The ``id`` is derived from the Sigma rule's id, so it is stable and differs from the hunting
query's. rmm2sigma reads these files back (``sources.py``): a rule makes the round trip.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from ..yaml_text import Literal, dump_yaml
from . import DeployOptions, DeployRule
from .schedule import compact

MIN_SPAN, MAX_SPAN = 300, 14 * 86400
_NAMESPACE = uuid.UUID("0b5f0e52-8f55-4a4e-9d0c-5c1a2a0f7c31")
DESCRIPTION_LIMIT = 5000


def clamp(seconds: int, what: str, notes: list[str]) -> int:
    bounded = min(max(seconds, MIN_SPAN), MAX_SPAN)
    if bounded != seconds:
        notes.append(f"sentinel: {what} {compact(seconds)} is outside 5m..14d; set to {compact(bounded)}")
    return bounded


_TABLE_LINE = re.compile(r"(?m)^([A-Z][A-Za-z]+)$")  # a table alone on its line


def tables(query: str) -> list[str]:
    """The Defender tables a kusto query reads: its first word, and a join's side's (a line of
    its own in the query the kusto target writes)."""
    first = query.split(None, 1)[0] if query.strip() else ""
    return list(dict.fromkeys([first, *_TABLE_LINE.findall(query)]))


def rule_document(rule: DeployRule, options: DeployOptions) -> dict[str, Any]:
    notes: list[str] = []
    frequency = clamp(rule.schedule.frequency, "queryFrequency", notes)
    period = max(clamp(rule.schedule.period, "queryPeriod", notes), frequency)
    description = "\n".join([rule.description, "", *rule.review_notes(notes)])
    if len(description) > DESCRIPTION_LIMIT:
        description = description[: DESCRIPTION_LIMIT - 1] + "…"
    return {
        "id": str(uuid.uuid5(_NAMESPACE, rule.rule_id)),
        "name": rule.title[:256],
        "description": description + "\n",
        "severity": rule.severity("sentinel"),
        "requiredDataConnectors": [
            {"connectorId": "MicrosoftThreatProtection", "dataTypes": tables(rule.query)}
        ],
        "queryFrequency": compact(frequency),
        "queryPeriod": compact(period),
        "triggerOperator": "gt",
        "triggerThreshold": 0,
        "tactics": rule.sentinel_tactics(),
        "relevantTechniques": rule.techniques(),
        "query": rule.query + "\n",
        "version": "1.0.0",
        "kind": "Scheduled",
    }


def analytic_rules(rules: Sequence[DeployRule], options: DeployOptions) -> dict[str, str]:
    files = {}
    for rule in rules:
        document = rule_document(rule, options)
        for key in ("description", "query"):  # block scalars (``|``), as the content repository writes
            document[key] = Literal(document[key])
        files[f"sentinel/{rule.stem}.yaml"] = dump_yaml(document)
    return files
