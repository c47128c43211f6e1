"""Generate Defender events that tell matching semantics apart, for the execution oracles.

A proof is only as good as its events: two queries that differ must disagree on at least one of
them. So every predicate value is varied the ways KQL operators and Sigma modifiers disagree on
(case, whole term vs substring, term separators such as ``_`` and ``.``, prefix and suffix, paths,
empty and absent values, numbers on both sides of a bound), and each variant is placed in a row
where that predicate decides the outcome (the others held so that the boolean structure passes
the decision up, as in MC/DC testing). Seeded random combinations add the cases nobody thought of.

Rows are plain dicts keyed by Defender column; only the generated columns and a few identity
columns are present, every other column is absent (null; an empty string for a Kusto string
column, since Kusto has no null string). ``None`` in a string column means "no value": the KQL
oracle stores it as ``''`` and the Sigma side as an absent field. ``FileName`` is always the last
``\\`` part of ``FolderPath`` (same for the initiating process), as in Defender.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from ..model import And, Detection, Match, Node, Not, Opaque, Or, Predicate, walk

ID = "__id"
Row = dict[str, Any]
Schema = Mapping[str, Mapping[str, str]]

# path column -> the column holding its last part
PATH_COLUMNS = {"FolderPath": "FileName", "InitiatingProcessFolderPath": "InitiatingProcessFileName"}
NAME_COLUMNS = {name: path for path, name in PATH_COLUMNS.items()}
_DEFAULT_DIR = "C:\\Program Files\\Vendor"
_DEFAULT_NAME = "app.exe"
_TERM = "0-9A-Za-z"
_MAX_VALUES = 400  # per leaf: has_any lists run to ~160 values; keep every one of them
_ALTERNATIVES = 6  # satisfying assignments tried per node
_MAX_ROWS = 8000  # per rule, so a query with thousands of tests stays quick to prove


def generate(
    detection: Detection,
    schema: Schema,
    seed: int = 0,
    now: datetime | None = None,
    random_rows: int = 48,
) -> list[Row]:
    """Distinguishing rows for ``detection``'s table, each with a unique integer ``__id``."""
    return _Generator(detection, schema, seed).rows(now or datetime.now(UTC), random_rows)


# ---------------------------------------------------------------- reference semantics (guidance only)


def kql_holds(leaf: Predicate, value: Any) -> bool:
    """KQL's verdict for one column test; it only steers generation, the oracles decide."""
    if leaf.match in (Match.CIDR, Match.HASPREFIX, Match.HASSUFFIX, Match.NULL):
        return term_or_network_holds(leaf, value)
    result = _positive(leaf, value)
    return not result if leaf.negated else result


def _positive(leaf: Predicate, value: Any) -> bool:
    if leaf.match is Match.EMPTY:
        return value is None or value == ""
    if leaf.match in (Match.LT, Match.LTE, Match.GT, Match.GTE):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        bound = leaf.values[0]
        if not isinstance(bound, int | float):
            return False
        return {
            Match.LT: value < bound,
            Match.LTE: value <= bound,
            Match.GT: value > bound,
            Match.GTE: value >= bound,
        }[leaf.match]
    if value is None:
        value = ""
    if not isinstance(value, str) or isinstance(value, bool):
        return any(value == v for v in leaf.values)
    tests = [_string_test(leaf.match, str(v), value, leaf.case_sensitive) for v in leaf.values]
    return all(tests) if leaf.match_all else any(tests)


def _string_test(match: Match, needle: str, text: str, case_sensitive: bool) -> bool:
    if not case_sensitive:
        needle, text = needle.lower(), text.lower()
    if match is Match.EQUALS:
        return text == needle
    if match is Match.CONTAINS:
        return needle in text
    if match is Match.STARTSWITH:
        return text.startswith(needle)
    if match is Match.ENDSWITH:
        return text.endswith(needle)
    if match is Match.HAS:
        return re.search(_has_pattern(needle), text) is not None
    if match is Match.REGEX:
        try:
            return re.search(needle, text) is not None
        except re.error:
            return False
    return False


def _has_pattern(needle: str) -> str:
    head = f"(?<![{_TERM}])" if needle[:1].isalnum() and needle[:1].isascii() else ""
    tail = f"(?![{_TERM}])" if needle[-1:].isalnum() and needle[-1:].isascii() else ""
    return head + re.escape(needle) + tail


