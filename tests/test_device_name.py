"""A test of the device's name (``DeviceName``) on the event's ``Computer``.

Every Windows event carries the name of the computer that wrote it; SigmaHQ's taxonomy gives it
to the Sysmon-style categories, not to the Security or Defender logs. So a ``DeviceName`` test (an
investigation's "on the compromised device") is a ``Computer`` test there, compared without case
(Defender writes the name in small letters, Windows as the device was named: wider, noted), and
is left out (wider) in the services. kusto gives ``DeviceName`` back. Labels are measured.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import assert_valid_kusto, disagreements, executed, sigmahq_issues
from rmm2sigma.convert import RuleResult, convert_rule
from rmm2sigma.fidelity import SIGMA
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.proof import measure

NOW = datetime(2026, 12, 2, 12, 0, 0)
DEVICE = 'let CompromisedDevice = "laptop-7.contoso.com";\n'

# name -> (query, the rule's log source category, its detection, kusto's test of the device)
CASES: dict[str, tuple[str, str, dict[str, object], str]] = {
    "process on a device": (
        DEVICE + "DeviceProcessEvents\n| where DeviceName == CompromisedDevice and FileName =~ 'cmstp.exe'",
        "process_creation",
        {"Computer": "laptop-7.contoso.com", "Image|endswith": "\\cmstp.exe"},
        'DeviceName =~ "laptop-7.contoso.com"',
    ),
    "connections of devices": (
        "DeviceNetworkEvents\n| where DeviceName in~ ('web-1', 'web-2') and RemotePort == 4444",
        "network_connection",
        {"Computer": ["web-1", "web-2"], "DestinationPort": 4444},
        'DeviceName in~ ("web-1", "web-2")',
    ),
    "files off a device": (
        "DeviceFileEvents\n| where DeviceName !startswith 'build-' and FileName endswith '.hta'",
        "file_event",
        {"Computer|startswith": "build-", "TargetFilename|endswith": ".hta"},
        'DeviceName startswith "build-"',
    ),
}


def source(name: str) -> SourceRule:
    return SourceRule(path=f"{name.replace(' ', '_')}.kql", kql=CASES[name][0], name=f"Device {name}")


def converted(name: str) -> RuleResult:
    result = convert_rule(source(name), Options())
    assert not result.errors, result.errors
    return result


def selections(document: dict[str, object]) -> dict[str, object]:
    """The rule's detection items, whatever its selections are named."""
    detection = document["detection"]
    assert isinstance(detection, dict)
    merged: dict[str, object] = {}
    for name, value in detection.items():
        if name != "condition" and isinstance(value, dict):
            merged.update(value)
    return merged


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_device_name_test_is_a_computer_test(name: str) -> None:
    document = yaml.safe_load(converted(name).yaml)
    assert document["logsource"]["category"] == CASES[name][1]
    assert selections(document) == CASES[name][2]


@pytest.mark.parametrize("name", sorted(CASES))
def test_kusto_gives_the_device_name_back(name: str) -> None:
    query = converted(name).queries["kusto"]
    assert CASES[name][3] in query and "Computer" not in query


def test_a_case_sensitive_device_name_is_compared_without_case_and_said() -> None:
    result = converted("process on a device")
    assert result.fidelity_by_target[SIGMA] == "widened"
    assert any("`DeviceName == CompromisedDevice` is compared without case" in note for note in result.notes)


def test_exact_mode_keeps_the_case_and_says_what_that_risks() -> None:
    result = convert_rule(source("process on a device"), Options(exact=True))
    assert yaml.safe_load(result.yaml)["detection"]["selection"]["Computer|cased"] == "laptop-7.contoso.com"
    assert any("stays case-sensitive, as --exact asks" in note for note in result.notes), result.notes


def test_a_log_without_computer_in_the_taxonomy_leaves_the_device_name_out() -> None:
    query = "DeviceLogonEvents | where DeviceName == 'dc-1' and AccountName == 'svc_backup'"
    result = convert_rule(SourceRule(path="logon.kql", kql=query, name="Logon On Device"), Options())
    document = yaml.safe_load(result.yaml)
    assert document["logsource"] == {"product": "windows", "service": "security"}
    assert "Computer" not in selections(document)
    assert any("DeviceName has no field in Sigma's security" in note for note in result.notes)


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_executed_target_agrees_with_its_label(name: str, exact: bool) -> None:
    assert not disagreements(executed(measure(source(name), Options(exact=exact), now=NOW)))


@pytest.mark.usefixtures("offline")
def test_every_rule_passes_sigmahq_validators(tmp_path: Path) -> None:
    issues = sigmahq_issues(tmp_path / "rules", {name: converted(name) for name in CASES})
    assert issues == [], issues[0]


def test_the_kusto_queries_are_valid_for_kusto_language() -> None:
    assert_valid_kusto([converted(name).queries["kusto"] for name in sorted(CASES)])
