"""report.md, report.html and layer.json: complete, escaped, deterministic, and safe to write."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from markdown_it import MarkdownIt

from rmm2sigma.convert import convert_all
from rmm2sigma.report import summary_table, write_outputs
from rmm2sigma.reports import REPORT_FILES, json_summary, not_exact, target_rows
from rmm2sigma.reports.html import render_html
from rmm2sigma.reports.layer import layer
from rmm2sigma.reports.markdown import render_markdown
from rmm2sigma.sigma import Options
from rmm2sigma.sources import discover

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCHEMA = json.loads((Path(__file__).parent / "navigator_layer_v4_5.schema.json").read_text(encoding="utf-8"))
OPTIONS = Options(author="tester", date=dt.date(2026, 1, 2))


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("out")
    _, report = write_outputs(convert_all(list(discover([str(EXAMPLES)])), OPTIONS), out)
    return out, report


def _rule(title: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    queries = {t: f"{t} query for {title}" for t in labels if t != "sigma"}
    return {
        "sigma": f"sigma_rules/process_creation/{title.lower()}.yml",
        "id": "00000000-0000-4000-8000-000000000000",
        "title": title,
        "fidelity": labels["sigma"],
        "fidelity_by_target": labels,
        "notes": [],
        "queries": queries,
        "target_errors": {},
        "tags": [],
        "kql": "DeviceProcessEvents",
        **extra,
    }


def _report(*rules: dict[str, Any], failed: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    inputs = [
        {"source": f"in{n}.kql", "status": "converted", "error": None, "line": None, "column": None}
        | {"warnings": [], "rules": [rule]}
        for n, rule in enumerate(rules)
    ]
    summary = {"inputs": len(inputs) + len(failed), "converted": len(inputs), "partial": 0}
    summary |= {"failed": len(failed), "rules": len(rules), "fidelity": {}, "targets": {}}
    return {"version": 1, "summary": summary, "inputs": inputs + list(failed)}


def test_every_rule_is_in_the_reports_with_its_kql_sigma_and_queries(
    examples: tuple[Path, dict[str, Any]],
) -> None:
    out, report = examples
    markdown = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    rules = [rule for entry in report["inputs"] for rule in entry["rules"]]
    assert len(rules) == 5
    for rule in rules:
        sigma = (out / rule["sigma"]).read_text(encoding="utf-8")
        assert rule["kql"].strip() and rule["tags"]
        for text in (rule["kql"].strip(), sigma.strip(), *(q.strip() for q in rule["queries"].values())):
            assert text in markdown
            assert _escaped(text) in html
        assert f"### {rules.index(rule) + 1}. {rule['title']}" in markdown
        for note in rule["notes"]:
            assert _escaped(note) in html
        for target, label in rule["fidelity_by_target"].items():
            assert f"{target} ({label}):" in markdown or target == "sigma"


def _escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#x27;")
    )


def test_summary_counts_labels_per_target_and_lists_the_rules_that_are_not_exact() -> None:
    report = _report(
        _rule("Alpha", {"sigma": "exact", "kusto": "exact", "lucene": "narrowed"}),
        _rule("Beta", {"sigma": "widened", "kusto": "widened", "lucene": "widened"}),
        _rule("Gamma", {"sigma": "exact", "kusto": "exact"}, target_errors={"lucene": "unsupported"}),
    )
    rows = target_rows(report)
    assert (
        rows["sigma"]
        == rows["kusto"]
        == {
            "converted": 3,
            "exact": 2,
            "widened": 1,
            "approximate": 0,
            "narrowed": 0,
            "diverged": 0,
            "unproven": 0,
            "failed": 0,
        }
    )
    assert rows["lucene"]["converted"] == 2 and rows["lucene"]["narrowed"] == 1
    assert rows["lucene"]["widened"] == 1 and rows["lucene"]["failed"] == 1
    listed = not_exact(report)
    assert [e["title"] for e in listed["lucene"]] == ["Alpha", "Beta"]
    assert (
        listed["sigma"]
        == listed["kusto"]
        == [{"sigma": "sigma_rules/process_creation/beta.yml", "title": "Beta", "fidelity": "widened"}]
    )
    printed = summary_table(report)
    # targets with the same list share it; the narrowed rule is named under its target
    assert "not exact on sigma, kusto (1):\n  widened     sigma_rules/process_creation/beta.yml" in printed
    assert re.search(
        r"not exact on lucene \(2\):\n  narrowed +sigma_rules/process_creation/alpha\.yml", printed
    )
    document = json.loads(json_summary(report))
    assert document["not_exact"] == listed and document["by_target"] == rows
    assert "| lucene | 2 | 0 | 1 | 0 | 1 | 0 | 0 | 1 |" in render_markdown(report, {})


def test_layer_is_a_valid_navigator_layer_scored_by_rule_count(examples: tuple[Path, dict[str, Any]]) -> None:
    out, report = examples
    written = json.loads((out / "layer.json").read_text(encoding="utf-8"))
    jsonschema.validate(written, SCHEMA)
    assert written["techniques"] == [
        {
            "techniqueID": "T1219",
            "score": 5,
            "comment": "; ".join(sorted(r["title"] for e in report["inputs"] for r in e["rules"])),
            "enabled": True,
            "showSubtechniques": False,
        }
    ]
    mixed = layer(
        _report(
            _rule(
                "A",
                {"sigma": "exact"},
                tags=["attack.command-and-control", "attack.t1219", "attack.t1059.001"],
            ),
            _rule("B", {"sigma": "exact"}, tags=["attack.t1059.001", "attack.g0016", "attack.s0029"]),
        )
    )
    jsonschema.validate(mixed, SCHEMA)
    assert [(t["techniqueID"], t["score"], t["comment"]) for t in mixed["techniques"]] == [
        ("T1059.001", 2, "A; B"),
        ("T1219", 1, "A"),
    ]
    assert mixed["gradient"]["maxValue"] == 2
    empty = layer(_report())
    jsonschema.validate(empty, SCHEMA)
    assert empty["techniques"] == [] and empty["gradient"]["maxValue"] > empty["gradient"]["minValue"]
    with pytest.raises(jsonschema.ValidationError):  # the schema does reject a wrong layer
        jsonschema.validate({**mixed, "techniques": [{"techniqueID": "t1219"}]}, SCHEMA)


HOSTILE = "Probe <script>alert(1)</script> & <img src=x onerror=alert(2)> | *bold* `tick`"


def test_hostile_text_is_inert_in_markdown_and_html() -> None:
    kql = "DeviceProcessEvents\n| where ProcessCommandLine has '```</pre><script>alert(3)</script>'\n"
    report = _report(
        _rule(HOSTILE, {"sigma": "widened", "kusto": "widened"}, kql=kql, notes=[f"note about {HOSTILE}"]),
        failed=(
            {"source": "x<script>.kql", "status": "failed", "error": f"x.kql:1:2: {HOSTILE}"}
            | {"line": 1, "column": 2, "warnings": [], "rules": []},
        ),
    )
    sigma = {report["inputs"][0]["rules"][0]["sigma"]: f"title: {HOSTILE}\n"}
    html = render_html(report, sigma)
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # nothing loads from outside
    markdown = render_markdown(report, sigma)
    fences = re.findall(r"^(`{3,})kql\n(.*?)\n\1$", markdown, re.M | re.S)
    assert fences and fences[0][0] == "````" and fences[0][1] == kql.rstrip("\n")
    outside = re.sub(r"^(`{3,})\w*\n.*?\n\1$", "", markdown, flags=re.M | re.S)  # code is literal
    outside = re.sub(r"`[^`\n]*`", "", outside)
    assert "<script" not in outside and "<img" not in outside and "&lt;script&gt;" in outside
    rendered = MarkdownIt("commonmark").enable("table").render(markdown)  # as a Markdown viewer shows it
    assert "<script" not in rendered and "<img" not in rendered and "&lt;script&gt;alert(1)" in rendered
    assert rendered.count("<table>") == 4 and '<a href="#rule-1">' in rendered
    row = next(line for line in markdown.splitlines() if line.startswith("| 1 | [Probe"))
    assert row.count("|") == 5 and "&#124; \\*bold\\*" in row  # the title's pipe splits no cell


def test_reports_are_deterministic_and_never_replaced_without_force(tmp_path: Path) -> None:
    results = convert_all(list(discover([str(EXAMPLES)])), OPTIONS, ("kusto",))
    first, second = tmp_path / "a", tmp_path / "b"
    write_outputs(results, first, ("kusto",))
    write_outputs(results, second, ("kusto",))
    for name in ("report.json", *REPORT_FILES):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    write_outputs(results, first, ("kusto",))  # same content: nothing to refuse
    (first / "report.html").write_text("edited by hand", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"report\.html exists with other content"):
        write_outputs(results, first, ("kusto",))
    assert (first / "report.html").read_text(encoding="utf-8") == "edited by hand"
    write_outputs(results, first, ("kusto",), force=True)
    assert (first / "report.html").read_bytes() == (second / "report.html").read_bytes()
