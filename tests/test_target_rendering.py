"""Target queries say what the original said: issue 7's held-out queries, each measured or checked.

kusto is executed with duckdb-kql (original vs emitted) and validated with Kusto.Language; the
Sigma rule runs in pySigma's sqlite backend (``measure``). Where no engine runs here (Splunk,
ES|QL), the query text is checked.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from rmm2sigma import transpile
from rmm2sigma.convert import convert_rule
from rmm2sigma.fidelity import SIGMA
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.kusto_language import kusto_available, validate_kql
from rmm2sigma.verify.proof import RuleProof, measure

NOW = datetime(2026, 11, 23, 12, 0, 0)
PORTS = "DeviceNetworkEvents | where RemotePort in (5938, 7070, 5650)"
NOT_ACCOUNTS = (
    "DeviceProcessEvents | where FileName =~ 'cmd.exe' and AccountName !in ('SYSTEM', 'LOCAL SERVICE')"
)
ACCOUNTS = "DeviceProcessEvents | where AccountName in ('SYSTEM', 'LOCAL SERVICE')"
CASED = (
    "DeviceNetworkEvents | where RemoteUrl == 'Nano.example' or RemoteUrl contains_cs 'aB' "
    "or RemoteUrl startswith_cs 'Ab' or RemoteUrl endswith_cs '.Ex'"
)


def proof(query: str) -> RuleProof:
    result = measure(SourceRule(path="case.kql", kql=query), Options(), now=NOW)
    assert result.error is None, result.error
    return result


def assert_proven(result: RuleProof, *targets: str) -> None:
    """Each target executed, selected some events, and measured what its label says."""
    assert result.original > 0
    for target in targets:
        measured = result.targets[target]
        assert measured.agrees, (target, measured)


def test_a_numeric_list_stays_numeric_in_every_target() -> None:
    assert transpile(PORTS, "kusto").endswith("RemotePort in (5938, 7070, 5650)")
    for target in ("splunk", "lucene", "esql", "eql"):
        query = transpile(PORTS, target)
        assert "5938" in query and '"5938"' not in query, (target, query)
    assert_proven(proof(PORTS), SIGMA, "kusto", "eql")
    assert proof(PORTS).targets["kusto"].verdict == "exact"


@pytest.mark.skipif(
    not kusto_available(), reason="Kusto.Language not installed (npm ci --prefix tools/kusto)"
)
def test_kusto_language_accepts_numeric_and_case_sensitive_lists() -> None:
    queries = [transpile(q, "kusto") for q in (PORTS, NOT_ACCOUNTS, ACCOUNTS, CASED)]
    for query, diagnostics in zip(queries, validate_kql(queries), strict=True):
        assert not [d for d in diagnostics if d.is_error], query


@pytest.mark.parametrize("query", [ACCOUNTS, NOT_ACCOUNTS, CASED], ids=["in", "!in", "cs operators"])
def test_case_sensitive_tests_keep_their_case_in_kusto(query: str) -> None:
    kusto = transpile(query, "kusto")
    assert "in~" not in kusto and '=~ "SYSTEM' not in kusto and "^" not in kusto
    result = proof(query)
    assert_proven(result, SIGMA, "kusto")
    assert result.targets["kusto"].verdict == "exact" and result.targets["kusto"].label == "exact"


def test_a_negated_case_sensitive_list_excludes_exactly_its_values() -> None:
    assert transpile(NOT_ACCOUNTS, "kusto").endswith('not((AccountName in ("SYSTEM", "LOCAL SERVICE"))))')
    result = proof(NOT_ACCOUNTS)
    assert result.targets["kusto"].extra is None and result.targets["kusto"].missed is None


def test_account_values_are_not_split_into_domain_and_user() -> None:
    kusto = transpile(r"DeviceProcessEvents | where AccountName in ('a*b', @'x\y')", "kusto")
    assert "AccountDomain" not in kusto and 'AccountName == "x\\\\y"' in kusto
    assert 'AccountName matches regex "^a\\\\*b$"' in kusto  # a literal star: a regex in the Sigma rule


def test_the_report_labels_case_sensitive_lists_exact_for_kusto() -> None:
    result = convert_rule(SourceRule(path="case.kql", kql=NOT_ACCOUNTS), Options())
    assert result.fidelity_by_target["kusto"] == "exact" and "kusto" not in result.errors


# ---------------------------------------------------------------- case-sensitive tests on every target

CASED_USERS = (
    "DeviceProcessEvents | where AccountName in ('SYSTEM', 'LOCAL SERVICE') or AccountName == 'Admin'"
)


@pytest.mark.parametrize("target", ["kusto", "splunk", "lucene", "esql", "eql"])
def test_case_sensitive_tests_render_in_every_target(target: str) -> None:
    for query in (CASED, "DeviceProcessEvents | where AccountName == 'Admin'"):
        result = convert_rule(SourceRule(path="case.kql", kql=query), Options(), (target,))
        assert not result.errors and result.fidelity_by_target[target] == "exact", query
        assert "Admin" in result.queries[target] or "aB" in result.queries[target]


def test_lucene_case_sensitive_terms_select_only_their_spelling() -> None:
    """A plain term on a keyword field is case-sensitive; evaluated with luqum (tests/test_elastic.py)."""
    from luqum.parser import parser
    from tests.test_elastic import evaluate

    query = transpile(CASED_USERS, "lucene")
    assert "[sS]" not in query  # not folded into a case-insensitive regex
    parsed = parser.parse(query)
    selected = {
        name
        for name in ("SYSTEM", "system", "LOCAL SERVICE", "Local Service", "Admin", "admin")
        if evaluate(parsed, {"user.name": name})
    }
    assert selected == {"SYSTEM", "LOCAL SERVICE", "Admin"}
    negated = parser.parse(transpile(NOT_ACCOUNTS, "lucene"))
    path = {"process.executable.caseless": "c:\\windows\\cmd.exe"}
    assert not evaluate(negated, {**path, "user.name": "SYSTEM"})
    assert evaluate(negated, {**path, "user.name": "system"})


def test_splunk_and_esql_case_sensitive_text() -> None:
    """No Splunk or ES|QL engine runs here: the text is checked against their documented semantics."""
    splunk = transpile(CASED_USERS, "splunk")
    # CASE() makes a Splunk comparison case-sensitive; IN (...) would not be
    assert 'User=CASE("SYSTEM") OR User=CASE("LOCAL SERVICE") OR User=CASE("Admin")' in splunk
    assert " IN " not in splunk
    assert 'NOT (User=CASE("SYSTEM") OR User=CASE("LOCAL SERVICE"))' in transpile(NOT_ACCOUNTS, "splunk")
    esql = transpile(CASED_USERS, "esql")  # ES|QL `in` and `==` compare keyword fields case-sensitively
    assert 'user.name in ("SYSTEM", "LOCAL SERVICE")' in esql and 'user.name=="Admin"' in esql
    cased = transpile(CASED, "esql")
    assert 'like "*aB*"' in cased and 'starts_with(destination.domain, "Ab")' in cased
    assert "rlike" not in cased and "like~" not in transpile(CASED_USERS, "eql")


def test_eql_case_sensitive_values_are_measured_exact_in_the_eql_engine() -> None:
    eql = transpile(CASED, "eql")  # `==` would compare `*aB*` literally; `like` reads like `like~` here
    assert 'destination.domain regex ".*aB.*"' in eql and 'destination.domain == "Nano.example"' in eql
    assert 'user.name in ("SYSTEM", "LOCAL SERVICE")' in transpile(ACCOUNTS, "eql")
    for query in (CASED, ACCOUNTS):
        result = proof(query)
        assert_proven(result, "eql")
        assert result.targets["eql"].verdict == result.targets["eql"].label == "exact", query
    negated = proof(NOT_ACCOUNTS)  # the events without user.name are kept (TwoValuedNegations)
    assert_proven(negated, "eql")
    assert negated.targets["eql"].verdict == "exact"


def test_a_negated_test_selects_events_without_the_field_in_eql_and_esql() -> None:
    """EQL and ES|QL make a test of a missing field null, and ``not null`` null: the negated list
    is asked as ``(field exists and field in (...))``, false on a missing field, so the NOT keeps
    the event. The eql engine runs the EQL; ES|QL has no engine here, so its text is checked."""
    from rmm2sigma.verify.engines import EqlEngine

    eql = transpile(NOT_ACCOUNTS, "eql")
    assert '?user.name != null and user.name in ("SYSTEM", "LOCAL SERVICE")' in eql
    cmd = {"process": {"executable": "C:\\Windows\\cmd.exe"}}  # `.caseless` reads it lowercased
    documents = [
        {"__id": 1, **cmd, "user": {"name": "SYSTEM"}},
        {"__id": 2, **cmd, "user": {"name": "alice"}},
        {"__id": 3, **cmd},  # no user.name
        {"__id": 4, **cmd, "user": {"name": None}},
        {"__id": 5, "process": {"executable": "C:\\Windows\\sh.exe"}},
    ]
    assert EqlEngine().select(eql, documents) == {2, 3, 4}
    esql = transpile(NOT_ACCOUNTS, "esql")
    assert 'not ((user.name is not null and user.name in ("SYSTEM", "LOCAL SERVICE")))' in esql
    # a null test is two-valued already, and a positive test needs no guard
    assert "is not null" not in transpile(ACCOUNTS, "esql") and "!= null" not in transpile(ACCOUNTS, "eql")
    # a negated column pair is null when either column is missing: both are guarded
    pair = (
        "DeviceProcessEvents | where FileName =~ 'a.exe' and ProcessCommandLine !~ "
        "InitiatingProcessCommandLine"
    )
    guards = "process.command_line is not null and process.parent.command_line is not null and "
    assert guards + "process.command_line==" in transpile(pair, "esql")
    present = "DeviceProcessEvents | where FileName =~ 'cmd.exe' and isnotnull(InitiatingProcessId)"
    assert "is not null" not in transpile(present, "esql") and "!= null and" not in transpile(present, "eql")


def test_a_case_sensitive_test_on_a_caseless_field_asks_the_field_as_written() -> None:
    """``.caseless`` holds values lowercased, the field itself as written: a case-sensitive test
    goes to the field itself, exact, and so does a negated one (it would narrow on ``.caseless``)."""
    query = "DeviceProcessEvents | where FileName == 'X.exe'"
    result = convert_rule(SourceRule(path="case.kql", kql=query), Options())
    assert set(result.fidelity_by_target.values()) == {"exact"}
    assert "process.executable:*\\\\X.exe" in result.queries["lucene"]
    assert "process.executable.caseless" not in result.queries["esql"]
    negated = "DeviceProcessEvents | where FolderPath endswith 'a.exe' and FileName != 'X.exe'"
    kept = convert_rule(SourceRule(path="case.kql", kql=negated), Options())
    assert not kept.errors and set(kept.fidelity_by_target.values()) == {"exact"}


# ---------------------------------------------------------------- time window


def test_every_target_that_drops_the_time_window_says_so() -> None:
    query = "DeviceProcessEvents | where Timestamp between (ago(7d) .. now()) | where FileName =~ 'x.exe'"
    result = convert_rule(SourceRule(path="case.kql", kql=query), Options())
    dropped = {note.split(":")[0] for note in result.notes if "time window" in note}
    assert dropped == {"lucene", "eql"}
    assert any("last 7d" in note and "schedule" in note for note in result.notes)
    assert "ago(7d)" in result.queries["kusto"] and "earliest=-7d" in result.queries["splunk"]
    assert "604800 seconds" in result.queries["esql"]
    without = convert_rule(
        SourceRule(path="case.kql", kql="DeviceProcessEvents | where FileName =~ 'x'"), Options()
    )
    assert not any("time window" in note for note in without.notes)


# ---------------------------------------------------------------- user regexes, measured


@pytest.mark.parametrize(
    "pattern",
    [r".dll,#(?:1|3) worker[0-9]\sjob[0-9]-[0-9]{4,}", r"(?i)-enc\s+[A-Za-z0-9+/=]{20,}", r"^\S+\.exe$"],
)
def test_user_regexes_are_exact_where_an_engine_runs(pattern: str) -> None:
    where = f"FileName =~ 'rundll32.exe' and ProcessCommandLine matches regex @'{pattern}'"
    query = f"DeviceProcessEvents | where {where}"
    result = proof(query)
    assert_proven(result, SIGMA, "kusto", "eql")
    assert {result.targets[t].verdict for t in (SIGMA, "kusto", "eql")} == {"exact"}
    assert transpile(query, "lucene").count("/") >= 2  # rendered, not refused


def test_splunk_compares_a_field_reference_without_case_as_sigma_does() -> None:
    """pySigma writes `| where 'A'='B'`, case-sensitive in Splunk; Sigma's fieldref ignores case."""
    from sigma.rule import SigmaRule

    from rmm2sigma import targets

    rule = {
        "title": "Field reference",
        "logsource": {"product": "windows", "category": "process_creation"},
        "detection": {
            "selection": {"User": "admin"},
            "same": {"Image|fieldref": "ParentImage"},
            "condition": "selection and not same",
        },
    }
    (query,) = targets.backend("splunk").convert_rule(SigmaRule.from_dict(rule))
    assert query.endswith("\n| where NOT lower('Image')=lower('ParentImage')")
    rule["detection"]["condition"] = "selection and same"  # type: ignore[index]
    (query,) = targets.backend("splunk").convert_rule(SigmaRule.from_dict(rule))
    assert query.endswith("\n| where lower('Image')=lower('ParentImage')")


