"""Declared fidelity labels agree with what executing the queries measures, on hand-written KQL."""

from __future__ import annotations

from datetime import datetime

import pytest

from rmm2sigma.convert import convert_rule
from rmm2sigma.fidelity import SIGMA
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.proof import NOT_EXECUTED, RuleProof, measure

NOW = datetime(2026, 11, 23, 12, 0, 0)
WINDOW = "let Time_start = now(-5d);\nlet Time_end = now();\n"
PROCESS = WINDOW + "DeviceProcessEvents\n| where Timestamp between (Time_start..Time_end)\n| where "
NETWORK = WINDOW + "DeviceNetworkEvents\n| where Timestamp between (Time_start..Time_end)\n| where "
SUMMARY = "\n| summarize FirstSeen=min(Timestamp), Count=count() by DeviceId, DeviceName"

# query -> (default labels, --exact labels) for the sigma and kusto targets
CASES = {
    "has": (PROCESS + "ProcessVersionInfoCompanyName has 'NanoSystems'" + SUMMARY, "widened", "exact"),
    "has_any": (
        PROCESS + "ProcessVersionInfoProductName has_any ('Supremo', 'remote.exe')",
        "widened",
        "exact",
    ),
    "equals": (PROCESS + "ProcessVersionInfoCompanyName =~ 'NanoSystems S.r.l.'", "exact", "exact"),
    "in~": (PROCESS + "ProcessVersionInfoProductName in~ ('Supremo', 'SupremoService')", "exact", "exact"),
    "file name": (PROCESS + "FileName =~ 'supremo.exe' or FileName endswith 'helper.exe'", "exact", "exact"),
    "file name prefix": (PROCESS + "FileName startswith 'supremo'", "widened", "exact"),
    "empty": (
        PROCESS + "isempty(ProcessVersionInfoCompanyName) and FolderPath contains @'\\Level\\'",
        "exact",
        "exact",
    ),
    "structure": (
        PROCESS + "(FolderPath endswith @'\\a.exe' or ProcessVersionInfoProductName =~ 'Nano') "
        "and not(ProcessCommandLine contains '--silent')",
        "exact",
        "exact",
    ),
    "negated has": (
        PROCESS + "FolderPath endswith 'x.exe' and ProcessCommandLine !has 'update'",
        "exact",
        "exact",
    ),
    "numbers": (NETWORK + "RemotePort > 5000 and RemoteUrl endswith '.example.com'", "exact", "exact"),
    "case-sensitive": (
        NETWORK + "RemoteUrl == 'Nano.example' or RemoteUrl contains_cs 'aB' or RemotePort != 443",
        "exact",
        "exact",
    ),
    "case-sensitive list": (
        PROCESS + "FolderPath endswith 'cmd.exe' and AccountName !in ('SYSTEM', 'LOCAL SERVICE')",
        "exact",
        "exact",
    ),
    "case-sensitive in": (
        PROCESS + "AccountName in ('SYSTEM', 'Admin') or AccountName == 'root'",
        "exact",
        "exact",
    ),
    "numeric list": (
        NETWORK + "RemotePort in (5938, 7070, 5650) and RemoteUrl endswith '.example'",
        "exact",
        "exact",
    ),
    "negated numeric list": (
        NETWORK + "RemoteUrl endswith '.example' and RemotePort !in (80, 443)",
        "exact",
        "exact",
    ),
    "user regex": (
        PROCESS + "ProcessCommandLine matches regex @'(?i)-enc\\s+[A-Za-z0-9+/=]{20,}'",
        "exact",
        "exact",
    ),
    "mid-pattern flag": (
        PROCESS + "ProcessCommandLine matches regex @'^cmd\\.exe /c (?i)whoami|net\\s+user\\b'",
        "exact",
        "exact",
    ),
    "negated user regex": (
        PROCESS + "FolderPath endswith 'cmd.exe' and not(ProcessCommandLine matches regex @'\\d{3,}')",
        "exact",
        "exact",
    ),
    "dropped column": (
        NETWORK + "RemoteUrl endswith '.example.com' and InitiatingProcessVersionInfoCompanyName =~ 'Nano'",
        "approximate",
        "approximate",
    ),
    "fallback": (NETWORK + "InitiatingProcessVersionInfoCompanyName =~ 'Nano'", "approximate", "approximate"),
}


def proof(query: str, exact: bool) -> RuleProof:
    result = measure(SourceRule(path="case.kql", kql=query), Options(exact=exact), now=NOW)
    assert result.error is None, result.error
    return result


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_labels_agree_with_measurement(case: str, exact: bool) -> None:
    query, default, exact_label = CASES[case]
    result = proof(query, exact)
    executed = {t: r for t, r in result.targets.items() if r.verdict != NOT_EXECUTED}
    assert {SIGMA, "kusto"} <= set(executed)
    assert result.original > 0
    disagreements = {t: (r.label, r.verdict, r.missed, r.extra) for t, r in executed.items() if not r.agrees}
    assert not disagreements
    assert result.targets[SIGMA].label == (exact_label if exact else default)


def test_the_report_declares_what_the_proof_checks() -> None:
    query = CASES["has"][0]
    result = convert_rule(SourceRule(path="case.kql", kql=query), Options())
    assert result.fidelity_by_target == {
        SIGMA: "widened",
        "kusto": "widened",
        "splunk": "widened",
        "lucene": "widened",
        "esql": "widened",
        "eql": "widened",
    }
    assert not any(
        note.startswith(("lucene:", "esql:")) and "time window" not in note for note in result.notes
    )


def test_exact_regexes_are_rewritten_for_every_elastic_target() -> None:
    result = convert_rule(SourceRule(path="case.kql", kql=CASES["file name prefix"][0]), Options(exact=True))
    assert {result.fidelity_by_target[t] for t in ("kusto", "lucene", "esql", "eql")} == {"exact"}
    assert "(?i)" not in result.queries["eql"] and "[sS][uU][pP]" in result.queries["eql"]
    assert not any("Lucene's engine" in note for note in result.notes)


def test_certificate_rules_are_exact_in_kusto_and_approximate_in_sigma() -> None:
    query = WINDOW + "DeviceFileCertificateInfo\n| where Signer =~ 'NanoSystems S.r.l.'"
    result = proof(query, False)
    assert result.targets["kusto"].label == "exact" and result.targets["kusto"].verdict == "exact"
    assert result.targets[SIGMA].label == "approximate" and result.targets[SIGMA].verdict == "exact"


def test_a_widening_is_shown_with_an_example() -> None:
    result = proof(CASES["has"][0], False)
    kusto = result.targets["kusto"]
    assert kusto.verdict == "widened" and kusto.missed is None
    assert kusto.extra is not None and "NanoSystems" in kusto.extra["ProcessVersionInfoCompanyName"]
