"""What a SigmaHQ reviewer and SigmaHQ's CI look at: emission that holds for every rule, and the
``rmm2sigma contrib`` pull-request pack."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from conftest import SCHEMA, corpus
from rmm2sigma.contrib import Pack, contrib, level
from rmm2sigma.convert import convert_all
from rmm2sigma.sigma import Options
from rmm2sigma.sigmahq import placement, run_sigmahq_ci

OPTIONS = Options(author="tester", date=dt.date(2026, 1, 2))

# SigmaHQ's .yamllint (extends default; strict mode fails on warnings too)
SIGMAHQ_YAMLLINT = """\
extends: default
rules:
    comments: {require-starting-space: true, min-spaces-from-content: 1}
    comments-indentation: disable
    document-start: {present: false}
    empty-lines: {max: 2, max-start: 2, max-end: 2}
    indentation: {spaces: 4, indent-sequences: whatever}
    line-length: disable
    new-line-at-end-of-file: enable
    trailing-spaces: {}
"""


def sentinel(name: str, query: str, url: str = "https://example.org/queries") -> str:
    body = "\n".join("  " + line for line in query.strip().splitlines())
    return f"""\
name: {name}
description: |
    Finds the demo remote access tool and what it does on the network.
    {url}
tactics: CommandAndControl
relevantTechniques: T1219
query: |
{body}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_isempty_is_written_as_null_and_passes_strict_yamllint(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "empty.yaml",
        sentinel(
            "Remote Management and Monitoring tool - Demo - Create Process",
            "DeviceProcessEvents | where FolderPath contains 'demo'"
            " and isempty(ProcessVersionInfoCompanyName)",
        ),
    )
    (result,) = convert_all([path], OPTIONS)
    (rule,) = result.rules
    assert "- null\n" in rule.yaml
    assert yaml.safe_load(rule.yaml)["detection"]["selection"]["Company"] == ["", None]
    problems = list(linter.run(rule.yaml, YamlLintConfig(SIGMAHQ_YAMLLINT)))
    assert problems == []


CREATEPROC = "DeviceProcessEvents | where ProcessVersionInfoCompanyName has 'Demo Corp'"
# the network table has no Sigma field for the initiating process's version info: it falls back
NETCONN = "DeviceNetworkEvents | where InitiatingProcessVersionInfoCompanyName has 'Demo Corp'"


def test_fallback_title_names_the_category_it_has(tmp_path: Path) -> None:
    name = "Remote Management tool - Demo - Network Connection"
    path = write(tmp_path, "net.yaml", sentinel(name, NETCONN))
    (result,) = convert_all([path], OPTIONS)
    (rule,) = result.rules
    assert rule.category == "process_creation"
    assert rule.title == "Remote Management Tool - Demo - Process Creation"


def test_title_that_matches_its_category_is_kept(tmp_path: Path) -> None:
    name = "Remote Management tool - Demo - Create Process"
    path = write(tmp_path, "proc.yaml", sentinel(name, CREATEPROC))
    (result,) = convert_all([path], OPTIONS)
    assert result.rules[0].title == "Remote Management Tool - Demo - Create Process"


def test_a_fallback_that_duplicates_another_rule_is_merged_into_it(tmp_path: Path) -> None:
    proc = write(tmp_path, "a_proc.yaml", sentinel("Demo tool - Create Process", CREATEPROC))
    net = write(
        tmp_path, "b_net.yaml", sentinel("Demo tool - Network Connection", NETCONN, "https://example.org/n")
    )
    results = convert_all([proc, net], OPTIONS)
    assert [r.status for r in results] == ["converted", "converted"]
    (kept,) = results[0].rules
    assert results[1].rules == ()
    assert any("merged into it" in warning and kept.rule_id in warning for warning in results[1].warnings)
    # the kept rule cites both sources, and its detection is unchanged
    alone = convert_all([proc], OPTIONS)[0].rules[0]
    merged, original = yaml.safe_load(kept.yaml), yaml.safe_load(alone.yaml)
    assert merged["detection"] == original["detection"]
    assert merged["references"] == [*original["references"], "https://example.org/n"]


def test_different_detections_are_not_merged(tmp_path: Path) -> None:
    proc = write(tmp_path, "a.yaml", sentinel("Demo tool - Create Process", CREATEPROC))
    other = write(
        tmp_path,
        "b.yaml",
        sentinel("Other tool - Create Process", CREATEPROC.replace("Demo Corp", "Other Corp")),
    )
    results = convert_all([proc, other], OPTIONS)
    assert [len(r.rules) for r in results] == [1, 1]


# ---------------------------------------------------------------- the pull-request pack

TEMPLATE = """\
### Summary of the Pull Request

<!--
A short summary of your pull request.
-->

### Changelog

<!--
new:	<title>
-->

### Example Log Event
"""


