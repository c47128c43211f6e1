"""Example-based tests of the KQL parser and printer, on small inline queries shaped like the corpus.

The corpus test at the end runs only where the shared corpus sits next to the repository.
"""

from __future__ import annotations

import pytest
import yaml

from conftest import corpus
from rmm2sigma.errors import KqlSyntaxError, UnsupportedKqlError
from rmm2sigma.kql import (
    ArrayLit,
    As,
    Assignment,
    Between,
    Binary,
    BoolLit,
    Call,
    Consume,
    Count,
    Datatable,
    DeclareParameters,
    Distinct,
    Evaluate,
    ExpandColumn,
    Expr,
    Extend,
    Externaldata,
    Facet,
    Find,
    Fork,
    ForkBranch,
    FunctionDef,
    FunctionParam,
    GetSchema,
    Index,
    Invoke,
    Join,
    Let,
    Lookup,
    MakeSeries,
    Member,
    MvApply,
    MvExpand,
    Name,
    NullLit,
    NumberLit,
    ObjectLit,
    Parse,
    ParseColumn,
    ParseKv,
    ParseWhere,
    Partition,
    Pipeline,
    Pos,
    Print,
    Project,
    ProjectAway,
    ProjectKeep,
    ProjectRename,
    ProjectReorder,
    Query,
    Range,
    Reduce,
    Render,
    Sample,
    SampleDistinct,
    Scan,
    ScanStep,
    Search,
    Serialize,
    SeriesAggregate,
    SetOp,
    SetOption,
    Sort,
    SortKey,
    StringLit,
    SubQuery,
    Summarize,
    TableRef,
    Take,
    TimespanLit,
    Top,
    TopHitters,
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

S = StringLit
A = Name


def where(text: str) -> Expr:
    """The predicate of ``T | where <text>``, round-tripped through the printer on the way."""
    query = parse(f"T | where {text}")
    assert parse(to_kql(query)) == query
    predicate = query.body.operators[0]
    assert isinstance(predicate, Where)
    return predicate.predicate


def error(text: str) -> KqlSyntaxError:
    with pytest.raises(KqlSyntaxError) as caught:
        parse(text)
    return caught.value


# ---------------------------------------------------------------- whole queries

ACTION1 = "\n".join(  # trailing spaces as in the corpus
    [
        "let Time_start = now(-5d);",
        "let Time_end = now();",
        "//",
        "DeviceProcessEvents ",
        "| where Timestamp between (Time_start..Time_end)",
        "| where ProcessVersionInfoCompanyName has 'Action1'",
        "    and ProcessVersionInfoProductName has 'Action1'",
        "| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp), ",
        "    Report=make_set(ReportId), Count=count() by DeviceId, DeviceName",
    ]
)


def test_corpus_shaped_query() -> None:
    query = parse(ACTION1)
    assert query == Query(
        lets=(
            Let("Time_start", Call("now", (Unary("-", TimespanLit("5d")),))),
            Let("Time_end", Call("now")),
        ),
        body=Pipeline(
            TableRef("DeviceProcessEvents"),
            (
                Where(Between(A("Timestamp"), A("Time_start"), A("Time_end"))),
                Where(
                    Binary(
                        "and",
                        Binary("has", A("ProcessVersionInfoCompanyName"), S("Action1")),
                        Binary("has", A("ProcessVersionInfoProductName"), S("Action1")),
                    )
                ),
                Summarize(
                    (
                        Assignment("FirstSeen", Call("min", (A("Timestamp"),))),
                        Assignment("LastSeen", Call("max", (A("Timestamp"),))),
                        Assignment("Report", Call("make_set", (A("ReportId"),))),
                        Assignment("Count", Call("count")),
                    ),
                    (Assignment(None, A("DeviceId")), Assignment(None, A("DeviceName"))),
                ),
            ),
        ),
    )
    assert parse(to_kql(query)) == query


def test_positions_are_one_based_line_and_column() -> None:
    query = parse(ACTION1)
    assert query.pos == Pos(1, 1)
    assert query.lets[1].pos == Pos(2, 1)
    now = query.lets[0].value
    assert isinstance(now, Call) and now.pos == Pos(1, 18)
    assert isinstance(now.args[0], Unary) and now.args[0].pos == Pos(1, 22)
    assert now.args[0].operand.pos == Pos(1, 23)
    body = query.body
    assert body.pos == body.source.pos == Pos(4, 1)
    between, has, summarize = body.operators
    assert between.pos == Pos(5, 3)
    assert isinstance(has, Where) and isinstance(has.predicate, Binary)
    assert has.predicate.pos == has.predicate.left.pos == Pos(6, 9)  # an `and` starts at its left side
    assert has.predicate.right.pos == Pos(7, 9)
    assert isinstance(has.predicate.right, Binary) and has.predicate.right.right.pos == Pos(7, 43)
    assert isinstance(summarize, Summarize)
    assert summarize.aggregates[2].pos == Pos(9, 5)
    assert summarize.by[1].pos == Pos(9, 59)


def test_statements_trailing_semicolon_and_lone_semicolon_line() -> None:
    text = "let x = 1;\nlet t =\nDeviceFileCertificateInfo\n| distinct Sha1\n;\nT | where Sha1 in (t);\n"
    query = parse(text)
    assert [let.name for let in query.lets] == ["x", "t"]
    distinct = Distinct((Assignment(None, A("Sha1")),))
    assert query.lets[1].value == Pipeline(TableRef("DeviceFileCertificateInfo"), (distinct,))
    assert query.body.operators == (Where(SetOp("in", A("Sha1"), (A("t"),))),)
    assert parse("T") == Query((), Pipeline(TableRef("T")))


# ---------------------------------------------------------------- scalar expressions

STRING_OPS = [
    f"{negation}{word}{suffix}"
    for word in ("has", "contains", "startswith", "endswith")
    for negation in ("", "!")
    for suffix in ("", "_cs")
] + ["hasprefix", "hassuffix", "!hasprefix", "hassuffix_cs", "matches regex"]


@pytest.mark.parametrize("op", [*STRING_OPS, "==", "!=", "=~", "!~", "<", "<=", ">", ">="])
def test_binary_operators(op: str) -> None:
    assert where(f"Col {op} 'v'") == Binary(op, A("Col"), S("v"))


def test_angle_brackets_are_kustos_other_spelling_of_not_equal() -> None:
    """``a <> b`` is ``a != b`` (Kusto.Language accepts it); the tree keeps one spelling, so the
    printer and the lowering see ``!=``."""
    assert where("RemoteIP <> '10.0.0.1'") == Binary("!=", A("RemoteIP"), S("10.0.0.1"))


@pytest.mark.parametrize(
    ("legacy", "op"),
    [("notcontains", "!contains"), ("notcontainscs", "!contains_cs"), ("containscs", "contains_cs")],
)
def test_legacy_contains_spellings_are_kept_as_the_current_ones(legacy: str, op: str) -> None:
    """Kusto.Language still reads the old spellings (FalconFriday's hunts write `notcontains`)."""
    assert where(f"Col {legacy} 'v'") == Binary(op, A("Col"), S("v"))


def test_a_tabular_function_call_is_a_join_or_union_side() -> None:
    """``join F(1d) on K`` and ``union T, F(2h)``: a function's rows, as a sub-query of one call."""
    query = parse("T\n| join kind=inner F(1d) on K\n| union U, F(2h)")
    join, union = query.body.operators
    assert isinstance(join, Join) and join.right.source == Call("F", (TimespanLit("1d"),))
    assert isinstance(union, Union) and union.tables[1].source == Call("F", (TimespanLit("2h"),))


def test_a_name_may_start_with_a_dollar_sign() -> None:
    """``$table`` (the table a ``search`` or ``union withsource`` row came from) is a name, as
    ``$left``/``$right`` are: Kusto.Language starts identifiers with ``$`` too."""
    query = parse("search in (T, U) 'x'\n| summarize count() by $table")
    assert query.body.operators[0] == Summarize(
        (Assignment(None, Call("count", ())),), (Assignment(None, A("$table")),)
    )


def test_a_parse_pattern_names_a_column_in_brackets() -> None:
    query = parse("T | parse X with * 'a' ['Token Level'] 'b' Other:string *")
    (op,) = query.body.operators
    assert isinstance(op, Parse) and op.pattern[2] == ParseColumn("Token Level")
    assert to_kql(query).endswith("['Token Level'] 'b' Other:string *")


def test_a_query_of_statements_only_is_valid_kql_with_nothing_to_convert() -> None:
    with pytest.raises(UnsupportedKqlError) as error:
        parse("let Device = 'x';\nlet Window = 5m;")
    assert (error.value.line, error.value.column) == (2, 1) and "no result statement" in str(error.value)


def test_matches_regex_spacing_is_normalised() -> None:
    assert where("a matches \t regex @'^x\\d+'") == Binary("matches regex", A("a"), S("^x\\d+", True))


@pytest.mark.parametrize("op", ["in", "!in", "in~", "!in~", "has_any", "has_all"])
def test_set_operators(op: str) -> None:
    assert where(f"Col {op} ('a', \"b\")") == SetOp(op, A("Col"), (S("a"), S("b")))


def test_between_and_not_between() -> None:
    assert where("n between (1 .. 10)") == Between(A("n"), NumberLit(1), NumberLit(10))
    assert where("t !between (ago(1d)..now())") == Between(
        A("t"), Call("ago", (TimespanLit("1d"),)), Call("now"), negated=True
    )


def test_and_binds_tighter_than_or() -> None:
    a, b, c = (Binary("has", A(x), S(x)) for x in "abc")
    assert where("a has 'a' or b has 'b' and c has 'c'") == Binary("or", a, Binary("and", b, c))
    assert where("(a has 'a' or b has 'b') and c has 'c'") == Binary("and", Binary("or", a, b), c)
    assert where("a has 'a' or b has 'b' or c has 'c'") == Binary("or", Binary("or", a, b), c)


def test_not_is_a_call() -> None:
    assert where("not(isempty(x)) and not (a has 'b')") == Binary(
        "and", Call("not", (Call("isempty", (A("x"),)),)), Call("not", (Binary("has", A("a"), S("b")),))
    )


def test_arithmetic_unary_minus_and_indexing() -> None:
    assert where("-a + b * 2 > 1") == Binary(
        ">", Binary("+", Unary("-", A("a")), Binary("*", A("b"), NumberLit(2))), NumberLit(1)
    )
    assert where("tostring(split(RemoteUrl,'/')[0]) == 'x'") == Binary(
        "==", Call("tostring", (Index(Call("split", (A("RemoteUrl"), S("/"))), NumberLit(0)),)), S("x")
    )


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("42", NumberLit(42)),
        ("1.5", NumberLit(1.5)),
        ("2e3", NumberLit(2000.0)),
        ("true", BoolLit(True)),
        ("false", BoolLit(False)),
        ("5d", TimespanLit("5d")),
        ("1h", TimespanLit("1h")),
        ("30m", TimespanLit("30m")),
        ("10s", TimespanLit("10s")),
        ("100ms", TimespanLit("100ms")),
        ("1.5h", TimespanLit("1.5h")),
    ],
)
def test_literals(text: str, literal: Expr) -> None:
    assert where(f"x == {text}") == Binary("==", A("x"), literal)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'a\\b\tc\nd'", "a\\b\tc\nd"),
        (r"'caf\u00e9'", "café"),
        ("'DWSNET OÜ'", "DWSNET OÜ"),
        ('"Krämer IT Solutions GmbH"', "Krämer IT Solutions GmbH"),
        ("'http://x // not a comment'", "http://x // not a comment"),
    ],
)
def test_quoted_strings_are_decoded(text: str, value: str) -> None:
    assert where(f"x has {text}") == Binary("has", A("x"), S(value))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r"@'\Program Files\Level\'", "\\Program Files\\Level\\"),
        (r"@'C:\it''s\'", "C:\\it's\\"),
        (r'@"\a ""b"" \"', '\\a "b" \\'),
    ],
)
def test_verbatim_strings_keep_backslashes(text: str, value: str) -> None:
    assert where(f"x has {text}") == Binary("has", A("x"), S(value, verbatim=True))


