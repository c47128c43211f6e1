"""Thresholds after summarize as Sigma correlation rules: lowering, the YAML, each target, the labels
and the proof on groups (duckdb-kql for KQL, pysigma-backend-sqlite for the Sigma correlation)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaRule

from conftest import Verified
from rmm2sigma import kql, targets
from rmm2sigma.convert import RuleResult, convert_input, convert_rule, defender_schema
from rmm2sigma.correlation import plan
from rmm2sigma.fidelity import CASELESS_DISTINCT, agrees, target_fidelity
from rmm2sigma.kql.lower import lower
from rmm2sigma.mapping import MappedRule, map_detection
from rmm2sigma.model import And, Detection, Match, Opaque
from rmm2sigma.sigma import Options
from rmm2sigma.sigmahq import check_rules
from rmm2sigma.sources import read_source
from rmm2sigma.verify.groups import group_verdicts, keeps_promise, prove, stats_groups
from rmm2sigma.verify.kusto_language import kusto_available, validate_kql
from rmm2sigma.verify.proof import verdict

OPTIONS = Options(date=dt.date(2026, 1, 1))
NOW = dt.datetime(2026, 11, 30, 12, 0, 0)
HOURLY = """DeviceProcessEvents
| where Timestamp > ago(1d)
| where FileName =~ "net.exe" and ProcessCommandLine has "user"
| summarize Count=count() by DeviceName, bin(Timestamp, 1h)
| where Count > 3"""
WINDOW = """DeviceProcessEvents
| where Timestamp > ago(7d)
| where FileName =~ "net.exe"
| summarize count() by DeviceName, AccountName
| where count_ >= 4"""
DISTINCT = """DeviceProcessEvents
| where Timestamp > ago(1d)
| where FileName in~ ("taskkill.exe", "net.exe")
| summarize Killed=dcount(tostring(ProcessCommandLine)), Commands=make_set(ProcessCommandLine)
    by DeviceId, DeviceName, bin(Timestamp, 1h)
