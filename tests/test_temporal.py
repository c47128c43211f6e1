"""A join of two filters becomes a Sigma temporal correlation; its labels are held to the keys the
original join reports (``rmm2sigma.verify.temporal``: duckdb-kql runs the original and the kusto
join, pysigma-backend-sqlite the correlation)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Verified, assert_valid_kusto, corpus, held_groups, kusto_errors, sigmahq_issues
from rmm2sigma.convert import RuleResult, convert_all, convert_rules
from rmm2sigma.errors import Rmm2SigmaError
from rmm2sigma.sigma import Options
from rmm2sigma.sigmahq import safe_documents
from rmm2sigma.sources import SourceRule, read_source
from rmm2sigma.verify.groups import keeps_promise
from rmm2sigma.verify.kusto_language import kusto_available
from rmm2sigma.verify.temporal import prove, verdicts

NOW = datetime(2026, 11, 20, 12, 0, 0)

SPOOLER = """DeviceProcessEvents
| where Timestamp > ago(1d)
| where FileName =~ "spoolsv.exe"
| join kind=inner (DeviceNetworkEvents | where Timestamp > ago(1d) | where RemotePort == 445) on DeviceName
| project Timestamp, DeviceName, FileName"""

# the device's id has no Sigma field: its name stands for it (approximate)
BY_ID = """let Connections = DeviceNetworkEvents
| where RemotePort in (4444, 8443) | project DeviceId, RemoteIP;
DeviceProcessEvents
| where ProcessCommandLine has "-enc"
| join kind=inner Connections on DeviceId"""

# the right side has no time range: the correlation spans 30 days on both (wider)
RANGES = """DeviceProcessEvents
| where Timestamp > ago(1d) and FileName =~ "certutil.exe"
| join (DeviceFileEvents | where FolderPath endswith ".exe")
    on DeviceName, $left.AccountName == $right.RequestAccountName"""

# a summary by the key keeps every key; the filter after the join is left out (wider)
SUMMARY = """DeviceNetworkEvents
| where Timestamp > ago(7d) and RemotePort == 3389
| summarize Connections = count() by DeviceName
| join kind=inner (DeviceProcessEvents | where Timestamp > ago(7d) | where FileName =~ "mstsc.exe")
    on DeviceName
| where Connections > 1"""

# a key both sides compute as the event time's bucket: the correlation's timespan
BUCKETED = """let timeframe = 1h;
DeviceProcessEvents
| where ProcessCommandLine contains "New-MailboxExportRequest"
| summarize by DeviceName, timekey = bin(Timestamp, timeframe), AccountName
| join kind=inner (DeviceProcessEvents | where ProcessCommandLine contains "Remove-MailboxExportRequest"
    | summarize by DeviceName, timekey = bin(Timestamp, timeframe), AccountName)
    on DeviceName, timekey, AccountName"""

# the tests after a join read the right side's columns (FileName1: the right's FileName, which the
# left's shadows): they are the right side's filter; the test reading both sides is left out
PUSHED = """DeviceImageLoadEvents
| where Timestamp > ago(1d) and InitiatingProcessFileName =~ "spoolsv.exe"
| extend LoadTime = Timestamp
| distinct DeviceName, LoadTime, FileName
| join kind=inner DeviceProcessEvents on DeviceName
| where InitiatingProcessFileName =~ "spoolsv.exe" and FileName1 in~ ("whoami.exe", "net.exe")
| where Timestamp > ago(1d) and Timestamp > LoadTime"""

# a test bounding how far apart the sides' times are: the timespan; a let constant kusto writes in place
NEAR = """let gap = 10min;
DeviceProcessEvents
| where Timestamp > ago(1d)
| where InitiatingProcessFileName in~ ("winword.exe", "excel.exe")
| where FileName in~ ("cmd.exe", "powershell.exe")
| project DeviceName, ShellTime = Timestamp
| join kind=inner (DeviceNetworkEvents | where Timestamp > ago(1d) | where RemotePort in (80, 443))
    on DeviceName
