"""Each target's data model is an option, and every rule says which one it was converted for (issue 9).

``--splunk-data-model windows-security`` renders process creation as Security event 4688 and
refuses what that log has no event or field for. No Splunk runs here, so the labels are measured
on the rule the windows-security pipeline makes, executed by pySigma's sqlite backend over the
generated events written as 4688 events (only the fields the data model maps, beside decoy
events of another EventID) and compared with the original KQL executed by duckdb-kql.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sigma.pipelines.windows import windows_audit_pipeline
from sigma.rule import SigmaRule
from typer.testing import CliRunner

from rmm2sigma import convert as convert_run
from rmm2sigma import kql
from rmm2sigma.cli import app
from rmm2sigma.convert import RuleResult, convert_rule, defender_schema
from rmm2sigma.fidelity import agrees
from rmm2sigma.kql.lower import lower
from rmm2sigma.mapping import map_detection
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.targets import backend, data_models
from rmm2sigma.verify.engines import KqlEngine, SigmaEngine, row_selecting, sigma_fields, sigma_rows
from rmm2sigma.verify.events import ID, generate
from rmm2sigma.verify.proof import verdict

FIXTURES = Path(__file__).parent / "fixtures" / "data_model"
NOW = datetime(2026, 11, 23, 12, 0, 0)
SECURITY = Options(splunk_data_model="windows-security")
HELD = data_models("splunk")["windows-security"]["fields"]["process_creation"]  # Sigma -> 4688 field
OPTION = "--splunk-data-model windows-security"

SERVICE = (
    "DeviceProcessEvents | where FolderPath endswith @'\\AnyDesk.exe' and ProcessCommandLine has '--service' "
    "and InitiatingProcessFolderPath endswith @'\\services.exe'"
)
EXACT = (
    "DeviceProcessEvents | where FolderPath =~ @'C:\\Program Files\\AnyDesk\\AnyDesk.exe' "
    "and InitiatingProcessFolderPath =~ @'C:\\Windows\\System32\\services.exe'"
)
NOT_COMPANY = (
    "DeviceProcessEvents | where FolderPath endswith @'\\AnyDesk.exe' "
    "and not(ProcessVersionInfoCompanyName has 'philandro')"
)
ON_DEVICE = "DeviceProcessEvents | where DeviceName =~ 'web-1' and FolderPath endswith @'\\AnyDesk.exe'"
COMPANY = "DeviceProcessEvents | where ProcessVersionInfoCompanyName has 'philandro'"
NETWORK = "DeviceNetworkEvents | where RemoteUrl has 'net.anydesk.com'"
SIGNER = "DeviceFileCertificateInfo | where Signer has 'philandro'"


def splunk(query: str, options: Options = SECURITY) -> RuleResult:
    return convert_rule(SourceRule(path="case.kql", kql=query), options, ("splunk",))


def measured_as_4688(query: str) -> str:
    """The verdict of the windows-security rule over the events as 4688 events, vs the original."""
    schema = defender_schema()
    parsed = kql.parse(query)
    detection = lower(parsed, schema)
    mapped = map_detection(detection, schema=schema)
    rows = generate(detection, schema, seed=11, now=NOW)
    engine = KqlEngine(schema)
    engine.load({detection.table: rows})
    original = engine.select(row_selecting(parsed), NOW)
    assert original, "the original selects none of the events: nothing would be measured"
    events: list[dict[str, Any]] = []
    for event in sigma_rows(rows, mapped.table):
        fields = {HELD[field]: value for field, value in event.items() if field in HELD}
        events.append({ID: event[ID], "EventID": 4688, **fields})
        events.append({ID: event[ID] + 1_000_000, "EventID": 4624, **fields})  # selected: a missing EventCode
    sqlite = SigmaEngine()
    sqlite.backend = type(sqlite.backend)(windows_audit_pipeline(), collate_nocase=True, table=sqlite.TABLE)
    rule = SigmaRule.from_dict(convert_rule(SourceRule(path="case.kql", kql=query), SECURITY, ()).document)
    # the fields 4688 lacks are columns too, empty in every event (Splunk: a field no event has)
    columns = ["EventID", *HELD.values(), *sigma_fields(mapped.table)]
    selected = sqlite.select(sqlite.query(rule), events, columns)
    return verdict(original, selected)


def test_windows_security_renders_process_creation_as_event_4688() -> None:
    result = splunk(SERVICE)
    query = result.queries["splunk"]
    assert 'source="WinEventLog:Security"' in query and "EventCode=4688" in query
    assert "NewProcessName=" in query and "ParentProcessName=" in query and "CommandLine=" in query
    assert "Image" not in query and "Sysmon" not in query
    assert result.data_models["splunk"] == "windows-security"
    assert any(note.startswith("splunk: data model windows-security") for note in result.notes)


@pytest.mark.parametrize(
    "query", [SERVICE, EXACT, NOT_COMPANY, ON_DEVICE], ids=["widened", "exact", "negated-company", "device"]
)
def test_a_converted_rule_measures_what_its_label_says(query: str) -> None:
    label = splunk(query).fidelity_by_target["splunk"]
    assert agrees(label, measured_as_4688(query)), label


def test_a_negated_test_on_a_field_4688_lacks_widens_with_a_note() -> None:
    result = splunk(NOT_COMPANY)
    assert result.fidelity_by_target == {"sigma": "exact", "splunk": "widened"}
    assert any(note.startswith("splunk:") and "Company" in note for note in result.notes)


def test_a_test_on_a_field_4688_lacks_refuses_the_target() -> None:
    assert measured_as_4688(COMPANY) == "narrowed"  # what shipping it would do: no event has Company
    report = convert_run(text=COMPANY, targets=["splunk:query", "kusto:query"], options=SECURITY)
    entry = report["inputs"][0]
    rule = entry["rules"][0]
    assert entry["status"] == "partial"
    assert "splunk" not in rule["queries"] and "splunk" not in rule["fidelity_by_target"]
    assert "kusto" in rule["queries"]
    reason = rule["target_errors"]["splunk"]
    assert reason.startswith("splunk:") and "Company" in reason and OPTION in reason
    assert reason in entry["error"]


@pytest.mark.parametrize("query", [NETWORK, SIGNER], ids=["network_connection", "image_load"])
def test_a_category_the_security_log_has_no_event_for_is_refused(query: str) -> None:
    report = convert_run(text=query, targets=["splunk:query", "kusto:query"], options=SECURITY)
    entry = report["inputs"][0]
    rule = entry["rules"][0]
    assert entry["status"] == "partial" and "kusto" in rule["queries"] and "splunk" not in rule["queries"]
    assert OPTION in rule["target_errors"]["splunk"]
    # the same rule with the default data model: Sysmon has the event
    default = convert_run(text=query, targets=["splunk:query"])["inputs"][0]
    assert default["status"] == "converted" and "Sysmon" in default["rules"][0]["queries"]["splunk"]


def test_the_pipeline_renames_the_fields_the_data_model_declares() -> None:
    for field, name in HELD.items():
        rule = SigmaRule.from_dict(
            {
                "title": "probe",
                "logsource": {"product": "windows", "category": "process_creation"},
                "detection": {"selection": {field: "probe"}, "condition": "selection"},
            }
        )
        assert f'{name}="probe"' in str(backend("splunk", "windows-security").convert_rule(rule)[0])


def test_the_default_data_model_is_sysmon_and_says_so() -> None:
    default, sysmon = splunk(SERVICE, Options()), splunk(SERVICE, Options(splunk_data_model="sysmon"))
    assert default.queries == sysmon.queries and default.notes == sysmon.notes
    assert "Sysmon" in default.queries["splunk"] and "EventCode=1" in default.queries["splunk"]
    assert default.data_models == {"splunk": "sysmon"}
    every = convert_rule(SourceRule(path="case.kql", kql=SERVICE), Options())
    assert set(every.data_models) == set(every.queries)
    for target in every.queries:  # every target names its data model in the rule's notes
        named = f"{target}: data model {every.data_models[target]}"
        assert any(note.startswith(named) for note in every.notes)
    with pytest.raises(ValueError, match="windows-security"):
        Options(splunk_data_model="cim")


def test_cli_splunk_data_model_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    arguments = ["convert", str(FIXTURES), "-o", str(out), "-t", "splunk,kusto", "-q"]
    done = runner.invoke(app, [*arguments, "--splunk-data-model", "windows-security"])
    assert done.exit_code == 0, done.output  # a refused target is a partial input, not a failure
    report = json.loads((out / "report.json").read_text())
    by_name = {Path(item["source"]).name: item for item in report["inputs"]}
    process = by_name["rmm_anydesk_service_createproc.yaml"]
    network = by_name["rmm_anydesk_netconn.yaml"]
    assert process["status"] == "converted" and network["status"] == "partial"
    rule = process["rules"][0]
    assert rule["data_models"]["splunk"] == "windows-security"
    spl = (out / "backends" / "splunk").glob("*.spl")
    assert ["EventCode=4688" in path.read_text() for path in spl] == [True]
    assert "splunk" in network["rules"][0]["target_errors"]
    conf = (out / "deploy" / "splunk" / "savedsearches.conf").read_text()
    assert "EventCode=4688" in conf and "data model windows-security" in conf
    # verify converts again in the report's data model: its queries must be the same
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0

    unknown = [*arguments[:3], str(tmp_path / "o2"), "--splunk-data-model", "cim"]
    assert runner.invoke(app, unknown).exit_code == 2
    listed = runner.invoke(app, ["targets"]).output
    assert "data model sysmon" in listed and "data model windows-security" in listed
