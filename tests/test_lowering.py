"""Lowering and mapping of one KQL construct at a time: the Sigma detection, its label and its note.

Each case is a whole query converted by ``convert_rule``, so what is asserted is what a user gets.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml

from rmm2sigma import kql
from rmm2sigma.convert import convert_rule, defender_schema
from rmm2sigma.errors import UnsupportedKqlError
from rmm2sigma.kql import syntax as k
from rmm2sigma.kql.lower import lower
from rmm2sigma.model import And, Opaque, Predicate
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.kusto_language import kusto_available, validate_kql
from rmm2sigma.verify.proof import measure

PROCESS = "DeviceProcessEvents\n| where "
NETWORK = "DeviceNetworkEvents\n| where "


def converted(query: str, exact: bool = False) -> tuple[dict[str, Any], str, tuple[str, ...], dict[str, Any]]:
    """The rule's logsource and detection, the Sigma rule's label, its notes and its target queries."""
    result = convert_rule(SourceRule(path="case.kql", kql=query), Options(exact=exact))
    document = yaml.safe_load(result.yaml)
    rule = {"logsource": document["logsource"], "detection": document["detection"]}
    return rule, result.fidelity_by_target["sigma"], result.notes, {**result.queries, **result.errors}


def not_converted(query: str) -> str:
    """The message of a query that lowers but keeps no Sigma test, as ``convert_rule`` gives it."""
    with pytest.raises(UnsupportedKqlError) as error:
        convert_rule(SourceRule(path="case.kql", kql=query), Options())
    return str(error.value)


def refused(query: str) -> str:
    with pytest.raises(UnsupportedKqlError) as error:
        lower(kql.parse(query), defender_schema())
    return str(error.value)


# ---------------------------------------------------------------- time and presentation


@pytest.mark.parametrize(
    ("bound", "window"),
    [
        ("Timestamp > ago(7d)", timedelta(days=7)),
        ("Timestamp >= ago(1h)", timedelta(hours=1)),
        ("ago(2d) < Timestamp", timedelta(days=2)),
        ("Timestamp between (ago(3d) .. now())", timedelta(days=3)),
        ("TimeGenerated > ago(30m)", timedelta(minutes=30)),
    ],
)
def test_a_time_bound_becomes_the_window(bound: str, window: timedelta) -> None:
    detection = lower(kql.parse(PROCESS + bound + " and FileName =~ 'a.exe'"), defender_schema())
    assert detection.window == window
    assert detection.notes == ()


def test_ingestion_time_bound_and_a_json_column_parsed_in_place() -> None:
    """FalconFriday's shape: ``ingestion_time() >= ago(2h)`` bounds when rows were stored, which
    becomes the window with a note; ``extend AdditionalFields = parse_json(AdditionalFields)``
    parses the column in place, and a key read through it is the key of the column. The rule is
    the one of the query written out plainly (whose form test_device_event_keys proves)."""
    query = (
        "DeviceEvents\n| where ingestion_time() >= ago(2h)\n| where ActionType == 'NamedPipeEvent'\n"
        "| extend AdditionalFields = parse_json(AdditionalFields)\n"
        "| extend PipeName = tostring(AdditionalFields.PipeName)\n| where PipeName contains 'msagent_'"
    )
    written_out = (
        "DeviceEvents\n| where Timestamp >= ago(2h)\n| where ActionType == 'NamedPipeEvent'\n"
        "| where parse_json(AdditionalFields).PipeName contains 'msagent_'"
    )
    rule, label, notes, _ = converted(query)
    assert (rule, label) == converted(written_out)[:2]
    assert rule["detection"]["selection"] == {"PipeName|contains": "msagent_"}
    assert any("ingestion_time()" in note for note in notes), notes
    assert lower(kql.parse(query), defender_schema()).window == timedelta(hours=2)


def test_sentinel_time_column_is_a_column_of_every_defender_table_anywhere_in_the_query() -> None:
    """Sentinel stores the Defender tables with TimeGenerated beside Timestamp: a summary, a
    projection or a bin of it reads a column of the table."""
    query = PROCESS + (
        "FileName =~ 'a.exe'\n| project TimeGenerated, DeviceId\n"
        "| summarize First = min(TimeGenerated) by DeviceId, bin(TimeGenerated, 5m)"
    )
    detection = lower(kql.parse(query), defender_schema())
    assert detection.table == "DeviceProcessEvents" and detection.predicate is not None
    assert "unknown column" in refused(PROCESS + "FileName =~ 'a.exe' | summarize min(Generated) by DeviceId")


def test_let_constants_and_the_narrowest_bound_make_the_window() -> None:
    query = (
        "let lookback = 7d;\nlet start = ago(2d);\n"
        + PROCESS
        + ("Timestamp > ago(lookback) and Timestamp > start and FileName =~ 'a.exe'")
    )
    assert lower(kql.parse(query), defender_schema()).window == timedelta(days=2)


@pytest.mark.parametrize(
    "bound",
    [
        "Timestamp > datetime(2021-03-01)",
        "Timestamp < ago(1d)",
        "Timestamp between (datetime(2021-03-01) .. datetime(2021-03-05))",
    ],
)
def test_a_bound_that_is_not_relative_to_now_is_a_note_to_schedule_it(bound: str) -> None:
    detection = lower(kql.parse(PROCESS + bound + " and FileName =~ 'a.exe'"), defender_schema())
    assert detection.window is None
    assert any("schedule" in note and bound.split(" ")[0] in note for note in detection.notes)


def test_a_time_bound_inside_or_widens_the_or_and_says_where() -> None:
    rule, label, notes, _ = converted(
        PROCESS + "ProcessCommandLine has 'x' and (FileName =~ 'a.exe' or Timestamp > ago(1d))"
    )
    assert rule["detection"]["selection"] == {"CommandLine|contains": "x"}
    assert label == "approximate"
    assert any("time filter" in note and "query line 2, column 64" in note for note in notes), notes
    message = not_converted(PROCESS + "FileName =~ 'a.exe' or Timestamp > ago(1d)")
    assert message.startswith("case.kql:2:9: no condition") and "time filter" in message


def test_shaping_operators_are_dropped_with_a_note_and_take_says_what_it_caps() -> None:
    rule, label, notes, _ = converted(
        PROCESS
        + "FileName =~ 'a.exe'\n| project FileName, ProcessCommandLine\n| distinct FileName\n| take 10"
    )
    assert rule["detection"] == {"selection": {"Image|endswith": "\\a.exe"}, "condition": "selection"}
    assert label == "exact"
    assert any("`project FileName, ProcessCommandLine`" in note for note in notes)
    assert any("`distinct FileName`" in note for note in notes)
    assert any("`take 10` caps the rows" in note for note in notes)


@pytest.mark.parametrize(
    "operator",
    [
        "sort by Timestamp desc",
        "order by Timestamp asc",
        "project-away FileName",
        "project-rename Name = FileName",
        "project-reorder FileName",
        "serialize",
    ],
)
def test_new_shaping_operators_are_recognised_by_their_keyword(operator: str) -> None:
    detection = lower(kql.parse(PROCESS + f"FileName =~ 'a.exe'\n| {operator}"), defender_schema())
    assert detection.predicate is not None and len(detection.notes) == 1


def test_top_is_dropped_only_when_it_orders_by_time() -> None:
    by_time = lower(kql.parse(PROCESS + "FileName =~ 'a.exe'\n| top 10 by Timestamp desc"), defender_schema())
    assert "latest rows" in by_time.notes[0] and by_time.predicate is not None
    rule, label, notes, _ = converted(PROCESS + "FileName =~ 'a.exe'\n| top 10 by FileName")
    assert rule["detection"]["selection"] == {"Image|endswith": "\\a.exe"} and label == "approximate"
    assert any("`top` has no Sigma equivalent (query line 3, column 3)" in note for note in notes), notes


@pytest.mark.parametrize("picker", ["arg_max(Timestamp, *)", "arg_min(Timestamp, *)"])
def test_a_summary_keeping_a_row_of_each_group_is_left_out_and_the_filters_after_it_kept(picker: str) -> None:
    """``summarize arg_max(Timestamp, *) by K`` keeps the latest row of each group: every row it
    returns is an event the filters after it select, so leaving it out widens; measured."""
    query = f"DeviceProcessEvents\n| summarize {picker} by FileName\n| where FileName =~ 'a.exe'"
    rule, label, notes, queries = converted(query)
    assert rule["detection"]["selection"] == {"Image|endswith": "\\a.exe"} and label == "approximate"
    assert any("keeps one row of each group" in note for note in notes), notes
    assert "summarize" not in queries["kusto"]
    proof = measure(SourceRule(path="case.kql", kql=query), Options())
    ran = {t: r for t, r in proof.targets.items() if r.verdict != "not_executed"}
    assert proof.original and {"sigma", "kusto", "eql"} <= set(ran)
    assert all(r.agrees and r.verdict in ("exact", "widened") for r in ran.values()), ran


def test_a_count_of_the_rows_a_summary_kept_is_left_out_never_narrowing() -> None:
    """Counting one row per group is not counting events: the threshold is left out (wider)."""
    rule, label, notes, _ = converted(
        PROCESS + "FileName =~ 'a.exe'\n| summarize arg_max(Timestamp, *) by DeviceId, ProcessCommandLine\n"
        "| summarize Commands = count() by DeviceId\n| where Commands < 3"
    )
    assert rule["detection"] == {"selection": {"Image|endswith": "\\a.exe"}, "condition": "selection"}
    assert label == "approximate"
    assert any("a summary of the rows `summarize arg_max" in note for note in notes), notes


# ------------------------------------------- what Sigma cannot carry: left out when that only widens


def test_an_operator_sigma_lacks_is_left_out_with_the_rest_of_the_query_when_it_only_keeps_rows() -> None:
    rule, label, notes, queries = converted(
        PROCESS + "FileName =~ 'a.exe'\n| join kind=inner (DeviceNetworkEvents | where RemotePort == 22) "
        "on DeviceId\n| where RemoteIP == '10.0.0.1'"
    )
    assert rule["detection"]["selection"] == {"Image|endswith": "\\a.exe"}
    assert label == "approximate"
    assert any("`join` has no Sigma equivalent (query line 3, column 3)" in note for note in notes), notes
    assert queries["kusto"] == 'DeviceProcessEvents\n| where FolderPath endswith "\\\\a.exe"'


@pytest.mark.parametrize("kind", ["rightsemi", "rightanti", "rightouter"])
def test_a_right_join_keeps_its_right_side_which_gives_the_rows(kind: str) -> None:
    rule, label, notes, _ = converted(
        PROCESS + f"FileName =~ 'a.exe'\n| join kind={kind} (DeviceNetworkEvents | where RemotePort == 22) "
        "on DeviceId"
    )
    assert rule["logsource"]["category"] == "network_connection"
    assert rule["detection"]["selection"] == {"DestinationPort": 22}
    assert label == "approximate"
    assert any(f"join kind={kind}" in note and "right side" in note for note in notes), notes


def test_mv_apply_is_left_out_when_its_operators_keep_or_reshape_the_rows() -> None:
    rule, label, notes, _ = converted(
        PROCESS
        + "FileName =~ 'a.exe'\n| mv-apply Part = split(ProcessCommandLine, ' ') on (where Part == '-enc')"
    )
    assert rule["detection"]["selection"] == {"Image|endswith": "\\a.exe"} and label == "approximate"
    assert any("`mv-apply` has no Sigma equivalent (query line 3, column 3)" in note for note in notes), notes


@pytest.mark.parametrize(
    "shaping",
    [
        "extend SHA1 = tolower(SHA1)",  # FileProfile() wants lower-case hashes: a common idiom
        "extend FileName = toupper(FileName)",
    ],
)
def test_a_column_computed_from_itself_reads_the_column_before_it(shaping: str) -> None:
    """``extend X = tolower(X)``: inside its value X is the column as it was. Inlining it once
    (not again and again: this hung the conversion) gives the column's own test, proved exact."""
    query = f"DeviceProcessEvents\n| {shaping}\n| where SHA1 in~ ('{'a' * 40}') and FileName =~ 'x.exe'"
    rule, _, _, _ = converted(query)
    assert rule["detection"]["selection"]["sha1"] == "a" * 40
    proof = measure(SourceRule(path="case.kql", kql=query), Options())
    ran = {t: r for t, r in proof.targets.items() if r.verdict != "not_executed"}
    assert proof.original and {"sigma", "kusto", "eql"} <= set(ran)
    assert all(r.verdict == "exact" and r.agrees for r in ran.values()), ran


