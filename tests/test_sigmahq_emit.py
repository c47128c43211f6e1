"""What the emitter does so that every rule passes SigmaHQ's checks, whatever the input: tags,
references, unique titles, literal wildcards and thresholds without a group-by field.

Small inline fixtures; the Defender corpus test at the end needs ``../shared`` (marker ``corpus``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import corpus
from rmm2sigma.convert import RuleResult, convert_all, convert_input, convert_rule, convert_rules
from rmm2sigma.mapping import literal_wildcards, regexes_one_by_one
from rmm2sigma.model import And, Match, Not, Or, Predicate
from rmm2sigma.report import write_outputs
from rmm2sigma.sigma import Options, metadata, title_case
from rmm2sigma.sigmahq import check_attack_tags, check_rules
from rmm2sigma.sources import SourceRule, discover, read_source
from rmm2sigma.verify.proof import measure

OPTIONS = Options(date=dt.date(2026, 1, 1))
NOW = dt.datetime(2026, 11, 30, 12, 0, 0)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The SigmaHQ checks run on the packaged data alone, in a fresh cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield


def sentinel(name: str, query: str, **fields: Any) -> str:
    """A Sentinel hunting-query YAML."""
    document = {"id": f"{abs(hash(name)) % 10**8:08d}-0000-4000-8000-000000000000", "name": name, **fields}
    return yaml.safe_dump({**document, "query": query}, sort_keys=False)


def convert(text: str, name: str = "hunt.yaml") -> RuleResult:
    (rule,) = convert_input(name, OPTIONS, ("kusto",), data=text.encode()).rules
    return rule


def issues(tmp_path: Path, *rules: RuleResult) -> list[str]:
    for rule in rules:
        path = tmp_path / "rules" / rule.category / rule.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rule.yaml, encoding="utf-8")
    return [str(issue) for issue in check_rules([tmp_path / "rules"])]


PROCESS = 'DeviceProcessEvents\n| where FileName =~ "attrib.exe"\n'


# ---------------------------------------------------------------- tags


def test_sentinel_categories_that_are_no_tactic_never_become_tags(tmp_path: Path) -> None:
    rule = convert(
        sentinel(
            "Ransom Precursor",
            PROCESS,
            tactics=["Ransomware", "Exploit", "Malware, component", "Vulnerability", "CommandAndControl"],
            relevantTechniques=["T1486"],
        )
    )
    assert rule.tags == ("attack.impact", "attack.command-and-control", "attack.t1486")
    assert check_attack_tags(rule.tags) == []
    assert any("'Ransomware' is not an ATT&CK tactic: tagged attack.impact" in n for n in rule.notes)
    for dropped in ("Exploit", "Malware, component", "Vulnerability"):
        assert any(f"{dropped!r} is not an ATT&CK tactic and names no single one" in n for n in rule.notes)
    assert issues(tmp_path, rule) == []


def test_attack_links_become_tags() -> None:
    source = SourceRule(
        "x.kql",
        PROCESS,
        tactics=("Discovery",),
        description=(
            "See https://attack.mitre.org/wiki/Technique/T1135, "
            "https://attack.mitre.org/techniques/T1059/001/ https://attack.mitre.org/tactics/TA0008/ "
            "https://attack.mitre.org/groups/G0016 and "
            "https://attack.mitre.org/mitigations/M1036 and https://example.com/blog"
        ),
    )
    meta = metadata(source)
    assert meta.tags == (
        "attack.discovery",
        "attack.t1135",
        "attack.t1059.001",
        "attack.lateral-movement",
        "attack.g0016",
    )
    assert meta.references == ("https://example.com/blog",)
    assert [n for n in meta.notes if "M1036" in n] == [
        "reference https://attack.mitre.org/mitigations/M1036 was left out: SigmaHQ wants ATT&CK as tags, "
        "and it names none"
    ]


def test_a_technique_without_any_tactic_is_no_tag(tmp_path: Path) -> None:
    text = sentinel(
        "Share Discovery", PROCESS, description="Read https://attack.mitre.org/wiki/Technique/T1135 first."
    )
    rule = convert(text)
    assert rule.tags == () and "attack.mitre.org" not in rule.yaml
    assert any("T1135 are named without a tactic" in note for note in rule.notes)
    assert issues(tmp_path, rule) == []


# ---------------------------------------------------------------- references


def test_github_branch_links_are_left_out_and_permalinks_kept(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "hunt.yaml").write_text(
        sentinel(
            "Branch Links",
            PROCESS,
            tactics=["Execution"],
            description=(
                "Ported from https://github.com/SigmaHQ/sigma/blob/master/rules/windows/x.yml and "
                "https://github.com/Azure/Azure-Sentinel/blob/master/Hunting%20Queries/hunt.yaml (this "
                "file, pinned by the manifest); see also https://github.com/o/tool/blob/main/README.md, "
                "https://github.com/o/tool and https://github.com/o/tool/blob/main/docs/setup.yaml"
            ),
        ),
        encoding="utf-8",
    )
    (folder / "MANIFEST.tsv").write_text(
        "file\tsource_repo\tsource_path\tcommit\n"
        f"hunt.yaml\tAzure/Azure-Sentinel\tHunting Queries/hunt.yaml\t{commit}\n",
        encoding="utf-8",
    )
    (result,) = convert_all([str(folder / "hunt.yaml")], OPTIONS, ("kusto",))
    (rule,) = result.rules
    references = rule.document["references"]
    assert references == [
        "https://github.com/o/tool",
        # SigmaHQ's check looks at short extensions only: a .yaml link on a branch passes it
        "https://github.com/o/tool/blob/main/docs/setup.yaml",
        f"https://github.com/Azure/Azure-Sentinel/blob/{commit}/Hunting%20Queries/hunt.yaml",
    ]
    left_out = [note for note in rule.notes if "links a GitHub branch" in note]
    assert len(left_out) == 2  # the Azure-Sentinel branch link has a permalink: no note for it
    assert "SigmaHQ/sigma/blob/master/rules/windows/x.yml" in left_out[0]
    assert "o/tool/blob/main/README.md" in left_out[1]
    assert issues(tmp_path, rule) == []


# ---------------------------------------------------------------- titles


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("detect-bluekeep-exploitation-attempts", "Bluekeep-exploitation-attempts"),
        ("Detect BlueKeep Exploitation", "BlueKeep Exploitation"),
        ("DetectTorRelayConnectivity", "TorRelayConnectivity"),
        ("detect_prifou_pua", "Prifou_pua"),
        ("Detection of Cipher Use", "Detection of Cipher Use"),
        ("Detects", "Activity"),
    ],
)
def test_a_leading_detect_is_dropped_as_a_word_only(name: str, title: str) -> None:
    assert title_case(name) == title


def test_union_branches_on_one_table_are_numbered(tmp_path: Path) -> None:
    text = (
        'union (DeviceProcessEvents | where FileName =~ "a.exe"), '
        '(DeviceProcessEvents | where FileName =~ "b.exe"), (DeviceFileEvents | where FileName =~ "c.exe")'
    )
    rules, errors = convert_rules(SourceRule("hunt.kql", text, name="Odd Tools"), OPTIONS, ("kusto",))
    assert errors == ()
    assert [rule.title for rule in rules] == [
        "Odd Tools - Process Creation (DeviceProcessEvents, Branch 1)",
        "Odd Tools - Process Creation (DeviceProcessEvents, Branch 2)",
        "Odd Tools - File Event",
    ]
    assert issues(tmp_path, *rules) == []


def test_titles_are_unique_in_a_batch_by_category_then_rule_id(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    queries = {
        "a.kql": PROCESS,
        "b.kql": 'DeviceProcessEvents\n| where FileName =~ "cmd.exe"\n',
        "c.kql": "DeviceNetworkEvents\n| where RemotePort == 4444\n",
        "d.kql": 'DeviceProcessEvents\n| where FileName =~ "other.exe"\n',
    }
    for name, query in queries.items():
        title = "Other Title" if name == "d.kql" else "Same Title"
        (folder / name).write_text(f"// Title: {title}\n{query}", encoding="utf-8")
    results = convert_all(list(discover([str(folder)])), OPTIONS, ("kusto",))
    titles = {Path(result.source).name: result.rules[0].title for result in results}
    ids = {Path(result.source).name: result.rules[0].rule_id for result in results}
    assert titles == {
        "a.kql": f"Same Title ({ids['a.kql'].replace('-', '')[:8].upper()})",
        "b.kql": f"Same Title ({ids['b.kql'].replace('-', '')[:8].upper()})",
        "c.kql": "Same Title - Network Connection",
        "d.kql": "Other Title",
    }
    for result in results:
        (rule,) = result.rules
        assert rule.document["title"] == rule.title
        assert any("is titled 'Same Title' too" in note for note in rule.notes) == (
            Path(result.source).name != "d.kql"
        )
    # the same for any input order: never first-come-keeps-it
    again = convert_all(list(reversed(list(discover([str(folder)])))), OPTIONS, ("kusto",))
    assert {Path(result.source).name: result.rules[0].title for result in again} == titles
    out = tmp_path / "out"
    write_outputs(results, out, ("kusto",))
    assert [str(issue) for issue in check_rules([out / "sigma_rules"])] == []


# ---------------------------------------------------------------- literal wildcards


def test_values_with_a_literal_wildcard_become_regexes() -> None:
    leaf = Predicate("CommandLine", Match.CONTAINS, ("a*b", "plain", "c?"))
    assert literal_wildcards(leaf) == Or(
        (
            Predicate("CommandLine", Match.CONTAINS, ("plain",)),
            Predicate("CommandLine", Match.REGEX, (r"a\*b", r"c\?")),
        )
    )
    starts = Predicate("Image", Match.STARTSWITH, ("C:\\*",), case_sensitive=True)
    assert literal_wildcards(starts) == Predicate("Image", Match.REGEX, (r"^C:\\\*",), case_sensitive=True)
    equals = Predicate("Image", Match.EQUALS, ("*",), negated=True)
    assert literal_wildcards(equals) == Predicate("Image", Match.REGEX, (r"^\*$",), negated=True)
    every = Predicate("CommandLine", Match.CONTAINS, ("-a", "*.*", "?"), match_all=True)
    assert literal_wildcards(every) == And(
        (
            Predicate("CommandLine", Match.CONTAINS, ("-a",), match_all=True),
            Predicate("CommandLine", Match.REGEX, (r"\*\.\*",)),
            Predicate("CommandLine", Match.REGEX, (r"\?",)),
        )
    )
    negated = Predicate("CommandLine", Match.CONTAINS, ("x", "*"), negated=True)
    assert isinstance(literal_wildcards(negated), And)  # neither x nor *
    assert literal_wildcards(Not(negated)) == Not(literal_wildcards(negated))
    untouched = Predicate("CommandLine", Match.CONTAINS, ("plain",))
    assert literal_wildcards(untouched) is untouched


def test_all_of_several_regexes_is_one_test_per_regex() -> None:
    """``|re|all`` fails SigmaHQ's invalid_modifier_combinations (``has_all`` under ``--exact``)."""
    both = Predicate("CommandLine", Match.REGEX, ("a", "b"), match_all=True)
    one, other = (Predicate("CommandLine", Match.REGEX, (v,)) for v in ("a", "b"))
    assert regexes_one_by_one(both) == And((one, other))
    negated = regexes_one_by_one(Not(replace(both, negated=True)))
    assert negated == Not(Or((replace(one, negated=True), replace(other, negated=True))))
    rule = convert_rule(
        read_source("all.kql", f'{PROCESS}| where ProcessCommandLine has_all ("a", "b")\n'.encode()),
        Options(exact=True),
    )
    assert "|re|i: " in rule.yaml and "|all" not in rule.yaml


