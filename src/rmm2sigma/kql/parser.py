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

from ..errors import KqlSyntaxError
from .syntax import (
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
    Pos,
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
)

__all__ = ["KEYWORDS", "MAX_DEPTH", "parse"]

MAX_DEPTH = 64
"""Deepest nesting of parentheses and brackets accepted: the tree's consumers recurse."""

KEYWORDS = frozenset(
    {
        *("let", "datatable", "dynamic", "true", "false", "and", "or", "between", "by"),
        *("where", "summarize", "project", "extend", "distinct", "take", "limit"),
        *("in", "has_any", "has_all"),
        *(
            f"{word}{suffix}"
            for word in ("has", "contains", "startswith", "endswith", "hasprefix", "hassuffix")
            for suffix in ("", "_cs")
        ),
    }
)
"""Words the grammar reads as keywords somewhere; the printer brackets names spelled like them."""


def parse(text: str) -> Query:
    """Parse one KQL query (``let`` statements and a tabular pipeline)."""
    if _BLANK.fullmatch(text):
        raise _error(text, "empty query", 1, 1)
    _check_depth(text)
    try:
        return cast(Query, _lark().parse(text))
    except UnexpectedToken as err:
        raise _unexpected_token(text, err) from None
    except UnexpectedCharacters as err:
        raise _unexpected_characters(text, err) from None
    except KqlSyntaxError as err:  # raised by the tree builder, which does not see the text
        raise _error(text, err.message, cast(int, err.line), cast(int, err.column)) from None


@functools.cache
def _lark() -> Lark:
    """The parser, built on first use: building the LALR tables takes a noticeable moment."""
    return Lark.open(
        "grammar.lark",
        rel_to=__file__,
        parser="lalr",
        lexer="contextual",
        transformer=_Builder(),
        maybe_placeholders=True,
    )


# ---------------------------------------------------------------- tree building


def _at(token: Token) -> Pos:
    # The lexer always sets positions; Lark's types allow None for hand-made tokens.
    return Pos(cast(int, token.line), cast(int, token.column))


# Kusto's escapes (Kusto.Language's KustoFacts.DecodeEscapes), less its loose hex and octal forms.
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
_ESCAPE = re.compile(r"\\(u[dD][89abAB][0-9A-Fa-f]{2}\\u[dD][c-fC-F][0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|.)")


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
        if len(code) == 5:
            if 0xD800 <= int(code[1:], 16) <= 0xDFFF:
                raise KqlSyntaxError(
                    f"'\\{code}' is half of a surrogate pair, not a character",
                    line=line,
                    column=column + match.start(),
                )
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
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


def _fold(first: Expr, rest: tuple[Token | Expr, ...]) -> Expr:
    """Fold ``a op b op c`` (operators and operands alternating in ``rest``) to the left."""
    result = first
    for index in range(0, len(rest), 2):
        result = Binary(str(rest[index]), result, cast(Expr, rest[index + 1]), first.pos)
    return result


def _chain(op: str, operands: tuple[Expr, ...]) -> Expr:
    result = operands[0]
    for operand in operands[1:]:
        result = Binary(op, result, operand, operands[0].pos)
    return result