def test_a_query_starting_from_a_tabular_function_call_is_the_functions_query() -> None:
    """``F(2d) | where ...`` runs F's query with its arguments (a default for the one left out):
    it converts to the rule of the query written out, whose proof agrees (duckdb-kql runs scalar
    functions only, so the call itself is not executed). A function whose parameter is named like
    a column is not followed: there the column wins."""
    query = (
        "let Recent = (lookback:timespan, name:string = 'certutil.exe') {\n"
        "    DeviceProcessEvents | where Timestamp > ago(lookback) | where FileName =~ name\n};\n"
        "Recent(2d)\n| where ProcessCommandLine has_cs 'urlcache'"
    )
    written_out = (
        "DeviceProcessEvents | where Timestamp > ago(2d) | where FileName =~ 'certutil.exe'\n"
        "| where ProcessCommandLine has_cs 'urlcache'"
    )
    through_a_let = query.replace("Recent(2d)\n", "let Rows = Recent(2d);\nRows\n")
    rule, label, _, _ = converted(query)
    assert (rule, label) == converted(written_out)[:2] == converted(through_a_let)[:2]
    assert rule["detection"]["selection"]["Image|endswith"] == "\\certutil.exe"
    assert lower(kql.parse(query), defender_schema()).window == timedelta(days=2)
    proof = measure(SourceRule(path="case.kql", kql=written_out), Options())
    ran = {t: r for t, r in proof.targets.items() if r.verdict != "not_executed"}
    assert proof.original and {"sigma", "kusto", "eql"} <= set(ran)
    assert all(r.agrees for r in ran.values()), ran
    shadowed = "let F = (FileName:string) { DeviceProcessEvents | where FileName =~ FileName };\nF('x.exe')"
    assert "a query starting with a call of `F()`" in refused(shadowed)


