"""The command line as a person meets it: progress on a terminal only, ``--json`` for machines,
the offending source line with a caret under a failure, and a summary naming non-exact rules."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from rmm2sigma.cli import app
from rmm2sigma.console import PROGRESS_MIN_INPUTS, caret

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BAD_KQL = "DeviceProcessEvents\n| where FileName =~ 'a.exe'\n| where ProcessCommandLine hass 'x'\n"
BAD_AT = (3, 28)  # line, column of `hass`, the token that does not parse


def _caret_column(lines: list[str], number: int) -> int:
    """The 1-based column the caret points at, under the ``   N | `` source line."""
    source = next(i for i, line in enumerate(lines) if line.startswith(f"{number:>5} | "))
    marker = lines[source + 1]
    return marker.index("^") - marker.index("| ") - 1


def test_a_failure_quotes_the_line_with_a_caret_under_the_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.kql"
    bad.write_text(BAD_KQL, encoding="utf-8")
    done = CliRunner().invoke(app, ["convert", str(bad), str(EXAMPLES), "-o", str(tmp_path / "out")])
    assert done.exit_code == 1
    lines = done.stdout.splitlines()
    failure = next(i for i, line in enumerate(lines) if line.startswith("FAILED: "))
    assert lines[failure].startswith(f"FAILED: {bad}:{BAD_AT[0]}:{BAD_AT[1]}: ")
    assert lines[failure + 1] == f"    3 | {BAD_KQL.splitlines()[2]}"
    assert _caret_column(lines, 3) == BAD_AT[1]
    assert BAD_KQL.splitlines()[2][BAD_AT[1] - 1 :].startswith("hass")
    entry = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["inputs"][0]
    assert (entry["line"], entry["column"]) == BAD_AT and "\n" not in entry["error"]  # report stays one line


def test_the_caret_reads_stdin_and_yaml_positions_in_the_original_text(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["convert", "-", "-o", str(tmp_path / "a")], input=BAD_KQL)
    assert done.exit_code == 1 and f"FAILED: -:{BAD_AT[0]}:{BAD_AT[1]}:" in done.stdout
    assert _caret_column(done.stdout.splitlines(), 3) == BAD_AT[1]
    yaml_text = "name: Probe tool\nquery: |\n  DeviceProcessEvents\n  | where FileName =~ 'a.exe'\n"
    yaml_text += "  | where ProcessCommandLine hass 'x'\n"
    rule = tmp_path / "rule.yaml"
    rule.write_text(yaml_text, encoding="utf-8")
    done = CliRunner().invoke(app, ["convert", str(rule), "-o", str(tmp_path / "b")])
    lines = done.stdout.splitlines()
    assert f"FAILED: {rule}:5:30:" in done.stdout
    assert "    5 |   | where ProcessCommandLine hass 'x'" in lines
    assert _caret_column(lines, 5) == 30


def test_caret_lines_up_under_tabs_control_characters_and_long_lines() -> None:
    text, marker = caret("\tab\x07cd", 5, 1)  # column 5 is `c`, after a tab and a BEL shown as \x07
    assert text == "    1 | \tab\\x07cd" and marker == "      | \t      ^"
    assert text.index("c") == marker.index("^")
    long = "x" * 500 + "HERE" + "y" * 500
    text, marker = caret(long, 501, 7)
    assert len(text) < 120 and text[marker.index("^") :].startswith("HERE")


def test_json_prints_only_the_summary_on_stdout(tmp_path: Path) -> None:
    bad = tmp_path / "bad.kql"
    bad.write_text(BAD_KQL, encoding="utf-8")
    done = CliRunner().invoke(app, ["convert", str(EXAMPLES), str(bad), "-o", str(tmp_path / "o"), "--json"])
    assert done.exit_code == 1
    summary = json.loads(done.stdout)  # the whole of stdout is one JSON document
    report = json.loads((tmp_path / "o" / "report.json").read_text(encoding="utf-8"))
    assert {k: summary[k] for k in report["summary"]} == report["summary"]
    assert summary["failed"] == 1 and summary["by_target"]["kusto"]["converted"] == 5
    titles = {rule["title"] for entry in report["inputs"] for rule in entry["rules"]}
    assert {e["title"] for e in summary["not_exact"]["sigma"]} == titles  # no example is exact
    assert f"FAILED: {bad}:3:28:" in done.stderr and "^" in done.stderr


def test_summary_lists_the_rules_that_are_not_exact(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["convert", str(EXAMPLES), "-o", str(tmp_path), "-t", "kusto,eql"])
    assert done.exit_code == 0
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    for entry in report["inputs"]:
        rule = entry["rules"][0]
        for target in ("kusto", "eql"):
            label = rule["fidelity_by_target"][target]
            group = done.stdout[done.stdout.index(target) :]
            assert f"  {label:<12}{rule['sigma']}" in group
    assert "not exact on " in done.stdout and "reports: " in done.stdout


def _run(tmp_path: Path, *extra: str, tty: bool) -> tuple[str, str]:
    """Run the real CLI in a subprocess, stderr on a pseudo-terminal or a pipe; (stdout, stderr)."""
    inputs = tmp_path / "in"
    shutil.copytree(EXAMPLES, inputs, dirs_exist_ok=True)
    shutil.copy(EXAMPLES / "supremo_create_process.txt", inputs / "copy_create_process.txt")
    assert len(list(inputs.iterdir())) > PROGRESS_MIN_INPUTS
    command = [sys.executable, "-c", "from rmm2sigma.cli import main; main()", "convert", str(inputs)]
    command += ["-o", str(tmp_path / "out"), "--force", "-t", "kusto", *extra]
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    if not tty:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower, env=env) as process:
        os.close(follower)
        captured = b""
        while True:
            ready, _, _ = select.select([leader], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            captured += chunk
        stdout = process.stdout.read().decode() if process.stdout else ""
    os.close(leader)
    return stdout, captured.decode(errors="replace")


def test_progress_is_drawn_on_a_terminal_only(tmp_path: Path) -> None:
    stdout, stderr = _run(tmp_path, tty=True)
    assert "converting" in stderr and "6/6" in stderr  # rich's bar with its count
    assert "\x1b" not in stdout and "converting" not in stdout
    assert "inputs" in stdout
    quiet_out, quiet_err = _run(tmp_path, "--quiet", tty=True)
    assert "converting" not in quiet_err and quiet_out.splitlines()[0] == stdout.splitlines()[0]
    piped_out, piped_err = _run(tmp_path, tty=False)
    assert piped_err == "" and "\x1b" not in piped_out
    for name in ("report.json", "report.md", "report.html"):
        assert "converting" not in (tmp_path / "out" / name).read_text(encoding="utf-8")


def test_importing_the_cli_stays_light() -> None:
    """``rmm2sigma --help`` must stay fast: rich's progress and pySigma load only when used."""
    probe = (
        "import sys, rmm2sigma.cli; print(sorted(m for m in ('rich.progress', 'sigma') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_verify_of_a_folder_convert_did_not_write_says_so(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["verify", str(tmp_path / "missing")])
    assert done.exit_code == 2 and "no report.json" in done.output and "Traceback" not in done.output


def test_an_input_over_the_time_limit_fails_and_the_batch_goes_on(tmp_path: Path) -> None:
    """A conversion that runs away (a defect: one query once made the lowering loop) is stopped
    at --time-limit and reported failed, naming the limit, in one process and in workers alike;
    the other inputs are still converted and every input is in the report."""
    from rmm2sigma.convert import convert_all
    from rmm2sigma.sigma import Options

    paths = sorted(str(p) for p in EXAMPLES.iterdir() if p.suffix in (".kql", ".txt", ".yaml"))
    for workers in (1, 2):
        stopped = convert_all(paths, Options(), ("kusto",), workers, time_limit=1e-6)
        assert [r.source for r in stopped] == paths
        assert all(r.status == "failed" and "--time-limit" in (r.error or "") for r in stopped)
    assert all(r.status == "converted" for r in convert_all(paths, Options(), ("kusto",), 1, time_limit=0))
    done = CliRunner().invoke(
        app, ["convert", paths[0], "-o", str(tmp_path / "o"), "--time-limit", "0.000001"]
    )
    assert done.exit_code == 1 and "longer than 1e-06 s (--time-limit)" in done.stdout


def test_the_time_limit_help_gives_the_default_convert_applies() -> None:
    """The help names the default without importing the conversion (start-up stays fast)."""
    from rmm2sigma.convert import TIME_LIMIT_SECONDS

    shown = CliRunner().invoke(app, ["convert", "--help"], env={"COLUMNS": "200"}).stdout
    assert f"(default {TIME_LIMIT_SECONDS:g})" in " ".join(shown.split())
