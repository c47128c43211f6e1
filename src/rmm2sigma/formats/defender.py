"""Microsoft Defender XDR custom detection rules, one JSON file per rule: the body of Microsoft
Graph's ``POST /security/rules/detectionRules`` (resource ``microsoft.graph.security.detectionRule``).

The shape: ``displayName``, ``isEnabled``, ``queryCondition.queryText``, ``schedule.period`` and
``detectionAction.alertTemplate`` (title, description, severity, category, mitreTechniques,
impactedAssets). Defender runs custom detections every 1, 3, 12 or 24 hours (``"0"`` is
continuous, for simple queries only); the rule's frequency is rounded down to the nearest of
those, so it never runs less often than the source asked, and a note says so.

Defender requires the results to carry ``Timestamp`` and ``ReportId`` columns and an impacted
asset column (``DeviceId``); a final ``summarize`` that drops them gets
``arg_max(Timestamp, ReportId)`` as a further aggregate, and the description says so.
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


def defender_query(query: str) -> tuple[str, str | None]:
    """The query with the columns Defender requires kept through a final ``summarize``, and a note.

    ``arg_max(Timestamp, ReportId)`` adds, per group, the latest event's time and report id: the
    groups and every other aggregate stay as they were.
    """
    head, bar, last = query.rpartition("| summarize ")
    if not bar:
        return query, None
    kept = set(re.findall(r"[A-Za-z_]\w*", last.split(" by ", 1)[-1]))
    if {"Timestamp", "ReportId"} <= kept:
        return query, None
    note = (
        "defender: the summarize also keeps arg_max(Timestamp, ReportId), the latest event of each "
        "group, because custom detections require both columns"
    )
    return f"{head}{bar}arg_max(Timestamp, ReportId), {last}", note


def rule_body(rule: DeployRule, options: DeployOptions) -> dict[str, Any]:
    every, period_note = period(rule.schedule.frequency)
    query, columns_note = defender_query(rule.query)
    notes = rule.review_notes([n for n in (period_note, columns_note) if n])
    tactics = rule.sentinel_tactics()
    return {
        "displayName": rule.title,
        "isEnabled": options.enabled,
        "queryCondition": {"queryText": query},
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