| where (Timestamp - ShellTime) between (0min .. gap)"""

# the keys have different Sigma fields: an alias, which pySigma's esql and eql backends lack
ALIASED = """DeviceFileEvents
| where Timestamp > ago(7d) and FileName endswith ".dll"
| join kind=inner (DeviceImageLoadEvents | where Timestamp > ago(7d)
    | where InitiatingProcessFileName =~ "rundll32.exe") on FolderPath"""


def _rule(text: str, path: str = "join.kql") -> RuleResult:
    source = SourceRule(path=path, kql=text, name=Path(path).stem.replace("_", " "))
    (rule,), errors = convert_rules(source, Options())
    assert not errors
    return rule


def _correlation(rule: RuleResult) -> dict[str, Any]:
    (document, *bases) = [d for d in safe_documents(rule.yaml) if d]
    assert [base["name"] for base in bases] == document["correlation"]["rules"]
    return dict(document["correlation"])


def _proven(text: str, rule: RuleResult) -> dict[str, str]:
    """The measured verdict of each target over three seeds, each held to the rule's label."""
    found: dict[str, str] = {}
    for seed in range(3):
        proof = prove(SourceRule(path="join.kql", kql=text), Options(), NOW, seed=seed)
        assert proof.original, "the dealt rows give the original join no key"
        for target, (verdict, _) in verdicts(proof).items():
            assert keeps_promise(rule.fidelity_by_target[target], verdict), (target, verdict, seed)
            found[target] = verdict if found.get(target) in (None, verdict) else "mixed"
    return found


def test_a_join_on_the_device_name_is_a_temporal_correlation() -> None:
    rule = _rule(SPOOLER)
    assert _correlation(rule) == {
        "type": "temporal",
        "rules": ["proc_creation_win_join_left", "proc_creation_win_join_right"],
        "group-by": ["Computer"],
        "timespan": "1d",
    }
    assert set(rule.queries) == {"kusto", "splunk", "lucene", "esql", "eql"} and not rule.errors
    assert rule.fidelity_by_target == {
        "sigma": "widened",  # a backend may group the keys without case (sqlite does)
        "kusto": "exact",
        "splunk": "exact",
        "esql": "exact",
        "lucene": "widened",  # the left side's events: lucene cannot correlate
        "eql": "widened",  # a sample without a time bound
    }
    assert "| join kind=inner (" in rule.queries["kusto"]
    assert "stats dc(event_type)" in rule.queries["splunk"] and "| bin" not in rule.queries["splunk"]
    assert rule.queries["eql"].startswith("sample by")
    proven = _proven(SPOOLER, rule)
    assert proven["kusto"] == "exact" and proven["sigma"] in ("widened", "mixed")  # keys differing in case


def test_the_device_id_is_grouped_by_the_device_name_approximately() -> None:
    rule = _rule(BY_ID)
    assert _correlation(rule)["group-by"] == ["Computer"]
    assert rule.fidelity_by_target["sigma"] == "approximate"
    assert rule.fidelity_by_target["kusto"] == "widened"  # `has` as contains; the join is DeviceId's
    assert any("DeviceId has no Sigma field" in note for note in rule.notes)
    assert _proven(BY_ID, rule)["kusto"] == "exact"


def test_sides_of_different_ranges_span_the_longer_one() -> None:
    rule = _rule(RANGES)
    correlation = _correlation(rule)
    assert correlation["timespan"] == "30d" and correlation["group-by"] == ["Computer", "User"]
    assert any("different time ranges" in note for note in rule.notes)
    assert rule.fidelity_by_target["splunk"] != "exact"
    _proven(RANGES, rule)


def test_a_summary_by_the_key_is_the_filter_and_a_later_filter_widens() -> None:
    rule = _rule(SUMMARY)
    assert _correlation(rule)["group-by"] == ["Computer"]
    assert any("Connections > 1" in note and "left out" in note for note in rule.notes)
    assert rule.fidelity_by_target["sigma"] == "widened"
    assert "summarize" not in rule.queries["kusto"]
    _proven(SUMMARY, rule)


def test_keys_of_different_fields_are_aliased_where_the_backend_can() -> None:
    rule = _rule(ALIASED)
    correlation = _correlation(rule)
    (alias,) = correlation["group-by"]
    assert set(correlation["aliases"][alias].values()) == {"TargetFilename", "ImageLoaded"}
    assert f"as {alias}" in rule.queries["splunk"]
    for target in ("esql", "eql"):  # no alias in pySigma's Elastic backends: the left side's events
        assert "sample" not in rule.queries[target] and "count_distinct" not in rule.queries[target]
        assert any(note.startswith(f"{target} cannot correlate fields") for note in rule.notes)
    _proven(ALIASED, rule)


def test_a_time_bucket_key_is_the_timespan() -> None:
    rule = _rule(BUCKETED)
    correlation = _correlation(rule)
    assert correlation["group-by"] == ["Computer", "User"] and correlation["timespan"] == "1h"
    assert rule.fidelity_by_target["kusto"] == "exact" and rule.fidelity_by_target["splunk"] == "exact"
    assert rule.fidelity_by_target["sigma"] == "widened"  # sliding windows pair neighbouring buckets
    assert "bin(Timestamp, 1h)" in rule.queries["kusto"] and "bin _time span=1h" in rule.queries["splunk"]
    assert _proven(BUCKETED, rule)["kusto"] == "exact"


