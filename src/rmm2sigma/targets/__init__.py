"""The five query targets: pySigma backends, their pipelines, and our postprocessing pipelines.

Backends and pipelines are imported lazily (pySigma costs ~0.5 s to import) and built once per
process and data model. A rule's aggregation and time window reach our postprocessing templates
through ``rule.custom_attributes['rmm2sigma']``, set only on the in-memory rule, never in the YAML.

Each target renders for a data model (``formats/formats.yml``): the events and field names its
queries read. Splunk has two, chosen with ``--splunk-data-model`` (``Options.splunk_data_model``):
``sysmon`` (the default) and ``windows-security``, the Security log through pySigma's
windows-audit pipeline (process creation as event 4688). What a data model cannot hold is
refused by ``fidelity.py``; every rule's notes name its targets' data models (``data_model_note``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sigma.conversion.base import Backend
    from sigma.rule import SigmaRule

    from ..mapping import TableSpec
    from ..model import Aggregation

TARGETS = ("kusto", "splunk", "lucene", "esql", "eql")
# the correlation method of our splunk and esql backends that counts once over the search's whole
# time range, as a KQL ``summarize`` without ``bin()`` does (pySigma's ``stats`` counts in buckets)
WHOLE_RANGE = "range"
EXTENSIONS = {"kusto": "kql", "splunk": "spl", "lucene": "lucene", "esql": "esql", "eql": "eql"}


@dataclass(frozen=True)
class TargetQuery:
    query: str | None
    error: str | None = None
    notes: tuple[str, ...] = ()


def add_whole_range(backend: type, templates: dict[str, str]) -> None:
    """Give a backend with pySigma's ``stats`` correlation method the method ``range`` too: every
    ``stats`` template, those in ``templates`` (aggregations without time buckets) replaced."""
    for name in dir(backend):
        value = getattr(backend, name)
        if isinstance(value, dict) and "stats" in value:
            setattr(backend, name, {**value, WHOLE_RANGE: templates.get(name, value["stats"])})


def _pipeline(name: str) -> Any:
    from sigma.processing.pipeline import ProcessingPipeline

    from ..sigmahq import safe_load

    return ProcessingPipeline.from_dict(
        safe_load(resources.files("rmm2sigma").joinpath(f"pipelines/{name}.yml").read_text())
    )


def _kusto() -> Backend:
    from sigma.pipelines.microsoftxdr import microsoft_xdr_pipeline
    from sigma.processing.transformations import ReplaceStringTransformation

    from .kusto import (
        Rmm2SigmaKustoBackend,
        accept_json_keys,
        defender_events_pipeline,
        defender_lines_pipeline,
    )

    xdr = microsoft_xdr_pipeline()
    # Our User values are AccountName values, never DOMAIN\user: the XDR pipeline's split would
    # rewrite every User value as a plain string, dropping |cased, and read `a\*b` as domain `a`.
    xdr.items = [item for item in xdr.items if item.identifier != "microsoft_xdr_domain_username_extract"]
    # Its registry-key replacements (HKLM -> HKEY_LOCAL_MACHINE) rewrite a value through its plain
    # text, where a key ending in a backslash before contains' wildcard reads back as an escaped `*`
    # (`\Image File Execution Options\` became `endswith "...Options*"`): replace in the text only.
    for item in xdr.items:
        if isinstance(item.transformation, ReplaceStringTransformation):
            item.transformation.skip_special = True
    accept_json_keys(xdr)
    tables = _pipeline("kusto_tables") + defender_events_pipeline() + defender_lines_pipeline()
    return Rmm2SigmaKustoBackend(tables + xdr + _pipeline("kusto_aggregation"))


def data_models(target: str) -> dict[str, dict[str, Any]]:
    """A built-in target's data models (``formats.yml``), its default first; {} for other backends."""
    from ..formats import data

    models: dict[str, dict[str, Any]] = data()["targets"].get(target, {}).get("data_models", {})
    return models


def data_model(target: str, splunk: str | None = None) -> str | None:
    """The data model ``target`` renders for: ``splunk`` (a choice of Splunk's), else the default.

    None for a backend that is not built in: its data model is its own pipelines'."""
    models = data_models(target)
    if target == "splunk" and splunk is not None:
        if splunk not in models:
            raise ValueError(f"unknown Splunk data model {splunk!r}; choose from {', '.join(models)}")
        return splunk
    return next(iter(models), None)


