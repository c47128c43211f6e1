"""Case rules and regexes in Lucene's dialect for the Elastic targets, and their backends' lists.

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
  letters become classes and the flag is dropped (lucene, esql, eql). Any other regex (a user's
  ``matches regex``) is translated from its parsed tree (``regex.lucene_regex``); one with no
  Lucene equivalent (``\\b``, look-around, ...) makes the target refuse the rule, with the reason;
* a case-sensitive string stays a plain, case-sensitive term (lucene, esql); on a ``.caseless``
  field, which Elastic's templates add to a field to hold its value lowercased, a case-sensitive
  test (a string or a regex) asks the field itself, which holds the value as written
  (``CasedOnWrittenValue``).

ES|QL correlations without time buckets (``targets.WHOLE_RANGE``, for a KQL threshold without
``bin()``) count once over the last timespan: ``| where @timestamp >= NOW() - 7days | stats ...``.

Lucene's regex syntax for what we emit (literals, classes, negated classes of literal ranges,
``.*``, ``( )?``, backslash escapes) matches a value iff Python's ``re.fullmatch`` with
``re.DOTALL`` does: ``tests/test_elastic.py`` evaluates the queries that way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from sigma.backends.elasticsearch import EqlBackend, ESQLBackend
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.conversion.base import TextQueryBackend
from sigma.conversion.deferred import DeferredQueryExpression
from sigma.conversion.state import ConversionState
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations.base import DetectionItemTransformation, ValueTransformation
from sigma.rule import SigmaDetectionItem
from sigma.types import (
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaExists,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaType,
    SpecialChars,
)

from ..mapping import TERM_CLASS
from ..model import Match
from ..regex import LUCENE_RESERVED as _RESERVED
from ..regex import MAX_REGEX_LENGTH, NoTranslation, lucene_regex
from . import add_whole_range

_PYTHON_META = frozenset("\\.^$|?*+()[]{}")  # what mapping.regex_escape escapes

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
    return "".join([_fold_char(char, ignore_case) for char in text])


@lru_cache(maxsize=1024)  # bounded: a hostile input may hold any character
def _fold_char(char: str, ignore_case: bool) -> str:
    spellings = [s for s in dict.fromkeys((char.lower(), char.upper(), char)) if len(s) == 1]
    if ignore_case and len(spellings) > 1:
        return f"[{''.join(spellings)}]"
    return f"\\{char}" if char in _RESERVED else char


def string_regex(parts: Iterable[str | SpecialChars | Placeholder], ignore_case: bool = True) -> str | None:
    """A Sigma string (text and wildcards) as a whole-value Lucene regex, by default case-insensitive.

    None for a placeholder (not ours to expand) or a pattern over ``MAX_REGEX_LENGTH``.
    """
    out: list[str] = []
    for part in parts:
        if part is SpecialChars.WILDCARD_MULTI:
            out.append(".*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            out.append(".")
        elif isinstance(part, str):
            out.append(fold(part, ignore_case))
        else:
            return None
    pattern = "".join(out)
    return pattern if len(pattern) <= MAX_REGEX_LENGTH else None


def predicate_regex(value: str, match: Match, ignore_case: bool = True) -> str | None:
    """The regex a test of ``match`` on ``value`` becomes (by default case-insensitive), or None
    if it stays: no letters, or a pattern over ``MAX_REGEX_LENGTH``."""
    shape = _SHAPES.get(match)
    if shape is None or not any(c.lower() != c.upper() for c in value):
        return None
    pattern = shape.format(fold(value, ignore_case))
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
        if isinstance(val, SigmaCasedString):
            return cased_string(field, val, self.strings)
        if isinstance(val, SigmaRegularExpression):
            return SigmaRegularExpression(regex_for_lucene(field, val))
        if self.strings and field is not None and type(val) is SigmaString:
            if not any(isinstance(p, str) and p.lower() != p.upper() for p in val.s):
                return None  # no letter to fold: the backend's comparison is already exact
            pattern = string_regex(val.s)
        else:
            return None
        return None if pattern is None else SigmaRegularExpression(pattern)


def regex_for_lucene(field: str | None, val: SigmaRegularExpression) -> str:
    """A Sigma regex as a whole-value Lucene regex: ours by shape (``term_regex``), a user's by
    its parsed tree (``regex.lucene_regex``). One with no Lucene equivalent is refused, with
    the reason, rather than sent as it is, which would select other events."""
    from sigma.exceptions import SigmaFeatureNotSupportedByBackendError

    flags = val.flags
    pattern = str(val.regexp)
    if not flags <= {SigmaRegularExpressionFlag.IGNORECASE}:
        names = ", ".join(sorted(flag.name.lower() for flag in flags))
        raise SigmaFeatureNotSupportedByBackendError(
            f"regex flags {names} on {field} have no Lucene equivalent"
        )
    ignore_case = SigmaRegularExpressionFlag.IGNORECASE in flags
    translated = term_regex(pattern, ignore_case)
    if translated is not None:
        return translated
    try:
        return lucene_regex(pattern, ignore_case, widen=True)  # fidelity labels a widening, or refuses it
    except (NoTranslation, re.error) as error:
        raise SigmaFeatureNotSupportedByBackendError(
            f"the regex {pattern!r} on {field} cannot be written in Lucene's dialect: {error}"
        ) from None


def cased_string(field: str | None, val: SigmaCasedString, plain: bool) -> SigmaType | None:
    """A case-sensitive string for Elasticsearch, which compares keyword fields case-sensitively:
    lucene and esql (``plain``) write a plain value as a case-sensitive term, so the case flag is
    dropped (and the string left unfolded)."""
    if not plain:
        return None
    out = SigmaString()
    out.s = val.s
    return out


def _case_sensitive(value: SigmaType) -> bool:
    if isinstance(value, SigmaRegularExpression):
        return SigmaRegularExpressionFlag.IGNORECASE not in value.flags
    return isinstance(value, SigmaCasedString)


@dataclass
class CasedOnWrittenValue(DetectionItemTransformation):
    """A case-sensitive test (``|cased``, a regex without ``i``) on a ``.caseless`` field asks the
    field it is a multi-field of: Elasticsearch keeps the value as written there, and only
    ``.caseless`` lowercased, so the test stays as case-sensitive as the original."""

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> None:
        field = detection_item.field
        values = detection_item.value
        if field and field.endswith(".caseless") and values and all(map(_case_sensitive, values)):
            detection_item.field = field.removesuffix(".caseless")


# A regex can hold control characters (RE2's ``\\s`` is ``[\\t\\n\\f\\r ]``; Lucene's dialect has no
# escape for them), which EQL and ES|QL strings cannot all hold raw: their own string escapes.
_CONTROLS = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}  # \f stays raw: both accept it


def _escape_controls(
    text: str | DeferredQueryExpression, table: dict[str, str]
) -> str | DeferredQueryExpression:
    return "".join(table.get(char, char) for char in text) if isinstance(text, str) else text


class KindPreservingLists(TextQueryBackend):
    """Value lists that keep their kind: numbers and case-sensitive strings go in the language's
    case-sensitive ``in`` (``in_operator``); only case-insensitive strings take the backend's own
    list form (KQL ``in~``, EQL ``like~``). Numbers stay numbers: a string list on a number
    column is an error in Kusto (KS107) and compares nothing in Elasticsearch."""

    in_operator: ClassVar[str] = "in"

    def convert_condition_as_in_expression(
        self, cond: ConditionOR | ConditionAND, state: ConversionState
    ) -> str | DeferredQueryExpression:
        args = [arg for arg in cond.args if isinstance(arg, ConditionFieldEqualsValueExpression)]
        if list_kind(args[0].value) == "string":
            return str(super().convert_condition_as_in_expression(cond, state))
        values = [
            self.convert_value_str(arg.value, state) if isinstance(arg.value, SigmaString) else str(arg.value)
            for arg in args
        ]
        field = self.escape_and_quote_field(args[0].field)
        assert self.field_in_list_expression is not None and self.list_separator is not None  # both backends
        return self.field_in_list_expression.format(
            field=field, op=self.in_operator, list=self.list_separator.join(values)
        )


class TwoValuedNegations(TextQueryBackend):
    """Negated field tests written so that a missing field makes them false, as in Sigma.

    EQL and ES|QL use three-valued logic: a test of a missing field is null and ``not null`` is
    null, so ``not (User : "SYSTEM")`` would drop the events without ``User``, which Sigma (and
    Splunk, Lucene, the SQLite proof) select. Every field test (or in-list) under an odd number of
    NOTs is asked as ``(<field exists> and <test>)``, which is false, never null, on a missing
    field; the NOT above it then selects the event. Under an even number of NOTs a null test
    already acts as false (Kleene logic: a result that is true with a null input is true with
    any value in its place, and a positive input can only raise it), so the test is left alone;
    so is a null or existence test, which is never null itself.
    """

    exists_expression: ClassVar[str]  # "{field} exists" in the language, never null

    def convert_condition(
        self,
        cond: ConditionItem | ConditionFieldEqualsValueExpression | ConditionValueExpression | None,
        state: ConversionState,
    ) -> str | DeferredQueryExpression:
        expr = super().convert_condition(cond, state)
        fields = self._tested_fields(cond, state)
        if not fields or not isinstance(expr, str) or not _negated(cond):
            return expr
        tests = [self.exists_expression.format(field=self.escape_and_quote_field(f)) for f in fields]
        return f"({f' {self.and_token} '.join([*tests, expr])})"

    def _tested_fields(
        self,
        cond: ConditionItem | ConditionFieldEqualsValueExpression | ConditionValueExpression | None,
        state: ConversionState,
    ) -> tuple[str, ...]:
        """The fields a test (or a list converted as ``in``) reads; none for anything else."""
        if isinstance(cond, ConditionFieldEqualsValueExpression):
            if isinstance(cond.value, SigmaNull | SigmaExists):
                return ()
            if isinstance(cond.value, SigmaFieldReference):  # null when either field is missing
                return (cond.field, cond.value.field)
            return (cond.field,)
        if isinstance(cond, ConditionOR | ConditionAND) and self.decide_convert_condition_as_in_expression(
            cond, state
        ):
            first = cond.args[0]
            return (first.field,) if isinstance(first, ConditionFieldEqualsValueExpression) else ()
        return ()


def _negated(cond: object) -> bool:
    """Whether a condition stands under an odd number of NOTs (pySigma links every parent)."""
    odd = False
    parent = getattr(cond, "parent", None)
    while parent is not None:
        odd ^= isinstance(parent, ConditionNOT)
        parent = getattr(parent, "parent", None)
    return odd


class Rmm2SigmaEsqlBackend(TwoValuedNegations, ESQLBackend):
    """ESQLBackend writing control characters in strings and regexes as ES|QL string escapes,
    negated tests two-valued (``TwoValuedNegations``)."""

    exists_expression: ClassVar[str] = "{field} is not null"

    def convert_value_re(
        self, r: SigmaRegularExpression, state: ConversionState
    ) -> str | DeferredQueryExpression:
        return _escape_controls(super().convert_value_re(r, state), _CONTROLS)

    def convert_value_str(self, s: SigmaString, state: ConversionState) -> str:
        return str(_escape_controls(super().convert_value_str(s, state), _CONTROLS))


# ES|QL counts once over the rule's time range, which the query states (`targets.WHOLE_RANGE`)
_ESQL_RANGE = "| where @timestamp >= NOW() - {timespan} | stats "
add_whole_range(
    Rmm2SigmaEsqlBackend,
    {
        "correlation_methods": "Correlation with stats once over the last timespan (no buckets)",
        "event_count_aggregation_expression": _ESQL_RANGE + "event_count=count(){fields}{groupby}",
        "value_count_aggregation_expression": _ESQL_RANGE
        + "value_count=count_distinct({field}){fields}{groupby}",
        "temporal_aggregation_expression": _ESQL_RANGE
        + "event_type_count=count_distinct(event_type){fields}{groupby}",
        "groupby_expression_nofield": "",
        "groupby_expression": " by {fields}",
        "groupby_field_expression": "{field}",
        "groupby_field_expression_joiner": ", ",
    },
)


class BooleansByEquality(TextQueryBackend):
    """A boolean with ``==`` (``IsSigned == true``): EQL's ``:`` and KQL's ``=~``, the backends'
    equality, are defined on strings only."""

    def convert_condition_field_eq_val_bool(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str | DeferredQueryExpression:
        assert isinstance(cond.value, SigmaBool)
        return f"{self.escape_and_quote_field(cond.field)} == {self.bool_values[cond.value.boolean]}"


class Rmm2SigmaEqlBackend(TwoValuedNegations, BooleansByEquality, KindPreservingLists, EqlBackend):
    """EqlBackend with ES EQL's case-sensitive forms where the rule asks for them, negated tests
    two-valued (``TwoValuedNegations``; ``?field != null`` is EqlBackend's own existence test).

    Value lists keep their kind: numbers and case-sensitive strings use ``in`` (case-sensitive),
    only case-insensitive strings ``like~``. Regexes use ``regex``, not ``regex~``: by now every
    regex carries its case rule in its letters (``[xX]``, ``LuceneRegexTransformation``). A
    case-sensitive value with wildcards, which ``==`` would compare literally, becomes such a
    regex too. Control characters in strings and regexes are written as EQL string escapes. A number is
    compared with ``==`` (``destination.port == 445``), not EqlBackend's ``:``.
    """

    exists_expression: ClassVar[str] = "?{field} != null"
    in_operator: ClassVar[str] = " in "
    re_expression: ClassVar[str] = '{field} regex "{regex}"'
    # the regex goes in an EQL string: its quotes are escaped (the Lucene rewrite writes `"` as `\"`)
    # beside its backslashes; `\/` is no EQL string escape, and `/` no Lucene operator
    re_escape: ClassVar[tuple[str]] = ('"',)
    # EqlBackend escapes a control character with a backslash before it, which is no EQL escape;
    # only the backslash is escaped here (and the quote), the controls become `\t` as in regexes
    add_escaped: ClassVar[str] = "\\"

    def convert_value_re(
        self, r: SigmaRegularExpression, state: ConversionState
    ) -> str | DeferredQueryExpression:
        return _escape_controls(super().convert_value_re(r, state), _CONTROLS)

    def convert_value_str(self, s: SigmaString, state: ConversionState) -> str:
        return str(_escape_controls(super().convert_value_str(s, state), _CONTROLS))

    def convert_condition_field_eq_val_num(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str | DeferredQueryExpression:
        """A number with ``==``: EQL's ``:`` compares strings, and refuses a number field."""
        return f"{self.escape_and_quote_field(cond.field)} == {cond.value}"

    def convert_condition_field_eq_val_str_case_sensitive(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str | DeferredQueryExpression:
        value = cond.value
        if isinstance(value, SigmaString) and value.contains_special():
            pattern = string_regex(value.s, ignore_case=False)
            if pattern is not None:
                regex = self.convert_value_re(SigmaRegularExpression(pattern), state)
                return self.re_expression.format(field=self.escape_and_quote_field(cond.field), regex=regex)
        return str(super().convert_condition_field_eq_val_str_case_sensitive(cond, state))

    def decide_convert_condition_as_in_expression(
        self, cond: ConditionOR | ConditionAND, state: ConversionState
    ) -> bool:
        if not super().decide_convert_condition_as_in_expression(cond, state):
            return False
        args = [arg for arg in cond.args if isinstance(arg, ConditionFieldEqualsValueExpression)]
        kinds = {list_kind(arg.value) for arg in args}
        # `in` compares literally: case-sensitive wildcards are regexes, one per value
        return len(kinds) == 1 and kinds != {"cased pattern"}


def list_kind(value: object) -> str:
    """What a value in an in-list is: ``number``, ``cased`` (plain), ``cased pattern``, ``string``."""
    if isinstance(value, SigmaNumber):
        return "number"
    if isinstance(value, SigmaCasedString):
        return "cased" if not value.contains_special() else "cased pattern"
    return "string" if isinstance(value, SigmaString) else "other"


def lucene_pipeline(strings: bool) -> ProcessingPipeline:
    """The pipeline to append after ecs_windows: ``strings`` for lucene/esql, not for eql."""
    name = "strings and regexes" if strings else "regexes"
    return ProcessingPipeline(
        name=f"rmm2sigma: {name} in Lucene's regex dialect",
        priority=90,
        items=[
            ProcessingItem(identifier="rmm2sigma_cased_written", transformation=CasedOnWrittenValue()),
            ProcessingItem(
                identifier="rmm2sigma_lucene_regex",
                transformation=LuceneRegexTransformation(strings=strings),
            ),
        ],
    )


__all__ = [
    "MAX_REGEX_LENGTH",
    "CasedOnWrittenValue",
    "LuceneRegexTransformation",
    "Rmm2SigmaEqlBackend",
    "Rmm2SigmaEsqlBackend",
    "TwoValuedNegations",
    "cased_string",
    "fold",
    "list_kind",
    "lucene_pipeline",
    "predicate_regex",
    "regex_for_lucene",
    "string_regex",
    "term_regex",
]
