"""SigmaHQ's own pull-request checks, run on our rules placed into their tree.

Runs when ../shared/sigmahq holds the SigmaHQ snapshot (CI has it); otherwise skips and says so.
Checks: strict yamllint with their .yamllint, tests/test_rules.py, tests/test_logsource.py,
``sigma check`` with tests/sigma_cli_conf.yml (minus the validators that download MITRE data:
rmm2sigma.sigmahq.EXCLUDED_VALIDATORS), the duplicate-id check and the JSON schema.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SCHEMA
from rmm2sigma.sigmahq import CiFinding, placement, run_sigmahq_ci

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(sigmahq_tree: Path) -> Path:
    return sigmahq_tree


def run(ours: dict[str, Path], tree: Path, work: Path) -> list[CiFinding]:
    findings = run_sigmahq_ci(ours, tree, SCHEMA, work)
    for finding in findings:
        print(finding)
    return findings


def test_committed_corpus_rules_pass_sigmahq_ci(tree: Path, tmp_path: Path) -> None:
    ours = placement(REPO / "sigma_rules")
    assert len(ours) > 100
    findings = run(ours, tree, tmp_path)
    assert findings == [], f"{len(findings)} finding(s), first: {findings[0]}"


def test_every_check_can_fail_and_only_our_files_are_reported(tree: Path, tmp_path: Path) -> None:
    """A copy of an upstream rule: same id and detection, an invalid level, a trailing space."""
    upstream = "rules/windows/process_creation/proc_creation_win_remote_access_tools_simple_help.yml"
    text = (tree / upstream).read_text(encoding="utf-8")
    text = re.sub(r"(?m)^level: .*$", "level: severe", text).replace("falsepositives:", "falsepositives: ", 1)
    copy = tmp_path / "copy.yml"
    copy.write_text(text, encoding="utf-8")
    name = "rules/windows/process_creation/proc_creation_win_remote_access_tools_simple_help_copy.yml"
    findings = run({name: copy}, tree, tmp_path)
    assert {f.path for f in findings} == {name}
    assert {f.check for f in findings} >= {
        "yamllint",
        "json_schema",
        "duplicate_id",
        "test_rules",
        "sigma_check",
    }
    duplicate = [f for f in findings if f.check == "test_rules"]
    assert any(upstream.rsplit("/", 1)[1] in f.message for f in duplicate), duplicate
    assert not (tree / name).exists()  # upstream's tree is left as it was


def test_device_events_rules_pass_sigmahq_ci(tree: Path, tmp_path: Path) -> None:
    """The rule of every DeviceEvents kind (tests/test_device_events.py), as a pull request places it."""
    from test_device_events import CASES, write_rules

    ours = write_rules(tmp_path / "ours")
    assert len(ours) == len(CASES)
    findings = run(ours, tree, tmp_path / "work")
    assert findings == [], f"{len(findings)} finding(s), first: {findings[0]}"


def test_sigmahq_rule_names_every_upstream_rule_that_is_a_kind_alone(tree: Path) -> None:
    """A kind of event with an EventID is a rule by itself; where SigmaHQ already has that rule,
    defender.yml names it (sigmahq_rule), so the query is refused rather than duplicating it."""
    import yaml

    from rmm2sigma.mapping import all_specs
    from rmm2sigma.sigmahq import safe_documents

    upstream: dict[str, list[str]] = {}
    for folder in ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-placeholder"):
        for file in (tree / folder).rglob("*.yml"):
            try:
                documents = safe_documents(file.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                continue
            if len(documents) != 1 or not isinstance(documents[0], dict):
                continue
            logsource = {k: v for k, v in (documents[0].get("logsource") or {}).items() if k != "definition"}
            key = repr((sorted(logsource.items()), documents[0].get("detection")))
            upstream.setdefault(key, []).append(file.stem)
    for spec in all_specs():
        if not spec.conditions or not spec.action_types:
            continue
        alone = {"selection": dict(spec.conditions), "condition": "selection"}
        same = upstream.get(repr((sorted(spec.logsource.items()), alone)), [])
        assert same == ([spec.sigmahq_rule] if spec.sigmahq_rule else []), spec.action_types
