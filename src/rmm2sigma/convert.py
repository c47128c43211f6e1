"""The whole flow for one input: source -> KQL -> model -> mapping -> Sigma -> targets.

Every failure of the user's input becomes a located ``Rmm2SigmaError`` caught here and recorded
in the result, so a batch always goes on and every input is accounted for.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache, cached_property, partial
from importlib import resources
from pathlib import PurePath
from typing import Any

from . import correlation, kql, targets, temporal
from .errors import Rmm2SigmaError, UnsupportedKqlError, printable
from .fidelity import SIGMA, refusals, target_fidelity
from .filters import RuleFilters, applied_rule, rule_filters
from .formats.schedule import Schedule, schedule
from .kql.lower import Schema, lower
from .kql.union import Branch, of_kinds, split_union
from .mapping import KindCut, MappedRule, kind_cuts, kind_tables, map_detection
from .model import Fidelity
from .sigma import Options, branch_name, category_title, emit, rule_id
from .sources import SourceRule, read_sources

_BASE_ONLY = frozenset({"correlation", "logsource", "detection", "name"})  # a correlation has no log source


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
    kql: str = ""  # the source query, shown beside the rule in the reports
    tags: tuple[str, ...] = ()
    # the page's false-positive exclusions as Sigma filters
    filters: RuleFilters = field(default_factory=RuleFilters)
    filters_applied: bool = False  # whether ``queries`` apply them (--apply-filters)
    data_connectors: tuple[tuple[str, str], ...] = ()  # a page's "Sentinel Table | Notes" rows
    schedule: Schedule | None = None  # how often and how far back a deployed rule runs
    data_models: dict[str, str] = field(default_factory=dict)  # each built-in target's (formats.yml)

    @cached_property
    def documents(self) -> tuple[dict[str, Any], ...]:
        """The rule file's documents (a correlation's first), read once per result (libyaml):
        deployable formats ask for them once per target."""
        from .sigmahq import safe_documents

        return tuple(document for document in safe_documents(self.yaml) if document)

    @property
    def document(self) -> dict[str, Any]:
        """The rule's own Sigma document: in a correlation file, the base rule (the one detecting)."""
        return next((d for d in self.documents if "detection" in d), self.documents[0])

    @property
    def headline(self) -> dict[str, Any]:
        """What a deployed rule says of itself: a correlation's title, id and description (it is the
        detection), over its first base rule's document (which has the log source)."""
        first = self.documents[0]
        return {**self.document, **{key: value for key, value in first.items() if key not in _BASE_ONLY}}

    @property
    def base_rules(self) -> int:
        """How many rules the file's detection reads (two for a join's temporal correlation)."""
        return sum("detection" in document for document in self.documents)


@dataclass(frozen=True)
class InputResult:
    source: str
    status: str  # converted | partial | failed
    error: str | None = None
    warnings: tuple[str, ...] = ()
    rules: tuple[RuleResult, ...] = ()


SENTINEL_TIME = "TimeGenerated"


@cache
def defender_schema() -> Schema:
    """Defender tables and their column types, packaged from Microsoft's schema reference. A table
    with ``Timestamp`` also has ``TimeGenerated``, as Sentinel stores the Defender tables: queries
    written for Sentinel read either (``kql.lower`` reads both as the event time)."""
    raw = json.loads(resources.files("rmm2sigma.data").joinpath("defender_schema.json").read_text())
    schema = {table: dict((name, kind) for name, kind in columns) for table, columns in raw.items()}
    return {
        table: {**columns, **({SENTINEL_TIME: "datetime"} if "Timestamp" in columns else {})}
        for table, columns in schema.items()
    }


def convert_rule(source: SourceRule, options: Options, wanted: Sequence[str] = targets.TARGETS) -> RuleResult:
    """Convert one source query; raises ``Rmm2SigmaError`` located in the source file."""
    try:
        query = kql.parse(source.kql)
    except Rmm2SigmaError as error:
        raise _located(error, source) from None
    return _convert(source, _mapped(source, query, options), options, wanted)


