"""Read every input shape into one ``SourceRule``: metadata, KQL text and where it sits in the file.

Shapes: Sentinel hunting-query / analytic-rule YAML (also when it is not valid YAML as written),
the two pasted page shapes (a "KQL Query" section plus the rule definition and false-positive
scenarios), and plain ``.kql`` files. Positions are kept so KQL errors point at the original file.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from .errors import InputError

MAX_INPUT_BYTES = 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
INPUT_SUFFIXES = (*YAML_SUFFIXES, ".kql", ".txt")  # found in folders; any file can be named explicitly


@dataclass(frozen=True)
class FalsePositive:
    scenario: str
    description: str = ""
    exclusion: str = ""


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


def read_source(path: str, data: bytes | None = None, max_bytes: int = MAX_INPUT_BYTES) -> SourceRule:
    """Read one input (``data`` given for stdin); raises ``InputError`` with a location."""
    if data is None:
        try:
            size = Path(path).stat().st_size
            if size > max_bytes:
                raise InputError(f"file is {size} bytes, over the {max_bytes}-byte limit", source=path)
            data = Path(path).read_bytes()
        except OSError as error:
            raise InputError(f"cannot read: {error.strerror or error}", source=path) from None
    if len(data) > max_bytes:
        raise InputError(f"input is {len(data)} bytes, over the {max_bytes}-byte limit", source=path)
    text = decode(data, path)
    if not text.strip():
        raise InputError("file is empty", source=path)
    suffix = Path(path).suffix.lower()
    if suffix in YAML_SUFFIXES or (suffix not in (".kql", ".txt", ".md") and _looks_like_yaml(text)):
        rule = read_yaml(path, text)
    elif re.search(r"^\s*KQL Query\s*$", text, re.M):
        rule = read_page(path, text)
    else:
        rule = SourceRule(path=path, kql=text, name=Path(path).stem if path != "-" else None)
    return _with_manifest_reference(rule)


def decode(data: bytes, path: str) -> str:
    """UTF-8 (with or without BOM) or BOM-marked UTF-16; a bad byte is reported by line and column."""
    if b"\x00" in data[:4096] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError("binary file (NUL bytes), not a query", source=path)
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        start = error.start
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise InputError(
            f"not valid UTF-8 (byte 0x{data[start]:02x})", source=path, line=line, column=column
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _looks_like_yaml(text: str) -> bool:
    return bool(re.search(r"^query:", text, re.M))


# ---------------------------------------------------------------- Sentinel YAML


class _StrictLoader(yaml.SafeLoader):
    """Safe loading that refuses aliases (no alias bombs) and duplicate keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError("while composing", None, "aliases are not accepted", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.MarkedYAMLError(
                    "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str, text: str) -> SourceRule:
    try:
        loader = _StrictLoader(text)
        try:
            root = loader.get_single_node()
            document = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        if error.problem and ("alias" in error.problem or "duplicate" in error.problem):
            raise InputError(
                error.problem,
                source=path,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            ) from None
        return _recover_yaml(path, text, f"not valid YAML ({where}{error.problem}); fields recovered by layout")
    except yaml.YAMLError as error:
        return _recover_yaml(path, text, f"not valid YAML ({error}); fields recovered by layout")
    if not isinstance(document, dict) or "query" not in document:
        raise InputError("YAML has no `query:` key: not a Sentinel query", source=path, line=1, column=1)
    query = document["query"]
    if not isinstance(query, str) or not query.strip():
        raise InputError("`query:` is empty or not text", source=path)
    line, column = _query_position(root, text)
    return SourceRule(
        path=path,
        kql=query,
        kql_line=line,
        kql_column=column,
        id=_text(document.get("id")),
        name=_text(document.get("name")),
        description=_text(document.get("description")),
        tactics=_names(document.get("tactics")),
        techniques=_names(document.get("relevantTechniques")),
        severity=_text(document.get("severity")),
    )


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
        raise InputError(warning.replace("; fields recovered by layout", "") + " and no `query:` found", source=path)
    return SourceRule(
        path=path,
        kql=fields["query"],
        kql_line=positions["query"][0],
        kql_column=positions["query"][1],
        id=_text(fields.get("id")),
        name=_text(fields.get("name")),
        description=_text(fields.get("description")),
        tactics=_names(fields.get("tactics")),
        techniques=_names(fields.get("relevantTechniques")),
        severity=_text(fields.get("severity")),
        warnings=(warning,),
    )


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
        while end < len(lines) and not _TOP_KEY.match(lines[end]) and not lines[end].startswith("|"):
            end += 1
        if rest in ("|", ">", "|-", ">-", "|+"):
            block = lines[index + 1 : end]
            while block and not block[-1].strip():
                block.pop()
            indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
            fields[key] = "\n".join(b[indent:] for b in block) + "\n"
            positions[key] = (index + 2, indent + 1)
        else:
            fields[key] = rest.strip("'\"")
            positions[key] = (index + 1, len(lines[index]) - len(match.group(2).lstrip()) + 1)
        index = end
    return fields, positions


# ---------------------------------------------------------------- pasted pages

_PAGE_SECTIONS = re.compile(
    r"^\s*(Analytic Rule Definition|MITRE ATT&CK Context|References|False Positive Guidance|"
    r"Scenario:|\| Sentinel Table|id:\s)",
)
_FALSE_POSITIVE = re.compile(
    r"^Scenario:\s*(?P<scenario>.+?)\s*\n\s*Description:\s*(?P<description>.+?)\s*\n"
    r"\s*Filter/Exclusion:\s*(?P<exclusion>.*)$",
    re.M,
)


def read_page(path: str, text: str) -> SourceRule:
    """A pasted page: KQL under a "KQL Query" line, then the rule definition and FP scenarios."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.strip() == "KQL Query") + 1
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
    fields, _ = _top_level_blocks([line.strip() if _TOP_KEY.match(line.strip()) else line for line in lines], end)
    fields = {k: v for k, v in fields.items() if k in ("id", "name", "description", "tactics", "relevantTechniques")}
    severity = re.search(r"^kql\s+(LOW|MEDIUM|HIGH|CRITICAL|INFORMATIONAL)\b", text, re.M)
    original = re.search(r"^Original source:\s*(\S.*?)\s*$", text, re.M)
    description = fields.get("description")
    return SourceRule(
        path=path,
        kql="\n".join(kql_lines) + "\n",
        kql_line=start + 1,
        kql_column=1,
        id=_text(fields.get("id")),
        name=_text(fields.get("name")),
        description=_text(description),
        tactics=_names(fields.get("tactics")),
        techniques=_names(fields.get("relevantTechniques")),
        severity=severity.group(1).lower() if severity else None,
        references=(_url(original.group(1)),) if original else (),
        false_positives=tuple(
            FalsePositive(m["scenario"], m["description"], m["exclusion"].strip()) for m in _FALSE_POSITIVE.finditer(text)
        ),
    )


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
    for row in _manifest(str(manifest)):
        if row.get("file") == path.name and row.get("source_repo") and row.get("commit"):
            link = _url(f"https://github.com/{row['source_repo']}/blob/{row['commit']}/{row.get('source_path', '')}")
            return replace(rule, references=(*rule.references, link))
    return rule


@cache
def _manifest(path: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
