"""YAML text in the layout rmm2sigma writes, exactly as ruamel.yaml writes it, without ruamel's cost.

The layout is SigmaHQ's: mappings indented by 4, a sequence's dashes 4 deeper than its key and
their items 2 further, no document marker, lines up to 4096 columns. ruamel's pure-Python emitter
wrote every Sigma rule and every Sentinel rule, and was the largest cost of a corpus run after the
pySigma backends. The documents are small trees of plain data, so this module lays them out
directly and picks each scalar's style by ruamel's own rules (its YAML 1.2 resolver's patterns and
its emitter's scalar analysis), written as a few regular expressions. What falls outside them goes
to ruamel itself: floats, datetimes and other types, a sequence directly in a sequence, a literal
block that is not a mapping value, NEL and the Unicode line separators, a byte-order mark or a lone
surrogate, and any line long enough for ruamel to fold. So the text is always ruamel's; the tests
compare both on generated documents.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

INDENT = 4  # a mapping's keys under its key; a sequence's dashes under its key
_FOLD = 4000  # ruamel folds lines past its width (4096); a line this long is left to ruamel


class Literal(str):
    """A string written as a literal block (``|``), as Sentinel's content repository writes queries."""


class _Unsupported(Exception):
    """Content this writer leaves to ruamel."""


# Strings resolved as another type (YAML 1.2 bool, float, int, merge, null, timestamp, value and
# ruamel's documentation-only "yaml" resolver): written plain they would not read back as strings.
# ruamel tries each pattern only on strings starting with its first characters (ints: -+0-9).
_IMPLICIT = re.compile(
    r"""true|True|TRUE|false|False|FALSE
    |[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)
    |(?=[-+0-9])(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)
    |<<|~|null|Null|NULL|=|!|&|\*|
    |[0-9]{4}-[0-9]{2}-[0-9]{2}
    |[0-9]{4}-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[\ \t]+)[0-9][0-9]?:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?
     (?:[\ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9]{2})?))?""",
    re.X,
)
# Characters ruamel escapes, so only a double-quoted scalar holds them (with allow_unicode): all
# but a line break, printable ASCII, U+A0..U+D7FF, U+E000..U+FFFD and the supplementary planes.
_SPECIAL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# What forbids a plain scalar in block context (ruamel's analyze_scalar): a leading indicator, a
# document marker, ": " or " #", a leading or trailing space, a line break, a special character.
_NOT_PLAIN = re.compile(
    r"""\A(?:[-?:](?:[\0 \t\r\n]|\Z)|[#,\[\]{}&*!|>'"%@`]|---|\.\.\.|[ \n])
    |:(?:[\0 \t\r\n]|\Z)|[\0 \t\r\n]\#|[ \n]\Z|\n"""
    + f"|{_SPECIAL.pattern}",
    re.X,
)
_ELSEWHERE = re.compile("[\x85\u2028\u2029\ufeff\ud800-\udfff]")  # left to ruamel
_ESCAPES = {
    "\0": "0",
    "\x07": "a",
    "\x08": "b",
    "\t": "t",
    "\n": "n",
    "\x0b": "v",
    "\x0c": "f",
    "\r": "r",
    "\x1b": "e",
    '"': '"',
    "\\": "\\",
}
_DOUBLE_QUOTED = re.compile(f'["\\\\\n]|{_SPECIAL.pattern}')  # and line breaks


def dump_yaml(document: Mapping[str, Any]) -> str:
    """``document`` as YAML text, byte for byte what ruamel writes with rmm2sigma's settings."""
    if type(document) is dict and document:
        try:
            return _Writer().document(document)
        except _Unsupported:
            pass
    return ruamel_dump(document)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: set[int] = set()  # ruamel anchors an object met twice (&id001, then *id001)

    def document(self, mapping: dict[str, Any]) -> str:
        self.mapping(mapping, 0)
        return "\n".join(self.lines) + "\n"

    def mapping(self, mapping: dict[Any, Any], indent: int, first: str | None = None) -> None:
        """The mapping's lines at ``indent``; its first line starts with ``first`` (``- ``) if given."""
        self.once(mapping)
        pad = " " * indent
        for key, value in mapping.items():
            if type(key) is not str or len(key) > 100 or "\n" in key:
                raise _Unsupported  # ruamel writes long keys as explicit "? " keys
            head = f"{pad if first is None else first}{self.scalar(key)}:"
            first = None
            if type(value) is Literal:
                self.lines.append(f"{head} {_literal_header(value)}")
                body = value[:-1] if value.endswith("\n") else value
                inner = " " * (indent + INDENT)
                self.lines.extend(f"{inner}{line}" if line else "" for line in body.split("\n"))
            elif type(value) is dict and value:
                self.lines.append(head)
                self.mapping(value, indent + INDENT)
            elif type(value) is list and value:
                self.lines.append(head)
                self.sequence(value, indent + INDENT)
            else:
                self.line(f"{head} {self.scalar(value)}")

    def sequence(self, items: list[Any], dash: int) -> None:
        self.once(items)
        pad = " " * dash
        for item in items:
            if type(item) is dict and item:
                self.mapping(item, dash + 2, first=f"{pad}- ")
            elif (type(item) is list and item) or type(item) is Literal:
                raise _Unsupported
            else:
                self.line(f"{pad}- {self.scalar(item)}")

    def line(self, line: str) -> None:
        if len(line) > _FOLD:
            raise _Unsupported
        self.lines.append(line)

    def once(self, value: object) -> None:
        if id(value) in self.seen:
            raise _Unsupported
        self.seen.add(id(value))

    def scalar(self, value: Any) -> str:
        if type(value) is dt.date or type(value) is dict or type(value) is list:  # only empty ones here
            self.once(value)
            return value.isoformat() if type(value) is dt.date else "{}" if type(value) is dict else "[]"
        return _scalar(value)


def _literal_header(text: str) -> str:
    """``|``, with ``-`` when the text has no final line break; other block hints go to ruamel."""
    if not text or text[0] in " \n" or text.endswith("\n\n") or _ELSEWHERE.search(text):
        raise _Unsupported
    return "|" if text.endswith("\n") else "|-"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"  # rmm2sigma's representer: never an empty value (yamllint refuses "- ")
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is not str or _ELSEWHERE.search(value):
        raise _Unsupported
    if not _NOT_PLAIN.search(value) and not _IMPLICIT.fullmatch(value):
        return value
    if "'" in value or "\n" in value or _SPECIAL.search(value):
        return '"' + _DOUBLE_QUOTED.sub(_escape, value) + '"'
    return f"'{value}'"


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    if char in _ESCAPES:
        return "\\" + _ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02X}" if code <= 0xFF else f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


# ---------------------------------------------------------------- ruamel: the rest, and the reference


@cache
def _writer() -> Any:
    """ruamel configured as rmm2sigma writes (imported only when needed: it costs ~0.1 s)."""
    from ruamel.yaml import YAML

    writer = YAML()
    writer.indent(mapping=INDENT, sequence=INDENT + 2, offset=INDENT)
    writer.width = 4096
    # ruamel writes None as nothing, so a null list item becomes "- " with a trailing space, which
    # SigmaHQ's strict yamllint refuses: write it as the word null
    writer.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    writer.representer.add_representer(
        Literal, lambda representer, data: representer.represent_scalar("tag:yaml.org,2002:str", data, "|")
    )
    return writer


def ruamel_dump(document: Any) -> str:
    """What ruamel writes: for what ``dump_yaml`` leaves to it, and as the tests' reference."""
    buffer = io.StringIO()
    _writer().dump(document, buffer)
    return buffer.getvalue()