def convert_rules(
    source: SourceRule, options: Options, wanted: Sequence[str] = targets.TARGETS
) -> tuple[tuple[RuleResult, ...], tuple[str, ...]]:
    """The rules of one source query and the located errors of the parts that do not convert.

    A query over a ``union`` gives one rule per branch (``kql.union``), linked by ``related``;
    each rule's ``kql`` is its branch query, which is what ``verify`` proves it against: the
    branches read disjoint tables, so together they select exactly what the union selects. A
    branch that does not convert is an error here while the others still convert; when none
    converts, the first branch's error is raised.
    """
    try:
        query = kql.parse(source.kql)
        branches = query_parts(query, source.kql)
    except Rmm2SigmaError as error:
        raise _located(error, source) from None
    if branches is None:
        correlated = _convert_join(source, query, options, wanted)
        return (correlated or _convert(source, _mapped(source, query, options), options, wanted),), ()
    converted: list[tuple[Branch, MappedRule]] = []
    failures: list[Rmm2SigmaError] = []
    empty: list[str] = []
    for branch in branches:
        if branch.empty:
            empty.append(f"{_branch_label(branch)} selects no event, so it gives no rule: {branch.empty}")
            continue
        try:
            converted.append((branch, _mapped(source, branch.query, options)))
        except Rmm2SigmaError as error:
            failures.append(_in_branch(error, branch))
    if not converted:
        if failures:
            raise failures[0]
        raise _located(UnsupportedKqlError("; ".join(empty), line=query.pos.line or None), source)
    # a kind of events is named by its log source and EventID: several share a category
    kinds = [branch.kind or _category(mapped) for branch, mapped in converted]
    categories = Counter(kinds)
    tables = Counter((kind, branch.table) for kind, (branch, _) in zip(kinds, converted, strict=True))
    named = [
        replace(
            branch_source(source, branch),
            name=branch_name(
                source.name or PurePath(source.path).stem,
                kind,
                branch.table if categories[kind] > 1 else None,
                branch.index + 1 if tables[kind, branch.table] > 1 else None,
            ),
        )
        for kind, (branch, mapped) in zip(kinds, converted, strict=True)
    ]
    ids = [rule_id(named_source, options.exact) for named_source in named]
    rules: list[RuleResult] = []
    for (branch, mapped), named_source, own in zip(converted, named, ids, strict=True):
        related = tuple(other for other in ids if other != own)
        try:
            rule = _convert(named_source, mapped, replace(options, related=related), wanted)
        except Rmm2SigmaError as error:  # raised past the query (pySigma): name the file
            failures.append(_in_branch(error if error.source else _located(error, source), branch))
            continue
        if branch.kind:  # one log source's kinds of a query cut by kind
            rule = _of_one_kind(rule, branch)
        else:
            origin = (
                f"converted from {_branch_label(branch)} of the query's union, with the operators after "
                "the union (its proof compares it with that branch query); the branches read different "
                "tables, so with its related rules it selects what the union selects"
            )
            rule = replace(rule, notes=(origin, *rule.notes))
        rules.append(replace(rule, notes=(rule.notes[0], *empty, *rule.notes[1:])))
    return tuple(rules), tuple(str(error) for error in failures)


def _of_one_kind(rule: RuleResult, branch: Branch) -> RuleResult:
    """A rule of one kind of events of a query cut by kind. When the cuts together read less than
    the query (kinds no Sigma log source holds), every label is approximate, whatever its proof
    against its own cut shows."""
    if branch.whole:
        note = (
            f"the query's ActionType test names kinds of events of several Sigma log sources: one rule "
            f"per log source, this one {branch.kind} (its proof compares it with the query cut to its "
            "kinds); with its related rules it selects what the query selects"
        )
        return replace(rule, notes=(note, *rule.notes))
    note = (
        f"the query reads {branch.table} events of kinds no single Sigma log source holds: it becomes "
        f"one rule per kind whose log source has a field for each column it tests, this one "
        f"{branch.kind} (its proof compares it with the query cut to that kind); kinds with no such "
        "log source are read by no rule, so together the rules select less than the query (approximate)"
    )
    keeping = (Fidelity.EXACT.value, Fidelity.WIDENED.value)
    labels = {
        target: Fidelity.APPROXIMATE.value if label in keeping else label
        for target, label in rule.fidelity_by_target.items()
    }
    fidelity = Fidelity.APPROXIMATE if rule.fidelity in (Fidelity.EXACT, Fidelity.WIDENED) else rule.fidelity
    return replace(rule, fidelity=fidelity, fidelity_by_target=labels, notes=(note, *rule.notes))


