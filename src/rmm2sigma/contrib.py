"""``rmm2sigma contrib``: a ready SigmaHQ pull request from converted RMM hunting queries.

What goes in: one rule per tool and behaviour that SigmaHQ does not cover yet, in SigmaHQ's
layout and names, with a tool-specific description, false positives that say when the tool is
used legitimately, and the level chosen by :func:`level`. What stays out, each listed in
``contrib.json``:

- behaviours SigmaHQ has no place for: the Defender file-certificate queries become ``image_load``
  rules on a loaded image's signer, an approximation (see mapping/defender.yml), not a detection
  a reviewer can check against the source;
- tools SigmaHQ already covers for that behaviour: a tool is covered when one of its identifying
  values (company, product, file name, domain) appears in an existing rule's detection of the
  same behaviour (``dns_query`` rules count for network connections: SigmaHQ keeps remote-access
  domains there); the values such a rule lacks are listed as an extension suggestion instead.

Levels (:func:`level`): ``medium`` for an execution rule, which identifies the tool's own binary
by its metadata or path (the tool running is worth a look but often legitimate); ``low`` for a
network rule, which only sees a host name that browsers and updaters also reach.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

import yaml

from .convert import InputResult, convert_all
from .sigma import Options
from .sigmahq import safe_documents
from .yaml_text import dump_yaml

_NAMESPACE = uuid.UUID("0b5cb0f4-86f1-4a39-9c1e-3c2f6f0f2d57")
TAGS = ["attack.command-and-control", "attack.t1219.002"]  # Remote Access Tools: Remote Desktop Software
# behaviour per Sigma category: SigmaHQ file prefix, title wording, level, upstream categories to
# compare with (and the field each of ours is called there)
BEHAVIOURS: dict[str, dict[str, Any]] = {
    "process_creation": {
        "prefix": "proc_creation_win_remote_access_tools_",
        "title": "Execution",
        "level": "medium",
        "compare": {"process_creation": {}},
    },
    "network_connection": {
        "prefix": "net_connection_win_remote_access_tools_",
        "title": "Network Connection",
        "level": "low",
        "compare": {"network_connection": {}, "dns_query": {"DestinationHostname": "QueryName"}},
    },
}
_KINDS = {
    "rmm": (
        "a remote monitoring and management (RMM) platform",
        "Managed service providers and IT teams that manage their endpoints with {name}.",
    ),
    "remote_desktop": (
        "a remote desktop and remote support tool",
        "Help desks, administrators and users who give or receive remote support with {name}.",
    ),
    "connection_manager": (
        "a remote connection manager",
        "Administrators who manage their remote sessions with {name}.",
    ),
}
# values that name a tool: its PE metadata, a file name, a domain; never a folder or a command
_IDENTIFYING = frozenset(
    ["Company", "Product", "Description", "OriginalFileName", "Image", "DestinationHostname", "QueryName"]
)
_MIN_VALUE = 5  # shorter names (e.g. "rport") decide nothing on their own
_SOURCE_NAME = re.compile(r"rmm_(?P<tool>.+?)_(?:createproc|netconn|filesig)\.ya?ml$", re.IGNORECASE)


@dataclass
class Pack:
    """What ``contrib`` decided: new rules, skipped rules and extension suggestions."""

    rules: dict[str, str] = field(default_factory=dict)  # path in SigmaHQ's tree -> YAML
    tools: set[str] = field(default_factory=set)  # tools with a new rule
    changelog: list[str] = field(default_factory=list)
    covered: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    extensions: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "rules": len(self.rules),
            "tools": len(self.tools),
            "covered": len(self.covered),
            "skipped": len(self.skipped),
            "extensions": len(self.extensions),
        }


@cache
def tools() -> dict[str, dict[str, Any]]:
    text = resources.files("rmm2sigma.data").joinpath("rmm_tools.yml").read_text(encoding="utf-8")
    data: dict[str, dict[str, Any]] = yaml.safe_load(text)["tools"]
    return data


def tool_key(source: str, title: str) -> str | None:
    """The tool a query is about: from its file name (``rmm_<Tool>_<kind>.yaml``), else the part
    of its title that names a known tool ("Remote Management and Monitoring tool - SupRemo - ...")."""
    match = _SOURCE_NAME.search(PurePath(source).name)
    if match:
        return match.group("tool")
    parts = {part.strip().lower() for part in title.split(" - ")}
    return next((k for k, v in tools().items() if k.lower() in parts or v["name"].lower() in parts), None)


def level(category: str) -> str:
    """The documented level rule (module docstring)."""
    return str(BEHAVIOURS[category]["level"])


# ---------------------------------------------------------------- upstream coverage


def upstream_values(tree: Path) -> dict[str, list[tuple[str, dict[str, set[str]]]]]:
    """Per category, every SigmaHQ rule's path and its detection values by field (lower case)."""
    found: dict[str, list[tuple[str, dict[str, set[str]]]]] = {}
    wanted = {c for behaviour in BEHAVIOURS.values() for c in behaviour["compare"]}
    for folder in sorted(tree.glob("rules*")):
        for file in sorted(folder.rglob("*.yml")):
            try:
                documents = safe_documents(file.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            for document in documents:
                if not isinstance(document, dict):
                    continue
                category = str((document.get("logsource") or {}).get("category"))
                if category in wanted:
                    values = detection_values(document.get("detection") or {})
                    found.setdefault(category, []).append((file.relative_to(tree).as_posix(), values))
    return found


def detection_values(detection: dict[str, Any]) -> dict[str, set[str]]:
    """Field (without modifiers) -> its string values in lower case, across all selections."""
    values: dict[str, set[str]] = {}

    def walk(item: Any, key: str | None = None) -> None:
        if isinstance(item, dict):
            for name, value in item.items():
                walk(value, str(name).split("|")[0])
        elif isinstance(item, list):
            for value in item:
                walk(value, key)
        elif isinstance(item, str) and key is not None and item.strip("\\*"):
            values.setdefault(key, set()).add(item.lower().strip("\\*"))

    for name, selection in detection.items():
        if name not in ("condition", "timeframe"):
            walk(selection)
    return values


def _identifying(field_name: str, value: str) -> str | None:
    """The part of one of our values that names the tool, if any: an image's file name only."""
    if field_name not in _IDENTIFYING:
        return None
    if field_name == "Image":
        value = value.rpartition("\\")[2]
        if not value.endswith(".exe"):
            return None
    return value if len(value) >= _MIN_VALUE else None


def _mentions(value: str, theirs: Iterable[str]) -> bool:
    """``value`` appears in one of ``theirs`` as whole terms (``rport`` is not in ``export``)."""
    pattern = re.compile(rf"(?<![a-z0-9]){re.escape(value)}(?![a-z0-9])")
    return any(pattern.search(u) for u in theirs)


# ---------------------------------------------------------------- the pack


def build_pack(results: Sequence[InputResult], tree: Path, author: str, date: dt.date) -> Pack:
    """Decide every converted rule: a new SigmaHQ rule, covered (maybe an extension), or skipped."""
    upstream = upstream_values(tree)
    pack = Pack()
    seen: set[tuple[str, str]] = set()
    for result in results:
        for rule in result.rules:
            document = rule.document
            key = tool_key(result.source, rule.title)
            meta = tools().get(key or "")
            where = {"source": result.source, "rule": rule.title}
            if rule.category not in BEHAVIOURS:
                pack.skipped.append(
                    {**where, "reason": f"{rule.category}: approximate category, not contributed"}
                )
                continue
            if key is None or meta is None:
                pack.skipped.append({**where, "reason": "tool not in data/rmm_tools.yml"})
                continue
            if (key, rule.category) in seen:
                pack.skipped.append({**where, "reason": "a rule for this tool and behaviour is already in"})
                continue
            seen.add((key, rule.category))
            ours = detection_values(document["detection"])
            matches = _coverage(ours, rule.category, upstream)
            if matches:
                pack.covered.append(
                    {**where, "tool": meta["name"], "by": sorted({m["rule"] for m in matches})}
                )
                pack.extensions.extend({"tool": meta["name"], **m} for m in matches if m["add"])
                continue
            path, text, title = _new_rule(key, meta, rule.category, document, author, date)
            pack.rules[path] = text
            pack.tools.add(meta["name"])
            pack.changelog.append(f"new: {title}")
    return pack


def _coverage(
    ours: dict[str, set[str]], category: str, upstream: dict[str, list[tuple[str, dict[str, set[str]]]]]
) -> list[dict[str, Any]]:
    """Upstream rules of the same behaviour that mention the tool, with what each lacks."""
    matches = []
    for their_category, renamed in BEHAVIOURS[category]["compare"].items():
        for path, theirs in upstream.get(their_category, []):
            everything = [
                u.rpartition("\\")[2] if f == "Image" else u
                for f, values in theirs.items()
                if f in _IDENTIFYING
                for u in values
            ]
            # every field of ours that names the tool must be named there too: "Google" alone
            # (Chrome Remote Desktop's company) is not Chrome Remote Desktop
            names = [{n for v in values if (n := _identifying(f, v))} for f, values in ours.items()]
            names = [group for group in names if group]
            if not names or not all(any(_mentions(n, everything) for n in group) for group in names):
                continue
            for name, values in ours.items():
                their_field = renamed.get(name, name)
                missing = sorted(v for v in values if not _mentions(v, theirs.get(their_field, set())))
                matches.append({"rule": path, "field": their_field, "add": missing})
    return matches


def _new_rule(
    key: str,
    meta: dict[str, Any],
    category: str,
    document: dict[str, Any],
    author: str,
    date: dt.date,
) -> tuple[str, str, str]:
    behaviour = BEHAVIOURS[category]
    name = meta["name"]
    kind, use = _KINDS[meta["kind"]]
    vendor = f" by {meta['vendor']}" if meta.get("vendor") else ""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    title = f"Remote Access Tool - {name} {behaviour['title']}"
    if category == "process_creation":
        what = f"Detects the execution of {name}, {kind}{vendor}, by its file metadata or install path"
    else:
        what = f"Detects network connections to the domains of {name}, {kind}{vendor}"
    description = (
        f"{what}. Attackers install such tools to keep remote access to a host or as a command and "
        f"control channel that blends in with legitimate administration."
    )
    references = [f"https://{meta['site']}/"] if meta.get("site") else []
    references += document.get("references", [])  # the source queries and their origin
    falsepositives = [use.format(name=name)]
    if category == "network_connection":
        falsepositives.append(f"Users browsing the website of {name}.")
    digest = hashlib.sha256(f"{_NAMESPACE}|{key}|{category}".encode()).digest()
    rule = {
        "title": title,
        "id": str(uuid.UUID(bytes=digest[:16], version=4)),
        "status": "experimental",
        "description": description,
        "references": list(dict.fromkeys(references)),
        "author": author,
        "date": date,
        "tags": TAGS,
        "logsource": document["logsource"],
        "detection": document["detection"],
        "falsepositives": falsepositives,
        "level": level(category),
    }
    path = f"rules/windows/{category}/{behaviour['prefix']}{slug}.yml"
    return path, dump_yaml(rule), title


def pull_request_text(pack: Pack, template: str) -> str:
    """SigmaHQ's pull-request template with its sections filled and every comment kept."""
    tools_in = sorted(pack.tools, key=str.lower)
    summary = (
        f"Adds {len(pack.rules)} rules for {len(tools_in)} remote access and RMM tools that no SigmaHQ rule "
        f"covers yet ({', '.join(tools_in)}): their execution, identified by file metadata or install "
        "path, and their network connections to the vendors' domains. The detections come from the "
        "Microsoft Sentinel RMM hunting queries (Azure-Sentinel, MIT), converted with rmm2sigma; each "
        "rule references its source query."
    )
    text = _fill(template, "### Summary of the Pull Request", summary)
    text = _fill(text, "### Changelog", "\n".join(sorted(pack.changelog)))
    return text


def _fill(template: str, heading: str, body: str) -> str:
    """Put ``body`` after the comment that follows ``heading``."""
    start = template.index(heading)
    end = template.index("-->", start) + len("-->")
    return f"{template[:end]}\n\n{body}\n{template[end:]}"


def write_pack(pack: Pack, out: Path, template: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path, text in pack.rules.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text, encoding="utf-8")
    (out / "PULL_REQUEST.md").write_text(pull_request_text(pack, template), encoding="utf-8")
    report = {
        "summary": pack.summary(),
        "rules": sorted(pack.rules),
        "covered": pack.covered,
        "extensions": pack.extensions,
        "skipped": pack.skipped,
    }
    (out / "contrib.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / "EXTENSIONS.md").write_text(extensions_text(pack), encoding="utf-8")


def extensions_text(pack: Pack) -> str:
    """Where an existing SigmaHQ rule could be extended instead of adding a rule: a separate
    pull request each, to its maintainers' judgement (values in lower case; Sigma matches them
    case-insensitively)."""
    lines = ["# Existing SigmaHQ rules that could be extended", ""]
    for item in pack.extensions:
        values = ", ".join(f"`{v}`" for v in item["add"])
        lines.append(f"- {item['tool']}: `{item['rule']}`, field `{item['field']}`: add {values}")
    return "\n".join(lines) + "\n"


def contrib(
    inputs: Sequence[str], out: Path, tree: Path, author: str, date: dt.date, workers: int = 1
) -> Pack:
    """Convert ``inputs`` and write the pull-request pack into ``out``."""
    from .sources import discover

    paths = list(discover(list(inputs)))
    results = convert_all(paths, Options(author=author, date=date), ("kusto",), workers)
    pack = build_pack(results, tree, author, date)
    template = (tree / ".github" / "PULL_REQUEST_TEMPLATE.md").read_text(encoding="utf-8")
    write_pack(pack, out, template)
    return pack
