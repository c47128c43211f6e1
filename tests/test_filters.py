"""False-positive exclusions as Sigma filters: the language, the mapping, the files, and the proof
that a filtered query selects the unfiltered query's events minus exactly those the page names."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sigma.collection import SigmaCollection
from sigma.rule import SigmaRule
from typer.testing import CliRunner

from rmm2sigma import kql, targets
from rmm2sigma.cli import app
from rmm2sigma.convert import convert_input, defender_schema
from rmm2sigma.errors import InputError
from rmm2sigma.filters import applied_rule, page_fields, parse_exclusion
from rmm2sigma.kql.lower import lower
from rmm2sigma.mapping import _rename_columns, tables
from rmm2sigma.model import And, Detection, Match, Node, Not, Or, Predicate
from rmm2sigma.sigma import Options
from rmm2sigma.verify.engines import KqlEngine, SigmaEngine, sigma_fields, sigma_rows, with_ids
from rmm2sigma.verify.events import ID, generate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OPTIONS = Options(author="tester", date=dt.date(2026, 1, 2))
FILTERED_PAGES = (
    "supremo_create_process.txt",
    "netsupport_create_process.txt",
    "remotepc_network_connection.txt",
)
NOW = datetime(2026, 11, 23, 12, 0, 0)


def leaf(column: str, match: Match, value: str) -> Predicate:
    return Predicate(column, match, (value,))


def shape(node: Node) -> Any:
    """A tree without positions and source text, to compare parses."""
    if isinstance(node, Predicate):
        return (node.column, node.match, node.values, node.case_sensitive)
    if isinstance(node, Not):
        return ("not", shape(node.item))
    assert isinstance(node, And | Or)
    return (type(node).__name__, tuple(shape(item) for item in node.items))


# ---------------------------------------------------------------- the exclusion language

A = ("process.name", Match.EQUALS, ("a.exe",), False)
B = ("process.command_line", Match.CONTAINS, ("job",), False)
C = ("user.name", Match.EQUALS, ("svc",), False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('process.name == "a.exe"', A),
        ('process.command_line contains "job"', B),
        ('process.command_line CONTAINS "job"', B),
        ("process.name == 'a.exe'", A),
        ('process.name == "a.exe" or process.command_line contains "job"', ("Or", (A, B))),
        ('process.name == "a.exe" OR process.command_line contains "job"', ("Or", (A, B))),
        ('process.name == "a.exe" || process.command_line contains "job"', ("Or", (A, B))),
        ('process.name == "a.exe"||process.command_line contains "job"', ("Or", (A, B))),
        ('process.name == "a.exe" and process.command_line contains "job"', ("And", (A, B))),
        ('process.name == "a.exe" && process.command_line contains "job"', ("And", (A, B))),
        # and binds tighter than or; parentheses group
        (
            'process.name == "a.exe" or process.command_line contains "job" and user.name == "svc"',
            ("Or", (A, ("And", (B, C)))),
        ),
        (
            '(process.name == "a.exe" or process.command_line contains "job") and user.name == "svc"',
            ("And", (("Or", (A, B)), C)),
        ),
        ('process.user_name startswith "adm"', ("process.user_name", Match.STARTSWITH, ("adm",), False)),
        ('process.name endswith ".ps1"', ("process.name", Match.ENDSWITH, (".ps1",), False)),
        # a backslash escapes a quote or itself only: Windows paths stay as written
        (r'process.command_line contains "C:\Temp\\x \"q\""', (*B[:2], (r'C:\Temp\x "q"',), False)),
        ('process.parent_process_name == "SupRemoScheduler.exe"', None),
        ("process.name in (\"a.exe\", 'b.exe')", ("process.name", Match.EQUALS, ("a.exe", "b.exe"), False)),
        ('process.name IN ("a.exe")', A),
    ],
)
def test_every_spelling_of_the_exclusion_language(text: str, expected: Any) -> None:
    tree = parse_exclusion(text)
    if expected is None:
        assert shape(tree) == ("process.parent_process_name", Match.EQUALS, ("SupRemoScheduler.exe",), False)
    else:
        assert shape(tree) == expected
    # == is case-insensitive, like a Windows name and like Sigma's equality
    assert all(not p.case_sensitive for p in _leaves(tree))


def _leaves(node: Node) -> Iterator[Predicate]:
    if isinstance(node, Predicate):
        yield node
    elif isinstance(node, Not):
        yield from _leaves(node.item)
    elif isinstance(node, And | Or):
        for item in node.items:
            yield from _leaves(item)


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("Exclude processes from scheduled tasks.", 1),
        ('process.name = "a.exe"', 14),
        ('process.name == "a.exe', 17),
        ('process.name == "a.exe" or', 27),
        ('process.name == "a.exe" process.user == "x"', 25),
        ('(process.name == "a.exe"', 25),
        ('process.name matches regex "a"', 14),
    ],
)
def test_what_cannot_be_read_is_located(text: str, column: int) -> None:
    with pytest.raises(InputError) as caught:
        parse_exclusion(text)
    assert (caught.value.line, caught.value.column) == (1, column)


def test_deep_nesting_is_refused_where_it_starts() -> None:
    text = "(" * 70 + 'process.name == "a.exe"' + ")" * 70
    with pytest.raises(InputError) as caught:
        parse_exclusion(text)
    assert (caught.value.line, caught.value.column) == (1, 65)
    assert shape(parse_exclusion("(" * 60 + 'process.name == "a.exe"' + ")" * 60)) == A


# ---------------------------------------------------------------- fields and Sigma form


def test_every_pseudo_ecs_name_reaches_a_sigma_field_of_its_table() -> None:
    specs = tables()
    for table, names in page_fields().items():
        for name, column in names.items():
            assert column in specs[table].fields, f"{table}: {name} -> {column} has no Sigma field"


def page(tmp_path: Path, table: str, *exclusions: str) -> Path:
    kql_text = {
        "DeviceProcessEvents": "DeviceProcessEvents | where ProcessVersionInfoCompanyName has 'Demo'",
        "DeviceNetworkEvents": "DeviceNetworkEvents | where RemoteUrl has 'demo.com'",
    }[table]
    blocks = "".join(
        f"Scenario: Case {i}\nDescription: Admins do {i}.\nFilter/Exclusion: {text}\n"
        for i, text in enumerate(exclusions, start=1)
    )
    path = tmp_path / "page.txt"
    path.write_text(f"Hunting for the demo tool here.\nKQL Query\n{kql_text}\n{blocks}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("table", "exclusion", "selection"),
    [
        ("DeviceProcessEvents", 'process.name == "a.exe"', {"Image|endswith": "\\a.exe"}),
        (
            "DeviceProcessEvents",
            'process.parent_process_name == "p.exe"',
            {"ParentImage|endswith": "\\p.exe"},
        ),
        ("DeviceProcessEvents", 'process.command_line contains "job"', {"CommandLine|contains": "job"}),
        ("DeviceProcessEvents", 'process.user == "IT_Admin"', {"User": "IT_Admin"}),
        ("DeviceProcessEvents", 'process.user_name contains "Support"', {"User|contains": "Support"}),
        ("DeviceProcessEvents", 'user.name == "svc"', {"User": "svc"}),
        ("DeviceNetworkEvents", 'process.name == "mstsc.exe"', {"Image|endswith": "\\mstsc.exe"}),
        ("DeviceNetworkEvents", 'user.name == "support_user"', {"User": "support_user"}),
        (
            "DeviceProcessEvents",
            'process.name in ("a.exe", "b.exe")',
            {"Image|endswith": ["\\a.exe", "\\b.exe"]},
        ),
        # a file-name test inside an exclusion is never widened to the whole path: that would
        # exclude more than the page says, and narrow the rule
        ("DeviceProcessEvents", 'process.name contains "sched"', {"Image|re|i": "sched[^\\\\]*$"}),
    ],
)
def test_fields_map_through_the_rules_own_mapping(
    tmp_path: Path, table: str, exclusion: str, selection: dict[str, str]
) -> None:
    result = convert_input(str(page(tmp_path, table, exclusion)), OPTIONS)
    (page_filter,) = result.rules[0].filters.filters
    detection = dict(page_filter.document["filter"])
    assert detection.pop("condition") == "not selection"
    assert detection.pop("rules") == [result.rules[0].rule_id]
    assert detection == {"selection": selection}


def test_not_equal_excludes_every_other_value(tmp_path: Path) -> None:
    tree = parse_exclusion('process.user != "SYSTEM" and process.name == "a.exe"')
    assert isinstance(tree, And) and isinstance(tree.items[0], Predicate) and tree.items[0].negated
    result = convert_input(str(page(tmp_path, "DeviceProcessEvents", 'process.user != "SYSTEM"')), OPTIONS)
    (page_filter,) = result.rules[0].filters.filters
    detection = dict(page_filter.document["filter"])
    assert detection.pop("condition") == "not (not filter_main_user)"
    assert detection["filter_main_user"] == {"User": "SYSTEM"}


def test_an_exclusion_on_a_field_without_a_column_is_a_located_note(tmp_path: Path) -> None:
    path = page(
        tmp_path,
        "DeviceNetworkEvents",
        'process.name == "a.exe" or process.parent_process_name == "p.exe"',
        'process.name == "b.exe"',
    )
    result = convert_input(str(path), OPTIONS)
    rule = result.rules[0]
    assert [f.exclusion for f in rule.filters.filters] == ['process.name == "b.exe"']
    (note,) = [n for n in rule.notes if n.startswith("false-positive exclusion")]
    # line 6 of the page; the field is the 46th character of the line
    assert note.startswith("false-positive exclusion 1 kept as a note, not a filter (line 6 column 46: ")
    assert "process.parent_process_name names no column of DeviceNetworkEvents" in note


# ---------------------------------------------------------------- the five examples


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    runner = CliRunner()
    outcome = runner.invoke(app, ["convert", str(EXAMPLES), "--out", str(out), "--date", "2026-01-02"])
    assert outcome.exit_code == 0, outcome.output
    return out


def filters_in(path: Path) -> list[Any]:
    collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"), collect_filters=True)
    assert not collection.errors and not collection.rules
    return collection.filters


def test_the_examples_give_fifteen_filters_that_pysigma_loads(converted: Path) -> None:
    report = json.loads((converted / "report.json").read_text())
    by_source = {Path(i["source"]).name: i["rules"][0] for i in report["inputs"]}
    counts = {name: len(rule["filters"]) for name, rule in by_source.items()}
    assert counts == {
        "mremoteng_create_process.txt": 0,
        "netsupport_create_process.txt": 5,
        "remotepc_network_connection.txt": 5,
        "supremo_create_process.txt": 5,
        "supremo_file_signature.txt": 0,
    }
    loaded = 0
    for name in FILTERED_PAGES:
        rule = by_source[name]
        assert rule["filters_applied"] is False
        assert any("not applied to the queries" in note for note in rule["notes"])
        (path,) = {f["path"] for f in rule["filters"]}
        sigma_rule = SigmaRule.from_yaml((converted / rule["sigma"]).read_text())
        filters = filters_in(converted / path)
        assert [str(f.id) for f in filters] == [f["id"] for f in rule["filters"]]
        for index, sigma_filter in enumerate(filters, start=1):
            assert sigma_filter.id == uuid.uuid5(
                uuid.UUID("0b5e7c1e-3f0a-4d7e-9a43-6c2f5d1b8e27"), f"{rule['id']}|{index}"
            )
            assert [r.reference for r in sigma_filter.filter.rules] == [rule["id"]]
            assert sigma_filter.logsource == sigma_rule.logsource
            assert sigma_filter.filter.condition[0].startswith("not ")
            loaded += 1
    assert loaded == 15
    assert not (converted / "filters" / "proc_creation_win_rmm_mremoteng.yml").exists()


def test_without_apply_filters_the_queries_are_the_unfiltered_rule(converted: Path, tmp_path: Path) -> None:
    page_path = EXAMPLES / "supremo_create_process.txt"
    plain = convert_input(str(page_path), OPTIONS).rules[0]
    filtered = convert_input(
        str(page_path), Options(author="tester", date=dt.date(2026, 1, 2), apply_filters=True)
    )
    rule = filtered.rules[0]
    assert rule.filters_applied and not plain.filters_applied
    assert rule.yaml == plain.yaml  # the rule file never carries the filters
    for target in targets.TARGETS:
        # Lucene spells case-insensitive text as [sS] letter classes
        assert "supremoscheduler" not in re.sub(r"\[(\w)\w\]", r"\1", plain.queries[target]).lower()
        assert "supremoscheduler" in re.sub(r"\[(\w)\w\]", r"\1", rule.queries[target]).lower(), target
    assert any("the queries apply 5 false-positive filter(s)" in n for n in rule.notes)
    stored = (converted / "backends" / "kusto" / "proc_creation_win_rmm_supremo.kql").read_text()
    assert stored == plain.queries["kusto"] + "\n"


def test_apply_filters_on_the_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["convert", str(EXAMPLES / "remotepc_network_connection.txt"), "--out", str(tmp_path)]
    outcome = runner.invoke(app, [*args, "--date", "2026-01-02", "--apply-filters"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads((tmp_path / "report.json").read_text())
    rule = report["inputs"][0]["rules"][0]
    assert rule["filters_applied"] is True
    assert (
        "rdpclip.exe"
        in (tmp_path / "backends" / "splunk" / "net_connection_win_rmm_remotepc.spl").read_text()
    )
    assert (tmp_path / "filters" / "net_connection_win_rmm_remotepc.yml").is_file()


SIGMA_CLI = shutil.which("sigma", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(SIGMA_CLI is None, reason="sigma-cli is not installed (pip install 'rmm2sigma[bench]')")
@pytest.mark.parametrize("name", FILTERED_PAGES)
def test_sigma_cli_applies_every_written_filter(converted: Path, name: str) -> None:
    report = json.loads((converted / "report.json").read_text())
    (rule,) = [i["rules"][0] for i in report["inputs"] if Path(i["source"]).name == name]
    command = [
        str(SIGMA_CLI),
        "convert",
        "-t",
        "kusto",
        "-p",
        "microsoft_xdr",
        str(converted / rule["sigma"]),
    ]
    plain = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    filter_file = converted / rule["filters"][0]["path"]
    done = subprocess.run(
        [*command[:-1], "--filter", str(filter_file), command[-1]], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout != plain
    for sigma_filter in filters_in(filter_file):
        for detection in sigma_filter.filter.detections.values():
            for item in detection.detection_items:
                for value in item.value:
                    needle = str(value).strip("*").lstrip("\\")
                    assert needle in done.stdout and needle not in plain, (name, needle)
    assert done.stdout.count("not(") == 5


# ---------------------------------------------------------------- SigmaHQ checks


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No downloads, and a fresh cache: the packaged validator data alone must be enough."""

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    import sigma.data.mitre_attack
    import sigma.data.mitre_d3fend
    import sigma.validators.sigmahq.data.base

    for module in (sigma.validators.sigmahq.data.base, sigma.data.mitre_attack, sigma.data.mitre_d3fend):
        monkeypatch.setattr(module, "urlopen", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_sigmahq_validators_find_nothing_on_rules_and_filters(converted: Path, offline: None) -> None:
    from sigma.validators.base import SigmaDetectionValidator

    from rmm2sigma.sigmahq import active_validators, check_rules, seed_validator_data

    # the rules, alone and with their filters applied (pySigma merges the filter into the detection)
    assert [str(i) for i in check_rules([converted / "sigma_rules"])] == []
    assert [str(i) for i in check_rules([converted / "sigma_rules", converted / "filters"])] == []
    # the filters themselves: every validator that reads metadata; those that read a rule's
    # `detection` (a filter has none) ran on the filtered rules above
    seed_validator_data()
    filters = [f for path in sorted((converted / "filters").glob("*.yml")) for f in filters_in(path)]
    assert len(filters) == 15
    checked = 0
    for name, cls in active_validators().items():
        validator = cls()
        if isinstance(validator, SigmaDetectionValidator) or name in DETECTION_READERS:
            continue
        issues = [issue for f in filters for issue in validator.validate(f)]
        issues.extend(validator.finalize())
        assert issues == [], name
        checked += 1
    assert checked >= 40


# validators that are plain rule validators but read `rule.detection` (checked on the filtered rules)
DETECTION_READERS = frozenset(
    {
        "all_of_them_condition",
        "dangling_condition",
        "dangling_detection",
        "them_condition_with_single_detection",
    }
)


# ---------------------------------------------------------------- the proof


def _kql(node: Node) -> str:
    """The page's exclusion as KQL over Defender columns: the reference for what it names."""
    if isinstance(node, Predicate):
        value = str(node.values[0]).replace("\\", "\\\\").replace('"', '\\"')
        operator = {Match.EQUALS: "=~", Match.CONTAINS: "contains", Match.STARTSWITH: "startswith"}.get(
            node.match, "endswith"
        )
        return f'{node.column} {operator} "{value}"'
    assert isinstance(node, And | Or)
    joiner = " and " if isinstance(node, And) else " or "
    return "(" + joiner.join(_kql(item) for item in node.items) + ")"


@pytest.fixture(scope="module")
def engines() -> tuple[KqlEngine, SigmaEngine]:
    return KqlEngine(defender_schema()), SigmaEngine()


@pytest.mark.parametrize("name", FILTERED_PAGES)
def test_filtered_selects_unfiltered_minus_exactly_the_excluded(
    name: str, engines: tuple[KqlEngine, SigmaEngine]
) -> None:
    kusto, sqlite = engines
    path = EXAMPLES / name
    result = convert_input(str(path), OPTIONS)
    converted_rule = result.rules[0]
    page_filters = converted_rule.filters.filters
    assert len(page_filters) == 5
    detection = lower(
        kql.parse(Path(path).read_text().split("KQL Query\n")[1].split("\nid:")[0]), defender_schema()
    )
    columns = page_fields()[detection.table]
    exclusions = [_rename_columns(parse_exclusion(f.exclusion), columns) for f in page_filters]
    # rows that tell every test apart: the rule's and the exclusions' (case variants, substrings, ...)
    assert detection.predicate is not None
    probe = Detection(detection.table, And((detection.predicate, Not(Or(tuple(exclusions))))))
    rows = generate(probe, defender_schema(), seed=7, now=NOW)
    kusto.load({detection.table: rows})
    excluded = kusto.select(
        with_ids(f"{detection.table} | where " + " or ".join(_kql(e) for e in exclusions)), NOW
    )

    def sigma_rule() -> SigmaRule:
        return SigmaRule.from_yaml(converted_rule.yaml)

    spec = tables()[detection.table]
    events = sigma_rows(rows, spec)
    unfiltered = sqlite.select(sqlite.query(sigma_rule()), events, sigma_fields(spec))
    filtered = sqlite.select(
        sqlite.query(applied_rule(sigma_rule(), page_filters)), events, sigma_fields(spec)
    )
    assert unfiltered & excluded and unfiltered - excluded, "the events must show what the filters remove"
    assert filtered == unfiltered - excluded

    # the kusto output, executed by duckdb-kql over the same Defender rows
    plain = targets.convert("kusto", sigma_rule, {})
    applied = targets.convert("kusto", lambda: applied_rule(sigma_rule(), page_filters), {})
    assert plain.query and applied.query
    kusto_unfiltered = kusto.select(with_ids(plain.query), NOW)
    kusto_filtered = kusto.select(with_ids(applied.query), NOW)
    assert kusto_unfiltered == unfiltered
    assert kusto_filtered == kusto_unfiltered - excluded
    # the events hold the page's values in other cases too, so a case-sensitive filter would fail
    needles = {str(value) for exclusion in exclusions for value in _values(exclusion)}
    recased = {
        value
        for row in rows
        if row[ID] in excluded
        for value in row.values()
        if isinstance(value, str) and value not in needles and value.lower() in {n.lower() for n in needles}
    }
    assert recased


def _values(node: Node) -> Iterator[Any]:
    for item in _leaves(node):
        yield from item.values
