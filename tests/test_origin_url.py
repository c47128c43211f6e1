"""Where a file was downloaded from, matched in the Zone.Identifier stream Sysmon logs (create_stream_hash).

Defender's FileOriginUrl and FileOriginReferrerUrl come from a downloaded file's Mark of the Web:
the Zone.Identifier stream Windows writes beside it, which Sysmon's event 15 logs with the stream's
name (the file's path and ``:Zone.Identifier``) and its Contents (``ReferrerUrl=...  HostUrl=...``).
A DeviceFileEvents query that file_event keeps nothing of falls back to that category when it keeps
more of the query than file_executable_detected (the hashes' fallback): approximate, noted. A URL's
``startswith`` and emptiness are the same tests on its line; ``==``, ``contains`` and term tests
widen to the whole Contents (and are left out under a negation). kusto reads DeviceFileEvents and
the original columns back. Every label is measured over generated events, whose stream carries the
tested values on both lines.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sigma.exceptions import SigmaTransformationError
from sigma.rule import SigmaRule

from conftest import Verified, assert_valid_kusto, disagreements, executed, sigmahq_issues
from rmm2sigma import kql
from rmm2sigma.convert import RuleResult, convert_rule, defender_schema
from rmm2sigma.errors import UnsupportedKqlError
from rmm2sigma.kql.lower import lower
from rmm2sigma.mapping import map_detection, tables, with_line
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.targets import backend
from rmm2sigma.verify.engines import sigma_rows
from rmm2sigma.verify.events import generate
from rmm2sigma.verify.proof import NOT_EXECUTED, measure
from test_device_events import refused, selection
from test_file_hashes import falls_back, reads_back

NOW = datetime(2026, 11, 23, 12, 0, 0)
STREAM = {"product": "windows", "category": "create_stream_hash"}
DROPBOX = "https://dl.dropboxusercontent.com/"
SHA256 = "4f1d1a1f5c5a3b7e0a0d4b6a2c1e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f"

# name -> (the query's tests, the rule's detection, what the kusto query tests, kusto's label)
CASES: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "linked from another site": (
        f"FileOriginUrl startswith '{DROPBOX}'\n"
        "    and isnotempty(FileOriginReferrerUrl)\n"
        "    and FileOriginReferrerUrl !startswith 'https://www.dropbox.com/'",
        {
            "selection": {"Contents|contains": f"HostUrl={DROPBOX}"},
            "selection_contents": {"Contents|contains": "ReferrerUrl="},
            "filter_main_contents": {"Contents|contains": "ReferrerUrl=https://www.dropbox.com/"},
            "condition": "selection and selection_contents and not filter_main_contents",
        },
        f'FileOriginUrl startswith "{DROPBOX}" and isnotempty(FileOriginReferrerUrl) and '
        '(not(FileOriginReferrerUrl startswith "https://www.dropbox.com/"))',
        "exact",
    ),
    "any download": (
        "isnotempty(FileOriginUrl)",
        selection(**{"Contents|contains": "HostUrl="}),
        "isnotempty(FileOriginUrl)",
        "exact",
    ),
    "no referrer": (
        "isempty(FileOriginReferrerUrl) and FileOriginUrl startswith_cs 'http://'",
        {
            "selection": {"Contents|contains|cased": "HostUrl=http://"},
            "filter_main_contents": {"Contents|contains": "ReferrerUrl="},
            "condition": "selection and not filter_main_contents",
        },
        'FileOriginUrl startswith_cs "http://" and (not(isnotempty(FileOriginReferrerUrl)))',
        "exact",
    ),
    "url or file": (  # the stream's name is the file's path and :Zone.Identifier
        "FileOriginUrl startswith 'https://files.example/' or FileName =~ 'invoice.js'\n"
        "    or FolderPath startswith @'C:\\Users\\Public\\'",
        {
            "selection_contents": {"Contents|contains": "HostUrl=https://files.example/"},
            "selection_targetfilename": {"TargetFilename|endswith": "\\invoice.js:Zone.Identifier"},
            "selection_targetfilename_2": {"TargetFilename|startswith": "C:\\Users\\Public\\"},
            "condition": "1 of selection_*",
        },
        'FileOriginUrl startswith "https://files.example/" or FolderPath endswith "\\\\invoice.js" or '
        'FolderPath startswith "C:\\\\Users\\\\Public\\\\"',
        "exact",
    ),
    "url equals": (  # the HostUrl line could go on: wider
        "FileOriginUrl == 'https://files.example/a.exe'",
        selection(**{"Contents|contains|cased": "HostUrl=https://files.example/a.exe"}),
        'FileOriginUrl startswith_cs "https://files.example/a.exe"',
        "widened",
    ),
    "url contains": (  # only the other line holding it shows the widening: the generator writes it there
        "FileOriginUrl contains '/payload/'",
        selection(**{"Contents|contains": "/payload/"}),
        'FileOriginReferrerUrl contains "/payload/" or FileOriginUrl contains "/payload/"',
        "widened",
    ),
    "url has any": (  # the other line holds them too: wider
        "FileOriginUrl has_any ('transfer.sh', 'anonfiles.com')",
        selection(**{"Contents|contains": ["transfer.sh", "anonfiles.com"]}),
        '(FileOriginReferrerUrl contains "transfer.sh" or FileOriginUrl contains "transfer.sh") or '
        '(FileOriginReferrerUrl contains "anonfiles.com" or FileOriginUrl contains "anonfiles.com")',
        "widened",
    ),
    "negated contains": (  # would narrow on the whole Contents: left out
        "isnotempty(FileOriginUrl) and FileOriginUrl !contains 'microsoft.com'",
        selection(**{"Contents|contains": "HostUrl="}),
        "isnotempty(FileOriginUrl)",
        "widened",
    ),
}
EXACT_CASES = sorted(name for name, case in CASES.items() if case[3] == "exact")


def source(name: str) -> SourceRule:
    query = f"DeviceFileEvents\n| where {CASES[name][0]}"
    return SourceRule(path=f"{name.replace(' ', '_')}.kql", kql=query, name=f"Download {name}")


def converted(name: str, options: Options | None = None) -> RuleResult:
    return convert_rule(source(name), options or Options())


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_download_url_becomes_a_zone_identifier_stream_rule_labelled_approximate(name: str) -> None:
    event = "create_stream_hash (Sysmon event 15)"
    falls_back(converted(name), STREAM, CASES[name][1], event, "create_stream_hash_")


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_target_converts_and_kusto_gives_the_original_columns_back(name: str) -> None:
    reads_back(converted(name), CASES[name][2], CASES[name][3], 15)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_executed_target_agrees_with_its_label(name: str) -> None:
    proof = measure(source(name), Options(), now=NOW)
    ran = executed(proof)
    assert ran["kusto"].verdict == ran["kusto"].label == CASES[name][3]
    assert not disagreements(ran)


@pytest.mark.parametrize("name", EXACT_CASES)
def test_exact_mode_keeps_the_tests_that_are_the_same(name: str) -> None:
    proof = measure(source(name), Options(exact=True), now=NOW)
    assert proof.error is None and proof.original > 0
    assert proof.targets["kusto"].verdict == "exact" and proof.targets["kusto"].agrees
    assert all(r.agrees for r in proof.targets.values() if r.verdict != NOT_EXECUTED)


def test_exact_mode_refuses_a_test_only_the_whole_contents_can_hold() -> None:
    detection = lower(kql.parse(source("url equals").kql), defender_schema())
    with pytest.raises(UnsupportedKqlError, match="no condition of this query can be expressed"):
        map_detection(detection, exact=True, schema=defender_schema())


def test_the_stream_of_a_generated_row_is_what_sysmon_writes() -> None:
    """Sysmon writes the stream's lines, in Windows' order, two spaces apart (SigmaHQ's rules read
    ``[ZoneTransfer]  ZoneId=3``); a column with no value writes no line, a path gets the suffix."""
    spec = tables()["DeviceFileEvents"].fallbacks[1].category
    assert spec is not None
    row = {
        "__id": 1,
        "FolderPath": "C:\\Users\\a\\Downloads\\x.exe",
        "FileOriginUrl": "https://h.example/x.exe",
        "FileOriginReferrerUrl": "https://r.example/",
    }
    (event,) = sigma_rows([row], spec)
    assert event["TargetFilename"] == "C:\\Users\\a\\Downloads\\x.exe:Zone.Identifier"
    assert event["Contents"] == "ReferrerUrl=https://r.example/  HostUrl=https://h.example/x.exe"
    (bare,) = sigma_rows([{"__id": 2, "FileOriginUrl": "", "FolderPath": ""}], spec)
    assert bare["Contents"] == "" and bare["TargetFilename"] == ""
    assert with_line("[ZoneTransfer]  ZoneId=3", "HostUrl", None) == "[ZoneTransfer]  ZoneId=3"


def test_the_generator_writes_a_tested_url_on_the_other_line_too() -> None:
    """A test of the whole Contents finds a value on either line: rows with the tested value in the
    referrer alone are what tell it from the original's test of FileOriginUrl."""
    detection = lower(kql.parse(source("url contains").kql), defender_schema())
    rows = generate(detection, defender_schema(), now=NOW)
    assert any("/payload/" in (row.get("FileOriginReferrerUrl") or "") for row in rows)
    assert any(
        "/payload/" in (row.get("FileOriginReferrerUrl") or "")
        and "/payload/" not in (row.get("FileOriginUrl") or "")
        for row in rows
    )


