"""Write the results: Sigma files, backend queries and ``report.json``, safely.

Safety rules: names are already sanitised by the Sigma stage; two inputs that want the same name
both get a stable suffix from their rule id; an existing file with other content is never
replaced without ``force``; every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .convert import InputResult, RuleResult
from .model import Fidelity
from .targets import EXTENSIONS, TARGETS

REPORT_VERSION = 1


@dataclass(frozen=True)
class PlannedRule:
    rule: RuleResult
    stem: str

    @property
    def sigma_path(self) -> str:
        return f"sigma_rules/{self.rule.category}/{self.stem}.yml"

    def query_path(self, target: str) -> str:
        return f"backends/{target}/{self.stem}.{EXTENSIONS[target]}"


def plan_names(results: Sequence[InputResult]) -> dict[int, PlannedRule]:
    """File stems for every rule (keyed by ``id(rule)``), suffixed by rule id where names collide."""
    rules = [rule for result in results for rule in result.rules]
    counts = Counter((r.category, r.filename) for r in rules)
    planned: dict[int, PlannedRule] = {}
    for rule in rules:
        stem = rule.filename.removesuffix(".yml")
        if counts[(rule.category, rule.filename)] > 1:
            stem = f"{stem[:77]}_{rule.rule_id.replace('-', '')[:8]}"
        planned[id(rule)] = PlannedRule(rule, stem)
    return planned


def write_atomic(path: Path, text: str, force: bool) -> str | None:
    """Write ``text`` to ``path`` unless another content is there; returns a refusal reason."""
    if path.exists():
        if path.is_file() and path.read_text(encoding="utf-8", errors="replace") == text:
            return None
        if not force:
            return f"{path} exists with other content; use --force to replace it"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return None


def write_outputs(
    results: Sequence[InputResult], out: Path, wanted: Sequence[str] = TARGETS, force: bool = False
) -> tuple[list[InputResult], dict[str, Any]]:
    """Write every file and the report; inputs whose files were refused become failures."""
    planned = plan_names(results)
    final: list[InputResult] = []
    for result in results:
        refusals: list[str] = []
        for rule in result.rules:
            plan = planned[id(rule)]
            files = {plan.sigma_path: rule.yaml}
            files.update({plan.query_path(t): q + "\n" for t, q in rule.queries.items() if t in wanted})
            refusals.extend(r for name, text in files.items() if (r := write_atomic(out / name, text, force)))
        if refusals:
            result = InputResult(result.source, "failed", "; ".join(refusals), result.warnings, result.rules)
        final.append(result)
    report = build_report(final, planned)
    refusal = write_atomic(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n", force)
    if refusal:
        raise FileExistsError(refusal)
    return final, report


def build_report(results: Sequence[InputResult], planned: dict[int, PlannedRule] | None = None) -> dict[str, Any]:
    planned = planned or plan_names(results)
    inputs = []
    for result in results:
        rules = []
        for rule in result.rules:
            plan = planned[id(rule)]
            rules.append(
                {
                    "sigma": plan.sigma_path,
                    "id": rule.rule_id,
                    "title": rule.title,
                    "fidelity": rule.fidelity.value,
                    "fidelity_by_target": rule.fidelity_by_target,
                    "notes": list(rule.notes),
                    "queries": rule.queries,
                    "target_errors": rule.errors,
                }
            )
        inputs.append(
            {
                "source": result.source,
                "status": result.status,
                "error": result.error,
                "warnings": list(result.warnings),
                "rules": rules,
            }
        )
    return {"version": REPORT_VERSION, "summary": summarize(results), "inputs": inputs}


def summarize(results: Sequence[InputResult]) -> dict[str, Any]:
    statuses = Counter(r.status for r in results)
    rules = [rule for r in results for rule in r.rules]
    fidelity = Counter(rule.fidelity.value for rule in rules)
    by_target: dict[str, dict[str, int]] = {}
    for rule in rules:
        for target in (*rule.queries, *rule.errors):
            entry = by_target.setdefault(target, {"converted": 0, "failed": 0})
            entry["converted" if target in rule.queries else "failed"] += 1
    return {
        "inputs": len(results),
        "converted": statuses["converted"],
        "partial": statuses["partial"],
        "failed": statuses["failed"],
        "rules": len(rules),
        "fidelity": {label.value: fidelity[label.value] for label in Fidelity},
        "targets": by_target,
    }


def summary_table(report: dict[str, Any]) -> str:
    """The few lines printed after a run: outcomes, fidelity, and every failure with its reason."""
    summary = report["summary"]
    lines = [
        f"{'inputs':<12}{summary['inputs']:>6}",
        f"{'converted':<12}{summary['converted']:>6}",
        f"{'partial':<12}{summary['partial']:>6}",
        f"{'failed':<12}{summary['failed']:>6}",
        "",
        *(f"{label:<12}{count:>6}" for label, count in summary["fidelity"].items()),
    ]
    if summary["targets"]:
        lines.append("")
        lines.extend(f"{t:<12}{v['converted']:>6} ok {v['failed']:>4} failed" for t, v in summary["targets"].items())
    problems = [i for i in report["inputs"] if i["status"] != "converted"]
    if problems:
        lines.append("")
        lines.extend(f"{i['status'].upper()}: {i['error']}" for i in problems)
    return "\n".join(lines)
