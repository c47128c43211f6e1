"""False-positive exclusions of pasted hunting pages, as Sigma filters next to the rule.

A page's ``Filter/Exclusion:`` line is a tiny expression language over pseudo-ECS names
(``process.parent_process_name == "x.exe" or process.command_line contains "job"``), parsed here
with ``exclusion.lark``. Each name is moved to the Defender column it means in the rule's table
(``mapping/page_fields.yml``), and from there to a Sigma field by the rule's own mapping
(``rmm2sigma.mapping``), under a negation: an exclusion is never widened, because a wider
exclusion would silently narrow the rule. The result is a Sigma v2 filter
(``filter: {rules: [<rule id>], ..., condition: not ...}``), which pySigma applies at conversion.

Semantics: ``==`` (and ``!=``, ``in (...)``) compares case-insensitively (a Windows process or user
name is the same in any case, and Sigma's equality is case-insensitive); ``contains``,
``startswith`` and ``endswith`` are case-insensitive as in Sigma. An exclusion that does not parse
(prose advice) or names a field with no column in the rule's table is kept as a note, never guessed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import InputError, Rmm2SigmaError, one_line
from .kql.parser import _check_depth
from .kql.syntax import Pos
from .mapping import MappedRule, _rename_columns, map_detection
from .model import And, Detection, Fidelity, Match, Node, Not, Or, Predicate, walk
from .sigma import detection_document, title_case
from .sigmahq import safe_load
from .sources import FalsePositive, SourceRule
from .yaml_text import dump_yaml

_NAMESPACE = uuid.UUID("0b5e7c1e-3f0a-4d7e-9a43-6c2f5d1b8e27")
_OPERATORS = {
    "==": Match.EQUALS,
    "contains": Match.CONTAINS,
    "startswith": Match.STARTSWITH,
    "endswith": Match.ENDSWITH,
}
_ESCAPE = re.compile(r"\\([\\\"'])")
# ``level`` is the rule's: pySigma reads it on filters too, and SigmaHQ's checks ask for it
_KEY_ORDER = ("title", "id", "status", "description", "author", "date", "logsource", "filter", "level")
MAX_TITLE = 100


@dataclass(frozen=True)
class PageFilter:
    """One written filter: plain data, so results cross process boundaries cheaply."""

    id: str
    title: str
    scenario: str
    exclusion: str
    document: Mapping[str, Any]


@dataclass(frozen=True)
class RuleFilters:
    """A rule's filters and the notes on every exclusion that could not become one."""

    filters: tuple[PageFilter, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def yaml(self) -> str:
        """All filters as one multi-document file (``sigma convert --filter FILE`` reads them all)."""
        return "---\n".join(dump_yaml(f.document) for f in self.filters)


# ---------------------------------------------------------------- the exclusion language


@v_args(inline=True)
class _ToModel(Transformer[Token, Node]):
    """Parse tree to model nodes over pseudo-ECS field names (mapped later)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def test(self, field: Token, operator: Token, value: Token) -> Predicate:
        name = str(operator).lower()
        match = _OPERATORS[name.replace("!=", "==")]
        return self._predicate(field, match, [value], name == "!=", self._span(field, value))

    def test_in(self, field: Token, _in: Token, *values: Token) -> Predicate:
        return self._predicate(field, Match.EQUALS, values, False, self._span(field, values[-1]) + ")")

    def _span(self, first: Token, last: Token) -> str:
        return self.text[first.start_pos : last.end_pos]

    @staticmethod
    def _predicate(
        field: Token, match: Match, values: Sequence[Token], negated: bool, text: str
    ) -> Predicate:
        return Predicate(
            column=str(field),
            match=match,
            # a backslash escapes only a quote or itself: any other is literal, as in C:\\Windows
            values=tuple(_ESCAPE.sub(r"\1", str(value)[1:-1]) for value in values),
            negated=negated,
            text=text,
            pos=Pos(field.line or 1, field.column or 1),
        )

    def disjunction(self, *items: Node | Token) -> Or:
        return Or(tuple(item for item in items if not isinstance(item, Token)))

    def conjunction(self, *items: Node | Token) -> And:
        return And(tuple(item for item in items if not isinstance(item, Token)))


@cache
def _parser() -> Lark:
    grammar = resources.files(__package__).joinpath("exclusion.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=False, maybe_placeholders=False)


def parse_exclusion(text: str) -> Node:
    """An exclusion as a model tree over pseudo-ECS names; ``InputError`` located in ``text``."""
    try:
        _check_depth(text)  # the tree's consumers recurse: bound the nesting as for KQL
    except Rmm2SigmaError as error:
        raise InputError(error.message, line=error.line, column=error.column) from None
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as error:
        if _at_end(error):  # located where more was expected: the end of the text
            lines = text.split("\n")
            raise InputError(_reason(error), line=len(lines), column=len(lines[-1]) + 1) from None
        raise InputError(_reason(error), line=error.line, column=error.column) from None
    return _ToModel(text).transform(tree)


def _at_end(error: UnexpectedInput) -> bool:
    return isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    )


def _reason(error: UnexpectedInput) -> str:
    if _at_end(error):
        return "the expression ends too early"
    if isinstance(error, UnexpectedToken):
        return f"unexpected {error.token!s}"
    if isinstance(error, UnexpectedCharacters):
        return 'expected a field test such as process.name == "x.exe"'
    return "not an exclusion expression"


# ---------------------------------------------------------------- fields


@cache
def page_fields() -> Mapping[str, Mapping[str, str]]:
    """Defender table -> pseudo-ECS name -> column, from ``mapping/page_fields.yml``."""
    text = resources.files("rmm2sigma.mapping").joinpath("page_fields.yml").read_text(encoding="utf-8")
    data: dict[str, dict[str, str]] = safe_load(text)["tables"]
    return data


# ---------------------------------------------------------------- filters


def rule_filters(source: SourceRule, mapped: MappedRule, rule: Mapping[str, Any], exact: bool) -> RuleFilters:
    """The Sigma filters for ``rule``'s (its document's) false-positive exclusions, and notes on
    those kept as text. Author, date and log source are the rule's; ids derive from its id."""
    filters: list[PageFilter] = []
    notes: list[str] = []
    for index, fp in enumerate(source.false_positives, start=1):
        if not fp.exclusion:
            continue
        try:
            selection = _exclusion_detection(fp, mapped, exact)
        except Rmm2SigmaError as error:
            where = f"line {error.line} column {error.column}: " if error.line else ""
            notes.append(
                f"false-positive exclusion {index} kept as a note, not a filter ({where}{error.message}): "
                f"{one_line(fp.exclusion)}"
            )
            continue
        filter_id = str(uuid.uuid5(_NAMESPACE, f"{rule['id']}|{index}"))
        title = title_case(fp.scenario, MAX_TITLE)
        document = {
            "title": title,
            "id": filter_id,
            "status": rule.get("status"),
            "description": _description(fp),
            "author": rule.get("author"),
            "date": rule.get("date"),
            "logsource": dict(rule["logsource"]),
            "filter": {"rules": [rule["id"]], **selection},
            "level": rule.get("level"),
        }
        ordered = {key: document[key] for key in _KEY_ORDER if document.get(key)}
        filters.append(PageFilter(filter_id, title, fp.scenario, fp.exclusion, ordered))
    return RuleFilters(tuple(filters), tuple(notes))


