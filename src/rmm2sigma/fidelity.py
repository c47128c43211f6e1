"""The fidelity each target is expected to have, per rule: the label table behind ``fidelity_by_target``.

The mapping decides one label per rule (``MappedRule.fidelity``). A target can keep it, or change
it where its query language compares differently from Sigma. The execution proof
(``rmm2sigma.verify``) measures every target it can run and checks these labels against it:
``exact`` must measure exact, ``widened`` widened, ``approximate`` never narrower than the
original, except for a loss the label declares (``TargetFidelity.losses``, see ``agrees``). No
shipped query is labelled ``narrowed`` (the target misses events the original selects) or
``diverged`` (it misses some and adds others): a target that would lose events is refused
(``TargetFidelity.refusal``: a partial result with the reason, no query), or, for the one declared
loss, labelled ``approximate`` with a note saying how it can differ. Known target limits
(pySigma 1.5, FACTS §4):

* Elasticsearch compares strings exactly on keyword fields, and reads regexes (lucene ``/.../``,
  ES|QL ``rlike``, EQL ``regex~``) with Lucene's engine: the whole value must match, ``(?i)`` is
  not a flag and ``^``/``$`` are no anchors. ``rmm2sigma.targets.elastic`` rewrites, before the backend
  sees them, every case-insensitive string test and every regex of the shapes ``--exact`` emits
  into whole-value Lucene regexes with ``[xX]`` letter classes (strings for lucene and esql only:
  EQL's ``:`` and ``like~`` are case-insensitive already), so those tests keep the rule's label,
  and translates users' regexes from their parsed tree; a regex with no Lucene equivalent makes
  the target refuse the rule. A case-sensitive test on a ``.caseless`` field (lowercased values)
  asks the field that holds the value as written (``elastic.CasedOnWrittenValue``): the same test.
* EQL and ES|QL use three-valued logic: ``not (field : "x")`` is null, not true, when the field
  is absent, where Sigma, Splunk, Lucene and the SQLite proof match the event. Their backends
  (``elastic.TwoValuedNegations``) ask every negated field test as ``(field exists and test)``,
  so those tests keep the rule's label.
* Sigma keywords (a value anywhere in the event) are Lucene's search of every field. EQL and ES|QL
  have none (pySigma's EQL backend writes the bare string, which Elasticsearch rejects as no
  condition), so a rule with keywords is refused there.
* A test an Elastic target can only ask in a form that misses events (a case-insensitive test on
  a case-sensitive keyword field with no regex rewrite, EQL's ``==`` for a long case-sensitive
  pattern) makes that target refuse the rule.
* Splunk's ``where`` compares case-sensitively: a field reference is written
  ``where lower('A')=lower('B')`` (``rmm2sigma.targets.splunk``), as case-insensitive as Sigma's.
* The kusto target keeps the Defender table when the mapping declares ``kusto_table``, so the
  table's own approximation (e.g. certificates seen as image loads) does not apply to it.
* A target's data model (``formats.yml``, ``targets.data_model``) may hold fewer events and fields
  than Sigma's taxonomy: Splunk's ``windows-security`` has process creation (event 4688) with
  three fields. A rule of another category, or a test on a field the event lacks, would lose
  events, so that target is refused; a negated test on such a field holds on every event
  (Splunk's ``NOT field=value`` matches an event without the field): widened, with a note.

This module is core: it must not import the verify extras.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache

from .mapping import MappedRule, all_specs
from .model import ANY_COLUMN, And, Fidelity, Match, Node, Not, Or, Predicate
from .targets import data_model, data_models, ecs_pipeline

ELASTIC = ("lucene", "esql", "eql")
SIGMA = "sigma"  # the Sigma rule itself, as every Sigma consumer reads it
NARROWED = Fidelity.NARROWED.value
DIVERGED = Fidelity.DIVERGED.value
UNPROVEN = "unproven"
UNPROVEN_NOTE = (
    "a backend found by pySigma's plugin discovery; no oracle executes it, so its label is unproven"
)
PROVEN = frozenset({SIGMA, "kusto", "splunk", "lucene", "esql", "eql"})


# the losses an ``approximate`` label may declare: a Sigma value_count compared without case (a
# backend such as pysigma-backend-sqlite counts values that differ only in case once), and a group
# of events with no value in a group-by field (Splunk's ``stats ... by`` and Sigma backends drop
# such events; Kusto's ``summarize`` keeps them as a group)
CASELESS_DISTINCT = "caseless distinct values"
NULL_GROUPS = "events without a group-by value"


@dataclass(frozen=True)
class TargetFidelity:
    """A target's label with its reasons. A shipped query's label is exact, widened or approximate
    (or unproven); a target that would lose events is refused (``refusal``: a partial result, no
    query), or labelled ``approximate`` with the losses named (``losses``) and stated in its notes."""

    label: str  # a Fidelity value; NARROWED only with a refusal
    notes: tuple[str, ...] = ()
    refusal: str | None = None  # why this target's query is not shipped: it would lose events
    losses: tuple[str, ...] = ()  # the declared ways an approximate target can lose (CASELESS_DISTINCT ...)


def target_fidelity(
    mapped: MappedRule, targets: Iterable[str], groups: bool = True, splunk_data_model: str | None = None
) -> dict[str, TargetFidelity]:
    """The expected label of every target (``sigma`` for the rule itself) with the reasons, Splunk's
    in ``splunk_data_model`` (None: the default).

    A threshold's labels are on the groups it reports; ``groups=False`` gives those of its base
    rule's events (what a row-level measurement checks).
    """
    measurable = mapped.measurable
    declared = mapped.fidelity is Fidelity.APPROXIMATE and measurable is not Fidelity.APPROXIMATE
    out: dict[str, TargetFidelity] = {}
    from .correlation import threshold_fidelity  # imports pySigma through sigma.py

    for target in targets:
        if target not in PROVEN:
            out[target] = TargetFidelity(UNPROVEN, (f"{target}: {UNPROVEN_NOTE}",))
            continue
        if target == "kusto" and mapped.table.kusto_table:  # the Defender table is kept: no model change
            if mapped.table.action_types and not mapped.kinds_written:  # kusto adds `ActionType =~ ...` back
                note = (
                    "kusto: the ActionType test is `=~` the kinds the category stands for, wider than "
                    "the query's"
                )
                out[target] = TargetFidelity(Fidelity.worst(measurable, Fidelity.WIDENED).value, (note,))
            else:
                out[target] = TargetFidelity(measurable.value)
            continue
        if target in ELASTIC:
            label = _elastic(target, measurable, mapped)
        elif target == "splunk":  # `CASE()` for case-sensitive tests, `lower()` on both sides of a fieldref
            label = _splunk(measurable, mapped, splunk_data_model)
        else:
            label = TargetFidelity(measurable.value)
        if declared and label.label in (Fidelity.EXACT.value, Fidelity.WIDENED.value):
            label = replace(label, label=Fidelity.APPROXIMATE.value)
        out[target] = threshold_fidelity(target, label, mapped) if groups else label
    return out


def refusals(labels: Mapping[str, TargetFidelity]) -> dict[str, str]:
    """Targets whose query is not shipped, with the reason: a test these targets can only ask
    in a form that would lose events (a partial result rather than a narrowed query)."""
    return {target: label.refusal for target, label in labels.items() if label.refusal}


def agrees(label: str, measured: str, declared_loss: bool = False) -> bool:
    """Whether a measured verdict keeps the promise of a label.

    ``approximate`` promises a superset of the original, except for a loss the label declares
    (``TargetFidelity.losses``): ``declared_loss`` says the measurement checked that every item the
    target misses is one that declared cause explains, and only then may it be narrower.
    """
    if label == Fidelity.APPROXIMATE.value:
        lossy = declared_loss and measured in (NARROWED, DIVERGED)
        return measured in (Fidelity.EXACT.value, Fidelity.WIDENED.value) or lossy
    return label == measured


# Lucene's query string searches every field; EQL and ES|QL name the field of every test
_NO_SEARCH = {
    "eql": "EQL has no search of every field: a keyword is a string where EQL needs a condition, "
    "which Elasticsearch rejects",
    "esql": "ES|QL has no search of every field for a keyword",
}


def _elastic(target: str, base: Fidelity, mapped: MappedRule) -> TargetFidelity:
    misses: list[str] = []
    adds: list[str] = []
    refuse: list[str] = []
    logsource = mapped.table.logsource
    fields = ecs_field_names(logsource.get("category", ""), logsource.get("service", ""))
    for leaf, positive in _leaves(mapped.detection.predicate):
        field = fields.get(leaf.column, leaf.column)
        if leaf.case_sensitive:  # asked on the field as written (elastic.CasedOnWrittenValue)
            field = field.removesuffix(".caseless")
        reason = _elastic_loss(target, leaf, field)
        if reason and positive:
            misses.append(reason)
        elif reason:
            adds.append(f"{reason}; the test is negated, so this widens the query")
        if wider := _elastic_gain(leaf, field):
            (adds if positive else misses).append(wider if positive else f"{wider}; the test is negated")
        if target in ("eql", "esql") and leaf.column == ANY_COLUMN:
            misses.append(_NO_SEARCH[target])
    # a query that would miss events the rule matches is not shipped: the target is refused
    refuse.extend(misses)
    if refuse:
        reason = "; ".join(dict.fromkeys(refuse))
        return TargetFidelity(NARROWED, (f"{target}: {reason}",), f"{target}: not converted: {reason}")
    if not adds:
        return TargetFidelity(base.value)
    notes = tuple(f"{target}: {reason}" for reason in dict.fromkeys(adds))
    return TargetFidelity(Fidelity.worst(base, Fidelity.WIDENED).value, notes)


def _splunk(base: Fidelity, mapped: MappedRule, model: str | None) -> TargetFidelity:
    """What the data model lacks (``_unheld``): a refusal, or negated tests that widen."""
    refusal, wider = _unheld("splunk", model, mapped)
    if refusal:
        return TargetFidelity(NARROWED, (f"splunk: {refusal}",), f"splunk: not converted: {refusal}")
    notes = tuple(f"splunk: {reason}" for reason in wider)
    if wider:
        base = Fidelity.worst(base, Fidelity.WIDENED)
    return TargetFidelity(base.value, notes)


def _unheld(target: str, model: str | None, mapped: MappedRule) -> tuple[str | None, list[str]]:
    """What ``target``'s data model has no event or field for: the reason to refuse the rule (its
    category, or a test that would lose events), and the negated tests that widen the query."""
    name = data_model(target, model) or ""
    spec = data_models(target).get(name, {})
    held = spec.get("fields")
    category = mapped.table.logsource.get("category")
    if held is None or not category:  # Sigma's whole taxonomy, or a service's own log (its fields)
        return None, []
    option = f"--{target}-data-model {name}"
    if category not in held:
        reasons: dict[str, str] = spec["no_event"]
        reason = next((text for key, text in reasons.items() if category.startswith(key)), reasons["default"])
        return f"{' '.join(reason.format(category=category).split())} ({option})", []
    lacking: dict[bool, list[str]] = {True: [], False: []}
    for leaf, positive in _leaves(mapped.detection.predicate):
        if leaf.column not in held[category]:
            lacking[positive].append("keywords" if leaf.column == ANY_COLUMN else leaf.column)
    event = f"the {category} event of data model {name} has no field for"
    if lacking[True]:
        fields = ", ".join(dict.fromkeys(lacking[True]))
        return f"{event} {fields}: the query would miss the events those tests select ({option})", []
    if lacking[False]:
        fields = ", ".join(dict.fromkeys(lacking[False]))
        return None, [f"{event} {fields}: the negated test holds on every event, so the query is wider"]
    return None, []


def _elastic_gain(leaf: Predicate, field: str) -> str | None:
    """Why an Elastic target's regex matches more than the test (its word boundaries left out)."""
    from .regex import lucene_translatable
    from .targets.elastic import term_regex  # imports pySigma

    if leaf.match is not Match.REGEX:
        return None
    ignore_case = not leaf.case_sensitive
    patterns = [str(v) for v in leaf.values]
    if all(term_regex(p, ignore_case) or lucene_translatable(p, ignore_case) for p in patterns):
        return None
    return (
        f"Lucene's regex dialect has no word boundary (\\b): the regex on {field} is written without "
        "them, which matches more values"
    )


