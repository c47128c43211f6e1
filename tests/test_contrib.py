"""What a SigmaHQ reviewer and SigmaHQ's CI look at: emission that holds for every rule, and the
``rmm2sigma contrib`` pull-request pack."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from rmm2sigma.convert import convert_all
from rmm2sigma.sigma import Options

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
