"""Shared test set-up: where the corpora live, and one line saying what is skipped without them.

The corpus-wide tests (marked ``corpus``) read the real Azure-Sentinel queries from ``../shared``
beside the checkout, or from ``$RMM2SIGMA_SHARED``. CI has them; on a fresh machine without them
those tests are deselected and the run ends with one line saying so (README, "The corpora").
"""

from __future__ import annotations

import os
from pathlib import Path

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