def test_an_in_over_an_externaldata_feed_names_the_feed_not_a_join() -> None:
    """A threat-intelligence feed read at run time (``externaldata``), through a tabular ``let``
    and ``materialize()``, is named as such where it is read: the user sees why, not "a join"."""
    feed = (
        "let Feed = externaldata(Ip: string)[@'https://feed.example/ips.txt'] with (format='txt');\n"
        "let Bad = materialize(Feed | distinct Ip);\n"
    )
    message = not_converted(f"{feed}{NETWORK}RemoteIP in (Bad)")
    assert "externaldata` feed (query line 1, column 12)" in message and "join" not in message
    joined = not_converted(
        f"let Seen = DeviceProcessEvents | distinct FileName;\n{NETWORK}InitiatingProcessFileName in (Seen)"
    )
    assert "another query (a join)" in joined


def test_an_inner_join_with_an_unfiltered_left_side_keeps_the_filtered_right_side() -> None:
    rule, label, _, _ = converted(
        "DeviceProcessEvents\n| join (DeviceNetworkEvents | where RemotePort == 22) on DeviceId"
    )
    assert rule["detection"]["selection"] == {"DestinationPort": 22} and label == "approximate"


@pytest.mark.parametrize(
    ("operator", "reason"),
    [
        ("join kind=fullouter (DeviceNetworkEvents) on DeviceId", "`join` of kind fullouter"),
        ("union DeviceNetworkEvents", "`union` adds the rows of other queries"),
        ("evaluate python(typeof(*), 'result = df')", "`evaluate` `python` returns rows of its own"),
        ("invoke Unknown()", "`invoke` runs `Unknown()`, a function rmm2sigma cannot see"),
        ("mv-apply x on (union DeviceEvents)", "`mv-apply` adds the rows of other queries"),
    ],
)
def test_an_operator_bringing_rows_of_its_own_is_refused_at_its_position(operator: str, reason: str) -> None:
    message = refused(PROCESS + f"FileName =~ 'a.exe'\n| mv-expand x = pack_array(1)\n| {operator}")
    assert message.startswith("<input>:4:3:") and reason in message, message


def test_make_series_is_left_out_like_a_summary_of_the_rows_selected_before_it() -> None:
    rule, label, notes, _ = converted(
        PROCESS + "FileName =~ 'a.exe'\n| make-series n=count() default=0 on Timestamp from ago(1d) to now() "
        "step 1h by DeviceName\n| where n > 5"
    )
    assert rule["detection"]["selection"] == {"Image|endswith": "\\a.exe"} and label == "approximate"
    assert any("`make-series` has no Sigma equivalent (query line 3, column 3)" in n for n in notes), notes


@pytest.mark.parametrize(
    "operator",
    [
        "facet by FileName, FolderPath with (take 5)",
        "reduce by ProcessCommandLine with threshold=0.5",
        "sample-distinct 5 of FolderPath",
        "top-hitters 5 of FolderPath by FileSize",
        "parse-kv ProcessCommandLine as (user:string) with (pair_delimiter=' ', kv_delimiter='=')",
        "evaluate bag_unpack(AdditionalFields) : (*, Name:string)",
    ],
)
def test_operators_that_summarize_or_add_columns_are_left_out_at_their_position(operator: str) -> None:
    detection = lower(kql.parse(PROCESS + f"FileName =~ 'a.exe'\n| {operator}\n| take 1"), defender_schema())
    assert isinstance(detection.predicate, And)
    kept, left_out = detection.predicate.items
    assert isinstance(kept, Predicate) and kept.column == "FileName"
    assert isinstance(left_out, Opaque) and left_out.pos == k.Pos(3, 3)
    keyword = operator.split()[0]
    assert f"`{keyword}` has no Sigma equivalent (query line 3, column 3)" in left_out.reason


@pytest.mark.parametrize(
    ("operator", "reason"),
    [
        ("fork (where FolderPath has 'x') (take 1)", "`fork` returns several results"),
        ("consume", "`consume` returns no rows"),
        ("facet by FileName with (union DeviceEvents)", "`facet` adds the rows of other queries"),
        ("find where FileName == 'b.exe'", "`find` returns the rows of the tables it searches"),
        ("scan with (step s1: FileName == 'b.exe';)", "`scan` returns the rows of the sequences"),
    ],
)
def test_operators_with_other_results_than_one_table_of_input_rows_are_refused(
    operator: str, reason: str
) -> None:
    message = refused(PROCESS + f"FileName =~ 'a.exe'\n| take 5\n| {operator}")
    assert message.startswith("<input>:4:3:") and reason in message, message


def test_a_find_of_one_table_is_its_filter_and_a_find_after_a_pipe_is_refused() -> None:
    detection = lower(kql.parse("find in (DeviceProcessEvents) where FileName =~ 'a.exe'"), defender_schema())
    assert detection.table == "DeviceProcessEvents" and isinstance(detection.predicate, Predicate)
    message = refused(PROCESS + "FileName =~ 'a.exe'\n| find in (DeviceFileEvents) where FileName =~ 'b.exe'")
    assert message.startswith("<input>:3:3:") and "`find` returns the rows of the tables" in message, message


def test_set_and_declare_statements_are_noted_and_a_query_parameter_is_no_literal() -> None:
    detection = lower(
        kql.parse(
            "set notruncation;\ndeclare query_parameters(Name:string = 'a.exe');\n"
            + PROCESS
            + "FolderPath has 'Temp' and FileName =~ Name"
        ),
        defender_schema(),
    )
    assert detection.notes == tuple(
        f"`{statement}` is a statement about how the query runs, not about its rows; "
        "it is not part of a Sigma rule"
        for statement in ("set notruncation", "declare query_parameters(Name:string = 'a.exe')")
    )
    assert isinstance(detection.predicate, And)
    kept, left_out = detection.predicate.items
    assert isinstance(kept, Predicate) and kept.column == "FolderPath"
    assert isinstance(left_out, Opaque) and left_out.pos == k.Pos(4, 35)
    assert "`Name` is a query parameter" in left_out.reason and "(query line 4, column 47)" in left_out.reason


