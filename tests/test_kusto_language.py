"""Kusto.Language (Microsoft's KQL parser, run under node) validates queries against the Defender schema."""

from __future__ import annotations

import os

import pytest

from rmm2sigma.verify.kusto_language import KustoDiagnostic, kusto_available, validate_kql

if not kusto_available():
    if os.environ.get("CI") == "true":
        pytest.fail(
            "Kusto.Language is not available in CI: `npm ci --prefix tools/kusto` must run first",
            pytrace=False,
        )
    pytest.skip(
        "Kusto.Language not installed (needs node and `npm ci --prefix tools/kusto`, or RMM2SIGMA_KUSTO_DIR)",
        allow_module_level=True,
    )


def errors(query: str) -> list[KustoDiagnostic]:
    (diagnostics,) = validate_kql([query])
    return [d for d in diagnostics if d.is_error]


def test_valid_defender_query_has_no_errors() -> None:
    query = (
        "DeviceProcessEvents | where ProcessVersionInfoCompanyName has 'x' "
        "| summarize Count=count() by DeviceId, DeviceName"
    )
    assert errors(query) == []


def test_defender_tables_have_sentinels_time_column() -> None:
    """Sentinel stores the Defender tables with TimeGenerated beside Timestamp."""
    assert errors("DeviceProcessEvents | summarize First = min(TimeGenerated) by DeviceId") == []
    assert [e.code for e in errors("AlertInfo | project TimeGenerated, Timestamp, NoSuchTime")] == ["KS142"]


def test_unknown_column_is_reported_at_its_position() -> None:
    query = "DeviceProcessEvents\n| where FileName has 'x'\n| where NoSuchColumn == 1"
    (error,) = errors(query)
    assert error.code == "KS142"
    assert "NoSuchColumn" in error.message
    assert (error.line, error.column) == (3, 9)


def test_unknown_table() -> None:
    (error,) = errors("NoSuchTable | take 1")
    assert error.code == "KS204"
    assert "NoSuchTable" in error.message
    assert (error.line, error.column) == (1, 1)


def test_missing_paren_is_a_syntax_error() -> None:
    found = errors("DeviceProcessEvents | where (FileName == 'x'")
    assert [e.code for e in found] == ["KS005"]
    assert "Expected: )" in found[0].message


def test_certificate_signer_column() -> None:
    assert errors("DeviceFileCertificateInfo | where Signer has 'x'") == []


def test_columns_count_code_points_not_utf16_units() -> None:
    query = "DeviceProcessEvents | where FileName == '😀é' and Nope == 1"
    (error,) = errors(query)
    assert error.code == "KS142"
    assert query[error.column - 1 :].startswith("Nope")


def test_custom_schema_and_type_aliases() -> None:
    schema = {"T": [["Flag", "boolean"], ["Name", "string"]]}
    ok, bad = validate_kql(["T | where Flag and Name has 'x'", "T | where Other == 1"], schema)
    assert ok == []
    assert [d.code for d in bad] == ["KS142"]


def test_batch_of_200_keeps_order() -> None:
    queries = [
        f"DeviceProcessEvents | where FileName == 'f{i}'"
        if i % 2 == 0
        else f"DeviceProcessEvents | where Col{i} == 1"
        for i in range(200)
    ]
    results = validate_kql(queries)
    assert len(results) == 200
    for i, diagnostics in enumerate(results):
        found = [d for d in diagnostics if d.is_error]
        if i % 2 == 0:
            assert found == [], queries[i]
        else:
            assert [d.code for d in found] == ["KS142"], queries[i]
            assert f"Col{i}" in found[0].message


def test_empty_batch_needs_no_node_run() -> None:
    assert validate_kql([]) == []