def tiny_sigmahq(root: Path, company: str, product: str) -> Path:
    """A SigmaHQ tree with one execution rule and the pull-request template."""
    rule = root / "rules" / "windows" / "process_creation" / "proc_creation_win_remote_access_tools_x.yml"
    rule.parent.mkdir(parents=True)
    rule.write_text(
        "title: Remote Access Tool - X Execution\nlogsource:\n    category: process_creation\n"
        f"    product: windows\ndetection:\n    selection:\n        Company: '{company}'\n"
        f"        Product|contains: '{product}'\n    condition: selection\n",
        encoding="utf-8",
    )
    (root / ".github").mkdir()
    (root / ".github" / "PULL_REQUEST_TEMPLATE.md").write_text(TEMPLATE, encoding="utf-8")
    return root


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def make_pack(tmp_path: Path, tree: Path) -> tuple[Pack, Path]:
    out = tmp_path / "out"
    pack = contrib([str(EXAMPLES / "supremo_create_process.txt")], out, tree, "tester", dt.date(2026, 1, 2))
    return pack, out


def test_an_uncovered_tool_gets_a_sigmahq_rule_and_a_filled_template(tmp_path: Path) -> None:
    pack, out = make_pack(tmp_path, tiny_sigmahq(tmp_path / "sigma", "Other Corp", "Other"))
    path = "rules/windows/process_creation/proc_creation_win_remote_access_tools_supremo.yml"
    assert list(pack.rules) == [path]
    rule = yaml.safe_load((out / path).read_text(encoding="utf-8"))
    assert rule["title"] == "Remote Access Tool - SupRemo Execution"
    assert rule["tags"] == ["attack.command-and-control", "attack.t1219.002"]
    assert rule["level"] == level("process_creation") == "medium"
    assert "SupRemo" in rule["description"] and "NanoSystems" in rule["description"]
    assert all(fp[:1].isupper() and fp.endswith(".") for fp in rule["falsepositives"])
    assert rule["detection"]["selection"] == {
        "Company|contains": "NanoSystems",
        "Product|contains": "SupRemo",
    }
    text = (out / "PULL_REQUEST.md").read_text(encoding="utf-8")
    assert "new: Remote Access Tool - SupRemo Execution" in text
    assert text.count("<!--") == TEMPLATE.count("<!--")  # every comment of the template is kept
    report = json.loads((out / "contrib.json").read_text(encoding="utf-8"))
    assert report["summary"] == {"rules": 1, "tools": 1, "covered": 0, "skipped": 0, "extensions": 0}
    assert list(linter.run((out / path).read_text(encoding="utf-8"), YamlLintConfig(SIGMAHQ_YAMLLINT))) == []


def test_a_covered_tool_is_skipped_and_the_missing_values_suggested(tmp_path: Path) -> None:
    pack, _ = make_pack(tmp_path, tiny_sigmahq(tmp_path / "sigma", "NanoSystems S.r.l.", "SupRemo"))
    assert pack.rules == {}
    (covered,) = pack.covered
    assert covered["tool"] == "SupRemo"
    assert covered["by"] == ["rules/windows/process_creation/proc_creation_win_remote_access_tools_x.yml"]
    assert all(not suggestion["add"] for suggestion in pack.extensions)  # both values already there


def test_a_partly_covered_tool_lists_the_values_to_add(tmp_path: Path) -> None:
    # the rule names the product as a file name only: the company and product tests are missing
    tree = tiny_sigmahq(tmp_path / "sigma", "NanoSystems", "SupRemo")
    rule = next((tree / "rules").rglob("*.yml"))
    rule.write_text(rule.read_text(encoding="utf-8").replace("Company:", "Description:"), encoding="utf-8")
    pack, _ = make_pack(tmp_path, tree)
    assert pack.rules == {}
    assert {(s["tool"], s["field"], tuple(s["add"])) for s in pack.extensions} == {
        ("SupRemo", "Company", ("nanosystems",))
    }


@pytest.mark.corpus
def test_the_corpus_pack_passes_sigmahq_ci(tmp_path: Path, sigmahq_tree: Path) -> None:
    pack = contrib(
        [str(corpus("azure-sentinel-rmm"))],
        tmp_path / "pack",
        sigmahq_tree,
        "rmm2sigma",
        dt.date(2026, 12, 1),
    )
    summary = pack.summary()
    print(summary)
    assert summary["rules"] >= 50 and summary["covered"] >= 20
    # SigmaHQ's AnyDesk and TeamViewer execution rules cover those tools: no second rule for them
    assert not any(name in path for path in pack.rules for name in ("anydesk", "teamviewer"))
    findings = run_sigmahq_ci(placement(tmp_path / "pack"), sigmahq_tree, SCHEMA, tmp_path / "work")
    assert findings == [], "\n".join(map(str, findings))


def test_contrib_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rmm2sigma.cli import app

    tree = tiny_sigmahq(tmp_path / "sigma", "Other Corp", "Other")
    example = str(EXAMPLES / "supremo_create_process.txt")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["contrib", example, "--out", str(out), "--sigmahq-repo", str(tree), "--date", "2026-01-02"]
    )
    assert result.exit_code == 0, result.output
    assert "1 new rules for 1 tools" in result.output
    assert (out / "EXTENSIONS.md").is_file() and (out / "PULL_REQUEST.md").is_file()
    missing = CliRunner().invoke(app, ["contrib", example, "--out", str(out)])
    assert missing.exit_code == 2