def test_invoke_is_followed_into_a_let_function_and_defender_enrichments() -> None:
    query = (
        "let Tag = (T:(FileName:string)) { T | extend Tagged = 1 };\n"
        + PROCESS
        + "FileName =~ 'a.exe'\n| invoke Tag()\n| invoke FileProfile(SHA1, 1000)\n| where Tagged == 1"
    )
    rule, label, _, _ = converted(query)
    assert rule["detection"]["selection"] == {"Image|endswith": "\\a.exe"} and label == "approximate"
    assert "runs `Unknown2()`" in refused(
        "let Bad = (T:(FileName:string)) { T | invoke Unknown2() };\n" + PROCESS + "FileName =~ 'a'\n| join "
        "(DeviceEvents) on DeviceId | invoke Bad()"
    )


def test_a_test_sigma_cannot_carry_is_left_out_by_its_polarity() -> None:
    for query in (
        "FileName =~ 'a.exe' and strlen(ProcessCommandLine) > 5",
        "FileName =~ 'a.exe' and not(strlen(ProcessCommandLine) > 5)",
        "FileName =~ 'a.exe' and not(FileName =~ 'b.exe' and strlen(ProcessCommandLine) > 5)",
    ):
        rule, label, notes, _ = converted(PROCESS + query)
        assert rule["detection"]["selection"] == {"Image|endswith": "\\a.exe"}, query
        assert label == "approximate"
        assert any("`strlen()` has no Sigma equivalent (query line 2" in note for note in notes), notes


def test_an_extend_used_by_the_filter_is_inlined() -> None:
    rule, label, notes, _ = converted(
        "DeviceProcessEvents\n| extend Cmd = tolower(ProcessCommandLine), Other = strlen(FileName)\n"
        "| where Cmd == 'whoami /all'"
    )
    assert rule["detection"]["selection"] == {"CommandLine": "whoami /all"}
    assert label == "exact"
    assert any("output shaping `extend" in note for note in notes)  # Other is not used


def test_a_query_left_with_no_test_is_refused_naming_what_was_left_out() -> None:
    query = "DeviceProcessEvents\n| extend Len = strlen(ProcessCommandLine)\n| where Len > 100"
    message = not_converted(query)
    assert message.startswith("case.kql:3:9: no condition")
    assert "`strlen()` has no Sigma equivalent (query line 2, column 16)" in message


@pytest.mark.parametrize(
    "function", ["strlen(ProcessCommandLine) > 5", "countof(ProcessCommandLine, 'a') > 5"]
)
def test_functions_without_sigma_equivalent_are_named_when_nothing_else_is_left(function: str) -> None:
    name = function.split("(")[0]
    assert f"`{name}()` has no Sigma equivalent" in not_converted(PROCESS + function)


# ---------------------------------------------------------------- operators and functions


def test_tolower_with_a_case_sensitive_operator_is_a_case_insensitive_test() -> None:
    rule, label, _, _ = converted(PROCESS + "tolower(FileName) in ('a.exe', 'b.exe')")
    assert rule["detection"]["selection"] == {"Image|endswith": ["\\a.exe", "\\b.exe"]}
    assert label == "exact"


def test_a_value_tolower_cannot_produce_is_left_out_or_refused() -> None:
    assert "never matches" in refused(PROCESS + "tolower(FileName) == 'A.exe'")
    rule, _, notes, _ = converted(PROCESS + "toupper(FileName) in ('A.EXE', 'b.exe')")
    assert rule["detection"]["selection"] == {"Image|endswith": "\\A.EXE"}
    assert any("cannot produce" in note for note in notes)


@pytest.mark.parametrize(
    ("operator", "default", "exact_regex"),
    [
        ("hasprefix", "CommandLine|contains", r"(^|[^"),
        ("hassuffix", "CommandLine|contains", r"invoke($|[^"),
    ],
)
def test_term_prefix_and_suffix_widen_to_contains_or_a_half_bounded_regex(
    operator: str, default: str, exact_regex: str
) -> None:
    rule, label, notes, _ = converted(PROCESS + f"ProcessCommandLine {operator} 'invoke'")
    assert rule["detection"]["selection"] == {default: "invoke"}
    assert label == "widened" and any("whole terms" in note for note in notes)
    rule, label, _, _ = converted(PROCESS + f"ProcessCommandLine {operator} 'invoke'", exact=True)
    (regex,) = rule["detection"]["selection"].values()
    assert exact_regex in regex and label == "exact"
    assert regex.endswith("invoke") == (operator == "hasprefix")
    assert regex.startswith("invoke") == (operator == "hassuffix")


def test_a_negated_term_prefix_is_never_widened() -> None:
    rule, label, _, _ = converted(PROCESS + "FileName =~ 'a.exe' and ProcessCommandLine !hasprefix 'enc'")
    assert "CommandLine|re|i" in rule["detection"]["filter_main_commandline"]
    assert label == "exact"


def test_emptiness_and_nullness() -> None:
    rule, label, _, _ = converted(PROCESS + "isnotempty(ProcessCommandLine) and isnull(InitiatingProcessId)")
    assert rule["detection"]["selection"] == {"ParentProcessId": None}
    assert rule["detection"]["filter_main_commandline"] == {"CommandLine": ["", None]}
    assert rule["detection"]["condition"] == "selection and not filter_main_commandline"
    assert label == "exact"
    assert "constant in Kusto" in refused(PROCESS + "isnotnull(ProcessCommandLine)")


def test_ipv4_functions_become_cidr_tests() -> None:
    rule, label, _, queries = converted(
        NETWORK + "ipv4_is_in_range(RemoteIP, '10.1.2.3/16') and not(ipv4_is_private(LocalIP)) "
        "and ipv4_is_match(RemoteIP, '10.1.0.0', 8)"
    )
    detection = rule["detection"]
    assert detection["selection"] == {"DestinationIp|cidr": "10.1.0.0/16"}
    assert detection["selection_destinationip"] == {"DestinationIp|cidr": "10.0.0.0/8"}
    assert detection["selection_sourceip"] == {
        "SourceIp|cidr": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    }
    assert "not selection_sourceip" in detection["condition"]
    assert label == "widened"  # the negated range also matches events without an address
    assert 'ipv4_is_in_range(RemoteIP, "10.1.0.0/16")' in queries["kusto"]
    assert "cidrMatch(destination.ip" in queries["eql"]


def test_an_invalid_network_is_refused() -> None:
    assert "IPv4 network" in refused(NETWORK + "ipv4_is_in_range(RemoteIP, '10.0.0.300/8')")


