"""The oracles on hand-made rows: each must tell apart the semantics the proof depends on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sigma.rule import SigmaRule

from rmm2sigma import kql
from rmm2sigma.convert import defender_schema
from rmm2sigma.fidelity import ecs_field_names
from rmm2sigma.kql.lower import lower
from rmm2sigma.mapping import tables
from rmm2sigma.verify.engines import (
    EqlEngine,
    KqlEngine,
    NotExecutable,
    SigmaEngine,
    ecs_rows,
    lucene_error,
    row_selecting,
    sigma_rows,
    target_rows,
    with_ids,
)
from rmm2sigma.verify.events import ID, PATH_COLUMNS, generate

NOW = datetime(2026, 11, 23, 12, 0, 0)
COMPANIES = {
    1: "NanoSystems S.r.l.",
    2: "xNanoSystemsx",
    3: "NANOSYSTEMS",
    4: "_NanoSystems_",
    5: "Krämer IT Solutions GmbH",
    6: "KRÄMER IT SOLUTIONS GMBH",
    7: "",
}


@pytest.fixture(scope="module")
def kusto() -> KqlEngine:
    engine = KqlEngine(defender_schema())
    rows = [{ID: i, "Timestamp": NOW, "ProcessVersionInfoCompanyName": c} for i, c in COMPANIES.items()]
    engine.load({"DeviceProcessEvents": rows})
    return engine


def ids(engine: KqlEngine, where: str) -> set[int]:
    return engine.select(with_ids(f"DeviceProcessEvents | where {where}"), NOW)


def test_kql_has_matches_whole_terms_and_contains_inside_words(kusto: KqlEngine) -> None:
    assert ids(kusto, "ProcessVersionInfoCompanyName has 'NanoSystems'") == {1, 3, 4}
    assert ids(kusto, "ProcessVersionInfoCompanyName contains 'NanoSystems'") == {1, 2, 3, 4}


def test_kql_case_rules(kusto: KqlEngine) -> None:
    assert ids(kusto, "ProcessVersionInfoCompanyName == 'NanoSystems S.r.l.'") == {1}
    assert ids(kusto, "ProcessVersionInfoCompanyName =~ 'nanosystems s.r.l.'") == {1}
    assert ids(kusto, "ProcessVersionInfoCompanyName =~ 'nanosystems'") == {3}
    assert ids(kusto, "ProcessVersionInfoCompanyName has_cs 'NanoSystems'") == {1, 4}
    assert ids(kusto, "ProcessVersionInfoCompanyName has 'krämer'") == {5, 6}


def test_kql_in_is_case_sensitive_and_in_tilde_is_not(kusto: KqlEngine) -> None:
    assert ids(kusto, "ProcessVersionInfoCompanyName in ('nanosystems', 'xNanoSystemsx')") == {2}
    assert ids(kusto, "ProcessVersionInfoCompanyName in~ ('nanosystems', 'xNanoSystemsx')") == {2, 3}


def test_kql_an_absent_string_is_empty(kusto: KqlEngine) -> None:
    assert ids(kusto, "isempty(ProcessVersionInfoProductName)") == set(COMPANIES)
    assert ids(kusto, "isempty(ProcessVersionInfoCompanyName)") == {7}


def test_the_original_keeps_lets_and_filters_and_drops_the_summary(kusto: KqlEngine) -> None:
    query = kql.parse(
        "let Time_start = now(-5d);\nlet Time_end = now();\nDeviceProcessEvents\n"
        "| where Timestamp between (Time_start..Time_end)\n"
        "| where ProcessVersionInfoCompanyName has 'NanoSystems'\n"
        "| summarize Count=count() by DeviceId\n| project Count"
    )
    text = row_selecting(query)
    assert "summarize" not in text and text.startswith("let Time_start")
    assert kusto.select(text, NOW) == {1, 3, 4}


def test_a_datatable_let_feeds_has_any(kusto: KqlEngine) -> None:
    query = kql.parse(
        "let names = datatable(Name:string, Tool:string)['NanoSystems', 'supremo', 'krämer', 'x'];\n"
        "DeviceProcessEvents\n| where ProcessVersionInfoCompanyName has_any ((names | distinct Name))\n"
        "| extend Short = substring(ProcessVersionInfoCompanyName, 0, 3)"
    )
    assert kusto.select(row_selecting(query), NOW) == {1, 3, 4, 5, 6}


def test_an_unsupported_query_is_reported_not_guessed(kusto: KqlEngine) -> None:
    with pytest.raises(NotExecutable):
        kusto.select("DeviceProcessEvents | where NoSuchColumn has 'x' | project ['__id']", NOW)


def sigma_rule(detection: dict[str, Any], category: str = "process_creation") -> SigmaRule:
    return SigmaRule.from_dict(
        {"title": "t", "logsource": {"product": "windows", "category": category}, "detection": detection}
    )


@pytest.fixture(scope="module")
def sqlite() -> SigmaEngine:
    return SigmaEngine()


def sigma_ids(engine: SigmaEngine, detection: dict[str, Any]) -> set[int]:
    rows = [{ID: i, "Company": c} for i, c in COMPANIES.items()] + [{ID: 8}]
    return engine.select(engine.query(sigma_rule(detection)), rows, ["Company"])


def test_sqlite_contains_is_case_insensitive_beyond_ascii(sqlite: SigmaEngine) -> None:
    assert sigma_ids(sqlite, {"s": {"Company|contains": "nanosystems"}, "condition": "s"}) == {1, 2, 3, 4}
    assert sigma_ids(sqlite, {"s": {"Company|contains": "krämer"}, "condition": "s"}) == {5, 6}
    assert sigma_ids(sqlite, {"s": {"Company": "nanosystems"}, "condition": "s"}) == {3}


def test_sqlite_regexp_respects_the_case_flag(sqlite: SigmaEngine) -> None:
    term = "(^|[^0-9A-Za-z])NanoSystems($|[^0-9A-Za-z])"
    assert sigma_ids(sqlite, {"s": {"Company|re|i": term}, "condition": "s"}) == {1, 3, 4}
    assert sigma_ids(sqlite, {"s": {"Company|re": term}, "condition": "s"}) == {1, 4}


def test_sqlite_negation_and_absent_fields(sqlite: SigmaEngine) -> None:
    assert sigma_ids(sqlite, {"s": {"Company|contains": "nano"}, "condition": "not s"}) == {5, 6, 7, 8}
    assert sigma_ids(sqlite, {"s": {"Company": ["", None]}, "condition": "s"}) == {7, 8}


def test_eql_on_ecs_documents() -> None:
    names = ecs_field_names("process_creation")
    assert names["Company"] == "process.pe.company"
    assert names["Image"] == "process.executable.caseless"
    rows: list[dict[str, Any]] = [
        {ID: 1, "Company": "NanoSystems S.r.l.", "Image": "C:\\Apps\\Supremo.exe"},
        {ID: 2, "Company": "xNanoSystemsx", "Image": "C:\\Apps\\other.exe"},
        {ID: 3, "Company": None, "Image": "C:\\Apps\\SUPREMO.EXE"},
    ]
    documents = ecs_rows(rows, names)
    assert documents[0]["process"]["executable"] == "C:\\Apps\\Supremo.exe"  # as written
    engine = EqlEngine()
    # `.caseless` is the field lowercased, the field itself keeps the case
    assert engine.select('any where process.executable == "C:\\\\Apps\\\\SUPREMO.EXE"', documents) == {3}
    assert engine.select('any where process.pe.company:"*nanosystems*"', documents) == {1, 2}
    assert engine.select('any where process.executable.caseless:"*\\\\supremo.exe"', documents) == {1, 3}
    assert engine.select('any where process.pe.company like~ ("nanosystems*", "x*")', documents) == {1, 2}
    assert engine.select('any where process.pe.company regex "[nN]ano.*"', documents) == {1}
    assert engine.select('any where process.pe.company regex "nano.*"', documents) == set()
    assert engine.select("any where ?process.pe.company == null", documents) == {3}


def test_luqum_checks_lucene_syntax() -> None:
    assert lucene_error("process.pe.company:*Nano* AND process.executable.caseless:*\\\\supremo.exe") is None
    assert lucene_error("process.pe.company:(*Nano* OR") is not None


def test_rows_move_into_the_fallback_and_sigma_models() -> None:
    network, process = tables()["DeviceNetworkEvents"], tables()["DeviceProcessEvents"]
    row = {
        ID: 1,
        "InitiatingProcessVersionInfoCompanyName": "Nano",
        "InitiatingProcessFolderPath": "C:\\A\\b.exe",
        "InitiatingProcessFileName": "b.exe",
        "RemoteUrl": "x.com",
    }
    (moved,) = target_rows([row], network.fallbacks[0].columns)
    assert moved == {
        ID: 1,
        "ProcessVersionInfoCompanyName": "Nano",
        "FolderPath": "C:\\A\\b.exe",
        "FileName": "b.exe",
    }
    (event,) = sigma_rows([moved], process)
    assert event == {ID: 1, "Company": "Nano", "Image": "C:\\A\\b.exe"}


def test_generated_rows_tell_has_from_contains_and_stay_consistent() -> None:
    query = kql.parse(
        "DeviceProcessEvents | where ProcessVersionInfoCompanyName has 'NanoSystems' "
        "and FileName startswith 'supremo'"
    )
    rows = generate(lower(query, defender_schema()), defender_schema(), seed=1, now=NOW)
    companies = {row.get("ProcessVersionInfoCompanyName") for row in rows}
    assert {
        "NanoSystems",
        "xNanoSystemsx",
        "Foo NanoSystems S.r.l.",
        "_NanoSystems_",
        "NANOSYSTEMS",
        "",
        None,
    } <= companies
    assert len({row[ID] for row in rows}) == len(rows)
    for row in rows:
        for path, name in PATH_COLUMNS.items():
            if row.get(path):  # a path is a full path (or empty), its file name its last part
                assert "\\" in row[path] and row[name] == row[path].rpartition("\\")[2]
        assert row["Timestamp"] < NOW
    assert rows == generate(lower(query, defender_schema()), defender_schema(), seed=1, now=NOW)


def test_eql_engine_follows_elasticsearch_case_rules() -> None:
    """`==` and `in` are case-sensitive in ES EQL; `:` and `like~` are not."""
    documents = [
        {ID: 1, "user": {"name": "SYSTEM"}},
        {ID: 2, "user": {"name": "system"}},
        {ID: 3, "user": {}},
    ]
    engine = EqlEngine()
    assert engine.select('any where user.name == "SYSTEM"', documents) == {1}
    assert engine.select('any where user.name in ("SYSTEM", "Admin")', documents) == {1}
    assert engine.select('any where not (user.name in ("SYSTEM", "Admin"))', documents) == {2}
    assert engine.select('any where user.name : "SYSTEM"', documents) == {1, 2}
    assert engine.select('any where user.name like~ ("sys*")', documents) == {1, 2}
    assert engine.select(
        "any where destination.port in (80, 443)", [{ID: 4, "destination": {"port": 443}}]
    ) == {4}


def test_generated_rows_match_a_user_regex_and_near_misses() -> None:
    import re

    pattern = r"(?i)-enc\s+[A-Za-z0-9+/=]{20,}"
    query = kql.parse(f"DeviceProcessEvents | where ProcessCommandLine matches regex @'{pattern}'")
    rows = generate(lower(query, defender_schema()), defender_schema(), seed=3, now=NOW)
    commands = [row.get("ProcessCommandLine") or "" for row in rows]
    matching = [c for c in commands if re.search(pattern, c)]
    assert len(matching) >= 3 and len(matching) < len(commands)
    assert any(re.search(pattern, c[:-1]) is None and re.search(pattern, c) for c in commands)


def test_a_proof_with_no_original_hit_is_unproven() -> None:
    from rmm2sigma.sigma import Options
    from rmm2sigma.sources import SourceRule
    from rmm2sigma.verify.proof import UNPROVEN, measure

    query = (
        "let signed = DeviceFileCertificateInfo | where Signer has 'Nano' | distinct SHA1;\n"
        "DeviceNetworkEvents | where RemoteUrl has 'nano.example' and InitiatingProcessSHA1 in (signed)"
    )
    result = measure(SourceRule(path="join.kql", kql=query), Options(), now=NOW)
    assert result.error is None and result.original == 0
    executed = {t: r for t, r in result.targets.items() if r.verdict != "not_executed"}
    assert {"sigma", "kusto"} <= set(executed)
    assert all(r.verdict == UNPROVEN and r.agrees is None for r in executed.values())


def test_eql_measures_a_windows_log_rule_on_documents_with_its_channel() -> None:
    """The ecs_windows query of a Security-log rule tests the channel and the event code as text,
    and Winlogbeat writes the event data as text: the logon type 3, not the number."""
    from rmm2sigma.sigma import Options
    from rmm2sigma.sources import SourceRule
    from rmm2sigma.verify.proof import measure

    query = "DeviceLogonEvents\n| where ActionType == 'LogonFailed' and LogonType == 'Network'"
    result = measure(SourceRule(path="logon.kql", kql=query), Options(), now=NOW)
    assert result.original and result.targets["eql"].verdict == result.targets["sigma"].verdict
    assert result.targets["eql"].agrees


def test_a_target_query_its_engine_cannot_parse_is_a_problem_not_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An EQL query the eql parser rejects is broken output (Elasticsearch rejects it too): the
    proof reports it against the label. Here the regex quote escaping eql once lacked."""
    from rmm2sigma.sigma import Options
    from rmm2sigma.sources import SourceRule
    from rmm2sigma.targets.elastic import Rmm2SigmaEqlBackend
    from rmm2sigma.verify.engines import NotParsed
    from rmm2sigma.verify.proof import measure

    with pytest.raises(NotParsed):
        EqlEngine().select('process where "*x*"', [])
    monkeypatch.setattr(Rmm2SigmaEqlBackend, "re_escape", ())
    query = "DeviceProcessEvents | where ProcessCommandLine matches regex @'x\\.dat\",1'"
    result = measure(SourceRule(path="quote.kql", kql=query), Options(), now=NOW)
    assert result.targets["eql"].agrees is False and result.problems == [result.targets["eql"]]


def test_generated_rows_satisfy_has_all_and_numbers_written_as_strings() -> None:
    """Held-out shapes the original selected none of: `has_all` and `RemotePort == "3389"`."""
    from rmm2sigma.sigma import Options
    from rmm2sigma.sources import SourceRule
    from rmm2sigma.verify.proof import measure

    has_all = "DeviceProcessEvents | where FileName =~ 'wscript.exe' and "
    has_all += "ProcessCommandLine has_all('stolen', 'images')"
    port = (
        "DeviceNetworkEvents | where InitiatingProcessFileName =~ 'spoolsv.exe' | where RemotePort == '3389'"
    )
    for query in (has_all, port):
        result = measure(SourceRule(path="case.kql", kql=query), Options(), now=NOW)
        assert result.original > 0, query
        assert result.targets["kusto"].agrees and result.targets["sigma"].agrees, query
    # has_all -> contains|all is widened, and the events show it: one needle only inside a word
    widened = measure(SourceRule(path="case.kql", kql=has_all), Options(), now=NOW).targets["kusto"]
    assert widened.verdict == "widened" and widened.extra is not None
