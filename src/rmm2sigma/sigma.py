"""Emit a mapped detection as a pySigma ``SigmaRule`` and as SigmaHQ-style YAML.

SigmaHQ conventions (FACTS §5): key order, 4-space indent, Title Case titles, stable UUIDv4 ids,
URLs only in ``references``, ``attack.*`` tags, file names prefixed by log source.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import unquote

from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from .errors import UnsupportedKqlError
from .mapping import MappedRule
from .model import ANY_COLUMN, And, Match, Node, Not, Or, Predicate, Value
from .sigmahq import ATTACK_TACTICS
from .sources import SourceRule
from .targets import data_model
from .yaml_text import dump_yaml

_NAMESPACE = uuid.UUID("6f1d3c52-6d0e-4f4e-9a55-2b8f1f3e7a10")
_SMALL_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "as",
        "at",
        "by",
        "for",
        "from",
        "in",
        "new",
        "of",
        "on",
        "or",
        "over",
        "the",
        "through",
        "to",
        "via",
        "with",
        "without",
    ]
)
_KEY_ORDER = [
    "title",
    "id",
    "related",
    "status",
    "description",
    "references",
    "author",
    "date",
    "modified",
    "tags",
    "logsource",
    "detection",
    "falsepositives",
    "level",
]
_SLUG_REWRITES = (
    ("remote management and monitoring tool", "rmm"),
    ("remote management and montioring tool", "rmm"),  # a typo that Azure-Sentinel ships
    ("remote monitoring and management tool", "rmm"),
    ("create process", ""),
    ("process creation", ""),
    ("network connection", ""),
    ("file signature", ""),
)
# Phrases that Sentinel query names use for a kind of event, and the Sigma category each names
# (Defender's file certificate table is matched through image_load, see mapping/defender.yml).
_CATEGORY_PHRASES = {
    "create process": "process_creation",
    "process creation": "process_creation",
    "network connection": "network_connection",
    "file signature": "image_load",
    "image load": "image_load",
    "dns query": "dns_query",
    "file creation": "file_event",
    "file event": "file_event",
}
_CATEGORY_TITLES = {
    "process_creation": "Process Creation",
    "network_connection": "Network Connection",
    "image_load": "Image Load",
    "dns_query": "DNS Query",
    "file_event": "File Event",
}
_LEVELS = {"informational", "low", "medium", "high", "critical"}
_MODIFIERS = {
    Match.CONTAINS: "contains",
    Match.STARTSWITH: "startswith",
    Match.ENDSWITH: "endswith",
    Match.REGEX: "re",
    Match.LT: "lt",
    Match.LTE: "lte",
    Match.GT: "gt",
    Match.GTE: "gte",
    Match.CIDR: "cidr",
    Match.FIELDREF: "fieldref",
}
_URL = re.compile(r"https?://\S+")


DEFAULT_DATE = dt.date(2026, 11, 23)
"""A rule's ``date`` when neither ``--date`` nor the source gives one: fixed, never the clock, so a
re-run tomorrow writes the same files."""


@dataclass(frozen=True)
class Options:
    author: str = "rmm2sigma"
    date: dt.date | None = None
    exact: bool = False
    apply_filters: bool = False  # render the target queries with the page's false-positive filters
    related: tuple[str, ...] = ()  # ids of the rules converted from the other branches of a union
    # the events Splunk queries read (formats/formats.yml: sysmon, windows-security); None: the default
    splunk_data_model: str | None = None

    def __post_init__(self) -> None:
        data_model("splunk", self.splunk_data_model)  # an unknown name raises ValueError, naming the choices


@dataclass(frozen=True)
class EmittedRule:
    rule: SigmaRule
    yaml: str
    category: str
    filename: str
    document: dict[str, Any]  # what ``yaml`` holds, as plain data (dates as dates)
    notes: tuple[str, ...] = ()  # what the metadata left out or changed (tags, references)


def emit(source: SourceRule, mapped: MappedRule, options: Options) -> EmittedRule:
    """Build the Sigma rule (validated by pySigma's parser) and its YAML text."""
    document = rule_document(source, mapped, options)
    try:
        rule = SigmaRule.from_dict(document)
    except SigmaError as error:  # a rule we built that pySigma refuses: say so, never a traceback
        raise UnsupportedKqlError(f"pySigma refused the converted rule: {error}") from None
    return EmittedRule(
        rule,
        dump_yaml(document),
        mapped.table.logsource.get("category") or mapped.table.logsource["service"],
        file_name(source, mapped),
        document,
        metadata(source).notes,
    )


def rule_document(source: SourceRule, mapped: MappedRule, options: Options) -> dict[str, Any]:
    meta = metadata(source)
    description = " ".join(_URL.sub("", source.description or "").split())
    if len(description) < 16:
        description = f"Detects the activity of the Microsoft Sentinel query {_title(source)!r}."
    if source.hypothesis:  # a page's hunt hypothesis says why to look: it follows what the rule does
        description = f"{description} {' '.join(_URL.sub('', source.hypothesis).split())}"
    detection = mapped.detection
    assert detection.predicate is not None
    document: dict[str, Any] = {
        "title": _title(source, mapped.table.logsource.get("category")),
        "id": rule_id(source, options.exact),
        "related": [{"id": other, "type": "similar"} for other in options.related],
        "status": "experimental",
        "description": description,
        "references": list(meta.references),
        "author": options.author,
        "date": options.date or source.date or DEFAULT_DATE,
        "tags": list(meta.tags),
        "logsource": dict(mapped.table.logsource),
        "detection": detection_document(detection.predicate),
        "falsepositives": [_sentence(fp.scenario) for fp in source.false_positives] or ["Unknown"],
        "level": (source.severity or "medium").lower()
        if (source.severity or "").lower() in _LEVELS
        else "medium",
    }
    return {key: document[key] for key in _KEY_ORDER if document.get(key)}


def rule_id(source: SourceRule, exact: bool) -> str:
    """A UUIDv4-shaped id derived from the source identity, so re-runs keep it."""
    # the file name joins the Sentinel id: the same query pasted twice (a page and a YAML) must
    # not give two rules one id; a folder move keeps the id
    identity = f"{source.id or source.kql.strip()}|{PurePath(source.path).name}"
    text = f"{_NAMESPACE}|{identity}|{'exact' if exact else 'default'}"
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def branch_name(name: str, category: str, table: str | None = None, branch: int | None = None) -> str:
    """The name of a union branch's rule: the query's name (less a category it claims) with the
    branch's own category, its Defender table when two branches share one category, and its place
    in the union (1-based) when they share the table too: rule titles must be unique."""
    head, dash, last = name.rpartition(" - ")
    if dash and last.strip().lower() in _CATEGORY_PHRASES:
        name = head
    title = category_title(category)
    told = [part for part in (table, f"Branch {branch}" if branch is not None else None) if part]
    return f"{name} - {title}" + (f" ({', '.join(told)})" if told else "")


def category_title(category: str) -> str:
    """A Sigma category as titles name it (``process_creation`` -> ``Process Creation``)."""
    return _CATEGORY_TITLES.get(category, category.replace("_", " ").title().replace("Eventid", "EventID"))


def _title(source: SourceRule, category: str | None = None) -> str:
    name = " ".join((source.name or "").split()).rstrip(".") or "Converted Sentinel Query"
    if category:
        name = _title_category(name, category)
    return title_case(name)


# SigmaHQ titles never start with the word "Detect(s)": as a word, or the first part of a hyphenated,
# snake_case or CamelCase name (``detect-bluekeep-exploitation-attempts``, ``DetectTorRelay``)
_DETECT = re.compile(r"(?:[Dd]etects?|DETECTS?)(?:$|[-_:]+|(?=[A-Z][a-z]))")


def title_case(text: str, limit: int = 120) -> str:
    """SigmaHQ's title style: Title Case but for small words, no leading "Detects", no final dot."""
    name = " ".join(text.split()).rstrip(".")
    if not name:
        return ""
    words = [w if not w.islower() or w in _SMALL_WORDS else w[:1].upper() + w[1:] for w in name.split(" ")]
    lead = _DETECT.match(words[0])
    if lead:  # the word only: "Detection of X" keeps it, "detect-x-activity" keeps "x-activity"
        rest = words[0][lead.end() :]
        words = ([rest] if rest else []) + words[1:] or ["Activity"]
    title = " ".join(words)
    title = title[:1].upper() + title[1:]
    return title if len(title) <= limit else title[: limit - 3].rstrip() + "..."


def _title_category(name: str, category: str) -> str:
    """A title never claims a category the rule does not have.

    A network query that falls back to ``process_creation`` keeps its source name "... - Network
    Connection" only if the last `` - `` part names no other category; otherwise that part
    becomes the rule's own category phrase.
    """
    head, dash, last = name.rpartition(" - ")
    claimed = _CATEGORY_PHRASES.get(last.strip().lower())
    if not dash or claimed is None or claimed == category:
        return name
    return f"{head} - {_CATEGORY_TITLES.get(category, category.replace('_', ' ').title())}"


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Metadata:
    """A rule's ``tags`` and ``references`` as SigmaHQ accepts them, and notes on what changed."""

    tags: tuple[str, ...]
    references: tuple[str, ...]
    notes: tuple[str, ...]


def metadata(source: SourceRule) -> Metadata:
    """Tags and references of the rule converted from ``source``.

    * A Sentinel tactic that is no ATT&CK tactic (``Ransomware``, ``Exploit``, ``Malware,
      component``: Defender's threat-analytics categories) never becomes a tag: one that ATT&CK
      files under a single tactic becomes that tactic (:data:`_TACTIC_ALIASES`), any other is left
      out, with a note.
    * A link to attack.mitre.org becomes the tag it names (SigmaHQ: a tag, not a link); a page that
      names no technique, tactic, group or software is left out, with a note.
    * Technique tags with no tactic tag beside them (nothing names one, and there is no ATT&CK data
      offline to look it up) are left out, with a note: SigmaHQ refuses a technique without its tactic.
    * A GitHub link to a file on a branch is left out silently when a permalink to the same file
      (the source's own, from its MANIFEST.tsv) is among the references; otherwise, when SigmaHQ's
      ``sigmahq_github_link`` check would find it (it wants permalinks, pinned to a commit), with a
      note.
    """
    notes: list[str] = []
    tags = [tag for name in source.tactics if (tag := _tactic_tag(name, notes))]
    tags += [f"attack.{t.lower()}" for t in source.techniques if _TECHNIQUE_ID.fullmatch(t)]
    urls = _URL.findall(f"{source.description or ''} {source.hypothesis or ''}")
    references: list[str] = []
    for url in dict.fromkeys(u.rstrip(".,)") for u in (*urls, *source.references)):
        if _ATTACK_SITE.match(url):
            tag = _attack_link_tag(url)
            if tag:
                tags.append(tag)
            else:
                notes.append(f"reference {url} was left out: SigmaHQ wants ATT&CK as tags, and it names none")
        else:
            references.append(url)
    pinned = {_github_file(url) for url in references if _COMMIT.match(url)} - {None}
    kept = []
    for url in references:
        if not _COMMIT.match(url) and _github_file(url) in pinned:
            continue  # the same file's permalink stands for it
        if _branch_link(url):
            notes.append(
                f"reference {url} was left out: it links a GitHub branch, whose file changes, and "
                "SigmaHQ accepts only permalinks (a commit in the link)"
            )
        else:
            kept.append(url)
    tags = list(dict.fromkeys(tags))
    techniques = [tag for tag in tags if _TECHNIQUE_TAG.fullmatch(tag)]
    if techniques and not any(tag.removeprefix("attack.") in ATTACK_TACTICS for tag in tags):
        notes.append(
            f"technique(s) {', '.join(t.removeprefix('attack.').upper() for t in techniques)} are named "
            "without a tactic, and SigmaHQ wants each technique's tactic tagged beside it: no tag for them"
        )
        tags = [tag for tag in tags if tag not in techniques]
    return Metadata(tuple(tags), tuple(kept), tuple(notes))


# Enterprise ATT&CK tactics by id, as SigmaHQ's tags name them
_TACTIC_IDS = {
    "TA0043": "reconnaissance",
    "TA0042": "resource-development",
    "TA0001": "initial-access",
    "TA0002": "execution",
    "TA0003": "persistence",
    "TA0004": "privilege-escalation",
    "TA0005": "defense-evasion",
    "TA0006": "credential-access",
    "TA0007": "discovery",
    "TA0008": "lateral-movement",
    "TA0009": "collection",
    "TA0011": "command-and-control",
    "TA0010": "exfiltration",
    "TA0040": "impact",
}
# Sentinel "tactics" that are not ATT&CK tactics but that ATT&CK files under one tactic, and why
_TACTIC_ALIASES = {"ransomware": ("impact", "ransomware's encryption is Data Encrypted for Impact, T1486")}
_TECHNIQUE_ID = re.compile(r"[Tt]\d{4}(\.\d{3})?")
_TECHNIQUE_TAG = re.compile(r"attack\.t\d{4}(\.\d{3})?")
_ATTACK_SITE = re.compile(r"https?://attack\.mitre\.org(/|$)", re.I)
_ATTACK_PAGE = re.compile(
    r"/(?:wiki/)?(?:techniques?|tactics?|groups?|software)/"
    r"(?:(T\d{4})(?:[/.](\d{3}))?|(TA\d{4})|([GS]\d{4}))(?=/|$|[?#])",
    re.I,
)
# SigmaHQ's sigmahq_github_link check: a GitHub link to a file whose path has no commit in it
_GITHUB_FILE = re.compile(r"https://github\.com/.*\.\w{1,3}$")
_COMMIT = re.compile(r".*/[0-9a-z]{40}/.*")
_GITHUB_PATH = re.compile(r"https?://github\.com/([^/]+/[^/]+)/(blob|raw|tree)/[^/]+/(.+)$", re.I)


def _tactic_tag(name: str, notes: list[str]) -> str | None:
    shortname = re.sub(r"(?<=[a-z])(?=[A-Z])", "-", name.strip()).replace(" ", "-").lower()
    if shortname in ATTACK_TACTICS:
        return f"attack.{shortname}"
    if shortname in _TACTIC_ALIASES:
        tactic, why = _TACTIC_ALIASES[shortname]
        notes.append(f"the Sentinel tactic {name!r} is not an ATT&CK tactic: tagged attack.{tactic} ({why})")
        return f"attack.{tactic}"
    notes.append(
        f"the Sentinel tactic {name!r} is not an ATT&CK tactic and names no single one: it gives no tag"
    )
    return None


def _attack_link_tag(url: str) -> str | None:
    """``https://attack.mitre.org/techniques/T1059/001/`` -> ``attack.t1059.001`` (tactics by id,
    groups and software too); None for a page that names none of them."""
    match = _ATTACK_PAGE.search(url)
    if match is None:
        return None
    technique, sub, tactic, other = match.groups()
    if technique:
        return f"attack.{technique.lower()}" + (f".{sub}" if sub else "")
    if tactic:
        name = _TACTIC_IDS.get(tactic.upper())
        return f"attack.{name}" if name else None
    return f"attack.{other.lower()}"


def _branch_link(url: str) -> bool:
    """SigmaHQ's check, as it is: a link to a GitHub file with a short extension (``.yml``, ``.md``,
    ``.ps1``; not ``.yaml``, so a page's "Original source" on a branch stays) and no commit in it."""
    return bool(_GITHUB_FILE.match(url)) and not _COMMIT.match(url)


def _github_file(url: str) -> tuple[str, str] | None:
    """The repository and path a GitHub file link names, whatever branch or commit it is on."""
    match = _GITHUB_PATH.match(url)
    return (match.group(1).lower(), unquote(match.group(3))) if match else None


def file_name(source: SourceRule, mapped: MappedRule) -> str:
    """``<log source prefix><slug>.yml`` within SigmaHQ's ``[a-z0-9_]{10,90}`` rule."""
    name = source.name or PurePath(source.path).stem  # never the folder: it changes with the cwd
    text = unicodedata.normalize("NFKD", name.lower()).encode("ascii", "ignore").decode()
    text = " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())
    for phrase, replacement in _SLUG_REWRITES:
        text = text.replace(phrase, replacement)
    slug = "_".join(text.split()) or "rule"
    prefix = mapped.table.file_prefix
    stem = (prefix + slug)[:86].rstrip("_")
    if len(stem) < 10:
        stem = (stem + "_rule")[:86]
    return stem + ".yml"


# ---------------------------------------------------------------- detection


def detection_document(predicate: Node) -> dict[str, Any]:
    """Named selections and a condition; positive tests of the top AND share one selection."""
    builder = _Detection()
    condition = builder.condition(predicate, top=True)
    return {**builder.named, "condition": condition}


class _Detection:
    def __init__(self) -> None:
        self.named: dict[str, Any] = {}

    def add(self, base: str, items: dict[str, Any] | list[Value]) -> str:
        name, counter = base, 2
        while name in self.named:
            name, counter = f"{base}_{counter}", counter + 1
        self.named[name] = items
        return name

    def condition(self, node: Node, top: bool = False) -> str:
        if isinstance(node, Predicate) and node.column == ANY_COLUMN:
            name = self.add("keywords", keywords(node))
            return f"not {name}" if node.negated else name
        if isinstance(node, Predicate):
            key, value = sigma_item(node)
            base = (
                "selection"
                if top and not node.negated
                else _name("filter_main" if node.negated else "selection", node)
            )
            name = self.add(base, {key: value})
            return f"not {name}" if node.negated else name
        if isinstance(node, Not):
            inner = self.condition(node.item)
            return f"not ({inner})" if " " in inner else f"not {inner}"
        if isinstance(node, And):
            merged: dict[str, Any] = {}
            rest: list[Node] = []
            for item in node.items:
                if isinstance(item, Predicate) and not item.negated and item.column != ANY_COLUMN:
                    key, value = sigma_item(item)
                    if key not in merged:
                        merged[key] = value
                        continue
                rest.append(item)
            parts = [self.add("selection" if top else _name("selection", node), merged)] if merged else []
            parts.extend(self.condition(item) for item in rest)
            return " and ".join(_group(p) for p in parts)
        assert isinstance(node, Or)
        parts = [self.condition(item) for item in node.items]
        single = all(isinstance(i, Predicate) and not i.negated for i in node.items)
        if top and single and all(part.startswith("selection_") for part in parts):
            return "1 of selection_*"  # every selection this rule has (keywords are named apart)
        return " or ".join(_group(p) for p in parts)


def _group(condition: str) -> str:
    return f"({condition})" if " or " in condition and not condition.startswith("(") else condition


def _name(prefix: str, node: Node) -> str:
    if isinstance(node, Predicate):
        return f"{prefix}_{re.sub(r'[^a-z0-9]+', '_', node.column.lower()).strip('_')}"
    return f"{prefix}_group"


def sigma_item(leaf: Predicate) -> tuple[str, Any]:
    """The ``Field|modifiers: value`` pair for one test (its negation is the caller's)."""
    modifiers = [_MODIFIERS[leaf.match]] if leaf.match in _MODIFIERS else []
    if leaf.match_all and len(leaf.values) > 1:
        modifiers.append("all")
    if leaf.match is Match.REGEX:
        if not leaf.case_sensitive:
            modifiers.append("i")
    elif leaf.case_sensitive and any(isinstance(v, str) and v.lower() != v.upper() for v in leaf.values):
        modifiers.append("cased")  # only letters have case (an IP address has none); pySigma refuses
        # |cased on numbers
    key = "|".join([leaf.column, *modifiers])
    if leaf.match is Match.EMPTY:
        return key, ["", None]
    if leaf.match is Match.NULL:
        return key, None
    values = [v if leaf.match is Match.REGEX else _escape(v) for v in leaf.values]
    return key, values[0] if len(values) == 1 else values


def keywords(leaf: Predicate) -> list[Value]:
    """A substring search over the whole event (``* contains 'x'``): wildcards around each value."""
    return [f"*{_escape(v)}*" for v in leaf.values]


def _escape(value: Value) -> Value:
    """Sigma wildcards are literal in KQL: escape ``*``, ``?`` and a backslash before them."""
    if not isinstance(value, str):
        return value
    return (
        re.sub(r"(\\(?=[*?\\]|$)|[*?])", r"\\\1", value) if re.search(r"[*?]|\\(?=[*?\\])", value) else value
    )


# ---------------------------------------------------------------- YAML


def merge_references(kept: str, merged: str) -> str:
    """``kept`` rule file with the references of ``merged`` added (a duplicate merged into it), in
    each of its documents (a correlation and its base rules); every other key stays as it is."""
    from .sigmahq import safe_documents

    extra = [ref for doc in safe_documents(merged) if doc for ref in doc.get("references") or []]
    documents = []
    for document in safe_documents(kept):
        references = list(dict.fromkeys([*(document.get("references") or []), *extra]))
        if references and "references" not in document:  # in its place: after the description
            at = list(document).index("description") + 1 if "description" in document else len(document)
            items = list(document.items())
            document = dict([*items[:at], ("references", references), *items[at:]])
        elif references:
            document["references"] = references
        documents.append(dump_yaml(document))
    return "---\n".join(documents)
