"""The Defender-to-Sigma mapping: its data is the kusto backend's inverse, and its semantic choices."""

from __future__ import annotations

import re

import pytest
from sigma.pipelines.microsoftxdr.mappings import CATEGORY_TO_TABLE_MAPPINGS
from sigma.rule import SigmaRule

from rmm2sigma import kql
from rmm2sigma.convert import defender_schema
from rmm2sigma.errors import UnsupportedKqlError
from rmm2sigma.kql.lower import lower
from rmm2sigma.mapping import MappedRule, TableSpec, all_specs, map_detection, tables, unmapped_tables
from rmm2sigma.model import And, Fidelity, Match, Not, Predicate
from rmm2sigma.targets import backend


def mapped(query: str, exact: bool = False) -> MappedRule:
    return map_detection(lower(kql.parse(query), defender_schema()), exact=exact, schema=defender_schema())


def kusto_column(category: str | TableSpec, field: str) -> str:
    """The Defender column the kusto target writes for ``field`` in a category (or a mapping entry's
    log source, with the EventID it implies)."""
    spec = category if isinstance(category, TableSpec) else None
    logsource = dict(spec.logsource) if spec else {"product": "windows", "category": category}
    implied = dict(spec.conditions or {}) if spec else {}
    rule = SigmaRule.from_dict(
        {
            "title": "Inverse Mapping Probe",
            "logsource": logsource,
            "detection": {"selection": {**implied, f"{field}|contains": "probe"}, "condition": "selection"},
        }
    )
    query = backend("kusto").convert_rule(rule)[0]
    found = re.search(r"(?:tostring\(parse_json\((\w+)\)\.(\w+)\)|(\w+)) contains \"probe\"", query)
    assert found, query
    json_column, key, column = found.groups()
    return f"{json_column}.{key}" if json_column else column  # a JSON key is the column `C.K`


def source_name(spec: TableSpec) -> str:
    name = spec.logsource.get("category") or spec.logsource["service"]
    return f"{name} {spec.conditions}" if spec.conditions else name


# categories the microsoft_xdr pipeline gives a table (the others have no entry to invert); a
# column Windows spells differently (hex, inside a longer text) is held by its own tests
# (tests/test_process_access_powershell.py)
XDR_CATEGORIES = set(CATEGORY_TO_TABLE_MAPPINGS)
PLAIN_ENTRIES = sorted(
    (
        (spec.name, source_name(spec), column, field.field, spec)
        for spec in all_specs()
        if spec.logsource.get("category") in XDR_CATEGORIES or spec.kusto_table
        for column, field in spec.fields.items()
        if field.part is None and field.values is None and field.spelling is None and field.line is None
    ),
    key=lambda entry: entry[:4],
)


@pytest.mark.parametrize(
    ("table", "source", "column", "field", "spec"),
    PLAIN_ENTRIES,
    ids=[f"{t}-{s}-{c}" for t, s, c, _, _ in PLAIN_ENTRIES],
)
def test_every_plain_entry_is_the_inverse_of_the_kusto_backend(
    table: str, source: str, column: str, field: str, spec: TableSpec
) -> None:
    assert kusto_column(spec, field) == column


def test_file_name_columns_map_to_the_path_field_the_backend_gives_back() -> None:
    assert kusto_column("process_creation", "Image") == "FolderPath"
    assert kusto_column("network_connection", "Image") == "InitiatingProcessFolderPath"


def test_has_widens_to_contains_with_a_note() -> None:
    rule = mapped("DeviceProcessEvents | where ProcessVersionInfoCompanyName has 'NanoSystems'")
    assert rule.detection.predicate == Predicate(
        "Company", Match.CONTAINS, ("NanoSystems",), text="ProcessVersionInfoCompanyName has 'NanoSystems'"
    )
    assert rule.fidelity is Fidelity.WIDENED
    assert any("whole terms" in note for note in rule.notes)