def _elastic_loss(target: str, leaf: Predicate, field: str) -> str | None:
    """Why an Elastic target can miss events this test matches in Sigma, or None."""
    from .regex import lucene_translatable
    from .targets.elastic import predicate_regex, term_regex  # imports pySigma

    if leaf.match is Match.REGEX:
        ignore_case = not leaf.case_sensitive
        if all(
            isinstance(v, str) and (term_regex(v, ignore_case) or lucene_translatable(v, ignore_case, True))
            for v in leaf.values
        ):
            return None  # rewritten into Lucene's dialect (elastic.py); otherwise the target refuses
        return (
            f"Elasticsearch reads the regex on {field} with Lucene's engine (whole-value match, no "
            "`(?i)` flag, no `^`/`$` anchors), so it misses events the Sigma regex matches"
        )
    if (
        target == "eql"
        and leaf.case_sensitive
        and leaf.match in (Match.CONTAINS, Match.STARTSWITH, Match.ENDSWITH)
        and any(
            isinstance(v, str) and v.lower() != v.upper() and not predicate_regex(v, leaf.match, False)
            for v in leaf.values
        )
    ):  # written as a case-sensitive regex (Rmm2SigmaEqlBackend) unless it is too long
        return (
            f"EQL writes a case-sensitive {leaf.match.value} test on {field} with `==`, which does not "
            "expand wildcards, so it misses the events the test matches"
        )
    if (
        target == "eql"
        or leaf.case_sensitive
        or leaf.match
        in (Match.EMPTY, Match.NULL, Match.LT, Match.LTE, Match.GT, Match.GTE, Match.CIDR, Match.FIELDREF)
    ):
        return None
    cased = [v for v in leaf.values if isinstance(v, str) and v.lower() != v.upper()]
    if all(predicate_regex(v, leaf.match) for v in cased):
        return None  # no letters, or rewritten into a case-insensitive regex (elastic.py)
    caseless = field.endswith(".caseless")
    if target == "lucene" and not caseless:
        return f"{field} is a case-sensitive keyword field: other spellings of {cased[0]!r} are missed"
    if target == "esql" and (not caseless or any(v != v.lower() for v in cased)):
        return f"ES|QL compares {field} case-sensitively, so other spellings of {cased[0]!r} are missed"
    return None