def query_parts(query: kql.Query, text: str) -> list[Branch] | None:
    """The parts a query's rules come from: its union branches, each read of every kind of
    ``DeviceEvents`` (no ActionType test) cut into the kinds that have a Sigma log source with
    fields for its tests, or into the log sources of the kinds its ActionType test names
    (``mapping.kind_cuts``); None for a query of one part. ``text``, the
    query's, spares the lowering this takes when a query of one part names no such table."""
    schema = defender_schema()
    branches = split_union(query, schema)
    parts = branches if branches is not None else [Branch(0, "", query, in_union=False)]
    cut: list[Branch] = []
    for branch in parts:
        # a union branch names its table; the query itself is lowered only when its text names one
        possible = branch.table in kind_tables() if branch.table else any(t in text for t in kind_tables())
        table, kinds = _kinds(branch.query) if possible and not branch.empty else ("", [])
        cut.extend(
            replace(branch, table=table, query=part, kind=one.name, whole=one.complete) for one, part in kinds
        )
        cut.extend([] if kinds else [branch])
    return branches if cut == parts else cut


def _kinds(query: kql.Query) -> tuple[str, list[tuple[KindCut, kql.Query]]]:
    """The table of a query cut by kind of events (``mapping.kind_cuts``), and its query for
    each cut (``query_parts``); no cuts for any other query."""
    schema = defender_schema()
    try:
        detection = lower(query, schema)
    except Rmm2SigmaError:
        return "", []
    cuts = kind_cuts(detection)
    parts = [(cut, of_kinds(query, cut.kinds, schema, cut.caseless)) for cut in cuts]
    kinds = [(cut, part) for cut, part in parts if part is not None]
    return detection.table, kinds if len(kinds) == len(cuts) else []


def branch_source(source: SourceRule, branch: Branch) -> SourceRule:
    """A union branch (or a kind of events) as a source of its own: its query, and an identity
    (hence a rule id) of the source's plus the branch's place, table and kind, stable across runs."""
    identity = f"{source.id or source.kql.strip()}|union branch {branch.index + 1}|{branch.table}"
    identity += f"|{branch.kind}" if branch.kind else ""
    return replace(source, kql=branch.text, id=identity)


def rule_sources(source: SourceRule) -> list[SourceRule]:
    """The sources a query's rules are converted from: its parts (``query_parts``), or itself."""
    try:
        branches = query_parts(kql.parse(source.kql), source.kql)
    except Rmm2SigmaError:
        return [source]
    return [branch_source(source, branch) for branch in branches or ()] or [source]


def _branch_label(branch: Branch) -> str:
    if branch.kind:
        where = f"union branch {branch.index + 1}, " if branch.in_union else ""
        return f"{where}{branch.table} events of {branch.kind}"
    return f"union branch {branch.index + 1} ({branch.table})"


def _in_branch(error: Rmm2SigmaError, branch: Branch) -> Rmm2SigmaError:
    """An error of one union branch, its message naming the branch (and, when it reads a column
    only other branches have, why: Kusto's union gives it empty values there)."""
    lacked = [column for column in branch.missing if column in error.message]
    why = (
        f" ({', '.join(lacked)}: a column of the union's other tables, empty in {branch.table}; "
        "a test on it is not converted for this branch)"
        if lacked
        else ""
    )
    return type(error)(
        f"{_branch_label(branch)}: {error.message}{why}",
        source=error.source,
        line=error.line,
        column=error.column,
        context=error.context,
    )


def _category(mapped: MappedRule) -> str:
    return mapped.table.logsource.get("category") or mapped.table.logsource["service"]


def _mapped(located_in: SourceRule, query: kql.Query, options: Options) -> MappedRule:
    """The query lowered and mapped; errors located in the file ``located_in`` came from."""
    try:
        detection = lower(query, defender_schema())
        return map_detection(detection, exact=options.exact, schema=defender_schema())
    except Rmm2SigmaError as error:
        raise _located(error, located_in) from None


