"""rmm2sigma: Microsoft Sentinel / Defender KQL hunting queries to Sigma, Splunk, Elastic and KQL.

The library API is small:

- ``transpile(kql, write="sigma")``: one query in, Sigma YAML (or a target's query) out.
- ``convert_input(path, Options())``: one file in, an ``InputResult`` (never raises for bad input).
- ``convert_rule(SourceRule(...), Options())``: the same for a source already read.

Errors in the user's input are ``Rmm2SigmaError`` with ``source``, ``line`` and ``column``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import KqlSyntaxError, Rmm2SigmaError, UnsupportedKqlError
from .model import Fidelity
from .sigma import Options
from .sources import SourceRule

if TYPE_CHECKING:
    from .convert import InputResult, RuleResult

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

    targets = () if write == "sigma" else (write,)
    result = convert_rule(SourceRule(path="<kql>", kql=kql, name=name), Options(exact=exact), targets)
    if write == "sigma":
        return result.yaml
    if write in result.errors:
        raise UnsupportedKqlError(result.errors[write], source="<kql>")
    return result.queries[write]


def __getattr__(name: str) -> object:
    """Lazy access to the heavier conversion API (it imports pySigma)."""
    if name in ("convert_input", "convert_rule", "InputResult", "RuleResult"):
        from . import convert

        return getattr(convert, name)
    raise AttributeError(name)
