"""The kusto target: pySigma's KQL backend, taught what it gets wrong for our rules, and the
pipeline that gives DeviceEvents kinds their table, ActionType and columns back.

* Case-sensitive tests (``|cased``, from KQL ``==``, ``in``, ``*_cs``): the backend refuses them,
  yet KQL has them natively. ``==``, ``startswith_cs``, ``endswith_cs``, ``contains_cs`` and a
  case-sensitive ``in (...)`` say exactly what the original said, lists and negations included.
* A key of a JSON column (``AdditionalFields.PipeName``, a field the Defender pipeline maps to):
  the backend would quote it as a string; it is read as ``tostring(parse_json(C).K)``.
* A Sigma field that holds a Defender column in other words (``defender.yml``'s ``suffix`` and
  ``line``: a Zone.Identifier stream's name and Contents): back to the column
  (``defender_lines_pipeline``).
* A field reference (``fieldref``, from KQL ``A == B``): the backend has none; it is ``A =~ B``,
  without case as Sigma compares.
* Value lists: the backend writes every list as ``in~ ("...")``, so numbers become strings
  (Kusto.Language rejects a string list on a ``long`` column, KS107) and case-sensitive strings
  lose their case. A list of numbers stays numeric (``in (5938, 7070)``); a list of
  case-sensitive strings uses ``in``; a list mixing kinds is written as an ``or`` of its tests.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from sigma.backends.kusto import KustoBackend
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.conversion.deferred import DeferredQueryExpression
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError, SigmaTransformationError
from sigma.processing.conditions import (
    IncludeFieldCondition,
    LogsourceCondition,
    RuleProcessingItemAppliedCondition,
)
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations.base import (
    DetectionItemTransformation,
    PreprocessingTransformation,
    StringValueTransformation,
)
from sigma.rule import SigmaDetection, SigmaDetectionItem
from sigma.types import SigmaExists, SigmaString, SigmaType, SpecialChars

from ..mapping import ACTION_TYPE, INVOCATION, FieldSpec, TableSpec, all_specs
from .elastic import BooleansByEquality, KindPreservingLists, list_kind

_JSON_KEY = re.compile(r"[A-Za-z]\w*\.[A-Za-z]\w*")
_JSON_READ = re.compile(r"tostring\(parse_json\(\w+\)\.\w+\)")


class Rmm2SigmaKustoBackend(BooleansByEquality, KindPreservingLists, KustoBackend):
    """KustoBackend with KQL's case-sensitive operators and kind-preserving value lists."""

    case_sensitive_match_expression: ClassVar[str | None] = "{field} == {value}"
    case_sensitive_startswith_expression: ClassVar[str | None] = "{field} startswith_cs {value}"
    case_sensitive_endswith_expression: ClassVar[str | None] = "{field} endswith_cs {value}"
    case_sensitive_contains_expression: ClassVar[str | None] = "{field} contains_cs {value}"
    # Sigma's fieldref ignores case, like every Sigma value; the backend has no field comparison
    field_equals_field_expression: ClassVar[str | None] = "{field1} =~ {field2}"

    def convert_condition_val_str(
        self, cond: ConditionValueExpression, state: ConversionState
    ) -> str | DeferredQueryExpression:
        """A keyword (``*x*``: a value anywhere in the event) as KQL's search of every column,
        ``* contains "x"``; the backend wrote the bare string, which is no KQL filter."""
        value, wildcard = cond.value, SpecialChars.WILDCARD_MULTI
        searched = isinstance(value, SigmaString) and value.startswith(wildcard) and value.endswith(wildcard)
        inner = value[1:-1] if isinstance(value, SigmaString) and len(value) > 1 else None
        if not searched or inner is None or inner.contains_special():
            raise SigmaFeatureNotSupportedByBackendError(f"kusto: the keyword {value} is no substring search")
        return f"* contains {self.convert_value_str(inner, state)}"

    def escape_and_quote_field(self, field_name: str) -> str:
        if _JSON_KEY.fullmatch(field_name):
            column, key = field_name.split(".")
            return f"tostring(parse_json({column}).{key})"
        if _JSON_READ.fullmatch(field_name):  # the backend's value-list path escapes a field twice
            return field_name
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


