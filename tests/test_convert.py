"""End to end on the shipped examples and small inline inputs: Sigma text, targets, report, CLI."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
import yaml
from sigma.rule import SigmaRule
from typer.testing import CliRunner

import rmm2sigma
from rmm2sigma.cli import app
from rmm2sigma.convert import convert_input
from rmm2sigma.sigma import Options
from rmm2sigma.targets import TARGETS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OPTIONS = Options(author="tester", date=dt.date(2026, 1, 2))

SENTINEL_YAML = """\
id: 11111111-2222-4333-8444-555555555555
name: Remote Management and Monitoring tool - Demo - Create Process
description: |
    Finds the demo tool starting.
    https://example.org/demo
tactics:
  - CommandAndControl
  - DefenseEvasion
relevantTechniques:
  - T1219
query: |
  let Time_start = now(-5d);
  let Time_end = now();
  DeviceProcessEvents
  | where Timestamp between (Time_start..Time_end)
  | where ProcessVersionInfoCompanyName has 'Demo*Corp?'
      and FileName =~ 'demo.exe'
  | summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp),
      Report=make_set(ReportId), Count=count() by DeviceId, DeviceName
"""


def convert_text(tmp_path: Path, text: str, name: str = "rule.yaml", options: Options = OPTIONS) -> dict:  # type: ignore[type-arg]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = convert_input(str(path), options)
    assert result.status == "converted", result.error
    (rule,) = result.rules
    return {"result": result, "rule": rule, "document": yaml.safe_load(rule.yaml)}


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.txt")), ids=lambda p: p.stem)
def test_every_example_converts_to_every_target(example: Path) -> None:
    result = convert_input(str(example), OPTIONS)
    assert result.status == "converted", result.error
    (rule,) = result.rules
    assert sorted(rule.queries) == sorted(TARGETS)
    assert all(query.strip() for query in rule.queries.values())
    SigmaRule.from_yaml(rule.yaml)


def test_page_examples_carry_their_false_positive_scenarios_and_reference() -> None:
    rule = convert_input(str(EXAMPLES / "supremo_create_process.txt"), OPTIONS).rules[0]
    document = yaml.safe_load(rule.yaml)
    assert document["falsepositives"][0] == "Legitimate SupRemo scheduled job execution"
    assert len(document["falsepositives"]) == 5
    web = convert_input(str(EXAMPLES / "supremo_file_signature.txt"), OPTIONS).rules[0]
    assert any(
        ref.startswith("https://github.com/Azure/Azure-Sentinel/")
        for ref in yaml.safe_load(web.yaml)["references"]
    )


def test_sigma_text_follows_sigmahq_conventions(tmp_path: Path) -> None:
    converted = convert_text(tmp_path, SENTINEL_YAML)
    document, text = converted["document"], converted["rule"].yaml
    assert list(document) == [
        "title", "id", "status", "description", "references", "author", "date",
        "tags", "logsource", "detection", "falsepositives", "level",
    ]  # fmt: skip
    assert document["title"] == "Remote Management and Monitoring Tool - Demo - Create Process"
    assert uuid.UUID(document["id"]).version == 4
    assert document["description"] == "Finds the demo tool starting."
    assert document["references"] == ["https://example.org/demo"]
    assert document["tags"] == ["attack.command-and-control", "attack.defense-evasion", "attack.t1219"]
    assert document["date"] == dt.date(2026, 1, 2)
    assert document["detection"]["selection"] == {
        # KQL has no wildcards: a literal * or ? is a regex (SigmaHQ reports an escaped wildcard)
        "Company|re|i": "Demo\\*Corp\\?",
        "Image|endswith": "\\demo.exe",
    }
    assert "\n    selection:\n        Company|re|i:" in text and not text.startswith("---")
    assert converted["rule"].filename == "proc_creation_win_rmm_demo.yml"


def test_ids_are_stable_and_differ_between_modes(tmp_path: Path) -> None:
    first = convert_text(tmp_path, SENTINEL_YAML)["rule"]
    again = convert_text(tmp_path, SENTINEL_YAML)["rule"]
    exact = convert_text(tmp_path, SENTINEL_YAML, options=Options(date=OPTIONS.date, exact=True))["rule"]
    assert first.rule_id == again.rule_id and first.yaml == again.yaml
    assert exact.rule_id != first.rule_id


def test_aggregation_and_window_come_back_natively(tmp_path: Path) -> None:
    queries = convert_text(tmp_path, SENTINEL_YAML)["rule"].queries
    assert queries["kusto"].endswith(
        "| where Timestamp between (ago(5d) .. now())\n"
        "| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp), Report=make_set(ReportId), "
        "Count=count() by DeviceId, DeviceName"
    )
    assert queries["splunk"].startswith("earliest=-5d source=")
    assert "\n| stats min(_time) as FirstSeen" in queries["splunk"]
    assert queries["esql"].endswith("by host.id, host.name")
    assert "stats" not in queries["lucene"] and "stats" not in queries["eql"]


def test_notes_say_what_each_target_loses(tmp_path: Path) -> None:
    notes = convert_text(tmp_path, SENTINEL_YAML)["rule"].notes
    assert "lucene cannot aggregate: the query returns the matching events, not a summary" in notes
    assert "splunk: group-by column DeviceId has no equivalent; left out" in notes


def test_invalid_kql_fails_with_the_line_and_column_of_the_original_file(tmp_path: Path) -> None:
    broken = SENTINEL_YAML.replace("| where ProcessVersionInfoCompanyName", "| ProcessVersionInfoCompanyName")
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    result = convert_input(str(path), OPTIONS)
    assert result.status == "failed" and not result.rules
    assert result.error is not None and result.error.startswith(f"{path}:16:5: ")


def test_unknown_column_is_named_at_its_position(tmp_path: Path) -> None:
    path = tmp_path / "q.kql"
    path.write_text("DeviceProcessEvents\n| where Nope has 'x'\n", encoding="utf-8")
    result = convert_input(str(path), OPTIONS)
    assert result.error == f"{path}:2:9: unknown column 'Nope' for this table"


def test_transpile_is_one_call() -> None:
    kql = "DeviceProcessEvents | where ProcessVersionInfoProductName has 'SupRemo'"
    assert "Product|contains: SupRemo" in rmm2sigma.transpile(kql, name="SupRemo Probe")
    assert rmm2sigma.transpile(kql, "kusto") == (
        'DeviceProcessEvents\n| where ProcessVersionInfoProductName contains "SupRemo"'
    )
    with pytest.raises(rmm2sigma.KqlSyntaxError):
        rmm2sigma.transpile("DeviceProcessEvents | where (", "kusto")


def test_cli_writes_the_report_and_exits_by_outcome(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    done = runner.invoke(app, ["convert", str(EXAMPLES), "--out", str(out), "--date", "2026-01-02"])
    assert done.exit_code == 0, done.output
    report = json.loads((out / "report.json").read_text())
    assert report["version"] == 1 and report["summary"]["converted"] == 5
    entry = report["inputs"][0]
    assert set(entry) >= {"source", "status", "error", "rules"}
    assert set(entry["rules"][0]) >= {"sigma", "title", "fidelity", "notes", "queries", "fidelity_by_target"}
    for item in report["inputs"]:
        rule = item["rules"][0]
        assert (out / rule["sigma"]).is_file()
        assert set(rule["queries"]) == set(TARGETS)
    assert sorted(p.name for p in (out / "backends").iterdir()) == sorted(TARGETS)

    bad = tmp_path / "bad.kql"
    bad.write_text("DeviceProcessEvents | where", encoding="utf-8")
    failed = runner.invoke(app, ["convert", str(bad), str(EXAMPLES), "--out", str(tmp_path / "o2")])
    assert failed.exit_code == 1
    assert f"FAILED: {bad}:1:" in failed.output

    assert (
        runner.invoke(app, ["convert", str(EXAMPLES), "--out", str(out), "--target", "nope"]).exit_code == 2
    )
    assert runner.invoke(app, ["convert", str(tmp_path / "missing"), "--out", str(out)]).exit_code == 2


def test_cli_target_selection_limits_the_backends(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["convert", str(EXAMPLES), "-o", str(out), "-t", "kusto,eql"])
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in (out / "backends").iterdir()) == ["eql", "kusto"]


BROKEN_YAML = """\
id: 22222222-2222-4333-8444-555555555555
name: Remote Management and Monitoring tool - Broken - Network Connection
description: |
    Broken indentation below, as in several Azure-Sentinel files.
