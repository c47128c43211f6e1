"""User regexes (KQL ``matches regex``, RE2) read with Python's own regex parser.

Four uses, all on the parsed pattern tree (``re._parser``), never on the pattern text:

* ``scoped_flags``: RE2 accepts ``(?i)`` anywhere (it applies to the rest of its group); Python,
  and so pySigma, refuses it after the start. It becomes the scoped ``(?i:...)`` both accept.
* ``lucene_regex``: the pattern in Lucene's regex dialect (the Elastic targets). Lucene matches
  the whole value and has no ``(?i)``, no ``\\s \\d \\w`` and no anchors, so an unanchored pattern
  gets ``.*`` around it, letters under ``(?i)`` become ``[xX]`` classes, ``\\d`` becomes ``[0-9]``
  and so on, with RE2's meanings (ASCII classes; ``.`` does not match a newline). A construct
  with no Lucene equivalent (``\\b``, look-around, a back-reference, an anchor inside the
  pattern, ``(?m)``) gives a ``NoTranslation`` with the reason, so the target can refuse.
* ``samples``: strings the pattern matches, and near misses, for the proof's event generator.
* ``always_captures``: whether a group holds text in every match (KQL's ``extract()`` as a test).
"""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

MAX_REGEX_LENGTH = 1000  # Elasticsearch's default index.max_regex_length
# Lucene's reserved regex characters, plus ``^``/``$`` (plain in Lucene, anchors in Python: escaping
# keeps both readings literal). ``/`` is the lucene backend's to escape, ``"`` the ES|QL backend's
# too but a backslash before it is harmless.
LUCENE_RESERVED = frozenset('.?+*|{}[]()"\\#@&<>~^$')
_SPACE = "\t\n\f\r "  # RE2's \s
_WORD = [(ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("_"), ord("_")), (ord("a"), ord("z"))]
_CATEGORIES = {  # category -> (ranges, negated), RE2's ASCII meanings
    "CATEGORY_DIGIT": ([(ord("0"), ord("9"))], False),
    "CATEGORY_NOT_DIGIT": ([(ord("0"), ord("9"))], True),
    "CATEGORY_SPACE": ([(ord(c), ord(c)) for c in _SPACE], False),
    "CATEGORY_NOT_SPACE": ([(ord(c), ord(c)) for c in _SPACE], True),
    "CATEGORY_WORD": (_WORD, False),
    "CATEGORY_NOT_WORD": (_WORD, True),
}
_FOLD_LIMIT = 512  # a range under (?i) is folded character by character up to this size


# a flag of our own beside re's: word boundaries are left out (``lucene_regex(widen=True)``)
_WIDEN = 1 << 30


class NoTranslation(ValueError):
    """A regex construct with no equivalent in the target's dialect; the message says which."""


def parse(pattern: str, ignore_case: bool = False) -> Any:
    """The parsed pattern (``re._parser.SubPattern``); raises ``re.error`` when it is invalid."""
    return _parser.parse(scoped_flags(pattern), _c.SRE_FLAG_IGNORECASE if ignore_case else 0)


# ---------------------------------------------------------------- RE2 inline flags


def scoped_flags(pattern: str) -> str:
    """``a(?i)b|c`` -> ``a(?i:b)|(?i:c)``: an inline flag group after the start, scoped to the
    rest of its enclosing group as RE2 reads it; the pattern is unchanged when there is none."""
    tokens = list(_tokens(pattern))
    out: list[str] = []
    pending: list[tuple[str, int]] = []  # (flags, depth) of the open scoped groups
    depth = 0
    for index, token in enumerate(tokens):
        if token.startswith("(?") and token.endswith(")") and len(token) > 3 and index > 0:
            flags = token[2:-1]
            out.append(f"(?{flags}:")
            pending.append((flags, depth))
            continue
        if token == "|":
            closing = [flags for flags, at in pending if at == depth]
            out.append(")" * len(closing) + "|" + "".join(f"(?{flags}:" for flags in closing))
            continue
        if token == ")":
            while pending and pending[-1][1] == depth:
                pending.pop()
                out.append(")")
            depth -= 1
        elif token.startswith("("):
            depth += 1
        out.append(token)
    out.append(")" * len(pending))
    return "".join(out)


