"""Read every input shape into one ``SourceRule``: metadata, KQL text and where it sits in the file.

Shapes: Sentinel hunting-query / analytic-rule YAML (also when it is not valid YAML as written),
Defender custom-detection YAML (``kind: CustomDetection``), the two pasted page shapes (a "KQL
Query" section plus the rule definition and false-positive scenarios), Markdown query pages (fenced
KQL blocks under headings) and plain ``.kql`` files. Positions are kept so KQL errors point at the
original file.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import os
import re
import stat
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from .errors import InputError, KqlSyntaxError, Rmm2SigmaError, UnsupportedKqlError

MAX_INPUT_BYTES = 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
MARKDOWN_SUFFIXES = (".md", ".markdown")
INPUT_SUFFIXES = (
    *YAML_SUFFIXES,
    ".json",
    ".kql",
    ".txt",
)  # found in folders; any file can be named explicitly (Markdown: see ``discover``)


@dataclass(frozen=True)
class FalsePositive:
    """A page's false-positive block; ``line``/``column`` locate the exclusion's first character."""

    scenario: str
    description: str = ""
    exclusion: str = ""
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SourceRule:
    """One query with its metadata; ``kql_line``/``kql_column`` locate the KQL's first character."""

    path: str
    kql: str
    kql_line: int = 1
    kql_column: int = 1
    id: str | None = None
    name: str | None = None
    description: str | None = None
    tactics: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()
    severity: str | None = None
    references: tuple[str, ...] = ()
    false_positives: tuple[FalsePositive, ...] = ()
    date: dt.date | None = None  # the source's own date, when it has one
    escaped: bool = False  # the KQL is a JSON string on one line of the file (see rule_files)
    where: str = ""  # which rule of a file holding several, e.g. ``resources[2]``
    hypothesis: str | None = None  # a page's hunt hypothesis, the paragraph before "KQL Query"
    data_connectors: tuple[tuple[str, str], ...] = ()  # a page's "Sentinel Table | Notes" rows
    query_frequency: str | None = None  # Sentinel's ``queryFrequency`` (``1h``), for deployable rules
    query_period: str | None = None  # Sentinel's ``queryPeriod`` (``14d``)
    rule_notes: tuple[str, ...] = ()  # what an analytic rule says beyond its query (alert trigger, entities)
    warnings: tuple[str, ...] = field(default=(), compare=False)


def discover(inputs: list[str]) -> Iterator[str]:
    """Expand directories recursively (sorted, so output order is stable); ``-`` is stdin.

    A Markdown file in a folder is an input only when it holds a fenced code block: a folder's
    README or notes are not queries, and must not show as failed inputs.
    """
    for item in inputs:
        path = Path(item)
        if item != "-" and path.is_dir():
            for child in sorted(path.rglob("*")):
                if not child.is_file() or _hidden(child, path):
                    continue
                suffix = child.suffix.lower()
                if suffix in INPUT_SUFFIXES or (suffix in MARKDOWN_SUFFIXES and _has_fence(str(child))):
                    yield str(child)
        else:
            yield item


def _has_fence(path: str) -> bool:
    """Whether a Markdown file holds a fenced code block; one that cannot be read is listed, so
    the reason shows in the report."""
    try:
        text = decode(read_bounded(path), path)
    except InputError:
        return True
    return any(token.type == "fence" for token in _markdown().parse(text))


# the line a pasted page puts above its query (read_page)
_PAGE_QUERY = re.compile(r"^[ \t]*KQL Query[ \t]*$", re.M)
# a fence tagged as KQL, or a heading: KQL has neither (a multi-line string starts with ``` too)
_MARKDOWN = re.compile(r"^ {0,3}(```|~~~)[ \t]*(kql|kusto)\b|^#{1,6}[ \t]+\S", re.I | re.M)


def _looks_like_markdown(text: str) -> bool:
    """Whether standard input is a Markdown page: a fenced block and a heading or a KQL-tagged fence."""
    return ("```" in text or "~~~" in text) and bool(_MARKDOWN.search(text))


def _hidden(child: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in child.relative_to(root).parts)