WILDCARDS = """DeviceProcessEvents
| where ProcessCommandLine has_all ("attrib", "*.*")
| where ProcessCommandLine contains "objectcategory=*" or ProcessCommandLine startswith "C:\\\\*"
| where not(ProcessCommandLine endswith "?")
"""


@pytest.mark.parametrize("exact", [False, True])
def test_literal_wildcards_pass_sigmahq_and_keep_their_label(tmp_path: Path, exact: bool) -> None:
    source = read_source("wildcards.kql", WILDCARDS.encode())
    options = Options(date=OPTIONS.date, exact=exact)
    rule = convert_rule(source, options)
    items = [
        (key, value)
        for selection in rule.document["detection"].values()
        if isinstance(selection, dict)
        for key, values in selection.items()
        for value in (values if isinstance(values, list) else [values])
    ]
    assert not [(k, v) for k, v in items if "|re" not in k and ("\\*" in str(v) or "\\?" in str(v))]
    assert {v for k, v in items if "|re" in k} >= {r"\*\.\*", r"objectcategory=\*", r"^C:\\\*", r"\?$"}
    assert issues(tmp_path, rule) == []
    proof = measure(source, options, NOW)
    assert proof.error is None and proof.original > 0
    for target, result in proof.targets.items():
        assert result.agrees is not False, (target, result)


