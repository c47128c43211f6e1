"""rmm2sigma: Microsoft Sentinel / Defender KQL hunting queries to Sigma, Splunk, Elastic and KQL.

The library API is small:

- ``transpile(kql, write="sigma")``: one query in, Sigma YAML (or a target's query) out.
- ``convert_input(path, Options())``: one file in, an ``InputResult`` (never raises for bad input).
- ``convert_rule(SourceRule(...), Options())``: the same for a source already read.

Errors in the user's input are ``Rmm2SigmaError`` with ``source``, ``line`` and ``column``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import KqlSyntaxError, Rmm2SigmaError, UnsupportedKqlError

if TYPE_CHECKING:
    from .convert import InputResult, RuleResult
    from .model import Fidelity
    from .sigma import Options
    from .sources import SourceRule

__all__ = [
    "Fidelity",
    "InputResult",
    "KqlSyntaxError",
    "Options",
    "Rmm2SigmaError",
    "RuleResult",
    "SourceRule",
    "UnsupportedKqlError",
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


def __getattr__(name: str) -> object:
    """Lazy access to the conversion API: it imports pySigma, which ``--help`` must not pay for."""
    homes = {"Fidelity": "model", "Options": "sigma", "SourceRule": "sources"}
    if name in ("convert_input", "convert_rule", "InputResult", "RuleResult", *homes):
        return getattr(import_module(f".{homes.get(name, 'convert')}", __name__), name)
    raise AttributeError(name)
