"""The whole flow for one input: source -> KQL -> model -> mapping -> Sigma -> targets.

Every failure of the user's input becomes a located ``Rmm2SigmaError`` caught here and recorded
in the result, so a batch always goes on and every input is accounted for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial
from importlib import resources
from typing import Any

from . import correlation, kql, targets
from .errors import Rmm2SigmaError, printable
from .fidelity import SIGMA, target_fidelity
from .kql.lower import Schema, lower
from .mapping import map_detection
from .model import Fidelity
from .sigma import Options, emit
from .sources import SourceRule, read_source


@dataclass(frozen=True)
class RuleResult:
    """One emitted Sigma rule with its queries; ``errors`` holds targets that refused it.

    Plain data only (no pySigma objects), so results cross process boundaries cheaply.
    """

    title: str
    rule_id: str
    category: str
    filename: str
    yaml: str
    fidelity: Fidelity
    notes: tuple[str, ...]
    queries: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    fidelity_by_target: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InputResult:
    source: str
    status: str  # converted | partial | failed
    error: str | None = None
    warnings: tuple[str, ...] = ()
    rules: tuple[RuleResult, ...] = ()


@cache
def defender_schema() -> Schema:
    """Defender tables and their column types, packaged from Microsoft's schema reference."""
    raw = json.loads(resources.files("rmm2sigma.data").joinpath("defender_schema.json").read_text())
    return {table: dict((name, kind) for name, kind in columns) for table, columns in raw.items()}


def convert_rule(source: SourceRule, options: Options, wanted: Sequence[str] = targets.TARGETS) -> RuleResult:
    """Convert one source query; raises ``Rmm2SigmaError`` located in the source file."""
    try:
        query = kql.parse(source.kql)
        detection = lower(query, defender_schema())
        mapped = map_detection(detection, exact=options.exact, schema=defender_schema())
    except Rmm2SigmaError as error:
        raise error.located(source.path, source.kql_line - 1, source.kql_column - 1) from None
    emitted = emit(source, mapped, options)
    document = emitted.rule.to_dict()
    queries: dict[str, str] = {}
    errors: dict[str, str] = {}
    notes = list(mapped.notes)
    threshold = correlation.plan(mapped)
    pair = threshold and correlation.documents(source, mapped, options, emitted.filename, threshold)
    if threshold:
        notes.extend(threshold.notes)
    for target in wanted:
        attributes, target_notes = targets.rule_attributes(
            target, mapped.detection.aggregation, mapped.detection.window
        )
        if pair is None or target == "kusto":  # with a threshold, only kusto renders the summarize
            notes.extend(target_notes)
        if pair:
            result = correlation.convert(target, pair, attributes)
        else:
            result = targets.convert(target, lambda: _rule_from(document), attributes)
        if result.query is None:
            errors[target] = result.error or "conversion failed"
        else:
            queries[target] = result.query
    labels = target_fidelity(mapped, (SIGMA, *queries))
    by_target = {target: label.label for target, label in labels.items()}
    notes.extend(note for label in labels.values() for note in label.notes)
    return RuleResult(
        title=emitted.rule.title,
        rule_id=str(emitted.rule.id),
        category=emitted.category,
        filename=pair.filename if pair else emitted.filename,
        yaml=pair.yaml if pair else emitted.yaml,
        fidelity=mapped.fidelity,
        notes=tuple(dict.fromkeys(notes)),
        queries=queries,
        errors=errors,
        fidelity_by_target=by_target,
    )


def _rule_from(document: dict[str, Any]) -> Any:
    from sigma.rule import SigmaRule

    return SigmaRule.from_dict(document)


def convert_input(
    path: str, options: Options, wanted: Sequence[str] = targets.TARGETS, data: bytes | None = None
) -> InputResult:
    """Convert one file; never raises, whatever the input (or a converter bug) does."""
    warnings: tuple[str, ...] = ()
    try:
        source = read_source(path, data)
        warnings = source.warnings
        rule = convert_rule(source, options, wanted)
    except Rmm2SigmaError as error:
        if error.source is None:
            error.source = path
        return InputResult(path, "failed", str(error), warnings)
    except RecursionError:
        return InputResult(path, "failed", f"{printable(path)}: input nested too deeply to convert", warnings)
    except Exception as error:  # a defect, not bad input: reported as such, and the batch goes on
        defect = f"{printable(path)}: internal error, please report it: {error!r}"
        return InputResult(path, "failed", defect, warnings)
    status = "partial" if rule.errors else "converted"
    message = "; ".join(rule.errors.values()) if rule.errors else None
    return InputResult(path, status, message, source.warnings, (rule,))


def convert_all(
    paths: Sequence[str],
    options: Options,
    wanted: Sequence[str] = targets.TARGETS,
    workers: int = 1,
    stdin: bytes | None = None,
) -> list[InputResult]:
    """Convert in order, in ``workers`` processes when that pays off.

    Each worker converts large chunks (about four per worker) so the pool's per-task cost is
    paid a few times, not per file; on Linux workers are forked after pySigma is imported, so
    they only build the backends, once each. Results are plain data, cheap to send back.
    """
    workers = min(workers, len(paths))
    if workers <= 1 or stdin is not None:
        return [convert_input(path, options, wanted, stdin if path == "-" else None) for path in paths]
    chunk = -(-len(paths) // (workers * 4))
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(partial(convert_input, options=options, wanted=wanted), paths, chunksize=chunk))


def available_cores() -> int:
    """Cores this process may run on (its affinity, e.g. in a container), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
