"""JSON rule files: a Sentinel ARM export and Defender custom detections, several rules per input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rmm2sigma.convert import convert_input
from rmm2sigma.sigma import Options

OPTIONS = Options()


def arm_template(*queries: str) -> str:
    """What the Sentinel portal's export writes: one alertRules resource per rule."""
    resources = [
        {
            "id": f"[concat(resourceId('Microsoft.OperationalInsights/workspaces/providers', "
            f"parameters('workspace'), 'Microsoft.SecurityInsights'),'/alertRules/{index}')]",
            "name": f"[concat(parameters('workspace'),'/Microsoft.SecurityInsights/{index}')]",
            "type": "Microsoft.OperationalInsights/workspaces/providers/alertRules",
            "kind": "Scheduled",
            "apiVersion": "2023-12-01-preview",
            "properties": {
                "displayName": f"Exported rule {index}",
                "description": f"Finds the exported tool number {index} starting.",
                "severity": "High",
                "enabled": True,
                "query": query,
                "queryFrequency": "PT1H",
                "queryPeriod": "PT1H",
                "triggerOperator": "GreaterThan",
                "triggerThreshold": 0,
                "tactics": ["Execution"],
                "techniques": ["T1059"],
            },
        }
        for index, query in enumerate(queries)
    ]
    workspace = {"workspace": {"type": "String"}}
    document = {"$schema": "deploymentTemplate.json#", "parameters": workspace, "resources": resources}
    return json.dumps(document, indent=4)


def export(folder: Path, *queries: str) -> Path:
    path = folder / "export.json"
    path.write_text(arm_template(*queries))
    return path


def test_an_arm_export_gives_one_rule_per_alert_rule(tmp_path: Path) -> None:
    path = export(
        tmp_path,
        'DeviceProcessEvents\n| where FileName =~ "one.exe"',
        'DeviceNetworkEvents\n| where RemoteUrl has "two.example.org"',
    )
    result = convert_input(str(path), OPTIONS, ("kusto",))
    assert result.status == "converted", result.error
    assert [rule.title for rule in result.rules] == ["Exported Rule 0", "Exported Rule 1"]
    assert "level: high" in result.rules[0].yaml and "attack.t1059" in result.rules[0].yaml
    assert "one.exe" in result.rules[0].queries["kusto"]
    assert "two.example.org" in result.rules[1].queries["kusto"]
    assert len({rule.rule_id for rule in result.rules}) == 2


def test_an_error_in_an_escaped_query_points_at_the_file_column(tmp_path: Path) -> None:
    query = 'DeviceProcessEvents\n| where FileName =~ "one.exe"\n| where FileName ==== "x"'
    text = arm_template('DeviceProcessEvents | where FileName =~ "ok.exe"', query)
    path = tmp_path / "export.json"
    path.write_text(text)
    result = convert_input(str(path), OPTIONS, ())
    # the first rule still converts: the file is partial, its error located in the file
    assert result.status == "partial" and result.error is not None and len(result.rules) == 1
    line_text = next(line for line in text.splitlines() if "====" in line)
    line = text.splitlines().index(line_text) + 1
    column = line_text.index("====") + 1 + 2  # the parser stops at the third `=`
    assert result.error.startswith(f"{path}:{line}:"), result.error
    reported = int(result.error.split(":")[2])
    assert line_text.index("====") + 1 <= reported <= column, (result.error, line_text)
    assert "resources[1]" in result.error and "query line 3" in result.error


def test_defender_custom_detections_page(tmp_path: Path) -> None:
    detection = {
        "id": "7506",
        "displayName": "Ransomware note written",
        "isEnabled": True,
        "queryCondition": {"queryText": 'DeviceProcessEvents\n| where ProcessCommandLine has "vssadmin"'},
        "schedule": {"period": "1H"},
        "detectionAction": {
            "alertTemplate": {
                "title": "Ransomware note written",
                "description": "A ransom note was written to disk by a process.",
                "severity": "high",
                "category": "Impact",
                "mitreTechniques": ["T1486"],
            }
        },
    }
    path = tmp_path / "detections.json"
    path.write_text(json.dumps({"value": [detection]}))
    result = convert_input(str(path), OPTIONS, ())
    assert result.status == "converted", result.error
    (rule,) = result.rules
    assert rule.title == "Ransomware Note Written"
    assert "attack.t1486" in rule.yaml and "attack.impact" in rule.yaml and "level: high" in rule.yaml


def test_json_without_rules_is_refused_and_bad_json_located(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text('{"resources": []}')
    assert "holds no Sentinel alert rule" in (convert_input(str(empty), OPTIONS, ()).error or "")
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "resources": [,]\n}')
    result = convert_input(str(broken), OPTIONS, ())
    assert result.status == "failed" and (result.error or "").startswith(f"{broken}:2:")


def test_a_conversion_of_an_arm_export_can_be_verified(tmp_path: Path) -> None:
    path = export(
        tmp_path,
        'DeviceProcessEvents | where FileName =~ "one.exe"',
        'DeviceProcessEvents | where FileName =~ "b.exe"',
    )
    out = tmp_path / "out"
    run = [sys.executable, "-m", "rmm2sigma"]
    converted = subprocess.run(
        [*run, "convert", str(path), "--out", str(out), "-t", "kusto"], capture_output=True, text=True
    )
    assert converted.returncode == 0, converted.stderr
    proved = subprocess.run([*run, "verify", str(out)], capture_output=True, text=True, check=False)
    assert proved.returncode == 0, proved.stdout + proved.stderr
    rules = json.loads((out / "verify.json").read_text())["rules"]
    assert [r["targets"]["kusto"]["verdict"] for r in rules] == ["exact", "exact"]


def test_analytic_rule_settings_become_notes_and_the_schedule(tmp_path: Path) -> None:
    """ARM's ISO 8601 spans reach the schedule; an alert threshold and entities become notes."""
    document = json.loads(arm_template('DeviceProcessEvents | where FileName =~ "one.exe"'))
    properties = document["resources"][0]["properties"]
    properties.update(queryFrequency="PT5H", queryPeriod="P1DT12H", triggerThreshold=3)
    properties["entityMappings"] = [{"entityType": "Host", "fieldMappings": []}]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(document))
    (rule,) = convert_input(str(path), OPTIONS, ()).rules
    assert rule.schedule is not None
    assert (rule.schedule.frequency, rule.schedule.period) == (5 * 3600, 36 * 3600)
    assert any("`GreaterThan 3` results" in note for note in rule.notes)
    assert any("entity mappings (Host)" in note for note in rule.notes)
    properties.update(triggerThreshold=0)
    del properties["entityMappings"]
    path.write_text(json.dumps(document))
    (rule,) = convert_input(str(path), OPTIONS, ()).rules
    assert not any("triggerThreshold" in note or "entity" in note for note in rule.notes)
