"""Output safety: sanitised names, no overwrites between inputs or of existing files, atomic writes."""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rmm2sigma import report, sources
from rmm2sigma.cli import app
from rmm2sigma.convert import InputResult, RuleResult, convert_input
from rmm2sigma.model import Fidelity
from rmm2sigma.report import MAX_STEM, plan_names, safe_part, write_outputs
from rmm2sigma.reports import REPORT_FILES
from rmm2sigma.sigma import Options

SRC = Path(report.__file__).resolve().parent
OPTIONS = Options(date=dt.date(2026, 1, 2))
DEVICES = {"con", "prn", "aux", "nul", *(f"{port}{n}" for port in ("com", "lpt") for n in range(10))}


def sentinel(
    name: str, value: str = "tool.exe", rule_id: str = "5c0e4d6a-1111-4222-8333-444455556666"
) -> str:
    return (
        f"id: {rule_id}\nname: {json.dumps(name)}\n"
        f'query: |\n  DeviceProcessEvents\n  | where FileName =~ "{value}"\n'
    )


def fake(source: str, filename: str, rule_id: str, category: str = "process_creation") -> InputResult:
    rule = RuleResult(
        title="t",
        rule_id=rule_id,
        category=category,
        filename=filename,
        yaml=f"title: {source}\n",
        fidelity=Fidelity.EXACT,
        notes=(),
        queries={"kusto": f"// {source}"},
    )
    return InputResult(source, "converted", rules=(rule,))


def written(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): p.read_text(encoding="utf-8") for p in sorted(out.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "hostile",
    [
        "..",
        "../../etc/passwd",
        "a/b\\c",
        "CON",
        "nul",
        "com1",
        "lpt9",
        "",
        "___",
        "Ünïcödé ✓",
        "x" * 500,
        "\x00\n",
    ],
)
def test_every_name_part_is_safe_on_every_file_system(hostile: str) -> None:
    part = safe_part(hostile)
    assert 1 <= len(part) <= MAX_STEM
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789_" for c in part)
    assert part not in DEVICES


def test_titles_that_attack_the_file_system_give_safe_file_names(tmp_path: Path) -> None:
    titles = ["../../../evil", "CON", "a\\b/c:d*e?f", "x" * 400, "..", "🙂🙂🙂"]
    for number, title in enumerate(titles):
        (tmp_path / f"in{number}.yaml").write_text(sentinel(title, rule_id=f"id-{number}"), encoding="utf-8")
    results = [convert_input(str(tmp_path / f"in{n}.yaml"), OPTIONS, ("kusto",)) for n in range(len(titles))]
    out = tmp_path / "out"
    write_outputs(results, out, ("kusto",))
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 2 * len(titles) + 1 + len(REPORT_FILES)  # + report.json and the reports
    for path in files:
        assert path.resolve().is_relative_to(out.resolve())
        assert len(path.name) <= MAX_STEM + len(".lucene")


def test_colliding_names_get_stable_suffixes_in_any_order() -> None:
    a = fake("a.yaml", "proc_creation_win_same.yml", "aaaaaaaa-0000-4000-8000-000000000000")
    b = fake("b.yaml", "proc_creation_win_same.yml", "bbbbbbbb-0000-4000-8000-000000000000")
    c = fake("c.yaml", "proc_creation_win_other.yml", "cccccccc-0000-4000-8000-000000000000")

    def stems(results: list[InputResult]) -> dict[str, str]:
        return {p.rule.rule_id[:1]: p.stem for p in plan_names(results).values()}

    assert (
        stems([a, b, c])
        == stems([c, b, a])
        == {
            "a": "proc_creation_win_same_aaaaaaaa",
            "b": "proc_creation_win_same_bbbbbbbb",
            "c": "proc_creation_win_other",
        }
    )


