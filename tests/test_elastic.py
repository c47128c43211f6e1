"""Lucene and ES|QL queries select what the Sigma rule selects, case-insensitively (elastic.py).

Lucene's regex syntax for what we emit (literals, ``[xX]`` classes, negated classes of literal
ranges, ``.*``, ``( )?``, backslash escapes) matches a value iff Python's ``re.fullmatch`` with
``re.DOTALL`` does, so a small evaluator over luqum's parse tree runs the lucene query on events
keyed by ECS field names. A ``.caseless`` field holds the lowercased value, as its normalizer does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from luqum import tree
from luqum.parser import parser

from rmm2sigma import transpile
from rmm2sigma.mapping import _term_pattern
from rmm2sigma.targets.elastic import fold, string_regex, term_regex

Event = dict[str, Any]

QUERY = (
    "DeviceNetworkEvents | where (RemoteUrl has 'anydesk.com' or RemoteUrl endswith '.playanext.com'"
    " or InitiatingProcessFileName =~ 'AnyDesk.exe') and not(InitiatingProcessCommandLine contains"
    " '--Update') and RemotePort > 400"
)
HOSTS = [
    "AnyDesk.COM",
    "xanydesk.comx",
    "anydesk.com.evil",
    "relay.AnyDesk.com",
    "example.org",
    "api.PlayAnext.com",
]
PATHS = [r"C:\Program Files\AnyDesk\ANYDESK.EXE", r"C:\Tools\notanydesk.exe", r"C:\Windows\svchost.exe"]
COMMANDS = ["anydesk.exe --UPDATE", "anydesk.exe --service", None]


def _event(host: str, path: str, command: str | None, port: int = 443) -> Event:
    event: Event = {
        "destination.domain": host,
        "process.executable.caseless": path.lower(),
        "destination.port": port,
        "_path": path,
    }
    if command is not None:
        event["winlog.event_data.CommandLine"] = command
    return event


EVENTS = [
    _event(host, path, command, port)
    for host in HOSTS
    for path in PATHS
    for command in COMMANDS
    for port in (443, 80)
]


def _sigma(exact: bool) -> Callable[[Event], bool]:
    """The rule in Sigma's semantics: case-insensitive contains/endswith/equals, re.search regexes."""

    def has(value: str) -> bool:
        if not exact:
            return "anydesk.com" in value.lower()
        return re.search(_term_pattern("anydesk.com"), value, re.IGNORECASE) is not None

    def selects(event: Event) -> bool:
        host, path = event["destination.domain"], event["_path"]
        command = event.get("winlog.event_data.CommandLine")
        return (
            event["destination.port"] > 400
            and (
                has(host) or host.lower().endswith(".playanext.com") or path.lower().endswith("\\anydesk.exe")
            )
            and not (command is not None and "--update" in command.lower())
        )

    return selects


def _wildcard(word: str) -> re.Pattern[str]:
    out, index = [], 0
    while index < len(word):
        char = word[index]
        if char == "\\":
            out.append(re.escape(word[index + 1]))
            index += 2
            continue
        out.append({"*": ".*", "?": "."}.get(char, re.escape(char)))
        index += 1
    return re.compile("".join(out), re.DOTALL)


def evaluate(node: tree.Item, event: Event, field: str | None = None) -> bool:
    """A luqum tree over one event: what Elasticsearch's query_string would select."""
    if isinstance(node, tree.SearchField):
        return evaluate(node.expr, event, node.name)
    if isinstance(node, tree.Group | tree.FieldGroup):
        return evaluate(node.expr, event, field)
    if isinstance(node, tree.AndOperation):
        return all(evaluate(child, event, field) for child in node.children)
    if isinstance(node, tree.OrOperation):
        return any(evaluate(child, event, field) for child in node.children)
    if isinstance(node, tree.Not | tree.Prohibit):
        return not evaluate(node.a, event, field)
    assert field is not None, node
    value = event.get(field)
    if value is None:
        return False
    if isinstance(node, tree.Regex):
        return re.fullmatch(node.value[1:-1].replace("\\/", "/"), str(value), re.DOTALL) is not None
    if isinstance(node, tree.From):
        bound = float(node.a.value)
        return bool(value >= bound if node.include else value > bound)
    if isinstance(node, tree.To):
        bound = float(node.a.value)
        return bool(value <= bound if node.include else value < bound)
    if isinstance(node, tree.Phrase):
        return bool(str(value) == node.value[1:-1])
    if isinstance(node, tree.Word):
        return _wildcard(node.value).fullmatch(str(value)) is not None
    raise AssertionError(f"no evaluator for {node!r}")


