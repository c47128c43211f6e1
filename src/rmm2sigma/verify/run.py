"""``rmm2sigma verify OUT``: prove every rule of a conversion and check the labels its report declares.

For each converted input of ``OUT/report.json`` the source is read again, converted in the mode the
report was written in (recognised by the rule id, which depends on it), and measured (``proof``).
The measurement is checked against the report: its queries must be what a fresh conversion
gives, and every declared label must hold. A threshold's labels are on the groups it reports:
they are held to ``groups.prove`` (its base rule's events to the row measurement). Kusto.Language,
when installed, also validates the original and emitted KQL. Everything lands in ``OUT/verify.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..convert import convert_rules, rule_sources
from ..errors import Rmm2SigmaError
from ..fidelity import SIGMA, agrees
from ..report import STDIN_COPY, write_atomic
from ..sigma import Options, rule_id
from ..sources import SourceRule, read_sources
from .proof import NOT_EXECUTED, VACUOUS, RuleProof, measure, summary

VERIFY_VERSION = 1
TEMPORAL = "type: temporal"  # a rule file holding a join's temporal correlation (``temporal``)
_HIDDEN = ("Timestamp", "DeviceId", "DeviceName", "ReportId")


def verify_output(out: Path, echo: Callable[[str], None]) -> bool:
    """Measure every rule in ``out``; True when a target loses events, a label fails, or a check fails."""
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    stdin = out / STDIN_COPY
    jobs = [(item["source"], rule, stdin) for item in report["inputs"] for rule in item["rules"]]
    workers = min(os.cpu_count() or 1, max(1, len(jobs) // 8))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            checked = list(pool.map(_check, jobs, chunksize=4))
    else:
        checked = [_check(job) for job in jobs]
    proofs = [proof for proof, _ in checked]
    findings = [finding for _, finding in checked]
    _kusto_language(findings)
    failed = False
    for proof, finding in zip(proofs, findings, strict=True):
        failed = _print(proof, finding, echo) or failed
    counts = summary(proofs)
    echo("")
    for target, verdicts in counts.items():
        echo(f"{target:<8}" + "  ".join(f"{verdict} {count}" for verdict, count in sorted(verdicts.items())))
    document = {
        "version": VERIFY_VERSION,
        "summary": counts,
        "failed": failed,
        "rules": [{**asdict(proof), **finding} for proof, finding in zip(proofs, findings, strict=True)],
    }
    refusal = write_atomic(
        out / "verify.json", json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n", True
    )
    if refusal:
        echo(f"error: {refusal}")
        return True
    echo(f"\nproof: {out / 'verify.json'}")
    return failed


def _check(job: tuple[str, dict[str, Any], Path]) -> tuple[RuleProof, dict[str, Any]]:
    """Measure one reported rule and hold it to what the report says."""
    path, rule, stdin = job
    finding: dict[str, Any] = {"report_problems": []}
    try:
        sources = read_sources(path, stdin.read_bytes() if path == "-" and stdin.is_file() else None)
    except Rmm2SigmaError as error:
        return RuleProof(path, rule.get("title", ""), error=f"cannot read the source again: {error}"), finding
    # a file may hold several rules, a union one per branch: the one whose id (in either mode) the
    # report gives; a branch is proved against its branch query (see ``convert_rules``)
    candidates = [(s, part) for s in sources for part in rule_sources(s)]
    source, part = next(
        ((s, p) for s, p in candidates if rule.get("id") in (rule_id(p, True), rule_id(p, False))),
        candidates[0],
    )
    exact = rule.get("id") == rule_id(part, True)
    splunk = rule.get("data_models", {}).get("splunk")  # the data model the report's queries read
    proof = measure(part, Options(exact=exact, splunk_data_model=splunk))
    try:
        applied = rule.get("filters_applied", False)
        options = Options(exact=exact, apply_filters=applied, splunk_data_model=splunk)
        rules, _ = convert_rules(source, options)
    except Rmm2SigmaError as error:
        finding["report_problems"].append(f"the source no longer converts: {error}")
        return proof, finding
    fresh = next((r for r in rules if r.rule_id == rule.get("id")), None)
    if fresh is None:
        finding["report_problems"].append("a fresh conversion gives no rule with the reported id")
        return proof, finding
    for target, query in rule.get("queries", {}).items():
        if fresh.queries.get(target) != query:
            finding["report_problems"].append(f"{target}: the reported query differs from a fresh conversion")
    declared = {SIGMA: rule.get("fidelity", ""), **rule.get("fidelity_by_target", {})}
    grouped = proof.threshold or ("the join" if TEMPORAL in fresh.yaml else None)
    if grouped:
        _check_groups(part, exact, declared, proof.threshold, finding)
    targets = {}
    for name, result in proof.targets.items():
        label = declared.get(name)
        if label is None:  # the target was not converted in this report
            continue
        if grouped and label != result.label:
            # the report's label is on groups (held above), the rows measure the base rule's events
            finding.setdefault("notes", []).append(
                f"{name}: labelled {label} on the groups of `{grouped}` (held to the group "
                f"measurement, `groups`); its base rule's events are held to {result.label}"
            )
            targets[name] = result
            continue
        checked = result.agrees
        if result.verdict != NOT_EXECUTED and result.reason != VACUOUS:
            checked = agrees(label, result.verdict)
        targets[name] = replace(result, label=label, agrees=checked)
    finding["queries"] = {"kusto": rule.get("queries", {}).get("kusto"), "original": part.kql}
    return replace(proof, exact_mode=exact, targets=targets), finding


def _check_groups(
    part: SourceRule, exact: bool, declared: dict[str, str], threshold: str | None, finding: dict[str, Any]
) -> None:
    """Measure the groups a threshold reports (``groups.prove``), or the keys of a join's temporal
    correlation (``temporal.prove``, ``threshold`` None), and hold every declared label to them."""
    from . import groups, temporal
    from .engines import NotExecutable

    what = f"the groups of `{threshold}`" if threshold else "the join's keys"
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    notes = finding.setdefault("notes", [])
    try:
        proof = (groups.prove if threshold else temporal.prove)(part, Options(exact=exact), now)
    except (Rmm2SigmaError, NotExecutable, ValueError) as error:
        notes.append(f"{what}: not measured: {error}")
        return
    if not proof.original:  # no group can show what a target misses or keeps: nothing is proven
        notes.append(f"{what}: not measured: the original reports none of the generated ones")
        return
    notes.extend(f"{t}: groups not measured: {reason}" for t, reason in proof.not_executed.items())
    if isinstance(proof, groups.GroupProof):
        _hold(groups.group_verdicts(proof), declared, what, finding)
    else:
        _hold(temporal.verdicts(proof), declared, what, finding)


def _hold(
    measured: dict[str, tuple[str, bool]], declared: dict[str, str], what: str, finding: dict[str, Any]
) -> None:
    """Hold each declared label to its target's verdict on ``what`` (and whether a declared loss
    explains what it misses); a broken promise is a report problem."""
    from .groups import keeps_promise

    groups: dict[str, dict[str, Any]] = {}
    for name, (found, explained) in measured.items():
        label = declared.get(name)
        if label is None:  # not converted in this report
            continue
        kept = keeps_promise(label, found, explained)
        groups[name] = {"label": label, "verdict": found, "declared_loss": explained, "agrees": kept}
        if not kept:
            finding["report_problems"].append(f"{name}: labelled {label} on {what}, which measure {found}")
    finding["groups"] = groups


def _kusto_language(findings: list[dict[str, Any]]) -> None:
    """Kusto.Language errors of the original and emitted KQL, in one node process."""
    from .kusto_language import kusto_available, validate_kql

    queries: list[str] = []
    owners: list[tuple[int, str]] = []
    for index, finding in enumerate(findings):
        for kind, query in finding.pop("queries", {}).items():
            if query:
                queries.append(query)
                owners.append((index, kind))
    if not queries or not kusto_available():
        return
    for (index, kind), diagnostics in zip(owners, validate_kql(queries), strict=True):
        errors = [f"{d.code} {d.line}:{d.column} {d.message}" for d in diagnostics if d.is_error]
        if errors:
            findings[index].setdefault("kusto_language", {})[kind] = errors


def _print(proof: RuleProof, finding: dict[str, Any], echo: Callable[[str], None]) -> bool:
    name = Path(proof.source).name
    if proof.error:
        echo(f"{name}: {proof.error}")
        return True
    verdicts = "  ".join(
        f"{t}={r.verdict}" + ("" if r.agrees is not False else f"(label {r.label}!)")
        for t, r in proof.targets.items()
    )
    mode = " [exact]" if proof.exact_mode else ""
    echo(f"{name}{mode}: {proof.original}/{proof.events} events  {verdicts}")
    failed = bool(proof.problems)
    for result in proof.targets.values():
        for kind, event in (("misses", result.missed), ("adds", result.extra)):
            if event is not None:
                shown = {k: v for k, v in event.items() if k not in _HIDDEN}
                echo(f"    {result.target} {kind} {json.dumps(shown, ensure_ascii=False)}")
        if result.reason.startswith("luqum"):
            failed = True
            echo(f"    {result.target}: {result.reason}")
    for note in finding.get("notes", []):
        if "not measured" in note:
            echo(f"    {note}")
    if finding.get("groups"):
        echo(
            "    groups: "
            + "  ".join(
                f"{t}={g['verdict']}" + ("" if g["agrees"] else f"(label {g['label']}!)")
                for t, g in finding["groups"].items()
            )
        )
    for problem in finding.get("report_problems", []):
        failed = True
        echo(f"    report: {problem}")
    for kind, errors in finding.get("kusto_language", {}).items():
        if kind == "kusto":
            failed = True
        echo(f"    Kusto.Language ({kind}): {'; '.join(errors)}")
    return failed
