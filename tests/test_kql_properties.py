"""Property tests: printed trees parse back to themselves, and no text makes ``parse`` raise
anything but ``KqlSyntaxError``."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmm2sigma.errors import KqlSyntaxError, UnsupportedKqlError
from rmm2sigma.kql import (
    ArrayLit,
    As,
    Assignment,
    Between,
    Binary,
    BoolLit,
    Call,
    Count,
    Datatable,
    Distinct,
    Evaluate,
    ExpandColumn,
    Expr,
    Extend,
    Externaldata,
    FunctionDef,
    FunctionParam,
    GetSchema,
    Index,
    Invoke,
    Join,
    Let,
    Lookup,
    Member,
    MvExpand,
    Name,
    NullLit,
    NumberLit,
    ObjectLit,
    Operator,
    Parse,
    ParseColumn,
    ParseWhere,
    Partition,
    Pipeline,
    Print,
    Project,
    ProjectAway,
    ProjectKeep,
    ProjectRename,
    ProjectReorder,
    Query,
    Range,
    Render,
    Sample,
    Search,
    Serialize,
    SetOp,
    Sort,
    SortKey,
    StringLit,
    SubQuery,
    Summarize,
    TableRef,
    Take,
    TimespanLit,
    Top,
    TopNested,
    TopNestedLevel,
    TupleAssignment,
    TypedLit,
    Unary,
    Union,
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
typed = st.sampled_from(
    [
        TypedLit("datetime", "2021-01-01"),
        TypedLit("datetime", "2021-01-01T10:00:00Z"),
        TypedLit("long", "null"),
        TypedLit("timespan", "1.00:00:00"),
        TypedLit("guid", "74be27de-1e4e-49d9-b579-fe0b331d3642"),
    ]
)
leaves: st.SearchStrategy[Expr] = st.one_of(
    st.builds(Name, names),
    strings,
    numbers,
    timespans,
    typed,
    st.builds(BoolLit, st.booleans()),
)
dynamic_values = st.recursive(
    strings | numbers | st.just(NullLit()) | st.builds(BoolLit, st.booleans()),
    lambda children: (
        st.builds(lambda items: ArrayLit(tuple(items)), st.lists(children, max_size=3))
        | st.builds(lambda items: ObjectLit(tuple(items)), st.lists(st.tuples(texts, children), max_size=2))
    ),
    max_leaves=5,
)
dynamic_arrays = st.builds(
    lambda items: Call("dynamic", (ArrayLit(tuple(items)),)), st.lists(strings | numbers, max_size=3)
) | st.builds(lambda value: Call("dynamic", (value,)), dynamic_values)


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
        st.builds(Member, children, names),
    )


expressions = st.recursive(leaves | dynamic_arrays, _compound, max_leaves=8)
assignments = st.builds(Assignment, st.none() | names, expressions)
tuple_assignments = st.builds(
    lambda items, expr: TupleAssignment(None, expr, names=tuple(items)),
    st.lists(names, min_size=2, max_size=3),
    expressions,
)
assignment_lists = st.lists(assignments, min_size=1, max_size=2).map(tuple)
aggregate_lists = st.lists(assignments | tuple_assignments, min_size=1, max_size=2).map(tuple)
sort_keys = st.builds(
    SortKey, expressions, st.sampled_from([None, "asc", "desc"]), st.sampled_from([None, "first", "last"])
)
wildcards = st.from_regex(r"[A-Za-z_]{0,3}\*[A-Za-z0-9_]{0,3}", fullmatch=True)
column_patterns = st.builds(Name, identifiers | wildcards)
hints = st.lists(st.sampled_from([("hint.strategy", "shuffle"), ("hint.remote", "auto")]), max_size=1).map(
    tuple
)
calls = st.builds(Call, identifiers, _tuples(expressions))


def _pattern(parts: list[StringLit | Name | ParseColumn]) -> tuple[StringLit | Name | ParseColumn, ...]:
    """A parse pattern: adjacent strings would read back as one, so they are kept apart."""
    kept: list[StringLit | Name | ParseColumn] = []
    for part in parts:
        if not (kept and isinstance(part, StringLit) and isinstance(kept[-1], StringLit)):
            kept.append(part)
    return tuple(kept)


patterns = st.lists(
    strings
    | st.just(Name("*"))
    | st.builds(ParseColumn, identifiers, st.sampled_from([None, "int", "string"])),
    min_size=1,
    max_size=4,
).map(_pattern)
simple_operators: st.SearchStrategy[Operator] = st.one_of(
    st.builds(Where, expressions),
    st.builds(Summarize, aggregate_lists, st.just(()) | assignment_lists),
    st.builds(Summarize, st.just(()), assignment_lists),
    st.builds(Project, assignment_lists),
    st.builds(Extend, assignment_lists),
    st.builds(Distinct, assignment_lists),
    st.builds(Take, st.integers(0, 10**6)),
    st.builds(Sort, st.lists(sort_keys, min_size=1, max_size=2).map(tuple), hints),
    st.builds(Top, expressions, sort_keys),
    st.builds(
        lambda levels: TopNested(tuple(levels)),
        st.lists(
            st.builds(
                TopNestedLevel,
                st.none() | expressions,
                assignments,
                st.none() | expressions,
                assignments,
                st.sampled_from([None, "asc", "desc"]),
            ),
            min_size=1,
            max_size=2,
        ),
    ),
    st.builds(
        MvExpand,
        st.lists(
            st.builds(
                ExpandColumn, st.none() | names, expressions, st.sampled_from([None, "string", "long"])
            ),
            min_size=1,
            max_size=2,
        ).map(tuple),
        st.none() | expressions,
        st.lists(st.sampled_from([("with_itemindex", "i"), ("bagexpansion", "array")]), max_size=1).map(
            tuple
        ),
    ),
    st.builds(Parse, expressions, patterns, st.sampled_from([(), (("kind", "regex"), ("flags", "Ui"))])),
    st.builds(ParseWhere, expressions, patterns),
    st.builds(ProjectAway, st.lists(column_patterns, min_size=1, max_size=2).map(tuple)),
    st.builds(ProjectKeep, st.lists(column_patterns, min_size=1, max_size=2).map(tuple)),
    st.builds(
        ProjectRename,
        st.lists(st.builds(Assignment, names, st.builds(Name, names)), min_size=1, max_size=2).map(tuple),
    ),
    st.builds(
        ProjectReorder,
        st.lists(
            st.builds(SortKey, column_patterns, st.sampled_from([None, "asc", "granny-desc"])),
            min_size=1,
            max_size=2,
        ).map(tuple),
    ),
    st.builds(Evaluate, calls, hints),
    st.builds(Invoke, calls),
    st.builds(Count),
    st.builds(GetSchema),
    st.builds(Serialize, st.just(()) | assignment_lists),
    st.builds(As, names, st.sampled_from([(), (("hint.materialized", "true"),)])),
    st.builds(Sample, expressions),
    st.builds(Render, st.sampled_from(["timechart", "table"]), st.just(()) | assignment_lists),
)
operators: st.SearchStrategy[Operator] = simple_operators | st.builds(
    Partition,
    st.builds(Name, names),
    st.lists(simple_operators, min_size=1, max_size=2).map(tuple),
    hints,
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
def sides(draw: st.DrawFn, wildcard: bool = False) -> Pipeline:
    """The right side of ``join``/``lookup`` or a ``union`` table (which may be a ``*`` pattern):
    a table name or a pipeline."""
    tables = identifiers | wildcards if wildcard else identifiers
    return draw(st.builds(lambda name: Pipeline(TableRef(name)), tables) | tabular())


@st.composite
def tabular_operators(draw: st.DrawFn) -> Operator:
    kind = draw(st.sampled_from([None, "inner", "leftanti", "leftouter"]))
    on = draw(_tuples(expressions, 1))
    return draw(
        st.sampled_from(
            [
                Join(kind, draw(sides()), on, draw(hints)),
                Lookup(kind, draw(sides()), on),
                Union(tuple(draw(st.lists(sides(wildcard=True), min_size=1, max_size=2))), draw(hints)),
                Search(tuple(draw(st.lists(identifiers | wildcards, max_size=2))), draw(expressions)),
            ]
        )
    )


@st.composite
def sub_queries(draw: st.DrawFn) -> SetOp:
    return SetOp(draw(st.sampled_from(SET_OPS)), draw(leaves), (SubQuery(draw(tabular())),))


predicates = st.recursive(
    expressions | sub_queries() | st.builds(lambda value: Binary("has", Name("*"), value), strings),
    lambda children: (
        st.builds(Binary, st.sampled_from(["and", "or"]), children, children)
        | st.builds(lambda operand: Call("not", (operand,)), children)
    ),
    max_leaves=4,
)


@st.composite
def functions(draw: st.DrawFn) -> FunctionDef:
    params = st.builds(
        FunctionParam, identifiers, st.sampled_from(["string", "int", "(*)"]), st.none() | leaves
    )
    body = Query((), draw(tabular()))
    if draw(st.booleans()):
        return FunctionDef((), body, view=True)
    return FunctionDef(tuple(draw(st.lists(params, max_size=2))), body)


sources = st.one_of(
    st.builds(TableRef, identifiers),
    datatables(),
    st.builds(Print, assignment_lists),
    st.builds(Range, names, expressions, expressions, expressions),
    st.builds(
        Externaldata,
        st.lists(st.tuples(names, identifiers), min_size=1, max_size=2).map(tuple),
        _tuples(strings, 1),
        st.just(())
        | st.lists(st.builds(Assignment, identifiers, strings), min_size=1, max_size=2).map(tuple),
    ),
    st.builds(lambda tables: Union(tuple(tables)), st.lists(sides(wildcard=True), min_size=1, max_size=2)),
    st.builds(Search, st.just(()), expressions, st.sampled_from([(), (("kind", "case_sensitive"),)])),
)


@st.composite
def queries(draw: st.DrawFn) -> Query:
    lets = draw(st.lists(st.builds(Let, identifiers, expressions | tabular() | functions()), max_size=2))
    source = draw(sources)
    more = draw(st.lists(tabular_operators(), max_size=2))
    earlier = draw(st.lists(tabular(), max_size=1))
    body = Pipeline(source, (Where(draw(predicates)), *more, *draw(operator_lists)))
    return Query(tuple(lets), body, earlier=tuple(earlier))


@PROPERTY
@given(queries())
def test_printed_trees_parse_back(query: Query) -> None:
    assert parse(to_kql(query)) == query


def _check_error(text: str, err: KqlSyntaxError | UnsupportedKqlError) -> None:
    assert err.line is not None and err.column is not None
    lines = text.split("\n")
    assert 1 <= err.line <= len(lines)
    assert err.context == lines[err.line - 1].rstrip("\r")


@PROPERTY
@given(st.text())
def test_any_text_parses_or_fails_with_kql_syntax_error(text: str) -> None:
    try:
        parse(text)
    except (KqlSyntaxError, UnsupportedKqlError) as err:  # the latter: `let` statements only
        _check_error(text, err)


FRAGMENTS = [
    *["let", "x", "=", ";", "T", "|", "where", "summarize", "by", "project", "extend", "distinct", "take"],
    *["join", "kind=inner", "on", "$left.a", "union", "Device*", "mv-expand", "parse", "with", "*", "{", "}"],
    *[
        "top-nested",
        "of",
        "project-away",
        "datetime(2021-01-01)",
        "h'x'",
        "```a\nb```",
        ".",
        "dynamic({",
        ":",
    ],
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
    except (KqlSyntaxError, UnsupportedKqlError) as err:  # the latter: `let` statements only
        _check_error(text, err)
    else:
        assert parse(to_kql(query)) == query