def read_sources(path: str, data: bytes | None = None) -> tuple[SourceRule, ...]:
    """Every query of one input: JSON rule files (ARM exports, Defender custom detections) hold
    several; every other shape holds one."""
    from .rule_files import looks_like_json, read_json_rules

    if data is None:
        data = read_bounded(path)
    suffix = Path(path).suffix.lower()
    text = _text_of(path, data)
    if suffix == ".json" or (path == "-" and looks_like_json(data)):
        rules = read_json_rules(path, text)
    elif suffix in MARKDOWN_SUFFIXES or (path == "-" and _looks_like_markdown(text)):
        fenced = any(token.type == "fence" for token in _markdown().parse(text))
        if not fenced and _PAGE_QUERY.search(text):
            return (_with_manifest_reference(_read_text(path, text)),)  # a pasted page saved as Markdown
        rules = read_markdown(path, text)
    else:
        rule = _with_manifest_reference(_read_text(path, text))
        blocks = query_blocks(rule.kql) if rule.kql == text else None  # a plain file: its text whole
        if not blocks:
            return (rule,)
        note = (
            f"the file holds {len(blocks)} queries apart from each other by blank lines, as Kusto "
            "Explorer and the Advanced Hunting editor read them (not one query): a rule each"
        )
        return tuple(
            replace(
                rule,
                kql=block,
                kql_line=line,
                name=f"{rule.name} (query {number})" if rule.name else None,
                where=f"query {number} (line {line})",
                warnings=(*rule.warnings, note) if number == 1 else (),
            )
            for number, (line, block) in enumerate(blocks, start=1)
        )
    return tuple(_with_manifest_reference(rule) for rule in rules)


def query_blocks(text: str) -> list[tuple[int, str]] | None:
    """The queries of a text holding several apart from each other by blank lines, as Kusto
    Explorer and the Advanced Hunting editor read it (each block runs on its own), as (first line,
    text); None for any other text.

    Only text that does not parse whole is cut, and only when every block then parses and starts
    from a table: a block starting with ``|`` continues the one before it and ``let`` statements
    alone go with the query after them, so a query broken by a blank line is never cut into a
    shorter query that would convert (its syntax error is reported as it is)."""
    from .kql import parse
    from .kql import syntax as k

    try:
        parse(text)
        return None
    except KqlSyntaxError:
        pass
    except Rmm2SigmaError:
        return None
    lines = text.split("\n")
    runs: list[list[int]] = []  # the line indexes of each run of non-blank lines
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    blocks: list[tuple[int, int]] = []  # first and last line index
    for run in runs:
        code = [lines[i].strip() for i in run if not lines[i].lstrip().startswith("//")]
        if not code:
            continue  # comments only
        if blocks and (code[0].startswith("|") or _statements_only(lines, blocks[-1])):
            blocks[-1] = (blocks[-1][0], run[-1])
        else:
            blocks.append((run[0], run[-1]))
    found: list[tuple[int, str]] = []
    for first, last in blocks:
        block = "\n".join(lines[first : last + 1])
        try:
            query = parse(block)
        except Rmm2SigmaError:
            return None
        tabular = k.TableRef | k.Union | k.Search | k.Find | k.Datatable | k.Externaldata
        if not isinstance(query.body.source, tabular):
            return None  # a block of an expression (`b == 1`) is no query of its own
        found.append((first + 1, block))
    return found if len(found) > 1 else None


def _statements_only(lines: list[str], block: tuple[int, int]) -> bool:
    """Whether a block holds ``let``/``set`` statements and no query (they go with the next)."""
    from .kql import parse

    try:
        parse("\n".join(lines[block[0] : block[1] + 1]))
    except UnsupportedKqlError:
        return True
    except Rmm2SigmaError:
        return False
    return False


