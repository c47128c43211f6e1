"""Write the results: Sigma files, backend queries, ``report.json`` and the reports rendered from it, safely.

Safety rules: every path component is checked against a strict pattern (no separators, no ``..``,
no reserved Windows device names, bounded length); two rules that want the same name both get a
stable suffix from their rule id; an existing file with other content is never replaced without
``force``; everything is decided before anything is written, and every file is written to a
temporary name and renamed into place, so an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .convert import InputResult, RuleResult
from .errors import printable, split_location
from .model import Fidelity
from .reports import LABELS, not_exact, render_all, target_rows
from .targets import EXTENSIONS, TARGETS

if TYPE_CHECKING:
    from .formats import DeployOptions

REPORT_VERSION = 1
MAX_STEM = 90  # SigmaHQ's file-name rule: [a-z0-9_]{10,90}
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))]
)


@dataclass(frozen=True)
class PlannedRule:
    rule: RuleResult
    stem: str

    @property
    def sigma_path(self) -> str:
        return f"sigma_rules/{safe_part(self.rule.category)}/{self.stem}.yml"

    @property
    def filter_path(self) -> str:
        """The rule's false-positive filters, one multi-document file (``sigma convert --filter``)."""
        return f"filters/{self.stem}.yml"

    def query_path(self, target: str) -> str:
        return f"backends/{target}/{self.stem}.{EXTENSIONS.get(target, 'txt')}"


def safe_part(text: str, limit: int = MAX_STEM) -> str:
    """One path component that is harmless on every file system: ``[a-z0-9_]``, bounded, not a device.

    The Sigma stage already emits such names; this is the last line of defence before the disk.
    """
    part = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")[:limit].rstrip("_") or "rule"
    return f"rule_{part}" if part in _WINDOWS_DEVICES else part


def plan_names(results: Sequence[InputResult]) -> dict[int, PlannedRule]:
    """A unique file stem per rule (keyed by ``id(rule)``), the same on every run of the same inputs.

    Stems are unique across categories too: every target's folder holds all categories. Rules
    that share a stem are all suffixed with their rule id (never first-come-keeps-it, so adding
    an input does not rename another's file by order); rules that also share the id (the same
    Sentinel file in two folders) use a digest of their source path; anything still taken gets a
    counter in input order.
    """
    rules = [(result.source, rule) for result in results for rule in result.rules]
    stems = [safe_part(rule.filename.removesuffix(".yml")) for _, rule in rules]
    by_stem = Counter(stems)
    by_id = Counter(zip(stems, (rule.rule_id for _, rule in rules), strict=True))
    planned: dict[int, PlannedRule] = {}
    taken: set[str] = set()
    for stem, (source, rule) in zip(stems, rules, strict=True):
        if by_stem[stem] > 1:
            tag = rule.rule_id if by_id[(stem, rule.rule_id)] == 1 else _digest(source)
            stem = _suffixed(stem, tag.replace("-", "")[:8])
        unique, counter = stem, 2
        while unique in taken:
            unique, counter = _suffixed(stem, str(counter)), counter + 1
        taken.add(unique)
        planned[id(rule)] = PlannedRule(rule, unique)
    return planned


def _suffixed(stem: str, suffix: str) -> str:
    return f"{stem[: MAX_STEM - len(suffix) - 1].rstrip('_')}_{suffix}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def write_atomic(path: Path, text: str, force: bool) -> str | None:
    """Write ``text`` to ``path`` unless it is refused; returns the refusal reason."""
    data = text.encode("utf-8")
    needed, reason = _check(path, data, force, {})
    if needed:
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace(path, data)
    return reason


_DIR, _NEW, _BLOCKED = "dir", "new", "blocked"


def _check(path: Path, data: bytes, force: bool, folders: dict[Path, str]) -> tuple[bool, str | None]:
    """Whether to write, and why not if refused: the same content already there needs no write;
    a folder, or a file where a folder must go, is always refused; other content needs ``force``."""
    state = _folder_state(path.parent, folders)
    if state == _BLOCKED:
        return False, f"{path}: a file is in the way of its folder"
    if state == _NEW:
        return True, None  # a folder still to be made holds nothing: no need to look
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            return False, f"{path} is a folder"
        if path.read_bytes() == data:
            return False, None
    except FileNotFoundError:
        if not os.path.islink(path):
            return True, None
    except OSError:  # a dangling or looping link, an unreadable file: other content
        pass
    return (True, None) if force else (False, f"{path} exists with other content; use --force to replace it")