def _lucene_regexes(query: str) -> list[str]:
    return [
        node.value[1:-1].replace("\\/", "/")
        for node in _walk(parser.parse(query))
        if isinstance(node, tree.Regex)
    ]


def _walk(node: tree.Item) -> list[tree.Item]:
    return [node, *(item for child in node.children for item in _walk(child))]


def _esql_regexes(query: str) -> list[str]:
    literals = re.findall(r'rlike "((?:[^"\\]|\\.)*)"', query)
    return [re.sub(r"\\(.)", r"\1", literal) for literal in literals]


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
def test_lucene_selects_what_the_sigma_rule_selects(exact: bool) -> None:
    query = transpile(QUERY, "lucene", exact=exact)
    parsed = parser.parse(query)
    expected = _sigma(exact)
    selected = [event for event in EVENTS if evaluate(parsed, event)]
    assert selected == [event for event in EVENTS if expected(event)]
    hosts = {event["destination.domain"] for event in selected if event["_path"] == PATHS[2]}
    assert {"AnyDesk.COM", "relay.AnyDesk.com", "anydesk.com.evil", "api.PlayAnext.com"} <= hosts
    assert ("xanydesk.comx" in hosts) is not exact
    assert not any(
        evaluate(parsed, e) for e in EVENTS if "UPDATE" in e.get("winlog.event_data.CommandLine", "")
    )
    assert any(evaluate(parsed, e) for e in EVENTS if "winlog.event_data.CommandLine" not in e)


def test_the_default_queries_without_the_rewrite_missed_other_spellings() -> None:
    """The wildcard pySigma emitted before, as Elasticsearch reads it: case-sensitive."""
    before = parser.parse("destination.domain:*anydesk.com*")
    assert not evaluate(before, _event("AnyDesk.COM", PATHS[2], None))
    after = parser.parse(transpile("DeviceNetworkEvents | where RemoteUrl has 'anydesk.com'", "lucene"))
    assert evaluate(after, _event("AnyDesk.COM", PATHS[2], None))


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
def test_esql_rlike_patterns_are_the_lucene_regexes(exact: bool) -> None:
    lucene = _lucene_regexes(transpile(QUERY, "lucene", exact=exact))
    esql = _esql_regexes(transpile(QUERY, "esql", exact=exact))
    assert len(lucene) == 4
    assert esql == lucene
    assert "like " not in transpile(QUERY, "esql", exact=exact).replace("rlike", "")


def test_eql_keeps_its_case_insensitive_operators() -> None:
    eql = transpile(QUERY, "eql")
    assert 'destination.domain:"*anydesk.com*"' in eql and "regex" not in eql


def test_fold_escapes_lucene_reserved_characters_and_folds_letters() -> None:
    assert fold("ab.c") == r"[aA][bB]\.[cC]"
    assert fold('1-2_ #@&<>~"') == r"1-2_ \#\@\&\<\>\~\""
    assert fold("Σß") == "[σΣ]ß"
    assert fold("aB", ignore_case=False) == "aB"
    for text in ["ab.c", 'x?+*|{}[]()"\\#@&<>~^$y', "ÄÖü"]:
        pattern = re.compile(fold(text), re.DOTALL)
        assert pattern.fullmatch(text) and pattern.fullmatch(text.swapcase())


def test_string_regex_shapes() -> None:
    from sigma.types import SigmaString

    assert string_regex(SigmaString("*ab.c*").s) == r".*[aA][bB]\.[cC].*"
    assert string_regex(SigmaString("x*").s) == "[xX].*"
    assert string_regex(SigmaString("*x").s) == ".*[xX]"
    assert string_regex(SigmaString("a?b").s) == "[aA].[bB]"


