"""A union branch testing a column its table lacks (kql/union.py): Kusto's union gives that column
an empty string (a string column) or a null (any other) in the branch, so each test on it has a
value there, which is folded into the branch query before it is converted.

Two measurements, both by execution over generated events:

- the split is exact: the union query, run by duckdb-kql over one table holding every branch's
  rows with the columns of all of them (strings empty, others null, as Kusto's union fills them),
  selects exactly the rows the branch queries select on their own tables;
- each branch rule is proved against its branch query (``verify.proof.measure``).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

import pytest

from conftest import disagreements, executed
from rmm2sigma import kql
from rmm2sigma.convert import branch_source, convert_rules, defender_schema
from rmm2sigma.fidelity import SIGMA
from rmm2sigma.kql.lower import lower
from rmm2sigma.kql.printer import to_kql
from rmm2sigma.kql.union import Branch, split_union
from rmm2sigma.sigma import Options
from rmm2sigma.sources import SourceRule
from rmm2sigma.verify.engines import KqlEngine, row_selecting
from rmm2sigma.verify.events import ID, Row, generate
from rmm2sigma.verify.proof import EXACT, measure

NOW = datetime(2026, 11, 23, 12, 0, 0)
PROCESS, NETWORK, FILE = "DeviceProcessEvents", "DeviceNetworkEvents", "DeviceFileEvents"
UNION = "UnionOfBranches"  # the oracle's table: every branch's rows, with the columns of all
SHA = "4f1d1a1f5c5a3b7e0a0d4b6a2c1e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f"
IOC_LETS = f"let hashes = dynamic(['{SHA}']);\nlet domains = dynamic(['evil.example', 'bad.example']);\n"

# name -> (lets, tables, the operators after the union,
#          per table: its branch's operators after the union, or None when it selects nothing)
CASES: dict[str, tuple[str, tuple[str, ...], str, dict[str, str | None]]] = {
    "ioc hunt: in, has_any, has": (
        IOC_LETS,
        (PROCESS, NETWORK, FILE),
        "| where SHA256 in (hashes) or RemoteUrl has_any (domains) or ProcessCommandLine has 'mimikatz'",
        {
            PROCESS: "| where SHA256 in (hashes) or ProcessCommandLine has 'mimikatz'",
            NETWORK: "| where RemoteUrl has_any (domains)",
            FILE: "| where SHA256 in (hashes)",
        },
    ),
    "!= is true on the empty string": (
        "",
        (PROCESS, NETWORK),
        "| where RemoteIP != '10.1.2.3' and InitiatingProcessFileName =~ 'cmd.exe'",
        {
            PROCESS: "| where InitiatingProcessFileName =~ 'cmd.exe'",
            NETWORK: "| where RemoteIP != '10.1.2.3' and InitiatingProcessFileName =~ 'cmd.exe'",
        },
    ),
    "== and in are false, or-operands dropped": (
        "",
        (PROCESS, NETWORK),
        "| where RemoteUrl == 'evil.example' or ProcessCommandLine in ('whoami /all', 'net user')",
        {
            PROCESS: "| where ProcessCommandLine in ('whoami /all', 'net user')",
            NETWORK: "| where RemoteUrl == 'evil.example'",
        },
    ),
    "!in, !has, !contains, !startswith are true": (
        "",
        (PROCESS, NETWORK),
        "| where InitiatingProcessFileName =~ 'powershell.exe' and RemoteUrl !in ('ok.example')"
        " and ProcessCommandLine !has 'update' and RemoteUrl !contains 'cdn'"
        " and ProcessCommandLine !startswith 'C:'",
        {
            PROCESS: "| where InitiatingProcessFileName =~ 'powershell.exe'"
            " and ProcessCommandLine !has 'update' and ProcessCommandLine !startswith 'C:'",
            NETWORK: "| where InitiatingProcessFileName =~ 'powershell.exe'"
            " and RemoteUrl !in ('ok.example') and RemoteUrl !contains 'cdn'",
        },
    ),
    "contains, startswith, endswith": (
        "",
        (PROCESS, NETWORK),
        "| where RemoteUrl contains 'pastebin' or ProcessCommandLine startswith 'certutil'"
        " or RemoteUrl endswith '.onion'",
        {
            PROCESS: "| where ProcessCommandLine startswith 'certutil'",
            NETWORK: "| where RemoteUrl contains 'pastebin' or RemoteUrl endswith '.onion'",
        },
    ),
    "an and-operand false: the branch is empty": (
        "",
        (PROCESS, NETWORK),
        "| where RemoteUrl has 'evil' and InitiatingProcessFileName =~ 'rundll32.exe'",
        {
            PROCESS: None,
            NETWORK: "| where RemoteUrl has 'evil' and InitiatingProcessFileName =~ 'rundll32.exe'",
        },
    ),
    "isempty, isnotempty, isnull, isnotnull": (
        "",
        (PROCESS, NETWORK),
        "| where isempty(RemoteUrl) and InitiatingProcessFileName =~ 'cmd.exe'"
        " or isnotempty(ProcessCommandLine) and FileName =~ 'x.exe'"
        " or isnotnull(ProcessCommandLine) and RemoteUrl =~ 'a.example'"
        " or isnull(ProcessCommandLine) and RemoteUrl =~ 'b.example'"
        " or isnull(RemotePort) and FileName =~ 'y.exe'"
        " or isnotnull(RemotePort) and RemoteUrl =~ 'c.example'",
        {
            PROCESS: "| where InitiatingProcessFileName =~ 'cmd.exe'"
            " or isnotempty(ProcessCommandLine) and FileName =~ 'x.exe' or FileName =~ 'y.exe'",
            NETWORK: "| where isempty(RemoteUrl) and InitiatingProcessFileName =~ 'cmd.exe'"
            " or RemoteUrl =~ 'a.example' or isnotnull(RemotePort) and RemoteUrl =~ 'c.example'",
        },
    ),
    "numbers: == and in false, != and !in true, orderings null": (
        "",
        (PROCESS, NETWORK),
        "| where RemotePort == 4444 or RemotePort in (8080, 8443) or RemotePort > 50000 or ProcessId == 4"
        " or RemotePort != 443 and RemotePort !in (80, 8000) and InitiatingProcessFileName =~ 'nc.exe'",
        {
            PROCESS: "| where ProcessId == 4 or InitiatingProcessFileName =~ 'nc.exe'",
            NETWORK: "| where RemotePort == 4444 or RemotePort in (8080, 8443) or RemotePort > 50000"
            " or RemotePort != 443 and RemotePort !in (80, 8000) and InitiatingProcessFileName =~ 'nc.exe'",
        },
    ),
    "not of a null is null: the branch is empty": (
        "",
        (PROCESS, NETWORK),
        "| where not(RemotePort < 1024) and InitiatingProcessFileName =~ 'nc.exe'",
        {PROCESS: None, NETWORK: "| where not(RemotePort < 1024) and InitiatingProcessFileName =~ 'nc.exe'"},
    ),
    "not of false is true; between": (
        "",
        (PROCESS, NETWORK),
        "| where not(RemotePort == 80) and InitiatingProcessFileName =~ 'nc.exe'"
        " or RemotePort between (1 .. 1024) and InitiatingProcessFileName =~ 'curl.exe'",
        {
            PROCESS: "| where InitiatingProcessFileName =~ 'nc.exe'",
            NETWORK: "| where not(RemotePort == 80) and InitiatingProcessFileName =~ 'nc.exe'"
            " or RemotePort between (1 .. 1024) and InitiatingProcessFileName =~ 'curl.exe'",
        },
    ),
    "a boolean column is null": (
        "",
        (PROCESS, NETWORK),
        "| where IsProcessRemoteSession == true or not(IsProcessRemoteSession) or RemoteUrl has 'evil'",
        {
            PROCESS: "| where IsProcessRemoteSession == true or not(IsProcessRemoteSession)",
            NETWORK: "| where RemoteUrl has 'evil'",
        },
    ),
    "nested not, and, or": (
        "",
        (PROCESS, NETWORK),
        "| where InitiatingProcessFileName =~ 'cmd.exe'"
        " and not(RemoteUrl has 'update'"
        " or (ProcessCommandLine has 'backup' and not(RemoteIP == '10.0.0.1')))",
        {
            PROCESS: "| where InitiatingProcessFileName =~ 'cmd.exe'"
            " and not(ProcessCommandLine has 'backup')",
            NETWORK: "| where InitiatingProcessFileName =~ 'cmd.exe' and not(RemoteUrl has 'update')",
        },
    ),
    "tests after extend, then a summarize": (
        "",
        (PROCESS, NETWORK),
        "| extend Url = tolower(RemoteUrl), Port = RemotePort\n"
        "| where Url has 'evil' or ProcessCommandLine has 'evil'\n"
        "| where Port != 53\n"
        "| summarize count() by DeviceName, InitiatingProcessFileName",
        {
            PROCESS: "| extend Url = tolower(''), Port = int(null)\n"
            "| where ProcessCommandLine has 'evil'\n"
            "| summarize count() by DeviceName, InitiatingProcessFileName",
            NETWORK: "| extend Url = tolower(RemoteUrl), Port = RemotePort\n"
            "| where Url has 'evil'\n"
            "| where Port != 53\n"
            "| summarize count() by DeviceName, InitiatingProcessFileName",
        },
    ),
}


# cases whose branch queries are not measured: a boolean column has no Sigma field, and `project`
# drops the ``__id`` the oracles select
SPLIT_ONLY: dict[str, tuple[str, tuple[str, ...], str, dict[str, str | None]]] = {
    "tests after project, then a summarize": (
        "",
        (PROCESS, NETWORK),
        "| project DeviceName, InitiatingProcessFileName, Url = RemoteUrl, RemotePort, ProcessCommandLine\n"
        "| where Url has 'evil' or ProcessCommandLine has 'evil'\n"
        "| where RemotePort != 53\n"
        "| summarize count() by DeviceName, InitiatingProcessFileName, RemotePort",
        {
            PROCESS: "| project DeviceName, InitiatingProcessFileName, Url = '', RemotePort = int(null),"
            " ProcessCommandLine\n"
            "| where ProcessCommandLine has 'evil'\n"
            "| summarize count() by DeviceName, InitiatingProcessFileName, RemotePort = int(null)",
            NETWORK: "| project DeviceName, InitiatingProcessFileName, Url = RemoteUrl, RemotePort,"
            " ProcessCommandLine = ''\n"
            "| where Url has 'evil'\n"
            "| where RemotePort != 53\n"
            "| summarize count() by DeviceName, InitiatingProcessFileName, RemotePort",
        },
    ),
    "a project-rename follows the column": (
        "",
        (PROCESS, NETWORK),
        "| project-rename Url = RemoteUrl\n| where Url has 'evil' or ProcessCommandLine has 'evil'",
        {
            PROCESS: "| project-rename Url = RemoteUrl\n| where ProcessCommandLine has 'evil'",
            NETWORK: "| project-rename Url = RemoteUrl\n| where Url has 'evil'",
        },
    ),
    "a join stops the folding": (
        "",
        (PROCESS, NETWORK),
        "| join kind=leftouter (DeviceNetworkEvents | project DeviceId, RemoteUrl) on DeviceId\n"
        "| where RemoteUrl has 'evil'",
        {
            PROCESS: "| join kind=leftouter (DeviceNetworkEvents | project DeviceId, RemoteUrl) on DeviceId\n"
            "| where RemoteUrl has 'evil'",
            NETWORK: "| join kind=leftouter (DeviceNetworkEvents | project DeviceId, RemoteUrl) on DeviceId\n"
            "| where RemoteUrl has 'evil'",
        },
    ),
}
WIDER = {  # `has` is Sigma's contains
    "ioc hunt: in, has_any, has",
    "tests after extend, then a summarize",
    "an and-operand false: the branch is empty",
}
MEASURED = sorted(set(CASES) - {"a boolean column is null"})  # no Sigma field for a boolean
CASES.update(SPLIT_ONLY)


def _query(name: str) -> str:
    lets, tables, after, _ = CASES[name]
    return f"{lets}union {', '.join(tables)}\n{after}"


def _branches(name: str) -> list[Branch]:
    branches = split_union(kql.parse(_query(name)), defender_schema())
    assert branches is not None
    return branches


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_branch_is_the_query_with_the_missing_columns_values_folded_in(name: str) -> None:
    lets, tables, _, expected = CASES[name]
    got = {branch.table: None if branch.empty else branch.query for branch in _branches(name)}
    assert list(got) == list(tables)
    want = {
        table: None if after is None else kql.parse(f"{lets}{table}\n{after}")
        for table, after in expected.items()
    }
    assert got == want
    for branch in _branches(name):  # an empty branch says which column and which test
        if branch.empty:
            assert "not a column of" in branch.empty and branch.table in branch.empty


@cache
def _engine() -> KqlEngine:
    """duckdb-kql over the Defender tables plus one table with every column of the three tables."""
    schema = {table: dict(columns) for table, columns in defender_schema().items()}
    schema[UNION] = {c: t for table in (PROCESS, NETWORK, FILE) for c, t in schema[table].items()}
    return KqlEngine(schema)


def _rows(name: str) -> dict[str, list[Row]]:
    """Rows for every table of the union: the events generated for each branch that converts,
    each copy keeping the columns of the table it is put in (so the other branches' tests are
    decided on them too)."""
    schema = defender_schema()
    branches = _branches(name)
    generated: list[Row] = []
    for index, branch in enumerate(b for b in branches if not b.empty):
        generated.extend(generate(lower(branch.query, schema), schema, seed=index, now=NOW, random_rows=200))
    rows: dict[str, list[Row]] = {}
    next_id = 0
    for branch in branches:
        columns = schema[branch.table]
        flags = [c for c, kind in columns.items() if kind in ("bool", "boolean")]  # not aimed at
        for row in generated + [{**generated[0], c: v} for c in flags for v in (True, False, None)]:
            next_id += 1
            kept = {c: v for c, v in row.items() if c in columns}
            rows.setdefault(branch.table, []).append({**kept, ID: next_id})
    return rows


@pytest.mark.parametrize("name", sorted(set(CASES) - set(SPLIT_ONLY)))
def test_the_branch_queries_select_exactly_what_the_union_selects(name: str) -> None:
    """The union, run over one table holding all its rows (strings '' and others null where a
    row's table lacks the column, as Kusto's union fills them), against the branch queries."""
    lets, _, after, _ = CASES[name]
    engine = _engine()
    rows = _rows(name)
    engine.load({**rows, UNION: [row for table_rows in rows.values() for row in table_rows]})
    union = engine.select(row_selecting(kql.parse(f"{lets}{UNION}\n{after}")), NOW)
    per_branch = set()
    for branch in _branches(name):
        if not branch.empty:
            per_branch |= engine.select(row_selecting(branch.query), NOW)
    assert union and union == per_branch
    # each branch's rows come from its own table: the union's rows of every table are there
    assert {t for t, table_rows in rows.items() if union & {r[ID] for r in table_rows}} == {
        b.table for b in _branches(name) if not b.empty
    }


@pytest.mark.parametrize("name", MEASURED)
def test_every_branch_rule_is_proved_against_its_branch_query(name: str) -> None:
    """The rules convert (one per non-empty branch, no error) and every executed target agrees
    with its label. The folding costs no fidelity: every target is exact where what is left is
    (``has`` is a widening of its own, FACTS §2)."""
    source = SourceRule(path=f"{name[:20].replace(' ', '_')}.kql", kql=_query(name), name="Union Hunt")
    rules, errors = convert_rules(source, Options(), ("kusto",))
    branches = [b for b in _branches(name) if not b.empty]
    assert not errors and len(rules) == len(branches)
    for branch in branches:
        proof = measure(branch_source(source, branch), Options(), now=NOW)
        ran = executed(proof, frozenset({SIGMA, "kusto"}))
        assert not disagreements(ran)
        if name not in WIDER:  # what is left converts exactly: nothing was widened on the way
            assert {r.verdict for r in ran.values()} == {EXACT}


@pytest.mark.parametrize(
    "test",
    [
        "not(RemotePort < 1024)",
        "not(RemotePort < 1024 or RemotePort > 5000)",
        "not(RemotePort >= 1024 and not(LocalPort <= 80 or RemoteUrl endswith '.example'))",
        "not(RemotePort between (1 .. 1023))",
        "RemotePort !between (1 .. 1023)",
        "not(RemotePort !between (1 .. 1023) or LocalPort > 50000)",
    ],
)
def test_a_negated_ordering_keeps_out_the_rows_whose_value_is_null(test: str) -> None:
    """``not(x < 5)`` is null on a null ``x`` (the row is dropped), while Sigma's ``not`` of
    ``x|lt`` keeps an event without ``x``: the lowering moves the ``not`` onto the tests, where
    an ordering has its complement (``x >= 5``; ``x !between (a .. b)`` is ``x < a or x > b``),
    so the rule stays exact. A union branch's folded
    tests lead there often, but the query need not be a union."""
    query = f"DeviceNetworkEvents\n| where {test} and InitiatingProcessFileName =~ 'nc.exe'"
    proof = measure(SourceRule(path="negated.kql", kql=query, name="Negated Ordering"), Options(), now=NOW)
    ran = executed(proof)
    assert {(r.label, r.verdict) for r in ran.values()} == {(EXACT, EXACT)}


def test_a_column_a_branch_projected_away_is_filled_where_the_union_reads_it() -> None:
    """Branches projected before the union bring only their projected columns: the union gives
    each the others' columns empty, even one its table has (``InitiatingProcessFileName``), and a
    summary after the union reads them there. The branches convert (before, the summary's
    ``make_set(ProcessCommandLine)`` was an unknown column of the network branch)."""
    text = (
        "let Net = DeviceNetworkEvents | where RemoteIP == '10.9.9.9'"
        " | project DeviceName, RemoteUrl, InitiatingProcessFileName;\n"
        "let Proc = DeviceProcessEvents | where ProcessCommandLine has '10.9.9.9'"
        " | project DeviceName, ProcessCommandLine;\n"
        "union Net, Proc\n"
        "| summarize Urls = make_set(RemoteUrl), Lines = make_set(ProcessCommandLine),"
        " Parents = make_set(InitiatingProcessFileName) by DeviceName"
    )
    branches = split_union(kql.parse(text), defender_schema())
    assert branches is not None
    summaries = {b.table: b.query.body.operators[-1] for b in branches}
    assert {t: to_kql(s) for t, s in summaries.items()} == {
        NETWORK: "summarize Urls=make_set(RemoteUrl), Lines=make_set(''),"
        " Parents=make_set(InitiatingProcessFileName) by DeviceName",
        PROCESS: "summarize Urls=make_set(''), Lines=make_set(ProcessCommandLine), Parents=make_set('')"
        " by DeviceName",
    }
    rules, errors = convert_rules(
        SourceRule(path="lookup.kql", kql=text, name="IP lookup"), Options(), ("kusto",)
    )
    assert not errors and len(rules) == 2
