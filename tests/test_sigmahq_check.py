"""SigmaHQ's rule checks, run offline on rule files (rmm2sigma.sigmahq)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmm2sigma.sigmahq import (
    ATTACK_TAG_CHECK,
    EXCLUDED_VALIDATORS,
    PARSE_ERROR,
    RuleIssue,
    active_validators,
    check_attack_tags,
    check_rules,
    seed_validator_data,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

GOOD_NAME = "proc_creation_win_remote_access_tools_supremo.yml"

GOOD_RULE = """\
title: Remote Access Tool - Supremo Execution
id: 5c1f1b0e-6f43-4a8e-9d3b-2f7c8a9e4b11
status: experimental
description: Detects the execution of the Supremo remote access tool based on its company metadata.
references:
    - https://www.supremocontrol.com/
author: rmm2sigma
date: 2025-01-15
tags:
    - attack.command-and-control
    - attack.t1219
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Company|contains: 'NanoSystems'
    condition: selection
falsepositives:
    - Legitimate use of Supremo by administrators
level: medium
"""


pytestmark = pytest.mark.usefixtures("offline")  # conftest: no downloads, an empty cache


def write_rule(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def validators_of(issues: list[RuleIssue]) -> set[str]:
    return {issue.validator for issue in issues}


def test_excluded_validators_exist_and_are_not_run() -> None:
    from sigma.plugins import InstalledSigmaPlugins

    installed = InstalledSigmaPlugins.autodiscover(include_backends=False, include_pipelines=False)
    assert set(installed.validators) >= EXCLUDED_VALIDATORS
    running = set(active_validators())
    assert running == set(installed.validators) - EXCLUDED_VALIDATORS
    # Both families run: pySigma core and SigmaHQ.
    assert {"identifier_uniqueness", "sigmahq_filename_prefix", "sigmahq_invalid_fieldname"} <= running


def test_seeding_is_offline_and_idempotent(tmp_path: Path) -> None:
    from sigma.validators.sigmahq.data import data_filename, data_taxonomy

    # The loaders serve their data through a module __getattr__ (read from the cache on each access).
    seed_validator_data(tmp_path / "seed")
    first = getattr(data_taxonomy, "sigmahq_taxonomy_fieldsname")  # noqa: B009
    seed_validator_data(tmp_path / "seed")
    assert getattr(data_taxonomy, "sigmahq_taxonomy_fieldsname") == first  # noqa: B009
    assert "Company" in first["windows_process_creation_None"]
    prefixes = getattr(data_filename, "sigmahq_filename_pattern")  # noqa: B009
    assert prefixes["windows_process_creation_None"] == "proc_creation_win_"


def test_conforming_rule_has_no_issues(tmp_path: Path) -> None:
    write_rule(tmp_path, GOOD_NAME, GOOD_RULE)
    assert check_rules([tmp_path]) == []


def test_single_file_path_is_accepted(tmp_path: Path) -> None:
    assert check_rules([write_rule(tmp_path, GOOD_NAME, GOOD_RULE)]) == []


def test_field_outside_taxonomy_is_flagged(tmp_path: Path) -> None:
    text = GOOD_RULE.replace("category: process_creation", "category: network_connection")
    write_rule(tmp_path, "net_connection_win_remote_access_tools_supremo.yml", text)
    issues = check_rules([tmp_path])
    assert validators_of(issues) == {"sigmahq_invalid_fieldname"}, issues
    assert "field=Company" in issues[0].description


def test_filename_prefix_must_match_logsource(tmp_path: Path) -> None:
    write_rule(tmp_path, "net_connection_win_remote_access_tools_supremo.yml", GOOD_RULE)
    issues = check_rules([tmp_path])
    assert validators_of(issues) == {"sigmahq_filename_prefix"}, issues
    assert "prefix=proc_creation_win_" in issues[0].description


def test_filename_convention(tmp_path: Path) -> None:
    write_rule(tmp_path, "proc_creation_win_Supremo-RAT.yml", GOOD_RULE)
    issues = check_rules([tmp_path])
    assert validators_of(issues) == {"sigmahq_filename_convention"}, issues


def test_url_in_description_is_flagged(tmp_path: Path) -> None:
    # SigmaHQ only objects when the link stands in for the references list, i.e. there is none.
    text = GOOD_RULE.replace(
        "its company metadata.", "its company metadata, see https://www.supremocontrol.com/."
    ).replace("references:\n    - https://www.supremocontrol.com/\n", "")
    write_rule(tmp_path / "without_references", GOOD_NAME, text)
    issues = check_rules([tmp_path / "without_references"])
    assert validators_of(issues) == {"sigmahq_link_in_description"}, issues

    text = GOOD_RULE.replace("its company metadata.", "its company metadata, see https://example.com/.")
    write_rule(tmp_path / "with_references", GOOD_NAME, text)
    assert check_rules([tmp_path / "with_references"]) == []


def test_bad_tactic_tag_is_flagged_by_own_check(tmp_path: Path) -> None:
    write_rule(tmp_path, GOOD_NAME, GOOD_RULE.replace("attack.command-and-control", "attack.remote-access"))
    issues = check_rules([tmp_path])
    # Only our check sees it: a technique without tactic, and a tactic that does not exist.
    assert validators_of(issues) == {ATTACK_TAG_CHECK}, issues
    assert any("attack.remote-access" in issue.description for issue in issues)


def test_malformed_technique_tag_is_flagged(tmp_path: Path) -> None:
    write_rule(tmp_path, GOOD_NAME, GOOD_RULE.replace("attack.t1219", "attack.t1219.1"))
    issues = check_rules([tmp_path])
    assert validators_of(issues) == {ATTACK_TAG_CHECK}, issues


def test_unparsable_yaml_is_reported_and_others_still_checked(tmp_path: Path) -> None:
    broken = write_rule(tmp_path / "b", "proc_creation_win_broken.yml", "title: [unclosed\nid: x\n")
    write_rule(tmp_path / "a", GOOD_NAME, GOOD_RULE.replace("its company", "its  company"))
    write_rule(tmp_path / "c", "net_connection_win_other.yml", GOOD_RULE)
    issues = check_rules([tmp_path])
    assert [issue.path for issue in issues if issue.validator == PARSE_ERROR] == [str(broken)]
    # The good rules were still validated (the third one has a bad prefix and duplicates the others).
    assert "sigmahq_filename_prefix" in validators_of(issues)


def test_invalid_sigma_is_reported_as_parse(tmp_path: Path) -> None:
    write_rule(tmp_path, GOOD_NAME, GOOD_RULE.replace("condition: selection", "condition: selection and"))
    issues = check_rules([tmp_path])
    assert validators_of(issues) == {PARSE_ERROR}, issues


def test_uniqueness_checks_span_all_files(tmp_path: Path) -> None:
    write_rule(tmp_path / "one", GOOD_NAME, GOOD_RULE)
    write_rule(tmp_path / "two", "proc_creation_win_remote_access_tools_supremo_copy.yml", GOOD_RULE)
    issues = check_rules([tmp_path])
    assert {"identifier_uniqueness", "duplicate_title"} <= validators_of(issues)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["attack.command-and-control", "attack.t1219"], 0),
        (["attack.defense-evasion", "attack.stealth", "attack.t1036.005", "attack.g0016", "attack.s0029"], 0),
        (["cve.2021-44228", "detection.threat-hunting"], 0),
        (["attack.command_and_control", "attack.t1219"], 2),  # not a tactic, so technique has none
        (["attack.execution", "attack.t1059.1"], 1),
        (["attack.execution", "attack.T1059"], 1),
        (["attack.t1219"], 1),
    ],
)
def test_check_attack_tags(tags: list[str], expected: int) -> None:
    assert len(check_attack_tags(tags)) == expected, check_attack_tags(tags)


def test_repository_rules_pass_sigmahq_checks() -> None:
    rules_dir = REPO_ROOT / "sigma_rules"
    if not rules_dir.is_dir():
        pytest.skip(f"{rules_dir} does not exist yet (no generated Sigma rules to check)")
    if not any(rules_dir.rglob("*.yml")):
        pytest.skip(f"{rules_dir} contains no .yml rules yet")
    issues = check_rules([rules_dir])
    for issue in issues:
        print(issue)
    assert issues == [], f"{len(issues)} SigmaHQ issue(s), first: {issues[0]}"