def defender_events_pipeline() -> ProcessingPipeline:
    """The Defender table, ActionType and columns of every category ``mapping/defender.yml``
    chooses by ActionType in a table microsoft_xdr has no category for (DeviceEvents).

    Per category: its table (``query_table``) for a rule of its log source (and of its implied
    EventID, for the Security and Defender logs); ``ActionType`` = the kinds the category stands
    for (all of them: a rule from one kind is that much wider, as its mapping note says); and its
    Sigma fields back to the Defender columns they came from. A file-name column gives its path
    column back (``InitiatingProcessFileName`` -> ``InitiatingProcessFolderPath``) when no column
    maps to the field whole, and a name Defender writes under a prefix gets it back
    (``DevicePrefix``). Runs before microsoft_xdr, like ``pipelines/kusto_tables.yml``.
    """
    specs = [spec for spec in all_specs() if spec.kusto_table and spec.action_types]
    items: list[dict[str, Any]] = []
    for spec in specs:
        identifier = _identifier(spec)
        conditions: dict[str, Any] = {"source": {"type": "logsource", **spec.logsource}}
        implied = _implied(spec)
        conditions.update(implied)
        expression = " and ".join(["source", *([f"({' or '.join(implied)})"] if implied else [])])
        applied = [{"type": "processing_item_applied", "processing_item_id": identifier}]
        kinds = list(spec.action_types)
        items += [
            {
                "id": identifier,
                "type": "set_state",
                "key": "query_table",
                "val": spec.kusto_table,
                "rule_conditions": conditions,
                "rule_cond_expr": expression,
            },
            {
                "id": f"{identifier}_action",
                "type": "add_condition",
                "conditions": {ACTION_TYPE: kinds[0] if len(kinds) == 1 else kinds},
                "rule_conditions": applied,
            },
        ]
        columns = kusto_columns(spec)
        if columns:
            items.append(
                {
                    "id": f"{identifier}_fields",
                    "type": "field_name_mapping",
                    "mapping": columns,
                    "rule_conditions": applied,
                }
            )
        # a rule with EventIDs of two kinds (a SigmaHQ rule, say) would get two ActionType tests
        # that no event passes together: refused instead
        others = {
            name: condition
            for other in specs
            if other is not spec and other.logsource == spec.logsource
            for name, condition in _implied(other, prefix=f"{_identifier(other)}_").items()
        }
        if implied and others:
            items.append(
                {
                    "id": f"{identifier}_several",
                    "type": "rule_failure",
                    "message": (
                        f"the rule's {' and '.join(spec.conditions or {})} values stand for several "
                        f"kinds of {spec.kusto_table} events (ActionType), which this pipeline cannot "
                        "select in one query; convert one rule per kind"
                    ),
                    "rule_conditions": {"mine": applied[0], **others},
                    "rule_cond_expr": f"mine and ({' or '.join(others)})",
                }
            )
    with warnings.catch_warnings():  # pySigma parses rule_cond_expr with a pyparsing call it deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        name = "rmm2sigma Defender event kinds for Microsoft XDR"
        pipeline = ProcessingPipeline.from_dict({"name": name, "priority": 5, "transformations": items})
    for spec in specs:  # before the field names go back to Defender's columns
        identifier = _identifier(spec)
        at = next(i for i, item in enumerate(pipeline.items) if item.identifier == f"{identifier}_action") + 1
        pipeline.items[at:at] = [
            ProcessingItem(
                transformation,
                identifier=f"{identifier}_respelling",
                rule_conditions=[RuleProcessingItemAppliedCondition(identifier)],
                field_name_conditions=[IncludeFieldCondition([target.field])],
            )
            for column, target in spec.fields.items()
            if (transformation := _defender_spelling(target, column)) is not None
        ]
    return pipeline


def _defender_spelling(target: FieldSpec, column: str) -> PreprocessingTransformation | None:
    """The transformation that writes a Sigma value back as Defender spells it, if it differs."""
    if target.prefix:
        return DevicePrefix(target.prefix)
    if target.spelling == "hex":
        return DecimalNumber()
    if target.spelling == "invocation":
        return InvokedCommand(column)
    return None