requiredDataConnectors:
- connectorId: MicrosoftThreatProtection
   dataTypes:
  - DeviceNetworkEvents
tactics: CommandAndControl
relevantTechniques: T1219
query: |
  DeviceNetworkEvents
  | where RemoteUrl has 'broken.example'
"""


def test_invalid_yaml_is_recovered_by_layout_with_a_warning(tmp_path: Path) -> None:
    converted = convert_text(tmp_path, BROKEN_YAML)
    result, document = converted["result"], converted["document"]
    assert result.warnings and result.warnings[0].startswith(
        "not valid YAML (line 7 column 13: mapping values"
    )
    assert document["title"] == "Remote Management and Monitoring Tool - Broken - Network Connection"
    assert document["tags"] == ["attack.command-and-control", "attack.t1219"]
    assert document["detection"]["selection"] == {"DestinationHostname|contains": "broken.example"}


def test_recovered_yaml_still_locates_kql_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_YAML + "  | where RemoteUrl has (\n", encoding="utf-8")
    result = convert_input(str(path), OPTIONS)
    assert result.status == "failed" and result.warnings
    assert result.error == f"{path}:14:26: unexpected end of query; expected an expression"


def test_stdin_is_read_as_yaml(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["convert", "-", "--out", str(tmp_path)], input=SENTINEL_YAML)
    assert done.exit_code == 0, done.output
    entry = json.loads((tmp_path / "report.json").read_text())["inputs"][0]
    assert entry["source"] == "-"
    assert entry["rules"][0]["sigma"] == "sigma_rules/process_creation/proc_creation_win_rmm_demo.yml"


def test_numbers_and_case_sensitive_strings_get_the_right_modifiers() -> None:
    sigma = yaml.safe_load(
        rmm2sigma.transpile(
            "DeviceNetworkEvents | where RemotePort != 4 and RemoteUrl == 'Exact.example' "
            "and RemotePort > 1000"
        )
    )
    assert sigma["detection"]["selection"] == {
        "DestinationHostname|cased": "Exact.example",
        "DestinationPort|gt": 1000,
    }
    assert sigma["detection"]["filter_main_destinationport"] == {"DestinationPort": 4}
    assert sigma["detection"]["condition"] == "selection and not filter_main_destinationport"


def test_query_lines_at_column_zero_stay_in_the_query_block(tmp_path: Path) -> None:
    """YAML refuses a `query: |` block whose lines start at column 0; layout recovery keeps them all."""
    text = (
        "id: 8d4c2a6e-1b7f-4c3e-9a5d-2f6e8b1c0d3a\n"
        "name: Tomcat spawning a shell\n"
        "query: |\n"
        "DeviceProcessEvents\n"
        '| where InitiatingProcessFileName hasprefix "tomcat"\n'
        '| where FileName =~ "cmd.exe"\n'
    )
    converted = convert_text(tmp_path, text)
    assert converted["result"].warnings
    assert converted["document"]["detection"]["selection"] == {
        "ParentImage|contains": "tomcat",
        "Image|endswith": "\\cmd.exe",
    }