| where Killed > 2"""
SET_LENGTH = """DeviceNetworkEvents
| where Timestamp > ago(1d)
| where RemoteUrl endswith ".tk"
| summarize make_set(RemoteUrl, 100) by DeviceName, bin(Timestamp, 10m)
| extend domainCount = array_length(set_RemoteUrl)
| where domainCount >= 3
| extend HostName = tolower(DeviceName)"""
RANGE_DISTINCT = """DeviceNetworkEvents
| where Timestamp > ago(7d)
| where InitiatingProcessFileName =~ "net.exe"
| summarize Addresses=dcount(RemoteIP) by DeviceName
| where Addresses > 4"""
SENTINEL_TIME = HOURLY.replace("bin(Timestamp, 1h)", "bin(TimeGenerated, 1h)")  # Sentinel's copy
# distinct paths of files whose name the filter tests: a dealt path keeps its name its last part
DISTINCT_PATHS = """DeviceFileEvents
| where FolderPath has "\\\\" and FileName endswith ".exe"
| summarize Files = dcount(FolderPath) by DeviceName, bin(TimeGenerated, 10m)
| where Files > 4"""
NETWORK = """DeviceNetworkEvents
| where RemoteUrl has "anydesk"
| summarize count() by DeviceName, InitiatingProcessFileName
| where count_ >= 4"""


def _lower(text: str) -> Detection:
    return lower(kql.parse(text), defender_schema())


def _mapped(text: str) -> MappedRule:
    return map_detection(_lower(text), schema=defender_schema())


def _convert(text: str, name: str = "threshold.kql") -> RuleResult:
    return convert_rule(read_source(name, text.encode()), OPTIONS)


# ---------------------------------------------------------------- lowering


@pytest.mark.parametrize(
    ("tail", "name", "function", "match", "value"),
    [
        ("summarize count() by DeviceName | where count_ > 5", "count_", "count", Match.GT, 5),
        ("summarize n=count() by DeviceName | where n >= 5", "n", "count", Match.GTE, 5),
        ("summarize n=count() by DeviceName | where 5 < n", "n", "count", Match.GT, 5),
        ("summarize n=count() by DeviceName | where n > limit", "n", "count", Match.GT, 7),
        (
            "summarize dcount(ProcessCommandLine) by DeviceName | where dcount_ProcessCommandLine > 2",
            "dcount_ProcessCommandLine",
            "dcount",
            Match.GT,
            2,
        ),
    ],
)
def test_threshold_shapes_lower(tail: str, name: str, function: str, match: Match, value: int) -> None:
    detection = _lower(f"let limit = 7; DeviceProcessEvents | where FileName =~ 'x.exe' | {tail}")
    assert detection.aggregation is not None and detection.aggregation.having is not None
    having = detection.aggregation.having
    assert (having.function.name, having.function.function) == (name, function)
    assert (having.match, having.value) == (match, value)


def test_bin_gives_the_buckets_and_is_no_group_column() -> None:
    detection = _lower(DISTINCT)
    assert detection.aggregation is not None
    assert detection.aggregation.bin == dt.timedelta(hours=1)
    assert detection.aggregation.by == ("DeviceId", "DeviceName")
    assert detection.window == dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("summarize n=count() by DeviceName | where n < 5", "only `>` and `>=` convert"),
        ("summarize n=count() by DeviceName | where n == 5", "only `>` and `>=` convert"),
        ("summarize m=min(Timestamp) by DeviceName | where m > 5", "threshold on `min()`"),
        ("summarize n=count() by DeviceName | where DeviceName has 'x'", "compare a count with a number"),
        ("summarize n=count() by DeviceName | where n > 1 | where n > 2", "only one threshold"),
        ("summarize n=count() by DeviceName | where n > 1.5", "whole number"),
        ("summarize n=count() by bin(DeviceName, 1h) | where n > 1", "only `bin()` of the event time"),
        (
            "summarize n=count() by DeviceName | where n > 1 | summarize count()",
            "summarize of a summary",
        ),
    ],
)
def test_thresholds_no_correlation_can_keep_are_left_out_widening(tail: str, message: str) -> None:
    """Without the filter after summarize (and what follows) every group is reported: wider."""
    detection = _lower(f"DeviceProcessEvents | where FileName =~ 'x.exe' | {tail}")
    assert isinstance(detection.predicate, And)
    left_out = detection.predicate.items[-1]
    assert isinstance(left_out, Opaque) and message in left_out.reason, left_out
    kept = detection.aggregation.having if detection.aggregation else None
    assert kept is None or (kept.match, kept.value) == (Match.GT, 1)  # only an earlier threshold stays


def test_time_buckets_without_a_threshold_only_shape_the_summary() -> None:
    detection = _lower(
        "DeviceProcessEvents | where FileName =~ 'x.exe' | summarize n=count() by bin(Timestamp, 1h)"
    )
    assert detection.aggregation is not None and detection.aggregation.bin is None
    assert any("`bin(Timestamp, 1h)` of the summary are left out" in note for note in detection.notes)


def test_a_rare_threshold_is_left_out_with_its_location() -> None:
    result = convert_input(
        "rare.kql",
        OPTIONS,
        data=b"DeviceProcessEvents\n| where FileName =~ 'x.exe'\n| summarize count() by SHA1"
        b"\n| where count_ < 5",
    )
    assert result.status == "converted" and [r.fidelity.value for r in result.rules] == ["approximate"]
    notes = result.rules[0].notes
    assert any("only `>` and `>=` convert (query line 4, column 3)" in note for note in notes), notes


# ---------------------------------------------------------------- the Sigma files


def test_one_file_holds_the_correlation_and_its_base_rule() -> None:
    rule = _convert(HOURLY)
    collection = SigmaCollection.from_yaml(rule.yaml)
    kinds = [type(item) for item in collection.rules]
    assert sorted(k.__name__ for k in kinds) == ["SigmaCorrelationRule", "SigmaRule"]
    correlation = next(r for r in collection.rules if isinstance(r, SigmaCorrelationRule))
    base = next(r for r in collection.rules if isinstance(r, SigmaRule))
    assert correlation.type.name.lower() == "event_count"
    assert correlation.group_by == ["Computer"]
    assert correlation.timespan.spec == "1h"
    assert correlation.condition.op.name.lower() == "gt" and correlation.condition.count == 3
    assert correlation.rules[0].rule is base and not correlation.generate
    assert base.name == "proc_creation_win_threshold" and str(base.id) == rule.rule_id
    assert rule.filename == "correlation_proc_creation_win_threshold.yml"
    assert rule.yaml.startswith("title: ") and rule.yaml == _convert(HOURLY).yaml  # stable ids


def test_value_count_names_the_counted_field() -> None:
    correlation = SigmaCollection.from_yaml(_convert(DISTINCT).yaml).rules
    rule = next(r for r in correlation if isinstance(r, SigmaCorrelationRule))
    assert rule.type.name.lower() == "value_count"
    assert rule.condition.fieldref == "CommandLine"
    assert rule.group_by == ["Computer"]  # DeviceId has no Sigma field: left out, noted


@pytest.mark.parametrize("text", [HOURLY, WINDOW, DISTINCT, SET_LENGTH, NETWORK])
def test_correlation_files_pass_the_sigmahq_checks(tmp_path: Path, text: str) -> None:
    rule = _convert(text)
    path = tmp_path / rule.category / rule.filename
    path.parent.mkdir()
    path.write_text(rule.yaml, encoding="utf-8")
    assert [str(issue) for issue in check_rules([tmp_path])] == []


# ---------------------------------------------------------------- targets and labels


def test_each_target_counts_once() -> None:
    rule = _convert(HOURLY)
    assert rule.queries["kusto"].endswith(
        "| summarize Count=count() by DeviceName, bin(Timestamp, 1h)\n| where Count > 3"
    )
    splunk = rule.queries["splunk"]
    assert "| bin _time span=1h" in splunk and splunk.count("| stats") == 1
    assert "by _time Computer" in splunk and "event_count > 3" in splunk
    esql = rule.queries["esql"]
    assert esql.count("| stats") == 1 and "date_trunc(1hours" in esql and "event_count > 3" in esql
    assert "with maxspan=1h" in rule.queries["eql"] and "runs=" in rule.queries["eql"]
    # the device is Winlogbeat's host.name, not an event data field no Windows event holds
    assert esql.endswith(", host.name\n| where event_count > 3")
    assert "sequence by host.name " in rule.queries["eql"]
    filter_only = _convert(HOURLY.rsplit("\n| summarize", 1)[0])
    assert rule.queries["lucene"] == filter_only.queries["lucene"]  # the base rule's events
    assert rule.fidelity_by_target == {
        "sigma": "approximate",
        "kusto": "widened",
        "splunk": "widened",
        "lucene": "widened",
        "esql": "widened",
        "eql": "approximate",
    }
    assert any("is not expressible in lucene" in note for note in rule.notes)


def test_a_window_instead_of_bin_counts_once_over_the_whole_range() -> None:
    """Without bin() the original counts once over its time range: splunk and esql do the same."""
    rule = _convert(WINDOW)
    assert "timespan: 7d" in rule.yaml
    splunk, esql = rule.queries["splunk"], rule.queries["esql"]
    assert splunk.startswith("earliest=-7d ") and splunk.count("stats") == 1 and "bin _time" not in splunk
    assert "| stats count as event_count by Computer User\n" in splunk
    assert "| where @timestamp >= NOW() - 7days | stats event_count=count() by " in esql
    assert "date_trunc" not in esql and "timebucket" not in esql
    assert rule.fidelity_by_target["kusto"] == "exact"
    assert rule.fidelity_by_target["splunk"] == "exact" == rule.fidelity_by_target["esql"]
    assert not any("fixed 7d buckets" in note for note in rule.notes)
    assert any(note.startswith("splunk: the count runs once over the last 7d") for note in rule.notes)
    assert not any(note.startswith("esql: the time window is not part") for note in rule.notes)


def test_without_a_time_range_splunk_and_esql_count_over_what_hunting_keeps() -> None:
    rule = _convert(NETWORK)
    assert rule.queries["splunk"].startswith("earliest=-30d ") and "bin _time" not in rule.queries["splunk"]
    assert "NOW() - 30days | stats event_count=count() by host.name" in rule.queries["esql"]
    # InitiatingProcessFileName has no Sigma field to group by: coarser groups
    assert rule.fidelity_by_target["splunk"] == "approximate" == rule.fidelity_by_target["esql"]


def test_eql_returns_every_event_for_a_distinct_count() -> None:
    rule = _convert(DISTINCT)
    filter_only = _convert(DISTINCT.split("\n| summarize", 1)[0])
    assert rule.queries["eql"] == filter_only.queries["eql"] and "eql" not in rule.errors
    assert "dcount(ProcessCommandLine)" in rule.queries["kusto"] and "value_count" in rule.queries["splunk"]
    assert any("DeviceId have no Sigma field to group by" in note for note in rule.notes)
    assert any(note.startswith("eql: the threshold `Killed > 2` counts distinct") for note in rule.notes)
    # every event of every group, as lucene; the Sigma count can lose a group (declared)
    assert rule.fidelity_by_target["eql"] == "widened" == rule.fidelity_by_target["lucene"]
    assert rule.fidelity_by_target["sigma"] == "approximate"
    assert any("holds only with case variants counted apart" in note for note in rule.notes)


def test_the_length_of_a_set_is_a_distinct_count() -> None:
    rule = _convert(SET_LENGTH)
    assert rule.queries["kusto"].endswith(
        "| summarize set_RemoteUrl=make_set(RemoteUrl) by DeviceName, bin(Timestamp, 10m)\n"
        "| extend domainCount = array_length(set_RemoteUrl)\n| where domainCount >= 3"
    )
    correlation = next(
        r for r in SigmaCollection.from_yaml(rule.yaml).rules if isinstance(r, SigmaCorrelationRule)
    )
    assert correlation.type.name.lower() == "value_count"
    assert correlation.condition.fieldref == "DestinationHostname" and correlation.condition.count == 3
    assert any("`HostName=tolower(DeviceName)` is not part of a Sigma rule" in n for n in rule.notes)
    assert any("size limit of `make_set(RemoteUrl, 100)`" in note for note in rule.notes)


def test_eql_returns_every_event_for_a_threshold_of_one_event() -> None:
    """pySigma would write `with runs=1`, which is no EQL: the base rule's events instead."""
    rule = _convert(WINDOW.replace("count_ >= 4", "count_ > 1"))
    assert rule.queries["eql"] == _convert(WINDOW.rsplit("\n| summarize", 1)[0]).queries["eql"]
    assert rule.fidelity_by_target["eql"] == "widened" and "eql" not in rule.errors
    assert "with runs=4" in _convert(WINDOW).queries["eql"]  # `>= 4`: at least four events