def term_or_network_holds(leaf: Predicate, value: Any) -> bool:
    """Kusto's ``hasprefix``/``hassuffix``, ``ipv4_is_in_range`` and ``isnull`` on one value.

    ``ipv4_is_in_range`` of something that is not an IPv4 address is null, and so is its
    negation: such a row is selected neither way.
    """
    if leaf.match is Match.NULL:
        return (value is None) != leaf.negated
    if leaf.match is Match.CIDR:
        try:
            address = ipaddress.IPv4Address(str(value))
        except ValueError:
            return False
        inside = any(address in ipaddress.IPv4Network(str(v)) for v in leaf.values)
        return inside != leaf.negated
    text = "" if value is None else str(value)
    tests = [_term_edge_test(leaf.match, str(v), text, leaf.case_sensitive) for v in leaf.values]
    return (all(tests) if leaf.match_all else any(tests)) != leaf.negated


def _term_edge_test(match: Match, needle: str, text: str, case_sensitive: bool) -> bool:
    if not case_sensitive:
        needle, text = needle.lower(), text.lower()
    pattern = _has_pattern(needle)
    if match is Match.HASPREFIX:
        pattern = pattern.removesuffix(f"(?![{_TERM}])")
    else:
        pattern = pattern.removeprefix(f"(?<![{_TERM}])")
    return re.search(pattern, text) is not None


