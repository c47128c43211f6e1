"""A query over a ``union``: one rule per branch, linked by ``related`` (kql/union.py, convert_rules)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Verified
from rmm2sigma import kql
from rmm2sigma.convert import convert_input, convert_rule, convert_rules, defender_schema
from rmm2sigma.errors import UnsupportedKqlError
from rmm2sigma.kql.union import split_union
from rmm2sigma.sigma import Options
from rmm2sigma.sigmahq import check_rules
from rmm2sigma.sources import SourceRule

WANTED = ("kusto",)
PROCESS_AND_NETWORK = """\
DeviceProcessEvents
| where FileName =~ "nc.exe"
| union (DeviceNetworkEvents | where RemotePort == 4444)
| where InitiatingProcessFileName =~ "cmd.exe"
"""


def _branches(text: str) -> list[tuple[str, str, str | None]]:
    branches = split_union(kql.parse(text), defender_schema())
    assert branches is not None
    # the printer quotes with ', the tests' queries with "
    return [(b.table, " ".join(b.text.replace("'", '"').split()), b.empty) for b in branches]


def _rules(text: str, name: str = "Suspicious Shell") -> tuple[list[dict[str, object]], tuple[str, ...]]:
    rules, errors = convert_rules(SourceRule("hunt.kql", text, name=name), Options(), WANTED)
    return [
        {"id": r.rule_id, "title": r.title, "category": r.category, "doc": r.document} for r in rules
    ], errors


def test_operators_after_the_union_apply_to_every_table() -> None:
    text = 'union DeviceProcessEvents, DeviceFileEvents\n| where FileName =~ "a.exe"'
    assert _branches(text) == [
        ("DeviceProcessEvents", 'DeviceProcessEvents | where FileName =~ "a.exe"', None),
        ("DeviceFileEvents", 'DeviceFileEvents | where FileName =~ "a.exe"', None),
    ]


def test_sub_query_branches_keep_their_own_filters_then_the_shared_ones() -> None:
    text = (
        'union isfuzzy=true (DeviceProcessEvents | where FileName == "a"), '
        '(DeviceFileEvents | where FileName == "b")\n| where FolderPath has "temp"'
    )
    assert [t for _, t, _ in _branches(text)] == [
        'DeviceProcessEvents | where FileName == "a" | where FolderPath has "temp"',
        'DeviceFileEvents | where FileName == "b" | where FolderPath has "temp"',
    ]


def test_a_wildcard_expands_over_the_schema_tables_in_sorted_order() -> None:
    tables = [t for t, _, _ in _branches('union withsource=TableName Device*File* | where FileName == "x"')]
    expected = sorted(t for t in defender_schema() if t.startswith("Device") and "File" in t)
    assert tables == expected and len(tables) > 1


def test_tabular_lets_and_the_union_operator() -> None:
    lets = (
        'let x = DeviceProcessEvents | where FileName == "a";\n'
        "let y = DeviceFileEvents;\nunion kind=outer x, y"
    )
    assert [t for t, _, _ in _branches(lets)] == ["DeviceProcessEvents", "DeviceFileEvents"]
    assert [t for _, t, _ in _branches(PROCESS_AND_NETWORK)] == [
        'DeviceProcessEvents | where FileName =~ "nc.exe" | where InitiatingProcessFileName =~ "cmd.exe"',
        'DeviceNetworkEvents | where RemotePort == 4444 | where InitiatingProcessFileName =~ "cmd.exe"',
    ]


def test_a_query_without_union_is_not_split() -> None:
    assert split_union(kql.parse('DeviceProcessEvents | where FileName == "a"'), defender_schema()) is None


def test_the_withsource_column_after_the_union_is_refused_where_it_is_read() -> None:
    text = (
        "union withsource=TableName DeviceProcessEvents, DeviceFileEvents\n| summarize count() by TableName"
    )
    with pytest.raises(UnsupportedKqlError, match="withsource") as caught:
        split_union(kql.parse(text), defender_schema())
    assert (caught.value.line, caught.value.column) == (2, 3)


def test_a_branch_lacking_a_required_column_selects_nothing_and_says_why() -> None:
    """Kusto's union gives the missing column an empty string: `has "x"` is false on every row."""
    text = 'union DeviceFileEvents, DeviceProcessEvents\n| where ProcessCommandLine has "bash -i"'
    (file_branch, process_branch) = _branches(text)
    assert file_branch[2] is not None and "ProcessCommandLine" in file_branch[2]
    assert process_branch[2] is None
    rules, errors = _rules(text)
    assert [r["category"] for r in rules] == ["process_creation"] and not errors
    assert "related" not in rules[0]["doc"]  # the only rule: nothing to link