def test_columns_count_characters_after_non_ascii() -> None:
    predicate = where("Signer has 'DWSNET OÜ' and b has 'c'")
    assert isinstance(predicate, Binary) and predicate.right.pos == Pos(1, 38)  # Ü is one column


def test_bracketed_names() -> None:
    assert where("['My Column'] has [\"it's\"]") == Binary("has", A("My Column"), A("it's"))
    query = parse("T | extend ['a b'] = 1, ['where'] = 2 | project ['true']")
    assert to_kql(query) == "T\n| extend ['a b']=1, ['where']=2\n| project ['true']"
    assert parse(to_kql(query)) == query


@pytest.mark.parametrize("word", sorted(KEYWORDS))
def test_names_spelled_like_keywords_round_trip(word: str) -> None:
    query = parse(f"T | where ['{word}'] == 1 | summarize ['{word}']=count() by ['{word}']")
    assert parse(to_kql(query)) == query


def test_dynamic_arrays_and_scalar_lets() -> None:
    query = parse(
        "let Time_start = now(-5d);\nlet since = ago(1d);\n"
        "let names = dynamic(['a', \"b\", @'c\\']);\nlet one = 'x';\nT | where n in (names)"
    )
    assert [let.value for let in query.lets] == [
        Call("now", (Unary("-", TimespanLit("5d")),)),
        Call("ago", (TimespanLit("1d"),)),
        Call("dynamic", (ArrayLit((S("a"), S("b"), S("c\\", True))),)),
        S("x"),
    ]
    array = query.lets[2].value
    assert isinstance(array, Call) and array.args[0].pos == Pos(3, 21)