# ---------------------------------------------------------------- the proof on groups


@pytest.mark.parametrize(
    "text", [HOURLY, WINDOW, DISTINCT, SET_LENGTH, NETWORK, RANGE_DISTINCT, SENTINEL_TIME, DISTINCT_PATHS]
)
def test_group_labels_agree_with_measurement(text: str) -> None:
    """Every target's label on groups holds: kusto, the Sigma correlation (sqlite) and eql executed,
    splunk and esql through their aggregation tails (``stats_groups``) over the base rule's events."""
    proof = prove(read_source("threshold.kql", text.encode()), OPTIONS, NOW)
    assert 0 < len(proof.original) < proof.groups  # the threshold splits the generated groups
    assert proof.kusto == proof.original
    labels = _convert(text).fidelity_by_target
    measured = group_verdicts(proof)
    assert set(measured) == {"kusto", "sigma", "eql", "splunk", "esql"}
    disagreements = {
        target: (labels[target], found)
        for target, (found, explained) in measured.items()
        if not keeps_promise(labels[target], found, explained)
    }
    assert not disagreements
    assert proof.splunk is not None and proof.esql is not None
    assert proof.splunk >= proof.original_kept and proof.esql >= proof.original_kept


@pytest.mark.parametrize("text", [WINDOW, NETWORK, RANGE_DISTINCT])
def test_a_group_straddling_a_bucket_boundary_is_kept(text: str) -> None:
    """Without bin() one dealt group passes the threshold only counted over the whole range: its
    events lie on both sides of a boundary of pySigma's fixed `stats` buckets. Every target keeps
    it; the bucketed rendering (`correlation_method="stats"`, what splunk and esql shipped before)
    loses it, so the measurement tells the two apart."""
    proof = prove(read_source("threshold.kql", text.encode()), OPTIONS, NOW)
    assert proof.straddling is not None and proof.plan is not None
    key = proof.straddling
    assert proof.splunk is not None and proof.esql is not None
    assert key in proof.original_kept and key in proof.splunk and key in proof.esql
    caseless = tuple(value.lower() for value in key)
    assert caseless in proof.sigma and proof.eql is not None and caseless in proof.eql
    rule = _convert(text)
    for target in ("splunk", "esql"):
        bucketed = targets.backend(target).convert(
            SigmaCollection.from_yaml(rule.yaml), correlation_method="stats"
        )
        assert "bin _time" in bucketed[0] or "date_trunc" in bucketed[0]
        groups = stats_groups(target, bucketed[0], list(proof.base_events), proof.plan, NOW)
        assert key not in groups, target


