"""Semi-joins become Sigma temporal correlations: ``join kind=leftsemi``/``rightsemi`` and a
``K in (sub-query)`` test report the keys an inner join does. Their labels are held to those keys
(``rmm2sigma.verify.temporal``: duckdb-kql runs the original and the kusto query, pysigma-backend-sqlite
the correlation); the rest (anti joins, ``!in``, an ``in`` under ``or``, keys with no Sigma field)
keep the one-sided rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import rmm2sigma.verify.temporal as proof_module
from conftest import Verified, assert_valid_kusto, held_groups, sigmahq_issues
from rmm2sigma.convert import RuleResult, convert_rules
from rmm2sigma.sigma import Options
from rmm2sigma.sigmahq import safe_documents
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.groups import keeps_promise
from rmm2sigma.verify.temporal import prove, verdicts

NOW = datetime(2026, 11, 20, 12, 0, 0)

# after a left semi join only the left side's columns exist: the test after it filters that side
LEFT = """DeviceProcessEvents
| where Timestamp > ago(1d) and FileName =~ "spoolsv.exe"
| join kind=leftsemi (DeviceNetworkEvents | where Timestamp > ago(1d) | where RemotePort == 445) on DeviceName
| where ProcessCommandLine contains "-k"
| project Timestamp, DeviceName, ProcessCommandLine"""

# a right semi join returns the right side's rows: the test after it reads the right's RemoteIP
RIGHT = """DeviceProcessEvents
| where Timestamp > ago(1d) and FileName =~ "spoolsv.exe"
| join kind=rightsemi (DeviceNetworkEvents | where Timestamp > ago(1d) | where RemotePort == 445)
    on DeviceName
| where RemoteIP startswith "10."
| project Timestamp, DeviceName, RemoteIP"""

# `K in (tabular let)`: the semi-join of the let's one column
IN_LET = """let Senders = DeviceNetworkEvents | where Timestamp > ago(1d) and RemotePort == 445
    | distinct DeviceName;
DeviceProcessEvents
| where Timestamp > ago(1d) and FileName =~ "spoolsv.exe" and DeviceName in (Senders)"""

# an inline sub-query summarized by a column of another name: $left.AccountName == $right.<it>
IN_QUERY = """DeviceProcessEvents
| where Timestamp > ago(1d) and FileName =~ "whoami.exe"
| where AccountName in ((DeviceNetworkEvents | where Timestamp > ago(1d) | where RemotePort == 3389
    | summarize by InitiatingProcessAccountName))"""

# `in~` through materialize(): the keys compared without case
CASELESS = """let Admins = materialize(DeviceNetworkEvents | where Timestamp > ago(1d)
    | where RemotePort == 3389 | project InitiatingProcessAccountName);
DeviceProcessEvents
| where Timestamp > ago(1d) and FileName =~ "whoami.exe" and AccountName in~ (Admins)"""

CORRELATED = {"left": LEFT, "right": RIGHT, "in_let": IN_LET, "in_query": IN_QUERY, "caseless": CASELESS}


def _rule(text: str, path: str = "semi.kql") -> RuleResult:
    source = SourceRule(path=path, kql=text, name=Path(path).stem.replace("_", " "))
    (rule,), errors = convert_rules(source, Options())
    assert not errors and not rule.errors
    return rule


def _documents(rule: RuleResult) -> list[dict[str, Any]]:
    (correlation, *bases) = [d for d in safe_documents(rule.yaml) if d]
    assert [base["name"] for base in bases] == correlation["correlation"]["rules"]
    return [correlation, *bases]


def _proven(text: str, rule: RuleResult) -> dict[str, str]:
    """The measured verdict of each target over four seeds, each held to the rule's label."""
    found: dict[str, str] = {}
    keys = 0
    for seed in range(4):
        proof = prove(SourceRule(path="semi.kql", kql=text), Options(), NOW, seed=seed)
        keys += len(proof.original)
        assert not proof.not_executed
        for target, (verdict, _) in verdicts(proof).items():
            assert keeps_promise(rule.fidelity_by_target[target], verdict), (target, verdict, seed)
            found[target] = verdict if found.get(target) in (None, verdict) else "mixed"
    assert keys, "the dealt rows give the original no key"
    return found


