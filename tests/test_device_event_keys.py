"""DeviceEvents kinds whose main value is a key of AdditionalFields, as the Sigma field of their log source.

A DNS query's name (``DnsQueryString``) is Sysmon's QueryName; a named pipe (``PipeName``) is
Sysmon's PipeName, which Windows writes without Defender's ``\\Device\\NamedPipe`` prefix: a test
under it is respelled, one that cannot be is widened or left out, never narrowed. Each case
converts to the expected Sigma test, kusto reads the JSON key (and the prefix) back, and the
label is measured: the original KQL and the rule run over generated events, the Sigma side
carrying Windows' spelling of the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import yaml

from conftest import disagreements, executed, verdict_on_kind
from rmm2sigma import kql
from rmm2sigma.convert import defender_schema
from rmm2sigma.fidelity import SIGMA
from rmm2sigma.kql.lower import lower
from rmm2sigma.mapping import MappedRule, map_detection
from rmm2sigma.model import Fidelity
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.engines import sigma_rows
from rmm2sigma.verify.events import device_path, generate
from rmm2sigma.verify.proof import measure
from test_device_events import Case, converted, selection

NOW = datetime(2026, 11, 23, 12, 0, 0)
PIPE = {"product": "windows", "category": "pipe_created"}
DNS = {"product": "windows", "category": "dns_query"}
KEY = "tostring(parse_json(AdditionalFields).{})"


@dataclass(frozen=True)
class KeyCase:
    case: Case
    label: Fidelity  # what the events of the kind measure: the respelling's own label


def key_case(
    kind: str, tests: str, logsource: dict[str, str], detection: dict[str, Any], kusto: str, label: Fidelity
) -> KeyCase:
    return KeyCase(Case(kind, tests, logsource, detection, (kusto,)), label)


def reads_back(case: Case) -> None:
    """The rule has the case's log source and detection (approximate: a change of data model), and
    kusto tests the case's columns of the kind's DeviceEvents again."""
    result = converted(case)
    assert not result.errors, result.errors
    document = yaml.safe_load(result.yaml)
    assert document["logsource"] == case.logsource
    assert document["detection"] == case.detection
    assert result.fidelity_by_target[SIGMA] == "approximate"  # a change of data model
    head, _, tests = result.queries["kusto"].partition("\n| where ")
    assert head == "DeviceEvents" and tests.startswith(f'ActionType =~ "{case.kind}"')
    for test in case.kusto:
        assert test in tests, (test, tests)


def measures_on_its_kind(key: KeyCase, rule: MappedRule) -> None:
    """Only events of the kind: the other kinds widen every rule (a change of data model)."""
    assert rule.measurable is key.label
    measured = verdict_on_kind(key.case.query, key.case.kind, rule.table, converted(key.case).yaml, NOW)
    assert measured == key.label.value


def agrees_in_both_modes(key: KeyCase, exact: bool, left_out: str) -> None:
    """Every executed target agrees with its label; under ``--exact``, which widens nothing, a test
    only a widening keeps is left out, the proof saying why (``left_out``)."""
    case = key.case
    proof = measure(
        SourceRule(path="case.kql", kql=case.query, name=case.kind), Options(exact=exact), now=NOW
    )
    if exact and proof.error:
        assert key.label is Fidelity.WIDENED and left_out in proof.error
        return
    assert not disagreements(executed(proof))


PIPE_KEY = KEY.format("PipeName")
DNS_KEY = KEY.format("DnsQueryString")
CASES = {
    "dns endswith": key_case(
        "DnsQueryResponse",
        "tostring(parse_json(AdditionalFields).DnsQueryString) endswith '.onion'",
        DNS,
        selection(**{"QueryName|endswith": ".onion"}),
        f'{DNS_KEY} endswith ".onion"',
        Fidelity.EXACT,
    ),
    "dns in": key_case(
        "DnsQueryResponse",
        "tostring(parse_json(AdditionalFields).DnsQueryString) in~ ('evil.com', 'bad.net')",
        DNS,
        selection(QueryName=["evil.com", "bad.net"]),
        f'{DNS_KEY} in~ ("evil.com", "bad.net")',
        Fidelity.EXACT,
    ),
    "dns has": key_case(
        "DnsQueryResponse",
        "parse_json(AdditionalFields).DnsQueryString has 'ngrok'",
        DNS,
        selection(**{"QueryName|contains": "ngrok"}),
        f'{DNS_KEY} contains "ngrok"',
        Fidelity.WIDENED,
    ),
    "pipe contains": key_case(
        "NamedPipeEvent",
        "parse_json(AdditionalFields).PipeName contains 'msagent_'",
        PIPE,
        selection(**{"PipeName|contains": "msagent_"}),
        f'{PIPE_KEY} contains "msagent_"',
        Fidelity.EXACT,
    ),
    "pipe startswith under the prefix": key_case(
        "NamedPipeEvent",
        "parse_json(AdditionalFields).PipeName startswith @'\\Device\\NamedPipe\\postex_'",
        PIPE,
        selection(**{"PipeName|startswith": "\\postex_"}),
        f'{PIPE_KEY} startswith "\\\\Device\\\\NamedPipe\\\\postex_"',
        Fidelity.EXACT,
    ),
    "pipe equality under the prefix": key_case(
        "NamedPipeEvent",
        "tostring(parse_json(AdditionalFields).PipeName) in~ (@'\\Device\\NamedPipe\\lsass', "
        "@'\\Device\\NamedPipe\\winsock')",
        PIPE,
        selection(PipeName=["\\lsass", "\\winsock"]),
        f'{PIPE_KEY} in~ ("\\\\Device\\\\NamedPipe\\\\lsass", "\\\\Device\\\\NamedPipe\\\\winsock")',
        Fidelity.EXACT,
    ),
    "pipe negated startswith": key_case(
        "NamedPipeEvent",
        "parse_json(AdditionalFields).PipeName endswith '_1' "
        "and parse_json(AdditionalFields).PipeName !startswith @'\\Device\\NamedPipe\\mojo.'",
        PIPE,
        {
            "selection": {"PipeName|endswith": "_1"},
            "filter_main_pipename": {"PipeName|startswith": "\\mojo."},
            "condition": "selection and not filter_main_pipename",
        },
        f'not({PIPE_KEY} startswith "\\\\Device\\\\NamedPipe\\\\mojo.")',
        Fidelity.EXACT,
    ),
    "pipe equality without the prefix": key_case(
        "NamedPipeEvent",
        "(parse_json(AdditionalFields).PipeName =~ @'\\lsass' "
        "or parse_json(AdditionalFields).PipeName endswith '_1')",
        PIPE,
        {
            "selection_pipename": {"PipeName": "\\lsass"},
            "selection_pipename_2": {"PipeName|endswith": "_1"},
            "condition": "1 of selection_*",
        },
        f'{PIPE_KEY} in~ ("\\\\Device\\\\NamedPipe\\\\lsass")',
        Fidelity.WIDENED,
    ),
    "pipe of another device": key_case(
        "NamedPipeEvent",
        "parse_json(AdditionalFields).PipeName startswith @'\\Device\\Mup\\'",
        PIPE,
        selection(**{"PipeName|startswith": "\\Device\\Mup\\"}),
        f'{PIPE_KEY} startswith "\\\\Device\\\\Mup\\\\"',
        Fidelity.WIDENED,
    ),
    "pipe prefix alone": key_case(
        "NamedPipeEvent",
        "InitiatingProcessFileName =~ 'rundll32.exe' "
        "and parse_json(AdditionalFields).PipeName startswith @'\\Device\\NamedPipe'",
        PIPE,
        selection(**{"Image|endswith": "\\rundll32.exe"}),
        'InitiatingProcessFolderPath endswith "\\\\rundll32.exe"',
        Fidelity.WIDENED,
    ),
    "pipe contains the prefix's word": key_case(
        "NamedPipeEvent",
        "InitiatingProcessFileName =~ 'rundll32.exe' and parse_json(AdditionalFields).PipeName has 'pipe'",
        PIPE,
        selection(**{"Image|endswith": "\\rundll32.exe"}),
        'InitiatingProcessFolderPath endswith "\\\\rundll32.exe"',
        Fidelity.WIDENED,
    ),
    "pipe regex": key_case(
        "NamedPipeEvent",
        "InitiatingProcessFileName =~ 'rundll32.exe' "
        "and parse_json(AdditionalFields).PipeName matches regex @'msagent_[0-9a-f]{2}$'",
        PIPE,
        selection(**{"Image|endswith": "\\rundll32.exe"}),
        'InitiatingProcessFolderPath endswith "\\\\rundll32.exe"',
        Fidelity.WIDENED,
    ),
}


def mapped(case: Case) -> MappedRule:
    return map_detection(lower(kql.parse(case.query), defender_schema()), schema=defender_schema())


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_key_becomes_the_sigma_field_and_kusto_reads_it_back(name: str) -> None:
    reads_back(CASES[name].case)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_declared_label_is_what_the_events_of_the_kind_measure(name: str) -> None:
    measures_on_its_kind(CASES[name], mapped(CASES[name].case))


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_executed_target_agrees_with_its_label(name: str, exact: bool) -> None:
    agrees_in_both_modes(CASES[name], exact, "cannot be respelled")


def test_the_sigma_side_holds_the_pipe_as_windows_writes_it() -> None:
    rule = mapped(CASES["pipe contains"].case)
    rows = [
        {"__id": 1, "AdditionalFields.PipeName": "\\Device\\NamedPipe\\msagent_12"},
        {"__id": 2, "AdditionalFields.PipeName": "\\Device\\Mup\\10.1.0.5\\PIPE\\srvsvc"},
    ]
    assert [event["PipeName"] for event in sigma_rows(rows, rule.table)] == [
        "\\msagent_12",
        "\\Device\\Mup\\10.1.0.5\\PIPE\\srvsvc",
    ]


def test_generated_pipes_are_device_paths_as_defender_writes_them() -> None:
    prefix = "\\Device\\NamedPipe"
    assert device_path("msagent_1", prefix) == "\\Device\\NamedPipe\\msagent_1"
    assert device_path("\\lsass", prefix) == "\\Device\\NamedPipe\\lsass"
    assert device_path("\\DEVICE\\NAMEDPIPE\\x", prefix) == "\\Device\\NamedPipe\\x"
    assert device_path("\\Device\\Mup\\h\\PIPE\\x", prefix) == "\\Device\\Mup\\h\\PIPE\\x"
    assert device_path("", prefix) == ""
    detection = lower(kql.parse(CASES["pipe contains"].case.query), defender_schema())
    pipes = [row.get("AdditionalFields.PipeName") for row in generate(detection, defender_schema(), now=NOW)]
    assert all(pipe.lower().startswith("\\device\\") for pipe in pipes if pipe)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("pipe equality without the prefix", "the value is kept"),
        ("pipe prefix alone", "cannot be respelled"),
        ("pipe contains the prefix's word", "cannot be respelled"),
        ("pipe regex", "cannot be respelled"),
    ],
)
def test_a_test_that_cannot_be_respelled_says_so(name: str, words: str) -> None:
    assert any(words in note for note in mapped(CASES[name].case).notes)


def test_a_negated_test_that_cannot_be_respelled_is_left_out_not_narrowed() -> None:
    case = Case(
        "NamedPipeEvent",
        "InitiatingProcessFileName =~ 'a.exe' and parse_json(AdditionalFields).PipeName !~ @'\\lsass'",
        PIPE,
        selection(**{"Image|endswith": "\\a.exe"}),
        (),
    )
    rule = mapped(case)
    assert rule.measurable is Fidelity.WIDENED
    assert yaml.safe_load(converted(case).yaml)["detection"] == case.detection


def test_extractjson_reads_the_same_key() -> None:
    """duckdb-kql lacks extractjson(), so this form is checked by its rule only."""
    case = Case(
        "DnsQueryResponse",
        "extractjson('$.DnsQueryString', AdditionalFields) endswith '.onion'",
        DNS,
        selection(**{"QueryName|endswith": ".onion"}),
        (),
    )
    assert yaml.safe_load(converted(case).yaml)["detection"] == case.detection
