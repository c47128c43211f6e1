"""Tests of Defender's boolean columns (``IsSigned``, ``IsTrusted``...).

Kusto reads ``IsSigned``, ``IsSigned == true``, ``IsSigned == 1`` and ``not(IsSigned)`` as tests of
a bool. Sysmon writes ``Signed`` as the text ``true``/``false``, which a Sigma boolean matches; the
backends write their own booleans (ECS ``code_signature.signed``, Defender ``IsSigned == true``:
KQL's ``=~`` is not defined on bools). Before, ``IsSigned == 1`` became ``Signed: 1``, which eql
measured narrowed, and the other spellings were refused.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

from conftest import disagreements, executed, kusto_errors
from rmm2sigma.convert import convert_rule
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.kusto_language import kusto_available
from rmm2sigma.verify.proof import measure

NOW = datetime(2026, 12, 2, 12, 0, 0)
TABLE = "DeviceFileCertificateInfo"

# the test of IsSigned -> whether it holds on signed files
SPELLINGS = {
    "IsSigned": True,
    "IsSigned == true": True,
    "IsSigned == 1": True,
    "IsSigned != 0": True,
    "IsSigned == false": False,
    "IsSigned == 0": False,
    "not(IsSigned)": False,
    "IsSigned != 1": False,
}


def query(test: str) -> str:
    return f"{TABLE} | where {test} and Signer has 'Contoso'"


@pytest.mark.parametrize("test", sorted(SPELLINGS))
def test_every_spelling_is_a_test_of_sysmon_signed(test: str) -> None:
    result = convert_rule(SourceRule(path="signed.kql", kql=query(test), name="Signed"), Options())
    detection = yaml.safe_load(result.yaml)["detection"]
    (name,) = [name for name, item in detection.items() if isinstance(item, dict) and "Signed" in item]
    negated = f"not {name}" in detection["condition"]
    assert detection[name]["Signed"] is (SPELLINGS[test] != negated)
    assert "IsSigned == " in result.queries["kusto"]
    assert result.queries["eql"].count("code_signature.signed") >= 1
    assert 'signed:"' not in result.queries["eql"]  # a boolean, not the text "1"


@pytest.mark.parametrize("test", sorted(SPELLINGS))
def test_every_executed_target_agrees_with_its_label(test: str) -> None:
    proof = measure(SourceRule(path="signed.kql", kql=query(test)), Options(), now=NOW)
    assert not disagreements(executed(proof))


@pytest.mark.skipif(not kusto_available(), reason="Kusto.Language is not installed")
def test_kusto_language_binds_the_kusto_queries() -> None:
    queries = [
        convert_rule(SourceRule(path="signed.kql", kql=query(test)), Options()).queries["kusto"]
        for test in SPELLINGS
    ]
    errors = kusto_errors(queries)
    assert errors == [[] for _ in queries]


def test_a_bool_column_without_a_sigma_field_is_left_out() -> None:
    result = convert_rule(
        SourceRule(path="trusted.kql", kql=f"{TABLE} | where IsTrusted == 1 and Signer has 'Contoso'"),
        Options(),
    )
    assert "IsTrusted" not in result.yaml
    assert any("IsTrusted" in note and "left out" in note for note in result.notes)
