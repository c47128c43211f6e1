"""Shared test set-up: where the corpora live, and one line saying what is skipped without them.

The corpus-wide tests (marked ``corpus``) read the real Azure-Sentinel queries from ``../shared``
beside the checkout, or from ``$RMM2SIGMA_SHARED``. CI has them; on a fresh machine without them
those tests are deselected and the run ends with one line saying so (README, "The corpora").

The slow tests share one wheel of this checkout, installed in a fresh virtual environment
(``wheel_env``); SigmaHQ's snapshot is unpacked once (``sigmahq_tree``).

The plugin (``sigma.pipelines.rmm2sigma``) and the console scripts must work as a user installs
them, from the built wheel, not through the editable install of the source tree (whose ``src/sigma``
could hide a packaging mistake). The environment gets rmm2sigma and sigma-cli from the wheel and
the package index; every other dependency comes from the test environment's own site-packages
through a ``.pth`` line, which adds that folder to ``sys.path`` without running its ``.pth``
files, so the editable rmm2sigma stays out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RMM2SIGMA_SHARED") or REPO.parent / "shared")


def corpus(name: str) -> Path:
    """A corpus folder under ``shared/corpus`` (it may not exist: tests using it are marked ``corpus``)."""
    return SHARED / "corpus" / name


_skipped: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "corpus: needs the shared corpora (../shared or $RMM2SIGMA_SHARED)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if (SHARED / "corpus").is_dir():
        return
    needing = [item for item in items if item.get_closest_marker("corpus")]
    if needing:
        _skipped.extend(item.nodeid for item in needing)
        config.hook.pytest_deselected(items=needing)
        items[:] = [item for item in items if not item.get_closest_marker("corpus")]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped:
        terminalreporter.write_line(
            f"skipped {len(_skipped)} corpus-wide tests: no corpora at {SHARED / 'corpus'} "
            "(set RMM2SIGMA_SHARED; see README, 'The corpora')"
        )


ROOT = REPO


@dataclass(frozen=True)
class WheelEnv:
    root: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.root / ("Scripts" if os.name == "nt" else "bin")

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        environment.pop("PYTHONPATH", None)
        return subprocess.run(
            list(args), cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, check=False
        )


@pytest.fixture(scope="session")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> WheelEnv:
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the checkout for the wheel build")
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    # build from a copy of the tracked and new files, so the checkout gets no build/ folder
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(base / "dist"), str(source)], check=True)
    (wheel,) = (base / "dist").glob("rmm2sigma-*.whl")
    env = WheelEnv(base / "venv", wheel)
    subprocess.run([sys.executable, "-m", "venv", str(env.root)], check=True)
    python = env.bin / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "--disable-pip-version-check",
            "-q",
            "install",
            "--no-deps",
            str(wheel),
            "sigma-cli",
        ],
        check=True,
    )
    # only now: with the test environment visible, pip would see rmm2sigma and sigma-cli installed
    Path(purelib, "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env


SHARED_SIGMAHQ = SHARED / "sigmahq"
SNAPSHOT = SHARED_SIGMAHQ / "sigma-8eaafff1f.tar.gz"
SCHEMA = SHARED_SIGMAHQ / "sigma-detection-rule-schema-v2.1.0.json"


@pytest.fixture(scope="session")
def sigmahq_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SigmaHQ's tree; every check leaves it as it found it, so one copy serves all tests."""
    if not SNAPSHOT.is_file():
        pytest.skip(f"SigmaHQ snapshot not found at {SNAPSHOT} (CI has it)")
    from rmm2sigma.sigmahq import unpack_snapshot

    return unpack_snapshot(SNAPSHOT, tmp_path_factory.mktemp("sigmahq"))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No downloads, and a fresh, empty cache: SigmaHQ's validators must run on packaged data alone."""

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    import sigma.data.mitre_attack
    import sigma.data.mitre_d3fend
    import sigma.validators.sigmahq.data.base

    for module in (sigma.validators.sigmahq.data.base, sigma.data.mitre_attack, sigma.data.mitre_d3fend):
        monkeypatch.setattr(module, "urlopen", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield


@dataclass(frozen=True)
class Verified:
    """A query converted and verified through the CLI: its output folder, verify.json's rules and
    what verify printed."""

    out: Path
    proofs: list[dict[str, Any]]
    output: str


@pytest.fixture
def convert_and_verify(tmp_path: Path) -> Callable[[str, str, str], Verified]:
    """Write one query as ``in/<name>``, run ``rmm2sigma convert`` on the folder for ``targets``,
    then ``rmm2sigma verify`` on the output: what a user runs, end to end."""
    import json

    from typer.testing import CliRunner

    from rmm2sigma.cli import app

    def run(name: str, text: str, targets: str) -> Verified:
        query = tmp_path / "in" / name
        query.parent.mkdir()
        query.write_text(text, encoding="utf-8")
        out = tmp_path / "out"
        runner = CliRunner()
        converted = runner.invoke(app, ["convert", str(query.parent), "-o", str(out), "-t", targets])
        assert converted.exit_code == 0, converted.output
        verified = runner.invoke(app, ["verify", str(out)])
        assert verified.exit_code == 0, verified.output
        proofs = json.loads((out / "verify.json").read_text(encoding="utf-8"))["rules"]
        return Verified(out, proofs, verified.output)

    return run


def executed(proof: Any, engines: frozenset[str] = frozenset({"sigma", "kusto", "eql"})) -> dict[str, Any]:
    """The targets an engine ran for a proof that measured events, ``engines`` among them."""
    from rmm2sigma.verify.proof import NOT_EXECUTED

    assert proof.error is None and proof.original > 0, proof.error
    ran = {target: result for target, result in proof.targets.items() if result.verdict != NOT_EXECUTED}
    assert engines <= set(ran), set(ran)
    return ran


def disagreements(ran: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """The targets whose measurement breaks their label's promise, with example events."""
    return {t: (r.label, r.verdict, r.missed, r.extra) for t, r in ran.items() if not r.agrees}


def verdict_on_kind(query: str, kind: str, table: Any, rule_yaml: str, now: Any) -> str:
    """A Sigma rule against the original over generated DeviceEvents of one kind only (the other
    kinds widen every rule: a change of data model), as the label a mapping declares measures it."""
    from sigma.rule import SigmaRule

    from rmm2sigma import kql
    from rmm2sigma.convert import defender_schema
    from rmm2sigma.kql.lower import lower_kept
    from rmm2sigma.verify.engines import KqlEngine, SigmaEngine, row_selecting, sigma_fields, sigma_rows
    from rmm2sigma.verify.events import generate
    from rmm2sigma.verify.proof import verdict

    detection, kept = lower_kept(kql.parse(query), defender_schema())
    rows = [row for row in generate(detection, defender_schema(), now=now) if row.get("ActionType") == kind]
    engine = KqlEngine(defender_schema())
    engine.load({"DeviceEvents": rows})
    original = engine.select(row_selecting(kept), now)
    sigma = SigmaEngine()
    selected = sigma.select(
        sigma.query(SigmaRule.from_yaml(rule_yaml)), sigma_rows(rows, table), sigma_fields(table)
    )
    assert original  # not vacuous
    return verdict(original, selected)


def sigmahq_issues(tmp_path: Path, rules: dict[str, Any]) -> list[Any]:
    """SigmaHQ's findings on converted rules written one folder per name, as a rules tree holds them."""
    from rmm2sigma.sigmahq import check_rules

    for name, rule in rules.items():
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / rule.filename).write_text(rule.yaml, encoding="utf-8")
    return check_rules([tmp_path])


def kusto_errors(queries: list[str]) -> list[list[str]]:
    """Kusto.Language's error messages for each query (one node process)."""
    from rmm2sigma.verify.kusto_language import validate_kql

    return [[d.message for d in found if d.is_error] for found in validate_kql(queries)]


def assert_valid_kusto(queries: list[str]) -> None:
    """Kusto.Language finds no error in any query; the test is skipped where it is not installed."""
    from rmm2sigma.verify.kusto_language import kusto_available

    if not kusto_available():
        pytest.skip("Kusto.Language not installed (needs node and `npm ci --prefix tools/kusto`)")
    assert kusto_errors(queries) == [[]] * len(queries)


def held_groups(done: Verified) -> dict[str, str]:
    """The one verified rule's measured verdict per target on its groups (or keys), each checked to
    keep its label's promise."""
    (rule,) = done.proofs
    assert not rule["report_problems"]
    assert all(group["agrees"] for group in rule["groups"].values())
    return {name: group["verdict"] for name, group in rule["groups"].items()}


def assert_points_at(error: str | None, text: str, marker: str = "====") -> None:
    """A located error ``path:line:column: ...`` points at the line of ``text`` holding ``marker``,
    within its first three characters (the parser may stop inside a run of ``=``)."""
    assert error is not None
    lines = text.split("\n")
    line = next(number for number, row in enumerate(lines, 1) if marker in row)
    at = lines[line - 1].index(marker) + 1
    _, reported_line, reported_column, _ = error.split(":", 3)
    assert int(reported_line) == line and at <= int(reported_column) <= at + 2, error