NEEDLES = ["anydesk.com", "AnyDesk", ".exe", "a+b", "x$y", "é"]
SAMPLES = [
    "",
    "anydesk.com",
    "ANYDESK.COMX",
    "x.anydesk.com/y",
    "path\\AnyDesk\\x.exe",
    "C:\\AnyDesk-1.exe",
    "C:\\AnyDesk\\sub\\app.exe",
    "a+b",
    "xa+by",
    "[x$y]",
    "line\nanydesk.com\nnext",
    "café",
    "cafée",
]


@pytest.mark.parametrize("needle", NEEDLES)
@pytest.mark.parametrize("tail", ["", r"[^\\]*$"], ids=["term", "file name"])
@pytest.mark.parametrize("ignore_case", [True, False], ids=["i", "cased"])
def test_term_regexes_mean_the_same_as_whole_value_regexes(needle: str, tail: str, ignore_case: bool) -> None:
    original = _term_pattern(needle, tail=tail)
    lucene = term_regex(original, ignore_case)
    assert lucene is not None and "^" not in lucene.replace("[^", "") and "$" not in lucene.replace("\\$", "")
    flags = re.IGNORECASE if ignore_case else 0
    for sample in [*SAMPLES, needle, needle.upper(), f" {needle} ", f"x{needle}\\y"]:
        assert (re.search(original, sample, flags) is not None) == (
            re.fullmatch(lucene, sample, re.DOTALL) is not None
        ), (needle, tail, sample)


def test_user_regexes_are_translated_not_left_alone() -> None:
    assert term_regex("^anydesk", True) is None
    assert term_regex("any.*desk", True) is None
    assert term_regex("", True) is None
    kql = "DeviceProcessEvents | where ProcessCommandLine matches regex @'any.*desk'"
    assert transpile(kql, "lucene") == "process.command_line:/.*any[^\n]*desk.*/"


# RE2 patterns users write (KQL `matches regex`), and strings that tell their constructs apart
USER_PATTERNS = [
    r"(?i)-enc\s+[A-Za-z0-9+/=]{5,}",
    r"-enc(?i)\s+x\d{2}|foo",
    r"^cmd\.exe /c .*$",
    r"^[a-zA-Z]:\\(?:Temp|Windows)(?:\\|$)",
    r"x(a|b$|$)",
    r"^powershell|\.ps1$",
    r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
    r"[^\w\s]{3}",
    r"\S+@\S+\.com",
    r"(?i)(mimikatz|procdump)(\.exe)?",
    r"a.c",
    r"(?s)a.c",
    r"x[\D]y|\Wz\W",
    r"[a-f]{4}-[^a-f]",
    r"(ab)+c?d*",
    r"a{2,}b{0,1}",
    r"\\Temp\\[^\\]+\.exe$",
    r"#@&<>~\\\x22",
    r"\s+([A-Za-z0-9+/]{4}\S+$)",  # an anchor ending the last group ends the pattern
    r"(^cmd)\.exe",
    r"((ab|c)$)",
]
TEXTS = [
    "",
    "-enc ABCDEFGH",
    "-ENC\tabcde=",
    "-enc\nAbc",
    "x -Enc  X12 y",
    "-enc x1",
    "a FOO b",
    "cmd.exe /c whoami",
    "xcmd.exe /c whoami",
    "cmd.exe /c who\nami",
    "powershell -nop",
    "run.ps1",
    "run.ps1 x",
    "10.0.0.1",
    "ip 192.168.10.200!",
    "1.2.3",
    "a!?#b",
    "user@host.com",
    "a @b.com",
    "MimiKatz.EXE",
    "procdump",
    "abc",
    "a\nc",
    "xAy",
    "x5y",
    " z!",
    "abcf-g",
    "abcd-a",
    "ababcdd",
    "aab",
    "ab",
    "C:\\Temp\\x.exe",
    "C:\\Temp\\sub\\x.exe",
    '#@&<>~\\"',
]