def _tokens(pattern: str) -> Iterator[str]:
    """Escapes, classes, group openers (flag groups whole), ``|``, ``)`` and single characters."""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            yield pattern[index : index + 2]
            index += 2
        elif char == "[":
            end = index + 1
            if pattern[end : end + 1] == "^":
                end += 1
            if pattern[end : end + 1] == "]":
                end += 1
            while end < len(pattern) and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            yield pattern[index : end + 1]
            index = end + 1
        elif char == "(" and pattern.startswith("(?", index):
            end = index + 2
            while (end < len(pattern) and pattern[end].isalpha()) or pattern[end : end + 1] == "-":
                end += 1
            if pattern[end : end + 1] == ")" and end > index + 2:
                yield pattern[index : end + 1]  # a flag group: (?i)
            else:
                yield pattern[index:end]  # an opener such as (?: or (?i:
                if pattern[end : end + 1] == ":":
                    yield ":"
            index = end + 1 if pattern[end : end + 1] in (")", ":") else end
        else:
            yield char
            index += 1


# ---------------------------------------------------------------- Lucene


def lucene_regex(pattern: str, ignore_case: bool = False, widen: bool = False) -> str:
    """The whole-value Lucene regex matching exactly the values ``pattern`` finds (``re.search``);
    with ``widen``, word boundaries (``\\b``, ``\\B``), which Lucene lacks, are left out: an
    assertion left out only lets more values match.

    Raises ``NoTranslation`` (with the construct) or ``re.error`` (an invalid pattern).
    """
    tree = parse(pattern, ignore_case)
    flags = tree.state.flags | (_WIDEN if widen else 0)
    if flags & _c.SRE_FLAG_MULTILINE:
        raise NoTranslation("the (?m) flag (anchors at line ends) has no Lucene equivalent")
    items = list(tree)
    alternatives = items[0][1][1] if len(items) == 1 and items[0][0] is _c.BRANCH else [items]
    parts = [_anchored(list(alternative), flags) for alternative in alternatives]
    result = parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"
    if len(result) > MAX_REGEX_LENGTH:
        raise NoTranslation(f"the translated regex is longer than Elasticsearch's limit ({MAX_REGEX_LENGTH})")
    return result


@cache
def lucene_translatable(pattern: str, ignore_case: bool = False, widen: bool = False) -> bool:
    """Whether ``lucene_regex`` translates the pattern (asked per Elastic target and test: cached)."""
    try:
        lucene_regex(pattern, ignore_case, widen)
    except (NoTranslation, re.error):
        return False
    return True


def _anchored(items: list[Any], flags: int) -> str:
    items = _opened(items)
    head = bool(items) and items[0] == (_c.AT, _c.AT_BEGINNING)
    tail = bool(items) and items[-1][0] is _c.AT and items[-1][1] in (_c.AT_END, _c.AT_END_STRING)
    if items and items[0] == (_c.AT, _c.AT_BEGINNING_STRING):
        head = True
    body = items[int(head) : len(items) - int(tail)]
    ending = None if tail else _end_alternatives(body[-1] if body else None)
    if ending is not None:  # `x(?:\\|$)`: a branch not ending with `$` may be followed by anything
        ends = "|".join(
            _sequence(branch[:-1], flags) if branch[-1:] == [_END] else _sequence(branch, flags) + ".*"
            for branch in ending
        )
        return ("" if head else ".*") + _sequence(body[:-1], flags) + f"({ends})"
    return ("" if head else ".*") + _sequence(body, flags) + ("" if tail else ".*")


_END = (_c.AT, _c.AT_END)


def _opened(items: list[Any]) -> list[Any]:
    """The sequence with a first or last group that sets no flag written as its items, which
    matches the same texts: so an anchor ending the last group (``\\s(\\S+$)``) ends the pattern."""
    while items and items[-1][0] is _c.SUBPATTERN and not items[-1][1][1] and not items[-1][1][2]:
        items = [*items[:-1], *items[-1][1][3]]
    while items and items[0][0] is _c.SUBPATTERN and not items[0][1][1] and not items[0][1][2]:
        items = [*items[0][1][3], *items[1:]]
    return items


def _end_alternatives(item: Any) -> list[Any] | None:
    """The branches of a pattern's last item when some end with the end anchor (``(?:\\|$)``, whose
    group ``_opened`` wrote as its items)."""
    if item is None or item[0] is not _c.BRANCH:
        return None
    branches = [list(branch) for branch in item[1][1]]
    if not any(branch[-1:] == [_END] for branch in branches):
        return None
    if any(_END in branch[:-1] for branch in branches):
        return None  # `$` inside a branch: no Lucene equivalent
    return branches


def _sequence(items: Any, flags: int) -> str:
    return "".join(_item(op, av, flags) for op, av in items)


