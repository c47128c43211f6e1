"""A process access's mask and a PowerShell command, which Windows spells otherwise than Defender,
and value lists written with ``pack_array()``.

``DesiredAccess`` (OpenProcessApiCall) is Sysmon's GrantedAccess: Defender writes the mask as a
decimal number (2097151), Sysmon as hex text (0x1fffff), so equality is respelled in hex (exact) and
kusto writes the decimal back. A PowerShellCommand's command and host process are what module
logging (event 4103, ps_module) writes inside longer texts: ``CommandInvocation(Get-Process):
"Get-Process"`` in Payload, ``Host Application = <command line>`` in ContextInfo. A test that holds
on the column becomes ``contains`` (wider); one that cannot be respelled so (negated, a command's
end) is left out, never narrowed. Every label is measured over generated events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import yaml

from conftest import kusto_errors
from rmm2sigma import kql
from rmm2sigma.convert import convert_rule, defender_schema
from rmm2sigma.kql.lower import lower
from rmm2sigma.mapping import MappedRule, map_detection
from rmm2sigma.model import Fidelity
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.engines import sigma_rows
from rmm2sigma.verify.kusto_language import kusto_available
from rmm2sigma.verify.proof import measure
from test_device_event_keys import KeyCase, agrees_in_both_modes, key_case, measures_on_its_kind, reads_back
from test_device_events import converted, refused, selection

NOW = datetime(2026, 11, 23, 12, 0, 0)
ACCESS = {"product": "windows", "category": "process_access"}
MODULE = {"product": "windows", "category": "ps_module"}
MASK = "tolong(parse_json(tostring(AdditionalFields)).DesiredAccess)"
MASK_KEY = "tostring(parse_json(AdditionalFields).DesiredAccess)"
COMMAND = "tostring(parse_json(AdditionalFields).Command)"
HOST = "(InitiatingProcessFolderPath contains {0} or InitiatingProcessCommandLine contains {0})"

CASES: dict[str, KeyCase] = {
    "mask in": key_case(
        "OpenProcessApiCall",
        f"FileName =~ 'lsass.exe' and {MASK} in (2097151, 4112, 16)",
        ACCESS,
        selection(**{"TargetImage|endswith": "\\lsass.exe", "GrantedAccess": ["0x1fffff", "0x1010", "0x10"]}),
        f'{MASK_KEY} in~ ("2097151", "4112", "16")',
        Fidelity.EXACT,
    ),
    "mask equality, toint": key_case(
        "OpenProcessApiCall",
        "toint(parse_json(AdditionalFields).DesiredAccess) == 5136",
        ACCESS,
        selection(GrantedAccess="0x1410"),
        f'{MASK_KEY} =~ "5136"',
        Fidelity.EXACT,
    ),
    "mask negated": key_case(
        "OpenProcessApiCall",
        f"FileName =~ 'lsass.exe' and {MASK} !in (2097151)",
        ACCESS,
        {
            "selection": {"TargetImage|endswith": "\\lsass.exe"},
            "filter_main_grantedaccess": {"GrantedAccess": "0x1fffff"},
            "condition": "selection and not filter_main_grantedaccess",
        },
        f'not({MASK_KEY} =~ "2097151")',
        Fidelity.EXACT,
    ),
    "mask bound": key_case(
        "OpenProcessApiCall",
        f"FileName =~ 'lsass.exe' and {MASK} > 4096",
        ACCESS,
        selection(**{"TargetImage|endswith": "\\lsass.exe"}),
        'FolderPath endswith "\\\\lsass.exe"',
        Fidelity.WIDENED,
    ),
    "command in": key_case(
        "PowerShellCommand",
        f"{COMMAND} in ('Get-Process', 'Invoke-Expression')",
        MODULE,
        selection(
            **{"Payload|contains": ["CommandInvocation(Get-Process)", "CommandInvocation(Invoke-Expression)"]}
        ),
        f'{COMMAND} in~ ("Get-Process", "Invoke-Expression")',
        Fidelity.WIDENED,
    ),
    "command startswith": key_case(  # the same test on the events; 4103's pipelines: the label
        "PowerShellCommand",
        "parse_json(AdditionalFields).Command startswith 'Invoke-'",
        MODULE,
        selection(**{"Payload|contains": "CommandInvocation(Invoke-"}),
        f'{COMMAND} startswith "Invoke-"',
        Fidelity.EXACT,
    ),
    "command has": key_case(
        "PowerShellCommand",
        "parse_json(AdditionalFields).Command has 'Mimikatz'",
        MODULE,
        selection(**{"Payload|contains": "Mimikatz"}),
        'AdditionalFields contains "Mimikatz"',
        Fidelity.WIDENED,
    ),
    "host file name": key_case(
        "PowerShellCommand",
        "InitiatingProcessFileName =~ 'wsmprovhost.exe'",
        MODULE,
        selection(**{"ContextInfo|contains": "wsmprovhost"}),
        HOST.format('"wsmprovhost"'),
        Fidelity.WIDENED,
    ),
    "host command line": key_case(
        "PowerShellCommand",
        "InitiatingProcessCommandLine has '-EncodedCommand' "
        "and parse_json(AdditionalFields).Command == 'Get-Process'",
        MODULE,
        selection(
            **{
                "ContextInfo|contains": "-EncodedCommand",
                "Payload|contains": "CommandInvocation(Get-Process)",
            }
        ),
        HOST.format('"-EncodedCommand"'),
        Fidelity.WIDENED,
    ),
    "command negated": key_case(
        "PowerShellCommand",
        "InitiatingProcessFileName =~ 'wsmprovhost.exe' "
        "and parse_json(AdditionalFields).Command !in ('prompt')",
        MODULE,
        selection(**{"ContextInfo|contains": "wsmprovhost"}),
        HOST.format('"wsmprovhost"'),
        Fidelity.WIDENED,
    ),
    "command endswith": key_case(
        "PowerShellCommand",
        "InitiatingProcessFileName =~ 'powershell.exe' "
        "and parse_json(AdditionalFields).Command endswith '.ps1'",
        MODULE,
        selection(**{"ContextInfo|contains": "powershell"}),
        HOST.format('"powershell"'),
        Fidelity.WIDENED,
    ),
}


def mapped(query: str, exact: bool = False) -> MappedRule:
    return map_detection(lower(kql.parse(query), defender_schema()), exact=exact, schema=defender_schema())


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_column_becomes_the_sigma_field_and_kusto_reads_it_back(name: str) -> None:
    reads_back(CASES[name].case)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_declared_label_is_what_the_events_of_the_kind_measure(name: str) -> None:
    measures_on_its_kind(CASES[name], mapped(CASES[name].case.query))


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_executed_target_agrees_with_its_label(name: str, exact: bool) -> None:
    agrees_in_both_modes(CASES[name], exact, "inside a longer text")


def test_kusto_language_binds_every_query_read_back() -> None:
    if not kusto_available():
        pytest.skip("Kusto.Language not installed (needs node and `npm ci --prefix tools/kusto`)")
    queries = [converted(CASES[name].case).queries["kusto"] for name in sorted(CASES)]
    errors = kusto_errors(queries)
    assert errors == [[]] * len(queries)


def test_the_sigma_side_holds_the_values_as_windows_writes_them() -> None:
    access = mapped(CASES["mask in"].case.query).table
    assert [
        e.get("GrantedAccess")
        for e in sigma_rows([{"__id": 1, "AdditionalFields.DesiredAccess": 2097151}], access)
    ] == ["0x1fffff"]
    module = mapped(CASES["command in"].case.query).table
    row = {
        "__id": 1,
        "AdditionalFields.Command": "Get-Process",
        "InitiatingProcessFolderPath": "C:\\Windows\\System32\\wsmprovhost.exe",
        "InitiatingProcessCommandLine": "wsmprovhost.exe -Embedding",
    }
    (event,) = sigma_rows([row], module)
    assert event["Payload"] == 'CommandInvocation(Get-Process): "Get-Process"'
    assert event["ContextInfo"] == (
        "Host Application = C:\\Windows\\System32\\wsmprovhost.exe wsmprovhost.exe -Embedding"
    )


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("mask bound", "only equality with whole numbers can be respelled"),
        ("command negated", "holds the command inside a longer text"),
        ("command endswith", "holds the command inside a longer text"),
        ("host file name", "ContextInfo containing 'wsmprovhost'"),
    ],
)
def test_a_respelling_says_what_it_changed(name: str, words: str) -> None:
    assert any(words in note for note in mapped(CASES[name].case.query).notes)


@pytest.mark.parametrize("command", ["Get-Item)", 'Get-"Item', "C:\\\\x.ps1"])
def test_a_command_kusto_could_not_read_back_is_left_out(command: str) -> None:
    rule = mapped(
        "DeviceEvents | where ActionType == 'PowerShellCommand' and InitiatingProcessFileName =~ 'a.exe' "
        f"and parse_json(AdditionalFields).Command == '{command}'"
    )
    assert "Payload" not in str(rule.detection.predicate)
    assert any("holds the command inside a longer text" in note for note in rule.notes)


def test_a_mask_written_as_text_is_no_number_and_is_left_out() -> None:
    rule = mapped(
        "DeviceEvents | where ActionType == 'OpenProcessApiCall' and FileName =~ 'lsass.exe' "
        "and tostring(parse_json(AdditionalFields).DesiredAccess) == '0x1fffff'"
    )
    assert "GrantedAccess" not in str(rule.detection.predicate)
    assert rule.measurable is Fidelity.WIDENED


# ---------------------------------------------------------------- pack_array() value lists

# name -> (the query, with {} for the list, the list's items, the rule's detection)
PACKED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "in~ a let": (
        "let L = {}; DeviceProcessEvents | where FileName in~ (L)",
        "'a.exe', 'b.exe'",
        selection(**{"Image|endswith": ["\\a.exe", "\\b.exe"]}),
    ),
    "has_any inline": (
        "DeviceProcessEvents | where ProcessCommandLine has_any ({})",
        "'-enc ', ' -nop'",
        selection(**{"CommandLine|contains": ["-enc ", " -nop"]}),
    ),
    "!in a let": (
        "let L = {}; DeviceProcessEvents | where FolderPath startswith @'C:\\Temp' and FileName !in (L)",
        "'a.exe'",
        {
            "selection": {"Image|startswith": "C:\\Temp"},
            "filter_main_image": {"Image|endswith|cased": "\\a.exe"},
            "condition": "selection and not filter_main_image",
        },
    ),
    "numbers": (
        "let ports = {}; DeviceNetworkEvents | where RemotePort in (ports)",
        "4444, 8080",
        selection(DestinationPort=[4444, 8080]),
    ),
}


@pytest.mark.parametrize("name", sorted(PACKED))
def test_a_pack_array_of_constants_is_the_value_list_a_dynamic_array_is(name: str) -> None:
    template, items, detection = PACKED[name]
    query = template.format(f"pack_array({items})")
    result = convert_rule(SourceRule(path="q.kql", kql=query, name=name), Options())
    assert yaml.safe_load(result.yaml)["detection"] == detection
    dynamic = template.format(f"dynamic([{items}])")
    same = convert_rule(SourceRule(path="q.kql", kql=dynamic, name=name), Options())
    assert yaml.safe_load(same.yaml)["detection"] == detection
    proof = measure(SourceRule(path="q.kql", kql=query, name=name), Options(), now=NOW)
    assert proof.error is None and proof.original > 0
    assert not proof.problems, {t.target: (t.label, t.verdict) for t in proof.problems}


def test_a_pack_array_of_a_computed_value_is_refused_at_it() -> None:
    message = refused(
        "let L = pack_array('a.exe', strcat('b', '.exe')); DeviceProcessEvents | where FileName in~ (L)"
    )
    assert "`strcat()` has no Sigma equivalent" in message


def test_a_group_by_the_host_command_line_is_not_a_group_by_its_longer_text() -> None:
    """ContextInfo also holds the host's path: grouping by it would split a command line's group."""
    query = (
        "DeviceEvents | where ActionType == 'PowerShellCommand' and InitiatingProcessFileName =~ 'a.exe'\n"
        "| summarize c = count() by InitiatingProcessCommandLine, DeviceName | where c > 5"
    )
    result = convert_rule(SourceRule(path="q.kql", kql=query, name="group"), Options())
    assert any("InitiatingProcessCommandLine have no Sigma field" in note for note in result.notes)
    correlation = yaml.safe_load(result.yaml.split("\n---\n")[0])["correlation"]
    assert correlation["group-by"] == ["Computer"]  # coarser groups: never fewer of them
