"""Property tests: printed trees parse back to themselves, and no text makes ``parse`` raise
anything but ``KqlSyntaxError``."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmm2sigma.errors import KqlSyntaxError
from rmm2sigma.kql import (
    ArrayLit,
    Assignment,
    Between,
    Binary,
    BoolLit,
    Call,
    Datatable,
    Distinct,
    Expr,
    Extend,
    Index,
    Let,
    Name,
    NumberLit,
    Operator,
    Pipeline,
    Project,
    Query,
    SetOp,
    StringLit,
    SubQuery,
    Summarize,
    TableRef,
    Take,
    TimespanLit,
    Unary,
    Where,
    parse,
    to_kql,
)
from rmm2sigma.kql.parser import KEYWORDS

# Deterministic for CI: the same examples on every run.
PROPERTY = settings(
    max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

STRING_OPS = [
    f"{negation}{word}{suffix}"
    for word in ("has", "contains", "startswith", "endswith", "hasprefix", "hassuffix")
    for negation in ("", "!")
    for suffix in ("", "_cs")
]
BINARY_OPS = [
    *STRING_OPS,
    "matches regex",
    "==",
    "!=",
    "=~",
    "!~",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
]
SET_OPS = ["in", "!in", "in~", "!in~", "has_any", "has_all"]

# Plain identifiers (tables, lets, functions, types) cannot be keywords; column names can be anything.
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(
    lambda name: name not in KEYWORDS
)
characters = st.characters(exclude_categories=["Cs"]) | st.sampled_from(
    ["'", '"', "\\", "//", "\t", "\n", "\r", "Ü", "€"]
)
texts = st.lists(characters, max_size=8).map("".join)
names = identifiers | st.sampled_from(sorted(KEYWORDS)) | texts

strings = st.builds(StringLit, texts, st.just(False)) | st.builds(
    StringLit, texts.filter(lambda text: "\n" not in text and "\r" not in text), st.just(True)
)
numbers = st.builds(
    NumberLit, st.integers(0, 10**30) | st.floats(0, 1e300, allow_nan=False, allow_infinity=False)
)
timespans = st.builds(
    TimespanLit, st.sampled_from(["5d", "1h", "30m", "10s", "100ms", "1.5h", "2days", "1tick"])
)
leaves: st.SearchStrategy[Expr] = st.one_of(
    st.builds(Name, names), strings, numbers, timespans, st.builds(BoolLit, st.booleans())
)
dynamic_arrays = st.builds(
    lambda items: Call("dynamic", (ArrayLit(tuple(items)),)), st.lists(strings | numbers, max_size=3)
)


def _tuples(strategy: st.SearchStrategy[Expr], min_size: int = 0) -> st.SearchStrategy[tuple[Expr, ...]]:
    return st.lists(strategy, min_size=min_size, max_size=2).map(tuple)


def _compound(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    """Every expression node over ``children``: the printer must parenthesise any nesting."""
    return st.one_of(
        st.builds(Binary, st.sampled_from(["and", "or"]), children, children),
        st.builds(Binary, st.sampled_from(BINARY_OPS), children, children),
        st.builds(SetOp, st.sampled_from(SET_OPS), children, _tuples(children | dynamic_arrays, 1)),
        st.builds(Between, children, children, children, st.booleans()),
        st.builds(Unary, st.just("-"), children),
        st.builds(Index, children, children),
        st.builds(Call, identifiers, _tuples(children)),
        st.builds(lambda operand: Call("not", (operand,)), children),
    )


expressions = st.recursive(leaves | dynamic_arrays, _compound, max_leaves=8)
assignments = st.builds(Assignment, st.none() | names, expressions)
assignment_lists = st.lists(assignments, min_size=1, max_size=2).map(tuple)
operators: st.SearchStrategy[Operator] = st.one_of(
    st.builds(Where, expressions),
    st.builds(Summarize, assignment_lists, st.just(()) | assignment_lists),
    st.builds(Summarize, st.just(()), assignment_lists),
    st.builds(Project, assignment_lists),
    st.builds(Extend, assignment_lists),
    st.builds(Distinct, _tuples(expressions, 1)),
    st.builds(Take, st.integers(0, 10**6)),
)
operator_lists = st.lists(operators, max_size=2).map(tuple)


@st.composite
def datatables(draw: st.DrawFn) -> Datatable:
    columns = draw(st.lists(st.tuples(names, identifiers), min_size=1, max_size=2))
    rows = draw(st.lists(st.tuples(*[strings | numbers] * len(columns)), max_size=2))
    return Datatable(tuple(columns), tuple(value for row in rows for value in row))


@st.composite
def tabular(draw: st.DrawFn) -> Pipeline:
    """A tabular let value or sub-query; one that starts with a table needs an operator, or it reads
    as a name."""
    if draw(st.booleans()):
        return Pipeline(draw(datatables()), draw(operator_lists))
    return Pipeline(TableRef(draw(identifiers)), draw(st.lists(operators, min_size=1, max_size=2).map(tuple)))


@st.composite
def sub_queries(draw: st.DrawFn) -> SetOp:
    return SetOp(draw(st.sampled_from(SET_OPS)), draw(leaves), (SubQuery(draw(tabular())),))


predicates = st.recursive(
    expressions | sub_queries(),
    lambda children: (
        st.builds(Binary, st.sampled_from(["and", "or"]), children, children)
        | st.builds(lambda operand: Call("not", (operand,)), children)
    ),
    max_leaves=4,
)


@st.composite
def queries(draw: st.DrawFn) -> Query:
    lets = draw(st.lists(st.builds(Let, identifiers, expressions | tabular()), max_size=2))
    source = draw(st.builds(TableRef, identifiers) | datatables())
    return Query(tuple(lets), Pipeline(source, (Where(draw(predicates)), *draw(operator_lists))))


@PROPERTY
@given(queries())
def test_printed_trees_parse_back(query: Query) -> None:
    assert parse(to_kql(query)) == query


def _check_error(text: str, err: KqlSyntaxError) -> None:
    assert err.line is not None and err.column is not None
    lines = text.split("\n")
    assert 1 <= err.line <= len(lines)
    assert err.context == lines[err.line - 1].rstrip("\r")


@PROPERTY
@given(st.text())
def test_any_text_parses_or_fails_with_kql_syntax_error(text: str) -> None:
    try:
        parse(text)
    except KqlSyntaxError as err:
        _check_error(text, err)


FRAGMENTS = [
    *["let", "x", "=", ";", "T", "|", "where", "summarize", "by", "project", "extend", "distinct", "take"],
    *["datatable(a:string)[", "]", "(", ")", "[", ",", "..", "and", "or", "not(", "dynamic([", "-"],
    *[
        "has",
        "!in~",
        "has_any",
        "between",
        "==",
        "matches regex",
        "'a'",
        '"b\\"',
        "@'c\\'",
        "1",
        "1.5e3",
        "5d",
    ],
    *["'", "@'", "//", "\n", "\r\n", "\t", "['n']", "1e999", "'\\q'", "9" * 5000, "(" * 70],
]


@PROPERTY
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25).map(" ".join))
def test_token_soup_parses_and_round_trips_or_fails_cleanly(text: str) -> None:
    try:
        query = parse(text)
    except KqlSyntaxError as err:
        _check_error(text, err)
    else:
        assert parse(to_kql(query)) == query