def _item(op: Any, av: Any, flags: int) -> str:
    fold = bool(flags & _c.SRE_FLAG_IGNORECASE)
    if op is _c.LITERAL:
        return _literal(av, fold)
    if op is _c.NOT_LITERAL:
        return _class([(av, av)], True, fold)
    if op is _c.ANY:
        return "." if flags & _c.SRE_FLAG_DOTALL else _class([(10, 10)], True, False)
    if op is _c.IN:
        return _in(av, fold)
    if op is _c.BRANCH:
        return "(" + "|".join(_sequence(branch, flags) for branch in av[1]) + ")"
    if op is _c.SUBPATTERN:
        _, add, remove, inner = av
        return "(" + _sequence(inner, (flags | add) & ~remove) + ")"
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):  # laziness does not change which values match
        low, high, inner = av
        body = _sequence(inner, flags)
        atom = body if len(list(inner)) == 1 and inner[0][0] in (_c.LITERAL, _c.IN, _c.ANY) else f"({body})"
        if (low, high) == (0, _c.MAXREPEAT):
            return atom + "*"
        if (low, high) == (1, _c.MAXREPEAT):
            return atom + "+"
        if (low, high) == (0, 1):
            return atom + "?"
        if high == _c.MAXREPEAT:
            return f"{atom}{{{low},}}"
        return f"{atom}{{{low}}}" if low == high else f"{atom}{{{low},{high}}}"
    if op is _c.AT and av in (_c.AT_BOUNDARY, _c.AT_NON_BOUNDARY) and flags & _WIDEN:
        return ""
    if op is _c.AT:
        raise NoTranslation(f"{_AT_NAMES.get(str(av), str(av))} has no Lucene equivalent")
    raise NoTranslation(f"{_OP_NAMES.get(str(op), str(op).lower())} has no Lucene equivalent")


_AT_NAMES = {
    "AT_BOUNDARY": "a word boundary (\\b)",
    "AT_NON_BOUNDARY": "a non-boundary (\\B)",
    "AT_BEGINNING": "an anchor (^) inside the pattern",
    "AT_END": "an anchor ($) inside the pattern",
    "AT_BEGINNING_STRING": "an anchor (\\A) inside the pattern",
    "AT_END_STRING": "an anchor (\\z) inside the pattern",
}
_OP_NAMES = {
    "ASSERT": "a look-ahead or look-behind",
    "ASSERT_NOT": "a negative look-ahead or look-behind",
    "GROUPREF": "a back-reference",
    "GROUPREF_EXISTS": "a conditional group",
    "ATOMIC_GROUP": "an atomic group",
    "POSSESSIVE_REPEAT": "a possessive repeat",
}


def _literal(code: int, fold: bool) -> str:
    char = chr(code)
    spellings = _spellings(char) if fold else [char]
    if len(spellings) > 1:
        return "[" + "".join(_class_char(c) for c in spellings) + "]"
    return f"\\{char}" if char in LUCENE_RESERVED else char


def _spellings(char: str) -> list[str]:
    return [s for s in dict.fromkeys((char, char.lower(), char.upper(), char.swapcase())) if len(s) == 1]


def _in(items: Any, fold: bool) -> str:
    ranges: list[tuple[int, int]] = []
    negated = False
    category_negated: bool | None = None
    for op, av in items:
        if op is _c.NEGATE:
            negated = True
        elif op is _c.LITERAL:
            ranges.append((av, av))
        elif op is _c.RANGE:
            ranges.append(av)
        elif op is _c.CATEGORY:
            members, inverse = _CATEGORIES[str(av)]
            if (category_negated is not None and category_negated != inverse) or (inverse and len(items) > 1):
                raise NoTranslation(f"a class mixing {av} with other members has no Lucene equivalent")
            category_negated = inverse
            ranges.extend(members)
        else:
            raise NoTranslation(f"{op} in a class has no Lucene equivalent")
    return _class(ranges, negated != bool(category_negated), fold)


