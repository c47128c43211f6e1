"""The pre-commit hook, run by pre-commit itself (``pre-commit try-repo``) on a detections repository.

pre-commit builds the hook's own environment from this checkout (``pip install .``), as it does
for a user; that install is the slow part (about two minutes), so one run checks both outcomes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
id: 0f6c2f4e-3a7b-4c1d-9e2f-1a2b3c4d5e6f
name: Demo RMM tool started
description: Finds the demo tool starting.
query: |
  DeviceProcessEvents
  | where FileName =~ "demo.exe"
"""
BROKEN = """\
id: 1f6c2f4e-3a7b-4c1d-9e2f-1a2b3c4d5e6f
name: Broken query
description: A query with a pipe and no operator.
query: |
  DeviceProcessEvents
  | Sha1 in ("x")
"""


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_hook_converts_good_files_and_fails_on_a_broken_one(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("pre-commit needs git")
    hook = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hook] == ["rmm2sigma"]
    repo = tmp_path / "detections"
    (repo / "Detections").mkdir(parents=True)
    (repo / "Detections/good.yaml").write_text(GOOD)
    (repo / "Detections/broken.yaml").write_text(BROKEN)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    environment = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    result = subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "rmm2sigma", "--all-files"],
        cwd=repo,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "rmm2sigma convert" in output and "Failed" in output
    assert "FAILED: Detections/broken.yaml:6:5: unexpected name 'Sha1'" in output  # located
    assert "FAILED: Detections/good.yaml" not in output
    generated = list((repo / ".rmm2sigma/sigma_rules").rglob("*.yml"))
    assert [yaml.safe_load(p.read_text())["title"] for p in generated] == ["Demo RMM Tool Started"]
    assert (repo / ".rmm2sigma/deploy/splunk/savedsearches.conf").exists()
