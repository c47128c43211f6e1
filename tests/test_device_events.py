"""DeviceEvents by ActionType: each kind with a Sigma log source, its fields, its rule, and kusto's way back.

Every case is a small query over one kind of event. Its rule has the kind's log source (a Sysmon
category, the antivirus category, or the Security or Defender log with the kind's EventID), the
fields SigmaHQ's rules use there, the approximate label (a change of data model), and a kusto query
that reads DeviceEvents with the kind's ActionType again. Kinds with no Sigma log source, and a
query with no ActionType test, are refused with a message that says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from rmm2sigma import kql
from rmm2sigma.convert import RuleResult, convert_rule, convert_rules, defender_schema
from rmm2sigma.errors import UnsupportedKqlError
from rmm2sigma.kql.lower import lower
from rmm2sigma.mapping import all_specs, map_detection
from rmm2sigma.model import Match, Predicate
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.targets import backend

WINDOWS_SECURITY = {"product": "windows", "service": "security"}
WINDEFEND = {"product": "windows", "service": "windefend"}


@dataclass(frozen=True)
class Case:
    kind: str  # the ActionType the query selects
    tests: str  # the rest of its `where`, in Defender's columns ("" for the kind alone)
    logsource: dict[str, str]
    detection: dict[str, Any]  # the rule's detection
    kusto: tuple[str, ...]  # what the kusto query tests besides the ActionType
    wider: bool = False  # the log source holds other kinds too: the kusto query names them all
    notes: tuple[str, ...] = field(default=())  # words the rule's notes must say

    @property
    def query(self) -> str:
        where = f"ActionType == '{self.kind}'" + (f" and {self.tests}" if self.tests else "")
        return f"DeviceEvents\n| where Timestamp > ago(1d)\n| where {where}\n| project Timestamp, DeviceName"


def selection(**fields: Any) -> dict[str, Any]:
    return {"selection": fields, "condition": "selection"}


CASES = [
    Case(
        "NamedPipeEvent",
        "InitiatingProcessFileName =~ 'x.exe'",
        {"product": "windows", "category": "pipe_created"},
        selection(**{"Image|endswith": "\\x.exe"}),
        ('InitiatingProcessFolderPath endswith "\\\\x.exe"',),
    ),
    Case(
        "DnsQueryResponse",
        "InitiatingProcessAccountName =~ 'bob'",
        {"product": "windows", "category": "dns_query"},
        selection(User="bob"),
        ('InitiatingProcessAccountName =~ "bob"',),
    ),
    Case(
        "CreateRemoteThreadApiCall",
        "FileName =~ 'lsass.exe'",
        {"product": "windows", "category": "create_remote_thread"},
        selection(**{"TargetImage|endswith": "\\lsass.exe"}),
        ('FolderPath endswith "\\\\lsass.exe"',),
    ),
    Case(
        "OpenProcessApiCall",
        "FileName =~ 'lsass.exe'",
        {"product": "windows", "category": "process_access"},
        selection(**{"TargetImage|endswith": "\\lsass.exe"}),
        ('FolderPath endswith "\\\\lsass.exe"',),
    ),
    Case(
        "DriverLoad",
        "FileName =~ 'evil.sys'",
        {"product": "windows", "category": "driver_load"},
        selection(**{"ImageLoaded|endswith": "\\evil.sys"}),
        ('FolderPath endswith "\\\\evil.sys"',),
    ),
    Case(
        "AmsiScriptContent",
        "AdditionalFields contains 'Invoke-Mimikatz'",
        {"product": "windows", "category": "ps_script"},
        selection(**{"ScriptBlockText|contains": "Invoke-Mimikatz"}),
        ('AdditionalFields contains "Invoke-Mimikatz"',),
    ),
    Case(
        "PowerShellCommand",
        "AdditionalFields contains 'Invoke-Mimikatz'",
        {"product": "windows", "category": "ps_module"},
        selection(**{"Payload|contains": "Invoke-Mimikatz"}),
        ('AdditionalFields contains "Invoke-Mimikatz"',),
    ),
    Case(
        "WmiBindEventFilterToConsumer",
        "InitiatingProcessAccountName =~ 'bob'",
        {"product": "windows", "category": "wmi_event"},
        selection(User="bob"),
        ('InitiatingProcessAccountName =~ "bob"',),
        notes=("filters and consumers",),
    ),
    Case(
        "AntivirusDetection",
        "FileName =~ 'mimikatz.exe' and parse_json(AdditionalFields).ThreatName contains 'Mimikatz'",
        {"category": "antivirus"},
        selection(**{"Filename|endswith": "\\mimikatz.exe", "Signature|contains": "Mimikatz"}),
        (
            'FolderPath endswith "\\\\mimikatz.exe"',
            'tostring(parse_json(AdditionalFields).ThreatName) contains "Mimikatz"',
        ),
        notes=("antivirus category", "Signature is the threat name"),
    ),
    Case(
        "AsrLsassCredentialTheftBlocked",
        "InitiatingProcessFileName =~ 'procdump.exe'",
        WINDEFEND,
        selection(EventID=1121, **{"ProcessName|endswith": "\\procdump.exe"}),
        ('InitiatingProcessFolderPath endswith "\\\\procdump.exe"',),
        wider=True,
        notes=("17 other kinds",),
    ),
    Case(
        "AsrOfficeChildProcessAudited",
        "FileName =~ 'cmd.exe'",
        WINDEFEND,
        selection(EventID=1122, **{"Path|endswith": "\\cmd.exe"}),
        ('FolderPath endswith "\\\\cmd.exe"',),
        wider=True,
    ),
    Case(
        "ControlledFolderAccessViolationBlocked",
        "InitiatingProcessFolderPath startswith @'C:\\Users\\'",
        WINDEFEND,
        selection(EventID=1123, **{"ProcessName|startswith": "C:\\Users\\"}),
        ('InitiatingProcessFolderPath startswith "C:\\\\Users\\\\"',),
    ),
    Case(
        "ControlledFolderAccessViolationAudited",
        "FolderPath contains @'\\Documents\\'",
        WINDEFEND,
        selection(EventID=1124, **{"Path|contains": "\\Documents\\"}),
        ('FolderPath contains "\\\\Documents\\\\"',),
    ),
    Case(
        "ExploitGuardNetworkProtectionBlocked",
        "InitiatingProcessFileName =~ 'powershell.exe'",
        WINDEFEND,
        selection(EventID=1126, **{"ProcessName|endswith": "\\powershell.exe"}),
        ('InitiatingProcessFolderPath endswith "\\\\powershell.exe"',),
    ),
    Case(
        "ExploitGuardNetworkProtectionAudited",
        "InitiatingProcessFolderPath startswith @'C:\\Users\\'",
        WINDEFEND,
        selection(EventID=1125, **{"ProcessName|startswith": "C:\\Users\\"}),
        ('InitiatingProcessFolderPath startswith "C:\\\\Users\\\\"',),
    ),
    Case(
        "UserAccountCreated",
        "AccountName startswith 'adm'",
        WINDOWS_SECURITY,
        selection(EventID=4720, **{"TargetUserName|startswith": "adm"}),
        ('AccountName startswith "adm"',),
    ),
    Case(
        "UserAccountDeleted",
        "AccountName =~ 'backdoor'",
        WINDOWS_SECURITY,
        selection(EventID=4726, TargetUserName="backdoor"),
        ('AccountName =~ "backdoor"',),
    ),
    Case(
        "UserAccountModified",
        "AccountDomain =~ 'CONTOSO'",
        WINDOWS_SECURITY,
        selection(EventID=[4738, 4722, 4725, 4781], TargetDomainName="CONTOSO"),
        ('AccountDomain =~ "CONTOSO"',),
    ),
    Case(
        "UserAccountAddedToLocalGroup",
        "AccountSid =~ 'S-1-5-32-544' and InitiatingProcessAccountName !endswith '$'",
        WINDOWS_SECURITY,
        {
            "selection": {"EventID": 4732, "TargetSid": "S-1-5-32-544"},
            "filter_main_subjectusername": {"SubjectUserName|endswith": "$"},
            "condition": "selection and not filter_main_subjectusername",
        },
        ('AccountSid =~ "S-1-5-32-544"', 'not(InitiatingProcessAccountName endswith "$")'),
        notes=("MemberSid",),
    ),
    Case(
        "UserAccountRemovedFromLocalGroup",
        "AccountName =~ 'Administrators' "
        "and tostring(parse_json(AdditionalFields).MemberSid) =~ 'S-1-5-21-1-500'",
        WINDOWS_SECURITY,
        selection(EventID=4733, TargetUserName="Administrators", MemberSid="S-1-5-21-1-500"),
        (
            'AccountName =~ "Administrators"',
            'tostring(parse_json(AdditionalFields).MemberSid) =~ "S-1-5-21-1-500"',
        ),
    ),
    Case(
        "SecurityGroupCreated",
        "AccountName startswith 'temp'",
        WINDOWS_SECURITY,
        selection(EventID=[4731, 4727, 4754], **{"TargetUserName|startswith": "temp"}),
        ('AccountName startswith "temp"',),
    ),
    Case(
        "SecurityGroupDeleted",
        "InitiatingProcessAccountName =~ 'bob'",
        WINDOWS_SECURITY,
        selection(EventID=[4734, 4730, 4758], SubjectUserName="bob"),
        ('InitiatingProcessAccountName =~ "bob"',),
    ),
    Case(
        "ScheduledTaskCreated",
        "InitiatingProcessAccountName =~ 'bob' "
        "and parse_json(AdditionalFields).TaskContent contains 'powershell'",
        WINDOWS_SECURITY,
        selection(EventID=4698, SubjectUserName="bob", **{"TaskContent|contains": "powershell"}),
        (
            'InitiatingProcessAccountName =~ "bob"',
            'tostring(parse_json(AdditionalFields).TaskContent) contains "powershell"',
        ),
    ),
    Case(
        "ScheduledTaskDeleted",
        "InitiatingProcessAccountDomain =~ 'CONTOSO' "
        "and extractjson('$.TaskName', AdditionalFields) =~ @'\\Evil'",
        WINDOWS_SECURITY,
        selection(EventID=4699, SubjectDomainName="CONTOSO", TaskName="\\Evil"),
        (
            'InitiatingProcessAccountDomain =~ "CONTOSO"',
            'tostring(parse_json(AdditionalFields).TaskName) =~ "\\\\Evil"',
        ),
    ),
    Case(
        "ScheduledTaskUpdated",
        "InitiatingProcessAccountSid =~ 'S-1-5-18' and AdditionalFields.TaskContent contains 'mshta'",
        WINDOWS_SECURITY,
        selection(EventID=4702, SubjectUserSid="S-1-5-18", **{"TaskContentNew|contains": "mshta"}),
        (
            'InitiatingProcessAccountSid =~ "S-1-5-18"',
            'tostring(parse_json(AdditionalFields).TaskContent) contains "mshta"',
        ),
    ),
    Case(
        "ServiceInstalled",
        "InitiatingProcessAccountName =~ 'bob' and parse_json(AdditionalFields).ServiceName =~ 'PSEXESVC'",
        WINDOWS_SECURITY,
        selection(EventID=4697, SubjectUserName="bob", ServiceName="PSEXESVC"),
        (
            'InitiatingProcessAccountName =~ "bob"',
            'tostring(parse_json(AdditionalFields).ServiceName) =~ "PSEXESVC"',
        ),
        notes=("7045",),
    ),
    Case(
        "SecurityLogCleared",
        "InitiatingProcessAccountName !in~ ('system', 'local service')",
        WINDOWS_SECURITY,
        {
            "selection": {"EventID": 1102},
            "filter_main_subjectusername": {"SubjectUserName": ["system", "local service"]},
            "condition": "selection and not filter_main_subjectusername",
        },
        ('not((InitiatingProcessAccountName in~ ("system", "local service")))',),
    ),
    Case(
        "AuditPolicyModification",
        "InitiatingProcessAccountName =~ 'bob'",
        WINDOWS_SECURITY,
        selection(EventID=4719, SubjectUserName="bob"),
        ('InitiatingProcessAccountName =~ "bob"',),
    ),
    Case(
        "FirewallOutboundConnectionBlocked",
        "RemotePort == 445 and InitiatingProcessFileName =~ 'a.exe'",
        WINDOWS_SECURITY,
        selection(EventID=5157, DestPort=445, **{"Application|endswith": "\\a.exe"}),
        ("RemotePort == 445", 'InitiatingProcessFolderPath endswith "\\\\a.exe"'),
        wider=True,
        notes=("Windows Filtering Platform",),
    ),
    Case(
        "PnpDeviceConnected",
        "",
        WINDOWS_SECURITY,
        selection(EventID=6416),
        (),
        notes=("6416",),
    ),
    Case(  # SigmaHQ's win_ldap_recon reads SearchFilter of the LDAP client's event 30
        "LdapSearch",
        "tostring(parse_json(AdditionalFields).SearchFilter) contains '(sAMAccountType=805306368)'",
        {"product": "windows", "service": "ldap"},
        selection(EventID=30, **{"SearchFilter|contains": "(sAMAccountType=805306368)"}),
        ('tostring(parse_json(AdditionalFields).SearchFilter) contains "(sAMAccountType=805306368)"',),
        notes=("Microsoft-Windows-LDAP-Client/Debug",),
    ),
]
BY_KIND = {case.kind: case for case in CASES}


def converted(case: Case) -> RuleResult:
    source = SourceRule(path=f"{case.kind}.kql", kql=case.query, name=f"Defender {case.kind} Events")
    return convert_rule(source, Options())


def refused(query: str) -> str:
    with pytest.raises(UnsupportedKqlError) as error:
        map_detection(lower(kql.parse(query), defender_schema()), schema=defender_schema())
    return str(error.value)


def test_every_device_events_kind_has_a_case() -> None:
    specs = [spec for spec in all_specs() if spec.name == "DeviceEvents" and spec.action_types]
    uncovered = [spec.action_types[0] for spec in specs if not BY_KIND.keys() & set(spec.action_types)]
    assert uncovered == []


def test_an_action_type_belongs_to_one_category_only() -> None:
    for table in {spec.name for spec in all_specs()}:
        kinds = [kind for spec in all_specs() if spec.name == table for kind in spec.action_types]
        assert len(kinds) == len(set(kinds)), table


@pytest.mark.parametrize("case", CASES, ids=[case.kind for case in CASES])
def test_a_kind_of_event_becomes_its_log_source_fields_and_rule(case: Case) -> None:
    result = converted(case)
    document = yaml.safe_load(result.yaml)
    assert document["logsource"] == case.logsource
    assert document["detection"] == case.detection
    assert result.fidelity_by_target["sigma"] == "approximate"  # a change of data model
    assert any(f"`ActionType == '{case.kind}'` selects Sigma's" in note for note in result.notes)
    for words in case.notes:
        assert any(words in note for note in result.notes), (words, result.notes)
    assert not result.errors, result.errors
    assert set(result.queries) == {"kusto", "splunk", "lucene", "esql", "eql"}


@pytest.mark.parametrize("case", CASES, ids=[case.kind for case in CASES])
def test_kusto_reads_device_events_with_the_action_type_again(case: Case) -> None:
    query = converted(case).queries["kusto"]
    head, _, tests = query.partition("\n| where ")
    assert head == "DeviceEvents"
    if case.wider:  # every kind of the log source, as the selection note says
        spec = next(spec for spec in all_specs() if case.kind in spec.action_types)
        kinds = ", ".join(f'"{kind}"' for kind in spec.action_types)
        assert tests.startswith(f"(ActionType in~ ({kinds}))")
    else:
        assert tests.startswith(f'ActionType =~ "{case.kind}"')
    for test in case.kusto:
        assert test in tests, (test, query)
    assert "EventID" not in tests


def test_a_kind_of_the_security_log_alone_is_its_event_id() -> None:
    result = converted(BY_KIND["PnpDeviceConnected"])
    assert yaml.safe_load(result.yaml)["detection"] == selection(EventID=6416)
    assert result.queries["kusto"].startswith('DeviceEvents\n| where ActionType =~ "PnpDeviceConnected"\n')


def test_a_device_detail_in_additional_fields_is_its_security_log_field() -> None:
    """SigmaHQ's win_security_external_device tests ClassName and DeviceDescription of 6416."""
    query = (
        "DeviceEvents\n| where ActionType == 'PnpDeviceConnected'\n"
        "| where tostring(parse_json(AdditionalFields).ClassName) =~ 'DiskDrive'"
    )
    result = convert_rule(SourceRule(path="usb.kql", kql=query, name="USB Disks Connected"), Options())
    assert yaml.safe_load(result.yaml)["detection"] == selection(EventID=6416, ClassName="DiskDrive")
    assert 'tostring(parse_json(AdditionalFields).ClassName) =~ "DiskDrive"' in result.queries["kusto"]


