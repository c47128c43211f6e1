"""``rmm2sigma.convert``: the README's example, run as written, and the API's promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import rmm2sigma

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Library API", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    return code


def test_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    namespace: dict[str, object] = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("{'sigma': 'widened', 'kusto': 'widened', 'splunk': 'widened'}")
    assert 'Company="*NanoSystems*"' in printed[0]
    assert printed[1].startswith("5 converted")
    report = namespace["report"]
    assert report == json.loads((tmp_path / "out-api/report.json").read_text())
    assert len(list((tmp_path / "out-api/deploy/kusto/sentinel").glob("*.yaml"))) == 5
    assert "index=sysmon " in (tmp_path / "out-api/deploy/splunk/savedsearches.conf").read_text()


def test_convert_without_out_returns_the_report_and_writes_nothing(tmp_path: Path) -> None:
    report = rmm2sigma.convert(ROOT / "examples" / "supremo_create_process.txt", targets=["eql"])
    (entry,) = report["inputs"]
    assert entry["status"] == "converted" and set(entry["rules"][0]["queries"]) == {"eql"}
    assert report["summary"]["targets"] == {"eql": {"converted": 1, "failed": 0}}
    assert list(tmp_path.iterdir()) == []


def test_bad_text_is_a_failed_input_not_an_exception() -> None:
    report = rmm2sigma.convert(text="DeviceProcessEvents | whre x == 1")
    (entry,) = report["inputs"]
    assert entry["status"] == "failed" and entry["source"] == "<text>"
    assert entry["line"] == 1 and entry["column"] is not None


def test_misuse_raises() -> None:
    with pytest.raises(ValueError, match="unknown target"):
        rmm2sigma.convert(text="DeviceProcessEvents | where FileName == 'a'", targets=["nosuch"])
    with pytest.raises(ValueError, match="either source"):
        rmm2sigma.convert()


def test_convert_stays_the_function_after_the_module_is_imported() -> None:
    import rmm2sigma.convert as module  # binds the submodule attribute on first import

    assert callable(rmm2sigma.convert) and rmm2sigma.convert.__module__ == "rmm2sigma"
    assert module is not None
