"""Regenerate sigma_rules/, backends/ and corpus-report.json from the RMM corpus.

    python scripts/regenerate.py [CORPUS_DIR]

The corpus defaults to ../shared/corpus/azure-sentinel-rmm beside the repository. Author and
date are fixed so the output only changes when the converter does (CI compares it).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "azure-sentinel-rmm"
AUTHOR = "jischell-msft (Azure-Sentinel hunting queries), converted by rmm2sigma"
DATE = dt.date(2026, 11, 23)
ARTEFACTS = ("sigma_rules", "backends")
REPORT = "corpus-report.json"


def generate(corpus: Path, out: Path) -> int:
    """Convert the corpus into ``out``; returns the number of failed inputs."""
    from rmm2sigma.convert import convert_all
    from rmm2sigma.report import write_outputs
    from rmm2sigma.sigma import Options
    from rmm2sigma.sources import discover

    here = Path.cwd()
    os.chdir(corpus.parent)  # paths in the report and its messages stay relative, so machine-independent
    try:
        results = convert_all(list(discover([corpus.name])), Options(author=AUTHOR, date=DATE))
    finally:
        os.chdir(here)
    results, _ = write_outputs(results, out, force=True)
    (out / "report.json").rename(out / REPORT)
    return sum(r.status == "failed" for r in results)


def main() -> None:
    corpus = (Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CORPUS).resolve()
    if not corpus.is_dir():
        sys.exit(f"corpus not found: {corpus}")
    with tempfile.TemporaryDirectory() as temporary:
        failed = generate(corpus, Path(temporary))
        for name in ARTEFACTS:
            shutil.rmtree(REPO / name, ignore_errors=True)
            shutil.copytree(Path(temporary) / name, REPO / name)
        shutil.copyfile(Path(temporary) / REPORT, REPO / REPORT)
    print(f"regenerated {', '.join(ARTEFACTS)} and {REPORT} ({failed} inputs failed, as the report says)")


if __name__ == "__main__":
    main()
