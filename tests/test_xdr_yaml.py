"""Defender XDR custom-detection files (``kind: CustomDetection``) in YAML and JSON, and YAML keys
repeated with the same value."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from conftest import assert_points_at
from rmm2sigma.convert import convert_input
from rmm2sigma.errors import InputError
from rmm2sigma.sigma import Options
from rmm2sigma.sources import read_sources

XDR = Path(__file__).resolve().parent / "fixtures" / "xdr" / "certutil_download.yaml"
OPTIONS = Options(author="tester", date=dt.date(2026, 1, 2))


def test_the_fields_come_from_the_detection_rule() -> None:
    (rule,) = read_sources(str(XDR))
    assert rule.id == "xdr-certutil-download-test"
    assert rule.name == "Certutil Download (test)"
    assert rule.description == "Certutil fetching a file from a URL."
    assert rule.severity == "high"
    # the alert template's ATT&CK, not the source rule's wider originals
    assert rule.tactics == ("CommandAndControl",) and rule.techniques == ("T1105",)
    assert rule.query_frequency == "3h"  # PT3H
    assert rule.query_period == "2h"  # the Sentinel source rule's lookback
    assert any("entity mappings (devices)" in note for note in rule.rule_notes)
    lines = XDR.read_text(encoding="utf-8").split("\n")
    assert lines[rule.kql_line - 1][rule.kql_column - 1 :] == "DeviceProcessEvents"
    assert rule.kql.startswith("DeviceProcessEvents\n| where FileName")


def test_the_original_attack_fills_in_when_the_template_names_none(tmp_path: Path) -> None:
    document = yaml.safe_load(XDR.read_text(encoding="utf-8"))
    del document["properties"]["detectionAction"]["alertTemplate"]["tactics"]
    path = tmp_path / "no_tactics.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    (rule,) = read_sources(str(path))
    assert rule.tactics == ("CommandAndControl", "DefenseEvasion") and rule.techniques == ("T1105", "T1218")


def test_it_converts_with_its_tags() -> None:
    result = convert_input(str(XDR), OPTIONS, ())
    assert result.status == "converted", result.error
    tags = yaml.safe_load(result.rules[0].yaml)["tags"]
    assert "attack.command-and-control" in tags and "attack.t1105" in tags


def test_an_error_points_into_the_query_text_block(tmp_path: Path) -> None:
    text = XDR.read_text(encoding="utf-8").replace('has "urlcache"', '==== "urlcache"')
    path = tmp_path / "typo.yaml"
    path.write_text(text, encoding="utf-8")
    result = convert_input(str(path), OPTIONS, ())
    assert result.status == "failed"
    assert_points_at(result.error, text)


def test_the_same_nesting_in_json_is_read(tmp_path: Path) -> None:
    path = tmp_path / "certutil.json"
    path.write_text(json.dumps(yaml.safe_load(XDR.read_text(encoding="utf-8")), indent=2), encoding="utf-8")
    (rule,) = read_sources(str(path))
    assert rule.id == "xdr-certutil-download-test" and rule.query_frequency == "3h"
    assert rule.techniques == ("T1105",) and rule.escaped


GOOD = (
    "id: 1\nname: Same\ndescription: x\nname: Same\n"
    "query: |\n  DeviceProcessEvents\n  | where FileName =~ 'a.exe'\n"
)


def test_a_key_repeated_with_the_same_value_is_read_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(GOOD, encoding="utf-8")
    (rule,) = read_sources(str(path))
    assert rule.name == "Same" and rule.kql_line == 6
    assert len(rule.warnings) == 1 and "'name'" in rule.warnings[0] and "lines 2 and 4" in rule.warnings[0]
    result = convert_input(str(path), OPTIONS, ())
    assert result.status == "converted" and result.warnings == rule.warnings


def test_a_key_repeated_with_another_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(GOOD.replace("name: Same\nquery", "name: Other\nquery"), encoding="utf-8")
    with pytest.raises(InputError, match=r"duplicate key 'name'.*lines 2 and 4") as error:
        read_sources(str(path))
    assert (error.value.line, error.value.column) == (4, 1)