# addresses of the kinds the networks no public address is in (mapping's ip_types) leave out
_OTHER_ADDRESSES = ("fc00::1", "fe80::1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "224.0.0.251")


def network_variants(networks: Sequence[Any]) -> list[str | None]:
    """Addresses on both sides of each network's edges, and values that are no address at all."""
    out: list[str | None] = []
    for text in networks:
        network = ipaddress.IPv4Network(str(text))
        first, last = int(network.network_address), int(network.broadcast_address)
        for number in (first - 1, first, (first + last) // 2, last, last + 1):
            if 0 <= number <= 0xFFFFFFFF:
                out.append(str(ipaddress.IPv4Address(number)))
    return list(dict.fromkeys([*out, "", None, "not-an-ip", "::1", "8.8.8.8"]))


def pair_values(leaf: Predicate) -> list[tuple[Any, Any]]:
    """Value pairs for ``A == B`` (``fieldref``): equal, equal but for case, different, empty."""
    path = leaf.column in PATH_COLUMNS or str(leaf.values[0]) in PATH_COLUMNS
    same = "C:\\Tools\\App.exe" if path else "Value-1"
    return [
        (same, same),
        (same, same.upper()),
        (same.lower(), same),
        (same, same + "x"),
        ("", ""),
        (None, None),
        (same, None),
        ("", same),
    ]


# ---------------------------------------------------------------- variants


def string_variants(value: str) -> list[str]:
    """The ways a string can sit in a field so that ``has``, ``contains``, ``==``, ``startswith``,
    ``endswith`` and their case rules give different answers."""
    upper, lower = value.upper(), value.lower()
    variants = [
        value,
        upper,
        lower,
        value.swapcase(),
        f"Foo {value} S.r.l.",  # a whole term inside text
        f"Foo {upper} Inc",
        f"x{value}x",  # a bare substring: contains yes, has no
        f"x{lower}x",
        f"{value}x",
        f"x{value}",
        f"{value}-x",
        f"x-{value}",
        f"_{value}_",  # `_` separates KQL terms
        f"é{value}é",  # a Kusto term is a run of Unicode letters and digits, not only ASCII ones
        f".{value}.",
        f"www.{value}/path",
        f"{value} ",
        value[1:],
        value[:-1],
        "",
        "unrelated",
    ]
    return list(dict.fromkeys(variants))


def number_variants(value: int | float) -> list[int | float]:
    return list(dict.fromkeys([value, value - 1, value + 1, 0, -value]))


def path_shapes(text: str | None, name: str | None = None) -> list[str | None]:
    """``text`` where a Defender path column can hold it: always a full path with a backslash."""
    if text is None or text == "":
        return [text]
    base = name or _DEFAULT_NAME
    if "\\" in text:
        full = "C:" + text if text.startswith("\\") else text
        return [full + base if full.endswith("\\") else full]
    return [f"{_DEFAULT_DIR}\\{text}", f"C:\\Program Files\\{text}\\{base}", f"C:\\{text}"]


def _split(path: str | None) -> tuple[str, str | None]:
    if path is None:
        return _DEFAULT_DIR, None
    directory, _, name = path.rpartition("\\")
    return directory or _DEFAULT_DIR, name


# ---------------------------------------------------------------- the generator


@cache
def _ip_kinds() -> dict[str, str]:
    """Address-kind column -> its address column (``RemoteIPType`` -> ``RemoteIP``)."""
    from ..mapping import ip_types

    return dict(ip_types()["columns"])


@cache
def _address_variants() -> tuple[str | None, ...]:
    """Addresses of every kind: both sides of the networks no public address is in, and others."""
    from ..mapping import ip_types

    return (*network_variants(ip_types()["not_public"]), *_OTHER_ADDRESSES)


def ip_kind(address: Any) -> str:
    """Defender's kind of an address, as its ``*IPType`` columns name it (empty for no address)."""
    try:
        ip = ipaddress.ip_address(str(address)) if address else None
    except ValueError:
        return ""
    if ip is None:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return "FourToSixMapping"
    for kind, holds in (
        ("Loopback", ip.is_loopback),
        ("LinkLocal", ip.is_link_local),
        ("Multicast", ip.is_multicast),
        ("Private", ip.is_private and not ip.is_reserved),
        ("Reserved", ip.is_reserved or ip.is_unspecified),
    ):
        if holds:
            return kind
    return "Public"


def _storage(column: str) -> str:
    """The column a value is stored in: a file name lives in its path, an address kind in its address."""
    return NAME_COLUMNS.get(column) or _ip_kinds().get(column) or column


def _get(row: Row, column: str) -> Any:
    if column in NAME_COLUMNS:
        path = row.get(NAME_COLUMNS[column])
        return None if path is None else path.rpartition("\\")[2]
    if column in _ip_kinds():
        return ip_kind(row.get(_ip_kinds()[column]))
    return row.get(column)


def set_value(row: Row, column: str, value: Any) -> Row:
    """A copy of ``row`` with ``column`` set; a file name replaces the last part of its path, a
    path gives its file name, an address kind is set through an address of that kind (``value``
    is the address)."""
    out = dict(row)
    if column in _ip_kinds():
        out[_ip_kinds()[column]] = value
    elif column in NAME_COLUMNS:
        path_column = NAME_COLUMNS[column]
        directory, _ = _split(out.get(path_column))
        out[path_column] = None if value is None else f"{directory}\\{value}"
        out[column] = value
    else:
        out[column] = value
        if column in PATH_COLUMNS and PATH_COLUMNS[column] in row:
            out[PATH_COLUMNS[column]] = None if value is None else _split(value)[1]
    return out


Requirement = tuple[Predicate, bool]


class _Generator:
    def __init__(self, detection: Detection, schema: Schema, seed: int) -> None:
        self.types = schema.get(detection.table, {})
        self.random = random.Random(seed)
        self.root = detection.predicate
        self.memo: dict[tuple[int, bool], list[list[Requirement]]] = {}
        self.pools: dict[str, list[Any]] = {}
        for leaf in walk(self.root):
            if not isinstance(leaf, Predicate):
                continue
            pool = self.pools.setdefault(_storage(leaf.column), [])
            pool.extend(self.variants(leaf))
            if leaf.match is Match.FIELDREF:  # the compared column takes the same values
                self.pools.setdefault(_storage(str(leaf.values[0])), []).extend(self.variants(leaf))
            for sibling in _line_siblings().get(leaf.column, ()):  # the Sigma field finds them there too
                self.pools.setdefault(sibling, []).extend(self.variants(leaf))
        for column, pool in self.pools.items():
            self.pools[column] = list(dict.fromkeys(pool))
            if column in PATH_COLUMNS:
                self.pools[column] = list(dict.fromkeys(s for v in pool for s in path_shapes(v)))

    def variants(self, leaf: Predicate) -> list[Any]:
        kind = self.types.get(leaf.column, "string")
        if kind in ("bool", "boolean"):
            return [True, False, None]
        values = leaf.values[:_MAX_VALUES] if leaf.values else ()
        if leaf.match is Match.CIDR:
            return network_variants(values)
        if leaf.column in _ip_kinds():  # addresses of every kind, the kind derived in ``finish``
            return list(_address_variants())
        if leaf.match is Match.FIELDREF:
            return [value for pair in pair_values(leaf) for value in pair]
        if leaf.match in (Match.EMPTY, Match.NULL) or not values:
            return ["", None, " ", "unrelated"] if kind == "string" else [None, 0, 1]
        out: list[Any] = []
        for value in values:
            value = _typed(value, kind)
            if isinstance(value, str):
                text = _regex_literal(value) if leaf.match is Match.REGEX else value
                variants: list[Any] = string_variants(text)
                if leaf.match is Match.REGEX:
                    variants.extend(regex_variants(value, not leaf.case_sensitive))
                if leaf.column in NAME_COLUMNS:
                    variants = [v for v in variants if "\\" not in v]
                out.extend(variants)
            else:
                out.extend(number_variants(value))
        out.extend(all_but_one_variants(leaf))
        out.append(None)
        return out

    # ------------------------------------------------------------ requirements

    def alternatives(self, node: Node, want: bool) -> list[list[Requirement]]:
        """Leaf requirements that make ``node`` evaluate to ``want`` (a few alternatives)."""
        key = (id(node), want)
        if key not in self.memo:
            self.memo[key] = self._alternatives(node, want)
        return self.memo[key]

    def _alternatives(self, node: Node, want: bool) -> list[list[Requirement]]:
        if isinstance(node, Predicate):
            return [[(node, want)]]
        if isinstance(node, Opaque):
            return [[]]
        if isinstance(node, Not):
            return self.alternatives(node.item, not want)
        if isinstance(node, And) == want:  # every child must be `want`
            first = [self.alternatives(child, want)[0] for child in node.items]
            combos = [_flat(first)]
            for index, child in enumerate(node.items):
                for alt in self.alternatives(child, want)[1:]:
                    combos.append(_flat([*first[:index], alt, *first[index + 1 :]]))
                if len(combos) >= _ALTERNATIVES:
                    break
            return combos[:_ALTERNATIVES]
        # one child decides; hold the others at the opposite value so the decision is visible
        opposite = _flat([self.alternatives(child, not want)[0] for child in node.items])
        combos = []
        for child in node.items[:_ALTERNATIVES]:
            mine = {id(leaf) for leaf, _ in self.alternatives(child, not want)[0]}
            rest = [r for r in opposite if id(r[0]) not in mine]
            combos.extend(alt + rest for alt in self.alternatives(child, want)[:2])
        return combos[:_ALTERNATIVES] or [[]]

    def contexts(self, node: Node) -> Iterator[tuple[Predicate, list[Requirement]]]:
        """Per leaf, requirements on the other leaves under which that leaf decides the outcome."""
        if isinstance(node, Predicate):
            yield node, []
        elif isinstance(node, Not):
            yield from self.contexts(node.item)
        elif isinstance(node, And | Or):
            sibling_want = isinstance(node, And)
            for index, child in enumerate(node.items):
                others: list[Requirement] = []
                for sibling in node.items[:index] + node.items[index + 1 :]:
                    others.extend(self.alternatives(sibling, sibling_want)[0])
                for leaf, inner in self.contexts(child):
                    yield leaf, inner + others

    # ------------------------------------------------------------ solving

    def solve(self, requirements: Sequence[Requirement], row: Row | None = None) -> Row:
        """A row meeting the requirements as far as possible, one column group at a time."""
        out: Row = dict(row or {})
        groups: dict[str, list[Requirement]] = {}
        for leaf, want in requirements:
            groups.setdefault(_storage(leaf.column), []).append((leaf, want))
        for column, needs in groups.items():
            out = self.solve_group(out, column, needs)
        return out

    def solve_group(self, row: Row, column: str, needs: list[Requirement]) -> Row:
        best, best_score = row, -1
        for candidate in self.candidates(column, needs):
            trial = dict(row)
            trial[column] = candidate
            score = sum(kql_holds(leaf, _get(trial, leaf.column)) == want for leaf, want in needs)
            if score == len(needs):
                return trial
            if score > best_score:
                best, best_score = trial, score
        return best

    def candidates(self, column: str, needs: list[Requirement]) -> Iterator[Any]:
        """Values to try for a column: the tested values joined together first, then the pool."""
        if self.types.get(column, "string") != "string":
            yield from (*self.pools.get(column, []), None)
            return
        positive = [
            leaf
            for leaf, want in needs
            if want != leaf.negated and leaf.values and isinstance(leaf.values[0], str)
        ]
        if column in PATH_COLUMNS:
            names = [str(leaf.values[0]) for leaf in positive if leaf.column in NAME_COLUMNS]
            folders = [str(leaf.values[0]).strip("\\") for leaf in positive if leaf.column == column]
            for name in [*names, _DEFAULT_NAME]:
                yield "\\".join(["C:", *folders, name])
                yield "\\".join(["C:", *folders, "x" + name])
        else:
            pieces = [_satisfying(leaf) for leaf in positive]
            yield from (" ".join(pieces), "".join(pieces))
        yield from (*self.pools.get(column, []), "", None, "unrelated")

    # ------------------------------------------------------------ rows

    def rows(self, now: datetime, random_rows: int) -> list[Row]:
        if self.root is None:
            return self.finish([{}], now)
        drafts: list[Row] = []
        for alternative in self.alternatives(self.root, True):
            drafts.append(self.solve(alternative))
        for alternative in self.alternatives(self.root, False):
            drafts.append(self.solve(alternative))
        items = self.root.items if isinstance(self.root, And) else ()
        for index in range(len(items)):  # every conjunct true but one
            others = [
                r for j, item in enumerate(items) if j != index for r in self.alternatives(item, True)[0]
            ]
            drafts.append(self.solve(others + self.alternatives(items[index], False)[0]))
        for leaf, context in self.contexts(self.root):
            if len(drafts) >= _MAX_ROWS:
                break
            base = self.solve(context)
            if leaf.match is Match.FIELDREF:
                drafts.extend(self.pair_rows(base, leaf))
            column = _storage(leaf.column)
            for variant in self.variants(leaf):
                if column == leaf.column and column in PATH_COLUMNS:
                    _, name = _split(base.get(column))
                    drafts.extend(set_value(base, column, shape) for shape in path_shapes(variant, name))
                else:
                    drafts.append(set_value(base, leaf.column, variant))
                    drafts.extend(_beside(base, leaf.column, variant))
                    drafts.extend(
                        set_value(base, sibling, variant) for sibling in _line_siblings().get(leaf.column, ())
                    )
        columns = sorted(self.pools)
        for _ in range(random_rows):
            draft: Row = {}
            for column in columns:
                draft[column] = self.random.choice(self.pools[column])
            drafts.append(draft)
        return self.finish(drafts, now)

    def pair_rows(self, base: Row, leaf: Predicate) -> Iterator[Row]:
        """Rows where the two columns of ``A == B`` are equal, equal but for case, or differ."""
        other = str(leaf.values[0])
        for left, right in pair_values(leaf):
            yield set_value(set_value(base, leaf.column, left), other, right)

    def finish(self, drafts: list[Row], now: datetime) -> list[Row]:
        """Deduplicate, make the derived columns consistent, add identity columns and ids."""
        seen: set[tuple[tuple[str, Any], ...]] = set()
        out: list[Row] = []
        for draft in drafts:
            row = dict(draft)
            for path_column, name_column in PATH_COLUMNS.items():
                if path_column in row and name_column in self.types:
                    row[name_column] = _get(row, name_column)
            for kind_column, address in _ip_kinds().items():
                if kind_column in self.types and address in row:
                    row[kind_column] = ip_kind(row[address])
            for column, prefix in _prefixed_columns().items():
                if column in row:
                    row[column] = device_path(row[column], prefix)
            _json_columns(row)
            key = tuple(sorted((k, (type(v).__name__, v)) for k, v in row.items()))
            if key in seen:
                continue
            seen.add(key)
            index = len(out) + 1
            identity: Row = {ID: index, "Timestamp": now - timedelta(hours=1, seconds=index)}
            if "DeviceId" in self.types:
                identity["DeviceId"] = "device-1"
            if "DeviceName" in self.types:
                identity["DeviceName"] = "host-1.contoso.local"
            if "ReportId" in self.types:
                identity["ReportId"] = index
            out.append({**identity, **row})
        return out


@cache
def _prefixed_columns() -> dict[str, str]:
    """Columns Defender writes under a prefix Sigma's field lacks (a pipe under \\Device\\NamedPipe)."""
    from ..mapping import all_specs

    return {column: f.prefix for spec in all_specs() for column, f in spec.fields.items() if f.prefix}


@cache
def _line_siblings() -> dict[str, tuple[str, ...]]:
    """Columns one Sigma field holds as lines of one text (a Zone.Identifier stream's ReferrerUrl
    and HostUrl, ``line`` in ``defender.yml``) -> the other columns of that text: a value tested in
    one is also generated in the others, where a test of the whole text finds it too."""
    from ..mapping import all_specs

    texts: dict[tuple[int, str], list[str]] = {}
    for spec in all_specs():
        for column, target in spec.fields.items():
            if target.line:
                texts.setdefault((id(spec), target.field), []).append(column)
    return {
        column: tuple(other for other in columns if other != column)
        for columns in texts.values()
        for column in columns
    }


def device_path(value: Any, prefix: str) -> Any:
    """A value as Defender writes it: a device path, under ``prefix`` (with Defender's case) unless
    it is another device's (``\\Device\\Mup\\host\\PIPE\\name``); empty stays empty."""
    if not isinstance(value, str) or not value:
        return value
    if value.lower().startswith(prefix.lower() + "\\"):
        return prefix + value[len(prefix) :]
    if value.lower().startswith("\\device\\"):
        return value
    return prefix + ("" if value.startswith("\\") else "\\") + value


def _json_columns(row: Row) -> None:
    """A generated value of a JSON key (``AdditionalFields.PipeName``) also written into its JSON
    column, which is what the original query parses; the key stays for the mapped Sigma field."""
    keys: dict[str, dict[str, Any]] = {}
    for name, value in row.items():
        if "." in name and value is not None:
            column, key = name.split(".", 1)
            keys.setdefault(column, {})[key] = value
    for column, members in keys.items():
        row[column] = json.dumps(members)


def _flat(groups: Sequence[list[Requirement]]) -> list[Requirement]:
    return [requirement for group in groups for requirement in group]


def regex_variants(pattern: str, ignore_case: bool) -> list[str]:
    """Strings built from the regex's parsed tree: matches of several lengths and near misses."""
    from ..regex import samples

    return samples(pattern, ignore_case, seed=len(pattern))


def _satisfying(leaf: Predicate) -> str:
    """A value that passes ``leaf``: the value itself (all of them for ``has_all``), or for a
    regex a string it matches."""
    value = str(leaf.values[0])
    if leaf.match_all:
        return " ".join(str(v) for v in leaf.values)
    if leaf.match is Match.REGEX:
        return next(iter(regex_variants(value, not leaf.case_sensitive)), value)
    return value


def all_but_one_variants(leaf: Predicate) -> list[str]:
    """For ``has_all``: every needle as a term but one, which is a bare substring or missing, so
    that each needle decides (``has_all`` and ``contains|all`` then disagree on the first)."""
    values = [str(v) for v in leaf.values[:_MAX_VALUES]]
    if not leaf.match_all or len(values) < 2:
        return []
    out: list[str] = []
    for index, needle in enumerate(values):
        rest = values[:index] + values[index + 1 :]
        out.extend((" ".join([*rest, f"x{needle}x"]), " ".join(rest)))
    return out


def _typed(value: Any, kind: str) -> Any:
    """A value as its column holds it: ``RemotePort == "3389"`` compares a number."""
    if kind in ("long", "int", "real") and isinstance(value, str):
        try:
            return float(value) if kind == "real" else int(value)
        except ValueError:
            return value
    return value


def _beside(row: Row, column: str, variant: Any) -> list[Row]:
    """The variant next to the value the other tests on the same column need (``has_any`` and
    ``has_any`` on one column), after it and before it (an ``endswith`` beside): only then can this
    test's variant decide the outcome."""
    current = row.get(column)
    if not isinstance(current, str) or not current or not isinstance(variant, str) or not variant:
        return []
    return [set_value(row, column, f"{current} {variant}"), set_value(row, column, f"{variant} {current}")]


def _regex_literal(pattern: str) -> str:
    """A string a simple KQL regex is likely to match: its literal characters."""
    return re.sub(r"\\(.)", r"\1", re.sub(r"[\^$*+?()\[\]{}|]|\.\*", "", pattern))
