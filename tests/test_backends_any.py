"""Any installed pySigma backend is a target: pysigma-backend-secops (in the test extra) through --target."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rmm2sigma.cli import app
from rmm2sigma.plugins import installed

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NETWORK = EXAMPLES / "remotepc_network_connection.txt"


def test_discovery_finds_secops_with_its_formats_and_pipeline() -> None:
    secops = installed()["secops"]
    assert "yara_l" in secops.formats
    assert secops.default_pipelines == ("secops_udm",)


def test_targets_command_lists_builtin_and_installed() -> None:
    result = CliRunner().invoke(app, ["targets"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[0] == "kusto" and "sentinel" in lines[1] and "microsoft_xdr" in lines[2]
    secops = next(i for i, line in enumerate(lines) if line.split()[:1] == ["secops"])
    assert "yara_l" in lines[secops + 1] and "secops_udm" in lines[secops + 2]


def test_secops_target_case_insensitive_and_unproven(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["convert", str(NETWORK), "--out", str(tmp_path), "--target", "SecOps:YARA_L,Splunk"]
    )
    assert result.exit_code == 0, result.output
    (rule,) = json.loads((tmp_path / "report.json").read_text())["inputs"][0]["rules"]
    assert "target.hostname = /remotepc\\.com/ nocase" in rule["queries"]["secops"]
    assert rule["fidelity_by_target"]["secops"] == "unproven"
    assert rule["fidelity_by_target"]["splunk"] == "approximate"
    assert any(note.startswith("secops: ") and "unproven" in note for note in rule["notes"])
    stem = Path(rule["sigma"]).stem
    assert (tmp_path / f"backends/secops/{stem}.txt").read_text().startswith("(metadata.event_type")
    yara_l = (tmp_path / f"deploy/secops/{stem}.yara_l").read_text()
    assert yara_l.lstrip().startswith("rule ") and "events:" in yara_l
    assert (tmp_path / "deploy/splunk/savedsearches.conf").exists()


def test_backend_refusal_is_a_target_error_not_a_crash(tmp_path: Path) -> None:
    """SecOps' UDM has no field for a process's company: a located target error, the batch goes on."""
    result = CliRunner().invoke(app, ["convert", str(EXAMPLES), "--out", str(tmp_path), "-t", "secops"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["targets"]["secops"] == {"converted": 1, "failed": 4}
    partial = [i for i in report["inputs"] if i["status"] == "partial"]
    assert len(partial) == 4
    assert all("secops:" in i["error"] and "internal error" not in i["error"] for i in partial)


def test_unknown_target_names_the_choices(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["convert", str(NETWORK), "--out", str(tmp_path), "-t", "nosuch"])
    assert result.exit_code == 2
    assert "unknown target 'nosuch'" in result.output and "secops" in result.output
