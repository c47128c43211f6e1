"""The kusto target: pySigma's KQL backend, taught the two things it gets wrong for our rules.

* Case-sensitive tests (``|cased``, from KQL ``==``, ``in``, ``*_cs``): the backend refuses them,
  yet KQL has them natively. ``==``, ``startswith_cs``, ``endswith_cs``, ``contains_cs`` and a
  case-sensitive ``in (...)`` say exactly what the original said, lists and negations included.
* A key of a JSON column (``AdditionalFields.PipeName``, a field the Defender pipeline maps to):
  the backend would quote it as a string; it is read as ``tostring(parse_json(C).K)``.
* Value lists: the backend writes every list as ``in~ ("...")``, so numbers become strings
  (Kusto.Language rejects a string list on a ``long`` column, KS107) and case-sensitive strings
  lose their case. A list of numbers stays numeric (``in (5938, 7070)``); a list of
  case-sensitive strings uses ``in``; a list mixing kinds is written as an ``or`` of its tests.
"""

from __future__ import annotations

import re
from typing import ClassVar

from sigma.backends.kusto import KustoBackend
from sigma.conditions import ConditionAND, ConditionFieldEqualsValueExpression, ConditionOR
from sigma.conversion.state import ConversionState

from .elastic import KindPreservingLists, list_kind

_JSON_KEY = re.compile(r"[A-Za-z]\w*\.[A-Za-z]\w*")


class Rmm2SigmaKustoBackend(KindPreservingLists, KustoBackend):
    """KustoBackend with KQL's case-sensitive operators and kind-preserving value lists."""

    case_sensitive_match_expression: ClassVar[str | None] = "{field} == {value}"
    case_sensitive_startswith_expression: ClassVar[str | None] = "{field} startswith_cs {value}"
    case_sensitive_endswith_expression: ClassVar[str | None] = "{field} endswith_cs {value}"
    case_sensitive_contains_expression: ClassVar[str | None] = "{field} contains_cs {value}"

    def escape_and_quote_field(self, field_name: str) -> str:
        if _JSON_KEY.fullmatch(field_name):
            column, key = field_name.split(".")
            return f"tostring(parse_json({column}).{key})"
        return str(super().escape_and_quote_field(field_name))

    def decide_convert_condition_as_in_expression(
        self, cond: ConditionOR | ConditionAND, state: ConversionState
    ) -> bool:
        """An in-list only for values of one kind: all numbers, all plain case-insensitive
        strings (``in~``, with the backend's wildcard handling) or all plain cased strings."""
        if not super().decide_convert_condition_as_in_expression(cond, state):
            return False
        kinds = {
            list_kind(arg.value) for arg in cond.args if isinstance(arg, ConditionFieldEqualsValueExpression)
        }
        if len(kinds) != 1:
            return False
        (kind,) = kinds
        return kind == "string" or (isinstance(cond, ConditionOR) and kind in ("number", "cased"))
