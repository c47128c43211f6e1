"""Validate KQL with Microsoft's official parser (Kusto.Language) against the Defender schema.

Kusto.Language is a .NET library; its JavaScript build (npm ``@kusto/language-service-next``) runs
under node. ``validate_kql`` analyses a whole batch in one node process (``tools/kusto/validate.js``),
because loading the library is what costs time. Install it with ``npm ci --prefix tools/kusto`` or
point ``RMM2SIGMA_KUSTO_DIR`` at a folder containing ``node_modules/@kusto/language-service-next``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

ENV_VAR = "RMM2SIGMA_KUSTO_DIR"
_PACKAGE = Path("node_modules") / "@kusto" / "language-service-next"
_SCRIPT = "validate.js"


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


def _repo_tools_dir() -> Path | None:
    """The repo's ``tools/kusto`` (walking up from this file), if it has validate.js."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tools" / "kusto"
        if (candidate / _SCRIPT).is_file():
            return candidate
    return None


def kusto_tools_dir() -> Path | None:
    """Folder whose ``node_modules`` holds Kusto.Language, or None when it is not installed.

    ``RMM2SIGMA_KUSTO_DIR`` wins when set (even if it does not exist, so it can disable the check);
    otherwise the repo's ``tools/kusto`` is used when ``npm ci`` has been run there.
    """
    configured = os.environ.get(ENV_VAR)
    directory = Path(configured) if configured else _repo_tools_dir()
    if directory is None or not (directory / _PACKAGE).is_dir():
        return None
    return directory


def _script(tools_dir: Path) -> Path | None:
    for directory in (tools_dir, _repo_tools_dir()):
        if directory is not None and (directory / _SCRIPT).is_file():
            return directory / _SCRIPT
    return None


def kusto_available() -> bool:
    """True when node is on PATH and Kusto.Language plus validate.js can be found."""
    tools_dir = kusto_tools_dir()
    return shutil.which("node") is not None and tools_dir is not None and _script(tools_dir) is not None


@cache
def _defender_schema() -> dict[str, list[list[str]]]:
    text = files("rmm2sigma.data").joinpath("defender_schema.json").read_text(encoding="utf-8")
    schema: dict[str, list[list[str]]] = json.loads(text)
    return schema


def validate_kql(
    queries: Sequence[str],
    schema: Mapping[str, Sequence[Sequence[str]]] | None = None,
) -> list[list[KustoDiagnostic]]:
    """Parse and bind every query; returns, per query in order, all its diagnostics (any severity).

    ``schema`` maps table name to ``[column, type]`` pairs (default: the packaged Defender schema).
    Raises RuntimeError when node or Kusto.Language is unavailable or the validator fails.
    """
    node = shutil.which("node")
    tools_dir = kusto_tools_dir()
    script = _script(tools_dir) if tools_dir is not None else None
    if node is None:
        raise RuntimeError("Kusto.Language validation needs node on PATH (Node.js 20+).")
    if tools_dir is None or script is None:
        raise RuntimeError(
            "Kusto.Language is not installed: run `npm ci --prefix tools/kusto` in the repo, "
            f"or set {ENV_VAR} to a folder containing node_modules/@kusto/language-service-next."
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
