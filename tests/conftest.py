"""A wheel of this checkout installed in a fresh virtual environment, shared by the slow tests.

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
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