def test_comments_inside_lists_and_after_items() -> None:
    text = """T
| where RemoteUrl has_any (
    'a.com', // first
    // a whole-line comment between items
    'b.com'  // after the last item, no comma
    // and another before the parenthesis
    )"""
    assert parse(text).body.operators == (Where(SetOp("has_any", A("RemoteUrl"), (S("a.com"), S("b.com")))),)


def test_tabs_and_crlf() -> None:
    lf = "T\n| where\tRemoteUrl has_any (\n\t'a.com',\t\n\t'b.com'\t\n)\n| take 10\n"
    crlf = lf.replace("\n", "\r\n")
    assert parse(lf) == parse(crlf)
    operators = parse(crlf).body.operators
    assert [operator.pos for operator in operators] == [Pos(2, 3), Pos(6, 3)]
    where_op = operators[0]
    assert isinstance(where_op, Where) and isinstance(where_op.predicate, SetOp)
    assert where_op.predicate.items[1].pos == Pos(4, 2)
    assert error("T\r\n| where a == 'x\r\n").context == "| where a == 'x"


# ---------------------------------------------------------------- tabular operators and sources


def test_summarize_extend_project_distinct_take() -> None:
    query = parse(
        "T | summarize count() by bin(Timestamp, 1h) | summarize by DeviceId"
        " | extend Host = tostring(split(Url, ':')[0]), Len = strlen(Url)"
        " | project DeviceId, Url2 = Url | distinct DeviceId, Url2 | take 10 | limit 5"
    )
    assert query.body.operators == (
        Summarize(
            (Assignment(None, Call("count")),),
            (Assignment(None, Call("bin", (A("Timestamp"), TimespanLit("1h")))),),
        ),
        Summarize((), (Assignment(None, A("DeviceId")),)),
        Extend(
            (
                Assignment(
                    "Host", Call("tostring", (Index(Call("split", (A("Url"), S(":"))), NumberLit(0)),))
                ),
                Assignment("Len", Call("strlen", (A("Url"),))),
            )
        ),
        Project((Assignment(None, A("DeviceId")), Assignment("Url2", A("Url")))),
        Distinct((Assignment(None, A("DeviceId")), Assignment(None, A("Url2")))),
        Take(10),
        Take(5),
    )
    assert parse(to_kql(query)) == query


DATATABLE = """let rmm_networkSet = datatable(URI:string,RMM_Tool:string)[
    'server.action1.com','action1',
    'prod.addigy.com','addigy'
];
DeviceNetworkEvents
| where RemoteUrl has_any ((rmm_networkSet | distinct URI))
| extend RemoteUrl = trim_start(@'http[s]?://',RemoteUrl)"""


def test_datatable_let_used_as_a_sub_query() -> None:
    query = parse(DATATABLE)
    table = query.lets[0].value
    assert table == Pipeline(
        Datatable(
            (("URI", "string"), ("RMM_Tool", "string")),
            (S("server.action1.com"), S("action1"), S("prod.addigy.com"), S("addigy")),
        )
    )
    assert isinstance(table, Pipeline) and table.source.pos == Pos(1, 22)
    has_any = query.body.operators[0]
    assert has_any == Where(
        SetOp(
            "has_any",
            A("RemoteUrl"),
            (SubQuery(Pipeline(TableRef("rmm_networkSet"), (Distinct((Assignment(None, A("URI")),)),))),),
        )
    )
    assert isinstance(has_any, Where) and isinstance(has_any.predicate, SetOp)
    assert has_any.predicate.items[0].pos == Pos(6, 28)  # the inner parenthesis
    assert parse(to_kql(query)) == query


