"""Reports people read, rendered from the ``report.json`` dict: Markdown, one-file HTML, an ATT&CK layer.

The dict is the one source of truth; the only other input is each rule's Sigma YAML, keyed by its
``sigma`` path (the file written beside the report). Rendering never reads the clock, so the same
inputs give byte-identical reports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..fidelity import SIGMA, UNPROVEN
from ..model import Fidelity

LABELS = (*(label.value for label in Fidelity), UNPROVEN)
"""Every fidelity label a target can carry, best first (``unproven``: a backend no oracle runs):
the columns of the per-target summary."""

REPORT_FILES = ("report.md", "report.html", "layer.json")


def rules(report: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every rule with the input it came from, in report order."""
    return [(entry, rule) for entry in report["inputs"] for rule in entry["rules"]]


def target_names(report: Mapping[str, Any]) -> list[str]:
    """The Sigma rule first, then each query target in the order the rules list them."""
    names: dict[str, None] = {SIGMA: None}
    for _, rule in rules(report):
        names.update(dict.fromkeys([*rule["fidelity_by_target"], *rule["queries"], *rule["target_errors"]]))
    return list(names)


def target_rows(report: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per target: rules converted, how many carry each label, and how many the target refused."""
    rows: dict[str, dict[str, int]] = {}
    for target in target_names(report):
        row = rows[target] = {"converted": 0, **dict.fromkeys(LABELS, 0), "failed": 0}
        for _, rule in rules(report):
            if target in rule["target_errors"]:
                row["failed"] += 1
            elif target == SIGMA or target in rule["queries"]:
                row["converted"] += 1
                row[label_of(rule, target)] += 1
    return {target: row for target, row in rows.items() if row["converted"] or row["failed"]}


def label_of(rule: Mapping[str, Any], target: str) -> str:
    """A target's label; a rule without one for that target has the rule's own label."""
    label: str = rule["fidelity_by_target"].get(target, rule["fidelity"])
    return label


def not_exact(report: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Per target, the rules whose label there is not exact: what a reviewer must look at."""
    out: dict[str, list[dict[str, str]]] = {}
    for target in target_names(report):
        listed = [
            {"sigma": rule["sigma"], "title": rule["title"], "fidelity": label_of(rule, target)}
            for _, rule in rules(report)
            if (target == SIGMA or target in rule["queries"])
            and label_of(rule, target) != Fidelity.EXACT.value
        ]
        if listed:
            out[target] = listed
    return out


def json_summary(report: Mapping[str, Any]) -> str:
    """``--json``'s output: ``report.json``'s summary, the labels per target, the non-exact rules."""
    document = {**report["summary"], "by_target": target_rows(report), "not_exact": not_exact(report)}
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8", "backslashreplace").decode()


def render_all(report: Mapping[str, Any], sigma_texts: Mapping[str, str]) -> dict[str, str]:
    """The text of every report file, by file name."""
    from .html import render_html
    from .layer import render_layer
    from .markdown import render_markdown

    return {
        "report.md": render_markdown(report, sigma_texts),
        "report.html": render_html(report, sigma_texts),
        "layer.json": render_layer(report),
    }
