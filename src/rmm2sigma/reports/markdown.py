"""``report.md``: the summary, then per rule its source KQL, Sigma rule and every target's query.

Everything taken from the input is escaped: prose has ``<``, ``>``, ``&`` and table pipes turned
into entities, code goes into fences longer than any backtick run it holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import LABELS, label_of, rules, target_names, target_rows

LANGUAGES = {"kusto": "kql", "splunk": "spl", "lucene": "text", "esql": "sql", "eql": "eql"}


def render_markdown(report: Mapping[str, Any], sigma_texts: Mapping[str, str]) -> str:
    summary = report["summary"]
    lines = ["# rmm2sigma conversion report", "", "## Summary", ""]
    lines += _table(
        ["inputs", "converted", "partial", "failed", "rules"],
        [[str(summary[key]) for key in ("inputs", "converted", "partial", "failed", "rules")]],
    )
    rows = target_rows(report)
    lines += ["", "Per target (`sigma` is the rule itself):", ""]
    columns = ["converted", *LABELS, "failed"]
    lines += _table(["target", *columns], [[t, *(str(row[c]) for c in columns)] for t, row in rows.items()])
    targets = target_names(report)
    all_rules = rules(report)
    if all_rules:
        lines += ["", "## Rules", ""]
        lines += _table(
            ["#", "rule", *targets],
            [
                [str(n), f"[{_text(rule['title'])}](#rule-{n})", *(_cell(rule, t) for t in targets)]
                for n, (_, rule) in enumerate(all_rules, 1)
            ],
        )
    for n, (entry, rule) in enumerate(all_rules, 1):
        lines += ["", f'<a id="rule-{n}"></a>', "", f"### {n}. {_text(rule['title'])}", ""]
        lines += [f"- source: `{_code(entry['source'])}`", f"- Sigma file: `{_code(rule['sigma'])}`"]
        lines += [f"- id: `{_code(rule['id'])}`", f"- fidelity: **{rule['fidelity']}**"]
        lines += ["", *_table(targets, [[_cell(rule, t) for t in targets]])]
        if rule["notes"]:
            lines += ["", "Notes:", "", *(f"- {_text(note)}" for note in rule["notes"])]
        lines += ["", "Source KQL:", "", *_fence(rule.get("kql", ""), "kql")]
        lines += ["", "Sigma rule:", "", *_fence(sigma_texts.get(rule["sigma"], ""), "yaml")]
        for target in targets:
            if target in rule["queries"]:
                lines += ["", f"{target} ({label_of(rule, target)}):", ""]
                lines += _fence(rule["queries"][target], LANGUAGES.get(target, "text"))
            elif target in rule["target_errors"]:
                lines += ["", f"{target}: failed: {_text(rule['target_errors'][target])}"]
    problems = [entry for entry in report["inputs"] if entry["status"] != "converted"]
    if problems:
        lines += ["", "## Failed and partial inputs", ""]
        lines += [f"- **{entry['status']}** {_text(entry['error'] or '')}" for entry in problems]
    return "\n".join(lines) + "\n"


def _cell(rule: Mapping[str, Any], target: str) -> str:
    if target in rule["target_errors"]:
        return "failed"
    return label_of(rule, target) if target == "sigma" or target in rule["queries"] else ""


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in body),
    ]


def _text(text: str) -> str:
    """Prose from the input, inert in Markdown and in any HTML it is rendered to, on one line."""
    text = re.sub(r"([\\`*_\[\]#])", r"\\\1", " ".join(text.split()))
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "&#124;")):
        text = text.replace(raw, entity)  # after the backslashes: an entity's '#' stays unescaped
    return text


def _code(text: str) -> str:
    """Inline code holds no backtick nor line break (and a table pipe would end the cell)."""
    return " ".join(text.split()).replace("`", "'").replace("|", "¦")


def _fence(text: str, language: str) -> list[str]:
    ticks = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return [f"{ticks}{language}", text.rstrip("\n"), ticks]
