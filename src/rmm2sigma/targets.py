"""The five query targets: pySigma backends, their pipelines, and our postprocessing pipelines.

Backends and pipelines are imported lazily (pySigma costs ~0.5 s to import) and built once per
process. A rule's aggregation and time window reach our postprocessing templates through
``rule.custom_attributes['rmm2sigma']``, set only on the in-memory rule, never in the YAML.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sigma.conversion.base import Backend
    from sigma.rule import SigmaRule

    from .model import Aggregation

TARGETS = ("kusto", "splunk", "lucene", "esql", "eql")
EXTENSIONS = {"kusto": "kql", "splunk": "spl", "lucene": "lucene", "esql": "esql", "eql": "eql"}


@dataclass(frozen=True)
class TargetQuery:
    query: str | None
    error: str | None = None
    notes: tuple[str, ...] = ()


def _pipeline(name: str) -> Any:
    from sigma.processing.pipeline import ProcessingPipeline

    from .sigmahq import safe_load

    return ProcessingPipeline.from_dict(
        safe_load(resources.files(__package__).joinpath(f"pipelines/{name}.yml").read_text())
    )


def _kusto() -> Backend:
    from sigma.pipelines.microsoftxdr import microsoft_xdr_pipeline

    from .kusto import Rmm2SigmaKustoBackend

    xdr = microsoft_xdr_pipeline()
    # Our User values are AccountName values, never DOMAIN\user: the XDR pipeline's split would
    # rewrite every User value as a plain string, dropping |cased, and read `a\*b` as domain `a`.
    xdr.items = [item for item in xdr.items if item.identifier != "microsoft_xdr_domain_username_extract"]
    return Rmm2SigmaKustoBackend(_pipeline("kusto_tables") + xdr + _pipeline("kusto_aggregation"))


def _splunk() -> Backend:
    from sigma.pipelines.splunk import splunk_windows_pipeline
    from sigma.pipelines.sysmon import sysmon_pipeline

    from .splunk import Rmm2SigmaSplunkBackend

    windows = splunk_windows_pipeline()  # type: ignore[no-untyped-call]
    return Rmm2SigmaSplunkBackend(sysmon_pipeline() + windows + _pipeline("splunk_aggregation"))


def _elastic(kind: str) -> Callable[[], Backend]:
    def build() -> Backend:
        from sigma.backends.elasticsearch import LuceneBackend
        from sigma.pipelines.elasticsearch.windows import ecs_windows

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
        pipeline = ecs_windows() + lucene_pipeline(strings=kind != "eql")
        if kind == "esql":
            pipeline += _pipeline("esql_aggregation")
        return backends[kind](pipeline)

    return build


_FACTORIES: dict[str, Callable[[], Backend]] = {
    "kusto": _kusto,
    "splunk": _splunk,
    "lucene": _elastic("lucene"),
    "esql": _elastic("esql"),
    "eql": _elastic("eql"),
}


@cache
def backend(target: str) -> Backend:
    if target not in _FACTORIES:  # any other installed pySigma backend (plugins.py)
        from .plugins import backend as installed_backend

        return installed_backend(target)
    return _FACTORIES[target]()


@cache
def aggregation_names() -> dict[str, Any]:
    from .sigmahq import safe_load

    text = resources.files(__package__).joinpath("pipelines/aggregation.yml").read_text()
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
    target: str, aggregation: Aggregation | None, window: timedelta | None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """What the target's template needs, in the target's own names, and notes on what is lost."""
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
        column = names["columns"].get(function.column, {}).get(target) if function.column else None
        if name is None or (function.column and column is None):
            notes.append(
                f"{target}: aggregate {function.name}={function.function}() has no equivalent; left out"
            )
            continue
        functions.append({"name": function.name, "function": name, "column": column})
    for column_name in aggregation.by:
        column = names["columns"].get(column_name, {}).get(target)
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


def convert(target: str, make_rule: Callable[[], SigmaRule], attributes: dict[str, Any]) -> TargetQuery:
    """One query for one target; a backend refusal becomes an error string, never an exception."""
    from sigma.exceptions import SigmaError

    rule = make_rule()  # pipelines mutate the rule: every target gets a fresh one
    rule.custom_attributes["rmm2sigma"] = attributes
    try:
        queries = backend(target).convert_rule(rule)
    except (SigmaError, NotImplementedError, ValueError, TypeError, KeyError) as error:
        return TargetQuery(None, f"{target}: {str(error).splitlines()[0]}")
    return TargetQuery("\n".join(str(q) for q in queries))
