"""The oracles: engines that execute a query over generated rows and return the selected ``__id`` s.

* KQL (original and emitted): duckdb-kql, which raises instead of guessing (FACTS §6).
* Sigma: pysigma-backend-sqlite over the rows in Sigma's taxonomy, with Unicode case folding for
  ``LIKE`` and ``COLLATE NOCASE`` and a Python ``REGEXP``, so it follows Sigma's case-insensitive
  matching rather than SQLite's ASCII-only folding.
* EQL: the ``eql`` package's Python engine over the rows in ECS names, with Elasticsearch's case
  rules: ``:``, ``like~`` and ``regex~`` fold case, ``==`` and ``in`` do not (the package folds
  every comparison; ``_ElasticsearchCaseRules`` restores the difference). Its regexes only anchor
  at the start; Elasticsearch's Lucene engine matches the whole value, so the engine is run with
  whole-value, case-sensitive regex matching (``_whole_value_regexes``): the target emits
  ``regex`` with the case in the pattern's letters, never ``regex~`` (the parser reads both alike).
* Lucene: luqum parses the query; there is no engine to run it.

One connection per engine is kept for a whole run; tables are reloaded for every rule.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

import duckdb_kql
import eql
from luqum.parser import parser as lucene_parser

from sigma.backends import sqlite as sigma_sqlite

from ..convert import SENTINEL_TIME
from ..kql import syntax as k
from ..kql.lower import picks_rows
from ..kql.printer import to_kql
from ..mapping import HOST_LINE, TableSpec, with_line
from .events import ID, Row

Schema = Mapping[str, Mapping[str, str]]

_DUCK_TYPES = {
    "string": "VARCHAR",
    "datetime": "TIMESTAMP",
    "long": "BIGINT",
    "int": "INTEGER",
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "real": "DOUBLE",
}
_IDENTITY = ("Timestamp", "DeviceId", "DeviceName", "ReportId")


class NotExecutable(Exception):
    """An engine could not run a query; the message says why."""


class NotParsed(NotExecutable):
    """The engine's parser rejects a query rmm2sigma wrote: the query is broken, not the engine short."""


# ---------------------------------------------------------------- KQL


def row_selecting(query: k.Query) -> str:
    """The query up to its last row filter (lets kept), selecting ``__id``: which rows it keeps.

    A ``where`` after ``summarize`` filters groups (a threshold), not rows: it is not included,
    unless the summary keeps whole rows (``arg_max(Timestamp, *)``, ``__id`` with them).
    """
    operators = query.body.operators
    summaries = (i for i, op in enumerate(operators) if isinstance(op, k.Summarize) and not picks_rows(op))
    end = next(summaries, len(operators))
    last = max((i for i, op in enumerate(operators[:end]) if isinstance(op, k.Where)), default=-1)
    body = k.Pipeline(query.body.source, operators[: last + 1])
    # `__id` is a valid column name only in brackets for duckdb-kql, and the printer prints bare names
    return to_kql(k.Query(query.lets, body)) + "\n| project ['" + ID + "']"


def with_ids(query: str) -> str:
    """An emitted KQL query (no aggregation) selecting ``__id``."""
    return query.rstrip() + "\n| project ['" + ID + "']"