def test_tabular_let_in_a_set_list_with_single_parentheses() -> None:
    query = parse("let s = T | distinct Sha1;\nU | where Sha1 in (s | project Sha1)")
    sub_query = SubQuery(Pipeline(TableRef("s"), (Project((Assignment(None, A("Sha1")),)),)))
    assert query.body.operators == (Where(SetOp("in", A("Sha1"), (sub_query,))),)
    where_op = query.body.operators[0]
    assert isinstance(where_op, Where) and isinstance(where_op.predicate, SetOp)
    assert where_op.predicate.items[0].pos == Pos(2, 20)  # no inner parenthesis: where the pipeline starts
    assert parse(to_kql(query)) == query


# ---------------------------------------------------------------- printer


def test_printer_parenthesises_and_inside_or_and_right_nested_chains() -> None:
    a, b, c = (Binary("has", A(x), S(x)) for x in "abc")
    assert to_kql(Binary("or", a, Binary("and", b, c))) == "a has 'a' or (b has 'b' and c has 'c')"
    assert to_kql(Binary("and", Binary("or", a, b), c)) == "(a has 'a' or b has 'b') and c has 'c'"
    assert to_kql(Binary("or", a, Binary("or", b, c))) == "a has 'a' or (b has 'b' or c has 'c')"
    assert to_kql(Binary("-", A("x"), Binary("-", A("y"), A("z")))) == "x - (y - z)"
    assert to_kql(Binary("==", Binary("==", A("x"), A("y")), A("z"))) == "(x == y) == z"


def test_printer_quoting() -> None:
    assert to_kql(S("it's \\ a\n")) == r"'it\'s \\ a\n'"
    assert to_kql(S("it's \\", verbatim=True)) == r"@'it''s \'"
    with pytest.raises(ValueError, match="line break"):
        to_kql(S("a\nb", verbatim=True))


# ---------------------------------------------------------------- errors


def test_has_all_followed_by_has_any() -> None:
    err = error("T\n| where FolderPath has_all has_any (@'\\a\\')")
    assert (err.line, err.column) == (2, 28)
    assert err.message == "unexpected 'has_any'; expected '('"
    assert err.context == "| where FolderPath has_all has_any (@'\\a\\')"


def test_has_all_has_any_in_a_multi_line_list() -> None:
    text = """DeviceProcessEvents
| where FileName startswith "level"
    and FolderPath has_all has_any (
        @'\\Program Files\\Level\\'
    )"""
    err = error(text)
    assert (err.line, err.column) == (3, 28)


def test_pipe_without_an_operator() -> None:
    err = error("T\n| where Timestamp > ago(1d)\n| Sha1 in (rmmInitialFileSet)")
    assert (err.line, err.column) == (3, 3)
    assert err.message.startswith("unexpected name 'Sha1'; expected a tabular operator ('where'")
    assert err.context == "| Sha1 in (rmmInitialFileSet)"


def test_keyword_prefix_is_not_split_off_a_name() -> None:
    err = error("T | whereabouts x")
    assert (err.line, err.column, err.message[:29]) == (1, 5, "unexpected name 'whereabouts'")


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("T | where a == 'abc", 16),
        ('T | where a == "abc', 16),
        ("T | where a == @'abc", 16),
        ("T | where a in ('x', 'y)", 22),
    ],
)
def test_unterminated_string_points_at_the_opening_quote(text: str, column: int) -> None:
    err = error(text)
    assert (err.line, err.column, err.message) == (1, column, "unterminated string")


def test_unbalanced_parentheses() -> None:
    err = error("T\n| where (a == 1\n")
    assert (err.line, err.column) == (2, 16)  # just after the last token
    assert err.message == "unexpected end of query; expected ')'"
    err = error("T | where a == 1)")
    assert (err.line, err.column) == (1, 17)
    assert err.message.startswith("unexpected ')'; expected")


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    err = error("T | where " + "(" * 1000 + "a" + ")" * 1000)
    assert (err.line, err.column) == (1, 75)  # the 65th parenthesis
    assert "nesting deeper than 64" in err.message
    parse("T | where " + "(" * 64 + "a" + ")" * 64)
    parse("T | where a has '" + "(" * 100 + "' // " + "(" * 100)  # strings and comments do not count


def test_long_or_chain_parses_left_associated() -> None:
    query = parse("T | where " + "\n or ".join(f"a{i} has 'x{i}'" for i in range(5000)))
    predicate = query.body.operators[0]
    assert isinstance(predicate, Where)
    node, depth = predicate.predicate, 0
    while isinstance(node, Binary) and node.op == "or":
        assert node.right == Binary("has", A(f"a{4999 - depth}"), S(f"x{4999 - depth}"))
        node, depth = node.left, depth + 1
    assert depth == 4999
    printed = to_kql(query)
    assert to_kql(parse(printed)) == printed


@pytest.mark.parametrize("text", ["", "   \n\t", "// only a comment\r\n//\n"])
def test_empty_query(text: str) -> None:
    err = error(text)
    assert (err.message, err.line, err.column) == ("empty query", 1, 1)


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("T | where a has 'x\\q'", 1, 19, "unknown escape sequence '\\q' in a string"),
        ("T | take 1.5", 1, 10, "'take' needs a whole number, found 1.5"),
        ("T | where a == 1e999", 1, 16, "number out of range: 1e999"),
        (
            "let d = datatable(a:string, b:string)['1','2','3'];\nd",
            1,
            9,
            "datatable has 3 values, not a multiple",
        ),
        ("let a = 1", 1, 10, "unexpected end of query; expected ';'"),
        ("T | where a ==", 1, 15, "unexpected end of query; expected an expression"),
        ("T | summarize", 1, 14, "unexpected end of query; expected an expression, 'by'"),
        ("T | where #", 1, 11, "unexpected character '#'; expected an expression"),
        ("T | where a == 1 b", 1, 18, "unexpected name 'b'; expected an operator"),
        ("T | where x == {{y}}", 1, 16, "unexpected '{'; expected an expression"),  # not KQL
        ("T | where !isempty(b)", 1, 11, "unexpected character '!'; expected an expression"),
    ],
)
def test_other_errors(text: str, line: int, column: int, message: str) -> None:
    err = error(text)
    assert (err.line, err.column) == (line, column)
    assert err.message.startswith(message)