def _class(ranges: list[tuple[int, int]], negated: bool, fold: bool) -> str:
    if fold:
        ranges = _folded(ranges)
    text = "".join(
        _class_char(chr(low)) if low == high else f"{_class_char(chr(low))}-{_class_char(chr(high))}"
        for low, high in _merged(ranges)
    )
    return f"[{'^' if negated else ''}{text}]"


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping and adjacent ranges joined, in order."""
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _folded(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = list(ranges)
    for low, high in ranges:
        if high - low > _FOLD_LIMIT:
            raise NoTranslation("a large character range under (?i) has no exact Lucene equivalent")
        for code in range(low, high + 1):
            out.extend((ord(s), ord(s)) for s in _spellings(chr(code)) if ord(s) != code)
    return out


def _class_char(char: str) -> str:
    return f"\\{char}" if char in LUCENE_RESERVED or char == "-" else char


# ---------------------------------------------------------------- captures


def always_captures(pattern: str, group: int) -> bool:
    """Whether every match of ``pattern`` gives ``group`` (0: the whole match) some text: then
    KQL's ``extract(pattern, group, x)`` is not empty exactly when ``x`` matches the pattern.

    A group that is an item of the pattern's top-level sequence (maybe inside other such groups)
    takes part in every match; one under a repetition or an alternative may not: False."""
    try:
        tree = parse(pattern)
    except Exception:  # re.error, or a pattern too deep for the parser: not known
        return False
    if group == 0:
        return bool(tree.getwidth()[0] > 0)
    items = list(tree)
    while items:
        op, av = items.pop(0)
        if op is _c.SUBPATTERN:
            if av[0] == group:
                return bool(av[-1].getwidth()[0] > 0)
            items = [*av[-1], *items]
    return False


# ---------------------------------------------------------------- samples


def samples(pattern: str, ignore_case: bool = False, seed: int = 0, count: int = 4) -> list[str]:
    """Strings ``pattern`` matches (built from its parsed tree) and near misses (one character
    changed, the last one dropped), for generating events; [] for an invalid pattern."""
    try:
        tree = parse(pattern, ignore_case)
    except Exception:  # re.error, or a pattern too deep for the parser: nothing to sample
        return []
    chooser = random.Random(seed)
    out: list[str] = []
    for index in range(count):
        replay = random.Random()
        replay.setstate(chooser.getstate())
        text = _sample(list(tree), chooser, shortest=index == 0)
        out.extend([text, f"x {text} x", text.swapcase()])
        # a word boundary is a space there; near misses: the same choices with none, and word
        # characters around (Lucene's regexes leave boundaries out: these show it)
        joined = _sample(list(tree), replay, shortest=index == 0, boundary="")
        out.extend([joined, f"x{joined}x"] if joined != text else [])
        if text:
            out.extend([text[:-1], text[1:], _mutated(text, chooser)])
    return list(dict.fromkeys(out))


def _sample(items: list[Any], chooser: random.Random, shortest: bool, boundary: str = " ") -> str:
    out: list[str] = []
    for op, av in items:
        if op is _c.AT and av is _c.AT_BOUNDARY:
            out.append(boundary)
        elif op is _c.LITERAL:
            out.append(chr(av))
        elif op is _c.NOT_LITERAL:
            out.append("x" if av != ord("x") else "y")
        elif op is _c.ANY:
            out.append("a")
        elif op is _c.IN:
            out.append(_class_sample(av, chooser))
        elif op is _c.BRANCH:
            branches = av[1]
            out.append(
                _sample(
                    list(branches[0 if shortest else chooser.randrange(len(branches))]),
                    chooser,
                    shortest,
                    boundary,
                )
            )
        elif op is _c.SUBPATTERN:
            out.append(_sample(list(av[3]), chooser, shortest, boundary))
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            low, high, inner = av
            times = low if shortest else chooser.randint(low, min(high, low + 3))
            out.extend(_sample(list(inner), chooser, shortest, boundary) for _ in range(times))
    return "".join(out)


def _class_sample(items: Any, chooser: random.Random) -> str:
    if any(op is _c.NEGATE for op, _ in items):
        candidates = [c for c in "aZ5 _-." if not _in_class(c, items)]
        return candidates[0] if candidates else "\u00e9"
    op, av = items[chooser.randrange(len(items))]
    if op is _c.LITERAL:
        return chr(av)
    if op is _c.RANGE:
        return chr(chooser.randint(av[0], av[1]))
    members, negated = _CATEGORIES.get(str(av), ([(ord("a"), ord("a"))], False))
    if negated:
        return "%" if str(av) != "CATEGORY_NOT_SPACE" else "a"
    low, high = members[chooser.randrange(len(members))]
    return chr(chooser.randint(low, high))


def _in_class(char: str, items: Any) -> bool:
    code = ord(char)
    for op, av in items:
        if (op is _c.LITERAL and av == code) or (op is _c.RANGE and av[0] <= code <= av[1]):
            return True
        if op is _c.CATEGORY:
            members, negated = _CATEGORIES.get(str(av), ([], False))
            if any(low <= code <= high for low, high in members) != negated:
                return True
    return False


def _mutated(text: str, chooser: random.Random) -> str:
    index = chooser.randrange(len(text))
    replacement = "#" if text[index] != "#" else "!"
    return text[:index] + replacement + text[index + 1 :]