@v_args(inline=True)
class _Builder(Transformer[Token, Query]):
    """One method per grammar rule or alias, called by the LALR parser as it reduces."""

    def start(self, *statements: Let | Pipeline) -> Query:
        lets = cast(tuple[Let, ...], statements[:-1])
        body = cast(Pipeline, statements[-1])
        return Query(lets, body, lets[0].pos if lets else body.pos)

    def let_stmt(self, keyword: Token, name: Token, value: Expr | Pipeline) -> Let:
        return Let(str(name), value, _at(keyword))

    def pipeline(self, source: TableRef | Datatable, *operators: Operator) -> Pipeline:
        return Pipeline(source, operators, source.pos)

    tabular = pipeline

    def table_ref(self, name: Token) -> TableRef:
        return TableRef(str(name), _at(name))

    def datatable(
        self, keyword: Token, columns: tuple[tuple[str, str], ...], values: tuple[Expr, ...] | None
    ) -> Datatable:
        values = values or ()
        if len(values) % len(columns):
            raise KqlSyntaxError(
                f"datatable has {len(values)} values, not a multiple of its {len(columns)} columns",
                line=keyword.line,
                column=keyword.column,
            )
        return Datatable(columns, values, _at(keyword))

    def columns(self, *columns: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        return columns

    def column_def(self, name: Name, type_name: Token) -> tuple[str, str]:
        return name.name, str(type_name)

    # ------------------------------------------------------------ tabular operators

    def where(self, keyword: Token, predicate: Expr) -> Where:
        return Where(predicate, _at(keyword))

    def summarize(
        self,
        keyword: Token,
        aggregates: tuple[Assignment, ...],
        _by: Token | None,
        by: tuple[Assignment, ...] | None,
    ) -> Summarize:
        return Summarize(aggregates, by or (), _at(keyword))

    def summarize_by(self, keyword: Token, _by: Token, by: tuple[Assignment, ...]) -> Summarize:
        return Summarize((), by, _at(keyword))

    def project(self, keyword: Token, columns: tuple[Assignment, ...]) -> Project:
        return Project(columns, _at(keyword))

    def extend(self, keyword: Token, columns: tuple[Assignment, ...]) -> Extend:
        return Extend(columns, _at(keyword))

    def distinct(self, keyword: Token, columns: tuple[Expr, ...]) -> Distinct:
        return Distinct(columns, _at(keyword))

    def take(self, keyword: Token, count: Token) -> Take:
        return Take(_whole_number(count), _at(keyword))

    def assignments(self, *assignments: Assignment) -> tuple[Assignment, ...]:
        return assignments

    def named(self, name: Name, expr: Expr) -> Assignment:
        return Assignment(name.name, expr, name.pos)

    def assignment(self, expr: Expr) -> Assignment:
        return Assignment(None, expr, expr.pos)

    # ------------------------------------------------------------ scalar expressions

    def expr(self, *operands: Expr) -> Expr:
        return _chain("or", operands)

    def conjunction(self, *operands: Expr) -> Expr:
        return _chain("and", operands)

    def binary(self, left: Expr, op: Token, right: Expr) -> Binary:
        return Binary(" ".join(op.split()), left, right, left.pos)  # `matches  regex`

    def set_op(self, left: Expr, op: Token, items: tuple[Expr, ...]) -> SetOp:
        return SetOp(str(op), left, items, left.pos)

    def between(self, left: Expr, op: Token, low: Expr, high: Expr) -> Between:
        return Between(left, low, high, op.startswith("!"), left.pos)

    def sum(self, first: Expr, *rest: Token | Expr) -> Expr:
        return _fold(first, rest)

    product = sum

    def negative(self, minus: Token, operand: Expr) -> Unary:
        return Unary("-", operand, _at(minus))

    def index(self, target: Expr, index: Expr) -> Index:
        return Index(target, index, target.pos)

    def name(self, token: Token) -> Name:
        if token.type == "NAME":
            return Name(str(token), _at(token))
        inner = token[1:-1]
        body = inner.strip(" \t")
        start = 1 + inner.index(body[0])  # the quote, as an offset in the token
        value = _unescape(body[1:-1], cast(int, token.line), cast(int, token.column) + start + 1)
        return Name(value, _at(token))

    def string(self, token: Token) -> StringLit:
        value = _unescape(token[1:-1], cast(int, token.line), cast(int, token.column) + 1)
        return StringLit(value, False, _at(token))

    def verbatim(self, token: Token) -> StringLit:
        quote = token[1]
        return StringLit(token[2:-1].replace(quote * 2, quote), True, _at(token))

    def number(self, token: Token) -> NumberLit:
        try:  # int() refuses more than 4300 digits; float() overflows to infinity
            value = int(token) if token.isdigit() else float(token)
        except ValueError:
            value = math.inf
        if math.isinf(value):
            raise KqlSyntaxError(f"number out of range: {token}", line=token.line, column=token.column)
        return NumberLit(value, _at(token))

    def timespan(self, token: Token) -> TimespanLit:
        return TimespanLit(str(token), _at(token))

    def boolean(self, token: Token) -> BoolLit:
        return BoolLit(token == "true", _at(token))

    def call(self, function: Token, args: tuple[Expr, ...] | None) -> Call:
        return Call(str(function), args or (), _at(function))

    def dynamic(self, keyword: Token, array: ArrayLit) -> Call:
        return Call("dynamic", (array,), _at(keyword))

    def array(self, bracket: Token, items: tuple[Expr, ...] | None) -> ArrayLit:
        return ArrayLit(items or (), _at(bracket))

    def args(self, *items: Expr) -> tuple[Expr, ...]:
        return items

    def set_list(self, items: tuple[Expr, ...]) -> tuple[Expr, ...]:
        return items

    def tabular_list(self, pipeline: Pipeline) -> tuple[Expr, ...]:
        return (SubQuery(pipeline, pipeline.pos),)

    def subquery_list(self, subquery: SubQuery) -> tuple[Expr, ...]:
        return (subquery,)

    def subquery(self, paren: Token, pipeline: Pipeline, _close: Token) -> SubQuery:
        return SubQuery(pipeline, _at(paren))


# ---------------------------------------------------------------- errors

_BLANK = re.compile(r"(?:\s|//[^\n]*)*")

# What may hide a bracket from the depth scan: comments and the three kinds of string.
_BRACKETS = re.compile(
    r"""//[^\n]*|@'[^'\r\n]*'|@"[^"\r\n]*"|'(?:[^'\\\r\n]|\\[^\r\n])*'|"(?:[^"\\\r\n]|\\[^\r\n])*"|[()\[\]]"""
)


def _check_depth(text: str) -> None:
    """Refuse absurd nesting up front, so no consumer of the tree can hit the recursion limit."""
    depth = 0
    for match in _BRACKETS.finditer(text):
        bracket = match.group()
        if bracket in "([":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - text.rfind("\n", 0, match.start())
                message = f"nesting deeper than {MAX_DEPTH} levels of parentheses or brackets"
                raise _error(text, message, line, column)
        elif bracket in ")]":
            depth = max(depth - 1, 0)


def _error(text: str, message: str, line: int, column: int) -> KqlSyntaxError:
    context = text.split("\n")[line - 1].rstrip("\r")
    return KqlSyntaxError(message, line=line, column=column, context=context)


# Terminals described in words; the others (punctuation) are shown as their text.
_PHRASES = {
    "NAME": "a name",
    "BRACKETED_NAME": "a name",
    "STRING": "a string",
    "VERBATIM": "a string",
    "NUMBER": "a number",
    "TIMESPAN": "a timespan",
    "BOOL": "'true' or 'false'",
    "LET": "'let'",
    "DATATABLE": "'datatable'",
    "DYNAMIC": "'dynamic'",
    "WHERE": "'where'",
    "SUMMARIZE": "'summarize'",
    "BY": "'by'",
    "PROJECT": "'project'",
    "EXTEND": "'extend'",
    "DISTINCT": "'distinct'",
    "TAKE": "'take'",
    "_AND": "'and'",
    "_OR": "'or'",
    "CMPOP": "a comparison operator",
    "STROP": "a string operator",
    "SETOP": "'in' or 'has_any'",
    "BETWEEN": "'between'",
    "MULOP": "'*', '/' or '%'",
    "$END": "the end of the query",
}

# When the key terminal is expected, its whole group is summed up in one phrase.
_GROUPS = (
    (
        "STRING",
        {
            *("NAME", "BRACKETED_NAME", "STRING", "VERBATIM", "NUMBER", "TIMESPAN", "BOOL"),
            *("DYNAMIC", "MINUS", "LPAR"),
        },
        "an expression",
    ),
    (
        "WHERE",
        {"WHERE", "SUMMARIZE", "PROJECT", "EXTEND", "DISTINCT", "TAKE"},
        "a tabular operator ('where', 'summarize', 'project', 'extend', 'distinct' or 'take')",
    ),
    (
        "STROP",
        {"CMPOP", "STROP", "SETOP", "BETWEEN", "PLUS", "MINUS", "MULOP", "_AND", "_OR"},
        "an operator ('has', '==', 'in', 'and', ...)",
    ),
)


def _describe(terminal: str) -> str:
    return _PHRASES.get(terminal) or f"'{_lark().get_terminal(terminal).pattern.value}'"


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
    if token.type in ("BRACKETED_NAME", "STRING", "VERBATIM", "NUMBER", "TIMESPAN"):
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