def test_exact_mode_renders_has_as_a_term_bounded_regex() -> None:
    rule = mapped("DeviceNetworkEvents | where RemoteUrl has 'remotepc.com'", exact=True)
    leaf = rule.detection.predicate
    assert isinstance(leaf, Predicate) and leaf.match is Match.REGEX and not leaf.case_sensitive
    not_term = leaf.values[0].split("remotepc", 1)[0].removeprefix("(^|").removesuffix(")")
    assert not_term.startswith("[^0-9A-Za-z") and "À-Ö" in not_term  # Kusto terms: Unicode letters
    assert leaf.values == (rf"(^|{not_term})remotepc\.com($|{not_term})",)
    assert rule.fidelity is Fidelity.EXACT


def test_a_negated_has_is_never_widened_because_that_would_narrow_the_rule() -> None:
    rule = mapped("DeviceProcessEvents | where ProcessCommandLine !has 'update'")
    leaf = rule.detection.predicate
    assert isinstance(leaf, Predicate) and leaf.negated and leaf.match is Match.REGEX
    assert rule.fidelity is Fidelity.EXACT


def test_file_name_equality_is_an_exact_path_suffix() -> None:
    rule = mapped("DeviceProcessEvents | where FileName =~ 'pdq-connect-agent.exe'")
    assert rule.detection.predicate == Predicate(
        "Image", Match.ENDSWITH, ("\\pdq-connect-agent.exe",), text="FileName =~ 'pdq-connect-agent.exe'"
    )
    assert rule.fidelity is Fidelity.EXACT


def test_file_name_prefix_widens_to_a_path_segment_test() -> None:
    rule = mapped("DeviceNetworkEvents | where InitiatingProcessFileName startswith 'fleetdeck'")
    leaf = rule.detection.predicate
    assert isinstance(leaf, Predicate) and (leaf.column, leaf.match, leaf.values) == (
        "Image",
        Match.CONTAINS,
        ("\\fleetdeck",),
    )
    assert rule.fidelity is Fidelity.WIDENED


def test_a_column_without_sigma_field_is_left_out_with_an_approximate_label() -> None:
    rule = mapped(
        "DeviceNetworkEvents | where RemoteUrl has 'anydesk.com' "
        "and InitiatingProcessVersionInfoProductName has 'AnyDesk'"
    )
    leaf = rule.detection.predicate
    assert isinstance(leaf, Predicate) and leaf.column == "DestinationHostname"
    assert rule.fidelity is Fidelity.APPROXIMATE
    assert any("InitiatingProcessVersionInfoProductName has no field" in note for note in rule.notes)


def test_an_unmapped_test_inside_or_removes_the_whole_group_never_narrowing() -> None:
    rule = mapped(
        "DeviceNetworkEvents | where RemoteUrl has 'datto.com' and "
        "(InitiatingProcessVersionInfoCompanyName has 'Datto' "
        "or isempty(InitiatingProcessVersionInfoCompanyName))"
    )
    leaf = rule.detection.predicate
    assert isinstance(leaf, Predicate) and leaf.column == "DestinationHostname"


def test_an_unmapped_test_under_not_is_left_out_too() -> None:
    rule = mapped(
        "DeviceNetworkEvents | where RemoteUrl has 'x.com' "
        "and not(InitiatingProcessVersionInfoCompanyName has 'Y')"
    )
    assert isinstance(rule.detection.predicate, Predicate)


def test_a_query_with_only_unmapped_network_tests_falls_back_to_the_process() -> None:
    rule = mapped(
        "DeviceNetworkEvents | where InitiatingProcessVersionInfoCompanyName has_any ('naverisk', 'NavMK1') "
        "| summarize Count=count() by DeviceId, DeviceName, RemoteUrl"
    )
    assert rule.table.logsource["category"] == "process_creation"
    assert rule.detection.predicate == Predicate(
        "Company",
        Match.CONTAINS,
        ("naverisk", "NavMK1"),
        text="InitiatingProcessVersionInfoCompanyName has_any ('naverisk', 'NavMK1')",
    )
    assert rule.detection.aggregation is not None and rule.detection.aggregation.by == (
        "DeviceId",
        "DeviceName",
    )
    assert rule.fidelity is Fidelity.APPROXIMATE
    assert any("RemoteUrl does not exist in DeviceProcessEvents" in note for note in rule.notes)


