"""The splunk target: pySigma's SPL backend, taught case-sensitive tests.

Splunk compares field values case-insensitively; its ``CASE()`` search directive makes one
comparison case-sensitive, wildcards included (``User=CASE("SYSTEM")``, ``Image=CASE("*\\X.exe")``).
The backend refuses ``|cased`` instead, and would put a case-sensitive list into a
case-insensitive ``IN (...)``: here such a list is an ``OR`` of ``CASE()`` tests.
"""

from __future__ import annotations

from typing import ClassVar

from sigma.backends.splunk import SplunkBackend
from sigma.conditions import ConditionAND, ConditionOR
from sigma.conversion.state import ConversionState
from sigma.types import SigmaCasedString


class Rmm2SigmaSplunkBackend(SplunkBackend):
    """SplunkBackend with ``CASE()`` for case-sensitive values."""

    case_sensitive_match_expression: ClassVar[str | None] = "{field}=CASE({value})"

    def decide_convert_condition_as_in_expression(
        self, cond: ConditionOR | ConditionAND, state: ConversionState
    ) -> bool:
        if any(isinstance(getattr(arg, "value", None), SigmaCasedString) for arg in cond.args):
            return False
        return bool(super().decide_convert_condition_as_in_expression(cond, state))
