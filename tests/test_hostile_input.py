"""Hostile input: every bad file fails alone with a one-line located reason, and the batch goes on."""

from __future__ import annotations

import codecs
import datetime as dt
import json
import os
import re
import time
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rmm2sigma.cli import app
from rmm2sigma.convert import InputResult, convert_all, convert_input
from rmm2sigma.sigma import Options
from rmm2sigma.sources import MAX_INPUT_BYTES, MAX_YAML_DEPTH

OPTIONS = Options(date=dt.date(2026, 1, 2))

GOOD_YAML = """\
id: 0b6f4a1e-1111-4222-8333-444455556666
name: Remote Management and Monitoring tool - Hostile - Create Process
description: |
  Finds the hostile test tool starting on an endpoint.
severity: Medium
query: |
  DeviceProcessEvents
  | where FileName =~ "hostile.exe"
"""
GOOD_KQL = 'DeviceNetworkEvents\n| where RemoteUrl has "relay.example.org"\n'


def convert_bytes(tmp_path: Path, name: str, data: bytes) -> InputResult:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return convert_input(str(path), OPTIONS, ())


def failed_at(result: InputResult, message: str, line: int | None = None, column: int | None = None) -> None:
    """The result failed with ``message``, one line, located as given."""
    assert result.status == "failed", result
    assert result.error is not None and "\n" not in result.error
    where = result.source + (f":{line}" if line else "") + (f":{column}" if column else "")
    assert result.error.startswith(f"{where}: "), result.error
    assert message in result.error, result.error


