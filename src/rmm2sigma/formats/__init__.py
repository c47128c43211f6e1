"""Deployable rule files: what a SIEM imports, built from the converted queries and the rule's metadata.

One module per format: ``splunk`` (savedsearches.conf), ``kibana`` (Kibana Security NDJSON for
lucene, esql and eql), ``sentinel`` (analytic-rule YAML) and ``defender`` (custom detection JSON)
for the kusto target. pySigma's own output formats (the Splunk backend's ``savedsearches``, the
Elasticsearch backends' ``siem_rule_ndjson``) are not used for the five built-in targets, because
pySigma runs a pipeline's postprocessing *after* a format's ``finalize_query``: our aggregation
and window templates would wrap the whole stanza or rule object instead of the query. They also
lack what a deployment needs: a schedule from the source rule or its window, Sentinel/Kibana
severity scales, ATT&CK names without a network download. Other installed backends
(``plugins.py``) use their own formats, since no postprocessing of ours runs there.

Every file repeats, per rule, the fidelity label, the conversion notes and the target's data
model assumption, so what a reviewer imports says what it detects and what it expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..sigmahq import safe_load
from .schedule import Schedule

if TYPE_CHECKING:
    from ..convert import RuleResult


@cache
def data() -> dict[str, Any]:
    """``formats.yml``: formats, data-model assumptions, severity scales, ATT&CK names."""
    loaded: dict[str, Any] = safe_load(resources.files(__package__).joinpath("formats.yml").read_text())
    return loaded


def formats_of(target: str) -> dict[str, str]:
    """A built-in target's deployable formats and their descriptions ({} for other targets)."""
    entry: dict[str, str] = data()["targets"].get(target, {}).get("formats", {})
    return entry


def default_formats(target: str) -> list[str]:
    return list(data()["targets"].get(target, {}).get("default", []))


@dataclass(frozen=True)
class DeployOptions:
    """The data-model choices a deployed rule makes; the defaults are documented in ``formats.yml``."""

    elastic_index: tuple[str, ...] = field(default_factory=lambda: tuple(data()["elastic_index"]))
    splunk_index: str | None = None  # None: the indices the running user searches by default
    event_filter: bool = True  # Elastic: add the ECS event category of the Sigma log source
    enabled: bool = False  # imported rules start disabled, so a reviewer turns each one on


@dataclass(frozen=True)
class DeployRule:
    """One converted rule as a format needs it: metadata from its Sigma YAML, one target's query."""

    stem: str
    target: str
    query: str
    meta: dict[str, Any]
    fidelity: str
    notes: tuple[str, ...]
    schedule: Schedule
    base_rules: int = 1  # the rules a correlation reads (two for a join: two log sources)

    @property
    def title(self) -> str:
        return str(self.meta["title"])

    @property
    def rule_id(self) -> str:
        return str(self.meta["id"])

    @property
    def description(self) -> str:
        return str(self.meta.get("description") or self.title).strip()

    @property
    def level(self) -> str:
        level = str(self.meta.get("level") or "medium")
        return level if level in data()["severity"] else "medium"

    def severity(self, scale: str) -> Any:
        return data()["severity"][self.level][scale]

    @property
    def category(self) -> str:
        return str(self.meta.get("logsource", {}).get("category", ""))

    @property
    def tags(self) -> list[str]:
        return [str(tag) for tag in self.meta.get("tags") or []]

    def tactics(self) -> list[tuple[str, str, str]]:
        """ATT&CK tactics from the tags: (shortname, id, name)."""
        table = data()["tactics"]
        names = [t.removeprefix("attack.") for t in self.tags if t.startswith("attack.")]
        return [(name, *table[name]) for name in names if name in table]

    def techniques(self) -> list[str]:
        return [t.removeprefix("attack.").upper() for t in self.tags if t.lower().startswith("attack.t")]

    def review_notes(self, extra: Sequence[str] = ()) -> list[str]:
        """Fidelity and every conversion note of this target, its data model among them: what each
        deployed rule says about itself."""
        own = [note for note in self.notes if not _other_target(note, self.target)]
        return [f"rmm2sigma fidelity for {self.target}: {self.fidelity}", *extra, *own, *self.schedule.notes]

    def sentinel_tactics(self) -> list[str]:
        """Tactic names as Sentinel and Defender spell them: ``CommandAndControl``."""
        return [
            "".join(word[:1].upper() + word[1:] for word in name.split()) for _, _, name in self.tactics()
        ]


