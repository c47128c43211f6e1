"""Case-insensitive tests and our regexes in Lucene's regex dialect, for the Elastic targets.

Elasticsearch compares keyword fields case-sensitively, and reads every regex (lucene ``/.../``,
ES|QL ``rlike``, EQL ``regex~``) with Lucene's engine: the whole value must match, there is no
``(?i)`` flag and ``^``/``$`` are plain characters. pySigma's backends ignore both, so this
module's transformation rewrites the detection values before the backend sees them:

* every case-insensitive string (plain value, ``contains``, ``startswith``, ``endswith``, i.e. a
  ``SigmaString`` with wildcards, never a ``SigmaCasedString``) becomes a whole-value regex whose
  letters are ``[xX]`` classes: ``contains 'ab.c'`` -> ``.*[aA][bB]\\.[cC].*`` (lucene, esql);
* every regex of the shapes ``mapping._term_pattern`` emits (``--exact``) becomes its whole-value
  equivalent: ``(^|[^T])needle($|[^T])`` -> ``(.*[^T])?needle([^T].*)?``, the file-name tail
  ``[^\\\\]*$`` -> ``[^\\\\]*``, a missing head or tail -> ``.*``; with the ``i`` flag the needle's
  letters become classes and the flag is dropped (lucene, esql, eql). Other regexes are left as
  they are (``fidelity`` labels them lossy).

Lucene's regex syntax for what we emit (literals, classes, negated classes of literal ranges,
``.*``, ``( )?``, backslash escapes) matches a value iff Python's ``re.fullmatch`` with
``re.DOTALL`` does: ``tests/test_elastic.py`` evaluates the queries that way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations.base import ValueTransformation
from sigma.types import (
    Placeholder,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaType,
    SpecialChars,
)

from .mapping import TERM_CLASS
from .model import Match

# Lucene's reserved regex characters, plus ``^``/``$`` (plain in Lucene, anchors in Python: escaping
# keeps both readings literal). ``/`` is the lucene backend's to escape, ``"`` the ES|QL backend's
# too but a backslash before it is harmless.
_RESERVED = frozenset('.?+*|{}[]()"\\#@&<>~^$')
_PYTHON_META = frozenset("\\.^$|?*+()[]{}")  # what mapping.regex_escape escapes
MAX_REGEX_LENGTH = 1000  # Elasticsearch's default index.max_regex_length

_HEAD = f"(^|[^{TERM_CLASS}])"
_TAILS = (  # (the tail _term_pattern emits, its whole-value equivalent), the empty tail last
    (f"($|[^{TERM_CLASS}])", f"([^{TERM_CLASS}].*)?"),
    (f"($|[^{TERM_CLASS}\\\\][^\\\\]*$)", f"([^{TERM_CLASS}\\\\][^\\\\]*)?"),
    ("[^\\\\]*$", "[^\\\\]*"),
    ("", ".*"),
)
_SHAPES = {
    Match.EQUALS: "{}",
    Match.CONTAINS: ".*{}.*",
    Match.STARTSWITH: "{}.*",
    Match.ENDSWITH: ".*{}",
}


def fold(text: str, ignore_case: bool = True) -> str:
    """A literal as a Lucene regex: reserved characters escaped, letters as ``[xX]`` classes."""
    out: list[str] = []
    for char in text:
        spellings = [s for s in dict.fromkeys((char.lower(), char.upper(), char)) if len(s) == 1]
        if ignore_case and len(spellings) > 1:
            out.append(f"[{''.join(spellings)}]")
        else:
            out.append(f"\\{char}" if char in _RESERVED else char)
    return "".join(out)


def string_regex(
    parts: Iterable[str | SpecialChars | Placeholder],
    literal: Callable[[str], str] = fold,
    limit: int | None = MAX_REGEX_LENGTH,
) -> str | None:
    """A Sigma string (text and wildcards) as a whole-value regex; ``literal`` writes the text.

    The default is a case-insensitive Lucene regex; None for a placeholder (not ours to expand)
    or a pattern over ``limit``.
    """
    out: list[str] = []
    for part in parts:
        if part is SpecialChars.WILDCARD_MULTI:
            out.append(".*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            out.append(".")
        elif isinstance(part, str):
            out.append(literal(part))
        else:
            return None
    pattern = "".join(out)
    return pattern if limit is None or len(pattern) <= limit else None


def predicate_regex(value: str, match: Match) -> str | None:
    """The regex a case-insensitive test of ``match`` on ``value`` becomes, or None if it stays."""
    shape = _SHAPES.get(match)
    if shape is None or not any(c.lower() != c.upper() for c in value):
        return None
    pattern = shape.format(fold(value))
    return pattern if len(pattern) <= MAX_REGEX_LENGTH else None


def term_regex(pattern: str, ignore_case: bool) -> str | None:
    """One of ``_term_pattern``'s regexes as its whole-value Lucene equivalent, or None."""
    head = pattern.startswith(_HEAD)
    body = pattern[len(_HEAD) :] if head else pattern
    for tail, lucene_tail in _TAILS:
        if not body.endswith(tail):
            continue
        needle = _unescape(body[: len(body) - len(tail)])
        if needle:
            lucene = ("(.*" + _HEAD[3:-1] + ")?" if head else ".*") + fold(needle, ignore_case) + lucene_tail
            return lucene if len(lucene) <= MAX_REGEX_LENGTH else None
    return None


def _unescape(text: str) -> str | None:
    """The literal that ``mapping.regex_escape`` turned into ``text``, or None if it did not."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] and text[index + 1] in _PYTHON_META:
            out.append(text[index + 1])
            index += 2
        elif char in _PYTHON_META:
            return None
        else:
            out.append(char)
            index += 1
    return "".join(out)


@dataclass
class LuceneRegexTransformation(ValueTransformation):
    """Rewrite our regexes (and, with ``strings``, case-insensitive strings) for Lucene's engine."""

    strings: bool = True

    def apply_value(self, field: str | None, val: SigmaType) -> SigmaType | None:
        if isinstance(val, SigmaRegularExpression):
            flags = val.flags
            if not flags <= {SigmaRegularExpressionFlag.IGNORECASE}:
                return None
            ignore_case = SigmaRegularExpressionFlag.IGNORECASE in flags
            pattern = term_regex(str(val.regexp), ignore_case)
        elif self.strings and field is not None and type(val) is SigmaString:
            if not any(isinstance(p, str) and p.lower() != p.upper() for p in val.s):
                return None  # no letter to fold: the backend's comparison is already exact
            pattern = string_regex(val.s)
        else:
            return None
        return None if pattern is None else SigmaRegularExpression(pattern)


def lucene_pipeline(strings: bool) -> ProcessingPipeline:
    """The pipeline to append after ecs_windows: ``strings`` for lucene/esql, not for eql."""
    name = "strings and regexes" if strings else "regexes"
    return ProcessingPipeline(
        name=f"rmm2sigma: {name} in Lucene's regex dialect",
        priority=90,
        items=[
            ProcessingItem(
                identifier="rmm2sigma_lucene_regex",
                transformation=LuceneRegexTransformation(strings=strings),
            )
        ],
    )


__all__ = [
    "MAX_REGEX_LENGTH",
    "LuceneRegexTransformation",
    "fold",
    "lucene_pipeline",
    "predicate_regex",
    "string_regex",
    "term_regex",
]
