"""Microsoft Defender XDR custom detection rules, one JSON file per rule: the body of Microsoft
Graph's ``POST /security/rules/detectionRules`` (resource ``microsoft.graph.security.detectionRule``).

The shape: ``displayName``, ``isEnabled``, ``queryCondition.queryText``, ``schedule.period`` and
``detectionAction.alertTemplate`` (title, description, severity, category, mitreTechniques,
impactedAssets). Defender runs custom detections every 1, 3, 12 or 24 hours (``"0"`` is
continuous, for simple queries only); the rule's frequency is rounded down to the nearest of
those, so it never runs less often than the source asked, and a note says so.

Defender requires the results to carry ``Timestamp`` and ``ReportId`` columns and an impacted
asset column; a query that summarizes returns neither unless its aggregation keeps them, so such
a rule's description says so rather than pretending it imports unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from . import DeployOptions, DeployRule
from .schedule import compact

PERIODS = (("1H", 3600), ("3H", 10800), ("12H", 43200), ("24H", 86400))


def period(seconds: int) -> tuple[str, str | None]:
    chosen = max((p for p in PERIODS if p[1] <= seconds), default=PERIODS[0], key=lambda p: p[1])
    if chosen[1] == seconds:
        return chosen[0], None
    return chosen[
        0
    ], f"defender: runs every {chosen[0]} (custom detections run every 1, 3, 12 or 24 hours), " + (
        f"the rule asked for every {compact(seconds)}"
    )


def _columns_note(query: str) -> str | None:
    """Whether the query's results lose the columns Defender requires (a summarize without them)."""
    last = query.rsplit("| summarize", 1)
    if len(last) == 1:
        return None
    kept = {name for name in re.findall(r"[A-Za-z_]\w*", last[1].split(" by ", 1)[-1])}
    missing = [c for c in ("Timestamp", "ReportId") if c not in kept]
    if not missing:
        return None
    return (
        f"defender: the summarized results have no {' or '.join(missing)} column, which Defender "
        "requires of a custom detection; add them (e.g. arg_max(Timestamp, ReportId)) before enabling"
    )


def rule_body(rule: DeployRule, options: DeployOptions) -> dict[str, Any]:
    every, period_note = period(rule.schedule.frequency)
    columns_note = _columns_note(rule.query)
    notes = rule.review_notes([n for n in (period_note, columns_note) if n])
    tactics = rule.sentinel_tactics()
    return {
        "displayName": rule.title,
        "isEnabled": options.enabled,
        "queryCondition": {"queryText": rule.query},
        "schedule": {"period": every},
        "detectionAction": {
            "alertTemplate": {
                "title": rule.title,
                "description": "\n".join([rule.description, "", *notes]),
                "severity": rule.severity("defender"),
                "category": tactics[0] if tactics else "SuspiciousActivity",
                "recommendedActions": None,
                "mitreTechniques": rule.techniques(),
                "impactedAssets": [
                    {"@odata.type": "#microsoft.graph.security.impactedDeviceAsset", "identifier": "deviceId"}
                ],
            },
            "organizationalScope": None,
            "responseActions": [],
        },
    }


def custom_detections(rules: Sequence[DeployRule], options: DeployOptions) -> dict[str, str]:
    return {
        f"defender/{rule.stem}.json": json.dumps(rule_body(rule, options), indent=2, ensure_ascii=False)
        + "\n"
        for rule in rules
    }