def test_a_left_semi_join_is_a_temporal_correlation_and_later_tests_filter_the_left() -> None:
    rule = _rule(LEFT)
    correlation, left, right = _documents(rule)
    assert correlation["correlation"] == {
        "type": "temporal",
        "rules": ["proc_creation_win_semi_left", "proc_creation_win_semi_right"],
        "group-by": ["Computer"],
        "timespan": "1d",
    }
    assert rule.filename == "correlation_proc_creation_win_semi.yml"
    assert left["detection"]["selection"]["CommandLine|contains"] == "-k"
    assert right["logsource"]["category"] == "network_connection"
    assert rule.fidelity_by_target == {
        "sigma": "widened",  # a backend may group the keys without case (sqlite does)
        "kusto": "exact",
        "splunk": "exact",
        "esql": "exact",
        "lucene": "widened",  # the left side's events
        "eql": "widened",  # a sample without a time bound
    }
    assert "| join kind=leftsemi (" in rule.queries["kusto"]
    assert _proven(LEFT, rule)["kusto"] == "exact"  # sigma: widened where the dealt keys differ in case


def test_a_right_semi_join_returns_the_right_sides_keys() -> None:
    rule = _rule(RIGHT)
    _, left, right = _documents(rule)
    assert "DestinationIp|startswith" in right["detection"]["selection"]
    assert "DestinationIp|startswith" not in str(left["detection"])
    assert "| join kind=rightsemi (" in rule.queries["kusto"]
    assert rule.fidelity_by_target["kusto"] == "exact" and rule.fidelity_by_target["sigma"] == "widened"
    assert _proven(RIGHT, rule)["kusto"] == "exact"


@pytest.mark.parametrize(("text", "group_by"), [(IN_LET, "Computer"), (IN_QUERY, "User")])
def test_an_in_sub_query_is_a_left_semi_join(text: str, group_by: str) -> None:
    rule = _rule(text)
    correlation, left, right = _documents(rule)
    assert correlation["correlation"]["group-by"] == [group_by]
    assert left["logsource"]["category"] == "process_creation"
    assert right["logsource"]["category"] == "network_connection"
    assert not any("rows of another query" in note for note in rule.notes)  # the test is the join
    assert any("becomes a Sigma temporal correlation" in note for note in rule.notes)
    assert rule.fidelity_by_target["sigma"] == "widened" and rule.fidelity_by_target["kusto"] == "exact"
    assert " in (\nDeviceNetworkEvents" in rule.queries["kusto"]  # kusto keeps the `in` test
    assert _proven(text, rule)["kusto"] == "exact"