def alias_bomb(levels: int = 12, width: int = 10) -> str:
    """A billion-laughs document: ``width ** levels`` strings if the aliases were ever expanded."""
    lines = ['l0: &l0 ["lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\nquery: DeviceProcessEvents | where FileName =~ 'a.exe'\n"


# ---------------------------------------------------------------- files and encodings


def test_empty_and_blank_files_fail(tmp_path: Path) -> None:
    failed_at(convert_bytes(tmp_path, "empty.yaml", b""), "file is empty")
    failed_at(convert_bytes(tmp_path, "blank.kql", b" \n\t\n"), "file is empty")


def test_binary_file_is_refused_at_its_first_nul(tmp_path: Path) -> None:
    failed_at(convert_bytes(tmp_path, "tool.kql", b"\x7fELF\x02\x01\x01\x00\x00"), "binary file", 1, 8)


def test_invalid_utf8_is_located(tmp_path: Path) -> None:
    data = b'DeviceProcessEvents\n| where FileName == "caf\xe9.exe"\n'
    failed_at(convert_bytes(tmp_path, "latin1.kql", data), "not valid UTF-8 (byte 0xe9)", 2, 25)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-8"])
def test_bom_marked_files_are_decoded_and_converted(tmp_path: Path, codec: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}
    bom |= {"utf-32-le": codecs.BOM_UTF32_LE, "utf-8": codecs.BOM_UTF8}
    data = bom[codec] + GOOD_YAML.replace("\n", "\r\n").encode(codec)
    result = convert_bytes(tmp_path / codec, "rule.yaml", data)
    plain = convert_bytes(tmp_path / "plain", "rule.yaml", GOOD_YAML.encode())
    assert result.status == "converted", result.error
    assert result.rules[0].yaml == plain.rules[0].yaml


def test_invalid_utf16_is_located(tmp_path: Path) -> None:
    data = codecs.BOM_UTF16_LE + "Device\n".encode("utf-16-le") + b"\x00\xd8"  # a lone surrogate
    failed_at(convert_bytes(tmp_path, "broken.kql", data), "not valid UTF-16", 2, 1)


def test_files_over_the_limit_are_refused_with_the_limit(tmp_path: Path) -> None:
    data = GOOD_KQL.encode() + b"//" + b"x" * MAX_INPUT_BYTES
    failed_at(convert_bytes(tmp_path, "huge.kql", data), f"over the {MAX_INPUT_BYTES}-byte limit")
    piped = convert_input("-", OPTIONS, (), data=data)
    failed_at(piped, f"over the {MAX_INPUT_BYTES}-byte limit")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.kql"
    os.mkfifo(pipe)
    fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # a reader keeps opening for write from blocking
    try:
        writer = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        os.close(writer)
        failed_at(convert_input(str(pipe), OPTIONS, ()), "not a regular file")
    finally:
        os.close(fd)


def test_a_missing_file_fails_alone(tmp_path: Path) -> None:
    failed_at(convert_input(str(tmp_path / "gone.kql"), OPTIONS, ()), "cannot read")


# ---------------------------------------------------------------- YAML


def test_yaml_with_tabs_is_recovered_with_a_located_warning(tmp_path: Path) -> None:
    text = 'name: Tabbed\nquery: |\n\tDeviceProcessEvents\n\t| where FileName =~ "a.exe"\n'
    result = convert_bytes(tmp_path, "tabs.yaml", text.encode())
    assert result.status == "converted", result.error
    assert result.warnings[0].startswith("not valid YAML (line 3 column 1:")


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    failed_at(
        convert_bytes(tmp_path, "dup.yaml", (GOOD_YAML + "name: again\n").encode()), "duplicate key", 9, 1
    )


def test_anchors_are_fine_but_aliases_are_refused(tmp_path: Path) -> None:
    anchored = GOOD_YAML.replace("severity: Medium", "severity: &level Medium")
    assert convert_bytes(tmp_path, "anchor.yaml", anchored.encode()).status == "converted"
    aliased = anchored + "level: *level\n"
    failed_at(convert_bytes(tmp_path, "alias.yaml", aliased.encode()), "aliases", 9, 8)


def test_an_alias_bomb_is_refused_before_expansion(tmp_path: Path) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = convert_bytes(tmp_path, "bomb.yaml", alias_bomb().encode())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    failed_at(result, "aliases", 2, 10)
    assert peak < 5_000_000 and time.perf_counter() - started < 5


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_yaml_is_refused_not_a_recursion_error(tmp_path: Path, opening: str) -> None:
    """Refused cleanly, on line 1, somewhere in the brackets, whoever notices first.

    Our own limit (64 levels) and the YAML library's (libyaml or PyYAML's own, which differ between
    releases) both give a one-line located refusal, and when YAML gives up, layout recovery hands the
    text to the KQL parser, whose depth limit refuses it: the behaviour is the same either way.
    """
    text = "query: " + opening * 50_000
    result = convert_bytes(tmp_path, "deep.yaml", text.encode())
    assert result.status == "failed" and result.error is not None and "\n" not in result.error
    match = re.match(rf"{re.escape(result.source)}:1:(\d+): (.*)$", result.error)
    assert match, result.error
    assert 8 <= int(match.group(1)) <= len(text), result.error
    assert re.search(r"nest|deep", match.group(2), re.I), result.error


@pytest.mark.parametrize(
    ("opening", "column"), [("[", 8 + MAX_YAML_DEPTH - 1), ("{a: ", 8 + 4 * (MAX_YAML_DEPTH - 1))]
)
def test_our_yaml_depth_limit_is_exact(tmp_path: Path, opening: str, column: int) -> None:
    """Below any YAML library's own limit, ours refuses at the 65th level (the document is the first)."""
    text = "query: " + opening * (MAX_YAML_DEPTH + 6)
    failed_at(
        convert_bytes(tmp_path, "deep.yaml", text.encode()), f"nested deeper than {MAX_YAML_DEPTH}", 1, column
    )


def test_python_tags_are_refused_not_constructed(tmp_path: Path) -> None:
    text = "name: x\nquery: !!python/object/apply:os.system ['echo owned']\n"
    failed_at(convert_bytes(tmp_path, "tag.yaml", text.encode()), "is not accepted", 2, 8)


def test_yaml_that_is_not_a_query_is_refused(tmp_path: Path) -> None:
    failed_at(convert_bytes(tmp_path, "list.yaml", b"- a\n- b\n"), "has no `query:` key", 1, 1)
    failed_at(convert_bytes(tmp_path, "number.yaml", b"query: 42\n"), "`query:` is empty or not text")


def test_control_characters_give_a_one_line_located_warning(tmp_path: Path) -> None:
    text = GOOD_YAML.replace("name: Remote", "name: Re\x01mote")
    result = convert_bytes(tmp_path, "control.yaml", text.encode())
    assert result.status == "converted", result.error
    assert result.warnings[0].startswith("not valid YAML (line 2 column 9: character #x0001")
    assert "\n" not in result.warnings[0]


def test_an_unusable_manifest_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "MANIFEST.tsv").write_bytes(b"file\tsource_repo\n\xff\xfe\x00junk")
    result = convert_bytes(tmp_path, "rule.yaml", GOOD_YAML.encode())
    assert result.status == "converted", result.error
    assert any("MANIFEST.tsv" in warning for warning in result.warnings)


# ---------------------------------------------------------------- KQL and pages


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_parentheses_fail_cleanly(tmp_path: Path, depth: int) -> None:
    kql = "DeviceProcessEvents | where " + "(" * depth + "FileName =~ 'a'" + ")" * depth
    failed_at(convert_bytes(tmp_path, "deep.kql", kql.encode()), "nesting deeper than 64", 1, 93)


def test_unterminated_string_is_located(tmp_path: Path) -> None:
    kql = 'DeviceProcessEvents\n| where FileName =~ "abc\n'
    failed_at(convert_bytes(tmp_path, "open.kql", kql.encode()), "unterminated string", 2, 21)


def test_errors_inside_yaml_point_into_the_yaml_file(tmp_path: Path) -> None:
    text = GOOD_YAML.replace('"hostile.exe"', '"hostile.exe')
    failed_at(convert_bytes(tmp_path, "open.yaml", text.encode()), "unterminated string", 8, 23)


