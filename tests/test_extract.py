"""``extract()`` as a test: ``isnotempty(extract(pattern, group, column))`` and ``!= ""``.

KQL's ``extract`` gives the group's text of the first match, or an empty string. When every match
gives the group some text (the whole match of a pattern that cannot match nothing, or a group of
the pattern's top-level sequence that cannot be empty), the extract is not empty exactly when the
column matches the pattern: Sigma's ``|re``, exact. Any other group can be empty on a match, so its
emptiness is no test of the pattern: left out, with that reason. Labels are measured.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

from conftest import disagreements, executed
from rmm2sigma.convert import convert_rule
from rmm2sigma.fidelity import SIGMA
from rmm2sigma.regex import always_captures
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.proof import measure

NOW = datetime(2026, 12, 2, 12, 0, 0)
SUDO = "DeviceProcessEvents\n| extend Added = extract('adduser(.*) sudo', 0, ProcessCommandLine)\n"

# name -> (query, the rule's detection)
CASES: dict[str, tuple[str, dict[str, object]]] = {
    "whole match, not empty": (
        SUDO + "| where isnotempty(Added)",
        {"selection": {"CommandLine|re": "adduser(.*) sudo"}, "condition": "selection"},
    ),
    "a group, compared with the empty string": (
        "DeviceProcessEvents\n| extend User = tostring(extract(@'/user:(\\w+)', 1, ProcessCommandLine))\n"
        "| where User != '' and FileName =~ 'net.exe'",
        {
            "selection": {"CommandLine|re": "/user:(\\w+)", "Image|endswith": "\\net.exe"},
            "condition": "selection",
        },
    ),
    "empty": (
        SUDO + "| where isempty(Added) and FileName =~ 'adduser'",
        {
            "selection": {"Image|endswith": "\\adduser"},
            "filter_main_commandline": {"CommandLine|re": "adduser(.*) sudo"},
            "condition": "selection and not filter_main_commandline",
        },
    ),
}


def source(name: str) -> SourceRule:
    return SourceRule(path="extract.kql", kql=CASES[name][0], name=f"Extract {name}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_extract_that_is_not_empty_is_a_regex_test(name: str) -> None:
    result = convert_rule(source(name), Options())
    assert yaml.safe_load(result.yaml)["detection"] == CASES[name][1]
    assert result.fidelity_by_target[SIGMA] == "exact"
    assert "matches regex" in result.queries["kusto"] and "extract" not in result.queries["kusto"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_executed_target_agrees_with_its_label(name: str) -> None:
    assert not disagreements(executed(measure(source(name), Options(), now=NOW)))


def test_a_group_that_can_be_empty_on_a_match_is_left_out_with_the_reason() -> None:
    query = (
        "DeviceProcessEvents\n| extend Name = extract(@'user:(\\w*)', 1, ProcessCommandLine)\n"
        "| where isnotempty(Name) and FileName =~ 'net.exe'"
    )
    result = convert_rule(SourceRule(path="empty_group.kql", kql=query), Options())
    assert yaml.safe_load(result.yaml)["detection"]["selection"] == {"Image|endswith": "\\net.exe"}
    assert result.fidelity_by_target[SIGMA] not in ("exact", "narrowed")
    assert any("can be empty where the pattern matches" in note for note in result.notes)


@pytest.mark.parametrize(
    ("pattern", "group", "captures"),
    [
        ("adduser(.*) sudo", 0, True),
        (r".*(\..*)$", 1, True),  # a group of the top-level sequence that holds a dot at least
        (r"(?i)user:(\w+)", 1, True),
        (r"((a)b)", 2, True),  # inside a group that takes part in every match
        (r"x*", 0, False),  # matches nothing
        (r"(a)?b", 1, False),  # an optional group may take no part
        (r"(a)|b", 1, False),  # nor may an alternative's
        (r"(\w*)x", 1, False),  # a group that can match nothing
        (r"(a)", 2, False),  # no such group
        ("(", 0, False),  # not a pattern
    ],
)
def test_always_captures(pattern: str, group: int, captures: bool) -> None:
    assert always_captures(pattern, group) is captures