_HEAD, _TAIL = INVOCATION.split("{}")
_INVOKED = re.compile(re.escape(_HEAD) + r'([^()\\"]+)(' + re.escape(_TAIL) + ")?")


@dataclass
class InvokedCommand(DetectionItemTransformation):
    """``Payload|contains: CommandInvocation(Get-Process)`` as the command Defender records,
    ``AdditionalFields.Command =~ "Get-Process"`` (``startswith`` without the ``)``); a Payload test
    of another shape reads the JSON text, as the ps_module mapping does."""

    column: str

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> SigmaDetectionItem | None:
        commands: list[SigmaType] = []
        for value in detection_item.value:
            parts = value.s if isinstance(value, SigmaString) else ()
            inner = (
                parts[1] if len(parts) == 3 and parts[0] == parts[2] == SpecialChars.WILDCARD_MULTI else None
            )
            found = _INVOKED.fullmatch(inner) if isinstance(inner, str) else None
            if found is None:
                return None
            command = SigmaString(found[1])
            commands.append(command if found[2] else command + SpecialChars.WILDCARD_MULTI)
        return SigmaDetectionItem(
            self.column,
            [],
            commands,
            detection_item.value_linking,
            detection_item.negated,
            auto_modifiers=False,
        )


@dataclass
class DevicePrefix(StringValueTransformation):
    """A name Sigma spells without Defender's prefix (``\\lsass``) as Defender writes it
    (``\\Device\\NamedPipe\\lsass``); a substring test (a leading wildcard) or another device's
    path (``\\Device\\Mup\\...``) stays as it is."""

    prefix: str

    def apply_string_value(self, field: str | None, val: SigmaString) -> SigmaString:
        head = val.s[0] if val.s else None
        if not isinstance(head, str) or not head.startswith("\\") or head.lower().startswith("\\device\\"):
            return val
        return SigmaString(self.prefix, escape=False) + val


@dataclass
class DecimalNumber(StringValueTransformation):
    """A number Windows writes as hex text (``0x1fffff``) as the decimal Defender writes
    (``2097151``); the key is read with ``tostring()``, which gives that decimal text."""

    def apply_string_value(self, field: str | None, val: SigmaString) -> SigmaString:
        text = val.s[0] if len(val.s) == 1 else None
        if not isinstance(text, str) or not re.fullmatch(r"0x[0-9a-f]+", text, re.IGNORECASE):
            return val
        return SigmaString(str(int(text, 16)))


def defender_lines_pipeline() -> ProcessingPipeline:
    """The Defender columns back from the Sigma fields that hold them in other words, for every
    category the kusto target reads from a Defender table (``kusto_table``): a stream's name
    without its suffix (``DeviceSuffix``), its Contents' lines as their columns (``StreamLines``).
    Runs before microsoft_xdr, like ``pipelines/kusto_tables.yml``."""
    items: list[ProcessingItem] = []
    for spec in all_specs():
        if not spec.kusto_table:
            continue
        lines: dict[str, dict[str, str]] = {}
        for column, target in spec.fields.items():
            if target.line:
                lines.setdefault(target.field, {})[target.line] = column
        items += [
            ProcessingItem(StreamLines(field, keys), rule_conditions=[LogsourceCondition(**spec.logsource)])
            for field, keys in lines.items()
        ]
        items += [
            ProcessingItem(
                DeviceSuffix(suffix),
                rule_conditions=[LogsourceCondition(**spec.logsource)],
                field_name_conditions=[IncludeFieldCondition([field])],
            )
            for field, suffix in dict.fromkeys((t.field, t.suffix) for t in spec.fields.values() if t.suffix)
        ]
    return ProcessingPipeline(name="rmm2sigma Defender columns from Sigma's texts", priority=5, items=items)


@dataclass
class DeviceSuffix(StringValueTransformation):
    """A value Sigma's field holds followed by ``suffix`` (``C:\\x.exe:Zone.Identifier``) as the
    Defender column holds it: the suffix taken off its end; a value open at its end stays."""

    suffix: str

    def apply_string_value(self, field: str | None, val: SigmaString) -> SigmaString:
        if not str(val).lower().endswith(self.suffix.lower()):
            return val
        return val[: len(val) - len(self.suffix)]