def data_model_note(target: str, model: str | None, logsource: Mapping[str, str]) -> str | None:
    """What ``target``'s query of a rule with this log source assumes, as the rule's notes say it."""
    from ..formats import data

    if model is None:
        return None
    assumes = " ".join(data_models(target)[model]["assumes"].split())
    if target != "splunk":
        event = data()["event_filters"].get(logsource.get("category"), {}).get(target)
        scope = f"; this rule's event filter: {event}" if event else ""
        return f"{target}: data model {model}: {assumes}{scope}"
    events = _splunk_events(model, tuple(sorted(logsource.items())))
    reads = f"this rule reads {events}" if events else "no event of it stands for this log source"
    return f"splunk: data model {model} (--splunk-data-model): {assumes}; {reads}"


def _splunk_pipeline(model: str | None) -> Any:
    """The pipelines that give a Sigma log source its Splunk source and EventCode in ``model``
    (None: the default)."""
    from sigma.pipelines.splunk import splunk_windows_pipeline
    from sigma.pipelines.sysmon import sysmon_pipeline
    from sigma.pipelines.windows import windows_audit_pipeline

    events: dict[str, Callable[[], Any]] = {
        "sysmon": sysmon_pipeline,
        "windows-security": windows_audit_pipeline,
    }
    return events[data_model("splunk", model) or ""]() + splunk_windows_pipeline()  # type: ignore[no-untyped-call]


@cache
def _splunk_events(model: str, logsource: tuple[tuple[str, str], ...]) -> str:
    """``source=... EventCode=1``: the tests ``model``'s pipelines add for a log source, read
    from the pipelines themselves by applying them to a rule with one test of its own."""
    from sigma.rule import SigmaDetectionItem, SigmaRule

    own = "rmm2sigma"
    rule = SigmaRule.from_dict(
        {"title": own, "logsource": dict(logsource), "detection": {own: {own: 1}, "condition": own}}
    )
    _splunk_pipeline(model).apply(rule)
    tests = [
        item
        for detection in rule.detection.detections.values()
        for item in detection.detection_items
        if isinstance(item, SigmaDetectionItem) and item.field not in (own, None)
    ]
    tests.sort(key=lambda item: item.field != "source")  # as the query writes them: source first
    return " ".join(
        f"{item.field}={item.value[0]}"
        if len(item.value) == 1
        else f"{item.field} IN ({', '.join(str(value) for value in item.value)})"
        for item in tests
    )


def _splunk(model: str | None) -> Backend:
    from .splunk import Rmm2SigmaSplunkBackend

    return Rmm2SigmaSplunkBackend(_splunk_pipeline(model) + _pipeline("splunk_aggregation"))


def ecs_pipeline() -> Any:
    """Sigma's Windows fields as ECS names: ecs_windows, with the names it lacks (ecs_fields.yml)."""
    from sigma.pipelines.elasticsearch.windows import ecs_windows

    return _pipeline("ecs_fields") + ecs_windows()


def _elastic(kind: str) -> Callable[[], Backend]:
    def build() -> Backend:
        from sigma.backends.elasticsearch import LuceneBackend

        from .elastic import Rmm2SigmaEqlBackend, Rmm2SigmaEsqlBackend, lucene_pipeline

        backends: dict[str, type[Backend]] = {
            "lucene": LuceneBackend,
            "esql": Rmm2SigmaEsqlBackend,
            "eql": Rmm2SigmaEqlBackend,
        }
        # lucene, esql: case-insensitive strings and our regexes in Lucene's regex dialect (elastic.py).
        # EQL's ``:`` and ``like~`` are case-insensitive already; its ``regex~`` would take the same
        # regex rewrite (lucene_pipeline(strings=False)), but the proof's EQL engine anchors regexes
        # at the start only and would measure the rewritten regexes as widened, so it waits for that.
        pipeline = ecs_pipeline() + lucene_pipeline(strings=kind != "eql")
        if kind == "esql":
            pipeline += _pipeline("esql_aggregation")
        return backends[kind](pipeline)

    return build


_FACTORIES: dict[str, Callable[[], Backend]] = {
    "kusto": _kusto,
    "lucene": _elastic("lucene"),
    "esql": _elastic("esql"),
    "eql": _elastic("eql"),
}


@cache
def backend(target: str, model: str | None = None) -> Backend:
    """The backend of ``target`` for data model ``model`` (Splunk's; the others have one)."""
    if target == "splunk":
        return _splunk(model)
    if target not in _FACTORIES:  # any other installed pySigma backend (plugins.py)
        from ..plugins import backend as installed_backend

        return installed_backend(target)
    return _FACTORIES[target]()