@pytest.mark.parametrize(
    ("contents", "kusto"),
    [
        ("HostUrl=https://a.example/", 'FileOriginUrl startswith "https://a.example/"'),
        ("ReferrerUrl=https://a.example/", 'FileOriginReferrerUrl startswith "https://a.example/"'),
        ("HostUrl=", "isnotempty(FileOriginUrl)"),
        ("evil", '(FileOriginReferrerUrl contains "evil" or FileOriginUrl contains "evil")'),
        ("ZoneId=3", '(FileOriginReferrerUrl contains "ZoneId=3" or FileOriginUrl contains "ZoneId=3")'),
    ],
)
def test_kusto_reads_a_stream_rule_of_sigmahq_s_kind_from_the_url_columns(contents: str, kusto: str) -> None:
    """Any create_stream_hash rule's Contents test, not only ours, goes back to the URL columns."""
    rule = SigmaRule.from_dict(
        {
            "title": "Stream Probe",
            "logsource": STREAM,
            "detection": {
                "selection": {
                    "Contents|contains": contents,
                    "TargetFilename|endswith": ".exe:Zone.Identifier",
                },
                "condition": "selection",
            },
        }
    )
    query = backend("kusto").convert_rule(rule)[0]
    assert query == f'DeviceFileEvents\n| where {kusto} and FolderPath endswith ".exe"'