def test_tests_after_the_join_filter_the_side_whose_columns_they_read() -> None:
    rule = _rule(PUSHED)
    right = [d for d in safe_documents(rule.yaml) if d][2]
    assert right["logsource"]["category"] == "process_creation"
    assert right["detection"]["selection"]["ParentImage|endswith"] == "\\spoolsv.exe"
    assert set(right["detection"]["selection"]["Image|endswith"]) == {"\\whoami.exe", "\\net.exe"}
    assert any("Timestamp > LoadTime" in note and "left out" in note for note in rule.notes)
    # kusto keeps the test of both sides' times, in the columns of its join of the two rules
    assert rule.queries["kusto"].endswith("| where Timestamp1 > Timestamp")
    assert rule.fidelity_by_target["kusto"] == "exact"
    assert _proven(PUSHED, rule) == {"sigma": "widened", "kusto": "exact"}  # sigma: either order


def test_a_bound_on_the_time_between_the_sides_is_the_timespan() -> None:
    rule = _rule(NEAR)
    assert _correlation(rule)["timespan"] == "10m"
    assert rule.queries["kusto"].endswith("| where Timestamp1 - Timestamp between (0min .. 10min)")
    assert rule.fidelity_by_target["kusto"] == "exact"
    assert rule.fidelity_by_target["sigma"] == "widened"  # in either order
    assert "NOW() - 1days" in rule.queries["esql"]  # counted over the range, not the last 10 minutes
    assert _proven(NEAR, rule)["kusto"] == "exact"


@pytest.mark.parametrize(
    ("bound", "timespan"),
    [
        ("abs(datetime_diff('minute', Timestamp, Timestamp1)) <= 30", "30m"),
        ("datetime_diff('second', Timestamp1, Timestamp) between (-90 .. 90)", "90s"),
        ("Timestamp1 between (Timestamp .. datetime_add('hour', 2, Timestamp))", "2h"),
        ("Timestamp1 > Timestamp", "1d"),  # bounded one way only: the range
    ],
)
def test_the_time_gap_a_test_bounds_both_ways_is_the_timespan(bound: str, timespan: str) -> None:
    query = (
        "DeviceProcessEvents | where Timestamp > ago(1d) | where FileName =~ 'vssadmin.exe'\n"
        "| join kind=inner (DeviceProcessEvents | where Timestamp > ago(1d)"
        f" | where FileName =~ 'bcdedit.exe') on DeviceName\n| where {bound}"
    )
    rule = _rule(query)
    assert _correlation(rule)["timespan"] == timespan
    assert rule.queries["kusto"].endswith(f"| where {bound}")  # kusto keeps the test itself
    assert rule.fidelity_by_target["kusto"] == "exact"


@pytest.mark.parametrize(
    "text",
    [
        # a left outer join only adds columns; a right anti join returns the right side's unmatched rows
        "DeviceProcessEvents | where FileName =~ 'a.exe' | join kind=leftouter (DeviceNetworkEvents "
        "| where RemotePort == 1) on DeviceName",
        "DeviceProcessEvents | where FileName =~ 'a.exe' | join kind=rightanti (DeviceNetworkEvents "
        "| where RemotePort == 1) on DeviceName",
        # a threshold on a side would be a correlation of correlations
        "DeviceProcessEvents | where FileName =~ 'a.exe' | summarize n = count() by DeviceName | where n > 5 "
        "| join kind=inner (DeviceNetworkEvents | where RemotePort == 1) on DeviceName",
        # a key computed on a side is no column
        "DeviceProcessEvents | where FileName =~ 'a.exe' | extend Host = tolower(DeviceName) "
        "| join kind=inner (DeviceNetworkEvents | where RemotePort == 1 | extend Host = DeviceName) on Host",
        # a time bucket on one side only
        "DeviceProcessEvents | where FileName =~ 'a.exe' | summarize by DeviceName, t = bin(Timestamp, 1h) "
        "| join kind=inner (DeviceNetworkEvents | where RemotePort == 1 | extend t = Timestamp) "
        "on DeviceName, t",
        # the right side is a whole table: the join only asks that the device has any event there
        "DeviceProcessEvents | where FileName =~ 'a.exe' | join kind=inner DeviceNetworkEvents on DeviceName",
    ],
)
def test_other_joins_keep_the_one_sided_rule(text: str) -> None:
    rule = _rule(text)
    assert "type: temporal" not in rule.yaml and not any("temporal" in note for note in rule.notes)