class KqlEngine:
    """duckdb-kql over the Defender schema; every table exists (empty) so sub-queries resolve.

    A row's ``TimeGenerated`` (Sentinel's copy of the event time, ``convert.defender_schema``) is its
    ``Timestamp``.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.connection = duckdb_kql.connect()
        self.loaded: set[str] = set()
        for table, columns in self.schema.items():
            definition = ", ".join(
                f'"{name}" {_DUCK_TYPES.get(kind, "VARCHAR")}' + (" DEFAULT ''" if kind == "string" else "")
                for name, kind in columns.items()
            )
            self.connection.execute(f'CREATE TABLE "{table}" ("{ID}" BIGINT, {definition})')

    def load(self, tables_rows: Mapping[str, Sequence[Row]]) -> None:
        """Replace the content of every table: the given rows, and nothing left from before."""
        for table in self.loaded - set(tables_rows):
            self.connection.execute(f'DELETE FROM "{table}"')
        for table, rows in tables_rows.items():
            self.connection.execute(f'DELETE FROM "{table}"')
            self._insert(table, rows)
        self.loaded = set(tables_rows)

    def _insert(self, table: str, rows: Sequence[Row]) -> None:
        if not rows:
            return
        types = self.schema[table]
        if SENTINEL_TIME in types:  # one moment: a row moved in time (the group proof) moves both
            rows = [{**row, SENTINEL_TIME: row["Timestamp"]} if "Timestamp" in row else row for row in rows]
        columns = [ID, *(c for c in types if any(c in row for row in rows))]
        selects, values = [], []
        for column in columns:
            kind = "long" if column == ID else types[column]
            duck = _DUCK_TYPES.get(kind, "VARCHAR")
            selects.append(f"unnest(?::{duck}[])")
            values.append([_duck_value(row.get(column), kind) for row in rows])
        names = ", ".join(f'"{c}"' for c in columns)
        self.connection.execute(f'INSERT INTO "{table}" ({names}) SELECT {", ".join(selects)}', values)

    def select(self, query: str, now: datetime) -> set[int]:
        """The ``__id`` s a query returns; raises ``NotExecutable`` with duckdb-kql's reason."""
        return {int(row[0]) for row in self.rows(query, now)}

    def rows(self, query: str, now: datetime) -> set[tuple[Any, ...]]:
        """The rows a query returns (a summarize's groups); raises ``NotExecutable``."""
        try:
            return set(duckdb_kql.query(self.connection, query, query_now=now).fetchall())
        except Exception as error:  # duckdb-kql raises its own errors and duckdb's
            raise NotExecutable(f"{type(error).__name__}: {_first_line(error)}") from None


def _duck_value(value: Any, kind: str) -> Any:
    """A value as its column stores it; Kusto has no null string, so an absent string is ''."""
    if kind == "string":
        return "" if value is None else str(value)
    if value is None or kind in ("datetime", "bool", "boolean"):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


# ---------------------------------------------------------------- rows in other data models


def target_rows(rows: Sequence[Row], renamed: Mapping[str, str] | None) -> list[Row]:
    """Rows of the table the converted rule reads: the same rows, or those of a fallback
    (``MappedRule.renamed``), each the event it stands for (its id kept)."""
    if renamed is None:
        return list(rows)
    keep = (ID, *_IDENTITY)
    return [
        {**{c: row[c] for c in keep if c in row}, **{renamed[c]: v for c, v in row.items() if c in renamed}}
        for row in rows
    ]


def sigma_rows(rows: Sequence[Row], spec: TableSpec) -> list[Row]:
    """Rows in Sigma's taxonomy; a file-name column adds nothing (the path field holds it)."""
    implied = {  # what the log source says of every event (a logon's EventID): its first value
        field: value[0] if isinstance(value, list) else value
        for field, value in (spec.conditions or {}).items()
    }
    out = []
    for row in rows:
        event: Row = {ID: row[ID], **implied}
        texts: dict[tuple[str, str], list[str]] = {}  # module logging's Payload, ContextInfo
        for column, target in spec.fields.items():
            if target.line is not None:  # a stream's text, written whole: its lines of the row's values
                event[target.field] = with_line(event.get(target.field, ""), target.line, row.get(column))
            elif target.part is None and column in row:
                value = row[column]
                if target.values is not None:  # Defender's names for the values Sigma numbers
                    value = {k.lower(): v for k, v in target.values.items()}.get(str(value).lower())
                value = target.sigma_value(value)  # Windows' spelling (no \Device\NamedPipe, 0x1fffff)
                if target.spelling in ("invocation", "host"):
                    texts.setdefault((target.field, target.spelling), []).extend([value] if value else [])
                else:
                    event[target.field] = value
        for (field, spelling), parts in texts.items():
            if parts:  # one host line: its path, then its command line; after the JSON text
                text = HOST_LINE + " ".join(parts) if spelling == "host" else "\n".join(parts)
                event[field] = "\n".join(v for v in (event.get(field), text) if v)
        out.append(event)
    return out


CASELESS = ".caseless"  # the multi-field Elastic's templates give a field, lowercased


def ecs_rows(rows: Sequence[Row], names: Mapping[str, str]) -> list[Row]:
    """Sigma rows as nested ECS documents. A ``.caseless`` field is a multi-field of the field it
    names, as in Elastic's templates: the document holds the value as written, and ``.caseless``
    reads it lowercased (``_MultiFields``)."""
    out = []
    for row in rows:
        document: dict[str, Any] = {ID: row[ID]}
        for field, value in row.items():
            if field == ID or value is None or field not in names:
                continue
            _put(document, names[field].removesuffix(CASELESS).split("."), value)
        out.append(document)
    return out


def _put(document: dict[str, Any], path: list[str], value: Any) -> None:
    node = document
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return
        node = child
    node[path[-1]] = value