def _convert(source: SourceRule, mapped: MappedRule, options: Options, wanted: Sequence[str]) -> RuleResult:
    """A mapped query as a Sigma rule and its target queries."""
    emitted = emit(source, mapped, options)
    # the emitted document, not ``rule.to_dict()``: pySigma writes a literal backslash before a
    # literal `*` as `\\*`, which reads back as a backslash and a wildcard
    document = emitted.document
    queries: dict[str, str] = {}
    errors: dict[str, str] = {}
    notes = [*mapped.notes, *source.rule_notes, *emitted.notes]
    page_filters = rule_filters(source, mapped, emitted.document, options.exact)
    applied = options.apply_filters and bool(page_filters.filters)
    notes.extend(_page_notes(source, page_filters, applied))

    def make_rule() -> Any:
        rule = _rule_from(document)
        return applied_rule(rule, page_filters.filters) if applied else rule

    threshold = correlation.plan(mapped)
    pair = threshold and correlation.documents(source, mapped, options, emitted.filename, threshold)
    if threshold:
        notes.extend(threshold.notes)
    models = {target: targets.data_model(target, options.splunk_data_model) for target in wanted}
    for target in wanted:
        attributes, target_notes = targets.rule_attributes(
            target, mapped.detection.aggregation, mapped.detection.window, mapped.table
        )
        assumes = targets.data_model_note(target, models[target], mapped.table.logsource)
        notes.extend([assumes] if assumes else [])
        if pair is None or target == "kusto":  # with a threshold, only kusto renders the summarize
            notes.extend(target_notes)
        if pair:
            result = correlation.convert(target, pair, attributes, models[target])
        else:
            result = targets.convert(target, make_rule, attributes, models[target])
        if result.query is None:
            errors[target] = result.error or "conversion failed"
        else:
            queries[target] = result.query
    labels = target_fidelity(mapped, (SIGMA, *queries), splunk_data_model=options.splunk_data_model)
    for target, reason in refusals(labels).items():  # never ship a query that loses events
        errors[target] = reason
        del queries[target], labels[target]
    by_target = {target: label.label for target, label in labels.items()}
    # the headline is the worst target's label: a rule exact in Sigma but narrowed in lucene is not exact
    measured = [Fidelity(label) for label in by_target.values() if label in Fidelity._value2member_map_]
    headline = Fidelity.worst(mapped.fidelity, *measured)
    notes.extend(note for label in labels.values() for note in label.notes)
    return RuleResult(
        title=emitted.rule.title,
        rule_id=str(emitted.rule.id),
        category=emitted.category,
        filename=pair.filename if pair else emitted.filename,
        yaml=pair.yaml if pair else emitted.yaml,
        fidelity=headline,
        notes=tuple(dict.fromkeys(notes)),
        queries=queries,
        errors=errors,
        fidelity_by_target=by_target,
        kql=source.kql,
        tags=tuple(str(tag) for tag in emitted.rule.tags),
        filters=page_filters,
        filters_applied=applied,
        data_connectors=source.data_connectors,
        schedule=schedule(source.query_frequency, source.query_period, mapped.detection.window),
        data_models={target: model for target, model in models.items() if model},
    )


