"""KQL text to the syntax tree of ``syntax.py``.

The tree builder runs inside Lark's LALR parser (the ``transformer=`` option), so no parse tree is
built and nothing recurses: deep input only grows Lark's value stack, and ``and``/``or`` chains
arrive as flat lists that are folded in a loop. Every failure becomes a ``KqlSyntaxError`` that
names the line, the column and what was expected.
"""

from __future__ import annotations

import functools
import math
import re
from typing import cast

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from ..errors import KqlSyntaxError, UnsupportedKqlError
from ..sigmahq import default_cache_dir
from . import syntax as k
from .syntax import Expr, Pos

__all__ = ["KEYWORDS", "MAX_DEPTH", "parse"]

MAX_DEPTH = 64
"""Deepest nesting of parentheses and brackets accepted: the tree's consumers recurse."""

_OPERATOR_WORDS = (
    *("where", "filter", "summarize", "project", "extend", "distinct", "take", "limit", "sort"),
    *("order", "top", "top-nested", "join", "lookup", "union", "mv-expand", "mvexpand", "mv-apply"),
    *("mvapply", "parse"),
    *("parse-where", "project-away", "project-keep", "project-rename", "project-reorder"),
    *("search", "evaluate", "invoke", "partition", "count", "getschema", "serialize", "as"),
    *("sample", "render", "make-series", "fork", "facet", "reduce", "sample-distinct"),
    *("top-hitters", "consume", "parse-kv", "find", "scan"),
)
KEYWORDS = frozenset(
    {
        *(
            "let",
            "set",
            "declare",
            "view",
            "datatable",
            "externaldata",
            "print",
            "range",
            "from",
            "step",
            "dynamic",
        ),
        *("true", "false", "null"),
        *("and", "or", "between", "by", "on", "of", "with", "others", "to", "asc", "desc", "nulls"),
        *(
            "first",
            "last",
            "kind",
            "withsource",
            "isfuzzy",
            "bagexpansion",
            "with_itemindex",
            "with_match_id",
            "flags",
        ),
        *("datetime", "date", "timespan", "time", "guid", "int", "long", "real", "double", "decimal"),
        *("bool", "boolean", "in", "has_any", "has_all"),
        *(word for word in _OPERATOR_WORDS if "-" not in word),
        *(
            f"{word}{suffix}"
            for word in ("has", "contains", "startswith", "endswith", "hasprefix", "hassuffix")
            for suffix in ("", "_cs")
        ),
    }
)
"""Words the grammar reads as keywords somewhere; the printer brackets names spelled like them."""


@functools.lru_cache(maxsize=256)
def parse(text: str) -> k.Query:
    """Parse one KQL query (``let`` statements and a tabular pipeline). Raises ``KqlSyntaxError``
    for text that is no KQL, ``UnsupportedKqlError`` for statements with no result statement.

    Cached: reading an input, cutting it into parts and converting each read the same text again,
    and the tree is immutable, so they share one parse (errors are raised afresh)."""
    if _BLANK.fullmatch(text):
        raise _error(text, "empty query", 1, 1)
    _check_depth(text)
    try:
        return cast(k.Query, _lark().parse(text))
    except UnexpectedToken as err:
        raise _unexpected_token(text, err) from None
    except UnexpectedCharacters as err:
        raise _unexpected_characters(text, err) from None
    except KqlSyntaxError as err:  # raised by the tree builder, which does not see the text
        raise _error(text, err.message, cast(int, err.line), cast(int, err.column)) from None
    except UnsupportedKqlError as err:  # valid KQL with no result to convert (statements only)
        line, column = cast(int, err.line), cast(int, err.column)
        raise UnsupportedKqlError(err.message, line=line, column=column, context=_line(text, line)) from None


@functools.cache
def _lark() -> Lark:
    """The parser, built on first use; Lark keeps its tables in a cache file keyed by the grammar."""
    return Lark.open(
        "grammar.lark",
        rel_to=__file__,
        parser="lalr",
        lexer="contextual",
        transformer=_Builder(),
        maybe_placeholders=True,
        cache=_cache_file(),
    )


def _cache_file() -> str | bool:
    """Where Lark keeps the LALR tables (building them takes about 2 s; loading, a fraction).

    Lark checks the file against a hash of the grammar and options, and loads it with pickle, so it
    lives in the user's own cache folder, never in the shared temp folder; without one, no cache.
    """
    folder = default_cache_dir().parent  # rmm2sigma's folder in the user's cache
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return False
    return str(folder / "kql-grammar.lark-cache")


# ---------------------------------------------------------------- tree building


def _at(token: Token) -> Pos:
    # The lexer always sets positions; Lark's types allow None for hand-made tokens.
    return Pos(cast(int, token.line), cast(int, token.column))


