"""The pipeline plugin through sigma-cli's ``sigma`` command, installed from the built wheel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, WheelEnv


@pytest.fixture(scope="module")
def converted(wheel_env: WheelEnv, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("plugin") / "out"
    result = wheel_env.run("rmm2sigma", "convert", str(ROOT / "examples"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "report.json").read_text())


def _rule(report: dict[str, Any], category: str) -> dict[str, Any]:
    return next(r for i in report["inputs"] for r in i["rules"] if f"/{category}/" in r["sigma"])


def _sigma(env: WheelEnv, *args: str) -> str:
    result = env.run("sigma", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_sigma_lists_our_pipelines(wheel_env: WheelEnv) -> None:
    listed = _sigma(wheel_env, "list", "pipelines")
    for name in ("kusto", "splunk", "lucene", "esql", "eql"):
        assert f"rmm2sigma_{name}" in listed


def test_plugin_comes_from_the_wheel(wheel_env: WheelEnv) -> None:
    result = wheel_env.run(
        "python",
        "-c",
        "import sigma.pipelines.rmm2sigma as m, rmm2sigma; print(m.__file__, rmm2sigma.__file__)",
    )
    assert result.returncode == 0, result.stderr
    assert str(ROOT / "src") not in result.stdout and str(wheel_env.root) in result.stdout


def test_sigma_lucene_gives_rmm2sigmas_query(
    wheel_env: WheelEnv, converted: tuple[Path, dict[str, Any]]
) -> None:
    out, report = converted
    rule = _rule(report, "process_creation")
    query = _sigma(
        wheel_env,
        "convert",
        "-t",
        "lucene",
        "-p",
        "ecs_windows",
        "-p",
        "rmm2sigma_lucene",
        str(out / rule["sigma"]),
    )
    assert query == rule["queries"]["lucene"]
    assert "[nN]" in query or "[" in query  # the case-insensitive rewrite ran


def test_sigma_kusto_keeps_the_defender_table(
    wheel_env: WheelEnv, converted: tuple[Path, dict[str, Any]]
) -> None:
    out, report = converted
    rule = _rule(report, "image_load")
    query = _sigma(
        wheel_env,
        "convert",
        "-t",
        "kusto",
        "-p",
        "microsoft_xdr",
        "-p",
        "rmm2sigma_kusto",
        str(out / rule["sigma"]),
    )
    # the Sigma file has no window or aggregation: the first lines of rmm2sigma's query
    expected = rule["queries"]["kusto"].split("\n| where Timestamp")[0]
    assert query == expected
    assert query.startswith("DeviceFileCertificateInfo\n| where Signer contains")


def test_rule_attributes_bring_back_window_and_aggregation(
    wheel_env: WheelEnv, converted: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, report = converted
    rule = _rule(report, "image_load")
    attributes = (
        "rmm2sigma:\n    window: {seconds: 432000, compact: 5d}\n"
        "    functions: [{name: Count, function: count, column: null}]\n    by: [DeviceId, DeviceName]\n"
    )
    path = tmp_path / "rule.yml"
    path.write_text((out / rule["sigma"]).read_text() + attributes)
    query = _sigma(
        wheel_env, "convert", "-t", "kusto", "-p", "microsoft_xdr", "-p", "rmm2sigma_kusto", str(path)
    )
    assert query.endswith(
        "| where Timestamp between (ago(5d) .. now())\n| summarize Count=count() by DeviceId, DeviceName"
    )


def test_our_backends_render_case_sensitive_tests(wheel_env: WheelEnv, tmp_path: Path) -> None:
    """pySigma's KQL backend refuses |cased; ours (the backend plugin) writes KQL's own `==`."""
    path = tmp_path / "cased.yml"
    path.write_text(
        "title: Cased Account\nid: 9d1b2c3e-4f50-4a61-8b72-93a4b5c6d7e8\nstatus: experimental\n"
        "logsource:\n    product: windows\n    category: process_creation\n"
        "detection:\n    selection:\n        User|cased: SYSTEM\n        ProcessId: [5938, 7070]\n"
        "    condition: selection\nlevel: medium\n"
    )
    assert "rmm2sigma_kusto" in _sigma(wheel_env, "list", "targets")
    command = ("convert", "--disable-pipeline-check", "-t", "rmm2sigma_kusto", "-p", "microsoft_xdr")
    query = _sigma(wheel_env, *command, str(path))
    assert 'AccountName == "SYSTEM"' in query and "ProcessId in (5938, 7070)" in query