def _other_target(note: str, target: str) -> bool:
    """Whether a conversion note is about another built-in target (``splunk: ...``, ``eql cannot ...``)."""
    first = note.split(None, 1)[0].rstrip(":") if note.strip() else ""
    return first != target and first in data()["targets"]


Builder = Callable[[Sequence[DeployRule], DeployOptions], dict[str, str]]


def _builders() -> dict[tuple[str, str], Builder]:
    from . import defender, kibana, sentinel, splunk

    return {
        ("splunk", "savedsearches"): splunk.savedsearches,
        ("lucene", "kibana"): kibana.ndjson,
        ("esql", "kibana"): kibana.ndjson,
        ("eql", "kibana"): kibana.ndjson,
        ("kusto", "sentinel"): sentinel.analytic_rules,
        ("kusto", "defender"): defender.custom_detections,
    }


def deploy_rules(target: str, rules: Sequence[tuple[str, RuleResult]]) -> list[DeployRule]:
    """The rules that have a query for ``target``, with their file stems."""
    out = []
    for stem, rule in rules:
        if target not in rule.queries:
            continue
        out.append(
            DeployRule(
                stem=stem,
                target=target,
                query=rule.queries[target],
                meta=rule.headline,
                fidelity=rule.fidelity_by_target.get(target, rule.fidelity.value),
                notes=rule.notes,
                schedule=rule.schedule or Schedule(3600, 3600),
                base_rules=rule.base_rules,
            )
        )
    return out


def deploy_files(
    rules: Sequence[tuple[str, RuleResult]],
    selection: Mapping[str, Sequence[str]],
    options: DeployOptions | None = None,
) -> dict[str, str]:
    """Every deployable file, keyed by its path under the output folder (``deploy/<target>/...``).

    ``selection`` maps a target to its formats; a built-in target's formats are ours, any other
    target's are its pySigma backend's (``plugins.py``).
    """
    options = options or DeployOptions()
    builders = _builders()
    files: dict[str, str] = {}
    for target, chosen in selection.items():
        for fmt in chosen:
            if (target, fmt) in builders:
                built = builders[(target, fmt)](deploy_rules(target, rules), options)
            else:
                from ..plugins import backend_format_files

                built = backend_format_files(target, fmt, rules)
            files.update({f"deploy/{target}/{name}": text for name, text in built.items()})
    return files


PLAIN = "query"
"""The format every target has: its plain queries only (``backends/<target>/``), no deployable file."""


def select(specs: Sequence[str], builtin: Sequence[str]) -> dict[str, list[str]]:
    """``NAME[:FORMAT]`` specs (comma-separated, case-insensitive) -> target -> deployable formats.

    A built-in target without a format gets its default formats; ``:query`` gets none. Any other
    name must be an installed pySigma backend (``plugins.py``, imported only then), whose format is
    one of its own. Raises ``ValueError`` naming the choices.
    """
    chosen: dict[str, list[str]] = {}
    items = [s.strip() for spec in specs for s in spec.split(",") if s.strip()] or list(builtin)
    for item in items:
        name, _, fmt = (part.strip().lower() for part in item.partition(":"))
        if name in builtin:
            known = formats_of(name)
            formats = default_formats(name) if not fmt else [] if fmt == PLAIN else [fmt]
        else:
            from ..plugins import installed

            target = installed().get(name)
            if target is None:
                names = [*builtin, *(n for n in installed() if n not in builtin)]
                raise ValueError(
                    f"unknown target {name!r}; choose from {', '.join(names)} (see `rmm2sigma targets`)"
                )
            known = {k: v for k, v in target.formats.items() if k != "default"}
            formats = [] if fmt in ("", PLAIN, "default") else [fmt]
        unknown = [f for f in formats if f not in known]
        if unknown:
            raise ValueError(
                f"target {name!r} has no format {unknown[0]!r}; choose from {', '.join([PLAIN, *known])}"
            )
        chosen.setdefault(name, [])
        chosen[name].extend(f for f in formats if f not in chosen[name])
    return chosen
