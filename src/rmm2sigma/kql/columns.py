"""The columns a pipeline outputs, followed operator by operator where that is known here."""

from __future__ import annotations

from . import syntax as k
from .lower import Schema


def outputs(side: k.Pipeline, schema: Schema) -> list[str] | None:
    """A side's output columns, or None where an operator makes them unknown here."""
    if not isinstance(side.source, k.TableRef):
        return None
    columns: list[str] | None = list(schema.get(side.source.name, {}))
    for op in side.operators:
        columns = None if columns is None else after(op, columns)
    return columns


def after(op: k.Operator, columns: list[str]) -> list[str] | None:
    """The columns after ``op``, given those before it; None where it is not followed here."""
    if isinstance(op, k.Where | k.Take | k.Sort):
        return columns
    if isinstance(op, k.ProjectRename):
        renames = {a.expr.name: a.name for a in op.columns if isinstance(a.expr, k.Name) and a.name}
        return [renames.get(name, name) for name in columns]
    if isinstance(op, k.ProjectAway):
        away = {name.name for name in op.columns}
        return None if any("*" in name for name in away) else [c for c in columns if c not in away]
    if isinstance(op, k.Summarize):
        assignments: tuple[k.Assignment, ...] = (*op.by, *op.aggregates)
    elif isinstance(op, k.Extend | k.Project | k.Distinct):
        assignments = op.columns
    else:
        return None
    named = [output_column(assignment) for assignment in assignments]
    if None in named:
        return None
    added = [name for name in named if name]
    return [*columns, *(name for name in added if name not in columns)] if isinstance(op, k.Extend) else added


def output_column(assignment: k.Assignment) -> str | None:
    """The column an assignment outputs: its name, or the column it is or bins (``by DeviceId``,
    ``by bin(Timestamp, 1h)``: Kusto names both after the column)."""
    expr = assignment.expr
    if isinstance(expr, k.Call) and expr.function == "bin" and expr.args:
        expr = expr.args[0]
    return assignment.name or (expr.name if isinstance(expr, k.Name) else None)