def test_a_caseless_in_is_grouped_without_case_where_the_target_can(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = _rule(CASELESS)
    assert " in~ (" in rule.queries["kusto"]
    assert rule.fidelity_by_target["sigma"] == "exact" and rule.fidelity_by_target["kusto"] == "exact"
    for target in ("splunk", "esql", "eql"):  # they group with case: the left side's events
        assert rule.fidelity_by_target[target] == "widened"
        assert any(note.startswith(f"{target} cannot group keys without case") for note in rule.notes)
        assert "sample" not in rule.queries[target] and "dc(event_type)" not in rule.queries[target]
    assert _proven(CASELESS, rule) == {"sigma": "exact", "kusto": "exact"}

    # the dealt keys differ in case: a kusto query comparing with case (`in`) misses some of them
    convert = proof_module.convert_rules

    def cased(*args: Any, **kwargs: Any) -> Any:
        (converted,), errors = convert(*args, **kwargs)
        kusto = converted.queries["kusto"].replace(" in~ (", " in (")
        return (replace(converted, queries={**converted.queries, "kusto": kusto}),), errors

    monkeypatch.setattr(proof_module, "convert_rules", cased)
    measured = {
        verdicts(prove(SourceRule(path="semi.kql", kql=CASELESS), Options(), NOW, seed=seed))["kusto"][0]
        for seed in range(4)
    }
    assert "narrowed" in measured, measured


@pytest.mark.parametrize(
    "text",
    [
        # an anti join reports the keys with no match on the other side
        "DeviceProcessEvents | where FileName =~ 'a.exe' | join kind=leftanti (DeviceNetworkEvents "
        "| where RemotePort == 1) on DeviceName",
        # `!in` is an anti join, and so is a negated `in`
        "DeviceProcessEvents | where FileName =~ 'a.exe' and DeviceName !in (DeviceNetworkEvents "
        "| where RemotePort == 1 | distinct DeviceName)",
        "DeviceProcessEvents | where FileName =~ 'a.exe' and not(DeviceName in (DeviceNetworkEvents "
        "| where RemotePort == 1 | distinct DeviceName))",
        # under `or` the test is no semi-join
        "DeviceProcessEvents | where ProcessCommandLine has 'x' and (FileName =~ 'a.exe' or DeviceName in "
        "(DeviceNetworkEvents | where RemotePort == 1 | distinct DeviceName))",
        # a sub-query of a whole table, or of two columns
        "DeviceProcessEvents | where FileName =~ 'a.exe' and DeviceName in (DeviceNetworkEvents "
        "| distinct DeviceName)",
        "DeviceProcessEvents | where FileName =~ 'a.exe' and DeviceName in (DeviceNetworkEvents "
        "| where RemotePort == 1 | summarize count() by DeviceName)",
        # keys with no Sigma field on both sides (a file name, which Sigma holds in a whole path;
        # a digest): no group-by, and SigmaHQ refuses a correlation without one
        "DeviceProcessEvents | where FileName =~ 'rundll32.exe' and InitiatingProcessFileName in~ "
        "(DeviceNetworkEvents | where RemoteUrl has 'googleapis.com' | distinct InitiatingProcessFileName)",
        "DeviceProcessEvents | where FileName =~ 'a.exe' | join kind=leftsemi (DeviceFileEvents "
        "| where FolderPath startswith @'C:\\Temp') on FileName",
        "DeviceNetworkEvents | where RemoteUrl has 'dwservice.net' and InitiatingProcessSHA1 in "
        "(DeviceFileCertificateInfo | where Signer has 'DWSNET' | distinct Sha1)",
    ],
)
def test_other_semi_and_anti_forms_keep_the_one_sided_rule(text: str) -> None:
    rule = _rule(text)
    assert "type: temporal" not in rule.yaml and not any("temporal" in note for note in rule.notes)


def test_an_in_list_of_a_datatable_is_still_a_value_list() -> None:
    rule = _rule(
        "let Names = datatable(Name: string)['a.exe', 'b.exe'];\n"
        "DeviceProcessEvents | where FileName in~ ((Names | distinct Name))"
    )
    assert "type: temporal" not in rule.yaml
    assert set(rule.document["detection"]["selection"]["Image|endswith"]) == {"\\a.exe", "\\b.exe"}


def test_the_rules_pass_sigmahq_checks(tmp_path: Path) -> None:
    rules = {name: _rule(text, f"{name}.kql") for name, text in CORRELATED.items()}
    assert sigmahq_issues(tmp_path, rules) == []


def test_the_kusto_queries_are_valid_for_kusto_language() -> None:
    assert_valid_kusto([_rule(text).queries["kusto"] for text in CORRELATED.values()])


def test_verify_holds_the_labels_of_an_in_test(convert_and_verify: Callable[..., Verified]) -> None:
    done = convert_and_verify("senders.kql", IN_LET, "kusto,splunk,eql")
    # sigma: the dealt keys differing in case, which sqlite pairs
    assert held_groups(done) == {"sigma": "widened", "kusto": "exact"}