# ---------------------------------------------------------------- the shared corpus

CORPUS = corpus("azure-sentinel-rmm")


@pytest.mark.corpus
def test_corpus() -> None:
    queries = {
        path.name: yaml.safe_load(path.read_text(encoding="utf-8"))["query"]
        for path in sorted(CORPUS.glob("*.yaml"))
    }
    assert len(queries) == 165
    # The corpus README says rmm_Level_createproc.yaml has `has_all has_any`; if a copy does,
    # it must fail right there (the stored copy has only `has_any` and parses).
    expected = {"rmm_DWService_createproc.yaml": (12, 3)}  # `| Sha1 in (rmmInitialFileSet)`
    for name, text in queries.items():
        offset = text.find("has_all has_any")
        if offset >= 0:
            line_start = text.rfind("\n", 0, offset) + 1
            expected[name] = (text.count("\n", 0, offset) + 1, offset - line_start + len("has_all ") + 1)

    failures = {}
    for name, text in queries.items():
        try:
            parse(text)
        except KqlSyntaxError as err:
            failures[name] = err

    assert {name: (err.line, err.column) for name, err in failures.items()} == expected
    dwservice = failures["rmm_DWService_createproc.yaml"]
    assert dwservice.context == "| Sha1 in (rmmInitialFileSet)"
    assert queries["rmm_DWService_createproc.yaml"].split("\n")[11][2:].startswith("Sha1 in")
    assert "'where'" in dwservice.message


def test_a_surrogate_pair_escape_is_one_character() -> None:
    query = parse(r"T | where a == '\ud83d\ude42x'")
    where = query.body.operators[0]
    assert isinstance(where, Where) and isinstance(where.predicate, Binary)
    assert where.predicate.right == StringLit("\U0001f642x")


@pytest.mark.parametrize(
    ("escaped", "decoded"),
    [
        (r"\x41", "A"),  # two hex digits
        (r"\101", "A"),  # octal: three digits from a first digit 0-3
        (r"\477", "\x277"),  # ... two from 4-7
        (r"\3\\", "\x03\\"),  # ... or one (a Windows path written with one backslash too few)
        (r"\U0001F642", "\U0001f642"),
    ],
)
def test_numeric_escapes_decode_as_kusto_language_reads_them(escaped: str, decoded: str) -> None:
    where = parse(f"T | where a == '{escaped}'").body.operators[0]
    assert isinstance(where, Where) and isinstance(where.predicate, Binary)
    assert where.predicate.right == StringLit(decoded)


def test_a_lone_surrogate_escape_is_refused_where_it_stands() -> None:
    with pytest.raises(KqlSyntaxError, match="half of a surrogate pair") as caught:
        parse("T\n| where a == 'ab\\ud800'")
    assert (caught.value.line, caught.value.column) == (2, 17)


# ---------------------------------------------------------------- the rest of KQL


def round_trip(text: str) -> Query:
    """Parse, print, parse again: the same tree."""
    query = parse(text)
    assert parse(to_kql(query)) == query, to_kql(query)
    return query


def operators(text: str) -> tuple[object, ...]:
    return round_trip(text).body.operators


def test_join_with_kind_hints_and_left_right() -> None:
    (join,) = operators(
        "T | join kind=leftanti hint.strategy=shuffle (U | where b == 1) on $left.a == $right.b, c"
    )
    assert join == Join(
        "leftanti",
        Pipeline(TableRef("U"), (Where(Binary("==", A("b"), NumberLit(1))),)),
        (Binary("==", Member(A("$left"), "a"), Member(A("$right"), "b")), A("c")),
        (("hint.strategy", "shuffle"),),
    )
    assert isinstance(join, Join) and join.keyword == "join"
    assert operators("T | join U on a") == (Join(None, Pipeline(TableRef("U")), (A("a"),)),)
    assert operators("T | lookup kind=leftouter (U) on a") == (
        Lookup("leftouter", Pipeline(TableRef("U")), (A("a"),)),
    )


def test_union_as_first_statement_and_as_operator() -> None:
    query = round_trip("union withsource=S isfuzzy=true Device*, (U | take 1), V\n| where x == 1")
    assert query.body == Pipeline(
        Union(
            (Pipeline(TableRef("Device*")), Pipeline(TableRef("U"), (Take(1),)), Pipeline(TableRef("V"))),
            (("withsource", "S"), ("isfuzzy", "true")),
        ),
        (Where(Binary("==", A("x"), NumberLit(1))),),
    )
    assert operators("T | union U | count") == (Union((Pipeline(TableRef("U")),)), Count())


def test_sort_order_and_top() -> None:
    assert operators("T | order by a desc nulls last, b | sort by c asc | top 5 by d desc") == (
        Sort((SortKey(A("a"), "desc", "last"), SortKey(A("b")))),
        Sort((SortKey(A("c"), "asc"),)),
        Top(NumberLit(5), SortKey(A("d"), "desc")),
    )


def test_top_nested() -> None:
    (nested,) = operators(
        "T | top-nested 3 of a by count(), top-nested of b with others = 'x' by n = max(c) desc"
    )
    assert nested == TopNested(
        (
            TopNestedLevel(NumberLit(3), Assignment(None, A("a")), None, Assignment(None, Call("count"))),
            TopNestedLevel(
                None, Assignment(None, A("b")), S("x"), Assignment("n", Call("max", (A("c"),))), "desc"
            ),
        )
    )