def test_names_stay_unique_when_ids_collide_too() -> None:
    same_id = "dddddddd-0000-4000-8000-000000000000"
    results = [
        fake("one/rule.yaml", "proc_creation_win_same.yml", same_id),
        fake("two/rule.yaml", "proc_creation_win_same.yml", same_id),
        fake("x.yaml", "proc_creation_win_same_dddddddd.yml", "eeeeeeee-0000-4000-8000-000000000000"),
        fake("y.yaml", "proc_creation_win_same_dddddddd.yml", "eeeeeeee-0000-4000-8000-000000000000"),
        fake("z.yaml", "proc_creation_win_" + "l" * 200 + ".yml", "ffffffff-0000-4000-8000-000000000000"),
        # backends/<target>/ holds every category: one stem in two categories must differ too
        fake(
            "n.yaml",
            "proc_creation_win_same.yml",
            "99999999-0000-4000-8000-000000000000",
            "network_connection",
        ),
    ]
    planned = plan_names(results)
    stems = [planned[id(rule)].stem for result in results for rule in result.rules]
    assert len(set(stems)) == len(stems)
    assert all(len(stem) <= MAX_STEM for stem in stems)


def test_two_inputs_with_one_name_both_survive(tmp_path: Path) -> None:
    for folder, value in (("left", "left.exe"), ("right", "right.exe")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "rule.yaml").write_text(sentinel("Same Title", value), encoding="utf-8")
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app, ["convert", str(tmp_path / "left"), str(tmp_path / "right"), "-o", str(out)]
    )
    assert done.exit_code == 0, done.output
    rules = list((out / "sigma_rules" / "process_creation").iterdir())
    assert len(rules) == 2
    assert {"left.exe" in r.read_text() for r in rules} == {True, False}


# ---------------------------------------------------------------- existing files