def test_column_pairs_become_field_references() -> None:
    rule, label, notes, queries = converted(PROCESS + "FolderPath =~ InitiatingProcessFolderPath")
    # Kusto strings are never null, so two empty values are equal: said explicitly for Sigma
    assert rule["detection"] == {
        "selection_image": {"Image|fieldref": "ParentImage"},
        "selection_group": {"Image": ["", None], "ParentImage": ["", None]},
        "condition": "selection_image or selection_group",
    }
    assert label == "exact"
    assert "FolderPath =~ InitiatingProcessFolderPath" in queries["kusto"]  # as Sigma: without case
    assert "process.executable.caseless==process.parent.executable.caseless" in queries["esql"]
    rule, label, notes, _ = converted(PROCESS + "FolderPath == InitiatingProcessFolderPath")
    assert label == "widened" and any("compares case-sensitively" in note for note in notes)
    rule, label, notes, _ = converted(
        PROCESS + "FileName =~ 'a.exe' and ProcessCommandLine != InitiatingProcessCommandLine"
    )
    assert rule["detection"] == {"selection": {"Image|endswith": "\\a.exe"}, "condition": "selection"}
    assert label == "approximate" and any("fieldref ignores case" in note for note in notes)


def test_let_lists_and_datatables_feed_in_and_has_any() -> None:
    rule, _, _, _ = converted(
        "let names = dynamic(['a.exe', 'b.exe']);\n"
        "let hosts = datatable(Host:string)['x.com', 'y.com'];\n"
        + NETWORK
        + "InitiatingProcessFileName in~ (names) "
        "and RemoteUrl has_any ((hosts | distinct Host))"
    )
    assert rule["detection"]["selection"] == {
        "Image|endswith": ["\\a.exe", "\\b.exe"],
        "DestinationHostname|contains": ["x.com", "y.com"],
    }


@pytest.mark.parametrize(
    "table",
    [
        "datatable(Name:string)['evil.exe', 'bad.exe']",
        "materialize(datatable(Name:string)['evil.exe', 'bad.exe'])",
        # constants expanded into one column: an indicator list, as threat-intelligence queries write it
        "print h = dynamic(['evil.exe', 'bad.exe', 'evil.exe']) | mv-expand x = h | distinct tostring(x)",
        "print dynamic(['evil.exe', 'bad.exe']) | mv-expand print_0 | project Name = tolower(print_0)",
        "datatable(Name:string, Why:string)['evil.exe', 'a', 'bad.exe', 'b',] | summarize by Name",
        "datatable(Names:dynamic)[dynamic(['evil.exe', 'bad.exe'])] | mv-expand Names | project Names",
    ],
)
def test_constants_in_one_column_are_a_list_of_values(table: str) -> None:
    rule, label, _, _ = converted(f"let bad = {table};\n" + PROCESS + "FileName in~ (bad)")
    assert rule["detection"]["selection"] == {"Image|endswith": ["\\evil.exe", "\\bad.exe"]}
    assert label == "exact"


def test_an_expanded_indicator_list_is_proven_exact() -> None:
    query = (
        "let bad = print h = dynamic(['evil.exe', 'bad.exe', 'evil.exe']) | mv-expand x = h "
        "| distinct tostring(x);\n" + PROCESS + "FileName in~ (bad)"
    )
    proof = measure(SourceRule(path="list.kql", kql=query), Options())
    ran = {t: r for t, r in proof.targets.items() if r.verdict != "not_executed"}
    assert proof.original and {"sigma", "kusto", "eql"} <= set(ran)
    assert all(r.verdict == "exact" and r.agrees for r in ran.values()), ran


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ("datatable(Name:string)['a'] | summarize count() by Name", "summarize by"),
        ("datatable(Name:string, Other:string)['a', 'b']", "one column"),
        ("print dynamic(['a', 'b'])", "single values"),
    ],
)
def test_other_constant_tables_are_left_out_naming_why(table: str, why: str) -> None:
    assert why in not_converted(f"let bad = {table};\n" + PROCESS + "FileName in~ (bad)")


def test_keywords_under_or_are_named_in_the_condition() -> None:
    """Two keyword groups under `or` are `keywords or keywords_2`: a `1 of selection_*` there named
    nothing, so the backends' pipelines found no condition."""
    rule, _, _, queries = converted(
        'search in (DeviceProcessEvents) "mimikatz" or "*sekurlsa*" or FileName =~ \'x.exe\''
    )
    detection = rule["detection"]
    named = set(detection) - {"condition"}
    assert {"keywords", "keywords_2"} <= named
    assert all(name in detection["condition"] for name in named), detection
    assert "mimikatz" in queries["splunk"] and "sekurlsa" in queries["splunk"]


@pytest.mark.parametrize(
    ("predicate", "label"),
    [
        ("case(FileName =~ 'a.exe', true, FileName =~ 'b.exe', true, false)", "exact"),
        ("iff(FileName =~ 'a.exe' or FileName =~ 'b.exe', true, false)", "exact"),
        ("case(FileName =~ 'a.exe', true, FileName =~ 'b.exe', true, ProcessId == 4, false, false)", "exact"),
    ],
)
def test_a_boolean_case_or_iff_filters_by_the_conditions_choosing_true(predicate: str, label: str) -> None:
    query = PROCESS + predicate
    rule, found, _, _ = converted(query)
    items = [item for name, item in rule["detection"].items() if name != "condition"]
    assert items == [{"Image|endswith": "\\a.exe"}, {"Image|endswith": "\\b.exe"}]
    assert rule["detection"]["condition"] == "1 of selection_*" and found == label
    proof = measure(SourceRule(path="case.kql", kql=query), Options())
    ran = {t: r for t, r in proof.targets.items() if r.verdict != "not_executed"}
    assert proof.original and {"sigma", "kusto", "eql"} <= set(ran)
    assert all(r.agrees for r in ran.values()), ran


def test_a_case_whose_true_needs_a_negation_is_left_out() -> None:
    """`case(a, false, b, true, false)` is `not a and b`, and Kusto's `case` reads a null `a` as
    false where `not` drops the row: left out, naming `case()`."""
    assert "case()" in not_converted(
        PROCESS + "case(FileName =~ 'a.exe', false, FileName =~ 'b.exe', true, false)"
    )


@pytest.mark.parametrize(("test", "negated"), [("AccountName == ''", False), ('AccountName != ""', True)])
def test_equality_with_the_empty_string_is_emptiness(test: str, negated: bool) -> None:
    """A Kusto string is never null, so `== ""` is isempty(): Sigma's `['', null]` also matches an
    event without the field (an unsigned image's Signature, say)."""
    query = PROCESS + f"FileName =~ 'net.exe' and {test}"
    rule, _, _, _ = converted(query)
    detection = rule["detection"]
    (name,) = [n for n, item in detection.items() if isinstance(item, dict) and "User" in item]
    assert detection[name]["User"] == ["", None]
    assert (f"not {name}" in detection["condition"]) is negated
    proof = measure(SourceRule(path="empty.kql", kql=query), Options())
    ran = {t: r for t, r in proof.targets.items() if r.verdict != "not_executed"}
    assert proof.original and all(r.agrees for r in ran.values()), ran