def test_member_access_and_string_index() -> None:
    assert where("parse_json(x).y['z'].w == 1 and AdditionalFields.['a b'] has 'c'") == Binary(
        "and",
        Binary("==", Member(Index(Member(Call("parse_json", (A("x"),)), "y"), S("z")), "w"), NumberLit(1)),
        Binary("has", Member(A("AdditionalFields"), "a b"), S("c")),
    )
    # a dot before an index is the index (Kusto.Language reads `x.[4]` as `x[4]`)
    indexed = Member(Index(A("x"), NumberLit(4)), "#text")
    assert where("x.[4].['#text'] == 1") == Binary("==", indexed, NumberLit(1))


def test_distinct_names_its_columns() -> None:
    assert operators("T | distinct Url = tolower(RemoteUrl), RemoteIP") == (
        Distinct((Assignment("Url", Call("tolower", (A("RemoteUrl"),))), Assignment(None, A("RemoteIP")))),
    )


def test_mv_expand() -> None:
    assert operators("T | mv-expand with_itemindex=i x = arr to typeof(string), y limit 5 | mvexpand z") == (
        MvExpand(
            (ExpandColumn("x", A("arr"), "string"), ExpandColumn(None, A("y"))),
            NumberLit(5),
            (("with_itemindex", "i"),),
        ),
        MvExpand((ExpandColumn(None, A("z")),)),
    )


def test_mv_apply_runs_operators_on_the_expanded_rows() -> None:
    query = "T | mv-apply with_itemindex=i x = arr to typeof(long), y limit 5 on (where x > 1 | top 1 by y)"
    assert operators(query) == (
        MvApply(
            (ExpandColumn("x", A("arr"), "long"), ExpandColumn(None, A("y"))),
            (Where(Binary(">", A("x"), NumberLit(1))), Top(NumberLit(1), SortKey(A("y")))),
            NumberLit(5),
            (("with_itemindex", "i"),),
        ),
    )
    assert operators("T | mvapply z on (summarize sum(z))")[0] == MvApply(
        (ExpandColumn(None, A("z")),), (Summarize((Assignment(None, Call("sum", (A("z"),))),)),)
    )


def test_make_series_reads_every_clause() -> None:
    count = Assignment("n", Call("count"))
    query = (
        "T | make-series kind=nonempty n=count() default=0, dcount(F) on Timestamp "
        "from ago(1d) to now() step 1h by DeviceName, D = DeviceId"
    )
    assert operators(query) == (
        MakeSeries(
            (
                SeriesAggregate(count, NumberLit(0)),
                SeriesAggregate(Assignment(None, Call("dcount", (A("F"),)))),
            ),
            Assignment(None, A("Timestamp")),
            Call("ago", (TimespanLit("1d"),)),
            Call("now"),
            TimespanLit("1h"),
            (Assignment(None, A("DeviceName")), Assignment("D", A("DeviceId"))),
            params=(("kind", "nonempty"),),
        ),
    )
    # from and to are optional; the old form names all three in `in range(...)`
    assert operators("T | make-series n=count() on Timestamp step 1h")[0] == MakeSeries(
        (SeriesAggregate(count),), Assignment(None, A("Timestamp")), None, None, TimespanLit("1h")
    )
    assert operators("T | make-series n=count() on T=Timestamp in range(a, b, 1h) by x")[0] == MakeSeries(
        (SeriesAggregate(count),),
        Assignment("T", A("Timestamp")),
        A("a"),
        A("b"),
        TimespanLit("1h"),
        (Assignment(None, A("x")),),
        in_range=True,
    )
    assert MakeSeries.keyword == "make-series"


def test_make_series_needs_a_step_and_the_word_in() -> None:
    assert error("T | make-series n=count() on Timestamp by x").message.startswith(
        "unexpected 'by'; expected"
    )
    err = error("T | make-series n=count() on Timestamp !in range(a, b, c)")
    assert (err.message, err.column) == ("unexpected '!in'; expected 'in'", 40)


def test_evaluate_with_an_output_schema() -> None:
    (plain, extended) = operators("T | evaluate f(x) : (a:string, b:long) | evaluate g() : (*, c:dynamic)")
    assert plain == Evaluate(Call("f", (A("x"),)), schema=(("a", "string"), ("b", "long")))
    assert extended == Evaluate(Call("g"), schema=(("c", "dynamic"),), extends_input=True)
    assert operators("T | evaluate g() : (*)")[0] == Evaluate(Call("g"), schema=(), extends_input=True)
    assert operators("T | evaluate g()")[0] == Evaluate(Call("g"))


def test_set_and_declare_statements_are_kept_with_the_query() -> None:
    query = round_trip(
        "set notruncation;\ndeclare query_parameters(p:string = 'a', n:long);\n"
        "let x = 1;\nset query_take_max_records = 10;\nT | where F == p"
    )
    assert query.settings == (
        SetOption("notruncation"),
        DeclareParameters((FunctionParam("p", "string", S("a")), FunctionParam("n", "long"))),
        SetOption("query_take_max_records", NumberLit(10)),
    )
    assert [let.name for let in query.lets] == ["x"]
    assert query.settings[1].pos == Pos(2, 1)
    assert query.body == Pipeline(TableRef("T"), (Where(Binary("==", A("F"), A("p"))),))


