"""What a new user hits first: the installed package, re-runs, usage errors, stdin, plain KQL files."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import WheelEnv
from rmm2sigma.cli import app
from rmm2sigma.convert import convert_input
from rmm2sigma.sigma import DEFAULT_DATE, Options

REPO = Path(__file__).resolve().parents[1]
convert_module = importlib.import_module("rmm2sigma.convert")  # the module: rmm2sigma.convert is the API
EXAMPLES = REPO / "examples"
PLAIN_KQL_AS_YAML = """\
//Title:WebDav Client Execution - Network connections using DavSetCookie
//Description:Detects rundll32 running the WebDAV client's DavSetCookie export.
//Author:someone
DeviceProcessEvents
| where ProcessCommandLine contains @'davclnt.dll,DavSetCookie'
"""


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rmm2sigma", *args], input=stdin, capture_output=True, text=True, check=False
    )


# ---------------------------------------------------------------- install and set-up


def test_the_wheel_holds_every_data_file_the_package_reads(wheel_env: WheelEnv) -> None:
    """Every non-Python file under src/ that git tracks is in the built wheel (defender.yml was not)."""
    wheel = wheel_env.wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(
        ["git", "-C", REPO, "ls-files", "src/rmm2sigma"], capture_output=True, text=True, check=True
    ).stdout.split()
    data = [f.removeprefix("src/") for f in tracked if not f.endswith(".py")]
    assert "rmm2sigma/mapping/defender.yml" in data
    assert [f for f in data if f not in names] == []


def test_an_internal_error_names_the_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*_: object, **__: object) -> None:
        raise FileNotFoundError(
            2, "No such file or directory", "/site-packages/rmm2sigma/mapping/defender.yml"
        )

    monkeypatch.setattr(convert_module, "map_detection", missing)
    source = tmp_path / "q.kql"
    source.write_text('DeviceProcessEvents | where FileName =~ "a.exe"\n')
    result = convert_input(str(source), Options(), ())
    assert result.status == "failed" and result.error is not None
    assert "internal error" in result.error and "mapping/defender.yml" in result.error


def test_python_dash_m_and_version() -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("rmm2sigma ")
    assert run("--help").returncode == 0


# ---------------------------------------------------------------- re-running


def test_the_readme_command_gives_the_same_files_on_another_day(tmp_path: Path) -> None:
    """No date from the clock: the same inputs and options give byte-identical files, and a re-run
    without --force succeeds because nothing differs."""
    out = tmp_path / "out"
    first = CliRunner().invoke(app, ["convert", str(EXAMPLES), "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert all(f"date: {DEFAULT_DATE.isoformat()}" in p.read_text() for p in out.rglob("*.yml"))
    again = CliRunner().invoke(app, ["convert", str(EXAMPLES), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_the_source_date_wins_over_the_default_and_date_over_both(tmp_path: Path) -> None:
    source = tmp_path / "dated.yaml"
    source.write_text(
        "name: Dated rule\nlastUpdatedDate: 2024-05-01\n"
        'query: |\n  DeviceProcessEvents\n  | where FileName =~ "a.exe"\n'
    )
    (rule,) = convert_input(str(source), Options(), ()).rules
    assert "date: 2024-05-01" in rule.yaml
    (rule,) = convert_input(str(source), Options(date=DEFAULT_DATE.replace(year=2030)), ()).rules
    assert "date: 2030-11-23" in rule.yaml


def test_a_blocked_rerun_names_every_file_in_the_way(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["convert", str(EXAMPLES), "--out", str(out)]).exit_code == 0
    edited = sorted(out.glob("sigma_rules/*/*.yml"))[:2]
    for path in edited:
        path.write_text(path.read_text() + "# tuned by hand\n")
    result = CliRunner().invoke(app, ["convert", str(EXAMPLES), "--out", str(out)])
    assert result.exit_code == 1
    for path in (*edited, out / "report.json"):
        assert str(path) in result.stderr, result.stderr
    assert all(path.read_text().endswith("# tuned by hand\n") for path in edited)


def test_out_on_a_file_is_a_usage_error(tmp_path: Path) -> None:
    in_the_way = tmp_path / "o"
    in_the_way.write_text("mine")
    result = CliRunner().invoke(app, ["convert", str(EXAMPLES), "--out", str(in_the_way)])
    assert result.exit_code == 2
    assert in_the_way.read_text() == "mine"


# ---------------------------------------------------------------- labels


def test_the_headline_label_is_the_worst_target_label(tmp_path: Path) -> None:
    source = tmp_path / "q.kql"
    source.write_text('DeviceProcessEvents | where ProcessCommandLine has "psexec"\n')
    (rule,) = convert_input(str(source), Options()).rules
    order = ["exact", "widened", "approximate", "narrowed", "diverged"]
    assert rule.fidelity.value == max(rule.fidelity_by_target.values(), key=order.index)


# ---------------------------------------------------------------- inputs


def test_plain_kql_saved_as_yaml_converts_with_its_comment_header(tmp_path: Path) -> None:
    source = tmp_path / "WebDav-Client-Execution.yaml"
    source.write_text(PLAIN_KQL_AS_YAML)
    result = convert_input(str(source), Options(), ("kusto",))
    assert result.status == "converted", result.error
    assert any("plain KQL" in warning for warning in result.warnings)
    (rule,) = result.rules
    assert rule.title == "WebDav Client Execution - Network Connections Using DavSetCookie"
    assert "DavSetCookie export" in rule.yaml


def test_yaml_that_is_a_mapping_without_query_is_still_refused(tmp_path: Path) -> None:
    source = tmp_path / "other.yaml"
    source.write_text("name: not a query\nkind: Scheduled\n")
    result = convert_input(str(source), Options(), ())
    assert result.status == "failed" and "no `query:` key" in (result.error or "")


def test_a_conversion_read_from_stdin_can_be_verified(tmp_path: Path) -> None:
    out = tmp_path / "out"
    converted = run(
        "convert",
        "-",
        "--out",
        str(out),
        "-t",
        "kusto",
        stdin='DeviceProcessEvents | where FileName =~ "x.exe"\n',
    )
    assert converted.returncode == 0, converted.stderr
    proved = run("verify", str(out))
    assert proved.returncode == 0, proved.stdout + proved.stderr
    (rule,) = json.loads((out / "verify.json").read_text())["rules"]
    assert not rule.get("error"), rule
    assert rule["targets"]["kusto"]["verdict"] == "exact"
