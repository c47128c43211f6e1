"""Deployable rule files, each read back by its consumer's parser or schema.

Splunk's conf parser (addonfactory-splunk-conf-parser-lib), Elastic's detection-rule API schemas
(tests/fixtures/kibana), the Azure-Sentinel content repository's analytic-rule checks
(tests/fixtures/sentinel), luqum and eql for the scoped Elastic queries, and rmm2sigma's own
Sentinel reader for the round trip.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import eql
import jsonschema
import pytest
import yaml
from addonfactory_splunk_conf_parser_lib import TABConfigParser
from luqum.parser import parser as lucene_parser

from conftest import corpus
from rmm2sigma.convert import convert_all, convert_input
from rmm2sigma.formats import DeployOptions, select
from rmm2sigma.formats.schedule import parse_span, schedule
from rmm2sigma.formats.splunk import cron
from rmm2sigma.report import write_outputs
from rmm2sigma.sigma import Options
from rmm2sigma.sources import discover
from rmm2sigma.targets import TARGETS
from rmm2sigma.verify.kusto_language import kusto_available, validate_kql

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
OPTIONS = Options(author="tester", date=dt.date(2026, 1, 2))

ANALYTIC_RULE = """\
id: 0f6c2f4e-3a7b-4c1d-9e2f-1a2b3c4d5e6f
name: Demo RMM tool started
description: |
    Finds the demo tool starting.
severity: High
queryFrequency: 5m
queryPeriod: 1h
tactics:
  - CommandAndControl
relevantTechniques:
  - T1219
query: |
  DeviceProcessEvents
  | where ProcessVersionInfoCompanyName =~ 'Demo Corp'