@dataclass
class StreamLines(DetectionItemTransformation):
    """A test of a text of ``key=value`` lines (a Zone.Identifier stream's Contents) as the columns
    whose values the lines are: ``*key=U*`` is the key's column starting with U (``*key=*``: not
    empty); another substring is found in any of the columns, which is what the Sigma rule says of
    the whole text (the mapping labelled that test wider). Any other test of the text (a prefix, a
    regex: SigmaHQ's ``[ZoneTransfer]  ZoneId=3``) no column holds: the rule is refused."""

    field: str
    columns: dict[str, str]  # key -> Defender column

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> SigmaDetection | None:
        if detection_item.field != self.field:
            return None
        tests = [self.column_test(value) for value in detection_item.value]
        return SigmaDetection(tests, item_linking=detection_item.value_linking)

    def column_test(self, value: Any) -> SigmaDetection | SigmaDetectionItem:
        substring = (
            isinstance(value, SigmaString)
            and value.startswith(SpecialChars.WILDCARD_MULTI)
            and value.endswith(SpecialChars.WILDCARD_MULTI)
        )
        if not substring:  # `[ZoneTransfer]  ZoneId=3*`, a regex: about the whole text, which no column holds
            raise SigmaTransformationError(
                f"only a substring test of {self.field} can be read from the columns its lines come from "
                f"({', '.join(self.columns.values())})"
            )
        if isinstance(value, SigmaString):
            for key, column in self.columns.items():
                head = f"{key}="
                if len(value) > len(head) and str(value[1 : 1 + len(head)]).lower() == head.lower():
                    rest = value[1 + len(head) :]
                    if str(rest) == "*":
                        return SigmaDetectionItem(column, [], [SigmaExists(True)])
                    return SigmaDetectionItem(column, [], [rest])
        anywhere: list[SigmaDetectionItem | SigmaDetection] = [
            SigmaDetectionItem(column, [], [value]) for column in self.columns.values()
        ]
        return SigmaDetection(anywhere, item_linking=ConditionOR)


def accept_json_keys(xdr: ProcessingPipeline) -> None:
    """Let microsoft_xdr's field check pass the JSON keys the mapping names (``AdditionalFields.
    ThreatName``): its check knows a table's columns only, and the key of one of them is a field
    this backend reads as ``tostring(parse_json(C).K)``."""
    from sigma.processing.conditions import ExcludeFieldCondition

    keys = sorted({column for spec in all_specs() for column in spec.fields if _JSON_KEY.fullmatch(column)})
    for item in xdr.items:
        if (item.identifier or "").startswith("microsoft_xdr_unsupported_fields_"):
            for condition in item.field_name_conditions:
                if isinstance(condition, ExcludeFieldCondition) and condition.mode == "plain":
                    condition.fields = [*condition.fields, *keys]


def _identifier(spec: TableSpec) -> str:
    return "rmm2sigma_" + re.sub(r"(?<!^)(?=[A-Z])", "_", spec.action_types[0]).lower()


def _implied(spec: TableSpec, prefix: str = "") -> dict[str, Any]:
    """Rule conditions: the rule tests one of the values the category implies (its EventIDs)."""
    return {
        f"{prefix}{field.lower()}_{index}": {"type": "contains_detection_item", "field": field, "value": one}
        for field, value in (spec.conditions or {}).items()
        for index, one in enumerate(value if isinstance(value, list) else [value])
    }


def kusto_columns(spec: TableSpec) -> dict[str, str | list[str]]:
    """Sigma field -> the Defender column it came from, for the fields not already named so. The
    host line of module logging (ContextInfo) holds the host's path and command line: a test on it
    is a test on either (pySigma's mapping to a list is an ``or``)."""
    columns: dict[str, str | list[str]] = {}
    for column, target in spec.fields.items():
        if target.part is None and target.values is None:
            columns.setdefault(target.field, column)
    for column, target in spec.fields.items():
        if target.part == "file_name":
            columns.setdefault(target.field, column.replace("FileName", "FolderPath"))
    hosts = [
        column for column, target in spec.fields.items() if target.spelling == "host" and not target.part
    ]
    for column in hosts:
        columns[spec.fields[column].field] = hosts
    return {field: column for field, column in columns.items() if field != column}