def test_distinct_values_differing_in_case_are_the_declared_loss_of_sigma_value_count() -> None:
    """The counted URLs come in case variants: SQLite counts them once and misses a group. The
    label is approximate with that loss declared, and the proof checks every missed group is one
    the declared cause explains (its values, compared without case, fail the threshold)."""
    proof = prove(read_source("threshold.kql", SET_LENGTH.encode()), OPTIONS, NOW)
    assert 0 < len(proof.original) < proof.groups and proof.kusto == proof.original
    missed = proof.original_as_sigma - proof.sigma
    assert ("host-cased",) in missed and not proof.sigma_unexplained  # the group dealt for it
    measured = verdict(set(proof.original_as_sigma), set(proof.sigma))
    labels = target_fidelity(_mapped(SET_LENGTH), ("sigma",))
    assert labels["sigma"].label == "approximate" and CASELESS_DISTINCT in labels["sigma"].losses
    assert any("counts values differing only in case once" in note for note in labels["sigma"].notes)
    assert agrees("approximate", measured, declared_loss=True)
    assert not agrees("approximate", measured)  # undeclared, the same loss breaks the promise


def test_a_loss_the_declared_cause_does_not_explain_stays_a_disagreement() -> None:
    """The exception is narrow: a missed group whose values differ even without case, or any
    missed group of an event count, is unexplained."""
    from rmm2sigma.verify.groups import _unexplained

    mapped = _mapped(SET_LENGTH)
    chosen = plan(mapped)
    aggregation = mapped.detection.aggregation
    assert chosen is not None and aggregation is not None
    moment = dt.datetime(2026, 11, 30, 11, 5)

    def row(host: str, url: str) -> dict[str, object]:
        return {"DeviceName": host, "RemoteUrl": url, "Timestamp": moment}

    rows = [row("a", "x.tk"), row("a", "X.TK"), row("a", "y.tk"), row("b", "x.tk"), row("b", "y.tk")]
    rows += [row("b", "z.tk")]  # b: three values without case, `>= 3` holds
    assert _unexplained({("a",), ("b",)}, rows, chosen, aggregation) == {("b",)}
    counted = plan(_mapped(HOURLY))
    hourly = _mapped(HOURLY).detection.aggregation
    assert counted is not None and hourly is not None
    assert _unexplained({("a",)}, [], counted, hourly) == {("a",)}


