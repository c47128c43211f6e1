"""``find in (T, U) where ...``: each table filtered with the alternatives that read its columns.

Kusto documents ``find`` as leaving out a table that has none of the columns its predicate reads,
and filtering each other table with the alternatives (``or`` operands) over its own columns: that
is a ``union`` of one filter per table, one Sigma rule each. An alternative reading columns a
table has and lacks has no documented meaning there, and ``find`` over every table names none:
both are refused at the construct.
"""

from __future__ import annotations

import pytest
import yaml

from rmm2sigma import kql
from rmm2sigma.convert import convert_rules, defender_schema
from rmm2sigma.errors import UnsupportedKqlError
from rmm2sigma.kql.union import split_union
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule

EITHER = (
    "find in (DeviceProcessEvents, DeviceNetworkEvents)\n"
    "where InitiatingProcessFileName =~ 'mshta.exe' or RemoteUrl has 'evil.example'\n"
    "project DeviceName, Timestamp\n"
    "| where Timestamp > ago(1d)"
)


def branches(text: str) -> list[tuple[str, str]]:
    split = split_union(kql.parse(text), defender_schema())
    assert split is not None
    return [(branch.table, " ".join(branch.text.split())) for branch in split]


def test_each_table_is_filtered_with_the_alternatives_over_its_columns() -> None:
    assert branches(EITHER) == [
        (
            "DeviceProcessEvents",
            "DeviceProcessEvents | where InitiatingProcessFileName =~ 'mshta.exe' "
            "| where Timestamp > ago(1d)",
        ),
        (
            "DeviceNetworkEvents",
            "DeviceNetworkEvents | where InitiatingProcessFileName =~ 'mshta.exe' or RemoteUrl has "
            "'evil.example' | where Timestamp > ago(1d)",
        ),
    ]


def test_a_find_gives_a_rule_per_table() -> None:
    rules, errors = convert_rules(SourceRule("find.kql", EITHER, name="Mshta Or Evil"), Options(), ("kusto",))
    assert not errors, errors
    categories = [yaml.safe_load(rule.yaml)["logsource"]["category"] for rule in rules]
    assert categories == ["process_creation", "network_connection"]
    process = yaml.safe_load(rules[0].yaml)["detection"]
    assert process == {"selection": {"ParentImage|endswith": "\\mshta.exe"}, "condition": "selection"}


def test_a_table_with_none_of_the_columns_is_left_out() -> None:
    text = "find in (DeviceProcessEvents, DeviceNetworkEvents) where RemoteUrl has 'evil.example'"
    (rule,), errors = convert_rules(SourceRule("find.kql", text, name="Evil Url"), Options(), ("kusto",))
    assert not errors and yaml.safe_load(rule.yaml)["logsource"]["category"] == "network_connection"
    assert rule.queries["kusto"].startswith("DeviceNetworkEvents\n")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "find in (DeviceProcessEvents, DeviceNetworkEvents)\n"
            "where InitiatingProcessFileName =~ 'mshta.exe' and RemotePort == 443",
            "reads columns DeviceProcessEvents has and columns it lacks",
        ),
        ("find where FileName =~ 'mshta.exe'", "`find` without `in (...)` reads every table"),
        (  # find names each row's table in source_, as union's withsource does
            EITHER + "\n| where source_ == 'DeviceNetworkEvents'",
            "reads source_, the column naming each row's table",
        ),
    ],
)
def test_a_find_kusto_does_not_define_or_over_every_table_is_refused(text: str, words: str) -> None:
    with pytest.raises(UnsupportedKqlError) as refused:
        split_union(kql.parse(text), defender_schema())
    assert words in str(refused.value) and refused.value.line is not None


def test_a_wildcard_names_the_tables_it_matches_with_case() -> None:
    text = "find in (DeviceP*, DeviceNetworkEvents) where RemotePort == 4444 or FileName =~ 'a.exe'"
    assert [table for table, _ in branches(text)] == ["DeviceProcessEvents", "DeviceNetworkEvents"]
    with pytest.raises(UnsupportedKqlError, match="no Defender table matches 'deviceP\\*'"):
        branches(text.replace("DeviceP*", "deviceP*"))
