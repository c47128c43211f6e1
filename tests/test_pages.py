"""Pasted hunting pages: every part of the page reaches the rule or the report, nothing is dropped."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from rmm2sigma.convert import convert_input
from rmm2sigma.sigma import Options
from rmm2sigma.sources import read_source

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OPTIONS = Options(author="tester", date=dt.date(2026, 1, 2))
PAGES = sorted(EXAMPLES.glob("*.txt"))

HYPOTHESIS_OPENINGS = {
    "mremoteng_create_process.txt": "The detection identifies the use of mRemoteNG",
    "netsupport_create_process.txt": "The hypothesis is that an adversary is using NetSupport",
    "remotepc_network_connection.txt": "The hypothesis is that an adversary is using a RemotePC tool",
    "supremo_create_process.txt": "The hypothesis is that an adversary is using the SupRemo tool",
    "supremo_file_signature.txt": "The detection identifies potential use of the SupRemo tool",
}


def rule_of(path: Path, options: Options = OPTIONS) -> dict:  # type: ignore[type-arg]
    result = convert_input(str(path), options)
    assert result.status == "converted", result.error
    document: dict = yaml.safe_load(result.rules[0].yaml)  # type: ignore[type-arg]
    return document


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_hypothesis_follows_the_sentinel_description(page: Path) -> None:
    source = read_source(str(page))
    assert source.hypothesis is not None and source.hypothesis.startswith(HYPOTHESIS_OPENINGS[page.name])
    description = rule_of(page)["description"]
    sentinel = "Remote Monitoring and Management (RMM) programs are IT to manage remote endpoints."
    assert description.startswith(sentinel)  # what the rule does first, then why to hunt for it
    assert " ".join(source.hypothesis.split()) in description
    assert "http" not in description  # URLs stay in references (SigmaHQ's link-in-description rule)


def test_page_chrome_is_never_taken_for_a_hypothesis(tmp_path: Path) -> None:
    page = tmp_path / "page.txt"
    page.write_text(
        "Back to feed\n\nkql MEDIUM Azure-Sentinel\n\n"
        "KQL Query\n\nDeviceProcessEvents | where FileName =~ 'a.exe'\n"
    )
    source = read_source(str(page))
    assert source.hypothesis is None
    assert "adversary" not in rule_of(page)["description"]


@pytest.mark.parametrize(
    ("page", "table"),
    [
        ("supremo_create_process.txt", "DeviceProcessEvents"),
        ("remotepc_network_connection.txt", "DeviceNetworkEvents"),
    ],
)
def test_the_connector_table_becomes_a_note(page: str, table: str) -> None:
    source = read_source(str(EXAMPLES / page))
    assert source.data_connectors == ((table, "Ensure this data connector is enabled"),)
    result = convert_input(str(EXAMPLES / page), OPTIONS)
    assert f"data connector for {table}: Ensure this data connector is enabled" in result.rules[0].notes


def test_a_full_connector_table_with_leading_pipes(tmp_path: Path) -> None:
    page = tmp_path / "page.txt"
    page.write_text(
        "KQL Query\nDeviceNetworkEvents | where RemoteUrl has 'x.com'\n"
        "| Sentinel Table | Notes |\n|---|---|\n| DeviceNetworkEvents | Enable it |\n"
        "| DeviceProcessEvents | Also needed |\n\nScenario: Backup\nDescription: A backup job.\n"
    )
    source = read_source(str(page))
    assert source.data_connectors == (
        ("DeviceNetworkEvents", "Enable it"),
        ("DeviceProcessEvents", "Also needed"),
    )
    assert [fp.scenario for fp in source.false_positives] == ["Backup"]


def test_mremoteng_keeps_its_five_scenarios_and_prose_exclusions() -> None:
    page = EXAMPLES / "mremoteng_create_process.txt"
    source = read_source(str(page))
    assert len(source.false_positives) == 5
    assert all(fp.description == "" and fp.exclusion for fp in source.false_positives)
    rule = rule_of(page)
    assert rule["falsepositives"] == [fp.scenario for fp in source.false_positives]
    assert rule["falsepositives"][1].startswith("A scheduled job is configured to run a legitimate")
    result = convert_input(str(page), OPTIONS)
    prose = [note for note in result.rules[0].notes if note.startswith("false-positive exclusion")]
    assert len(prose) == 5
    assert not result.rules[0].filters.filters
    # each note says where the text is and keeps the advice itself
    assert "line 37 column 19" in prose[1]
    assert prose[1].endswith(
        "Exclude processes that originate from scheduled tasks or known monitoring tools like PRTG, "
        "Nagios, or SolarWinds."
    )


@pytest.mark.parametrize(
    "page", ["supremo_create_process.txt", "netsupport_create_process.txt", "remotepc_network_connection.txt"]
)
def test_scenarios_descriptions_and_exclusions_are_read_with_their_place(page: str) -> None:
    path = EXAMPLES / page
    lines = path.read_text(encoding="utf-8").split("\n")
    source = read_source(str(path))
    assert len(source.false_positives) == 5
    for fp in source.false_positives:
        assert fp.scenario and fp.description and fp.exclusion
        assert lines[fp.line - 1][fp.column - 1 :] == fp.exclusion  # line and column point at it


def test_a_scenario_alone_is_still_a_false_positive(tmp_path: Path) -> None:
    page = tmp_path / "page.txt"
    page.write_text(
        "KQL Query\nDeviceProcessEvents | where FileName =~ 'a.exe'\n\n"
        'Scenario: Admins run it\n\n\nScenario: Backups run it\nFilter/Exclusion: process.name == "b.exe"\n'
    )
    source = read_source(str(page))
    assert [(fp.scenario, fp.exclusion) for fp in source.false_positives] == [
        ("Admins run it", ""),
        ("Backups run it", 'process.name == "b.exe"'),
    ]
    assert rule_of(page)["falsepositives"] == ["Admins run it", "Backups run it"]