def test_emitted_kql_is_valid_for_kusto_language() -> None:
    """Microsoft's own parser accepts every emitted summarize/extend/where over the Defender schema."""
    if not kusto_available():
        pytest.skip("Kusto.Language not installed (needs node and `npm ci --prefix tools/kusto`)")
    shapes = (HOURLY, WINDOW, DISTINCT, SET_LENGTH, NETWORK)
    diagnostics = validate_kql([_convert(text).queries["kusto"] for text in shapes])
    assert [[d.message for d in found if d.is_error] for found in diagnostics] == [[]] * len(shapes)


def test_verify_holds_the_base_rule_on_rows_and_the_labels_on_groups(
    convert_and_verify: Callable[..., Verified],
) -> None:
    """``rmm2sigma verify`` holds the base rule's labels on rows and the report's on groups."""
    done = convert_and_verify("taskkill.kql", DISTINCT, "kusto,splunk")
    rules = done.out / "sigma_rules" / "process_creation"
    assert (rules / "correlation_proc_creation_win_taskkill.yml").exists()
    (rule,) = done.proofs
    assert rule["threshold"] == "Killed > 2" and not rule["report_problems"]
    assert any(note.startswith("sigma: labelled approximate on the groups") for note in rule["notes"])
    # the group labels are held to the group measurement
    assert set(rule["groups"]) == {"sigma", "kusto", "splunk"}
    assert all(group["agrees"] for group in rule["groups"].values()), rule["groups"]
    assert "groups: " in done.output