@pytest.mark.parametrize("pattern", USER_PATTERNS)
def test_user_regexes_mean_the_same_as_their_lucene_translation(pattern: str) -> None:
    """re.search with RE2's ASCII classes (the original) vs whole-value matching (Lucene)."""
    from rmm2sigma.regex import lucene_regex, samples, scoped_flags

    lucene = lucene_regex(pattern)
    assert "(?" not in lucene and "\\s" not in lucene and "\\d" not in lucene
    original = re.compile(scoped_flags(pattern), re.ASCII)
    for text in [*TEXTS, *samples(pattern)]:
        assert (original.search(text) is not None) == (re.fullmatch(lucene, text, re.DOTALL) is not None), (
            pattern,
            lucene,
            text,
        )


def test_the_issue_regex_selects_in_lucene_what_sigma_selects() -> None:
    kql = r'DeviceProcessEvents | where ProcessCommandLine matches regex @"(?i)-enc\s+[A-Za-z0-9+/=]{50,}"'
    parsed = parser.parse(transpile(kql, "lucene"))
    long = "A" * 60
    for command, expected in [
        (f"powershell -EncodedCommand {long}", False),
        (f"powershell -ENC {long}", True),
        (f"powershell -enc\t{long}==", True),
        (f"powershell -enc {long[:40]}", False),
    ]:
        assert evaluate(parsed, {"process.command_line": command}) is expected, command


@pytest.mark.parametrize("pattern", [r"a(?=b)", r"(a)\1", r"(?m)^x$", r"a^b", r"(?i)x(?-i:A|$)"])
def test_regexes_with_no_lucene_equivalent_are_refused_with_the_reason(pattern: str) -> None:
    from rmm2sigma import Options, convert_input

    source = f"DeviceProcessEvents | where ProcessCommandLine matches regex @'{pattern}'"
    result = convert_input("rule.kql", Options(), data=source.encode())
    assert result.status == "partial"
    (rule,) = result.rules
    assert set(rule.errors) == {"lucene", "esql", "eql"}
    assert all("Lucene" in error for error in rule.errors.values())
    assert {"kusto", "splunk"} <= set(rule.queries)


@pytest.mark.parametrize("pattern", [r"\bcmd\b", r"(?i)\bwevtutil\b.*\bcl\b", r"\bnet\s+user\b"])
def test_word_boundaries_are_left_out_of_lucene_regexes_widening(pattern: str) -> None:
    """Lucene has no word boundary: left out, the regex matches a superset of the values, so a
    positive test is widened (noted, and measured so by the proof); the strict translation refuses."""
    from rmm2sigma import Options, convert_input
    from rmm2sigma.regex import NoTranslation, lucene_regex, samples
    from rmm2sigma.sources import SourceRule
    from rmm2sigma.verify.proof import measure

    with pytest.raises(NoTranslation):
        lucene_regex(pattern)
    widened = re.compile(lucene_regex(pattern, widen=True), re.DOTALL)
    matched = [text for text in samples(pattern, count=6) if re.search(pattern, text)]
    assert matched and all(widened.fullmatch(text) for text in matched)
    source = f"DeviceProcessEvents | where ProcessCommandLine matches regex @'{pattern}'"
    result = convert_input("rule.kql", Options(), data=source.encode())
    assert result.status == "converted"
    (rule,) = result.rules
    assert {rule.fidelity_by_target[t] for t in ("lucene", "esql", "eql")} == {"widened"}
    assert any("no word boundary" in note for note in rule.notes)
    proof = measure(SourceRule(path="rule.kql", kql=source), Options())
    assert proof.targets["eql"].verdict in ("widened", "exact") and proof.targets["eql"].agrees is not False


def test_a_negated_regex_with_word_boundaries_is_refused_by_the_elastic_targets() -> None:
    from rmm2sigma import Options, convert_input

    source = (
        "DeviceProcessEvents | where FileName =~ 'cmd.exe' "
        "and not(ProcessCommandLine matches regex @'\\bdir\\b')"
    )
    result = convert_input("rule.kql", Options(), data=source.encode())
    assert result.status == "partial"
    (rule,) = result.rules
    assert set(rule.errors) == {"lucene", "esql", "eql"}
    assert all("word boundary" in error for error in rule.errors.values())