def _exclusion_detection(fp: FalsePositive, mapped: MappedRule, exact: bool) -> dict[str, Any]:
    """The filter's selections and ``not ...`` condition; ``InputError`` located in the file."""
    try:
        tree = parse_exclusion(fp.exclusion)
    except InputError as error:
        raise InputError(error.message, line=fp.line, column=fp.column + (error.column or 1) - 1) from None
    table = mapped.detection.table
    columns = page_fields().get(table, {})
    for leaf in walk(tree):
        if isinstance(leaf, Predicate) and leaf.column not in columns:
            message = f"{leaf.column} names no column of {table}"
            raise InputError(message, line=fp.line, column=fp.column + leaf.pos.column - 1)
    exclusion = _rename_columns(tree, columns)
    # under a negation the mapping never widens: a wider exclusion would narrow the rule
    negated = map_detection(Detection(table, Not(exclusion)), exact=exact)
    predicate = negated.detection.predicate
    if not isinstance(predicate, Not) or negated.fidelity is Fidelity.APPROXIMATE:
        raise InputError(f"the exclusion has no exact Sigma form in {table}", line=fp.line, column=fp.column)
    document = detection_document(predicate.item)
    condition = document.pop("condition")
    document["condition"] = f"not ({condition})" if " " in condition else f"not {condition}"
    return document


def _description(fp: FalsePositive) -> str:
    parts = [" ".join(part.split()) for part in (fp.scenario, fp.description) if part.strip()]
    return " ".join(part if part.endswith((".", "!", "?")) else part + "." for part in parts)


def applied_rule(rule: Any, filters: Sequence[PageFilter]) -> Any:
    """``rule`` (a fresh ``SigmaRule``) with ``filters`` applied, as pySigma applies them."""
    from sigma.collection import SigmaCollection
    from sigma.filters import SigmaFilter

    collection = SigmaCollection([rule, *(SigmaFilter.from_dict(dict(f.document)) for f in filters)])
    return collection.rules[0]