def test_unknown_table_and_column_are_named(tmp_path: Path) -> None:
    unknown_table = b'FooBarEvents\n| where FileName =~ "a"\n'
    failed_at(convert_bytes(tmp_path, "t.kql", unknown_table), "unknown table 'FooBarEvents'", 1, 1)
    unknown_column = b'DeviceProcessEvents\n| where Bogus =~ "a"\n'
    failed_at(convert_bytes(tmp_path, "c.kql", unknown_column), "unknown column 'Bogus'", 2, 9)


def test_a_nul_after_the_sniffed_prefix_is_a_located_syntax_error(tmp_path: Path) -> None:
    data = GOOD_KQL.encode() + b" " * 5000 + b"\x00"
    failed_at(convert_bytes(tmp_path, "late.kql", data), "unexpected character '\\x00'", 3, 5001)


def test_page_parsing_is_linear_in_the_input(tmp_path: Path) -> None:
    """A multi-line regex once took minutes on this page; line-by-line parsing takes milliseconds."""
    page = "KQL Query\n" + GOOD_KQL + "Scenario: x" + " \n" * 200_000 + "Original source: a" + " " * 200_000
    started = time.perf_counter()
    result = convert_bytes(tmp_path, "page.txt", page.encode())
    assert result.status == "converted", result.error
    assert time.perf_counter() - started < 5


# ---------------------------------------------------------------- the command line


HOSTILE: dict[str, tuple[bytes, str, int | None, int | None]] = {
    "empty.yaml": (b"", "file is empty", None, None),
    "binary.kql": (b"MZ\x90\x00\x03", "binary file", 1, 4),
    "latin1.kql": (b'DeviceProcessEvents | where FileName == "\xe9"', "not valid UTF-8", 1, 42),
    "dup.yaml": ((GOOD_YAML + "id: x\n").encode(), "duplicate key 'id'", 9, 1),
    "bomb.yaml": (alias_bomb().encode(), "aliases", 2, 10),
    "deep.kql": (b"DeviceProcessEvents | where " + b"(" * 5000, "nesting deeper than", 1, 93),
    "open.kql": (b'DeviceProcessEvents\n| where FileName =~ "abc\n', "unterminated string", 2, 21),
    "table.kql": (b"NoSuchTable | where A == 'b'", "unknown table 'NoSuchTable'", 1, 1),
    "column.kql": (b"DeviceProcessEvents | where Nope == 'b'", "unknown column 'Nope'", 1, 29),
    "huge.kql": (b"//" + b"x" * MAX_INPUT_BYTES, "byte limit", None, None),
}


def test_the_cli_converts_the_good_and_reports_each_bad_file(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = {
        "good.yaml": GOOD_YAML.encode(),
        "good.kql": GOOD_KQL.encode(),
        "utf16.yaml": codecs.BOM_UTF16_LE + GOOD_YAML.replace("Hostile", "Wide").encode("utf-16-le"),
        "tabs.yaml": b"name: Tabs\nquery: |\n\tDeviceProcessEvents\n\t| where FileName =~ 'tab.exe'\n",
    }
    for name, data in good.items():
        (folder / name).write_bytes(data)
    for name, (data, *_) in HOSTILE.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["convert", str(folder), "--out", str(out), "-t", "kusto"])
    assert done.exit_code == 1, done.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    entries = {Path(entry["source"]).name: entry for entry in report["inputs"]}
    assert set(entries) == set(good) | set(HOSTILE)
    for name in good:
        assert entries[name]["status"] == "converted", entries[name]
        for rule in entries[name]["rules"]:
            assert (out / rule["sigma"]).is_file()
    for name, (_, reason, line, column) in HOSTILE.items():
        entry = entries[name]
        assert entry["status"] == "failed" and reason in entry["error"], entry
        assert (entry["line"], entry["column"]) == (line, column), entry
        assert f"FAILED: {entry['error']}" in done.output
    assert report["summary"]["failed"] == len(HOSTILE)


def test_stdin_is_bounded_and_checked_like_a_file(tmp_path: Path) -> None:
    runner = CliRunner()
    binary = runner.invoke(app, ["convert", "-", "--out", str(tmp_path / "a")], input=b"\x00\x01")
    assert binary.exit_code == 1 and "FAILED: -:1:1: binary file" in binary.output
    huge = runner.invoke(
        app, ["convert", "-", "--out", str(tmp_path / "b")], input=b"x" * (MAX_INPUT_BYTES + 10)
    )
    assert huge.exit_code == 1 and "byte limit" in huge.output


def test_parallel_conversion_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    """Good and bad inputs through worker processes: the same results, in input order."""
    names = []
    for number in range(6):
        names.append(tmp_path / f"good{number}.kql")
        names[-1].write_text(
            f'DeviceProcessEvents | where FileName =~ "tool{number}.exe"\n', encoding="utf-8"
        )
    for name, (data, *_) in list(HOSTILE.items())[:4]:
        names.append(tmp_path / name)
        names[-1].write_bytes(data)
    paths = [str(path) for path in names]
    serial = convert_all(paths, OPTIONS, ("kusto",), workers=1)
    parallel = convert_all(paths, OPTIONS, ("kusto",), workers=2)
    assert parallel == serial
    assert [result.source for result in parallel] == paths
