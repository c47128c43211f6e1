"""A test of one part of a split column (``mv-expand`` of ``split(Column, sep)``) kept as what it
implies of the whole column: the part test is left out (approximate, noted) and the column test it
implies is the rule, wider by construction; the labels are measured."""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

from conftest import disagreements, executed
from rmm2sigma.convert import convert_rule
from rmm2sigma.fidelity import SIGMA
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.proof import measure
from test_device_events import refused, selection

NOW = datetime(2026, 11, 23, 12, 0, 0)
SPLIT = 'DeviceProcessEvents\n| extend Part = split(ProcessCommandLine, " ")\n| mv-expand Part\n'

# name -> (query, the rule's detection)
CASES = {
    "equal part": (SPLIT + '| where Part =~ "-enc"', selection(**{"CommandLine|contains": "-enc"})),
    "term in a part": (
        'DeviceProcessEvents\n| mv-expand Part = split(ProcessCommandLine, " ") to typeof(string)\n'
        '| where Part has "mimikatz" and FileName =~ "cmd.exe"',
        {
            "selection": {"CommandLine|contains": "mimikatz", "Image|endswith": "\\cmd.exe"},
            "condition": "selection",
        },
    ),
    "anchored regex": (
        SPLIT + '| where Part matches regex "^[A-Za-z0-9+/]{50,}[=]{0,2}$"',
        selection(**{"CommandLine|re": "[A-Za-z0-9+/]{50,}[=]{0,2}"}),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_part_test_is_the_column_test_it_implies(name: str) -> None:
    result = convert_rule(SourceRule(path="split.kql", kql=CASES[name][0], name="Split"), Options())
    assert yaml.safe_load(result.yaml)["detection"] == CASES[name][1]
    assert result.fidelity_by_target[SIGMA] == "approximate"
    assert any("tests one part of `split(ProcessCommandLine, ...)`" in note for note in result.notes)
    assert set(result.queries) == {"kusto", "splunk", "lucene", "esql", "eql"}, result.errors


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_executed_target_agrees_with_its_label(name: str) -> None:
    proof = measure(SourceRule(path="split.kql", kql=CASES[name][0]), Options(), now=NOW)
    ran = executed(proof)
    assert not disagreements(ran)


@pytest.mark.parametrize(
    "test",
    [
        'Part !has "x"',  # a part without x says nothing of the others
        'Part == "a b"',  # a value holding the separator is no part
        'Part matches regex "^a|b$"',  # anchors of alternatives, not of the whole
    ],
)
def test_a_part_test_that_implies_nothing_of_the_column_is_only_left_out(test: str) -> None:
    assert "tests one part of `split(ProcessCommandLine, ...)`" in refused(SPLIT + f"| where {test}")


def test_an_expansion_of_anything_but_a_split_column_is_left_out_as_before() -> None:
    why = refused('DeviceProcessEvents\n| extend P = pack_array(FileName)\n| mv-expand P\n| where P == "a"')
    assert "`mv-expand` has no Sigma equivalent" in why
