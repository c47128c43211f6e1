"""``RemoteIPType == "Public"``: Defender's kind of an address, matched by the address itself."""

from __future__ import annotations

import pytest
import yaml

from rmm2sigma.convert import convert_rule
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.events import ip_kind
from rmm2sigma.verify.proof import measure

NOT_PUBLIC = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16"]


def _convert(query: str) -> tuple[dict[str, object], str, tuple[str, ...]]:
    result = convert_rule(SourceRule(path="case.kql", kql=query), Options())
    assert result.yaml is not None
    return yaml.safe_load(result.yaml)["detection"], result.fidelity_by_target["sigma"], result.notes


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ("DeviceNetworkEvents", "DestinationIp"),
        ("DeviceLogonEvents | where ActionType == 'LogonSuccess'", "IpAddress"),
    ],
)
def test_public_is_the_address_outside_the_networks_defender_never_calls_public(
    table: str, field: str
) -> None:
    detection, label, notes = _convert(f"{table}\n| where RemoteIPType == 'Public' and RemotePort == 3389")
    assert {f"{field}|cidr": NOT_PUBLIC} in detection.values()
    assert {field: ["", None]} in detection.values()
    assert label in ("widened", "approximate")
    assert any("outside the private, loopback and link-local" in note for note in notes), notes


def test_public_is_measured_wider_and_other_kinds_are_left_out() -> None:
    query = (
        "DeviceNetworkEvents\n| where RemoteIPType == 'Public' and InitiatingProcessFileName =~ 'winword.exe'"
    )
    proof = measure(SourceRule(path="case.kql", kql=query), Options())
    assert proof.original > 0 and not proof.problems
    sigma = proof.targets["sigma"]
    assert (sigma.label, sigma.verdict, sigma.agrees) == ("widened", "widened", True)
    detection, label, notes = _convert(
        "DeviceNetworkEvents\n| where RemoteIPType == 'Private' and RemotePort == 22"
    )
    assert label == "approximate" and not any(
        "cidr" in key for s in detection.values() if isinstance(s, dict) for key in s
    )
    assert any("Sigma has no field for the kind of an address" in note for note in notes), notes


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", "Public"),
        ("10.1.2.3", "Private"),
        ("127.0.0.1", "Loopback"),
        ("169.254.1.1", "LinkLocal"),
        ("fe80::1", "LinkLocal"),
        ("fc00::1", "Private"),
        ("::ffff:8.8.8.8", "FourToSixMapping"),
        ("224.0.0.251", "Multicast"),
        ("", ""),
        ("not-an-ip", ""),
    ],
)
def test_generated_rows_get_the_kind_defender_gives_their_address(address: str, kind: str) -> None:
    assert ip_kind(address) == kind