def test_operators_that_split_sample_or_consume_rows() -> None:
    assert operators("T | fork (where a == 1) B = (take 1 | count)") == (
        Fork(
            (
                ForkBranch(None, (Where(Binary("==", A("a"), NumberLit(1))),)),
                ForkBranch("B", (Take(1), Count())),
            )
        ),
    )
    assert operators("T | facet by a, b with (take 5) | facet by c") == (
        Facet((A("a"), A("b")), (Take(5),)),
        Facet((A("c"),)),
    )
    assert operators("T | reduce by x with threshold=0.1, characters='/'")[0] == Reduce(
        Assignment(None, A("x")),
        (Assignment("threshold", NumberLit(0.1)), Assignment("characters", S("/"))),
    )
    assert operators("T | sample-distinct 5 of F | top-hitters 3 of G by W | consume") == (
        SampleDistinct(NumberLit(5), Assignment(None, A("F"))),
        TopHitters(NumberLit(3), Assignment(None, A("G")), Assignment(None, A("W"))),
        Consume(),
    )
    assert operators("T | parse-kv C as (a:string, ['b c']:long) with (pair_delimiter=' ')")[0] == ParseKv(
        A("C"), (("a", "string"), ("b c", "long")), (Assignment("pair_delimiter", S(" ")),)
    )
    # the keywords stay names where no operator can stand
    assert operators("T | extend fork = 1, facet = 2, reduce = 3, consume = 4, default = 5")[0] == Extend(
        tuple(
            Assignment(name, NumberLit(value))
            for value, name in enumerate(("fork", "facet", "reduce", "consume", "default"), 1)
        )
    )


def test_find_as_a_source_and_after_a_pipe() -> None:
    predicate = Binary("==", A("F"), S("a"))
    query = round_trip("find withsource=W in (T, U*) where F == 'a' project F, n:long, pack(*) | take 1")
    assert query.body == Pipeline(
        Find(
            ("T", "U*"),
            predicate,
            (ParseColumn("F"), ParseColumn("n", "long"), Call("pack", (A("*"),))),
            params=(("withsource", "W"),),
        ),
        (Take(1),),
    )
    # `where` may be left out when nothing stands before the predicate
    assert round_trip("find F == 'a' project-smart").body.source == Find((), predicate, project_smart=True)
    assert operators("T | find where F == 'a'") == (Find((), predicate),)
    err = error("find in (T) F == 'a'")
    assert (err.message.startswith("unexpected name 'F'"), err.column) == (True, 13)
    assert error("find where F == 'a' project pick(*)").message == "unexpected name 'pick'; expected 'pack'"


def test_scan_reads_its_clauses_and_steps() -> None:
    (scan,) = operators(
        "T | scan with_match_id=m order by Timestamp asc partition by DeviceId declare (n:long = 0) with ("
        "step s1 output=none: F == 'a' => n = s1.n + 1, k = 2; step s2: true;)"
    )
    assert scan == Scan(
        (
            ScanStep(
                "s1",
                Binary("==", A("F"), S("a")),
                (
                    Assignment("n", Binary("+", Member(A("s1"), "n"), NumberLit(1))),
                    Assignment("k", NumberLit(2)),
                ),
                "none",
            ),
            ScanStep("s2", BoolLit(True)),
        ),
        (SortKey(A("Timestamp"), "asc"),),
        (A("DeviceId"),),
        (FunctionParam("n", "long", NumberLit(0)),),
        (("with_match_id", "m"),),
    )
    assert operators("T | scan with ()") == (Scan(()),)


def test_parse_and_parse_where() -> None:
    assert operators("T | parse kind=regex x with * 'a' n:int \"b\" rest | parse-where y with 'k=' v") == (
        Parse(
            A("x"),
            (A("*"), S("a"), ParseColumn("n", "int"), S("b"), ParseColumn("rest")),
            (("kind", "regex"),),
        ),
        ParseWhere(A("y"), (S("k="), ParseColumn("v"))),
    )
    assert ParseWhere.keyword == "parse-where"


def test_project_away_keep_rename_reorder() -> None:
    assert operators(
        "T | project-away a*, b | project-keep c | project-rename n = o | project-reorder d desc, e*"
    ) == (
        ProjectAway((A("a*"), A("b"))),
        ProjectKeep((A("c"),)),
        ProjectRename((Assignment("n", A("o")),)),
        ProjectReorder((SortKey(A("d"), "desc"), SortKey(A("e*")))),
    )


def test_summarize_aggregates_and_tuple_names() -> None:
    (summarize,) = operators(
        "T | summarize hint.shufflekey=k (t, r) = arg_max(ts, r), dcount(d) by bin(ts, 1h)"
    )
    assert summarize == Summarize(
        (
            TupleAssignment(None, Call("arg_max", (A("ts"), A("r"))), names=("t", "r")),
            Assignment(None, Call("dcount", (A("d"),))),
        ),
        (Assignment(None, Call("bin", (A("ts"), TimespanLit("1h")))),),
    )


def test_where_star_filter_and_distinct_star() -> None:
    assert operators("T | filter * has 'x' | distinct *") == (
        Where(Binary("has", A("*"), S("x"))),
        Distinct((Assignment(None, A("*")),)),
    )
    assert where("count() > 1 and arg_max(a, *) == 1") == Binary(
        "and",
        Binary(">", Call("count"), NumberLit(1)),
        Binary("==", Call("arg_max", (A("a"), A("*"))), NumberLit(1)),
    )


def test_materialize_toscalar_and_tabular_arguments() -> None:
    query = round_trip("let m = materialize(T | take 1);\nlet n = toscalar(m | count);\nm | where x < n")
    assert query.lets[0].value == Call("materialize", (SubQuery(Pipeline(TableRef("T"), (Take(1),))),))
    assert query.lets[1].value == Call("toscalar", (SubQuery(Pipeline(TableRef("m"), (Count(),))),))