"""


def _write(tmp: Path, inputs: list[str], specs: list[str], options: DeployOptions | None = None) -> Path:
    selection = select(specs, TARGETS)
    results = convert_all(list(discover(inputs)), OPTIONS, list(selection))
    write_outputs(results, tmp, list(selection), deploy=selection, deploy_options=options)
    return tmp


@pytest.fixture(scope="module")
def examples_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("deploy"), [str(EXAMPLES)], [])


@pytest.fixture(scope="module")
def report(examples_out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((examples_out / "report.json").read_text())
    return loaded


def _queries(report: dict[str, Any], target: str) -> dict[str, str]:
    return {r["title"]: r["queries"][target] for i in report["inputs"] for r in i["rules"]}


def _unfold(value: str) -> str:
    """A conf value as Splunk reads it: a backslash at a line end continues the value on a new line."""
    return value.replace(" \\\n", "\n")


def test_splunk_savedsearches_parse_with_splunks_conf_parser(
    examples_out: Path, report: dict[str, Any]
) -> None:
    parser = TABConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(examples_out / "deploy/splunk/savedsearches.conf")
    queries = _queries(report, "splunk")
    assert sorted(parser.sections()) == sorted(queries)
    for title, query in queries.items():
        stanza = dict(parser.items(title))
        assert _unfold(stanza["search"]) == query
        assert stanza["cron_schedule"] == "0 * * * *"  # hunting queries: hourly, Sentinel's default
        assert stanza["dispatch.earliest_time"] == "-5d"  # the query's 5-day window
        assert stanza["alert.severity"] == "4"  # medium
        assert stanza["enableSched"] == "1" and stanza["disabled"] == "1"
        assert "Sysmon" in stanza["description"] and "fidelity for splunk" in stanza["description"]


def _validator(name: str) -> Any:
    schema = json.loads((FIXTURES / name).read_text())
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.mark.parametrize(("target", "schema"), [("lucene", "query"), ("esql", "esql"), ("eql", "eql")])
def test_kibana_ndjson_matches_elastics_rule_schema(examples_out: Path, target: str, schema: str) -> None:
    validator = _validator(f"kibana/{schema}.schema.json")
    lines = (examples_out / f"deploy/{target}/rules.ndjson").read_text().splitlines()
    assert len(lines) == 5
    for line in lines:
        rule = json.loads(line)
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(rule)]
        assert errors == [], rule["name"]
        assert rule["interval"] == "1h" and rule["from"] == "now-5d"
        assert rule["severity"] == "medium" and rule["risk_score"] == 47
        assert rule["threat"][0]["tactic"]["id"] == "TA0011"
        assert rule["threat"][0]["technique"][0]["id"] == "T1219"
        assert "fidelity for" in rule["note"]


def test_kibana_queries_name_indices_and_event_category(examples_out: Path) -> None:
    rules = {
        target: [json.loads(line) for line in (examples_out / f"deploy/{target}/rules.ndjson").open()]
        for target in ("lucene", "esql", "eql")
    }
    for rule in rules["lucene"]:
        lucene_parser.parse(rule["query"])  # luqum: valid Lucene
        assert rule["index"] == ["winlogbeat-*", "logs-windows.sysmon_operational-*"]
        assert rule["query"].startswith("event.category:")
    for rule in rules["eql"]:
        with eql.parser.elasticsearch_syntax, eql.parser.ignore_missing_functions:
            eql.parse_query(rule["query"])
        assert not rule["query"].startswith("any where")
    for rule in rules["esql"]:
        assert rule["query"].startswith("from winlogbeat-*, logs-windows.sysmon_operational-* metadata")
        assert "event.category ==" in rule["query"]
        assert "index" not in rule


def test_sentinel_yaml_passes_the_content_repository_checks(examples_out: Path) -> None:
    validator = _validator("sentinel/scheduled_rule.schema.json")
    files = sorted((examples_out / "deploy/kusto/sentinel").glob("*.yaml"))
    assert len(files) == 5
    for path in files:
        document = yaml.safe_load(path.read_text())
        assert [e.message for e in validator.iter_errors(document)] == []
        frequency, period = parse_span(document["queryFrequency"]), parse_span(document["queryPeriod"])
        assert frequency is not None and period is not None
        assert 300 <= frequency <= period <= 14 * 86400
        assert document["tactics"] == ["CommandAndControl"]


def test_sentinel_rule_round_trips(examples_out: Path, report: dict[str, Any]) -> None:
    """The analytic rule, read back by rmm2sigma, gives the same Sigma detection."""
    originals = {r["title"]: r for i in report["inputs"] for r in i["rules"]}
    for path in sorted((examples_out / "deploy/kusto/sentinel").glob("*.yaml")):
        result = convert_input(str(path), OPTIONS, ["kusto"])
        assert result.status == "converted", result.error
        (rule,) = result.rules
        original = originals[rule.title]
        again = yaml.safe_load(rule.yaml)
        first = yaml.safe_load((examples_out / original["sigma"]).read_text())
        assert again["detection"] == first["detection"]
        assert again["logsource"] == first["logsource"]
        assert rule.queries["kusto"] == original["queries"]["kusto"]


def test_defender_custom_detection_shape(examples_out: Path, report: dict[str, Any]) -> None:
    queries = set(_queries(report, "kusto").values())
    files = sorted((examples_out / "deploy/kusto/defender").glob("*.json"))
    assert len(files) == 5
    texts = []
    for path in files:
        body = json.loads(path.read_text())
        text = body["queryCondition"]["queryText"]
        # every example summarizes by DeviceId: the latest Timestamp and ReportId are kept too
        assert text.replace("summarize arg_max(Timestamp, ReportId), ", "summarize ") in queries
        texts.append(text + "\n| project Timestamp, ReportId, DeviceId")  # the columns Defender requires
        assert body["schedule"]["period"] in ("0", "1H", "3H", "12H", "24H")
        template = body["detectionAction"]["alertTemplate"]
        assert template["severity"] in ("informational", "low", "medium", "high")
        assert template["mitreTechniques"] == ["T1219"]
        assert template["category"] == "CommandAndControl"
        assert "arg_max(Timestamp, ReportId)" in template["description"]
    if kusto_available():  # Microsoft's parser binds the queries against the Defender schema
        assert [[d for d in found if d.is_error] for found in validate_kql(texts)] == [[]] * len(texts)


def test_analytic_rule_schedule_reaches_every_format(tmp_path: Path) -> None:
    source = tmp_path / "rule.yaml"
    source.write_text(ANALYTIC_RULE)
    out = _write(tmp_path / "out", [str(source)], [])
    parser = TABConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(out / "deploy/splunk/savedsearches.conf")
    (title,) = parser.sections()
    assert parser.get(title, "cron_schedule") == "*/5 * * * *"
    assert parser.get(title, "dispatch.earliest_time") == "-1h"
    assert parser.get(title, "alert.severity") == "5"
    (line,) = (out / "deploy/lucene/rules.ndjson").read_text().splitlines()
    rule = json.loads(line)
    assert (rule["interval"], rule["from"], rule["severity"]) == ("5m", "now-1h", "high")
    (sentinel,) = (out / "deploy/kusto/sentinel").glob("*.yaml")
    document = yaml.safe_load(sentinel.read_text())
    assert (document["queryFrequency"], document["queryPeriod"], document["severity"]) == ("5m", "1h", "High")
    (defender,) = (out / "deploy/kusto/defender").glob("*.json")
    body = json.loads(defender.read_text())
    assert body["schedule"]["period"] == "1H"
    assert "every 5m" in body["detectionAction"]["alertTemplate"]["description"]


def test_options_change_indices_and_filters(tmp_path: Path) -> None:
    options = DeployOptions(
        elastic_index=("logs-endpoint.events.process-*",), splunk_index="sysmon", event_filter=False
    )
    out = _write(
        tmp_path, [str(EXAMPLES / "supremo_create_process.txt")], ["lucene", "esql", "splunk"], options
    )
    report = json.loads((out / "report.json").read_text())
    (rule,) = report["inputs"][0]["rules"]
    lucene = json.loads((out / "deploy/lucene/rules.ndjson").read_text())
    assert lucene["query"] == rule["queries"]["lucene"]  # no event filter added
    assert lucene["index"] == ["logs-endpoint.events.process-*"]
    esql = json.loads((out / "deploy/esql/rules.ndjson").read_text())
    assert esql["query"].startswith("from logs-endpoint.events.process-* metadata")
    assert "index=sysmon earliest=-5d" in (out / "deploy/splunk/savedsearches.conf").read_text()


def test_format_selection() -> None:
    assert select([], TARGETS)["kusto"] == ["sentinel", "defender"]
    assert select(["Splunk"], TARGETS) == {"splunk": ["savedsearches"]}
    assert select(["kusto:defender,splunk:query"], TARGETS) == {"kusto": ["defender"], "splunk": []}
    with pytest.raises(ValueError, match="no format 'toml'"):
        select(["splunk:toml"], TARGETS)


@pytest.mark.parametrize(
    ("seconds", "expression", "exact"),
    [
        (300, "*/5 * * * *", True),
        (420, "*/6 * * * *", False),
        (3600, "0 * * * *", True),
        (10800, "0 */3 * * *", True),
        (86400, "0 0 * * *", True),
        (172800, "0 0 */2 * *", True),
    ],
)
def test_cron(seconds: int, expression: str, exact: bool) -> None:
    assert cron(seconds) == (expression, None if exact else cron(seconds)[1])
    assert (cron(seconds)[1] is None) == exact


def test_schedule_defaults_and_repairs() -> None:
    assert schedule(None, None, dt.timedelta(days=5)).period == 5 * 86400
    assert schedule(None, None, None).period == 3600
    repaired = schedule("1d", "1h", None)
    assert (repaired.frequency, repaired.period) == (86400, 86400) and repaired.notes
    assert schedule("often", None, None).notes[0].startswith("schedule: queryFrequency 'often'")


CORPUS = corpus("azure-sentinel-rmm")


@pytest.mark.corpus
def test_every_corpus_rule_deploys_and_validates(tmp_path: Path) -> None:
    """Every converted corpus rule, in every default format, through the consumers' checks."""
    out = _write(tmp_path, [str(CORPUS)], [])
    report = json.loads((out / "report.json").read_text())
    rules = report["summary"]["rules"]
    assert rules == sum(len(entry["rules"]) for entry in report["inputs"]) >= 155
    parser = TABConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(out / "deploy/splunk/savedsearches.conf")
    assert len(parser.sections()) == rules  # unique stanza names, nothing merged
    for target, schema in (("lucene", "query"), ("esql", "esql"), ("eql", "eql")):
        validator = _validator(f"kibana/{schema}.schema.json")
        lines = (out / f"deploy/{target}/rules.ndjson").read_text().splitlines()
        assert len(lines) == rules
        for line in lines:
            rule = json.loads(line)
            assert list(validator.iter_errors(rule)) == [], rule["name"]
            if target == "lucene":
                lucene_parser.parse(rule["query"])
            elif target == "eql":
                with eql.parser.elasticsearch_syntax, eql.parser.ignore_missing_functions:
                    eql.parse_query(rule["query"])
    sentinel = _validator("sentinel/scheduled_rule.schema.json")
    files = list((out / "deploy/kusto/sentinel").glob("*.yaml"))
    assert len(files) == rules
    for path in files:
        assert list(sentinel.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name
    assert len(list((out / "deploy/kusto/defender").glob("*.json"))) == rules