def test_tests_left_out_of_a_security_log_kind_leave_the_kind_and_say_so() -> None:
    mapped = map_detection(
        lower(
            kql.parse(
                "DeviceEvents | where ActionType == 'UserAccountAddedToLocalGroup' "
                "and AdditionalFields has 'S-1-5-21-1'"
            ),
            defender_schema(),
        )
    )
    assert mapped.table.logsource == WINDOWS_SECURITY
    assert mapped.detection.predicate == Predicate("EventID", Match.EQUALS, (4732,))
    assert any("AdditionalFields has no field" in note for note in mapped.notes)


def test_a_table_read_whole_is_no_rule_by_itself() -> None:
    """Every logon (no ActionType test) is not a detection; failed logons, chosen by the query, are."""
    assert "no condition of this query" in refused(
        "let users = IdentityInfo | distinct AccountName;\nDeviceLogonEvents | where AccountName in (users)"
    )
    query = kql.parse("DeviceLogonEvents | where ActionType == 'LogonFailed'")
    mapped = map_detection(lower(query, defender_schema()))
    assert mapped.detection.predicate == Predicate("EventID", Match.EQUALS, (4625,))


def test_a_kind_alone_that_sigmahq_ships_is_refused_naming_its_rule() -> None:
    message = refused("DeviceEvents | where ActionType == 'UserAccountCreated' | project AccountName")
    assert "SigmaHQ's rule win_security_user_creation" in message
    assert "security (EventID 4720) alone" in message


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (
            "DeviceEvents | where ActionType == 'DeviceBootAttestationInfo' and FileName =~ 'x'",
            "Sigma has no log source for the DeviceBootAttestationInfo events of DeviceEvents",
        ),
        (
            "DeviceEvents | where ActionType in ('SmartScreenUrlWarning', 'SmartScreenUserOverride') "
            "and RemoteUrl has 'x.com'",
            "Sigma has no log source for the SmartScreenUrlWarning, SmartScreenUserOverride events",
        ),
        (
            "DeviceEvents | where ActionType in ('NamedPipeEvent', 'DriverLoad') and FileName =~ 'x'",
            "several Sigma log sources (pipe_created: NamedPipeEvent; driver_load: DriverLoad)",
        ),
        (
            "DeviceEvents | where ActionType startswith 'Asr' and FileName =~ 'x'",
            "`ActionType startswith 'Asr'` does not name kinds of DeviceEvents events",
        ),
        (
            "DeviceEvents | where ActionType startswith 'SmartScreen' and RemoteUrl has 'x.com'",
            "`ActionType startswith 'SmartScreen'` holds on no kind of DeviceEvents events that Sigma has",
        ),
        (  # a kind's name is one term: `has` it is `=~` it
            "DeviceEvents | where ActionType has 'ExploitGuardNonMicrosoftSignedBlocked' and FileName =~ 'x'",
            "holds on no kind of DeviceEvents events that Sigma has a log source for",
        ),
        (
            "DeviceEvents | where FileName =~ 'a.exe'",
            "this query has no ActionType test, so it reads them all",
        ),
        (
            "DeviceEvents | where ActionType == 'NamedPipeEvent' or FileName =~ 'x'",
            "this query's ActionType tests do not choose one",
        ),
    ],
)
def test_kinds_without_a_sigma_log_source_are_refused_by_name(query: str, words: str) -> None:
    assert words in refused(query)