def test_a_test_of_a_missing_column_is_folded_into_its_value_on_the_empty_string() -> None:
    """`!has "x"` is true on the empty string the union gives, `has` false: exact, per branch."""
    text = (
        "union DeviceFileEvents, DeviceProcessEvents\n"
        '| where ProcessCommandLine !has "x" and (FileName == "a" or ProcessCommandLine has "y")'
    )
    assert [(table, text) for table, text, _ in _branches(text)] == [
        ("DeviceFileEvents", 'DeviceFileEvents | where FileName == "a"'),
        ("DeviceProcessEvents", " ".join(text.replace("union DeviceFileEvents, ", "").split())),
    ]
    rules, errors = _rules(text)
    assert [r["category"] for r in rules] == ["file_event", "process_creation"] and not errors
    assert _branches('union DeviceFileEvents, DeviceProcessEvents | where ProcessCommandLine has "y"')[0][2]


def test_one_rule_per_branch_linked_by_related_with_stable_ids() -> None:
    rules, errors = _rules(PROCESS_AND_NETWORK, name="Reverse Shell - Network Connection")
    assert not errors
    assert [r["category"] for r in rules] == ["process_creation", "network_connection"]
    # the title names the branch's own category, never the one the query's name claims
    assert [r["title"] for r in rules] == [
        "Reverse Shell - Process Creation",
        "Reverse Shell - Network Connection",
    ]
    first, second = rules
    assert first["doc"]["related"] == [{"id": second["id"], "type": "similar"}]
    assert second["doc"]["related"] == [{"id": first["id"], "type": "similar"}]
    assert first["id"] != second["id"]
    again, _ = _rules(PROCESS_AND_NETWORK, name="Reverse Shell - Network Connection")
    assert [r["id"] for r in again] == [r["id"] for r in rules]


def test_branches_of_one_category_are_told_apart_by_table() -> None:
    text = 'union DeviceFileEvents, DeviceFileCertificateInfo, DeviceImageLoadEvents\n| where SHA1 == "ab"'
    rules, _ = _rules(text, name="Known Hash")
    titles = [str(r["title"]) for r in rules]
    assert len(set(titles)) == len(titles)
    shared = [t for t in titles if t.endswith(")")]
    assert all("(Device" in t for t in shared)


def test_the_single_rule_api_still_refuses_a_union() -> None:
    with pytest.raises(UnsupportedKqlError, match="union"):
        convert_rule(SourceRule("q.kql", PROCESS_AND_NETWORK), Options(), WANTED)


def test_a_failing_branch_makes_the_input_partial_and_the_others_convert(tmp_path: Path) -> None:
    path = tmp_path / "hunt.kql"
    path.write_text(
        'union DeviceProcessEvents, (DeviceNetworkEvents | where RemoteUrl matches regex "[") \n'
        '| where InitiatingProcessFileName =~ "cmd.exe" | where ProcessCommandLine !has "x"',
        encoding="utf-8",
    )
    result = convert_input(str(path), Options(), WANTED)
    assert result.status == "partial"
    assert [rule.category for rule in result.rules] == ["process_creation"]
    assert result.error is not None and "union branch 2 (DeviceNetworkEvents)" in result.error
    assert result.error.startswith(f"{path}:")


def test_every_branch_failing_fails_the_input(tmp_path: Path) -> None:
    path = tmp_path / "hunt.kql"
    path.write_text("union DeviceProcessEvents, DeviceFileEvents | where Foo == 1", encoding="utf-8")
    result = convert_input(str(path), Options(), WANTED)
    assert result.status == "failed" and result.error and "union branch 1" in result.error


def test_union_rules_pass_sigmahq_checks_and_verify(convert_and_verify: Callable[..., Verified]) -> None:
    """The written branch rules pass SigmaHQ's validators (``related`` included), and ``verify``
    proves each against its branch query."""
    done = convert_and_verify("reverse_shell.kql", PROCESS_AND_NETWORK, "kusto")
    files = sorted((done.out / "sigma_rules").rglob("*.yml"))
    assert len(files) == 2
    assert check_rules([done.out / "sigma_rules"]) == []
    proofs = done.proofs
    assert len(proofs) == 2 and all(not p["report_problems"] and not p["error"] for p in proofs)
    assert all(p["original"] > 0 and p["targets"]["kusto"]["verdict"] == "exact" for p in proofs)


def test_an_inner_union_never_takes_a_missing_column_as_empty() -> None:
    """``kind=inner`` drops the columns a branch lacks: testing one is an error in Kusto, not false."""
    text = 'union kind=inner DeviceFileEvents, DeviceProcessEvents\n| where ProcessCommandLine has "x"'
    assert [empty for _, _, empty in _branches(text)] == [None, None]
    rules, errors = _rules(text)
    assert [r["category"] for r in rules] == ["process_creation"] and len(errors) == 1


def test_earlier_statements_stay_in_every_branch() -> None:
    """A query with several result statements is still refused per branch, never dropped silently."""
    text = 'DeviceFileEvents | take 1;\nunion DeviceProcessEvents, DeviceFileEvents | where FileName == "a"'
    with pytest.raises(UnsupportedKqlError, match="several result statements"):
        _rules(text)
