"""Tests of Defender for Identity's DNS queries (IdentityQueryEvents, ActionType "DNS query").

Defender for Identity reads the queries clients send to domain controllers from their traffic. Its
DNS queries are what a DNS log holds (Sigma's ``dns`` category, ``query``), so such a query becomes
a dns rule, labelled approximate with a note; kusto gives back the table, the ActionType and the
column. Its LDAP and SAMR queries have no Sigma log source and stay refused, naming the kind.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

from conftest import disagreements, executed
from rmm2sigma.convert import convert_rule
from rmm2sigma.errors import Rmm2SigmaError
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.kusto_language import kusto_available, validate_kql
from rmm2sigma.verify.proof import measure

NOW = datetime(2026, 12, 2, 12, 0, 0)
DNS = (
    'IdentityQueryEvents | where Timestamp > ago(1d) | where ActionType == "DNS query" '
    '| where QueryTarget has_any ("oauth", "api") and QueryTarget endswith ".example.com"'
)


def test_a_dns_query_is_a_dns_rule() -> None:
    result = convert_rule(SourceRule(path="dns.kql", kql=DNS, name="Identity DNS"), Options())
    document = yaml.safe_load(result.yaml)
    assert document["logsource"] == {"category": "dns"}
    assert result.filename.startswith("net_dns_")
    fields = {
        key.split("|")[0] for item in document["detection"].values() if isinstance(item, dict) for key in item
    }
    assert fields == {"query"}
    assert result.fidelity_by_target["sigma"] == "approximate"
    assert any("domain controllers' traffic" in note for note in result.notes)
    kusto = result.queries["kusto"]
    assert kusto.startswith("IdentityQueryEvents") and 'ActionType =~ "DNS query"' in kusto
    assert "QueryTarget" in kusto


def test_every_executed_target_agrees_with_its_label() -> None:
    proof = measure(SourceRule(path="dns.kql", kql=DNS), Options(), now=NOW)
    assert not disagreements(executed(proof))


@pytest.mark.skipif(not kusto_available(), reason="Kusto.Language is not installed")
def test_kusto_language_binds_the_kusto_query() -> None:
    (found,) = validate_kql([convert_rule(SourceRule(path="dns.kql", kql=DNS), Options()).queries["kusto"]])
    assert [d.message for d in found if d.is_error] == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ('IdentityQueryEvents | where ActionType == "LDAP query" and Query has "admin"', "LDAP query"),
        ('IdentityQueryEvents | where QueryTarget has "admin"', "no ActionType test"),
    ],
)
def test_other_kinds_stay_refused_with_the_reason(query: str, reason: str) -> None:
    with pytest.raises(Rmm2SigmaError) as refused:
        convert_rule(SourceRule(path="other.kql", kql=query), Options())
    assert reason in str(refused.value)