def _text_of(path: str, data: bytes, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The decoded text of an input within the size limit; an empty one is refused."""
    if len(data) > max_bytes:
        raise InputError(f"input is over the {max_bytes}-byte limit", source=path)
    text = decode(data, path)
    if not text.strip():
        raise InputError("file is empty", source=path)
    return text


def read_source(path: str, data: bytes | None = None, max_bytes: int = MAX_INPUT_BYTES) -> SourceRule:
    """Read one input (``data`` given for stdin); raises ``InputError`` with a location."""
    if data is None:
        data = read_bounded(path, max_bytes)
    return _with_manifest_reference(_read_text(path, _text_of(path, data, max_bytes)))


def _read_text(path: str, text: str) -> SourceRule:
    """One input's query and metadata, by the file's shape: YAML, a pasted page, or plain KQL."""
    suffix = Path(path).suffix.lower()
    if suffix in YAML_SUFFIXES and not _looks_like_yaml(text) and not _is_yaml_collection(text):
        return read_plain_kql(path, text, ("no YAML `query:` key: read as a plain KQL file",))
    if suffix in YAML_SUFFIXES or (suffix not in (".kql", ".txt", ".md") and _looks_like_yaml(text)):
        return read_yaml(path, text)
    if _PAGE_QUERY.search(text):
        return read_page(path, text)
    return read_plain_kql(path, text)


_HEADER = re.compile(r"^[ \t]*//[ \t]*(Title|Name|Description)[ \t]*:(.*)$", re.I)


def read_plain_kql(path: str, text: str, warnings: tuple[str, ...] = ()) -> SourceRule:
    """A bare query; ``//Title:`` and ``//Description:`` comment lines before it give its metadata."""
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        if match := _HEADER.match(line):
            fields.setdefault(match.group(1).lower(), match.group(2).strip())
        elif line.strip() and not line.lstrip().startswith("//"):
            break
    name = (
        fields.get("title") or fields.get("name") or os.fsencode(Path(path).stem).decode("utf-8", "replace")
    )
    return SourceRule(
        path=path, kql=text, name=_name(name), description=_text(fields.get("description")), warnings=warnings
    )


def _is_yaml_collection(text: str) -> bool:
    """Whether the text is a YAML mapping or list (a query file, however broken, is neither)."""
    try:
        return isinstance(_load_yaml(text)[1], dict | list)
    except yaml.YAMLError:
        return False


def read_bounded(path: str, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """At most ``max_bytes`` of a regular file: the limit holds even if the file grows while read,
    and a FIFO or device named on the command line cannot block or flood the run."""
    try:
        # non-blocking open: opening a FIFO to read would otherwise wait for a writer
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise InputError("not a regular file", source=path)
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror or error}", source=path) from None
    if len(data) > max_bytes:
        raise InputError(f"file is over the {max_bytes}-byte limit", source=path)
    return data


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: its BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode(data: bytes, path: str) -> str:
    """UTF-8 (with or without BOM) or BOM-marked UTF-16/32; a bad byte is reported by line and column."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8-sig")
    if encoding == "utf-8-sig" and (nul := data.find(b"\x00", 0, 4096)) >= 0:
        line, column = _position(data, nul, encoding)
        raise InputError("binary file (NUL byte), not a query", source=path, line=line, column=column)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line, column = _position(data, error.start, encoding)
        label = encoding.removesuffix("-sig").upper()
        raise InputError(
            f"not valid {label} (byte 0x{data[error.start]:02x})", source=path, line=line, column=column
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _position(data: bytes, offset: int, encoding: str) -> tuple[int, int]:
    """1-based line and column (in characters) of byte ``offset``: the text before it decodes."""
    before = data[:offset].decode(encoding, errors="replace")
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def _looks_like_yaml(text: str) -> bool:
    return bool(re.search(r"^query:", text, re.M))


# ---------------------------------------------------------------- Sentinel YAML


MAX_YAML_DEPTH = 64
"""Deepest YAML nesting accepted (Sentinel files use 4): libyaml's composer recurses in C."""

_YamlBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: 10x faster


class _Refused(yaml.MarkedYAMLError):
    """A YAML feature refused outright, not recovered by layout (aliases, duplicates, nesting, tags)."""


class _StrictLoader(_YamlBase):  # type: ignore[misc]
    """Safe loading that refuses a key repeated with another value (which one is meant?); a key
    repeated with the same value is read once and noted in ``duplicates``. Aliases and depth are
    checked by ``_check_events``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue
            if key not in seen:
                seen[key] = (key_node, value_node)
                continue
            first_key, first_value = seen[key]
            lines = f"lines {first_key.start_mark.line + 1} and {key_node.start_mark.line + 1}"
            if self.construct_object(first_value, deep=True) != self.construct_object(value_node, deep=True):
                raise _Refused(
                    None, None, f"duplicate key {key!r} with different values ({lines})", key_node.start_mark
                )
            self.duplicates.append(f"key {key!r} is repeated with the same value ({lines}): read once")
        return super().construct_mapping(node, deep=deep)

    def construct_undefined(self, node: Any) -> Any:
        raise _Refused(None, None, f"YAML tag {node.tag!r} is not accepted", node.start_mark)


_StrictLoader.add_constructor(None, _StrictLoader.construct_undefined)


def _check_events(text: str) -> None:
    """Refuse aliases and deep nesting from the event stream, before any node is built.

    The parser is iterative, so this bounds both memory (an alias bomb is refused at its first
    ``*alias``, never expanded) and the composer's recursion that follows.
    """
    loader = _YamlBase(text)
    depth = 0
    try:
        while (event := loader.get_event()) is not None:
            kind = type(event)
            if kind is yaml.AliasEvent:
                raise _Refused(None, None, "YAML aliases (*name) are not accepted", event.start_mark)
            if kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise _Refused(
                        None, None, f"YAML nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark
                    )
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                depth -= 1
    finally:
        loader.dispose()


def _load_yaml(text: str) -> tuple[Any, Any, tuple[str, ...]]:
    """The root node (for positions), the document, and its keys repeated with the same value."""
    _check_events(text)
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        document = loader.construct_document(root) if root is not None else None
        return root, document, tuple(loader.duplicates)
    finally:
        loader.dispose()


def read_yaml(path: str, text: str) -> SourceRule:
    try:
        root, document, duplicates = _load_yaml(text)
    except _Refused as error:
        mark = error.problem_mark
        raise InputError(
            str(error.problem),
            source=path,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        return _recover_yaml(
            path, text, f"not valid YAML ({where}{error.problem}); fields recovered by layout"
        )
    except yaml.reader.ReaderError as error:
        code = error.character if isinstance(error.character, int) else ord(error.character)
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        problem = f"line {line} column {column}: character #x{code:04x}: {error.reason}"
        return _recover_yaml(path, text, f"not valid YAML ({problem}); fields recovered by layout")
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())
        return _recover_yaml(path, text, f"not valid YAML ({problem}); fields recovered by layout")
    from .rule_files import custom_detection, defender_fields

    if isinstance(document, dict) and "query" not in document and (found := custom_detection(document)):
        fields = defender_fields(found[0], document)
        position = _query_position(root, text, found[1])
        return _sentinel_rule(path, fields, fields["query"], position, duplicates)
    if not isinstance(document, dict) or "query" not in document:
        raise InputError(
            "YAML has no `query:` key (Sentinel) nor `queryCondition.queryText` (Defender custom detection)",
            source=path,
            line=1,
            column=1,
        )
    query = document["query"]
    if not isinstance(query, str) or not query.strip():
        raise InputError("`query:` is empty or not text", source=path)
    return _sentinel_rule(path, document, query, _query_position(root, text), duplicates)


def _sentinel_rule(
    path: str, fields: Mapping[str, Any], kql: str, position: tuple[int, int], warnings: tuple[str, ...] = ()
) -> SourceRule:
    """A Sentinel rule's fields, whether YAML gave them or the layout did."""
    return SourceRule(
        path=path,
        kql=kql,
        kql_line=position[0],
        kql_column=position[1],
        id=_text(fields.get("id")),
        name=_name(fields.get("name")),
        description=_text(fields.get("description")),
        tactics=_names(fields.get("tactics")),
        techniques=_names(fields.get("relevantTechniques")),
        severity=_text(fields.get("severity")),
        date=_date(fields),
        query_frequency=_text(fields.get("queryFrequency")),
        query_period=_text(fields.get("queryPeriod")),
        rule_notes=_analytic_notes(fields),
        warnings=warnings,
    )


def _analytic_notes(fields: Mapping[str, Any]) -> tuple[str, ...]:
    """A Sentinel analytic rule's alerting settings, which a Sigma rule has no place for."""
    notes = []
    operator, threshold = _text(fields.get("triggerOperator")), _text(fields.get("triggerThreshold"))
    if operator and threshold and (operator.lower(), threshold) not in (("gt", "0"), ("greaterthan", "0")):
        notes.append(
            f"Sentinel alerts when the query returns `{operator} {threshold}` results (triggerOperator, "
            "triggerThreshold); the Sigma rule fires on every matching event: set the threshold in the SIEM"
        )
    entities = fields.get("entityMappings")
    if isinstance(entities, list) and entities:
        kinds = [str(e.get("entityType")) for e in entities if isinstance(e, Mapping) and e.get("entityType")]
        notes.append(f"entity mappings ({', '.join(kinds) or 'unnamed'}) are not part of a Sigma rule")
    details = fields.get("customDetails")
    if isinstance(details, Mapping) and details:
        notes.append(f"custom details ({', '.join(map(str, details))}) are not part of a Sigma rule")
    return tuple(notes)


_DATE_KEYS = ("lastUpdatedDate", "lastUpdated", "lastModified", "modified", "createdDate", "date")


def _date(fields: Mapping[str, Any]) -> dt.date | None:
    """The first date-like field (``2024-05-01``, ``2024-05-01T10:00:00Z``, or a YAML date)."""
    for key in _DATE_KEYS:
        value = fields.get(key)
        if isinstance(value, dt.date):
            return value if not isinstance(value, dt.datetime) else value.date()
        if isinstance(value, str) and re.match(r"\d{4}-\d{2}-\d{2}", value.strip()):
            try:
                return dt.date.fromisoformat(value.strip()[:10])
            except ValueError:
                continue
    return None


def _query_position(root: Any, text: str, keys: tuple[str, ...] = ("query",)) -> tuple[int, int]:
    """Line and column in the file of the first character of the value at ``keys`` (``query:``)."""
    for key in keys[:-1]:
        root = next((value for name, value in root.value if name.value == key), None)
        if not isinstance(root, yaml.MappingNode):
            return 1, 1
    for key_node, value_node in root.value:
        if key_node.value == keys[-1]:
            mark = value_node.start_mark
            if value_node.style in ("|", ">"):
                lines = text.split("\n")
                first = mark.line + 1
                while first < len(lines) and not lines[first].strip():
                    first += 1
                indent = len(lines[first]) - len(lines[first].lstrip()) if first < len(lines) else 0
                return first + 1, indent + 1
            quote_width = 1 if value_node.style in ("'", '"') else 0
            return mark.line + 1, mark.column + 1 + quote_width
    return 1, 1


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip() or None


def _name(value: Any) -> str | None:
    """A name with no letter or digit (``..``, ``-``) names nothing, and would leave an empty title."""
    text = _text(value)
    return text if text and any(c.isalnum() for c in text) else None


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else re.split(r"[,\s]+", str(value))
    return tuple(str(item).strip() for item in items if str(item).strip())


_TOP_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9_]*):(?!//)(.*)$")


def _recover_yaml(path: str, text: str, warning: str) -> SourceRule:
    """Pull the fields out of a Sentinel file by its layout when YAML refuses it."""
    fields, positions = _top_level_blocks(text.split("\n"), 0)
    if "query" not in fields or not fields["query"].strip():
        raise InputError(
            warning.replace("; fields recovered by layout", "") + " and no `query:` found", source=path
        )
    return _sentinel_rule(path, fields, fields["query"], positions["query"], (warning,))


def _top_level_blocks(lines: list[str], first: int) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
    """Top-level ``key: value`` and ``key: |`` blocks: a block runs until the next column-0 key.

    Returns each value (block lines de-indented by their common indent) and the 1-based line and
    column where it starts.
    """
    fields: dict[str, str] = {}
    positions: dict[str, tuple[int, int]] = {}
    index = first
    while index < len(lines):
        match = _TOP_KEY.match(lines[index])
        if not match:
            index += 1
            continue
        key, rest = match.group(1), match.group(2).strip()
        end = index + 1
        while end < len(lines) and not _TOP_KEY.match(lines[end]):
            end += 1
        if rest in ("|", ">", "|-", ">-", "|+"):
            block = lines[index + 1 : end]
            while block and not block[-1].strip():
                block.pop()
            indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
            fields[key] = "\n".join(b[indent:] for b in block) + "\n"
            positions[key] = (index + 2, indent + 1)
        else:
            quoted = len(rest) > 1 and rest[0] == rest[-1] and rest[0] in "'\""
            fields[key] = rest[1:-1] if quoted else rest
            positions[key] = (index + 1, len(lines[index]) - len(match.group(2).lstrip()) + 1)
        index = end
    return fields, positions


# ---------------------------------------------------------------- pasted pages

_PAGE_SECTIONS = re.compile(
    r"^\s*(Analytic Rule Definition|MITRE ATT&CK Context|References|False Positive Guidance|"
    r"Scenario:|\| Sentinel Table|id:\s)",
)
_FALSE_POSITIVE_LABELS = ("Scenario:", "Description:", "Filter/Exclusion:")


def read_page(path: str, text: str) -> SourceRule:
    """A pasted page: KQL under a "KQL Query" line, then the rule definition and FP scenarios."""
    lines = text.split("\n")
    start = start_of_kql = next(i for i, line in enumerate(lines) if line.strip() == "KQL Query") + 1
    while start < len(lines) and not lines[start].strip():
        start += 1
    end = start
    while end < len(lines) and not _PAGE_SECTIONS.match(lines[end]):
        end += 1
    kql_lines = lines[start:end]
    while kql_lines and not kql_lines[-1].strip():
        kql_lines.pop()
    if not kql_lines:
        raise InputError("the KQL Query section is empty", source=path, line=start + 1, column=1)
    fields, _ = _top_level_blocks(
        [line.strip() if _TOP_KEY.match(line.strip()) else line for line in lines], end
    )
    fields = {
        k: v for k, v in fields.items() if k in ("id", "name", "description", "tactics", "relevantTechniques")
    }
    severity = re.search(r"^kql[ \t]+(LOW|MEDIUM|HIGH|CRITICAL|INFORMATIONAL)\b", text, re.M)
    originals = (
        line.removeprefix("Original source:").strip() for line in lines if line.startswith("Original source:")
    )
    original = next((url for url in originals if url), "")
    description = fields.get("description")
    return SourceRule(
        path=path,
        kql="\n".join(kql_lines) + "\n",
        kql_line=start + 1,
        kql_column=1,
        id=_text(fields.get("id")),
        name=_name(fields.get("name")),
        description=_text(description),
        tactics=_names(fields.get("tactics")),
        techniques=_names(fields.get("relevantTechniques")),
        severity=severity.group(1).lower() if severity else None,
        references=(_url(original),) if original else (),
        false_positives=_false_positives(lines),
        hypothesis=_hypothesis(lines[: start_of_kql - 1]),
        data_connectors=_connector_table(lines[end:]),
    )


def _false_positives(lines: list[str]) -> tuple[FalsePositive, ...]:
    """``Scenario:`` blocks, each with an optional ``Description:`` and ``Filter/Exclusion:`` line
    (in that order, blank lines allowed between); the exclusion keeps its place in the file.

    Line by line rather than one multi-line regex: that regex backtracked quadratically (minutes
    for a 400 kB page of blank lines after a ``Scenario:``).
    """
    found = []
    for start, line in enumerate(lines):
        if not line.startswith("Scenario:"):
            continue
        values = {"Scenario:": line[len("Scenario:") :].strip()}
        position = (0, 0)
        index = start + 1
        for label in _FALSE_POSITIVE_LABELS[1:]:
            while index < len(lines) and not lines[index].strip():
                index += 1
            item = lines[index] if index < len(lines) else ""
            if not item.lstrip().startswith(label):
                continue
            text = item.lstrip()[len(label) :]
            values[label] = text.strip()
            if label == "Filter/Exclusion:":
                position = (index + 1, len(item) - len(text.lstrip()) + 1)
            index += 1
        if values["Scenario:"]:
            found.append(
                FalsePositive(
                    values["Scenario:"],
                    values.get("Description:", ""),
                    values.get("Filter/Exclusion:", ""),
                    *position,
                )
            )
    return tuple(found)


_HYPOTHESIS_HEADING = "Hunt Hypothesis"


def _hypothesis(lines: list[str]) -> str | None:
    """The paragraph under a "Hunt Hypothesis" heading, or the page's opening paragraph when it is
    all that comes before the KQL (the other page shape); page chrome is never taken for it."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    paragraphs = [p for p in paragraphs if p]
    headed = [i for i, p in enumerate(paragraphs) if p == [_HYPOTHESIS_HEADING]]
    if headed:
        chosen = paragraphs[headed[-1] + 1 :]
    elif len(paragraphs) == 1:
        chosen = paragraphs
    else:
        return None
    text = " ".join(" ".join(p) for p in chosen)
    return text if len(text.split()) >= 5 else None


def _connector_table(lines: list[str]) -> tuple[tuple[str, str], ...]:
    """Rows of the "| Sentinel Table | Notes |" table (pasted pages often lose a row's first ``|``)."""
    rows: list[tuple[str, str]] = []
    for start, line in enumerate(lines):
        if not line.lstrip().startswith("| Sentinel Table"):
            continue
        for row in lines[start + 1 :]:
            if "|" not in row or row.startswith(_FALSE_POSITIVE_LABELS):
                break
            cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
            if all(set(cell) <= set("-: ") for cell in cells):
                continue  # the |---|---| line under the header
            rows.append((cells[0], " ".join(c for c in cells[1:] if c)))
    return tuple(dict.fromkeys(rows))


def _url(text: str) -> str:
    return quote(text, safe=":/?#[]@!$&'()*+,;=%")


# ---------------------------------------------------------------- Markdown query pages

_KQL_TAGS = frozenset({"kql", "kusto"})
# Tags pages put on KQL for colours where their renderer has no KQL highlighting (FalconFriday
# tags every query ```C#): such a block, like an untagged one, is tried as KQL.
_STAND_IN_TAGS = frozenset({"", "c#", "csharp", "cs", "sql"})
_TECHNIQUE = re.compile(r"\bT\d{4}(?:\.\d{3})?\b")
_TACTIC = re.compile(r"\bTA\d{4}[ \t]*[-:][ \t]*([A-Za-z][A-Za-z -]*[A-Za-z])")
_PAGE_URL = re.compile(r"https?://[^\s<>()\[\]]+")
MAX_PAGE_BLOCKS = 500
"""Most fenced blocks a Markdown page may hold (public pages hold under 50): each is parsed as KQL,
so a page of thousands of tiny blocks would take minutes."""


@cache
def _markdown() -> Any:
    """CommonMark with tables: the parser GitHub-style pages are written for."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


@dataclass(frozen=True)
class _Section:
    """A heading and the tokens under it, up to the next heading."""

    level: int
    title: str
    tokens: tuple[Any, ...]


def read_markdown(path: str, text: str) -> tuple[SourceRule, ...]:
    """Every KQL block of a Markdown page, one rule each, with the page's metadata.

    A block tagged ``kql``/``kusto`` is KQL. An untagged block (or one tagged as a language pages
    borrow for highlighting, ``_STAND_IN_TAGS``) is KQL unless its first line of code already fails
    to parse: such a block (an example command line, JSON) is named in the input's warnings and
    skipped while another block gives a rule, and when none does the page fails with the first
    one's syntax error, located in the page. A block that fails further down is KQL with an error,
    reported as the rule's failure. A block tagged as another language (PowerShell, JSON ...) is an
    example, not a query, and is left out.
    """
    tokens = _markdown().parse(text)
    fences = [token for token in tokens if token.type == "fence"]
    if len(fences) > MAX_PAGE_BLOCKS:
        raise InputError(
            f"Markdown page holds more than {MAX_PAGE_BLOCKS} fenced blocks: not a query page",
            source=path,
            line=fences[MAX_PAGE_BLOCKS].map[0] + 1,
            column=1,
        )
    sections = _sections(tokens)
    lines = text.split("\n")
    found: list[tuple[str, Any]] = []  # (heading above the block, fence token)
    skipped: list[str] = []
    first_error: Rmm2SigmaError | None = None
    for section in sections:
        for token in section.tokens:
            if token.type != "fence":
                continue
            tag = token.info.strip().split(" ")[0].lower() if token.info.strip() else ""
            if tag not in _KQL_TAGS and tag not in _STAND_IN_TAGS:
                continue
            line, column = _fence_position(token, lines)
            if not token.content.strip():
                if tag in _KQL_TAGS:
                    skipped.append(f"line {line}: the ```{token.info.strip()} block is empty: skipped")
                continue
            if tag not in _KQL_TAGS and (error := _first_line_error(token.content)) is not None:
                located = error.located(path, line - 1, column - 1)
                first_error = first_error or located
                label = f"```{token.info.strip()} block" if tag else "untagged block"
                problem = located.message.split("; expected")[0]
                skipped.append(
                    f"line {line}: {label} skipped: its first line does not parse as KQL ({problem}, "
                    f"column {located.column})"
                )
                continue
            found.append((section.title, token))
    if not found:
        if first_error is not None:
            first_error.message = (
                f"no fenced block of the page parses as KQL; the first: {first_error.message}"
            )
            raise first_error
        raise InputError(
            "Markdown page holds no KQL block (```kql, ```kusto or an untagged fenced block)",
            source=path,
            line=1,
            column=1,
        )
    title = next((s.title for s in sections if s.level == 1), None) or next(
        (s.title for s in sections if s.level), None
    )
    name = _name(title) or os.fsencode(Path(path).stem).decode("utf-8", "replace")
    metadata = _page_metadata(sections, title)
    where = [heading or f"line {_fence_position(token, lines)[0]}" for heading, token in found]
    rules: list[SourceRule] = []
    for index, (_, token) in enumerate(found):
        line, column = _fence_position(token, lines)
        here = where[index] if where.count(where[index]) == 1 else f"{where[index]}, line {line}"
        parts = query_blocks(token.content) or [(1, token.content)]  # a block of several queries
        for number, (offset, kql) in enumerate(parts, start=1):
            part = f"query {number}" if here == name else f"{here}, query {number}"
            part = here if len(parts) == 1 else part
            rules.append(
                SourceRule(
                    path=path,
                    kql=kql,
                    kql_line=line + offset - 1,
                    kql_column=column,
                    name=f"{name} ({part})" if len(found) > 1 or len(parts) > 1 else name,
                    where=part,
                    warnings=tuple(skipped) if not rules else (),
                    **metadata,
                )
            )
    return tuple(rules)


def _first_line_error(kql: str) -> KqlSyntaxError | None:
    """The syntax error of a block that fails on its first line of code (comments and blank
    lines aside), or None: a block that parses further is KQL, whatever error it has later."""
    from .kql import parse

    try:
        parse(kql)
    except KqlSyntaxError as error:
        lines = kql.split("\n")
        first = next(
            (i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("//")), 0
        )
        return error if (error.line or 1) <= first + 1 else None
    return None


def _fence_position(token: Any, lines: list[str]) -> tuple[int, int]:
    """Line and column in the page of the block's first character: markdown-it strips what comes
    before the block's lines (the fence's indent, a list item's indent, a quote's ``>``), so the
    column is where its first line ends up in the page."""
    first = token.content.split("\n")[0]
    raw = lines[token.map[0] + 1] if token.map[0] + 1 < len(lines) else ""
    if first and raw.endswith(first):
        return token.map[0] + 2, len(raw) - len(first) + 1
    fence = lines[token.map[0]]
    return token.map[0] + 2, len(fence) - len(fence.lstrip(" ")) + 1


def _sections(tokens: list[Any]) -> list[_Section]:
    """The page cut at its headings; what comes before the first heading is a level-0 section."""
    sections: list[_Section] = []
    level, title, start = 0, "", 0
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            sections.append(_Section(level, title, tuple(tokens[start:index])))
            level, title, start = int(token.tag[1:]), _inline_text(tokens[index + 1]), index + 3
    sections.append(_Section(level, title, tuple(tokens[start:])))
    return sections


def _inline_text(token: Any) -> str:
    """Plain text of an inline token: link and emphasis marks dropped, line breaks as spaces."""
    parts = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return " ".join("".join(parts).split())


def _page_metadata(sections: list[_Section], title: str | None) -> dict[str, Any]:
    """Description, ATT&CK techniques and tactics, and references from the page's sections."""
    described = [s for s in sections if s.title.lower() == "description"] or [
        s for s in sections if s.title.lower().endswith("description")
    ]
    description = (
        "\n".join(
            text for token in described[0].tokens if token.type == "inline" and (text := _inline_text(token))
        )
        if described
        else ""
    )
    attack = [s for s in sections if re.search(r"att&ck|mitre|technique|tactic", s.title, re.I)]
    cells = [token.content for s in attack for token in s.tokens if token.type == "inline"]
    techniques = [t for text in (title or "", *cells) for t in _TECHNIQUE.findall(text)]
    tactics = [t for text in cells for t in _TACTIC.findall(text)]
    references: list[str] = []
    for section in sections:
        if "reference" in section.title.lower():
            references.extend(_links(section.tokens))
    return {
        "description": _text(description),
        "techniques": tuple(dict.fromkeys(techniques)),
        "tactics": tuple(dict.fromkeys(t.strip() for t in tactics)),
        "references": tuple(dict.fromkeys(_url(u) for u in references)),
    }


def _links(tokens: tuple[Any, ...]) -> Iterator[str]:
    """The http(s) URLs of a section: link targets, and bare URLs in text outside links."""
    for token in tokens:
        inside = False
        for child in token.children or () if token.type == "inline" else ():
            if child.type == "link_open":
                inside = True
                href = str(child.attrGet("href") or "")
                if re.match(r"https?://", href):
                    yield href
            elif child.type == "link_close":
                inside = False
            elif child.type == "text" and not inside:
                yield from (url.rstrip(".,;:") for url in _PAGE_URL.findall(child.content))


# ---------------------------------------------------------------- provenance


def _with_manifest_reference(rule: SourceRule) -> SourceRule:
    """Add a GitHub permalink when a ``MANIFEST.tsv`` beside the file names its origin."""
    if rule.path == "-":
        return rule
    path = Path(rule.path)
    manifest = path.parent / "MANIFEST.tsv"
    if not manifest.is_file():
        return rule
    rows, problem = _manifest(str(manifest))
    if problem:
        return replace(rule, warnings=(*rule.warnings, f"{manifest}: {problem}; no reference added"))
    for row in rows:
        if row.get("file") == path.name and row.get("source_repo") and row.get("commit"):
            link = _url(
                f"https://github.com/{row['source_repo']}/blob/{row['commit']}/{row.get('source_path', '')}"
            )
            return replace(rule, references=(*rule.references, link))
    return rule


@cache
def _manifest(path: str) -> tuple[list[dict[str, str]], str | None]:
    """The manifest's rows, or why it cannot be used: it is input too, and may be hostile."""
    try:
        text = decode(read_bounded(path, 16 * MAX_INPUT_BYTES), path)
        return list(csv.DictReader(io.StringIO(text), delimiter="\t")), None
    except InputError as error:
        return [], error.message
    except csv.Error as error:
        return [], f"not a TSV file ({error})"
