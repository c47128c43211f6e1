"""Property tests of the whole conversion: no input makes ``convert_input`` raise, and every query
built from the Defender columns the mapping knows gives a rule that pySigma parses, the same twice.

(The KQL grammar's own parse/print round trip is in ``test_kql_properties.py``.)
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sigma.rule import SigmaRule

from rmm2sigma.convert import InputResult, convert_input, defender_schema
from rmm2sigma.mapping import tables
from rmm2sigma.report import plan_names
from rmm2sigma.sigma import Options

OPTIONS = Options(author="property", date=dt.date(2026, 1, 2))
PROPERTY = settings(
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TABLES = ("DeviceProcessEvents", "DeviceNetworkEvents", "DeviceFileCertificateInfo")


def string_columns(table: str) -> list[str]:
    """The table's mapped columns that hold strings, so every operator below applies to them."""
    kinds = defender_schema()[table]
    return sorted(column for column in tables()[table].fields if kinds.get(column) == "string")


COLUMNS = {table: string_columns(table) for table in TABLES}

# fragments that reach deep into the pipeline when shuffled, plus anything at all
FRAGMENTS = st.sampled_from(
    [
        *TABLES,
        *("| where ", " and ", " or ", "not(", "(", ")", ",", " has ", " has_any ", " in~ ", " =~ ", " == "),
        *(" !has ", " contains ", " startswith ", " endswith ", "FileName", "Signer", "RemoteUrl", '"a*b?"'),
        *("'c:\\\\x'", '""', "@'v'", "let x = ", ";", "summarize count() by DeviceId", "| take 1", "\n"),
        *("query: |\n  ", "name: ", "id: ", "tactics:\n  - X\n", "é", "\t", "\\", "KQL Query\n", "&a ", "*a"),
    ]
)
TEXT = st.one_of(st.text(max_size=300), st.lists(FRAGMENTS, max_size=30).map("".join))
SUFFIXES = st.sampled_from([".kql", ".yaml", ".txt", ""])

VALUE = st.text(
    st.one_of(
        st.sampled_from(list("abcXYZ09 ._-\\\"'*?/:%éß中🙂")),
        st.characters(blacklist_categories=("Cs", "Cc")),
    ),
    min_size=1,
    max_size=12,
)


def literal(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def condition(columns: list[str]) -> st.SearchStrategy[str]:
    column = st.sampled_from(columns)
    single = st.tuples(
        column, st.sampled_from(["has", "contains", "startswith", "endswith", "=~", "==", "!has"]), VALUE
    ).map(lambda t: f"{t[0]} {t[1]} {literal(t[2])}")
    listed = st.tuples(
        column, st.sampled_from(["has_any", "in~"]), st.lists(VALUE, min_size=1, max_size=4)
    ).map(lambda t: f"{t[0]} {t[1]} ({', '.join(map(literal, t[2]))})")
    return st.recursive(
        st.one_of(single, listed),
        lambda inner: st.one_of(
            inner.map(lambda e: f"not({e})"),
            st.tuples(st.lists(inner, min_size=2, max_size=3), st.sampled_from([" and ", " or "])).map(
                lambda t: "(" + t[1].join(t[0]) + ")"
            ),
        ),
        max_leaves=6,
    )


QUERY = st.sampled_from(TABLES).flatmap(lambda t: condition(COLUMNS[t]).map(lambda c: f"{t}\n| where {c}\n"))
SIMPLE = 'DeviceProcessEvents\n| where FileName =~ "tool.exe"\n'
NAME = st.one_of(
    st.text(st.sampled_from(list('./\\ :*?"<>|-_aZ9é')), max_size=12),  # what file systems choke on
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
)


def sentinel_yaml(name: str, query: str) -> str:
    """A Sentinel hunting query; JSON strings are valid YAML flow scalars, so any name survives."""
    block = "".join(f"  {line}\n" for line in query.splitlines())
    return f"id: 7d3e1f00-1111-4222-8333-444455556666\nname: {json.dumps(name)}\nquery: |\n{block}"


def assert_failed_cleanly(result: InputResult) -> None:
    assert result.status in ("converted", "partial", "failed")
    if result.status == "failed":
        assert isinstance(result.error, str) and result.error and "\n" not in result.error


# ---------------------------------------------------------------- nothing raises


@PROPERTY
@given(text=TEXT, suffix=SUFFIXES)
def test_any_text_in_a_file_gives_a_result(
    tmp_path_factory: pytest.TempPathFactory, text: str, suffix: str
) -> None:
    path = tmp_path_factory.mktemp("text") / f"input{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_failed_cleanly(convert_input(str(path), OPTIONS))


@PROPERTY
@given(text=TEXT)
def test_any_text_on_stdin_gives_a_result(text: str) -> None:
    assert_failed_cleanly(convert_input("-", OPTIONS, data=text.encode("utf-8", "surrogatepass")))


@PROPERTY
@given(data=st.binary(max_size=400), prefix=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]))
def test_any_bytes_give_a_result(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, prefix: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "input.yaml"
    path.write_bytes(prefix + data)
    assert_failed_cleanly(convert_input(str(path), OPTIONS))
    assert_failed_cleanly(convert_input("-", OPTIONS, data=prefix + data))


# ---------------------------------------------------------------- valid queries give valid rules


@PROPERTY
@given(query=QUERY)
def test_generated_queries_give_rules_pysigma_parses(query: str) -> None:
    result = convert_input("generated.kql", OPTIONS, data=query.encode())
    assert result.status != "failed", (query, result.error)
    for rule in result.rules:
        parsed = SigmaRule.from_yaml(rule.yaml)
        assert str(parsed.id) == rule.rule_id
    again = convert_input("generated.kql", OPTIONS, data=query.encode())
    assert [(r.yaml, r.rule_id) for r in again.rules] == [(r.yaml, r.rule_id) for r in result.rules]


@PROPERTY
@given(name=NAME, query=QUERY)
@example(name="..", query=SIMPLE).via("an empty title once made pySigma raise")
@example(name="../../etc/passwd", query=SIMPLE).via("path traversal")
@example(name="CON", query=SIMPLE).via("a reserved Windows device name")
def test_any_name_gives_a_parsable_rule_and_a_safe_file_name(name: str, query: str) -> None:
    text = sentinel_yaml(name, query).encode()
    result = convert_input("rule.yaml", OPTIONS, data=text)
    assert result.status != "failed", (name, query, result.error)
    for rule in result.rules:
        SigmaRule.from_yaml(rule.yaml)
    for planned in plan_names([result]).values():
        assert re.fullmatch(r"[a-z0-9][a-z0-9_]{0,89}", planned.stem), planned.stem
    again = convert_input("rule.yaml", OPTIONS, data=text)
    assert [(r.yaml, r.rule_id) for r in again.rules] == [(r.yaml, r.rule_id) for r in result.rules]


def test_the_generator_covers_every_table() -> None:
    """Guard against the mapping dropping a table's columns, which would silently shrink the test."""
    assert all(COLUMNS[table] for table in TABLES), COLUMNS
