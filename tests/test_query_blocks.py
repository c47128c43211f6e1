"""A plain query file holding several queries apart from each other by blank lines, as Kusto
Explorer and the Advanced Hunting editor read one (each block runs on its own): a rule each.

Public query collections keep a Sentinel and an Advanced Hunting variant of a query in one `.kql`
file that way; read as one query it is invalid KQL (Kusto.Language agrees). Only such text is cut,
and never a query a blank line merely breaks: that one keeps its own syntax error."""

from __future__ import annotations

from pathlib import Path

from rmm2sigma.convert import convert_input
from rmm2sigma.sigma import Options
from rmm2sigma.sources import query_blocks, read_sources

SENTINEL = "//Microsoft Sentinel query\nDeviceEvents\n| where TimeGenerated > ago(7d)\n| where ActionType == 'UserAccountCreated'\n| where AccountName != 'defaultuser1'"  # noqa: E501
HUNTING = "//Advanced Hunting query\n\nDeviceProcessEvents\n| where Timestamp > ago(7d)\n| where FileName =~ 'net.exe' and ProcessCommandLine has 'user'"  # noqa: E501


def test_two_queries_apart_by_blank_lines_are_two_rules(tmp_path: Path) -> None:
    path = tmp_path / "variants.kql"
    path.write_text(f"//Detect a local user account created\n\n{SENTINEL}\n\n{HUNTING}\n", encoding="utf-8")
    sources = read_sources(str(path))
    assert [(s.where, s.kql_line, s.kql.splitlines()[-1]) for s in sources] == [
        ("query 1 (line 3)", 3, "| where AccountName != 'defaultuser1'"),
        ("query 2 (line 11)", 11, "| where FileName =~ 'net.exe' and ProcessCommandLine has 'user'"),
    ]
    assert "2 queries apart from each other by blank lines" in sources[0].warnings[0]
    result = convert_input(str(path), Options(), ("kusto",))
    assert result.status == "converted" and len(result.rules) == 2
    assert [r.filename.split("_")[0] for r in result.rules] == ["win", "proc"]  # two log sources


def test_let_statements_go_with_the_query_after_them() -> None:
    text = f"let Window = 7d;\nlet Account = 'x';\n\n{SENTINEL}\n\n{HUNTING}"
    blocks = query_blocks(text)
    assert blocks is not None and [line for line, _ in blocks] == [1, 12]
    assert blocks[0][1].startswith("let Window = 7d;") and "UserAccountCreated" in blocks[0][1]


def test_a_query_a_blank_line_breaks_is_not_cut_and_keeps_its_error(tmp_path: Path) -> None:
    """`DeviceProcessEvents | where a` would convert on its own: cutting there would give a rule
    the author never wrote. A block starting with `|` continues the one before it."""
    broken = "DeviceProcessEvents\n| where FileName =~ 'a.exe'\n\n| where ProcessCommandLine hass 'x'\n"
    assert query_blocks(broken) is None
    path = tmp_path / "broken.kql"
    path.write_text(broken, encoding="utf-8")
    result = convert_input(str(path), Options(), ("kusto",))
    assert result.status == "failed" and (result.error or "").startswith(
        f"{path}:4:28: unexpected name 'hass'"
    )


def test_text_that_parses_whole_or_a_block_of_no_table_is_one_query() -> None:
    assert query_blocks(f"{SENTINEL}\n\n| where AccountDomain != 'nt authority'") is None  # valid whole
    assert query_blocks(f"{SENTINEL}\n\nAccountName == 'x'\n\nbad ==") is None  # an expression is no query