def test_the_signer_table_maps_to_image_load_signature_and_says_why() -> None:
    rule = mapped("DeviceFileCertificateInfo | where Signer has 'DWSNET OÜ'")
    assert rule.table.logsource == {"product": "windows", "category": "image_load"}
    assert rule.fidelity is Fidelity.APPROXIMATE
    assert "no Sigma category" in rule.notes[0]


def test_a_join_with_another_query_is_left_out_and_said() -> None:
    rule = mapped(
        "let signed = DeviceFileCertificateInfo | where Signer has 'DWSNET' | distinct SHA1;\n"
        "DeviceNetworkEvents | where RemoteUrl has 'dwservice.net' and InitiatingProcessSHA1 in (signed)"
    )
    assert isinstance(rule.detection.predicate, Predicate)
    assert any("a join" in note for note in rule.notes)


def test_a_datatable_value_list_is_inlined() -> None:
    rule = mapped(
        "let hosts = datatable(URI:string, Tool:string)['a.com', 'x', 'b.com', 'y', 'a.com', 'z'];\n"
        "DeviceNetworkEvents | where RemoteUrl has_any ((hosts | distinct URI))"
    )
    leaf = rule.detection.predicate
    assert isinstance(leaf, Predicate) and leaf.values == ("a.com", "b.com")


def test_structure_survives_mapping() -> None:
    rule = mapped(
        "DeviceProcessEvents | where ProcessVersionInfoCompanyName has_any ('DameWare', 'SolarWinds') "
        "and (ProcessVersionInfoProductName has 'DameWare' "
        "or ProcessVersionInfoFileDescription has 'DameWare') "
        "and not(ProcessCommandLine contains 'update')"
    )
    node = rule.detection.predicate
    assert isinstance(node, And) and len(node.items) == 3 and isinstance(node.items[2], Not)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("DeviceProcessEvents | take 10", "no condition"),
        ("DeviceProcessEvents | where NoSuchColumn has 'x'", "unknown column 'NoSuchColumn'"),
        ("NoSuchTable | where X has 'x'", "unknown table 'NoSuchTable'"),
        ("DeviceInfo | where OSPlatform has 'x'", "has no Sigma log source: it holds snapshots"),
        ("DeviceEvents | where FileName =~ 'x.exe'", "this query has no ActionType test, so it reads them"),
        ("DeviceEvents | where ActionType == 'NamedPipeEvent'", "tests only the ActionType"),
    ],
)
def test_unconvertible_queries_are_refused_with_a_reason(query: str, message: str) -> None:
    with pytest.raises(UnsupportedKqlError, match=message):
        mapped(query)


def test_device_events_kinds_get_their_table_and_action_type_back_in_kusto() -> None:
    rule = mapped(
        "DeviceEvents | where ActionType == 'CreateRemoteThreadApiCall' and FileName =~ 'lsass.exe'"
    )
    assert rule.table.logsource["category"] == "create_remote_thread"
    document = {
        "title": "Remote Thread Probe",
        "logsource": dict(rule.table.logsource),
        "detection": {"selection": {"TargetImage|endswith": "\\lsass.exe"}, "condition": "selection"},
    }
    query = backend("kusto").convert_rule(SigmaRule.from_dict(document))[0]
    assert query.startswith('DeviceEvents\n| where ActionType =~ "CreateRemoteThreadApiCall"')
    assert 'FolderPath endswith "\\\\lsass.exe"' in query


def test_every_defender_table_is_mapped_or_refused_with_its_reason() -> None:
    """Each table of the Defender schema has a Sigma log source or a stated reason it has none."""
    schema = set(defender_schema())
    assert schema <= set(tables()) | set(unmapped_tables())
    assert not set(tables()) & set(unmapped_tables())
    query = kql.parse("let x = 1;\n  DeviceInfo | where OSPlatform == 'Windows10'")
    with pytest.raises(UnsupportedKqlError, match="'DeviceInfo' has no Sigma log source: it holds") as error:
        map_detection(lower(query, defender_schema()))
    assert (error.value.line, error.value.column) == (2, 3)