def test_the_refusal_points_at_the_action_type_test() -> None:
    with pytest.raises(UnsupportedKqlError) as error:
        query = kql.parse("DeviceEvents\n| where ActionType == 'SmartScreenUrlWarning'")
        map_detection(lower(query, defender_schema()))
    assert (error.value.line, error.value.column) == (2, 9)


def test_a_union_branch_without_an_action_type_is_cut_by_kind_and_the_others_convert() -> None:
    """A hash list over every Device* table: the DeviceEvents branch reads all its kinds, and
    becomes the kinds whose log source has the hash (driver_load; ``test_device_event_kinds``); one
    testing columns no kind's log source has stays refused, naming its branch."""
    hashes = "let hashes = dynamic(['c45c9bda8db1d470f1fd0dcc346dc449839eb5ce9a948c70369230af0b3ef168']);\n"
    query = (
        hashes + "union isfuzzy=true\n"
        "(DeviceEvents | where SHA256 in (hashes)),\n"
        "(DeviceProcessEvents | where SHA256 in (hashes))"
    )
    rules, failures = convert_rules(SourceRule(path="hashes.kql", kql=query), Options())
    categories = [yaml.safe_load(rule.yaml)["logsource"]["category"] for rule in rules]
    assert categories == ["driver_load", "process_creation"] and not failures
    query = (
        hashes + "union isfuzzy=true\n"
        "(DeviceEvents | where SHA256 in (hashes) and RemoteUrl has 'x'),\n"
        "(DeviceProcessEvents | where SHA256 in (hashes))"
    )
    rules, failures = convert_rules(SourceRule(path="hashes.kql", kql=query), Options())
    assert [yaml.safe_load(rule.yaml)["logsource"]["category"] for rule in rules] == ["process_creation"]
    (failure,) = failures
    assert "union branch 1 (DeviceEvents): DeviceEvents holds many kinds of events" in failure
    assert "has no ActionType test" in failure


