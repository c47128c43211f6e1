"""rmm2sigma: Microsoft Sentinel / Defender KQL hunting queries to Sigma, Splunk, Elastic and KQL.

The library API is small:

- ``transpile(kql, write="sigma")``: one query in, Sigma YAML (or a target's query) out.
- ``convert_input(path, Options())``: one file in, an ``InputResult`` (never raises for bad input).
- ``convert_rule(SourceRule(...), Options())``: the same for a source already read.
- ``convert(path_or_paths, targets=..., out=...)`` or ``convert(text=...)``: a whole run, as the
  command line does it, returning the ``report.json`` data (and writing the files when ``out``).

Errors in the user's input are ``Rmm2SigmaError`` with ``source``, ``line`` and ``column``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import KqlSyntaxError, Rmm2SigmaError, UnsupportedKqlError

if TYPE_CHECKING:
    from .convert import InputResult, RuleResult
    from .formats import DeployOptions
    from .model import Fidelity
    from .sigma import Options
    from .sources import SourceRule

__all__ = [
    "DeployOptions",
    "Fidelity",
    "InputResult",
    "KqlSyntaxError",
    "Options",
    "Rmm2SigmaError",
    "RuleResult",
    "SourceRule",
    "UnsupportedKqlError",
    "convert",
    "convert_input",
    "convert_rule",
    "transpile",
]


def transpile(kql: str, write: str = "sigma", *, exact: bool = False, name: str | None = None) -> str:
    """Convert one KQL query: ``write`` is ``sigma`` or a target (kusto, splunk, lucene, esql, eql)."""
    from .convert import convert_rule
    from .sigma import Options
    from .sources import SourceRule

    targets = () if write == "sigma" else (write,)
    result = convert_rule(SourceRule(path="<kql>", kql=kql, name=name), Options(exact=exact), targets)
    if write == "sigma":
        return result.yaml
    if write in result.errors:
        raise UnsupportedKqlError(result.errors[write], source="<kql>")
    return result.queries[write]


def convert(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    text: str | None = None,
    targets: Sequence[str] = (),
    options: Options | None = None,
    deploy: DeployOptions | None = None,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Convert files and folders (``source``) or one query or Sentinel YAML given as ``text``.

    ``targets`` are ``NAME[:FORMAT]`` as on the command line (default: the five built-in targets
    with their default deployable formats; any installed pySigma backend by name). Returns the
    data ``report.json`` holds. With ``out``, also writes the Sigma rules, queries, deployable
    files and ``report.json`` there, refusing to replace other content unless ``force``.
    Bad input never raises: it is a ``failed`` input in the report. An unknown target or format
    raises ``ValueError``; a refused output file ``FileExistsError``.
    """
    from pathlib import Path

    from .convert import convert_all, convert_input
    from .formats import select
    from .report import build_report, plan_names, write_outputs
    from .sigma import Options
    from .sources import discover
    from .targets import TARGETS

    if (source is None) == (text is None):
        raise ValueError("give either source (paths) or text")
    selection = select(list(targets), TARGETS)
    wanted = list(selection)
    options = options or Options()
    if text is not None:
        results = [convert_input("<text>", options, wanted, text.encode("utf-8", "surrogatepass"))]
    else:
        items = [source] if isinstance(source, (str, os.PathLike)) else list(source or [])
        results = convert_all(list(discover([os.fspath(p) for p in items])), options, wanted)
    if out is None:
        return build_report(results, plan_names(results))
    return write_outputs(results, Path(out), wanted, force, deploy=selection, deploy_options=deploy)[1]


def __getattr__(name: str) -> object:
    """Lazy access to the conversion API: it imports pySigma, which ``--help`` must not pay for."""
    homes = {"DeployOptions": "formats", "Fidelity": "model", "Options": "sigma", "SourceRule": "sources"}
    if name in ("convert_input", "convert_rule", "InputResult", "RuleResult", *homes):
        return getattr(import_module(f".{homes.get(name, 'convert')}", __name__), name)
    raise AttributeError(name)


class _Package(ModuleType):
    """Keeps ``rmm2sigma.convert`` the function above: the first import of the ``rmm2sigma.convert``
    module would otherwise rebind the package attribute to that module (``importlib`` and
    ``from rmm2sigma.convert import ...`` still reach the module through ``sys.modules``)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "convert" and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