def test_numeric_comparisons() -> None:
    rule, label, _, _ = converted(NETWORK + "RemotePort between (1000 .. 2000) and LocalPort < 1024")
    assert rule["detection"]["selection"] == {
        "DestinationPort|gte": 1000,
        "DestinationPort|lte": 2000,
        "SourcePort|lt": 1024,
    }
    assert label == "exact"


def test_a_search_over_every_column_becomes_keywords() -> None:
    query = kql.parse(PROCESS + "FileName =~ 'a.exe'")
    star = k.Where(k.Binary("has", k.Name("*"), k.StringLit("mimikatz")))
    detection = lower(k.Query((), k.Pipeline(query.body.source, (star,))), defender_schema())
    from rmm2sigma.mapping import map_detection
    from rmm2sigma.sigma import detection_document

    mapped = map_detection(detection)
    assert mapped.detection.predicate is not None
    assert detection_document(mapped.detection.predicate) == {
        "keywords": ["*mimikatz*"],
        "condition": "keywords",
    }
    assert mapped.fidelity.value == "widened"
    from rmm2sigma.fidelity import target_fidelity

    labels = target_fidelity(mapped, ("sigma", "kusto", "splunk", "lucene", "eql", "esql"))
    assert labels["kusto"].label == labels["splunk"].label == labels["lucene"].label == "widened"
    # EQL and ES|QL have no search of every field (pySigma's EQL backend wrote the bare string)
    assert labels["eql"].refusal and labels["esql"].refusal
    # pySigma's KQL backend wrote the keyword as a bare string, no KQL filter: KQL's search of every
    # column, which Kusto.Language binds
    rule = convert_rule(SourceRule(path="keyword.kql", kql=PROCESS + "* has 'mimikatz'"), Options())
    assert rule.queries["kusto"] == 'DeviceProcessEvents\n| where * contains "mimikatz"'
    assert {"lucene", "splunk"} <= set(rule.queries) and not {"eql", "esql"} & set(rule.queries)
    negated_query = 'DeviceProcessEvents | where FileName =~ "a.exe" | search not("*mimikatz*")'
    negated = convert_rule(SourceRule(path="keyword.kql", kql=negated_query), Options())
    assert 'not(* contains "mimikatz")' in negated.queries["kusto"]
    if kusto_available():
        found = validate_kql([rule.queries["kusto"], negated.queries["kusto"]])
        assert [[d.message for d in f if d.is_error] for f in found] == [[], []]


# ---------------------------------------------------------------- tables and log sources


@pytest.mark.parametrize(
    ("query", "logsource", "selection"),
    [
        (
            "DeviceFileEvents | where ActionType == 'FileCreated' and FolderPath endswith '.ps1'",
            {"product": "windows", "category": "file_event"},
            {"TargetFilename|endswith": ".ps1"},
        ),
        (
            "DeviceFileEvents | where ActionType in ('FileDeleted') and FileName =~ 'x.docx'",
            {"product": "windows", "category": "file_delete"},
            {"TargetFilename|endswith": "\\x.docx"},
        ),
        (
            "DeviceFileEvents | where ActionType =~ 'filerenamed' and FolderPath endswith '.lock'",
            {"product": "windows", "category": "file_rename"},
            {"TargetFilename|endswith": ".lock"},
        ),
        (
            "DeviceRegistryEvents | where ActionType == 'RegistryValueSet' and RegistryValueData =~ 'x'",
            {"product": "windows", "category": "registry_set"},
            {"Details": "x"},
        ),
        (
            "DeviceRegistryEvents | where ActionType in ('RegistryKeyDeleted', 'RegistryValueDeleted') "
            "and RegistryKey endswith 'Run'",
            {"product": "windows", "category": "registry_delete"},
            {"TargetObject|endswith": "Run"},
        ),
        (
            "DeviceEvents | where ActionType == 'NamedPipeEvent' and InitiatingProcessFileName =~ 'x.exe'",
            {"product": "windows", "category": "pipe_created"},
            {"Image|endswith": "\\x.exe"},
        ),
        (
            "DeviceEvents | where ActionType == 'CreateRemoteThreadApiCall' and FileName =~ 'lsass.exe'",
            {"product": "windows", "category": "create_remote_thread"},
            {"TargetImage|endswith": "\\lsass.exe"},
        ),
        (
            "DeviceEvents | where ActionType == 'PowerShellCommand' and AdditionalFields has 'Invoke-Foo'",
            {"product": "windows", "category": "ps_module"},
            {"Payload|contains": "Invoke-Foo"},
        ),
        (
            "DeviceLogonEvents | where ActionType == 'LogonFailed' and LogonType == 'RemoteInteractive' "
            "and AccountName =~ 'admin'",
            {"product": "windows", "service": "security"},
            {"EventID": 4625, "LogonType": 10, "TargetUserName": "admin"},
        ),
    ],
)
def test_action_type_selects_the_category(
    query: str, logsource: dict[str, str], selection: dict[str, Any]
) -> None:
    rule, label, notes, _ = converted(query)
    assert rule["logsource"] == logsource
    assert rule["detection"]["selection"] == selection
    assert label == "approximate"
    assert any("ActionType" in note for note in notes)


def test_image_loads_map_exactly() -> None:
    rule, label, _, queries = converted("DeviceImageLoadEvents | where FileName =~ 'clr.dll'")
    assert rule["logsource"] == {"product": "windows", "category": "image_load"}
    assert rule["detection"]["selection"] == {"ImageLoaded|endswith": "\\clr.dll"}
    assert label == "exact"
    assert queries["kusto"].startswith("DeviceImageLoadEvents")


def test_a_category_wider_than_the_action_type_says_so() -> None:
    _, _, notes, _ = converted(
        "DeviceFileEvents | where ActionType == 'FileCreated' and FolderPath endswith '.ps1'"
    )
    assert any("which also holds FileModified" in note for note in notes)


def test_an_action_type_that_selects_no_single_category_is_left_out_and_noted() -> None:
    rule, label, notes, _ = converted(
        "DeviceFileEvents | where ActionType in ('FileCreated', 'FileDeleted') and FolderPath endswith '.ps1'"
    )
    assert rule["logsource"]["category"] == "file_event"
    assert rule["detection"]["selection"] == {"TargetFilename|endswith": ".ps1"}
    assert label == "approximate"
    assert any("ActionType in" in note and "does not choose one Sigma category" in note for note in notes)
    assert any("every kind of file event" in note for note in notes)


