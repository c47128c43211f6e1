"""The splunk target: pySigma's SPL backend, taught case-sensitive tests.

Splunk compares field values case-insensitively; its ``CASE()`` search directive makes one
comparison case-sensitive, wildcards included (``User=CASE("SYSTEM")``, ``Image=CASE("*\\X.exe")``).
The backend refuses ``|cased`` instead, and would put a case-sensitive list into a
case-insensitive ``IN (...)``: here such a list is an ``OR`` of ``CASE()`` tests.

A field reference (Sigma's ``fieldref``, which ignores case like every Sigma value) becomes
``| where lower('A')=lower('B')``: pySigma writes ``where 'A'='B'``, which Splunk's ``where``
compares case-sensitively.

Correlations: besides pySigma's ``stats`` method (``bin _time`` buckets of the timespan), the
method ``range`` (``targets.WHOLE_RANGE``) counts once over the search's time range, with no
buckets: a KQL ``summarize`` without ``bin()`` counts once over the query's whole time range.
"""

from __future__ import annotations

from typing import ClassVar

from sigma.backends.splunk import SplunkBackend
from sigma.backends.splunk.splunk import SplunkDeferredFieldRefExpression
from sigma.conditions import ConditionAND, ConditionFieldEqualsValueExpression, ConditionOR
from sigma.conversion.base import TextQueryBackend
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.types import SigmaCasedString

from . import add_whole_range


class CaselessFieldRef(SplunkDeferredFieldRefExpression):
    """``| where lower('A')=lower('B')``: both values compared without case, as Sigma does."""

    template = "where {op}lower('{field}')=lower('{value}')"


class Rmm2SigmaSplunkBackend(SplunkBackend):
    """SplunkBackend with ``CASE()`` for case-sensitive values, case-insensitive field references,
    and the correlation method ``range``."""

    case_sensitive_match_expression: ClassVar[str | None] = "{field}=CASE({value})"

    def decide_convert_condition_as_in_expression(
        self, cond: ConditionOR | ConditionAND, state: ConversionState
    ) -> bool:
        if any(isinstance(getattr(arg, "value", None), SigmaCasedString) for arg in cond.args):
            return False
        return bool(super().decide_convert_condition_as_in_expression(cond, state))

    def convert_condition_field_eq_field(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> SplunkDeferredFieldRefExpression:
        if cond.parent_condition_chain_contains(ConditionOR):  # as SplunkBackend: `where` is deferred
            raise SigmaFeatureNotSupportedByBackendError(
                "ORing FieldRef matching is not yet supported by Splunk backend", source=cond.source
            )
        other = TextQueryBackend.convert_condition_field_eq_field(self, cond, state)  # the other field
        return CaselessFieldRef(state, cond.field, str(other))


add_whole_range(
    Rmm2SigmaSplunkBackend,
    {
        "correlation_methods": "Correlation using stats once over the search's time range (no buckets)",
        "event_count_aggregation_expression": "| stats count as event_count{groupby}",
        "value_count_aggregation_expression": "| stats dc({field}) as value_count{groupby}",
        "temporal_aggregation_expression": "| stats dc(event_type) as event_type_count{groupby}",
        "temporal_extended_aggregation_expression": "| stats values(event_type) as event_types{groupby}",
        "groupby_expression": " by {fields}",
    },
)