# ---------------------------------------------------------------- Sigma via SQLite


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regexp(pattern: str | None, value: Any) -> bool | None:
    if pattern is None or value is None:
        return None
    return _compiled(pattern).search(str(value)) is not None


@lru_cache(maxsize=4096)
def _like_pattern(pattern: str, escape: str | None) -> re.Pattern[str]:
    parts, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if escape and char == escape and index + 1 < len(pattern):
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL | re.IGNORECASE)


def _like(pattern: str | None, value: Any, escape: str | None = None) -> bool | None:
    if pattern is None or value is None:
        return None
    return _like_pattern(pattern, escape).fullmatch(str(value)) is not None


def _nocase(left: str, right: str) -> int:
    a, b = left.casefold(), right.casefold()
    return (a > b) - (a < b)


class SigmaEngine:
    """A Sigma rule through pysigma-backend-sqlite, executed on an in-memory SQLite table."""

    TABLE = "logs"

    def __init__(self) -> None:
        backend: Any = sigma_sqlite.sqliteBackend  # untyped package
        self.backend = backend(collate_nocase=True, table=self.TABLE)
        self.connection = sqlite3.connect(":memory:")
        self.connection.create_function("regexp", 2, _regexp, deterministic=True)
        self.connection.create_function("like", 2, _like, deterministic=True)
        self.connection.create_function("like", 3, _like, deterministic=True)
        self.connection.create_collation("NOCASE", _nocase)

    def query(self, rule: Any) -> str:
        queries: list[Any] = self.backend.convert_rule(rule)
        return "\n".join(str(q) for q in queries)

    def select(self, query: str, rows: Sequence[Row], fields: Sequence[str]) -> set[int]:
        """Run the backend's query over ``rows``; ``fields`` are the table's columns."""
        cursor = self.execute(query, rows, fields)
        index = [d[0] for d in cursor.description].index(ID)
        return {int(row[index]) for row in cursor}

    def execute(self, query: str, rows: Sequence[Row], fields: Sequence[str]) -> sqlite3.Cursor:
        """Load ``rows`` as the backend's table and run ``query`` (a rule's or a correlation's)."""
        columns = [ID, *dict.fromkeys(f for f in fields if f != ID)]
        self.connection.execute(f"DROP TABLE IF EXISTS {self.TABLE}")
        self.connection.execute(f"CREATE TABLE {self.TABLE} ({', '.join(_quote(c) for c in columns)})")
        holes = ", ".join("?" for _ in columns)
        self.connection.executemany(
            f"INSERT INTO {self.TABLE} VALUES ({holes})", [[row.get(c) for c in columns] for row in rows]
        )
        try:
            return self.connection.execute(query)
        except sqlite3.Error as error:
            raise NotExecutable(f"sqlite: {_first_line(error)}") from None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sigma_fields(spec: TableSpec) -> list[str]:
    """The Sigma fields a table's rows carry."""
    return list(dict.fromkeys([*(t.field for t in spec.fields.values()), *(spec.conditions or {})]))


# ---------------------------------------------------------------- EQL and Lucene


# the eql package's optimizer folds `x == 1 or x in (2, 3) or x > 4` into `x in (1, 2, 3, 4)`:
# the queries run as written, as Elasticsearch runs them
_UNOPTIMIZED = eql.parser.skip_optimizations