def test_a_rule_of_several_security_kinds_is_refused_by_the_kusto_pipeline() -> None:
    """SigmaHQ's rules are not ours: one naming two kinds' EventIDs would need two ActionTypes."""
    from sigma.rule import SigmaRule

    from rmm2sigma.targets import convert

    def rule() -> Any:
        return SigmaRule.from_dict(
            {
                "title": "Two Kinds",
                "logsource": WINDOWS_SECURITY,
                "detection": {"selection": {"EventID": [4726, 4733]}, "condition": "selection"},
            }
        )

    result = convert("kusto", rule, {})
    assert result.query is None and "several kinds of DeviceEvents events" in (result.error or "")
    one = SigmaRule.from_dict(
        {
            "title": "Global Group",
            "logsource": WINDOWS_SECURITY,
            "detection": {"selection": {"EventID": 4727}, "condition": "selection"},
        }
    )
    (query,) = backend("kusto").convert_rule(one)
    assert query == 'DeviceEvents\n| where ActionType =~ "SecurityGroupCreated"'


# ---------------------------------------------------------------- SigmaHQ's checks, offline


def write_rules(folder: Path) -> dict[str, Path]:
    """Every case's rule file, by where a SigmaHQ pull request would put it."""
    placed: dict[str, Path] = {}
    for case in CASES:
        result = converted(case)
        logsource = case.logsource
        where = (
            f"rules/category/{logsource['category']}"
            if "product" not in logsource
            else f"rules/windows/{logsource.get('category') or 'builtin/' + logsource['service']}"
        )
        path = folder / where / result.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.yaml, encoding="utf-8")
        placed[f"{where}/{result.filename}"] = path
    return placed


@pytest.mark.usefixtures("offline")
def test_every_case_rule_passes_sigmahq_validators(tmp_path: Path) -> None:
    from rmm2sigma.sigmahq import check_rules

    placed = write_rules(tmp_path / "rules")
    assert len(placed) == len(CASES)
    issues = check_rules([tmp_path / "rules"])
    assert issues == [], issues[0]


def test_a_summary_groups_by_the_field_of_the_rules_own_log_source() -> None:
    """RemoteIP is the Security log's DestAddress in 5157 (Sysmon's DestinationIp elsewhere)."""
    query = (
        "DeviceEvents\n| where ActionType in ('FirewallOutboundConnectionBlocked', "
        "'FirewallInboundConnectionBlocked')\n| summarize Machines=dcount(DeviceId) by RemoteIP"
    )
    result = convert_rule(SourceRule(path="firewall.kql", kql=query, name="Blocked Connections"), Options())
    assert yaml.safe_load(result.yaml)["detection"] == selection(EventID=5157)
    assert result.queries["kusto"].endswith("| summarize Machines=dcount(DeviceId) by RemoteIP")
    assert result.queries["splunk"].endswith("by DestAddress")
    assert result.queries["esql"].endswith("by destination.ip")
