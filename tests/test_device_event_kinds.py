"""Tests of DeviceEvents read with no ActionType test (every kind of event), cut by kind.

No Sigma log source holds every kind of DeviceEvents. Unless every test is on the process that acts
(then the process's creation stands for it, ``test_acting_process``), such a read becomes one rule
per kind whose Sigma log source has a field for each column it tests: the query with
``ActionType in (<the kinds>)`` after its table, linked by ``related`` like a union's branches.
Kinds with no such log source are read by no rule, so every label is approximate and the notes say
so; each rule's proof compares it with the query cut to its kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import Verified
from rmm2sigma.convert import InputResult, convert_input, rule_sources
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule

TARGET_AND_ACTOR = 'DeviceEvents\n| where FileName =~ "lsass.exe" and InitiatingProcessFileName =~ "evil.exe"'
SEVERAL = (
    "DeviceEvents\n| where ActionType in~ ('NamedPipeEvent', 'DnsQueryResponse')"
    " and InitiatingProcessFileName =~ 'evil.exe'"
)
HASHES = "DeviceEvents\n| where Timestamp > ago(7d)\n| where SHA256 in ('aa11', 'bb22')"
SWEEP = (
    "let iocs = print h = dynamic(['aa11', 'bb22']) | mv-expand x = h | distinct tostring(x);\n"
    "union withsource=TableName Device*\n| where SHA256 in (iocs)"
)


def converted(text: str, name: str = "kinds.kql") -> InputResult:
    return convert_input(name, Options(), data=text.encode())


def test_a_read_of_every_kind_is_one_rule_per_kind_whose_log_source_holds_its_columns() -> None:
    result = converted(TARGET_AND_ACTOR)
    assert result.status == "converted"
    sources = {
        tuple(sorted(yaml.safe_load(rule.yaml)["logsource"].items())): yaml.safe_load(rule.yaml)
        for rule in result.rules
    }
    categories = {dict(key).get("category") or dict(key)["service"] for key in sources}
    assert categories == {"create_remote_thread", "process_access", "windefend"}
    assert len({rule.title for rule in result.rules}) == len(result.rules)
    for rule in result.rules:
        assert set(rule.fidelity_by_target.values()) == {"approximate"}, rule.fidelity_by_target
        assert any("no single Sigma log source" in note and "read by no rule" in note for note in rule.notes)
        assert re.match(r"\| where \(?ActionType ", rule.queries["kusto"].split("\n")[1])
        others = {other.rule_id for other in result.rules} - {rule.rule_id}
        assert {related["id"] for related in yaml.safe_load(rule.yaml)["related"]} == others


def test_the_rule_ids_are_stable_and_the_proof_parts_match_the_rules() -> None:
    first, second = converted(TARGET_AND_ACTOR), converted(TARGET_AND_ACTOR)
    assert [r.rule_id for r in first.rules] == [r.rule_id for r in second.rules]
    parts = rule_sources(SourceRule(path="kinds.kql", kql=TARGET_AND_ACTOR))
    assert len(parts) == len(first.rules)
    assert all("ActionType in~ (" in part.kql for part in parts)


def test_a_hash_of_every_kind_is_a_driver_load_rule() -> None:
    (rule,) = converted(HASHES).rules
    assert yaml.safe_load(rule.yaml)["logsource"] == {"product": "windows", "category": "driver_load"}
    assert rule.fidelity_by_target["sigma"] == "approximate"


def test_a_union_branch_of_every_kind_is_cut_too_and_the_other_branches_stay() -> None:
    result = converted(SWEEP, "sweep.kql")
    assert result.status == "converted"
    categories = sorted(yaml.safe_load(rule.yaml)["logsource"].get("category") for rule in result.rules)
    assert "driver_load" in categories and "process_creation" in categories
    kinds = [rule for rule in result.rules if any("read by no rule" in n for n in rule.notes)]
    assert [yaml.safe_load(rule.yaml)["logsource"]["category"] for rule in kinds] == ["driver_load"]


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("DeviceEvents | where FileName =~ 'a' or InitiatingProcessSHA256 == 'aa11'", "no ActionType test"),
        ("DeviceEvents | where ActionType in ('NamedPipeEvent', 'SmartScreenUrlWarning')", "SmartScreenUrl"),
    ],
)
def test_what_no_cut_can_hold_stays_refused_naming_why(query: str, why: str) -> None:
    """Columns no kind's log source holds; a kind with no log source among those named."""
    result = converted(query)
    assert result.status == "failed" and why in (result.error or "")