def _convert_join(
    source: SourceRule, query: kql.Query, options: Options, wanted: Sequence[str]
) -> RuleResult | None:
    """A join of two filters as a temporal correlation of a rule per side (``temporal``), or None
    when the query is no such join, a side does not convert on its own or no key has a Sigma
    field: then the one-sided conversion says what it can or cannot do."""
    try:
        join = temporal.find(query, defender_schema())
        if join is None:
            return None
        sides = (_mapped(source, join.left, options), _mapped(source, join.right, options))
    except Rmm2SigmaError:
        return None
    if any(side.detection.aggregation and side.detection.aggregation.having for side in sides):
        return None  # a threshold on a side: a correlation of correlations, not built
    # a summary by the key (``temporal.find``) keeps every key its filter selects: the rule is the filter
    sides = (_filter_only(sides[0]), _filter_only(sides[1]))
    chosen = temporal.plan(join, *sides)
    if chosen is None:
        return None
    right_source = replace(source, id=f"{source.id or source.kql.strip()}|join right side")
    left = _convert(source, sides[0], options, wanted)
    right = _convert(right_source, sides[1], options, wanted)
    pair = temporal.documents(left.document, right.document, left.filename, chosen)
    notes = [*chosen.notes, *left.notes]
    notes += [f"join right side: {note}" for note in right.notes if note not in left.notes]
    queries: dict[str, str] = {}
    errors: dict[str, str] = {}
    by_target: dict[str, str] = {}
    for target in (SIGMA, *wanted):
        if target != SIGMA:
            pairs = (left.queries.get(target), right.queries.get(target))
            result = temporal.convert(target, pair, chosen, pairs, join)
            # a target returning the left side's events does not need the right side's query
            needed = (left,) if temporal.one_sided(target, chosen) else (left, right)
            error = next((side.errors[target] for side in needed if target in side.errors), None)
            if error or result.query is None:
                errors[target] = error or result.error or "conversion failed"
                continue
            queries[target] = result.query
        # a target returning the left side's events is labelled by that side alone
        other = left if target != SIGMA and temporal.one_sided(target, chosen) else right
        labels = (left.fidelity_by_target.get(target, ""), other.fidelity_by_target.get(target, ""))
        by_target[target], target_notes = temporal.fidelity(target, labels, chosen, join)
        notes.extend(target_notes)
    measured = [Fidelity(label) for label in by_target.values() if label in Fidelity._value2member_map_]
    headline = Fidelity.worst(*(side.fidelity for side in sides), *measured)
    return replace(
        left,
        filename=pair.filename,
        yaml=pair.yaml,
        fidelity=headline,
        notes=tuple(dict.fromkeys(notes)),
        queries=queries,
        errors=errors,
        fidelity_by_target=by_target,
    )


def _filter_only(mapped: MappedRule) -> MappedRule:
    return replace(mapped, detection=replace(mapped.detection, aggregation=None))


def _located(error: Rmm2SigmaError, source: SourceRule) -> Rmm2SigmaError:
    """An error inside the query, located in the file the query came from."""
    if not source.escaped:
        return error.located(source.path, source.kql_line - 1, source.kql_column - 1)
    # a JSON string: one line of the file, escapes (\n, \") counted in its columns
    from .rule_files import json_column

    column = json_column(source.kql, error.line or 1, error.column or 1)
    where = f" (in {source.where}, query line {error.line}, column {error.column})" if error.line else ""
    return type(error)(
        error.message + where,
        source=source.path,
        line=source.kql_line,
        column=source.kql_column + column - 1,
        context=error.context,
    )


def _page_notes(source: SourceRule, page_filters: RuleFilters, applied: bool) -> list[str]:
    """What a pasted page adds beside the query: connectors to enable, filters and their state."""
    notes = [f"data connector for {table}: {note or 'needed'}" for table, note in source.data_connectors]
    notes.extend(page_filters.notes)
    count = len(page_filters.filters)
    if count and applied:
        notes.append(
            f"the queries apply {count} false-positive filter(s) (--apply-filters): they leave out the "
            "events the page's exclusions name, which the original query selects"
        )
    elif count:
        notes.append(
            f"{count} false-positive filter(s) are written to filters/ and not applied to the queries; "
            "apply them with --apply-filters or `sigma convert --filter`"
        )
    return notes


def _rule_from(document: dict[str, Any]) -> Any:
    from sigma.rule import SigmaRule

    return SigmaRule.from_dict(document)


TIME_LIMIT_SECONDS = 120.0  # per input; the whole RMM corpus converts in about 4 s