def _folder_state(folder: Path, known: dict[Path, str]) -> str:
    """A directory, to be made (its nearest existing ancestor is a directory), or blocked by a file."""
    if folder not in known:
        if folder.is_dir():
            known[folder] = _DIR
        elif folder.exists() or folder.is_symlink() or folder.parent == folder:
            known[folder] = _BLOCKED
        else:
            parent = _folder_state(folder.parent, known)
            known[folder] = _NEW if parent != _BLOCKED else _BLOCKED
    return known[folder]


_TEMPORARY = itertools.count()


def _replace(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, then an atomic rename: readers never see half a file.

    ``O_EXCL`` never opens an existing name (nor follows a planted link), and the mode is the
    user's umask applied to 0666, as for any new file.
    """
    while True:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{next(_TEMPORARY)}.tmp")
        try:
            handle = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
            break
        except FileExistsError:  # left by a killed run with this process id
            continue
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _encoded(text: str) -> bytes | str:
    """UTF-8 bytes, or why not: a lone surrogate (from a KQL ``\\ud800`` escape) has no encoding."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"output cannot be written as UTF-8 ({error.reason}: {text[error.start]!r})"


STDIN_COPY = "stdin.input"
"""Where a conversion keeps what it read from stdin, so ``rmm2sigma verify`` can read it again."""


def write_outputs(
    results: Sequence[InputResult],
    out: Path,
    wanted: Sequence[str] = TARGETS,
    force: bool = False,
    stdin: bytes | None = None,
    deploy: Mapping[str, Sequence[str]] | None = None,
    deploy_options: DeployOptions | None = None,
) -> tuple[list[InputResult], dict[str, Any]]:
    """Write every file and the report; inputs whose files were refused become failures.

    All refusals are decided first: an input with any refused file writes none of its files (and
    its rules leave the report), and a refused report file (``report.json``, ``report.md``,
    ``report.html``, ``layer.json``) or deployable file (``deploy``: a target's formats, see
    ``formats``) raises ``FileExistsError`` before anything is written, naming every refused file,
    one per line.
    """
    planned = plan_names(results)
    final: list[InputResult] = []
    writes: list[tuple[Path, bytes]] = []
    folders: dict[Path, str] = {}
    blocked: list[str] = []  # every refusal, named again if a report file is refused
    for result in results:
        files: dict[str, str] = {}
        for rule in result.rules:
            plan = planned[id(rule)]
            files[plan.sigma_path] = rule.yaml
            files.update({plan.query_path(t): q + "\n" for t, q in rule.queries.items() if t in wanted})
            if rule.filters.filters:
                files[plan.filter_path] = rule.filters.yaml
        contents = {name: _encoded(text) for name, text in files.items()}
        if result.source == "-" and stdin is not None and result.rules:
            contents[STDIN_COPY] = stdin
        planned_writes, refusals = _decide(out, contents, force, folders)
        if refusals:
            blocked.extend(refusals)
            error = f"{printable(result.source)}: {'; '.join(dict.fromkeys(refusals))}"
            result = InputResult(result.source, "failed", error, result.warnings)
        else:
            writes.extend(planned_writes)
        final.append(result)
    report = build_report(final, planned)
    # files of the whole run: one in the way stops the run before anything is written
    texts = {"report.json": json.dumps(report, indent=2, ensure_ascii=False) + "\n"}
    texts.update(render_all(report, {p.sigma_path: p.rule.yaml for p in planned.values()}))
    if deploy:
        from .formats import deploy_files

        kept = [(planned[id(rule)].stem, rule) for result in final for rule in result.rules]
        texts.update(deploy_files(kept, deploy, deploy_options))
    # surrogates (undecodable file names) become \udcxx escapes, which JSON reads back as written
    encoded = {name: text.encode("utf-8", "backslashreplace") for name, text in texts.items()}
    run_writes, refused_run_files = _decide(out, encoded, force, folders)
    writes.extend(run_writes)
    if refused_run_files:
        raise FileExistsError("\n".join(dict.fromkeys([*blocked, *refused_run_files])))
    for folder in sorted({path.parent for path, _ in writes} | {out}):
        folder.mkdir(parents=True, exist_ok=True)
    for path, data in writes:
        _replace(path, data)
    return final, report


def _decide(
    out: Path, contents: Mapping[str, bytes | str], force: bool, folders: dict[Path, str]
) -> tuple[list[tuple[Path, bytes]], list[str]]:
    """The files under ``out`` to write, and the refusals (a ``str`` content is already one)."""
    writes: list[tuple[Path, bytes]] = []
    refusals: list[str] = []
    for name, data in contents.items():
        if isinstance(data, str):
            refusals.append(data)
            continue
        needed, reason = _check(out / name, data, force, folders)
        if reason:
            refusals.append(reason)
        elif needed:
            writes.append((out / name, data))
    return writes, refusals


def build_report(results: Sequence[InputResult], planned: dict[int, PlannedRule]) -> dict[str, Any]:
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
                    "data_models": rule.data_models,
                    "notes": list(rule.notes),
                    "queries": rule.queries,
                    "target_errors": rule.errors,
                    "tags": list(rule.tags),
                    "kql": rule.kql,
                    "filters": [
                        {
                            "path": plan.filter_path,
                            "id": page_filter.id,
                            "title": page_filter.title,
                            "exclusion": page_filter.exclusion,
                        }
                        for page_filter in rule.filters.filters
                    ],
                    "filters_applied": rule.filters_applied,
                }
            )
        line, column = split_location(result.error, result.source)
        inputs.append(
            {
                "source": result.source,
                "status": result.status,
                "error": result.error,
                "line": line,
                "column": column,
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


def summary_table(
    report: dict[str, Any], excerpt: Callable[[dict[str, Any]], list[str]] | None = None
) -> str:
    """The lines printed after a run: outcomes, labels per target, the rules that are not exact on
    each target, and every failure with its reason (and ``excerpt``'s lines under it: the source)."""
    summary = report["summary"]
    lines = [
        f"{'inputs':<12}{summary['inputs']:>6}",
        f"{'converted':<12}{summary['converted']:>6}",
        f"{'partial':<12}{summary['partial']:>6}",
        f"{'failed':<12}{summary['failed']:>6}",
        "",
        *(f"{label:<12}{count:>6}" for label, count in summary["fidelity"].items()),
    ]
    rows = target_rows(report)
    if rows:
        columns = ["converted", *LABELS, "failed"]
        lines += ["", f"{'target':<10}" + "".join(f"{c:>12}" for c in columns)]
        lines += [f"{t:<10}" + "".join(f"{row[c]:>12}" for c in columns) for t, row in rows.items()]
    lines += not_exact_lines(not_exact(report))
    return terminal_text([*lines, *failure_lines(report, excerpt)])


def failure_lines(
    report: dict[str, Any], excerpt: Callable[[dict[str, Any]], list[str]] | None = None
) -> list[str]:
    """Each input that is not fully converted: its located message, then ``excerpt``'s lines."""
    lines: list[str] = []
    for entry in report["inputs"]:
        if entry["status"] != "converted":
            lines += [
                "",
                f"{entry['status'].upper()}: {entry['error']}",
                *(excerpt(entry) if excerpt else []),
            ]
    return lines


def terminal_text(lines: list[str]) -> str:
    """A path from an undecodable file name holds surrogates, which no terminal encoding accepts."""
    return "\n".join(lines).encode("utf-8", "backslashreplace").decode("utf-8")


def not_exact_lines(listed: dict[str, list[dict[str, str]]]) -> list[str]:
    """Targets with the same rules and labels share one list, so a batch prints each list once."""
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for target, entries in listed.items():
        groups.setdefault(tuple((e["fidelity"], e["sigma"]) for e in entries), []).append(target)
    lines: list[str] = []
    for group, targets in groups.items():
        lines += ["", f"not exact on {', '.join(targets)} ({len(group)}):"]
        lines += [f"  {label:<12}{printable(sigma)}" for label, sigma in group]
    return lines