@pytest.mark.parametrize(
    "test", [{"Contents|startswith": "[ZoneTransfer]  ZoneId=3"}, {"Contents|re": "://[0-9]"}]
)
def test_kusto_refuses_a_test_of_the_whole_stream_text(test: dict[str, str]) -> None:
    rule = SigmaRule.from_dict(
        {
            "title": "Stream Probe",
            "logsource": STREAM,
            "detection": {"selection": test, "condition": "selection"},
        }
    )
    with pytest.raises(SigmaTransformationError, match="only a substring test of Contents"):
        backend("kusto").convert_rule(rule)


def test_the_fallback_that_keeps_more_of_the_query_is_chosen() -> None:
    """Hashes and URLs: file_executable_detected keeps the hash, create_stream_hash the URLs; the
    one that leaves out fewer tests wins, the first (the hashes') of equals."""
    both_urls = (
        f"DeviceFileEvents | where SHA256 == '{SHA256}' and FileOriginUrl startswith 'https://a.example/'"
        " and FileOriginReferrerUrl startswith 'https://b.example/'"
    )
    result = convert_rule(SourceRule(path="both.kql", kql=both_urls, name="Both"), Options())
    assert yaml.safe_load(result.yaml)["logsource"] == STREAM
    assert any("SHA256 has no field in Sigma's create_stream_hash category" in n for n in result.notes)
    one_url = (
        f"DeviceFileEvents | where SHA256 == '{SHA256}' and FileOriginUrl startswith 'https://a.example/'"
    )
    result = convert_rule(SourceRule(path="one.kql", kql=one_url, name="One"), Options())
    assert yaml.safe_load(result.yaml)["logsource"]["category"] == "file_executable_detected"


def test_a_path_test_that_reaches_into_the_suffix_is_left_out() -> None:
    """``contains 'Temp'`` carries to the stream's name; ``contains 'Zone.Id'`` would also match
    the suffix of every stream, so it is left out, and with it the OR: nothing is left."""
    query = (
        "DeviceFileEvents | where FileOriginUrl startswith 'https://a.example/' or FolderPath contains '{}'"
    )
    result = convert_rule(SourceRule(path="temp.kql", kql=query.format("Temp"), name="Temp"), Options())
    assert yaml.safe_load(result.yaml)["detection"]["selection_targetfilename"] == {
        "TargetFilename|contains": "Temp"
    }
    assert "no condition of this query can be expressed" in refused(query.format("Zone.Id"))


def test_a_query_that_keeps_a_file_event_test_stays_a_file_event() -> None:
    query = (
        "DeviceFileEvents | where FileOriginUrl startswith 'https://a.example/' and FileName endswith '.exe'"
    )
    result = convert_rule(SourceRule(path="kept.kql", kql=query, name="Kept"), Options())
    assert yaml.safe_load(result.yaml)["logsource"]["category"] == "file_event"
    assert any("FileOriginUrl has no field in Sigma's file_event category" in note for note in result.notes)


def test_verify_proves_the_rule_end_to_end(convert_and_verify: Callable[..., Verified]) -> None:
    done = convert_and_verify("dropbox.kql", source("linked from another site").kql, "kusto,eql")
    (rule,) = done.proofs
    assert not rule["error"] and not rule["report_problems"] and rule["original"] > 0
    assert rule["targets"]["kusto"]["verdict"] == "exact"


@pytest.mark.usefixtures("offline")
def test_every_rule_passes_sigmahq_validators(tmp_path: Path) -> None:
    rules = {name: converted(name) for name in CASES}
    assert len({rule.filename for rule in rules.values()}) == len(CASES)
    issues = sigmahq_issues(tmp_path / "rules", rules)
    assert issues == [], issues[0]


def test_the_kusto_queries_are_valid_for_kusto_language() -> None:
    assert_valid_kusto([converted(name).queries["kusto"] for name in sorted(CASES)])