def _leaves(node: Node | None, positive: bool = True) -> Iterator[tuple[Predicate, bool]]:
    """Every test with its polarity: False under an odd number of negations."""
    if node is None:
        return
    if isinstance(node, Predicate):
        yield node, positive != node.negated
    elif isinstance(node, Not):
        yield from _leaves(node.item, not positive)
    elif isinstance(node, And | Or):
        for item in node.items:
            yield from _leaves(item, positive)


@cache
def ecs_field_names(category: str, service: str = "") -> Mapping[str, str]:
    """Sigma field -> ECS field in the Elastic targets' pipeline (``targets.ecs_pipeline``) for the
    log source of ``category`` (or of a Windows log ``service`` such as the Security log), read
    from the pipeline."""
    from sigma.rule import SigmaRule

    key, name = ("category", category) if category else ("service", service)
    specs = [table for table in all_specs() if name and table.logsource.get(key) == name]
    if not specs:
        return {}
    fields = sorted(
        {spec.field for table in specs for spec in table.fields.values()}
        | {field for table in specs for field in table.conditions or {}}  # a Windows log's EventID
    )
    detection: dict[str, object] = {f"s{index}": {field: "x"} for index, field in enumerate(fields)}
    rule = SigmaRule.from_dict(
        {
            "title": "ECS field names",
            "logsource": dict(specs[0].logsource),  # as the rules have it: antivirus has no product
            "detection": {**detection, "condition": "1 of s*"},
        }
    )
    ecs_pipeline().apply(rule)
    names: dict[str, str] = {}
    for index, field in enumerate(fields):
        item = rule.detection.detections[f"s{index}"].detection_items[0]
        names[field] = str(getattr(item, "field", field))
    return names