def test_failed_logons_per_device_are_counted_by_kusto_and_held_to_their_groups() -> None:
    """The Security log's failed logons: kusto says the kind back (no empty query) and counts as
    the original; eql's query tests the event channel, which the proof's ECS events carry."""
    text = (
        "DeviceLogonEvents\n| where ActionType == 'LogonFailed'\n"
        "| summarize Failures = dcount(AccountName) by DeviceName, bin(Timestamp, 10m)\n| where Failures >= 3"
    )
    result = _convert(text)
    assert result.queries["kusto"].startswith('DeviceLogonEvents\n| where ActionType =~ "LogonFailed"')
    proof = prove(read_source("threshold.kql", text.encode()), OPTIONS, NOW)
    measured = group_verdicts(proof)
    assert proof.original and measured["kusto"] == ("exact", False)
    assert "eql" in measured and "eql" not in proof.not_executed
    for target, (found, explained) in measured.items():
        assert keeps_promise(result.fidelity_by_target[target], found, explained), target


def test_a_group_of_events_without_a_number_key_is_the_declared_loss_of_sigma_and_splunk() -> None:
    """Kusto's summary reports the events with no InitiatingProcessId as a group of their own;
    Splunk's `stats ... by` and the Sigma backend (sqlite) drop them. sigma and splunk are labelled
    approximate with that loss declared, and the proof checks every group they miss is such a group
    or one the value_count's case loss explains (seeds 0 to 2 deal a null process id, which passes
    `!in (0, 4)` in Kusto, into a group that passes the threshold)."""
    text = (
        "DeviceNetworkEvents\n| where RemotePort == 445 and Timestamp > ago(7d)\n"
        "| where InitiatingProcessId !in (0, 4)\n| summarize RemoteIPCount = dcount(RemoteIP)\n"
        "    by DeviceName, InitiatingProcessFileName, InitiatingProcessId\n"
        "| where RemoteIPCount > 10"
    )
    result = _convert(text)
    for target in ("sigma", "splunk"):
        assert result.fidelity_by_target[target] == "approximate"
        assert any(note.startswith(f"{target}: events with no ProcessId value") for note in result.notes)
    assert result.fidelity_by_target["kusto"] == "exact"
    null_groups = 0
    for seed in range(3):
        proof = prove(read_source("threshold.kql", text.encode()), OPTIONS, NOW, seed=seed)
        missed = proof.original_as_sigma - proof.sigma
        null_groups += sum(None in key for key in missed)
        assert not proof.sigma_unexplained  # each other missed group is a value_count's case variants
        for target, (found, explained) in group_verdicts(proof).items():
            assert keeps_promise(result.fidelity_by_target[target], found, explained), (seed, target, found)
    assert null_groups  # the loss happened, and was explained


def test_two_inputs_of_one_correlation_are_merged_not_a_crash(tmp_path: Path) -> None:
    """A correlation file holds several documents; merging a duplicate into it once read it as
    one and stopped the whole batch with a traceback. Every document keeps its keys."""
    from rmm2sigma.convert import convert_all
    from rmm2sigma.sigmahq import safe_documents

    paths = []
    for folder in ("a", "b"):  # one title: the file name
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "threshold.kql").write_text(HOURLY, encoding="utf-8")
        paths.append(str(tmp_path / folder / "threshold.kql"))
    first, second = convert_all(paths, OPTIONS)
    (kept,) = first.rules
    assert second.rules == () and any("merged into it" in warning for warning in second.warnings)
    alone = [dict(document) for document in safe_documents(convert_all(paths[:1], OPTIONS)[0].rules[0].yaml)]
    assert [dict(document) for document in safe_documents(kept.yaml)] == alone