def test_an_empty_query_is_never_shipped() -> None:
    """A pipeline that drops every condition (microsoft_xdr drops EventID) leaves no query: refused."""
    from sigma.rule import SigmaRule

    from rmm2sigma import targets

    rule = {
        "title": "Only the kind",
        "logsource": {"product": "windows", "service": "security"},
        "detection": {"selection": {"EventID": [4624, 4625]}, "condition": "selection"},  # every logon
    }
    result = targets.convert("kusto", lambda: SigmaRule.from_dict(rule), {})
    assert result.query is None and "no condition" in (result.error or "")


def test_a_registry_key_ending_in_a_backslash_keeps_it_in_kusto() -> None:
    """microsoft_xdr's HKLM replacements rewrote a value through its text, where the final `\\` of
    `\\Image File Execution Options\\` and contains' `*` read back as an escaped star."""
    from datetime import datetime

    from rmm2sigma.verify.proof import measure

    query = (
        "DeviceRegistryEvents | where ActionType == 'RegistryValueSet'\n"
        "| where RegistryKey has @'\\Image File Execution Options\\' and RegistryValueData has 'debugger'"
    )
    proof = measure(SourceRule(path="ifeo.kql", kql=query), Options(), now=datetime(2026, 11, 23, 12))
    kusto = proof.targets["kusto"]
    assert proof.original and kusto.verdict in ("exact", "widened") and kusto.agrees
