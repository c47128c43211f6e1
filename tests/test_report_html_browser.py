"""report.html in a real headless Chromium: it renders, every rule is there, nothing runs, nothing
loads from outside, and no box makes the page wider than a laptop screen.

Needs Debian's chromium (``.ci/run`` installs it) and the ``playwright`` package, which drives it
through its executable path (no browser download). Without chromium the test skips, except in CI.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rmm2sigma.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = """\
id: 33333333-3333-4333-8444-555555555555
name: Probe <script>window.pwned = 1</script> & <img src=x onerror="window.pwned = 2"> tool
description: |
    A hostile title and query: the report must show them as text.
tactics: CommandAndControl
relevantTechniques: T1219
query: |
  DeviceProcessEvents
  | where ProcessCommandLine has '<script>window.pwned = 3</script>'
      or ProcessCommandLine has '{long}'
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing in CI: .ci/run installs it with apt-get")
    pytest.skip("no chromium on this machine (apt-get install chromium); the HTML report is not rendered")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    inputs = tmp_path_factory.mktemp("in")
    (inputs / "hostile.yaml").write_text(HOSTILE.format(long="A" * 600), encoding="utf-8")
    (inputs / "bad.kql").write_text("DeviceProcessEvents\n| where FileName has (\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("out")
    done = CliRunner().invoke(
        app, ["convert", str(EXAMPLES), str(inputs), "-o", str(out), "--date", "2026-01-02"]
    )
    assert done.exit_code == 1, done.output  # bad.kql fails; the rest converts
    return out, json.loads((out / "report.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("width", [1366, 800])
def test_report_html_renders_every_rule_inert_and_without_overflow(
    converted: tuple[Path, dict[str, Any]], width: int, tmp_path: Path
) -> None:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package drives chromium")
    out, report = converted
    titles = [rule["title"] for entry in report["inputs"] for rule in entry["rules"]]
    assert len(titles) == 6 and any("<script>" in title for title in titles)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 800})
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            state = page.evaluate(
                """() => ({
                    pwned: window.pwned ?? null,
                    scripts: document.scripts.length,
                    images: document.images.length,
                    sections: [...document.querySelectorAll('section.rule h3')].map(h => h.textContent),
                    pageWidth: document.documentElement.scrollWidth,
                    innerWidth: window.innerWidth,
                    widest: Math.max(...[...document.querySelectorAll('pre, .pane, .scroll, section')]
                        .map(e => e.getBoundingClientRect().right)),
                    preScrolls: [...document.querySelectorAll('pre')]
                        .filter(p => p.scrollWidth > p.clientWidth).length,
                    failed: document.getElementById('failed')?.nextElementSibling?.textContent ?? '',
                    text: document.body.innerText,
                })"""
            )
            page.screenshot(path=str(tmp_path / f"report-{width}.png"), full_page=False)
        finally:
            browser.close()
    assert requests == [(out / "report.html").as_uri()]  # nothing loaded from anywhere else
    assert state["pwned"] is None and state["scripts"] == 0 and state["images"] == 0
    assert [s.split(". ", 1)[1] for s in state["sections"]] == titles
    assert "<script>window.pwned = 3</script>" in state["text"]  # shown as text, in the source KQL
    assert state["pageWidth"] <= state["innerWidth"]
    assert state["widest"] <= state["innerWidth"]
    assert state["preScrolls"] == 0  # the 600-character line wraps inside its box: nothing hidden
    assert "bad.kql:2:" in state["failed"]
    if os.environ.get("RMM2SIGMA_KEEP_SCREENSHOT"):
        shutil.copy(tmp_path / f"report-{width}.png", os.environ["RMM2SIGMA_KEEP_SCREENSHOT"])
