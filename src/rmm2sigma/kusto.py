"""Case-sensitive tests for the kusto target, which pySigma's KQL backend refuses (``|cased``).

A ``SigmaCasedString`` (KQL ``==``, ``in``, ``*_cs``) becomes an anchored regex, which KQL's
``matches regex`` reads case-sensitively: ``contains|cased 'aB'`` -> ``^.*aB.*$``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations.base import ValueTransformation
from sigma.types import SigmaCasedString, SigmaRegularExpression, SigmaType

from .elastic import string_regex
from .mapping import regex_escape


@dataclass
class CasedAsRegexTransformation(ValueTransformation):
    """Rewrite case-sensitive strings as anchored, case-sensitive regexes."""

    def apply_value(self, field: str | None, val: SigmaType) -> SigmaType | None:
        if not isinstance(val, SigmaCasedString):
            return None
        pattern = string_regex(val.s, literal=regex_escape, limit=None)
        return None if pattern is None else SigmaRegularExpression(f"^{pattern}$")


def cased_pipeline() -> ProcessingPipeline:
    return ProcessingPipeline(
        name="rmm2sigma: case-sensitive strings as regexes for KQL",
        priority=5,
        items=[
            ProcessingItem(identifier="rmm2sigma_kusto_cased", transformation=CasedAsRegexTransformation())
        ],
    )