def test_existing_files_are_kept_unless_force(tmp_path: Path) -> None:
    (tmp_path / "rule.yaml").write_text(sentinel("Keep Me"), encoding="utf-8")
    out = tmp_path / "out"
    args = ["convert", str(tmp_path / "rule.yaml"), "-o", str(out), "--date", "2026-01-02"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    before = written(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    again = runner.invoke(app, args)  # same content: nothing to replace, nothing touched
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes

    changed = runner.invoke(app, [*args[:-1], "2026-02-03"])
    assert changed.exit_code == 1 and "use --force" in changed.output
    assert written(out) == before

    forced = runner.invoke(app, [*args[:-1], "2026-02-03", "--force"])
    assert forced.exit_code == 0, forced.output
    assert written(out) != before and "2026-02-03" in "".join(written(out).values())


def test_a_refused_input_writes_none_of_its_files(tmp_path: Path) -> None:
    result = fake("a.yaml", "proc_creation_win_refused.yml", "aaaaaaaa-0000-4000-8000-000000000000")
    other = fake("b.yaml", "proc_creation_win_fine.yml", "bbbbbbbb-0000-4000-8000-000000000000")
    out = tmp_path / "out"
    sigma = out / "sigma_rules" / "process_creation" / "proc_creation_win_refused.yml"
    sigma.parent.mkdir(parents=True)
    sigma.write_text("mine\n", encoding="utf-8")
    final, summary = write_outputs([result, other], out, ("kusto",))
    assert [r.status for r in final] == ["failed", "converted"]
    assert sigma.read_text(encoding="utf-8") == "mine\n"
    assert not (out / "backends" / "kusto" / "proc_creation_win_refused.kql").exists()
    assert (out / "backends" / "kusto" / "proc_creation_win_fine.kql").is_file()
    assert summary["summary"]["failed"] == 1


def test_a_foreign_report_stops_the_run_before_any_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}", encoding="utf-8")
    result = fake("a.yaml", "proc_creation_win_a.yml", "aaaaaaaa-0000-4000-8000-000000000000")
    with pytest.raises(FileExistsError, match="use --force"):
        write_outputs([result], out, ("kusto",))
    assert written(out) == {"report.json": "{}"}


def test_folders_and_files_in_the_way_are_refused_not_crashed_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sigma_rules" / "process_creation" / "proc_creation_win_a.yml").mkdir(parents=True)
    (out / "backends").mkdir()
    (out / "backends" / "kusto").write_text("a file where a folder goes", encoding="utf-8")
    results = [
        fake("a.yaml", "proc_creation_win_a.yml", "aaaaaaaa-0000-4000-8000-000000000000"),
        fake("b.yaml", "proc_creation_win_b.yml", "bbbbbbbb-0000-4000-8000-000000000000"),
    ]
    final, _ = write_outputs(results, out, ("kusto",), force=True)
    assert [r.status for r in final] == ["failed", "failed"]
    assert "is a folder" in (final[0].error or "") and "in the way" in (final[1].error or "")


# ---------------------------------------------------------------- atomic writes


def test_an_interrupted_run_leaves_no_half_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = [
        fake(f"{n}.yaml", f"proc_creation_win_{n}.yml", f"{n:08d}-0000-4000-8000-000000000000")
        for n in range(5)
    ]
    complete = tmp_path / "complete"
    write_outputs(results, complete, ("kusto",))
    expected = written(complete)

    calls = 0
    real_replace = os.replace

    def interrupted(source: str, target: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        write_outputs(results, out, ("kusto",))
    partial = written(out)
    assert len(partial) == 3 and "report.json" not in partial
    assert all(expected[name] == text for name, text in partial.items())  # whole files or none
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_written_files_are_ordinary_readable_files(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_outputs(
            [fake("a.yaml", "proc_creation_win_a.yml", "a" * 8 + "-0000-4000-8000-000000000000")], tmp_path
        )
    finally:
        os.umask(previous)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# ---------------------------------------------------------------- YAML loading


def test_yaml_is_only_loaded_with_safe_loaders() -> None:
    """No ``yaml.load``/``full_load``/``unsafe_load`` or non-safe Loader anywhere in the package."""
    unsafe = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all"}
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
            ):
                name = node.attr
                if name in unsafe or (name.endswith("Loader") and "Safe" not in name):
                    found.append(f"{path.name}:{node.lineno}: yaml.{name}")
            if isinstance(node, ast.keyword) and node.arg == "typ" and ast.literal_eval(node.value) != "safe":
                found.append(f"{path.name}:{node.lineno}: ruamel typ={ast.literal_eval(node.value)!r}")
    assert not found
    assert issubclass(sources._StrictLoader, yaml.constructor.SafeConstructor)
    assert not issubclass(sources._StrictLoader, yaml.constructor.FullConstructor)


def test_a_lone_surrogate_fails_its_input_only(tmp_path: Path) -> None:
    """A KQL ``\\ud800`` escape is no character: the parser refuses it where it stands."""
    (tmp_path / "lone.kql").write_text(
        'DeviceProcessEvents | where FileName =~ "a\\ud800"\n', encoding="utf-8"
    )
    (tmp_path / "fine.kql").write_text(
        'DeviceProcessEvents | where FileName =~ "fine.exe"\n', encoding="utf-8"
    )
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["convert", str(tmp_path), "-o", str(out), "-t", "kusto"])
    assert done.exit_code == 1
    entries = {Path(e["source"]).name: e for e in json.loads((out / "report.json").read_text())["inputs"]}
    assert entries["lone.kql"]["status"] == "failed" and not entries["lone.kql"]["rules"]
    assert "1:43: '\\ud800' is half of a surrogate pair" in entries["lone.kql"]["error"]
    assert entries["fine.kql"]["status"] == "converted"
    assert len(list((out / "sigma_rules").rglob("*.yml"))) == 1


def test_text_no_utf_8_file_can_hold_is_refused_not_written() -> None:
    assert report._encoded("fine é") == "fine é".encode()
    assert (
        report._encoded("a\ud800") == "output cannot be written as UTF-8 (surrogates not allowed: '\\ud800')"
    )


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names are bytes")
def test_an_undecodable_file_name_never_stops_the_batch(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "in")
    with open(os.fsencode(tmp_path / "in") + b"/\xff\xfe.kql", "w", encoding="utf-8") as handle:
        handle.write('DeviceProcessEvents | where FileName =~ "odd.exe"\n')
    (tmp_path / "in" / "fine.kql").write_text(
        'DeviceProcessEvents | where FileName =~ "x.exe"\n', encoding="utf-8"
    )
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["convert", str(tmp_path / "in"), "-o", str(out), "-t", "kusto"])
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    report_text = (out / "report.json").read_text(encoding="utf-8")
    entries = {Path(e["source"]).name: e for e in json.loads(report_text)["inputs"]}
    assert entries["fine.kql"]["status"] == "converted" and "\udcff\udcfe.kql" in entries