class _TimeLimitReached(BaseException):
    """Not an ``Exception``: no handler of a library the conversion calls can swallow it."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Stop a conversion that runs longer than ``seconds`` (a defect: some query makes a step run
    away), so that one input cannot hold up the batch. Where a timer signal can interrupt: the
    main thread (of the process or of a worker) on a POSIX system; elsewhere no limit."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if seconds <= 0 or not usable:
        yield
        return

    def reached(_signal: int, _frame: object) -> None:
        raise _TimeLimitReached

    previous = signal.signal(signal.SIGALRM, reached)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def convert_input(
    path: str,
    options: Options,
    wanted: Sequence[str] = targets.TARGETS,
    data: bytes | None = None,
    time_limit: float = TIME_LIMIT_SECONDS,
) -> InputResult:
    """Convert one file; never raises, whatever the input (or a converter bug) does, and gives up
    after ``time_limit`` seconds (0: never)."""
    warnings: tuple[str, ...] = ()
    try:
        with _time_limit(time_limit):
            sources = read_sources(path, data)
            warnings = tuple(w for source in sources for w in source.warnings)
            converted = _convert_each(sources, options, wanted)
            rules = tuple(rule for source_rules, _ in converted for rule in source_rules)
            failed = [message for _, messages in converted for message in messages]
    except _TimeLimitReached:
        reason = f"converting took longer than {time_limit:g} s (--time-limit), please report this input"
        return InputResult(path, "failed", f"{printable(path)}: {reason}", warnings)
    except Rmm2SigmaError as error:
        if error.source is None:
            error.source = path
        return InputResult(path, "failed", str(error), warnings)
    except RecursionError:
        return InputResult(path, "failed", f"{printable(path)}: input nested too deeply to convert", warnings)
    except Exception as error:  # a defect, not bad input: reported as such, and the batch goes on
        missing = getattr(error, "filename", None)  # a packaged file missing from an install: name it
        detail = f"{error!r} ({missing})" if isinstance(error, OSError) and missing else repr(error)
        defect = f"{printable(path)}: internal error, please report it: {detail}"
        return InputResult(path, "failed", defect, warnings)
    errors = failed + [message for rule in rules for message in rule.errors.values()]
    return InputResult(path, "partial" if errors else "converted", "; ".join(errors) or None, warnings, rules)


def _convert_each(
    sources: Sequence[SourceRule], options: Options, wanted: Sequence[str]
) -> list[tuple[tuple[RuleResult, ...], tuple[str, ...]]]:
    """Each query of a file on its own: one that does not convert is an error of the file (a
    partial input) while another converts; when none converts, the first error is raised."""
    converted: list[tuple[tuple[RuleResult, ...], tuple[str, ...]]] = []
    first: Rmm2SigmaError | None = None
    for source in sources:
        try:
            converted.append(convert_rules(source, options, wanted))
        except Rmm2SigmaError as error:
            if len(sources) == 1:
                raise
            error.source = error.source or source.path
            first = first or error
            converted.append(((), (str(error),)))
    if first is not None and not any(rules for rules, _ in converted):
        raise first
    return converted


def convert_all(
    paths: Sequence[str],
    options: Options,
    wanted: Sequence[str] = targets.TARGETS,
    workers: int = 1,
    stdin: bytes | None = None,
    done: Callable[[InputResult], None] | None = None,
    time_limit: float = TIME_LIMIT_SECONDS,
) -> list[InputResult]:
    """Convert in order, in ``workers`` processes when that pays off, each input within
    ``time_limit`` seconds.

    Each worker converts large chunks (about four per worker) so the pool's per-task cost is
    paid a few times, not per file; on Linux workers are forked after pySigma is imported, so
    they only build the backends, once each. Results are plain data, cheap to send back.
    """
    workers = min(workers, len(paths))
    if workers <= 1 or stdin is not None:
        one = partial(convert_input, options=options, wanted=wanted, time_limit=time_limit)
        results = _collect((one(path, data=stdin if path == "-" else None) for path in paths), done)
    else:
        chunk = -(-len(paths) // (workers * 4))
        with ProcessPoolExecutor(workers) as pool:
            convert = partial(convert_input, options=options, wanted=wanted, time_limit=time_limit)
            results = _collect(pool.map(convert, paths, chunksize=chunk), done)
    return unique_titles(merge_duplicates(results))


def _collect(results: Iterable[InputResult], done: Callable[[InputResult], None] | None) -> list[InputResult]:
    """The results in input order, telling ``done`` of each as it arrives (a progress bar)."""
    collected = []
    for result in results:
        collected.append(result)
        if done is not None:
            done(result)
    return collected


def merge_duplicates(results: Sequence[InputResult]) -> list[InputResult]:
    """One rule per detection: a rule with the same log source and detection as an earlier one
    (a network query that fell back to ``process_creation`` reproduces the tool's process rule)
    is merged into it.

    The earlier rule gains the later one's references; the later input keeps no rule of its own
    and a warning names the rule that now stands for it. SigmaHQ refuses two files with one
    detection, and two identical rules would fire twice on every event.
    """
    from .sigma import merge_references

    kept: dict[str, tuple[int, int]] = {}  # detection key -> (result index, rule index)
    merged = list(results)
    for index, result in enumerate(results):
        rules: list[RuleResult] = []
        warnings = list(result.warnings)
        for rule in result.rules:
            key = detection_key(rule.yaml)
            if key not in kept:
                kept[key] = (index, len(rules))
                rules.append(rule)
                continue
            first_index, rule_index = kept[key]
            first = merged[first_index]
            target = first.rules[rule_index] if first_index != index else rules[rule_index]
            joined = replace(target, yaml=merge_references(target.yaml, rule.yaml))
            if first_index == index:
                rules[rule_index] = joined
            else:
                merged[first_index] = replace(
                    first, rules=tuple(joined if i == rule_index else r for i, r in enumerate(first.rules))
                )
            warnings.append(
                f"its rule '{rule.title}' has the same log source and detection as "
                f"'{target.title}' ({target.rule_id}) from {printable(first.source)}; merged into it"
            )
        merged[index] = replace(merged[index], rules=tuple(rules), warnings=tuple(warnings))
    return merged


SINGLE_EVENT = " - Single Event"  # the title of a correlation's base rule ends so (correlation.py)


def unique_titles(results: Sequence[InputResult]) -> list[InputResult]:
    """Every rule title (correlations and their base rules included) used once in the batch.

    SigmaHQ's ``duplicate_title`` check compares titles as they are, across all rules. Rules whose
    title another rule has too are told apart by their category when that differs among them,
    else by the start of their rule id (``Name (2F596077)``): each from the rule itself, never by
    input order, so adding an input does not rename another's rule. A note says so.
    """
    from .sigmahq import safe_documents
    from .yaml_text import dump_yaml

    rules = [rule for result in results for rule in result.rules]
    titles = {id(rule): _titles(safe_documents(rule.yaml)) for rule in rules}
    counts = Counter(title for rule in rules for title in titles[id(rule)])
    clashing = [rule for rule in rules if any(counts[t] > 1 for t in titles[id(rule)])]
    if not clashing:
        return list(results)
    by_title: dict[str, list[RuleResult]] = {}
    for rule in clashing:
        by_title.setdefault(rule.title, []).append(rule)
    renamed: dict[int, RuleResult] = {}
    taken = set(counts)
    for rule in clashing:
        others = {other.category for other in by_title[rule.title] if other is not rule}
        suffix = f" - {category_title(rule.category)}" if others and rule.category not in others else ""
        if not suffix or rule.title.endswith(suffix) or _retitle(rule.title, suffix) in taken:
            suffix = f" ({rule.rule_id.replace('-', '')[:8].upper()})"
        documents = [document for document in safe_documents(rule.yaml) if document]
        for document in documents:
            if "title" in document:
                document["title"] = _retitle(str(document["title"]), suffix)
        title = _retitle(rule.title, suffix)
        taken.add(title)
        note = f"another rule of this conversion is titled {rule.title!r} too: this one is {title!r}"
        renamed[id(rule)] = replace(
            rule,
            title=title,
            yaml="---\n".join(dump_yaml(document) for document in documents),
            notes=(*rule.notes, note),
        )
    return [
        replace(result, rules=tuple(renamed.get(id(rule), rule) for rule in result.rules))
        if any(id(rule) in renamed for rule in result.rules)
        else result
        for result in results
    ]


def _titles(documents: Sequence[Any]) -> list[str]:
    return [str(document["title"]) for document in documents if document and "title" in document]


def _retitle(title: str, suffix: str, limit: int = 120) -> str:
    """``title`` with ``suffix`` (before a base rule's " - Single Event"), within SigmaHQ's limit."""
    single = title.endswith(SINGLE_EVENT)
    head = title.removesuffix(SINGLE_EVENT) if single else title
    tail = suffix + (SINGLE_EVENT if single else "")
    if len(head) + len(tail) > limit:
        head = head[: limit - len(tail) - 3].rstrip() + "..."
    return head + tail


def detection_key(rule_yaml: str) -> str:
    """The log sources, detections and correlation of a rule file (one or several documents)."""
    from .sigmahq import safe_documents

    documents = [document for document in safe_documents(rule_yaml) if document]
    parts = [[d.get("logsource"), d.get("detection"), d.get("correlation")] for d in documents]
    return json.dumps(parts, sort_keys=True, default=str)


def available_cores() -> int:
    """Cores this process may run on (its affinity, e.g. in a container), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