ASR_BLOCKED = "DeviceEvents\n| where ActionType startswith 'Asr' and ActionType endswith 'Blocked'"
INJECTION = (  # FireEye's and FalconFriday's injection hunts: one kind has a log source, two have none
    "DeviceEvents\n| where ActionType in ('CreateRemoteThreadApiCall', 'QueueUserApcRemoteApiCall',"
    " 'SetThreadContextRemoteApiCall')\n| where InitiatingProcessFileName =~ 'evil.exe'"
)


def test_kinds_named_with_no_log_source_fail_as_a_part_and_the_others_convert() -> None:
    """As a union branch of a table with no log source does: the input is partial, the kinds
    with no log source named at the query's ActionType test, the other kinds' rule approximate
    (it reads less than the query)."""
    result = converted(INJECTION)
    assert result.status == "partial" and "QueueUserApcRemoteApiCall, SetThreadContextRemoteApiCall" in (
        result.error or ""
    )
    assert "kinds.kql:2:9:" in (result.error or "") and "no log source" in (result.error or "")
    (rule,) = result.rules
    assert yaml.safe_load(rule.yaml)["logsource"]["category"] == "create_remote_thread"
    assert rule.fidelity_by_target["sigma"] == "approximate"


@pytest.mark.parametrize(
    ("query", "rules", "measured"),
    [(TARGET_AND_ACTOR, 6, 4), (SEVERAL, 2, 2), (ASR_BLOCKED, 1, 1), (INJECTION, 1, 1)],
)
def test_verify_holds_every_cut_to_its_measurement(
    convert_and_verify: Callable[..., Verified], query: str, rules: int, measured: int
) -> None:
    done = convert_and_verify("kinds.kql", query, "kusto,eql")
    assert len(done.proofs) == rules
    for proof in done.proofs:
        assert not proof["error"] and not proof["report_problems"], proof
    ran = [p for p in done.proofs if p["original"] > 0]
    assert len(ran) >= measured and all(p["targets"]["kusto"]["agrees"] for p in ran)


@pytest.mark.usefixtures("offline")
def test_every_rule_passes_sigmahq_validators(tmp_path: Path) -> None:
    from rmm2sigma.sigmahq import check_rules

    for rule in converted(TARGET_AND_ACTOR).rules:
        logsource = yaml.safe_load(rule.yaml)["logsource"]
        folder = tmp_path / "rules" / "windows" / (logsource.get("category") or logsource["service"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / rule.filename).write_text(rule.yaml, encoding="utf-8")
    assert [str(issue) for issue in check_rules([tmp_path / "rules"])] == []


def test_an_action_type_test_naming_kinds_of_several_log_sources_is_a_rule_per_log_source() -> None:
    """Together the rules read what the query reads: labels stay the ones each cut measures."""
    result = converted(SEVERAL)
    assert result.status == "converted"
    categories = [yaml.safe_load(rule.yaml)["logsource"]["category"] for rule in result.rules]
    assert categories == ["pipe_created", "dns_query"]
    for rule in result.rules:
        assert any("with its related rules it selects what the query selects" in n for n in rule.notes)
        assert rule.fidelity_by_target["kusto"] == "exact"  # `in~` the category's one kind, written back
        assert not any("was left out" in note for note in rule.notes)  # the query's test is implied


def test_an_action_type_prefix_is_cut_into_the_log_sources_of_the_kinds_it_names() -> None:
    result = converted("DeviceEvents | where ActionType startswith 'Asr' and FileName =~ 'cmd.exe'")
    documents = [yaml.safe_load(rule.yaml) for rule in result.rules]
    assert [d["logsource"]["service"] for d in documents] == ["windefend", "windefend"]
    assert sorted(d["detection"]["selection"]["EventID"] for d in documents) == [1121, 1122]
    for rule in result.rules:  # a kind this mapping does not know is read by no rule
        assert set(rule.fidelity_by_target.values()) == {"approximate"}


def test_several_action_type_tests_cut_into_the_kinds_they_all_hold_on() -> None:
    """`startswith "Asr"` and `endswith "Blocked"`: the blocked ASR kinds only (event 1121)."""
    (rule,) = converted(ASR_BLOCKED).rules
    assert yaml.safe_load(rule.yaml)["detection"]["selection"] == {"EventID": 1121}
    kinds = re.findall(r'"(Asr\w+)"', rule.queries["kusto"])
    assert kinds and all(kind.endswith("Blocked") for kind in kinds)
    assert set(rule.fidelity_by_target.values()) == {"approximate"}