# ---------------------------------------------------------------- thresholds


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        ("summarize n=count() by DeviceId, bin(Timestamp, 1h) | where n > 5", "per DeviceId, which has no"),
        ("summarize n=count() by FileName | where n > 5", "per FileName, which has no"),
        ("summarize n=count() | where n > 5", "over all events"),
    ],
)
def test_a_threshold_without_a_group_by_field_is_left_out(tmp_path: Path, tail: str, why: str) -> None:
    rule = convert_rule(read_source("count.kql", f"{PROCESS}| {tail}\n".encode()), OPTIONS)
    assert not rule.filename.startswith("correlation_") and "correlation:" not in rule.yaml
    assert rule.fidelity.value == "approximate"
    assert any(f"the threshold `n > 5` was left out: it counts {why}" in note for note in rule.notes)
    assert "where n > 5" not in rule.queries["kusto"]
    assert issues(tmp_path, rule) == []


def test_a_threshold_with_a_group_by_field_stays_a_correlation(tmp_path: Path) -> None:
    text = f"{PROCESS}| summarize n=count() by DeviceId, DeviceName | where n > 5\n"
    rule = convert_rule(read_source("count.kql", text.encode()), OPTIONS)
    assert rule.filename.startswith("correlation_") and "group-by:\n        - Computer" in rule.yaml
    assert issues(tmp_path, rule) == []


# ---------------------------------------------------------------- the Defender corpus


@pytest.mark.corpus
def test_every_defender_corpus_rule_passes_the_sigmahq_checks(tmp_path: Path) -> None:
    """SigmaHQ's validators find nothing in what the Defender corpus converts to (correlations too)."""
    results = convert_all(list(discover([str(corpus("azure-sentinel-defender"))])), OPTIONS, ())
    assert sum(len(result.rules) for result in results) >= 100  # not vacuous
    write_outputs(results, tmp_path / "out", ())
    found = [str(issue) for issue in check_rules([tmp_path / "out" / "sigma_rules"])]
    assert found == [], "\n".join(found)
