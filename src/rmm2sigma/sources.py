"""Read every input shape into one ``SourceRule``: metadata, KQL text and where it sits in the file.

Shapes: Sentinel hunting-query / analytic-rule YAML (also when it is not valid YAML as written),
the two pasted page shapes (a "KQL Query" section plus the rule definition and false-positive
scenarios), and plain ``.kql`` files. Positions are kept so KQL errors point at the original file.
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

from .errors import InputError

MAX_INPUT_BYTES = 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
INPUT_SUFFIXES = (
    *YAML_SUFFIXES,
    ".json",
    ".kql",
    ".txt",
)  # found in folders; any file can be named explicitly


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
    """Expand directories recursively (sorted, so output order is stable); ``-`` is stdin."""
    for item in inputs:
        path = Path(item)
        if item != "-" and path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in INPUT_SUFFIXES and not _hidden(child, path):
                    yield str(child)
        else:
            yield item


def _hidden(child: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in child.relative_to(root).parts)


def read_sources(path: str, data: bytes | None = None) -> tuple[SourceRule, ...]:
    """Every query of one input: JSON rule files (ARM exports, Defender custom detections) hold
    several; every other shape holds one."""
    from .rule_files import looks_like_json, read_json_rules

    if data is None:
        data = read_bounded(path)
    if Path(path).suffix.lower() == ".json" or (path == "-" and looks_like_json(data)):
        if len(data) > MAX_INPUT_BYTES:
            raise InputError(f"input is over the {MAX_INPUT_BYTES}-byte limit", source=path)
        text = decode(data, path)
        if not text.strip():
            raise InputError("file is empty", source=path)
        return tuple(_with_manifest_reference(rule) for rule in read_json_rules(path, text))
    return (read_source(path, data),)


def read_source(path: str, data: bytes | None = None, max_bytes: int = MAX_INPUT_BYTES) -> SourceRule:
    """Read one input (``data`` given for stdin); raises ``InputError`` with a location."""
    if data is None:
        data = read_bounded(path, max_bytes)
    if len(data) > max_bytes:
        raise InputError(f"input is over the {max_bytes}-byte limit", source=path)
    text = decode(data, path)
    if not text.strip():
        raise InputError("file is empty", source=path)
    suffix = Path(path).suffix.lower()
    if suffix in YAML_SUFFIXES and not _looks_like_yaml(text) and not _is_yaml_collection(text):
        rule = read_plain_kql(path, text, ("no YAML `query:` key: read as a plain KQL file",))
    elif suffix in YAML_SUFFIXES or (suffix not in (".kql", ".txt", ".md") and _looks_like_yaml(text)):
        rule = read_yaml(path, text)
    elif re.search(r"^[ \t]*KQL Query[ \t]*$", text, re.M):
        rule = read_page(path, text)
    else:
        rule = read_plain_kql(path, text)
    return _with_manifest_reference(rule)


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
    """Safe loading that refuses duplicate keys; aliases and depth are checked by ``_check_events``."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise _Refused(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
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


def _load_yaml(text: str) -> tuple[Any, Any]:
    """The root node (for positions) and the document."""
    _check_events(text)
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def read_yaml(path: str, text: str) -> SourceRule:
    try:
        root, document = _load_yaml(text)
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
    if not isinstance(document, dict) or "query" not in document:
        raise InputError("YAML has no `query:` key: not a Sentinel query", source=path, line=1, column=1)
    query = document["query"]
    if not isinstance(query, str) or not query.strip():
        raise InputError("`query:` is empty or not text", source=path)
    return _sentinel_rule(path, document, query, _query_position(root, text))


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


def _query_position(root: Any, text: str) -> tuple[int, int]:
    """Line and column in the file of the first character of the ``query:`` value."""
    for key_node, value_node in root.value:
        if key_node.value == "query":
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