def test_summary_limits_and_time_buckets_are_left_out_with_notes() -> None:
    detection = lower(
        kql.parse(
            PROCESS + "FileName =~ 'a.exe'\n"
            "| summarize Commands=make_set(ProcessCommandLine, 1000), Count=count()\n"
            "    by bin(Timestamp, 1h), DeviceName"
        ),
        defender_schema(),
    )
    assert detection.aggregation is not None
    assert detection.aggregation.by == ("DeviceName",)
    assert [f.column for f in detection.aggregation.functions] == ["ProcessCommandLine", None]
    assert any("size limit" in note for note in detection.notes)
    assert any("`bin(Timestamp, 1h)`" in note for note in detection.notes)
    rule, label, notes, _ = converted(
        PROCESS + "FileName =~ 'a.exe'\n| summarize count() by L = strlen(FileName)\n| where count_ > 5"
    )
    assert rule["detection"]["selection"] == {"Image|endswith": "\\a.exe"} and label == "approximate"
    assert any("computed group-by" in note for note in notes), notes


def test_action_type_in_a_later_where_still_selects_the_category() -> None:
    rule, _, notes, queries = converted(
        "DeviceEvents\n| where InitiatingProcessFileName =~ 'powershell.exe'\n"
        "| where ActionType == 'AmsiScriptContent' and AdditionalFields contains 'Deimos'"
    )
    assert rule["logsource"] == {"product": "windows", "category": "ps_script"}
    assert rule["detection"]["selection"] == {"ScriptBlockText|contains": "Deimos"}
    assert any("InitiatingProcessFileName has no field" in note for note in notes)
    assert queries["kusto"].startswith('DeviceEvents\n| where ActionType =~ "AmsiScriptContent"')


def test_a_number_written_as_a_string_on_a_numeric_column_is_a_number() -> None:
    rule, label, _, _ = converted(NETWORK + "RemotePort == '3389' or RemotePort in ('445', '139')")
    assert rule["detection"] == {
        "selection_destinationport": {"DestinationPort": 3389},
        "selection_destinationport_2": {"DestinationPort": [445, 139]},
        "condition": "1 of selection_*",
    }
    assert label == "exact"


def test_logons_go_back_to_defender_columns_in_kusto_or_are_refused_there() -> None:
    _, _, _, queries = converted(
        "DeviceLogonEvents | where ActionType == 'LogonFailed' and AccountName =~ 'admin'"
    )
    # microsoft_xdr drops EventID 4625: the ActionType says the failed logons back
    failed = 'DeviceLogonEvents\n| where ActionType =~ "LogonFailed"'
    assert queries["kusto"] == failed + ' and AccountName =~ "admin"'
    _, _, _, queries = converted("DeviceLogonEvents | where ActionType == 'LogonFailed'")
    assert queries["kusto"] == failed  # not an empty query
    _, _, _, queries = converted(
        "DeviceLogonEvents | where ActionType == 'LogonSuccess' and LogonType == 'Network'"
    )
    assert 'LogonType =~ "Network"' in queries["kusto"]  # the Security log's 3, named back
    assert "LogonType=3" in queries["splunk"].replace(" ", "").replace('"', "")


def test_a_query_starting_from_a_tabular_let_reads_its_pipeline() -> None:
    """`let x = T | where a; x | where b` (also through materialize()) is `T | where a | where b`."""
    query = (
        "let base = materialize(DeviceProcessEvents | where FileName =~ 'a.exe');\n"
        "let narrowed = base | where ProcessCommandLine has 'b';\nnarrowed | project Timestamp"
    )
    rule, label, _, queries = converted(query)
    assert rule["logsource"]["category"] == "process_creation"
    assert "Image|endswith" in str(rule["detection"]) and "CommandLine|contains" in str(rule["detection"])
    assert label == "widened"
    assert 'FolderPath endswith "\\\\a.exe"' in queries["kusto"]


def test_a_let_that_names_itself_is_refused_not_a_loop() -> None:
    assert "Defender table" in refused("let x = x | where FileName == 'a'; x")


@pytest.mark.parametrize(
    ("test", "label"),
    [
        ("ProcessCommandLine has '-noni -ep bypass $'", "exact"),
        ("ProcessCommandLine hasprefix '/temp'", "exact"),
        ("ProcessCommandLine hassuffix '.ps1 '", "exact"),
        ("ProcessCommandLine has '-noni'", "widened"),
        ("ProcessCommandLine hasprefix 'temp/'", "widened"),
    ],
)
def test_a_term_match_whose_needle_bounds_its_terms_is_a_substring_match(test: str, label: str) -> None:
    """`has '-enc '`: a needle starting and ending with non-term characters cannot match inside a
    longer term, so `contains` is the same test; the proof measures it."""
    rule, declared, _, _ = converted(PROCESS + test)
    assert list(rule["detection"]["selection"]) == ["CommandLine|contains"] and declared == label
    proof = measure(SourceRule(path="case.kql", kql=PROCESS + test), Options())
    assert proof.original > 0
    assert {t.target: t.agrees for t in proof.targets.values() if t.verdict != "not_executed"} == {
        "sigma": True,
        "kusto": True,
        "eql": True,
    }


@pytest.mark.parametrize(
    "read",
    [
        "tostring(parse_json(AdditionalFields).ThreatName)",
        "parse_json(AdditionalFields)['ThreatName']",
        "extractjson('$.ThreatName', AdditionalFields)",
        "extractjson('$.ThreatName', AdditionalFields, typeof(string))",
        "P.ThreatName",  # through `extend P = parse_json(AdditionalFields)`
    ],
)
def test_a_key_of_a_json_column_is_a_column_the_mapping_names(read: str) -> None:
    _, _, notes, queries = converted(
        "DeviceEvents\n| where ActionType == 'AntivirusDetection'\n"
        f"| extend P = parse_json(AdditionalFields)\n| where {read} contains 'PUA'"
    )
    assert 'tostring(parse_json(AdditionalFields).ThreatName) contains "PUA"' in queries["kusto"], notes


def _keywords_document(text: str) -> dict[str, Any]:
    from rmm2sigma.mapping import map_detection
    from rmm2sigma.sigma import detection_document

    mapped = map_detection(lower(kql.parse(text), defender_schema()))
    assert mapped.detection.predicate is not None
    return detection_document(mapped.detection.predicate)