@cache
def aggregation_names() -> dict[str, Any]:
    from ..sigmahq import safe_load

    text = resources.files("rmm2sigma").joinpath("pipelines/aggregation.yml").read_text()
    data: dict[str, Any] = safe_load(text)
    return data


def compact_timespan(span: timedelta) -> str:
    """``1h``, ``2m``, ``7d``: the largest whole unit, as both KQL and Sigma's ``timespan`` write it."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def rule_attributes(
    target: str, aggregation: Aggregation | None, window: timedelta | None, table: TableSpec | None = None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """What the target's template needs, in the target's own names, and notes on what is lost.

    ``table`` is the rule's mapping entry: a column it maps whole to a Sigma field is named as the
    target names that field in the rule's log source (RemoteIP is DestAddress in the Security
    log's 5157, not Sysmon's DestinationIp); other columns take aggregation.yml's names.
    """
    notes: list[str] = []
    attributes: dict[str, Any] = {}
    if window is not None:
        attributes["window"] = {"seconds": int(window.total_seconds()), "compact": compact_timespan(window)}
    names = aggregation_names()
    if window is not None and target not in names["window"]:
        notes.append(
            f"{target}: the time window (the last {attributes['window']['compact']}) cannot be part of "
            "the query; set it as the search's schedule lookback"
        )
    if aggregation is None:
        return attributes, tuple(notes)
    if not any(target in entry for entry in names["functions"].values()):
        notes.append(f"{target} cannot aggregate: the query returns the matching events, not a summary")
        return attributes, tuple(notes)
    functions, by = [], []
    for function in aggregation.functions:
        name = names["functions"].get(function.function, {}).get(target)
        column = _target_column(target, function.column, table) if function.column else None
        if name is None or (function.column and column is None):
            notes.append(
                f"{target}: aggregate {function.name}={function.function}() has no equivalent; left out"
            )
            continue
        functions.append({"name": function.name, "function": name, "column": column})
    for column_name in aggregation.by:
        column = _target_column(target, column_name, table)
        if target == "kusto":  # microsoft_xdr keeps Defender's names; the mapping kept the column
            column = column or column_name
        if column is None:
            notes.append(f"{target}: group-by column {column_name} has no equivalent; left out")
        else:
            by.append(column)
    if by or aggregation.having:
        attributes.update(functions=functions, by=by)
    if aggregation.having:  # kusto only: the others get a Sigma correlation rule (correlation.py)
        having = aggregation.having
        symbol = {"gt": ">", "gte": ">="}[having.match.value]
        attributes["having"] = {
            "name": having.length or having.function.name,
            "counted": having.function.name,
            "op": symbol,
            "value": having.value,
            "extend": f"{having.length} = array_length({having.function.name})" if having.length else None,
        }
        attributes["bin"] = compact_timespan(aggregation.bin) if aggregation.bin else None
    return attributes, tuple(notes)


def _target_column(target: str, column: str, table: TableSpec | None) -> str | None:
    """A Defender column's name in ``target``: through the rule's Sigma field when its mapping has
    one (splunk's Windows pipelines keep Sigma's names; esql takes ecs_windows' name of it)."""
    field = table.fields.get(column) if table is not None else None
    if field is not None and field.whole and field.values is None and target in ("splunk", "esql"):
        if target == "splunk":
            return field.field
        from ..fidelity import ecs_field_names

        logsource = table.logsource if table is not None else {}
        ecs = ecs_field_names(logsource.get("category", ""), logsource.get("service", "")).get(field.field)
        if ecs and "." in ecs:  # an ECS name (a field ecs_windows leaves alone keeps no dot)
            return ecs.removesuffix(".caseless")  # grouped by the value as stored, not lowercased
    entry: dict[str, str] = aggregation_names()["columns"].get(column, {})
    return entry.get(target)


def convert(
    target: str, make_rule: Callable[[], SigmaRule], attributes: dict[str, Any], model: str | None = None
) -> TargetQuery:
    """One query for one target in data model ``model``; a backend refusal becomes an error
    string, never an exception."""
    from sigma.exceptions import SigmaError

    rule = make_rule()  # pipelines mutate the rule: every target gets a fresh one
    rule.custom_attributes["rmm2sigma"] = attributes
    try:
        queries = backend(target, model).convert_rule(rule)
    except (SigmaError, NotImplementedError, ValueError, TypeError, KeyError) as error:
        return TargetQuery(None, f"{target}: {str(error).splitlines()[0]}")
    query = "\n".join(str(q) for q in queries)
    if not query.strip():  # a pipeline dropped every condition: no query selects what the rule says
        return TargetQuery(None, f"{target}: the backend's pipelines left the rule no condition")
    return TargetQuery(query)