def test_other_operators() -> None:
    assert operators(
        "T | evaluate hint.distribution=per_node bag_unpack(x) | invoke f(1) | as hint.materialized=true X"
        " | serialize n = row_number() | sample 5 | getschema | count"
        " | partition hint.strategy=native by k (top 1 by t | project t)"
    ) == (
        Evaluate(Call("bag_unpack", (A("x"),)), (("hint.distribution", "per_node"),)),
        Invoke(Call("f", (NumberLit(1),))),
        As("X", (("hint.materialized", "true"),)),
        Serialize((Assignment("n", Call("row_number")),)),
        Sample(NumberLit(5)),
        GetSchema(),
        Count(),
        Partition(
            A("k"),
            (Top(NumberLit(1), SortKey(A("t"))), Project((Assignment(None, A("t")),))),
            (("hint.strategy", "native"),),
        ),
    )


def test_search_externaldata_print_sources() -> None:
    assert round_trip("search kind=case_sensitive in (T, U*) 'x'").body.source == Search(
        ("T", "U*"), S("x"), (("kind", "case_sensitive"),)
    )
    assert round_trip("externaldata(a:string)['https://x'] with (format='csv')").body.source == Externaldata(
        (("a", "string"),), (S("https://x"),), (Assignment("format", S("csv")),)
    )
    assert round_trip("print x = 1, 'y'").body.source == Print(
        (Assignment("x", NumberLit(1)), Assignment(None, S("y")))
    )


def test_range_source_and_render() -> None:
    query = round_trip("range d from 1 to 10 step 2 | render timechart with (title='x')")
    assert query.body == Pipeline(
        Range("d", NumberLit(1), NumberLit(10), NumberLit(2)),
        (Render("timechart", (Assignment("title", S("x")),)),),
    )


def test_literals_of_real_kql() -> None:
    assert where("t > datetime(2021-01-01T10:00:00Z)") == Binary(
        ">", A("t"), TypedLit("datetime", "2021-01-01T10:00:00Z")
    )
    assert where("a == long(null) and b == 0x1F and c == timespan(1.00:00:00)") == Binary(
        "and",
        Binary("and", Binary("==", A("a"), TypedLit("long", "null")), Binary("==", A("b"), NumberLit(31))),
        Binary("==", A("c"), TypedLit("timespan", "1.00:00:00")),
    )
    assert where("a == h'x' and b == @\"c:\\\" and c == ```l1\nl2``` and d == 'a' \"b\"") == Binary(
        "and",
        Binary(
            "and",
            Binary("and", Binary("==", A("a"), S("x")), Binary("==", A("b"), S("c:\\", True))),
            Binary("==", A("c"), S("l1\nl2")),
        ),
        Binary("==", A("d"), S("ab")),
    )
    assert where("d == dynamic({'a': [1, null, {'b': -2}], 'c': true})") == Binary(
        "==",
        A("d"),
        Call(
            "dynamic",
            (
                ObjectLit(
                    (
                        (
                            "a",
                            ArrayLit(
                                (NumberLit(1), NullLit(), ObjectLit((("b", Unary("-", NumberLit(2))),)))
                            ),
                        ),
                        ("c", BoolLit(True)),
                    )
                ),
            ),
        ),
    )
    assert where("typeof(x) == typeof(dynamic) and iff(a, 1, 2) > case(b, 1, 2)") == Binary(
        "and",
        Binary("==", Call("typeof", (A("x"),)), Call("typeof", (A("dynamic"),))),
        Binary(
            ">",
            Call("iff", (A("a"), NumberLit(1), NumberLit(2))),
            Call("case", (A("b"), NumberLit(1), NumberLit(2))),
        ),
    )


def test_comparison_chains_fold_to_the_left() -> None:
    assert where("a < b == c") == Binary("==", Binary("<", A("a"), A("b")), A("c"))


def test_let_functions_and_views() -> None:
    query = round_trip(
        "let f = (T:(*), s:string, n:int = 1) { T | where x == s | take 5 };\n"
        "let v = view() { U };\n"
        "f(V, 'a')"
    )
    assert query.lets[0].value == FunctionDef(
        (FunctionParam("T", "(*)"), FunctionParam("s", "string"), FunctionParam("n", "int", NumberLit(1))),
        Query((), Pipeline(TableRef("T"), (Where(Binary("==", A("x"), A("s"))), Take(5)))),
    )
    assert query.lets[1].value == FunctionDef((), Query((), Pipeline(TableRef("U"))), view=True)
    assert query.body == Pipeline(Call("f", (A("V"), S("a"))))


def test_several_statements() -> None:
    query = round_trip("let a = 1;\nT | take 1;\nlet b = 2;\nU")
    assert [let.name for let in query.lets] == ["a", "b"]
    assert query.earlier == (Pipeline(TableRef("T"), (Take(1),)),)
    assert query.body == Pipeline(TableRef("U"))


def test_parenthesised_pipeline_as_a_source_is_flattened() -> None:
    assert round_trip("(T | where a == 1) | take 1").body == Pipeline(
        TableRef("T"), (Where(Binary("==", A("a"), NumberLit(1))), Take(1))
    )


def test_keywords_as_column_names() -> None:
    assert operators("T | extend kind = 1, by = 2 | project on, of = 3") == (
        Extend((Assignment("kind", NumberLit(1)), Assignment("by", NumberLit(2)))),
        Project((Assignment(None, A("on")), Assignment("of", NumberLit(3)))),
    )


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("T | where x == {{y}}", 1, 16, "unexpected '{'"),
        ("T | join kind=inner U on", 1, 25, "unexpected end of query; expected an expression"),
        ("T | mv-expand x to tostring(y)", 1, 20, "expected 'typeof' after 'to'"),
        ("T | search has_any (U) 'y'", 1, 12, "unexpected 'has_any'; expected 'in'"),
        ("let f = (a:string) { T | take 1 ;\nf('x')", 2, 1, "unexpected name 'f'"),
    ],
)
def test_errors_in_real_kql_are_located(text: str, line: int, column: int, message: str) -> None:
    err = error(text)
    assert (err.line, err.column) == (line, column), err.message
    assert err.message.startswith(message), err.message