def test_control_characters_are_string_escapes_in_eql_and_esql() -> None:
    kql = r"DeviceProcessEvents | where ProcessCommandLine matches regex @'a\sb'"
    assert "\\t-\\n" in transpile(kql, "esql") and "\n" not in transpile(kql, "esql")
    assert "\\t-\\n\f-\\r" in transpile(kql, "eql")
    # a plain value too: EqlBackend wrote a backslash before the raw tab, no EQL escape
    from rmm2sigma.verify.engines import EqlEngine

    for test in ('contains "c:\\\\windows\\temp"', 'has_any ("c:\\\\windows\\temp", "x")'):
        query = transpile(f"DeviceProcessEvents | where ProcessCommandLine {test}", "eql")
        lines = ["run c:\\windows\temp", "run c:\\windows\\temp"]
        documents = [{"__id": n, "process": {"command_line": line}} for n, line in enumerate(lines)]
        assert EqlEngine().select(query, documents) == {0}, query


def test_a_quote_in_a_regex_is_escaped_in_the_eql_string() -> None:
    """The Lucene rewrite writes a regex's `"` as `\\"`; EQL's string must escape that quote too, or
    the string ends there and the query is no EQL (the eql package and Elasticsearch reject it)."""
    from rmm2sigma.verify.engines import EqlEngine

    query = transpile("DeviceProcessEvents | where ProcessCommandLine matches regex @'x\\.dat\",1'", "eql")
    lines = ['x.dat",1', "x.dat,1"]
    documents = [{"__id": n, "process": {"command_line": line}} for n, line in enumerate(lines)]
    assert EqlEngine().select(query, documents) == {0}


@pytest.mark.parametrize(
    "test",
    [
        "FolderPath matches regex @'^C:\\\\TEMP\\\\'",
        "not(FolderPath matches regex @'^C:\\\\TEMP\\\\')",
        "FolderPath matches regex @'\\\\temp\\\\'",
        "not(FolderPath matches regex @'\\\\temp\\\\')",
        "InitiatingProcessFileName !in ('explorer.exe', 'svchost.exe')",
        "FileName == 'cmd.exe'",
    ],
)
def test_a_case_sensitive_test_on_a_caseless_field_asks_the_value_as_written(test: str) -> None:
    """Elastic's `.caseless` multi-field holds values lowercased, the field itself as written: a
    case-sensitive test asks the field itself, so every target keeps the Sigma rule's label (the
    proof measures the eql side)."""
    from rmm2sigma.convert import convert_rule
    from rmm2sigma.sigma import Options
    from rmm2sigma.sources import SourceRule
    from rmm2sigma.verify.proof import measure

    source = SourceRule(path="case.kql", kql=f"DeviceProcessEvents\n| where FileName =~ 'a.exe' and {test}")
    result = convert_rule(source, Options())
    assert not result.errors
    sigma = result.fidelity_by_target["sigma"]
    assert all(result.fidelity_by_target[target] == sigma for target in ("lucene", "esql", "eql"))
    assert all(".caseless" not in query.split(" and ", 1)[-1] for query in (result.queries["eql"],))
    proof = measure(source, Options())
    assert proof.targets["eql"].verdict != "not_executed"
    assert all(t.agrees is not False for t in proof.targets.values()), proof.targets


ELASTIC = ("lucene", "esql", "eql")
THRESHOLD_BY_DEVICE = "DeviceProcessEvents | where FileName =~ 'a.exe' | summarize n = count() by DeviceName"


@pytest.mark.parametrize(
    ("query", "field", "targets"),
    [
        ("DeviceProcessEvents | where SHA256 == 'ab12'", "process.hash.sha256", ELASTIC),
        ("DeviceImageLoadEvents | where SHA1 in ('ab12', 'cd34')", "file.hash.sha1", ELASTIC),
        (THRESHOLD_BY_DEVICE + " | where n > 3", "host.name", ("esql", "eql")),  # lucene cannot count
    ],
)
def test_ecs_windows_gaps_take_their_ecs_names(query: str, field: str, targets: Sequence[str]) -> None:
    """Sysmon's parsed hashes and the event's computer: ecs_windows asked `winlog.event_data.sha256`
    and `winlog.event_data.Computer`, which no Windows event holds (pipelines/ecs_fields.yml)."""
    for target in targets:
        written = transpile(query, target)
        assert field in written and "winlog.event_data" not in written, (target, written)
