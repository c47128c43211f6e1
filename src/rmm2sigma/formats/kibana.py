"""Kibana Security detection rules, one JSON object per line (Security > Rules > Import).

Each rule has exactly the fields of Elastic's detection-rule API schema for its type (``query``
with language ``lucene``, ``eql``, ``esql``), which ``tests/test_formats.py`` validates against
Elastic's published JSON schemas. The rule runs every ``interval`` over ``from: now-<period>``.

The queries pySigma emits read every index and every event type (``any where``, ``from *``, no
category in Lucene). A deployed rule names its indices (``DeployOptions.elastic_index``) and,
unless ``event_filter`` is off, the ECS event category of the Sigma log source (process start,
network, library), as ``formats.yml`` lists them; the note says both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from . import DeployOptions, DeployRule, data
from .schedule import compact

FILE = "rules.ndjson"
_TYPES = {"lucene": ("query", "lucene"), "eql": ("eql", "eql"), "esql": ("esql", "esql")}
_ESQL_SOURCE = re.compile(r"^from\s+\*(?=\s|$)", re.IGNORECASE)
_EQL_ANY = re.compile(r"^any\s+where\s+", re.IGNORECASE)


def scoped_query(rule: DeployRule, options: DeployOptions) -> tuple[str, list[str]]:
    """The query with its indices (ES|QL) and event filter, and notes saying what was added."""
    notes: list[str] = []
    query = rule.query
    event = data()["event_filters"].get(rule.category, {}).get(rule.target) if options.event_filter else None
    # a correlation of two log sources, or an EQL sequence or sample, has no one event filter
    correlated = rule.base_rules > 1 or (rule.target == "eql" and not _EQL_ANY.match(rule.query))
    event = None if correlated else event
    if rule.target == "esql":
        query = _ESQL_SOURCE.sub(f"from {', '.join(options.elastic_index)}", query, count=1)
        if event:
            head, bar, rest = query.partition("|")
            query = f"{head}| where {event} {bar} {rest.lstrip()}" if bar else f"{head} | where {event}"
    elif rule.target == "eql" and event:
        kind, _, condition = event.partition(" where ")
        body = _EQL_ANY.sub("", query, count=1)
        query = f"{kind} where {body}" if condition == "true" else f"{kind} where {condition} and ({body})"
    elif rule.target == "lucene" and event:
        query = f"{event} AND ({query})"
    notes.append(f"indices: {', '.join(options.elastic_index)}")
    if event:
        notes.append(f"event filter for the {rule.category} log source: {event}")
    elif options.event_filter and correlated:
        notes.append("no ECS event filter: the correlation query reads the events of each of its rules")
    elif options.event_filter:
        notes.append(f"no ECS event filter is known for the {rule.category or 'rule'} log source")
    return query, notes


def _threat(rule: DeployRule) -> tuple[list[dict[str, Any]], list[str]]:
    """ATT&CK mapping: each tactic with the rule's techniques whose names are known offline."""
    names = data()["techniques"]
    techniques = [
        {"id": t, "name": names[t], "reference": f"https://attack.mitre.org/techniques/{t}/"}
        for t in rule.techniques()
        if t in names and "." not in t
    ]
    missing = [t for t in rule.techniques() if t not in names or "." in t]
    notes = [f"ATT&CK technique {t} left out of the threat mapping (name not known offline)" for t in missing]
    threat = [
        {
            "framework": "MITRE ATT&CK",
            "tactic": {"id": tid, "name": name, "reference": f"https://attack.mitre.org/tactics/{tid}/"},
            "technique": techniques,
        }
        for _, tid, name in rule.tactics()
    ]
    return threat, notes


def rule_object(rule: DeployRule, options: DeployOptions) -> dict[str, Any]:
    rule_type, language = _TYPES[rule.target]
    query, scope_notes = scoped_query(rule, options)
    threat, threat_notes = _threat(rule)
    note = "\n".join(f"- {line}" for line in rule.review_notes([*scope_notes, *threat_notes]))
    body: dict[str, Any] = {
        "rule_id": rule.rule_id,
        "name": rule.title,
        "description": rule.description,
        "author": [str(rule.meta.get("author") or "rmm2sigma")],
        "type": rule_type,
        "language": language,
        "query": query,
        "severity": rule.severity("kibana"),
        "risk_score": rule.severity("risk_score"),
        "interval": compact(rule.schedule.frequency),
        "from": f"now-{compact(rule.schedule.period)}",
        "to": "now",
        "enabled": options.enabled,
        "max_signals": 100,
        "tags": rule.tags,
        "threat": threat,
        "references": [str(r) for r in rule.meta.get("references") or []],
        "false_positives": [str(f) for f in rule.meta.get("falsepositives") or []],
        "note": f"## rmm2sigma\n\n{note}\n",
        "version": 1,
    }
    if rule.target != "esql":  # an ES|QL rule names its indices in the query's FROM
        body["index"] = list(options.elastic_index)
    return body


def ndjson(rules: Sequence[DeployRule], options: DeployOptions) -> dict[str, str]:
    lines = [json.dumps(rule_object(rule, options), ensure_ascii=False, sort_keys=True) for rule in rules]
    return {FILE: "".join(f"{line}\n" for line in lines)} if lines else {}
