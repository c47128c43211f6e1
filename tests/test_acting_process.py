"""Tests of the process that acts, matched in the creation of that process.

Sigma's categories have no field for the acting process's hash or version information (Sysmon
writes the hashes of the image an event is about, not of the process doing it). A query on image
loads, registry, file or network events, or DeviceEvents of any kind, whose every test is on that
process, falls back to process_creation with the columns renamed (InitiatingProcessSHA256 ->
SHA256): the rule detects the creation of the process instead of its events, labelled approximate
and noted. A process query testing only its parent does the same for the parent. Each label is
measured over generated events.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

from conftest import disagreements, executed
from rmm2sigma.convert import RuleResult, convert_rule
from rmm2sigma.fidelity import SIGMA
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.proof import measure
from test_device_events import refused, selection

NOW = datetime(2026, 11, 23, 12, 0, 0)
SHA256 = "c45c9bda8db1d470f1fd0dcc346dc449839eb5ce9a948c70369230af0b3ef168"
SHA1 = "e01c1047001206c52c87b8197d772db2a1d3b7b4"

# name -> (query, the rule's detection, the kusto table)
CASES = {
    "image load": (
        f"DeviceImageLoadEvents | where InitiatingProcessSHA256 == '{SHA256}'",
        selection(sha256=SHA256),
        "DeviceProcessEvents",
    ),
    "registry": (
        "DeviceRegistryEvents | where InitiatingProcessVersionInfoCompanyName has 'Evil Corp'",
        selection(**{"Company|contains": "Evil Corp"}),
        "DeviceProcessEvents",
    ),
    "any device event": (
        f"DeviceEvents | where InitiatingProcessSHA256 in ('{SHA256}')",
        selection(sha256=SHA256),
        "DeviceProcessEvents",
    ),
    "file event": (  # after file_event's own fallbacks (hashes, download URLs), which keep nothing
        f"DeviceFileEvents | where InitiatingProcessSHA1 in ('{SHA1}')",
        selection(sha1=SHA1),
        "DeviceProcessEvents",
    ),
    "parent": (
        f"DeviceProcessEvents | where InitiatingProcessSHA1 == '{SHA1}'",
        selection(sha1=SHA1),
        "DeviceProcessEvents",
    ),
    "file event on a device": (  # file_event keeps the device's name only: the creation keeps both
        f"DeviceFileEvents | where DeviceName =~ 'pc-1' and InitiatingProcessSHA1 in ('{SHA1}')",
        selection(Computer="pc-1", sha1=SHA1),
        "DeviceProcessEvents",
    ),
}


def converted(name: str) -> RuleResult:
    query = CASES[name][0]
    return convert_rule(
        SourceRule(path=f"{name.replace(' ', '_')}.kql", kql=query, name=name.title()), Options()
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_acting_process_is_matched_in_its_creation(name: str) -> None:
    result = converted(name)
    document = yaml.safe_load(result.yaml)
    assert document["logsource"] == {"product": "windows", "category": "process_creation"}
    assert document["detection"] == CASES[name][1]
    assert result.fidelity_by_target[SIGMA] == "approximate"
    assert any("creation of" in note and "instead of" in note for note in result.notes)
    assert set(result.queries) == {"kusto", "splunk", "lucene", "esql", "eql"}, result.errors
    assert result.queries["kusto"].startswith(CASES[name][2])


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_executed_target_agrees_with_its_label(name: str) -> None:
    query = CASES[name][0]
    proof = measure(SourceRule(path=f"{name}.kql", kql=query), Options(), now=NOW)
    ran = executed(proof)
    assert not disagreements(ran)


def test_device_events_with_another_test_stay_refused() -> None:
    """Only tests of the acting process say nothing of the kind of event; a file name does."""
    why = refused(f"DeviceEvents | where InitiatingProcessSHA256 == '{SHA256}' or FileName =~ 'a.exe'")
    assert "no ActionType test" in why


def test_a_query_the_category_keeps_a_test_of_stays_in_it() -> None:
    query = f"DeviceImageLoadEvents | where InitiatingProcessSHA256 == '{SHA256}' and FileName =~ 'x.dll'"
    result = convert_rule(SourceRule(path="kept.kql", kql=query, name="Kept"), Options())
    assert yaml.safe_load(result.yaml)["logsource"]["category"] == "image_load"


def test_the_events_own_column_is_not_read_as_the_acting_process_column_of_the_same_name() -> None:
    """A file's SHA1 is not its creator's: in the creation's table it is left out, so this query,
    which no one category holds (the file's hash, or the process's), is refused, never narrowed."""
    why = refused(f"DeviceFileEvents | where SHA1 == '{SHA1}' or InitiatingProcessSHA1 == '{SHA1}'")
    assert "no condition of this query can be expressed" in why