def test_the_rules_pass_sigmahq_checks(tmp_path: Path) -> None:
    names = (
        "spooler",
        "encoded",
        "certutil",
        "remote_desktop",
        "mailbox_export",
        "library",
        "spool_child",
        "shell",
    )
    texts = (SPOOLER, BY_ID, RANGES, SUMMARY, BUCKETED, ALIASED, PUSHED, NEAR)
    rules = {name: _rule(text, f"{name}.kql") for name, text in zip(names, texts, strict=True)}
    assert sigmahq_issues(tmp_path, rules) == []


def test_the_kusto_join_is_valid_for_kusto_language() -> None:
    texts = (SPOOLER, BY_ID, RANGES, SUMMARY, BUCKETED, ALIASED, PUSHED, NEAR)
    assert_valid_kusto([_rule(text).queries["kusto"] for text in texts])


def test_verify_holds_the_labels_on_the_joins_keys(convert_and_verify: Callable[..., Verified]) -> None:
    done = convert_and_verify("spooler.kql", SPOOLER, "kusto,splunk,eql")
    # sigma: the dealt keys differing in case, which sqlite pairs
    assert held_groups(done) == {"sigma": "widened", "kusto": "exact"}


@pytest.mark.corpus
def test_every_held_out_join_correlation_keeps_its_promise() -> None:
    """Defender hunting queries whose join becomes a temporal correlation: each label held to the
    keys measured; a proof says nothing only where the original pairs no generated rows."""
    measured, vacuous, queries = 0, [], []
    for path in sorted(corpus("azure-sentinel-defender").glob("*.yaml")):
        source = read_source(str(path))
        if "join" not in source.kql:
            continue
        try:
            rules, _ = convert_rules(source, Options())
        except Rmm2SigmaError:
            continue
        for rule in (rule for rule in rules if "type: temporal" in rule.yaml):
            queries.append(rule.queries["kusto"])
            proof = prove(source, Options(), NOW)
            if not proof.original:
                vacuous.append(path.name)
                continue
            for target, (verdict, _) in verdicts(proof).items():
                assert keeps_promise(rule.fidelity_by_target[target], verdict), (path.name, target, verdict)
            measured += 1
    assert measured >= 6, measured  # 6 of the 8 joins converted so today
    # and Possible-webshell-drop's right semi join of a filter with itself, whose many left-out tests
    # (a computed extension, the kinds, fewer than 3 files in 5 minutes) no dealt row meets
    assert len(vacuous) <= 3, vacuous
    if kusto_available():  # Microsoft's parser binds every kusto join against the Defender schema
        assert kusto_errors(queries) == [[]] * len(queries)


def test_deployed_rules_say_the_correlation_and_read_both_log_sources(tmp_path: Path) -> None:
    """Deployable files name the correlation (not a side), the Sentinel rule needs both tables, and
    the Elastic rules get no one category's event filter (which would drop the other rule's events,
    and break an EQL sample)."""
    import eql

    from rmm2sigma.formats import select
    from rmm2sigma.report import write_outputs
    from rmm2sigma.targets import TARGETS

    query = tmp_path / "in" / "spooler.kql"
    query.parent.mkdir()
    query.write_text(SPOOLER, encoding="utf-8")
    selection = select([], TARGETS)
    results = convert_all([str(query)], Options(), list(selection))
    write_outputs(results, tmp_path / "out", list(selection), deploy=selection)
    deploy = tmp_path / "out" / "deploy"
    (sentinel,) = (deploy / "kusto" / "sentinel").glob("*.yaml")
    (document,) = safe_documents(sentinel.read_text(encoding="utf-8"))
    assert document["name"] == "Spooler"
    tables = document["requiredDataConnectors"][0]["dataTypes"]
    assert tables == ["DeviceProcessEvents", "DeviceNetworkEvents"]
    (sample,) = [json.loads(line) for line in (deploy / "eql" / "rules.ndjson").open()]
    assert sample["name"] == "Spooler" and sample["query"].startswith("sample by")
    with eql.parser.elasticsearch_syntax, eql.parser.ignore_missing_functions, eql.parser.allow_sample:
        eql.parse_query(sample["query"])  # valid EQL, not `process where ... and (sample ...)`
    (esql,) = [json.loads(line) for line in (deploy / "esql" / "rules.ndjson").open()]
    assert "event.category" not in esql["query"] and "count_distinct(event_type)" in esql["query"]
