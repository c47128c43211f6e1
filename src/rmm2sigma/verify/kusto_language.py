"""Validate KQL with Microsoft's official parser (Kusto.Language) against the Defender schema.

Kusto.Language is a .NET library; its JavaScript build (npm ``@kusto/language-service-next``) runs
under node. ``validate_kql`` analyses a whole batch in one node process (the packaged
``validate.js``), because loading the library is what costs time.

Where the npm package is looked for, first match wins:

1. ``RMM2SIGMA_KUSTO_DIR``: a folder containing ``node_modules/@kusto/language-service-next``;
2. the user cache folder that ``rmm2sigma setup-kusto`` installs into
   (``$XDG_CACHE_HOME/rmm2sigma/kusto``, by default ``~/.cache/rmm2sigma/kusto``);
3. a source checkout's ``tools/kusto`` after ``npm ci --prefix tools/kusto``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from ..convert import defender_schema

ENV_VAR = "RMM2SIGMA_KUSTO_DIR"
NPM_PACKAGE = "@kusto/language-service-next"
NPM_VERSION = "12.4.1"
"""The version the proof was measured with; ``tools/kusto/package.json`` pins the same (a test checks)."""
_PACKAGE = Path("node_modules") / NPM_PACKAGE


@dataclass(frozen=True)
class KustoDiagnostic:
    """One Kusto.Language diagnostic; ``line`` and ``column`` are 1-based."""

    code: str
    severity: str  # "Error", "Warning", "Suggestion", ...
    message: str
    line: int
    column: int

    @property
    def is_error(self) -> bool:
        return self.severity == "Error"


def user_tools_dir() -> Path:
    """Where ``rmm2sigma setup-kusto`` installs Kusto.Language for an installed rmm2sigma."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "rmm2sigma" / "kusto"


def _repo_tools_dir() -> Path | None:
    """A source checkout's ``tools/kusto`` (walking up from this file), if there is one."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tools" / "kusto"
        if (candidate / "package.json").is_file():
            return candidate
    return None


def kusto_tools_dir() -> Path | None:
    """Folder whose ``node_modules`` holds Kusto.Language, or None when it is not installed.

    ``RMM2SIGMA_KUSTO_DIR`` wins when set (even if it does not exist, so it can disable the check).
    """
    configured = os.environ.get(ENV_VAR)
    candidates = [Path(configured)] if configured else [user_tools_dir(), _repo_tools_dir()]
    return next((d for d in candidates if d is not None and (d / _PACKAGE).is_dir()), None)


def kusto_available() -> bool:
    """True when node is on PATH and Kusto.Language can be found."""
    return shutil.which("node") is not None and kusto_tools_dir() is not None


def install_kusto(directory: Path | None = None) -> Path:
    """Install the pinned Kusto.Language with npm into ``directory`` (default: the user cache)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("installing Kusto.Language needs npm on PATH (Node.js 20+)")
    directory = directory or user_tools_dir()
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "rmm2sigma-kusto", "private": True, "dependencies": {NPM_PACKAGE: NPM_VERSION}}
    (directory / "package.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"npm install failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return directory


@cache
def _defender_schema() -> dict[str, list[list[str]]]:
    """The Defender tables as Sentinel holds them (``convert.defender_schema``: with TimeGenerated)."""
    schema = defender_schema()
    return {table: [[name, kind] for name, kind in columns.items()] for table, columns in schema.items()}


def validate_kql(
    queries: Sequence[str],
    schema: Mapping[str, Sequence[Sequence[str]]] | None = None,
) -> list[list[KustoDiagnostic]]:
    """Parse and bind every query; returns, per query in order, all its diagnostics (any severity).

    ``schema`` maps table name to ``[column, type]`` pairs (default: the Defender schema as Sentinel
    holds it).
    Raises RuntimeError when node or Kusto.Language is unavailable or the validator fails.
    """
    node = shutil.which("node")
    tools_dir = kusto_tools_dir()
    if node is None:
        raise RuntimeError("Kusto.Language validation needs node on PATH (Node.js 20+).")
    if tools_dir is None:
        raise RuntimeError(
            "Kusto.Language is not installed: run `rmm2sigma setup-kusto` (or, in a checkout, "
            f"`npm ci --prefix tools/kusto`), or set {ENV_VAR} to a folder containing "
            f"node_modules/{NPM_PACKAGE}."
        )
    if not queries:
        return []
    if schema is None:
        schema = _defender_schema()
    request = json.dumps(
        {"schema": {t: [list(c) for c in cols] for t, cols in schema.items()}, "queries": list(queries)}
    )
    env = dict(os.environ)
    env["NODE_PATH"] = os.pathsep.join(filter(None, [str(tools_dir / "node_modules"), env.get("NODE_PATH")]))
    try:
        with as_file(files(__package__).joinpath("validate.js")) as script:
            proc = subprocess.run(
                [node, str(script)],
                input=request,
                capture_output=True,
                text=True,
                encoding="utf-8",
                env=env,
                timeout=120 + 0.5 * len(queries),
                check=False,
            )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"Kusto.Language validation timed out after {exc.timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"Kusto.Language validation failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    results: list[list[dict[str, Any]]] = json.loads(proc.stdout)
    if len(results) != len(queries):
        raise RuntimeError(f"Kusto.Language returned {len(results)} results for {len(queries)} queries")
    return [
        [KustoDiagnostic(d["code"], d["severity"], d["message"], d["line"], d["column"]) for d in diagnostics]
        for diagnostics in results
    ]