class EqlEngine:
    """EQL queries run by the ``eql`` package's Python engine."""

    def select(self, query: str, documents: Sequence[Row]) -> set[int]:
        try:
            with eql.parser.elasticsearch_syntax, eql.parser.ignore_missing_functions, _UNOPTIMIZED:
                parsed = eql.parse_query(query)
        except (eql.EqlError, ValueError) as error:  # the parser raises ValueError on some escapes
            raise NotParsed(f"eql: {_first_line(error)}") from None
        return self._select(parsed, documents)

    def _select(self, parsed: Any, documents: Sequence[Row]) -> set[int]:
        selected: set[int] = set()
        engine = _ElasticsearchCaseRules()
        with _whole_value_regexes():
            try:
                engine.add_query(parsed)
            except re.error as error:
                raise NotExecutable(f"eql engine: {_first_line(error)}") from None
            engine.add_output_hook(lambda result: selected.update(int(e.data[ID]) for e in result.events))
            try:
                engine.stream_events([eql.Event("any", 0, document) for document in documents])
            except ValueError as error:  # cidrMatch() of a value that is no address (Elasticsearch
                raise NotExecutable(f"eql engine: {_first_line(error)}") from None  # would refuse it)
        return selected

    def sequences(self, query: str, timed: Sequence[tuple[float, Row]]) -> tuple[list[str], list[Row]]:
        """A ``sequence by ...`` query (a correlation) over events timed in seconds.

        Returns its ``by`` fields and the first event of every sequence found.
        """
        try:
            with (
                eql.parser.elasticsearch_syntax,
                eql.parser.ignore_missing_functions,
                eql.parser.allow_runs,
                _UNOPTIMIZED,
            ):
                parsed = eql.parse_query(query)
        except (eql.EqlError, ValueError) as error:
            raise NotParsed(f"eql: {_first_line(error)}") from None
        by = [value.render() for value in parsed.first.queries[0].join_values]
        steps = parsed.first.queries
        if parsed.first.close is None and len({repr(step.query) for step in steps}) == 1:
            # `[filter] with runs=N`: N steps asking one filter, nothing closing a sequence. Ask the
            # filter once per event (Elasticsearch's case rules), then sequence the events kept with
            # every step true: the engine would ask it N times per event (minutes for N = 200)
            query = eql.ast.PipedQuery(steps[0].query, [])
            kept = self._select(query, [document for _, document in timed])
            timed = [(moment, document) for moment, document in timed if int(document[ID]) in kept]
            for step in steps:
                step.query = eql.ast.EventQuery(step.query.event_type, eql.ast.Boolean(True))
        found: list[Row] = []
        engine = _MultiFields({"time_unit": 1})
        with _whole_value_regexes():
            engine.add_query(parsed)
            engine.add_output_hook(lambda result: found.append(result.events[0].data))
            ordered = sorted(timed, key=lambda item: item[0])
            engine.stream_events([eql.Event("any", moment, document) for moment, document in ordered])
        return by, found


class _MultiFields(eql.PythonEngine):  # type: ignore[misc]  # eql is untyped
    """The eql engine reading ``field.caseless`` as Elasticsearch does: ``field``'s value, lowercased."""

    def _convert_field(self, node: Any) -> Callable[[Any], Any]:
        if not (node.path and node.path[-1] == CASELESS[1:]):
            return super()._convert_field(node)  # type: ignore[no-any-return]
        get_value = super()._convert_field(eql.ast.Field(node.base, node.path[:-1]))
        return lambda scope: value.lower() if isinstance(value := get_value(scope), str) else value


class _ElasticsearchCaseRules(_MultiFields):
    """The eql engine with Elasticsearch's case rules for ``==`` and ``in``: case-sensitive.

    The package folds every string comparison; ES EQL folds only ``:``, ``like~``, ``regex~``
    and ``~`` functions. ``like`` and ``like~`` parse to the same tree, so a case-sensitive
    ``like`` is still measured case-insensitively (wider than Elasticsearch's).
    """

    def _convert_comparison(self, node: Any) -> Callable[[Any], bool | None]:
        get_left, get_right = self.convert(node.left), self.convert(node.right)
        compare = self.check_types(node.function)
        return lambda scope: compare(get_left(scope), get_right(scope))

    def _convert_in_set(self, node: Any) -> Callable[[Any], bool | None]:
        if not all(isinstance(item, eql.ast.Literal) for item in node.container):
            return self.convert(node.synonym)  # type: ignore[no-any-return]
        values = {item.value for item in node.container}
        get_value = self.convert(node.expression)

        def callback(scope: Any) -> bool | None:
            value = get_value(scope)
            return None if value is None else value in values

        return callback


@contextmanager
def _whole_value_regexes() -> Iterator[None]:
    """Make the eql engine's ``regex`` match whole values, as Elasticsearch's Lucene engine does."""
    original = eql.functions.Match.get_callback

    def get_callback(source_ast: Any, *literals: Any) -> Callable[..., bool | None]:
        compiled = re.compile(
            "|".join(f"(?:{literal.value})" for literal in literals), eql.functions.REGEX_FLAGS
        )
        return lambda source, *_: compiled.fullmatch(source) is not None if isinstance(source, str) else None

    eql.functions.Match.get_callback = classmethod(lambda cls, *args: get_callback(*args))
    try:
        yield
    finally:
        eql.functions.Match.get_callback = original


def lucene_error(query: str) -> str | None:
    """luqum's parse error for a Lucene query, or None when it parses."""
    try:
        lucene_parser.parse(query)
    except Exception as error:  # luqum raises ParseError and IllegalCharacterError, unrelated
        return f"luqum: {_first_line(error)}"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
