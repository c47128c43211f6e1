"""Hash indicators on Defender's file events, matched in Sigma's file_executable_detected.

Sigma's file_event category has no hash field, so a DeviceFileEvents query whose tests need SHA1,
SHA256 or MD5 falls back to file_executable_detected (Sysmon event 29: executable files written,
with their hashes): approximate, noted, since Defender hashes every file on every action. kusto
reads DeviceFileEvents and the original columns back; an ActionType that chose file_delete keeps
that category's own hash fields, file_rename has none. Every label is measured over generated events.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import assert_valid_kusto, disagreements, executed, sigmahq_issues
from rmm2sigma.convert import RuleResult, convert_rule, convert_rules
from rmm2sigma.fidelity import SIGMA
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.proof import measure
from test_device_events import refused, selection

NOW = datetime(2026, 11, 23, 12, 0, 0)
EXECUTABLE = {"product": "windows", "category": "file_executable_detected"}
SHA256 = (
    "4f1d1a1f5c5a3b7e0a0d4b6a2c1e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f",
    "0819f1a0e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8",
)
HASHES = f"let hashes = dynamic(['{SHA256[0]}', '{SHA256[1]}']);\n"
SHA1 = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"
MD5 = "0123456789abcdef0123456789abcdef"

# name -> (query, the rule's detection, what the kusto query tests, kusto's label)
CASES: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "hash list": (
        HASHES + "DeviceFileEvents\n| where SHA256 in (hashes)",
        selection(sha256=list(SHA256)),  # without case: Sysmon writes hashes in capitals
        f'SHA256 in~ ("{SHA256[0]}", "{SHA256[1]}")',
        "widened",
    ),
    "hash or file name": (
        f"DeviceFileEvents | where MD5 =~ '{MD5}' or FileName =~ 'evil.exe'",
        {
            "selection_md5": {"md5": MD5},
            "selection_targetfilename": {"TargetFilename|endswith": "\\evil.exe"},
            "condition": "1 of selection_*",
        },
        f'MD5 =~ "{MD5}" or FolderPath endswith "\\\\evil.exe"',
        "exact",
    ),
    "hash or initiating process": (
        f"DeviceFileEvents | where SHA1 == '{SHA1}' or InitiatingProcessFileName =~ 'evil.exe'",
        {
            "selection_sha1": {"sha1": SHA1},
            "selection_image": {"Image|endswith": "\\evil.exe"},
            "condition": "1 of selection_*",
        },
        f'SHA1 =~ "{SHA1}" or InitiatingProcessFolderPath endswith "\\\\evil.exe"',
        "widened",
    ),
    "file created": (  # the ActionType chose file_event, which the fallback does not say: wider
        f"DeviceFileEvents | where ActionType == 'FileCreated' and SHA1 == '{SHA1}'",
        selection(sha1=SHA1),
        f'SHA1 =~ "{SHA1}"',
        "widened",
    ),
}


def source(name: str) -> SourceRule:
    return SourceRule(path=f"{name.replace(' ', '_')}.kql", kql=CASES[name][0], name=f"Hash IOC {name}")


def converted(name: str) -> RuleResult:
    return convert_rule(source(name), Options())


def falls_back(
    result: RuleResult, logsource: dict[str, str], detection: Any, event: str, prefix: str
) -> None:
    """A DeviceFileEvents query file_event keeps nothing of, as a rule of the fallback category
    (``event`` names it in the notes), labelled approximate."""
    assert not result.errors, result.errors
    document = yaml.safe_load(result.yaml)
    assert document["logsource"] == logsource
    assert document["detection"] == detection
    assert result.fidelity_by_target[SIGMA] == "approximate"
    assert any(event in note for note in result.notes)
    assert result.filename.startswith(prefix)


def reads_back(result: RuleResult, tests: str, label: str, event_code: int) -> None:
    """Every target converts the fallback rule; kusto gives the original tests back on DeviceFileEvents."""
    assert set(result.queries) == {"kusto", "splunk", "lucene", "esql", "eql"}, result.errors
    assert result.queries["kusto"] == f"DeviceFileEvents\n| where {tests}"
    assert result.fidelity_by_target["kusto"] == label
    assert f"EventCode={event_code}" in result.queries["splunk"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_file_hash_becomes_an_executable_file_rule_labelled_approximate(name: str) -> None:
    event = "file_executable_detected (Sysmon event 29)"
    falls_back(converted(name), EXECUTABLE, CASES[name][1], event, "file_executable_detected_win_")


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_target_converts_and_kusto_gives_the_original_tests_back(name: str) -> None:
    reads_back(converted(name), CASES[name][2], CASES[name][3], 29)


def test_an_action_type_the_fallback_cannot_say_is_left_out_and_noted() -> None:
    notes = converted("file created").notes
    assert any(
        "`ActionType == 'FileCreated'` was left out" in note and "file_executable_detected" in note
        for note in notes
    )
    assert not any("selects Sigma's file_event" in note for note in notes)


def test_the_security_log_has_no_event_for_it() -> None:
    result = convert_rule(source("hash list"), Options(splunk_data_model="windows-security"))
    assert "splunk" not in result.queries
    assert "file_executable_detected" in result.errors["splunk"]


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_executed_target_agrees_with_its_label(name: str, exact: bool) -> None:
    proof = measure(source(name), Options(exact=exact), now=NOW)
    ran = executed(proof)
    if not exact:  # --exact keeps a hash test case-sensitive, as the original asks it
        assert ran["kusto"].label == CASES[name][3]
    assert not disagreements(ran)


def test_a_deleted_file_keeps_its_own_hash_fields() -> None:
    query = f"DeviceFileEvents | where ActionType == 'FileDeleted' and SHA256 == '{SHA256[0]}'"
    result = convert_rule(SourceRule(path="deleted.kql", kql=query, name="Deleted"), Options())
    document = yaml.safe_load(result.yaml)
    assert document["logsource"]["category"] == "file_delete"
    assert document["detection"] == selection(sha256=SHA256[0])


def test_a_renamed_file_has_no_hash_field_and_is_refused() -> None:
    why = refused(f"DeviceFileEvents | where ActionType == 'FileRenamed' and SHA256 == '{SHA256[0]}'")
    assert "SHA256 has no field in Sigma's file_rename category" in why


def test_a_query_that_keeps_a_file_event_test_stays_a_file_event() -> None:
    """The fallback is for a query file_event keeps nothing of; a kept test stays (the hash is left out)."""
    query = f"DeviceFileEvents | where SHA256 == '{SHA256[0]}' and FolderPath startswith @'C:\\Users\\'"
    result = convert_rule(SourceRule(path="kept.kql", kql=query, name="Kept"), Options())
    assert yaml.safe_load(result.yaml)["logsource"]["category"] == "file_event"
    assert any("SHA256 has no field in Sigma's file_event category" in note for note in result.notes)


def test_a_file_query_without_hash_that_keeps_nothing_is_refused_as_before() -> None:
    why = refused("DeviceFileEvents | where FileOriginIP == '203.0.113.5'")  # no fallback has it either
    assert "FileOriginIP has no field in Sigma's file_event category" in why


def test_a_union_of_process_and_file_events_gives_both_rules() -> None:
    query = HASHES + (
        "union DeviceProcessEvents, DeviceFileEvents, DeviceImageLoadEvents\n| where SHA256 in (hashes)"
    )
    rules, failures = convert_rules(SourceRule(path="union.kql", kql=query, name="Union Hashes"), Options())
    assert not failures, failures
    categories = [yaml.safe_load(rule.yaml)["logsource"]["category"] for rule in rules]
    assert categories == ["process_creation", "file_executable_detected", "image_load"]
    for rule in rules:
        assert yaml.safe_load(rule.yaml)["detection"] == selection(sha256=list(SHA256))


@pytest.mark.usefixtures("offline")
def test_every_rule_passes_sigmahq_validators(tmp_path: Path) -> None:
    rules = {name: converted(name) for name in CASES}
    assert len({rule.filename for rule in rules.values()}) == len(CASES)
    issues = sigmahq_issues(tmp_path / "rules", rules)
    assert issues == [], issues[0]


def test_the_kusto_queries_are_valid_for_kusto_language() -> None:
    assert_valid_kusto([converted(name).queries["kusto"] for name in sorted(CASES)])
