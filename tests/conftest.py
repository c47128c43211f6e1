"""Fixtures shared by test files: SigmaHQ's snapshot, unpacked once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_SIGMAHQ = Path(__file__).resolve().parents[2] / "shared" / "sigmahq"
SNAPSHOT = SHARED_SIGMAHQ / "sigma-8eaafff1f.tar.gz"
SCHEMA = SHARED_SIGMAHQ / "sigma-detection-rule-schema-v2.1.0.json"


@pytest.fixture(scope="session")
def sigmahq_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SigmaHQ's tree; every check leaves it as it found it, so one copy serves all tests."""
    if not SNAPSHOT.is_file():
        pytest.skip(f"SigmaHQ snapshot not found at {SNAPSHOT} (CI has it)")
    from rmm2sigma.sigmahq import unpack_snapshot

    return unpack_snapshot(SNAPSHOT, tmp_path_factory.mktemp("sigmahq"))
