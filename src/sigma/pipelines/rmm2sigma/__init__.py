"""rmm2sigma's processing pipelines as a pySigma pipeline plugin, for sigma-cli and pySigma users.

``sigma convert -t kusto -p microsoft_xdr -p rmm2sigma_kusto rules/`` gives the queries the
``kusto`` target of rmm2sigma writes; likewise ``-t splunk -p sysmon -p splunk_windows -p
rmm2sigma_splunk``, ``-t lucene -p ecs_windows -p rmm2sigma_lucene``, ``-t esql -p ecs_windows -p
rmm2sigma_esql`` and ``-t eql -p ecs_windows -p rmm2sigma_eql``. What each adds:

* ``rmm2sigma_kusto``: the Defender table for rules with no microsoft_xdr category (the signer
  table; DeviceEvents with the ActionType of each kind of event rmm2sigma maps there), and the
  time window and ``summarize``;
* ``rmm2sigma_splunk``: the window as ``earliest=`` and the aggregation as ``| stats``;
* ``rmm2sigma_lucene`` / ``rmm2sigma_esql`` / ``rmm2sigma_eql``: the ECS names ecs_windows lacks
  (Sysmon's parsed hashes, the host), case-insensitive strings and term regexes in Lucene's regex
  dialect (and ES|QL's window and ``STATS``).

The window and aggregation templates read a rule's ``rmm2sigma`` attribute (``window``,
``functions``, ``by``), a top-level key of the Sigma YAML that pySigma keeps in
``custom_attributes``; a rule without it converts without them.

Case-sensitive tests and numeric value lists are rendered by rmm2sigma's backends, which ship as
the backend plugin ``sigma.backends.rmm2sigma`` (``-t rmm2sigma_kusto`` and so on).

Lives in the ``sigma.pipelines`` namespace, where pySigma's plugin discovery looks; every
pipeline here is a function returning a ``ProcessingPipeline``, named ``<id>_pipeline``.
"""

from __future__ import annotations

from sigma.processing.pipeline import ProcessingPipeline

from rmm2sigma.targets import _pipeline
from rmm2sigma.targets.elastic import lucene_pipeline
from rmm2sigma.targets.kusto import defender_events_pipeline

__all__ = [
    "rmm2sigma_eql_pipeline",
    "rmm2sigma_esql_pipeline",
    "rmm2sigma_kusto_pipeline",
    "rmm2sigma_lucene_pipeline",
    "rmm2sigma_splunk_pipeline",
]


def _named(pipeline: ProcessingPipeline, name: str) -> ProcessingPipeline:
    """Joined pipelines have no name, which ``sigma list pipelines`` prints."""
    pipeline.name = f"rmm2sigma: {name}"
    return pipeline


def rmm2sigma_kusto_pipeline() -> ProcessingPipeline:
    joined = _pipeline("kusto_tables") + defender_events_pipeline() + _pipeline("kusto_aggregation")
    return _named(joined, "Defender tables, window and summarize for KQL")


def rmm2sigma_splunk_pipeline() -> ProcessingPipeline:
    return _named(_pipeline("splunk_aggregation"), "window and stats for Splunk")


def rmm2sigma_lucene_pipeline() -> ProcessingPipeline:
    joined = _pipeline("ecs_fields") + lucene_pipeline(strings=True)
    return _named(joined, "ECS names, case-insensitive strings and regexes for Lucene")


def rmm2sigma_esql_pipeline() -> ProcessingPipeline:
    joined = _pipeline("ecs_fields") + lucene_pipeline(strings=True) + _pipeline("esql_aggregation")
    return _named(joined, "ECS names, case-insensitive strings and regexes, window and STATS for ES|QL")


def rmm2sigma_eql_pipeline() -> ProcessingPipeline:
    return _named(_pipeline("ecs_fields") + lucene_pipeline(strings=False), "ECS names and regexes for EQL")