# Kusto's escapes (Kusto.Language's TokenParser.ScanStringEscape and KustoFacts.DecodeEscapes)
_ESCAPES = {
    "'": "'",
    '"': '"',
    "\\": "\\",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
# a surrogate pair, \uXXXX, \UXXXXXXXX, \xHH, octal (three digits only from a first digit 0-3)
_ESCAPE = re.compile(
    r"\\(u[dD][89abAB][0-9A-Fa-f]{2}\\u[dD][c-fC-F][0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}"
    r"|x[0-9A-Fa-f]{2}|[0-3][0-7]{2}|[0-7]{1,2}|.)"
)


def _unescape(body: str, line: int, column: int) -> str:
    """Decode the backslash escapes of a quoted string whose body starts at ``column``.

    A ``\\uD83D\\uDE42`` surrogate pair is one character; a lone surrogate is no character at
    all (it could never be written out as UTF-8), so it is refused where it stands.
    """

    def decode(match: re.Match[str]) -> str:
        code = match.group(1)
        if len(code) == 11:
            high, low = int(code[1:5], 16), int(code[7:], 16)
            return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
        if code in _ESCAPES:
            return _ESCAPES[code]
        if code[0] in "uUx" and len(code) > 1:
            number = int(code[1:], 16)
            if 0xD800 <= number <= 0xDFFF or number > 0x10FFFF:
                what = "half of a surrogate pair" if number <= 0xDFFF else "beyond Unicode"
                raise KqlSyntaxError(
                    f"'\\{code}' is {what}, not a character", line=line, column=column + match.start()
                )
            return chr(number)
        if code[0] in "01234567":
            return chr(int(code, 8))
        raise KqlSyntaxError(
            f"unknown escape sequence '\\{code}' in a string", line=line, column=column + match.start()
        )

    return _ESCAPE.sub(decode, body) if "\\" in body else body


def _whole_number(token: Token) -> int:
    try:
        return int(token)
    except ValueError:
        raise KqlSyntaxError(
            f"'take' needs a whole number, found {token}", line=token.line, column=token.column
        ) from None


# Kusto's other (older) spellings of an operator -> the one the tree keeps
_SPELLINGS = {
    "<>": "!=",
    "notcontains": "!contains",
    "notcontainscs": "!contains_cs",
    "containscs": "contains_cs",
}


def _fold(first: Expr, rest: tuple[Token | Expr, ...]) -> Expr:
    """Fold ``a op b op c`` (operators and operands alternating in ``rest``) to the left."""
    result = first
    for index in range(0, len(rest), 2):
        op = " ".join(str(rest[index]).split())
        result = k.Binary(_SPELLINGS.get(op, op), result, cast(Expr, rest[index + 1]), first.pos)
    return result


def _chain(op: str, operands: tuple[Expr, ...]) -> Expr:
    result = operands[0]
    for operand in operands[1:]:
        result = k.Binary(op, result, operand, operands[0].pos)
    return result


_TABULAR = k.Datatable | k.Externaldata | k.Print | k.Range | k.Union | k.Search | k.Find
"""Sources that are tables by their form, whatever context they stand in."""

Piped = k.Pipeline | k.Datatable | k.Externaldata | k.Print | k.Range | k.Union | k.Search | k.Find | Expr
"""What the ``pipe`` rule gives: a pipeline, a tabular source alone, or a plain expression."""


def _table(value: Piped) -> k.Pipeline:
    """``value`` as a query statement, ``let`` table or ``join`` side: always a pipeline."""
    if isinstance(value, k.Pipeline):
        return value
    if isinstance(value, k.SubQuery):
        return value.pipeline
    if isinstance(value, k.Name):
        return k.Pipeline(k.TableRef(value.name, value.pos), (), value.pos)
    return k.Pipeline(value, (), value.pos)


def _value(value: Piped) -> Expr:
    """``value`` where an expression stands (an argument, a list item): tables become sub-queries."""
    if isinstance(value, k.Pipeline):
        return k.SubQuery(value, value.pos)
    if isinstance(value, _TABULAR):
        return k.SubQuery(k.Pipeline(value, (), value.pos), value.pos)
    return value


def _options(options: tuple[k.Option, ...] | None) -> tuple[k.Option, ...]:
    return options or ()


def _kind(options: tuple[k.Option, ...] | None) -> tuple[str | None, tuple[k.Option, ...]]:
    """``kind=...`` apart from the other parameters of ``join`` and ``lookup``."""
    kind = [value for name, value in options or () if name == "kind"]
    return (kind[-1] if kind else None), tuple(option for option in options or () if option[0] != "kind")


_FindProject = tuple[tuple[k.ParseColumn | k.Name | k.Call, ...], bool]
"""``find``'s ``project`` columns, and whether it is ``project-smart``."""

_SeriesRange = tuple[Expr | None, Expr | None, Expr, bool]
"""A ``make-series`` range: start, stop, step, and whether written as ``in range(...)``."""


@v_args(inline=True)
class _Builder(Transformer[Token, k.Query]):
    """One method per grammar rule or alias, called by the LALR parser as it reduces."""

    def start(self, *given: k.Let | k.SetOption | k.DeclareParameters | Piped | None) -> k.Query:
        statements = [statement for statement in given if statement is not None]  # `[pipe]` absent
        lets = tuple(statement for statement in statements if isinstance(statement, k.Let))
        settings = tuple(s for s in statements if isinstance(s, k.SetOption | k.DeclareParameters))
        results = [
            _table(statement)
            for statement in statements
            if not isinstance(statement, k.Let | k.SetOption | k.DeclareParameters)
        ]
        if not results:  # valid KQL (Kusto.Language reads it), but it returns nothing to convert
            last = statements[-1].pos
            raise UnsupportedKqlError(
                "the query has `let` or `set` statements only: no result statement to convert",
                line=last.line,
                column=last.column,
            )
        return k.Query(lets, results[-1], statements[0].pos, tuple(results[:-1]), settings)

    def set_stmt(self, keyword: Token, name: k.Name, value: Expr | None) -> k.SetOption:
        return k.SetOption(name.name, value, _at(keyword))

    def declare_stmt(
        self, keyword: Token, _parameters: Token, params: tuple[k.FunctionParam, ...]
    ) -> k.DeclareParameters:
        return k.DeclareParameters(params, _at(keyword))

    def let_stmt(self, keyword: Token, name: k.Name, value: Piped | k.FunctionDef) -> k.Let:
        if isinstance(value, k.FunctionDef):
            return k.Let(name.name, value, _at(keyword))
        if isinstance(value, k.Pipeline | k.SubQuery | _TABULAR):
            return k.Let(name.name, _table(value), _at(keyword))
        return k.Let(name.name, value, _at(keyword))

    def function(self, params: tuple[k.FunctionParam, ...] | None, body: k.Query) -> k.FunctionDef:
        return k.FunctionDef(params or (), body, False, params[0].pos if params else body.pos)

    def view(self, keyword: Token, body: k.Query) -> k.FunctionDef:
        return k.FunctionDef((), body, True, _at(keyword))

    def body(self, *statements: k.Let | Piped) -> k.Query:
        return self.start(*statements)

    def fparams(self, *params: k.FunctionParam) -> tuple[k.FunctionParam, ...]:
        return params

    def fparam(self, name: k.Name, type_name: str, default: Expr | None) -> k.FunctionParam:
        return k.FunctionParam(name.name, type_name, default, name.pos)

    def scalar_type(self, name: Token) -> str:
        return str(name)

    def any_table(self, _star: Token) -> str:
        return "(*)"

    def table_type(self, columns: tuple[tuple[str, str], ...]) -> str:
        return "(" + ", ".join(f"{_bracket(name)}:{type_name}" for name, type_name in columns) + ")"

    def pipe(self, head: Piped, *operators: k.Operator) -> k.Pipeline:
        if isinstance(head, k.SubQuery):  # `(T | where x) | take 1` is `T | where x | take 1`
            inner = head.pipeline
            return k.Pipeline(inner.source, inner.operators + operators, inner.pos)
        source = k.TableRef(head.name, head.pos) if isinstance(head, k.Name) else head
        if isinstance(source, k.Pipeline):  # not produced: `pipe` with no operator is its head
            raise AssertionError("nested pipeline")
        return k.Pipeline(source, operators, source.pos)

    def datatable(
        self, keyword: Token, columns: tuple[tuple[str, str], ...], values: tuple[Expr, ...] | None
    ) -> k.Datatable:
        values = values or ()
        if len(values) % len(columns):
            raise KqlSyntaxError(
                f"datatable has {len(values)} values, not a multiple of its {len(columns)} columns",
                line=keyword.line,
                column=keyword.column,
            )
        return k.Datatable(columns, values, _at(keyword))

    def externaldata(
        self,
        keyword: Token,
        columns: tuple[tuple[str, str], ...],
        urls: tuple[Expr, ...],
        _with: Token | None,
        options: tuple[k.Assignment, ...] | None,
    ) -> k.Externaldata:
        return k.Externaldata(columns, urls, options or (), _at(keyword))

    def print(self, keyword: Token, columns: tuple[k.Assignment, ...]) -> k.Print:
        return k.Print(columns, _at(keyword))

    def range(
        self,
        keyword: Token,
        name: k.Name,
        _from: Token,
        start: Expr,
        _to: Token,
        stop: Expr,
        _step: Token,
        step: Expr,
    ) -> k.Range:
        return k.Range(name.name, start, stop, step, _at(keyword))

    def columns(self, *columns: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        return columns

    def column_def(self, name: k.Name, type_name: Token) -> tuple[str, str]:
        return name.name, str(type_name)

    # ------------------------------------------------------------ tabular operators

    def where(self, keyword: Token, predicate: Expr) -> k.Where:
        return k.Where(predicate, _at(keyword))

    def summarize(
        self,
        keyword: Token,
        _hints: object,
        aggregates: tuple[k.Assignment, ...],
        _by: Token | None,
        by: tuple[k.Assignment, ...] | None,
    ) -> k.Summarize:
        return k.Summarize(aggregates, by or (), _at(keyword))

    def summarize_by(
        self, keyword: Token, _hints: object, _by: Token, by: tuple[k.Assignment, ...]
    ) -> k.Summarize:
        return k.Summarize((), by, _at(keyword))

    def project(self, keyword: Token, columns: tuple[k.Assignment, ...]) -> k.Project:
        return k.Project(columns, _at(keyword))

    def extend(self, keyword: Token, columns: tuple[k.Assignment, ...]) -> k.Extend:
        return k.Extend(columns, _at(keyword))

    def distinct(self, keyword: Token, _hints: object, columns: tuple[k.Assignment, ...]) -> k.Distinct:
        return k.Distinct(columns, _at(keyword))

    def take(self, keyword: Token, count: Token) -> k.Take:
        return k.Take(_whole_number(count), _at(keyword))

    def sort(
        self, keyword: Token, options: tuple[k.Option, ...] | None, _by: Token, *keys: k.SortKey
    ) -> k.Sort:
        return k.Sort(keys, _options(options), _at(keyword))

    def sort_key(
        self, expr: Expr, order: Token | None, _nulls: Token | None, nulls: Token | None
    ) -> k.SortKey:
        return k.SortKey(expr, _word(order), _word(nulls), expr.pos)

    def top(
        self, keyword: Token, options: tuple[k.Option, ...] | None, count: Expr, _by: Token, key: k.SortKey
    ) -> k.Top:
        return k.Top(count, key, _options(options), _at(keyword))

    def top_nested(self, *levels: k.TopNestedLevel) -> k.TopNested:
        return k.TopNested(levels, levels[0].pos)

    def nested_level(
        self,
        keyword: Token,
        count: Expr | None,
        _of: Token,
        of: k.Assignment,
        _with: Token | None,
        _others: Token | None,
        others: Expr | None,
        _by: Token,
        by: k.Assignment,
        order: Token | None,
    ) -> k.TopNestedLevel:
        return k.TopNestedLevel(count, of, others, by, _word(order), _at(keyword))

    def join(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        right: k.Pipeline,
        _on: Token | None,
        on: tuple[Expr, ...] | None,
    ) -> k.Join:
        kind, params = _kind(options)
        return k.Join(kind, right, on or (), params, _at(keyword))

    def lookup(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        right: k.Pipeline,
        _on: Token,
        on: tuple[Expr, ...],
    ) -> k.Lookup:
        kind, params = _kind(options)
        return k.Lookup(kind, right, on, params, _at(keyword))

    def right_name(self, name: k.Name) -> k.Pipeline:
        return _table(name)

    def right_table(self, value: Piped) -> k.Pipeline:
        return _table(value)

    def right_call(self, function: Token, args: tuple[Expr, ...] | None) -> k.Pipeline:
        """``join F(x) on ...``, ``union T, F(x)``: a tabular function's rows."""
        return _table(self.call(function, args))

    def union(self, keyword: Token, options: tuple[k.Option, ...] | None, *tables: Piped) -> k.Union:
        return k.Union(tuple(_table(table) for table in tables), _options(options), _at(keyword))

    def table_name(self, name: k.Name | Token) -> k.Pipeline:
        if isinstance(name, Token):
            return _table(k.Name(str(name), _at(name)))
        return _table(name)

    def mv_expand(self, keyword: Token, options: tuple[k.Option, ...] | None, *rest: object) -> k.MvExpand:
        limit = cast(Expr | None, rest[-1])
        columns = cast(tuple[k.ExpandColumn, ...], tuple(item for item in rest[:-2]))
        return k.MvExpand(columns, limit, _options(options), _at(keyword))

    def mv_apply(self, keyword: Token, options: tuple[k.Option, ...] | None, *rest: object) -> k.MvApply:
        on = next(i for i, item in enumerate(rest) if isinstance(item, Token) and item.type == "ON")
        columns = cast(tuple[k.ExpandColumn, ...], tuple(item for item in rest[: on - 2]))
        limit = cast(Expr | None, rest[on - 1])
        operators = cast(tuple[k.Operator, ...], rest[on + 1 :])
        return k.MvApply(columns, operators, limit, _options(options), _at(keyword))

    def expand_column(
        self,
        name: k.Name | None,
        expr: Expr,
        _to: Token | None,
        typeof: Token | None,
        type_name: Token | None,
    ) -> k.ExpandColumn:
        if typeof is not None and typeof != "typeof":
            raise KqlSyntaxError("expected 'typeof' after 'to'", line=typeof.line, column=typeof.column)
        pos = name.pos if name is not None else expr.pos
        return k.ExpandColumn(name.name if name else None, expr, _word(type_name), pos)

    def parse(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        source: Expr,
        _with: Token,
        *pattern: object,
    ) -> k.Parse:
        parts = cast(tuple[k.StringLit | k.Name | k.ParseColumn, ...], pattern)
        return k.Parse(source, parts, _options(options), _at(keyword))

    def parse_where(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        source: Expr,
        _with: Token,
        *pattern: object,
    ) -> k.ParseWhere:
        parts = cast(tuple[k.StringLit | k.Name | k.ParseColumn, ...], pattern)
        return k.ParseWhere(source, parts, _options(options), _at(keyword))

    def parse_column(self, token: Token, type_name: Token | None) -> k.ParseColumn:
        name = self.name(token)
        return k.ParseColumn(name.name, _word(type_name), name.pos)

    def project_away(self, keyword: Token, columns: tuple[k.Name, ...]) -> k.ProjectAway:
        return k.ProjectAway(columns, _at(keyword))

    def project_keep(self, keyword: Token, columns: tuple[k.Name, ...]) -> k.ProjectKeep:
        return k.ProjectKeep(columns, _at(keyword))

    def column_patterns(self, *columns: k.Name) -> tuple[k.Name, ...]:
        return columns

    def wildcard(self, token: Token) -> k.Name:
        return k.Name(str(token), _at(token))

    def project_rename(self, keyword: Token, *columns: k.Assignment) -> k.ProjectRename:
        return k.ProjectRename(columns, _at(keyword))

    def rename(self, new: k.Name, old: k.Name) -> k.Assignment:
        return k.Assignment(new.name, old, new.pos)

    def project_reorder(self, keyword: Token, *columns: k.SortKey) -> k.ProjectReorder:
        return k.ProjectReorder(columns, _at(keyword))

    def reorder_key(self, column: k.Name, order: Token | None) -> k.SortKey:
        return k.SortKey(column, _word(order), None, column.pos)

    def search(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        in_: Token | None,
        tables: tuple[str, ...] | None,
        predicate: Expr,
    ) -> k.Search:
        if in_ is not None and in_ != "in":
            raise KqlSyntaxError(f"unexpected '{in_}'; expected 'in'", line=in_.line, column=in_.column)
        return k.Search(tables or (), predicate, _options(options), _at(keyword))

    def search_tables(self, *tables: Token) -> tuple[str, ...]:
        return tuple(str(table) for table in tables)

    def evaluate(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        plugin: Token,
        args: tuple[Expr, ...] | None,
        _colon: Token | None,
        schema: tuple[bool, tuple[tuple[str, str], ...]] | None,
    ) -> k.Evaluate:
        call = self.call(plugin, args)
        if schema is None:
            return k.Evaluate(call, _options(options), _at(keyword))
        return k.Evaluate(call, _options(options), _at(keyword), schema[1], schema[0])

    def extended_schema(
        self, _star: Token, columns: tuple[tuple[str, str], ...] | None
    ) -> tuple[bool, tuple[tuple[str, str], ...]]:
        return True, columns or ()

    def evaluate_schema(
        self, columns: tuple[tuple[str, str], ...]
    ) -> tuple[bool, tuple[tuple[str, str], ...]]:
        return False, columns

    def invoke(self, keyword: Token, function: Token, args: tuple[Expr, ...] | None) -> k.Invoke:
        return k.Invoke(self.call(function, args), _at(keyword))

    def partition(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        _by: Token,
        by: k.Name,
        *operators: k.Operator,
    ) -> k.Partition:
        return k.Partition(by, operators, _options(options), _at(keyword))

    def count(self, keyword: Token) -> k.Count:
        return k.Count(_at(keyword))

    def getschema(self, keyword: Token) -> k.GetSchema:
        return k.GetSchema(_at(keyword))

    def serialize(self, keyword: Token, columns: tuple[k.Assignment, ...] | None) -> k.Serialize:
        return k.Serialize(columns or (), _at(keyword))

    def as_op(self, keyword: Token, options: tuple[k.Option, ...] | None, name: k.Name) -> k.As:
        return k.As(name.name, _options(options), _at(keyword))

    def sample(self, keyword: Token, count: Expr) -> k.Sample:
        return k.Sample(count, _at(keyword))

    def render(
        self,
        keyword: Token,
        visualization: Token,
        _with: Token | None,
        options: tuple[k.Assignment, ...] | None,
    ) -> k.Render:
        return k.Render(str(visualization), options or (), _at(keyword))

    def make_series(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        aggregates: tuple[k.SeriesAggregate, ...],
        _on: Token,
        on: k.Assignment,
        axis: _SeriesRange,
        _by: Token | None,
        by: tuple[k.Assignment, ...] | None,
    ) -> k.MakeSeries:
        start, stop, step, in_range = axis
        return k.MakeSeries(
            aggregates, on, start, stop, step, by or (), in_range, _options(options), _at(keyword)
        )

    def series_aggregates(self, *aggregates: k.SeriesAggregate) -> tuple[k.SeriesAggregate, ...]:
        return aggregates

    def series_aggregate(
        self, aggregate: k.Assignment, _default: Token | None, default: Expr | None
    ) -> k.SeriesAggregate:
        return k.SeriesAggregate(aggregate, default, aggregate.pos)

    def series_range(
        self,
        _from: Token | None,
        start: Expr | None,
        _to: Token | None,
        stop: Expr | None,
        _step: Token,
        step: Expr,
    ) -> _SeriesRange:
        return start, stop, step, False

    def series_in_range(self, in_: Token, _range: Token, start: Expr, stop: Expr, step: Expr) -> _SeriesRange:
        if in_ != "in":
            raise KqlSyntaxError(f"unexpected '{in_}'; expected 'in'", line=in_.line, column=in_.column)
        return start, stop, step, True

    def fork(self, keyword: Token, *branches: k.ForkBranch) -> k.Fork:
        return k.Fork(branches, _at(keyword))

    def fork_branch(self, name: k.Name | None, *operators: k.Operator) -> k.ForkBranch:
        return k.ForkBranch(None if name is None else name.name, operators, operators[0].pos)

    def facet(self, keyword: Token, _by: Token, *rest: k.Name | tuple[k.Operator, ...] | None) -> k.Facet:
        *columns, operators = rest
        return k.Facet(
            cast(tuple[k.Name, ...], tuple(columns)),
            cast(tuple[k.Operator, ...], operators or ()),
            _at(keyword),
        )

    def facet_with(self, _with: Token, *operators: k.Operator) -> tuple[k.Operator, ...]:
        return operators

    def reduce(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        _by: Token,
        by: k.Assignment,
        _with: Token | None,
        settings: tuple[k.Assignment, ...] | None,
    ) -> k.Reduce:
        return k.Reduce(by, settings or (), _options(options), _at(keyword))

    def sample_distinct(
        self, keyword: Token, options: tuple[k.Option, ...] | None, count: Expr, _of: Token, of: k.Assignment
    ) -> k.SampleDistinct:
        return k.SampleDistinct(count, of, _options(options), _at(keyword))

    def top_hitters(
        self,
        keyword: Token,
        count: Expr,
        _of: Token,
        of: k.Assignment,
        _by: Token | None,
        by: k.Assignment | None,
    ) -> k.TopHitters:
        return k.TopHitters(count, of, by, _at(keyword))

    def consume(self, keyword: Token) -> k.Consume:
        return k.Consume(_at(keyword))

    def parse_kv(
        self,
        keyword: Token,
        source: Expr,
        _as: Token,
        columns: tuple[tuple[str, str], ...],
        _with: Token | None,
        settings: tuple[k.Assignment, ...] | None,
    ) -> k.ParseKv:
        return k.ParseKv(source, columns, settings or (), _at(keyword))

    def find(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        in_: Token | None,
        tables: tuple[str, ...] | None,
        _where: Token,
        predicate: Expr,
        project: _FindProject | None,
    ) -> k.Find:
        if in_ is not None and in_ != "in":
            raise KqlSyntaxError(f"unexpected '{in_}'; expected 'in'", line=in_.line, column=in_.column)
        columns, smart = project or ((), False)
        return k.Find(tables or (), predicate, columns, smart, _options(options), _at(keyword))

    def find_bare(self, keyword: Token, predicate: Expr, project: _FindProject | None) -> k.Find:
        return self.find(keyword, None, None, None, keyword, predicate, project)

    def find_project(self, keyword: Token, *columns: k.ParseColumn | k.Name | k.Call) -> _FindProject:
        return columns, keyword.type == "PROJECT_SMART"

    def find_pack(self, function: Token, star: Token) -> k.Call:
        if function != "pack":
            raise KqlSyntaxError(
                f"unexpected name '{function}'; expected 'pack'", line=function.line, column=function.column
            )
        return k.Call("pack", (self.star(star),), _at(function))

    def find_column(self, name: k.Name, type_name: Token | None) -> k.ParseColumn:
        return k.ParseColumn(name.name, _word(type_name), name.pos)

    def scan(
        self,
        keyword: Token,
        options: tuple[k.Option, ...] | None,
        order_by: tuple[k.SortKey, ...] | None,
        partition_by: tuple[Expr, ...] | None,
        declare: tuple[k.FunctionParam, ...] | None,
        _with: Token,
        *steps: k.ScanStep,
    ) -> k.Scan:
        return k.Scan(steps, order_by or (), partition_by or (), declare, _options(options), _at(keyword))

    def scan_order(self, _sort: Token, _by: Token, *keys: k.SortKey) -> tuple[k.SortKey, ...]:
        return keys

    def scan_partition(self, _partition: Token, _by: Token, columns: tuple[Expr, ...]) -> tuple[Expr, ...]:
        return columns

    def scan_declare(
        self, _declare: Token, params: tuple[k.FunctionParam, ...] | None
    ) -> tuple[k.FunctionParam, ...]:
        return params or ()

    def scan_step(
        self,
        keyword: Token,
        name: k.Name,
        _output: Token | None,
        output: Token | None,
        _colon: Token,
        predicate: Expr,
        assignments: tuple[k.Assignment, ...] | None,
    ) -> k.ScanStep:
        return k.ScanStep(name.name, predicate, assignments or (), _word(output), _at(keyword))

    def scan_computation(self, _arrow: Token, *assignments: k.Assignment) -> tuple[k.Assignment, ...]:
        return assignments

    def options(self, *options: k.Option) -> tuple[k.Option, ...]:
        return options

    def option(self, name: Token, value: Token) -> k.Option:
        return str(name), str(value)

    def assignments(self, *assignments: k.Assignment) -> tuple[k.Assignment, ...]:
        return assignments

    def named(self, name: k.Name, expr: Expr) -> k.Assignment:
        return k.Assignment(name.name, expr, name.pos)

    def tuple_named(self, *items: k.Name | Expr) -> k.TupleAssignment:
        names = cast(tuple[k.Name, ...], items[:-1])
        return k.TupleAssignment(None, items[-1], names[0].pos, tuple(name.name for name in names))

    def assignment(self, expr: Expr) -> k.Assignment:
        return k.Assignment(None, expr, expr.pos)

    def exprs(self, *items: Expr) -> tuple[Expr, ...]:
        return items

    def values(self, *items: Expr | None) -> tuple[Expr, ...]:
        return tuple(item for item in items if item is not None)

    # ------------------------------------------------------------ scalar expressions

    def expr(self, *operands: Expr) -> Expr:
        return _chain("or", operands)

    def conjunction(self, *operands: Expr) -> Expr:
        return _chain("and", operands)

    def comparison(self, first: Expr, *rest: Token | Expr) -> Expr:
        return _fold(first, rest)

    def set_op(self, left: Expr, op: Token, items: tuple[Expr, ...]) -> k.SetOp:
        return k.SetOp(str(op), left, items, left.pos)

    def between(self, left: Expr, op: Token, low: Expr, high: Expr) -> k.Between:
        return k.Between(left, low, high, op.startswith("!"), left.pos)

    def sum(self, first: Expr, *rest: Token | Expr) -> Expr:
        return _fold(first, rest)

    product = sum

    def negative(self, minus: Token, operand: Expr) -> k.Unary:
        return k.Unary("-", operand, _at(minus))

    def negative_number(self, minus: Token, number: Token) -> k.Unary:
        return k.Unary("-", self.number(number), _at(minus))

    def index(self, target: Expr, index: Expr) -> k.Index:
        return k.Index(target, index, target.pos)

    def member(self, target: Expr, name: k.Name) -> k.Member:
        return k.Member(target, name.name, target.pos)

    def name(self, token: Token) -> k.Name:
        if token.type == "NAME":
            return k.Name(str(token), _at(token))
        inner = token[1:-1]
        body = inner.strip(" \t")
        start = 1 + inner.index(body[0])  # the quote, as an offset in the token
        value = _unescape(body[1:-1], cast(int, token.line), cast(int, token.column) + start + 1)
        return k.Name(value, _at(token))

    def star(self, token: Token) -> k.Name:
        return k.Name("*", _at(token))

    def string(self, *tokens: Token) -> k.StringLit:
        if len(tokens) == 1:
            return _string(tokens[0])
        parts = [_string(token) for token in tokens]
        value = "".join(part.value for part in parts)
        return k.StringLit(value, all(part.verbatim for part in parts), parts[0].pos)

    pattern_string = string

    def number(self, token: Token) -> k.NumberLit:
        try:  # int() refuses more than 4300 digits; float() overflows to infinity
            hexadecimal = token[:2] in ("0x", "0X")
            value = int(token, 16) if hexadecimal else int(token) if token.isdigit() else float(token)
        except ValueError:
            value = math.inf
        if math.isinf(value):
            raise KqlSyntaxError(f"number out of range: {token}", line=token.line, column=token.column)
        return k.NumberLit(value, _at(token))

    def timespan(self, token: Token) -> k.TimespanLit:
        return k.TimespanLit(str(token), _at(token))

    def typed(self, token: Token) -> k.TypedLit:
        type_name, _, text = token.partition("(")
        return k.TypedLit(type_name, text[:-1].strip(" \t"), _at(token))

    def boolean(self, token: Token) -> k.BoolLit:
        return k.BoolLit(token == "true", _at(token))

    def null(self, token: Token) -> k.NullLit:
        return k.NullLit(_at(token))

    def call(self, function: Token, args: tuple[Expr, ...] | None) -> k.Call:
        return k.Call(str(function), args or (), _at(function))

    def dynamic(self, keyword: Token, value: Expr) -> k.Call:
        return k.Call("dynamic", (value,), _at(keyword))

    def dynamic_type(self, keyword: Token) -> k.Name:
        return k.Name(str(keyword), _at(keyword))

    def paren(self, paren: Token, value: Piped) -> Expr:
        if isinstance(value, k.Pipeline | _TABULAR):
            return k.SubQuery(_table(value), _at(paren))
        return value

    def array(self, bracket: Token, *items: Expr | None) -> k.ArrayLit:
        return k.ArrayLit(tuple(item for item in items if item is not None), _at(bracket))

    def object(self, *pairs: tuple[str, Expr] | None) -> k.ObjectLit:
        items = tuple(pair for pair in pairs if pair is not None)
        return k.ObjectLit(items, items[0][1].pos if items else k.NOWHERE)

    def pair(self, key: k.StringLit, value: Expr) -> tuple[str, Expr]:
        return key.value, value

    def args(self, *items: Piped) -> tuple[Expr, ...]:
        return tuple(_value(item) for item in items)

    def named_arg(self, _name: str, value: Expr) -> Expr:
        """The value stands for the argument: no function lowering reads arguments by name."""
        return value


def _word(token: Token | None) -> str | None:
    return None if token is None else str(token)


def _bracket(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"[{name!r}]"


def _string(token: Token) -> k.StringLit:
    """A string token of any form; the ``h`` that hides a string from logs does not change it."""
    offset = 1 if token[0] in "hH" else 0
    text = token[offset:]
    column = cast(int, token.column) + offset
    if text.startswith("@"):
        quote = text[1]
        return k.StringLit(text[2:-1].replace(quote * 2, quote), True, _at(token))
    if text.startswith(("```", "~~~")):  # backslashes are literal, but lines break: not verbatim
        return k.StringLit(text[3:-3], False, _at(token))
    return k.StringLit(_unescape(text[1:-1], cast(int, token.line), column + 1), False, _at(token))


# ---------------------------------------------------------------- errors

_BLANK = re.compile(r"(?:\s++|//[^\n]*+)*+")

# What may hide a bracket from the depth scan: comments and the kinds of string.
_BRACKETS = re.compile(
    r"//[^\n]*|```[\s\S]*?```|~~~[\s\S]*?~~~|@'[^'\r\n]*'|@\"[^\"\r\n]*\""
    r"|'(?:[^'\\\r\n]|\\[^\r\n])*'|\"(?:[^\"\\\r\n]|\\[^\r\n])*\"|[()\[\]{}]"
)


def _check_depth(text: str) -> None:
    """Refuse absurd nesting up front, so no consumer of the tree can hit the recursion limit."""
    depth = 0
    for match in _BRACKETS.finditer(text):
        bracket = match.group()
        if bracket in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - text.rfind("\n", 0, match.start())
                message = f"nesting deeper than {MAX_DEPTH} levels of parentheses, brackets or braces"
                raise _error(text, message, line, column)
        elif bracket in ")]}":
            depth = max(depth - 1, 0)


def _error(text: str, message: str, line: int, column: int) -> KqlSyntaxError:
    return KqlSyntaxError(message, line=line, column=column, context=_line(text, line))


def _line(text: str, line: int) -> str:
    return text.split("\n")[line - 1].rstrip("\r")


# Terminals described in words; keywords are shown as their word, punctuation as its text.
_PHRASES = {
    "NAME": "a name",
    "BRACKETED_NAME": "a name",
    "WILDCARD": "a name pattern",
    "STRING": "a string",
    "VERBATIM": "a string",
    "MULTILINE": "a string",
    "NUMBER": "a number",
    "TIMESPAN": "a timespan",
    "TYPED": "a typed literal",
    "BOOL": "'true' or 'false'",
    "OPTION": "a parameter ('kind=', 'hint.strategy=', ...)",
    "ORDER": "'asc' or 'desc'",
    "FIRST_LAST": "'first' or 'last'",
    "WHERE": "'where'",
    "TAKE": "'take'",
    "SORT": "'sort'",
    "MV_EXPAND": "'mv-expand'",
    "MV_APPLY": "'mv-apply'",
    "MAKE_SERIES": "'make-series'",
    "SAMPLE_DISTINCT": "'sample-distinct'",
    "TOP_HITTERS": "'top-hitters'",
    "PARSE_KV": "'parse-kv'",
    "QUERY_PARAMETERS": "'query_parameters'",
    "PROJECT_SMART": "'project-smart'",
    "CMPOP": "a comparison operator",
    "STROP": "a string operator",
    "SETOP": "'in' or 'has_any'",
    "BETWEEN": "'between'",
    "MULOP": "'/' or '%'",
    "$END": "the end of the query",
}
_OPERATORS = {
    *("WHERE", "SUMMARIZE", "PROJECT", "EXTEND", "DISTINCT", "TAKE", "SORT", "TOP", "TOP_NESTED"),
    *("JOIN", "LOOKUP", "UNION", "MV_EXPAND", "MV_APPLY", "PARSE", "PARSE_WHERE", "PROJECT_AWAY"),
    "PROJECT_KEEP",
    *("PROJECT_RENAME", "PROJECT_REORDER", "SEARCH", "EVALUATE", "INVOKE", "PARTITION", "COUNT"),
    *("GETSCHEMA", "SERIALIZE", "AS", "SAMPLE", "RENDER", "MAKE_SERIES", "FORK", "FACET", "REDUCE"),
    *("SAMPLE_DISTINCT", "TOP_HITTERS", "CONSUME", "PARSE_KV", "FIND", "SCAN"),
}

# When the key terminal is expected, its whole group is summed up in one phrase.
_GROUPS = (
    (
        "STRING",
        {
            *("NAME", "BRACKETED_NAME", "STRING", "VERBATIM", "MULTILINE", "NUMBER", "TIMESPAN"),
            *("TYPED", "BOOL", "DYNAMIC", "MINUS", "LPAR", "STAR", "DATATABLE", "EXTERNALDATA"),
            *("PRINT", "RANGE", "UNION", "SEARCH", "FIND"),
        },
        "an expression",
    ),
    (
        "WHERE",
        _OPERATORS,
        "a tabular operator ('where', 'summarize', 'extend', 'project', 'join', ...)",
    ),
    (
        "STROP",
        {"CMPOP", "STROP", "SETOP", "BETWEEN", "PLUS", "MINUS", "STAR", "MULOP", "_AND", "_OR"},
        "an operator ('has', '==', 'in', 'and', ...)",
    ),
)


def _describe(terminal: str) -> str:
    if terminal in _PHRASES:
        return _PHRASES[terminal]
    pattern = _lark().get_terminal(terminal).pattern
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return "'" + terminal.lower().lstrip("_").replace("_", "-") + "'"  # a keyword: its word


def _expected(terminals: set[str]) -> str:
    phrases: list[str] = []
    rest = set(terminals)
    for key, group, phrase in _GROUPS:
        if key in rest:
            phrases.append(phrase)
            rest -= group
    phrases += sorted({_describe(terminal) for terminal in rest})
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _found(token: Token) -> str:
    if token.type == "NAME":
        return f"name '{token}'"
    if token.type in ("BRACKETED_NAME", "STRING", "VERBATIM", "MULTILINE", "NUMBER", "TIMESPAN", "TYPED"):
        return f"{_PHRASES[token.type].removeprefix('a ')} {token}"  # already quoted, or a number
    return f"'{token}'"


def _unexpected_token(text: str, err: UnexpectedToken) -> KqlSyntaxError:
    token: Token = err.token
    if token.type == "$END":  # positioned just after the last token
        found, line, column = "end of query", token.end_line, token.end_column
    else:
        found, line, column = _found(token), token.line, token.column
    message = f"unexpected {found}; expected {_expected(err.accepts or err.expected)}"
    return _error(text, message, cast(int, line), cast(int, column))


def _unexpected_characters(text: str, err: UnexpectedCharacters) -> KqlSyntaxError:
    offset = cast(int, err.pos_in_stream)
    char = text[offset]
    if char in "'\"" or text.startswith(("@'", '@"'), offset):
        message = "unterminated string"
    else:
        message = f"unexpected character {char!r}; expected {_expected(set(err.allowed))}"
    return _error(text, message, err.line, err.column)
