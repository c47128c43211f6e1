"""Every pySigma backend installed beside rmm2sigma, found by pySigma's own plugin discovery.

The five built-in targets (``targets/``) keep their pipelines and proven fidelity labels. Any
other installed backend (Google SecOps, CrowdStrike LogScale, QRadar, ...) is a target by its
pySigma identifier, case-insensitive, with the pipelines ``plugins.yml`` names for it, else those
whose ``allowed_backends`` name it. Its fidelity is ``unproven``: no oracle of ours runs it.

Discovery imports every installed plugin (~0.2-0.4 s), so it runs only when a name is not one of
the five, or for ``rmm2sigma targets``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

import yaml

if TYPE_CHECKING:
    from sigma.conversion.base import Backend
    from sigma.rule import SigmaRule

    from .convert import RuleResult


@dataclass(frozen=True)
class InstalledTarget:
    name: str
    description: str
    formats: dict[str, str]
    pipelines: tuple[str, ...]  # every installed pipeline that declares this backend
    default_pipelines: tuple[str, ...]  # the ones a conversion uses


@cache
def _plugins() -> Any:
    from sigma.plugins import InstalledSigmaPlugins

    return InstalledSigmaPlugins.autodiscover(include_validators=False)


@cache
def _pipeline_backends() -> dict[str, frozenset[str]]:
    """Each installed pipeline's ``allowed_backends`` (empty: it names none)."""
    out: dict[str, frozenset[str]] = {}
    for name, factory in _plugins().pipelines.items():
        try:
            allowed = getattr(factory(), "allowed_backends", None) or ()
        except Exception:  # a plugin that cannot build its pipeline is skipped, not fatal
            continue
        out[name] = frozenset(str(b) for b in allowed)
    return out


@cache
def _defaults() -> dict[str, list[str]]:
    text = resources.files(__package__).joinpath("data/plugins.yml").read_text()
    loaded: dict[str, list[str]] = yaml.safe_load(text)["pipelines"]
    return loaded


@cache
def installed() -> dict[str, InstalledTarget]:
    """Installed backends by lower-case identifier."""
    targets: dict[str, InstalledTarget] = {}
    declared = _pipeline_backends()
    for identifier, backend in sorted(_plugins().backends.items()):
        name = identifier.lower()
        pipelines = tuple(sorted(p for p, allowed in declared.items() if identifier in allowed))
        defaults = tuple(p for p in _defaults().get(name, pipelines) if p in declared)
        targets[name] = InstalledTarget(
            name=name,
            description=str(getattr(backend, "name", identifier)),
            formats={str(k): str(v) for k, v in getattr(backend, "formats", {}).items()},
            pipelines=pipelines,
            default_pipelines=defaults,
        )
    return targets


class _Refusing:
    """A discovered backend whose every failure is a ``SigmaError``: plugins raise plain exceptions
    (SecOps' ``InvalidUDMFieldError``) for a field they lack, which is a refusal, not our defect."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def convert_rule(self, rule: SigmaRule, output_format: str | None = None) -> list[Any]:
        from sigma.exceptions import SigmaError, SigmaFeatureNotSupportedByBackendError

        try:
            return self.backend.convert_rule(rule, output_format)
        except SigmaError:
            raise
        except Exception as error:
            raise SigmaFeatureNotSupportedByBackendError(str(error).splitlines()[0]) from None


def backend(name: str) -> Backend:
    """A fresh backend for an installed target, with its default pipelines."""
    from sigma.processing.pipeline import ProcessingPipeline

    target = installed().get(name.lower())
    if target is None:
        raise KeyError(name)
    pipeline = ProcessingPipeline()
    for pipeline_name in target.default_pipelines:
        pipeline += _plugins().pipelines[pipeline_name]()
    klass = _plugins().backends[next(k for k in _plugins().backends if k.lower() == target.name)]
    return cast("Backend", _Refusing(klass(pipeline)))


def backend_format_files(target: str, fmt: str, rules: Sequence[tuple[str, RuleResult]]) -> dict[str, str]:
    """One file per rule in a backend's own output format (``secops:yara_l``), from its Sigma YAML.

    A rule the backend refuses in that format is left out; its plain query's error is already in
    the report.
    """
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    files: dict[str, str] = {}
    for stem, rule in rules:
        if target not in rule.queries:
            continue
        converter = backend(target)
        try:
            collection = SigmaCollection.from_yaml(rule.yaml)
            converter.convert_rule(collection.rules[0], fmt)  # type: ignore[arg-type]
            output = cast("Any", converter).backend.finalize(collection.rules[0].get_conversion_result(), fmt)
        except SigmaError:
            continue
        files[f"{stem}.{fmt}"] = _text(output)
    return files


def _text(output: Any) -> str:
    if isinstance(output, str):
        return output.strip("\n") + "\n"
    if isinstance(output, dict):
        return json.dumps(output, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return "".join(_text(item) for item in output)