@pytest.mark.parametrize(
    ("search", "detection"),
    [
        (  # a bare term is `* has`, a `*` at its ends makes it a prefix, suffix or substring
            "search in (DeviceProcessEvents) 'mimikatz' and not('*lsass*')",
            {
                "keywords": ["*mimikatz*"],
                "keywords_2": ["*lsass*"],
                "condition": "keywords and not keywords_2",
            },
        ),
        (  # `Column:"x"` is `Column has "x"`; search as an operator filters its input
            "DeviceProcessEvents | where FileName =~ 'cmd.exe' | search ProcessCommandLine:'whoami'",
            {
                "selection": {"Image|endswith": "\\cmd.exe", "CommandLine|contains": "whoami"},
                "condition": "selection",
            },
        ),
        (
            "search kind=case_sensitive in (DeviceProcessEvents) ProcessCommandLine:'*Invoke-*'",
            {"selection": {"CommandLine|contains|cased": "Invoke-"}, "condition": "selection"},
        ),
    ],
)
def test_search_is_the_where_it_stands_for(search: str, detection: dict[str, Any]) -> None:
    assert _keywords_document(search) == detection


def test_search_over_several_tables_is_a_union_and_over_every_table_is_refused() -> None:
    from rmm2sigma.kql.union import split_union

    branches = split_union(kql.parse("search in (DeviceProcessEvents, DeviceFile*) 'x'"), defender_schema())
    assert branches is not None
    assert [b.table for b in branches] == [
        "DeviceProcessEvents",
        "DeviceFileCertificateInfo",
        "DeviceFileEvents",
    ]
    with pytest.raises(
        UnsupportedKqlError, match=r"`search` without `in \(\.\.\.\)` reads every table"
    ) as error:
        lower(kql.parse("\n  search 'x'"), defender_schema())
    assert (error.value.line, error.value.column) == (2, 3)


@pytest.mark.parametrize(
    ("join", "joined_test", "label"),
    [
        (
            "lookup (DeviceInfo | project DeviceId, OSPlatform) on DeviceId",
            "isempty(OSPlatform)",
            "approximate",
        ),
        ("join kind=leftouter (DeviceNetworkEvents | where RemotePort == 443) on DeviceId", "", "exact"),
    ],
)
def test_a_left_outer_join_or_lookup_keeps_the_filters_after_it(
    join: str, joined_test: str, label: str
) -> None:
    """A left outer join adds columns and keeps every row: the filters after it stay in the rule,
    a test on a column it adds is left out (wider), and the proof runs the join."""
    query = PROCESS + f"FileName =~ 'rundll32.exe'\n| {join}\n| where ProcessCommandLine contains 'comsvcs'"
    query += f" and {joined_test}" if joined_test else ""
    rule, measured_label, notes, _ = converted(query)
    assert rule["detection"]["selection"] == {
        "Image|endswith": "\\rundll32.exe",
        "CommandLine|contains": "comsvcs",
    }
    assert measured_label == label
    assert any("adds the columns of another table to each row" in note for note in notes), notes
    proof = measure(SourceRule(path="case.kql", kql=query), Options())
    assert proof.original > 0 and not proof.problems
    assert all(t.agrees for t in proof.targets.values() if t.verdict != "not_executed")


def test_a_let_function_of_one_expression_is_applied_in_place() -> None:
    rule, label, _, _ = converted(
        "let Encoded = (cmd:string, flag:string = '-enc') { cmd has flag or cmd has 'frombase64' };\n"
        + PROCESS
        + "FileName =~ 'powershell.exe' and Encoded(ProcessCommandLine)"
    )
    assert rule["detection"] == {
        "selection": {"Image|endswith": "\\powershell.exe"},
        "selection_commandline": {"CommandLine|contains": "-enc"},
        "selection_commandline_2": {"CommandLine|contains": "frombase64"},
        "condition": "selection and (selection_commandline or selection_commandline_2)",
    }
    assert label == "widened"
    proof = measure(
        SourceRule(
            path="case.kql",
            kql="let Encoded = (cmd:string) { cmd has 'frombase64' };\n"
            + PROCESS
            + "Encoded(ProcessCommandLine)",
        ),
        Options(),
    )
    assert proof.original > 0 and all(t.agrees for t in proof.targets.values() if t.verdict != "not_executed")


def test_a_view_is_a_tabular_let_with_its_own_lets_before_it() -> None:
    query = (
        "let Encoded = view () {\n"
        "    let flags = dynamic(['-enc', '-encodedcommand']);\n"
        "    DeviceProcessEvents | where ProcessCommandLine has_any (flags)\n"
        "};\n"
        "Encoded\n| where InitiatingProcessFileName =~ 'winword.exe'"
    )
    rule, label, _, _ = converted(query)
    assert rule["detection"]["selection"] == {
        "CommandLine|contains": ["-enc", "-encodedcommand"],
        "ParentImage|endswith": "\\winword.exe",
    }
    assert label == "widened"
    proof = measure(SourceRule(path="case.kql", kql=query), Options())
    assert proof.original > 0 and all(t.agrees for t in proof.targets.values() if t.verdict != "not_executed")


def test_an_empty_list_excludes_nothing_and_includes_nothing() -> None:
    """`!in ()` holds on every row: dropped (exact); `in ()` on none, which a rule cannot say: left out."""
    query = "let allow = dynamic([]);\nDeviceFileEvents\n| where InitiatingProcessFileName !in (allow)\n"
    rule, _, notes, _ = converted(query + "| where FileName endswith '.cs'")
    assert rule["detection"] == {"selection": {"TargetFilename|endswith": ".cs"}, "condition": "selection"}
    assert any("holds on every row (an empty list)" in note for note in notes)
    why = not_converted("DeviceFileEvents | where FileName in (dynamic([]))")
    assert "holds on no row (an empty list)" in why


@pytest.mark.parametrize("op", ["contains", "startswith", "endswith_cs"])
def test_a_test_of_the_empty_string_every_string_passes_is_left_out(op: str) -> None:
    """`ProcessCommandLine contains ""` holds on every row (a Kusto string is never null), so it is
    dropped with a note; Sigma's `contains: ''` would miss an event without the field (measured
    narrowed before). Negated it holds on none. Inside `or` the whole `or` holds on every row and
    is left out, not its other operands kept (which would narrow it)."""
    query = f"{PROCESS}FileName =~ 'cmd.exe' and ProcessCommandLine {op} ''"
    rule, _, notes, _ = converted(query)
    assert rule["detection"]["selection"] == {"Image|endswith": "\\cmd.exe"}
    assert any("holds on every row (every string contains the empty string)" in note for note in notes)
    assert "holds on no row" in not_converted(f"{PROCESS}ProcessCommandLine !{op} ''")
    either = (
        f"{PROCESS}FileName =~ 'cmd.exe'"
        f" and (FolderPath has 'a' or FolderPath has 'b' or ProcessCommandLine {op} '')"
    )
    rule, label, _, _ = converted(either)
    assert rule["detection"]["selection"] == {"Image|endswith": "\\cmd.exe"} and label == "approximate"
    proof = measure(SourceRule(path="case.kql", kql=either), Options())
    ran = {t: r for t, r in proof.targets.items() if r.verdict != "not_executed"}
    assert proof.original and {"sigma", "kusto", "eql"} <= set(ran)
    assert all(r.agrees for r in ran.values()), ran
