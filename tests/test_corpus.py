"""The 165 real Azure-Sentinel RMM queries: outcomes, SigmaHQ checks, Kusto.Language, fresh artefacts.

Marked ``corpus``: runs when the shared corpora exist (CI has them); see ``conftest.py``.
"""

from __future__ import annotations

import filecmp
import os
import sys
from pathlib import Path

import pytest

from conftest import corpus
from rmm2sigma.convert import InputResult, convert_all
from rmm2sigma.report import write_outputs
from rmm2sigma.sigma import Options
from rmm2sigma.sigmahq import check_rules
from rmm2sigma.sources import discover
from rmm2sigma.verify.kusto_language import kusto_available, validate_kql

REPO = Path(__file__).resolve().parents[1]
CORPUS = corpus("azure-sentinel-rmm")
sys.path.insert(0, str(REPO / "scripts"))
pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[InputResult], Path]:
    out = tmp_path_factory.mktemp("corpus")
    results = convert_all(list(discover([str(CORPUS)])), Options())
    written, _ = write_outputs(results, out)
    return written, out


def test_every_corpus_file_is_accounted_for(converted: tuple[list[InputResult], Path]) -> None:
    results, _ = converted
    assert sorted(Path(r.source).name for r in results) == sorted(p.name for p in CORPUS.glob("*.yaml"))
    assert len(results) == 165


def test_at_least_160_convert_and_the_invalid_kql_is_located(
    converted: tuple[list[InputResult], Path],
) -> None:
    results, _ = converted
    ok = [r for r in results if r.status == "converted"]
    failed = {Path(r.source).name: r.error for r in results if r.status == "failed"}
    assert len(ok) >= 160, failed
    dwservice = CORPUS / "rmm_DWService_createproc.yaml"
    assert failed == {
        dwservice.name: f"{dwservice}:26:5: unexpected name 'Sha1'; expected a tabular operator "
        "('where', 'summarize', 'extend', 'project', 'join', ...)"
    }


def test_every_rule_passes_the_sigmahq_validators(converted: tuple[list[InputResult], Path]) -> None:
    _, out = converted
    issues = check_rules([out / "sigma_rules"])
    assert not issues, "\n".join(map(str, issues))


@pytest.mark.skipif(
    not kusto_available() and os.environ.get("CI") != "true", reason="Kusto.Language not installed"
)
def test_every_emitted_kql_parses_and_binds_against_the_defender_schema(
    converted: tuple[list[InputResult], Path],
) -> None:
    results, _ = converted
    queries = [rule.queries["kusto"] for r in results for rule in r.rules]
    errors = [
        (query, d)
        for query, found in zip(queries, validate_kql(queries), strict=True)
        for d in found
        if d.is_error
    ]
    assert len(queries) >= 155 and not errors, errors[:5]  # 164 rules, 5 duplicates merged


def test_the_committed_artefacts_are_fresh(tmp_path: Path) -> None:
    from regenerate import ARTEFACTS, REPORT, generate

    generate(CORPUS, tmp_path)
    stale: list[str] = []
    for name in ARTEFACTS:
        stale.extend(_differences(filecmp.dircmp(tmp_path / name, REPO / name), name))
    if not filecmp.cmp(tmp_path / REPORT, REPO / REPORT, shallow=False):
        stale.append(REPORT)
    assert not stale, f"stale artefacts, run `python scripts/regenerate.py`: {stale[:10]}"


def _differences(comparison: filecmp.dircmp[str], prefix: str) -> list[str]:
    found = [f"{prefix}/{n}" for n in comparison.left_only + comparison.right_only + comparison.diff_files]
    for name, sub in comparison.subdirs.items():
        found.extend(_differences(sub, f"{prefix}/{name}"))
    return found
