"""Syntax tree back to KQL text, such that ``parse(to_kql(tree)) == tree``.

Parentheses are not kept in the tree, so the printer adds them wherever precedence or left
associativity needs them, and always around an ``and`` inside an ``or`` (or the reverse), which
is easier to read. It works from an explicit stack rather than by recursion, so the 5000-deep
``or`` chains the parser accepts print as easily as they parse.
"""

from __future__ import annotations

import re
from typing import cast

from . import syntax as k
from .parser import KEYWORDS
from .syntax import (
    ArrayLit,
    Assignment,
    Between,
    Binary,
    BoolLit,
    Call,
    Datatable,
    Distinct,
    Expr,
    Extend,
    Index,
    Let,
    Name,
    NumberLit,
    Operator,
    Pipeline,
    Project,
    Query,
    SetOp,
    StringLit,
    SubQuery,
    Summarize,
    TableRef,
    Take,
    TimespanLit,
    Unary,
    Where,
)

__all__ = ["to_kql"]

Node = (
    Query
    | Let
    | Pipeline
    | k.Source
    | Operator
    | Assignment
    | Expr
    | k.FunctionDef
    | k.FunctionParam
    | k.SortKey
    | k.TopNestedLevel
    | k.ExpandColumn
    | k.ParseColumn
    | k.SeriesAggregate
    | k.ForkBranch
    | k.ScanStep
    | k.SetOption
    | k.DeclareParameters
)

# Binding strength, loosest first; a child binding looser than its slot needs parentheses.
_OR, _AND, _PREDICATE, _SUM, _PRODUCT, _UNARY, _POSTFIX = range(1, 8)
_STRING_OPS = {
    f"{negation}{word}{suffix}"
    for negation in ("", "!")
    for word in ("has", "contains", "startswith", "endswith", "hasprefix", "hassuffix")
    for suffix in ("", "_cs")
}
_BINDING = {
    "or": _OR,
    "and": _AND,
    **dict.fromkeys(("==", "!=", "=~", "!~", "<", "<=", ">", ">="), _PREDICATE),
    **dict.fromkeys(("matches regex", ":", *_STRING_OPS), _PREDICATE),
    **dict.fromkeys(("+", "-"), _SUM),
    **dict.fromkeys(("*", "/", "%"), _PRODUCT),
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WILDCARD = re.compile(r"[A-Za-z0-9_]*\*[A-Za-z0-9_*]*")
_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
_TO_ESCAPE = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")

# A printing step: text, or a node to print, with parentheses when the flag is set.
Part = str | tuple[Node, bool]


def to_kql(node: Node) -> str:
    """Print a query, a pipeline, an operator or an expression as KQL."""
    out: list[str] = []
    stack: list[Part] = [(node, False)]
    while stack:
        part = stack.pop()
        if isinstance(part, str):
            out.append(part)
            continue
        child, parenthesise = part
        parts = _parts(child)
        if parenthesise:
            parts = ["(", *parts, ")"]
        stack.extend(reversed(parts))
    return "".join(out)


def _binding(expr: Expr) -> int:
    if isinstance(expr, Binary):
        if expr.op not in _BINDING:
            raise ValueError(f"cannot print the operator {expr.op!r}")
        return _BINDING[expr.op]
    if isinstance(expr, SetOp | Between):
        return _PREDICATE
    if isinstance(expr, Unary):
        return _UNARY
    return _POSTFIX


def _at_least(expr: Expr, binding: int) -> Part:
    return (expr, _binding(expr) < binding)


def _logical(expr: Binary) -> list[Part]:
    """``and``/``or``: the left side may continue the same chain; any other mix is parenthesised."""
    left_continues = isinstance(expr.left, Binary) and expr.left.op == expr.op
    left = (expr.left, not left_continues and _binding(expr.left) < _PREDICATE)
    return [left, f" {expr.op} ", _at_least(expr.right, _PREDICATE)]


def _binary(expr: Binary) -> list[Part]:
    if expr.op in ("and", "or"):
        return _logical(expr)
    binding = _binding(expr)
    # Comparisons do not chain; arithmetic is left-associative.
    left = binding + 1 if binding == _PREDICATE else binding
    return [_at_least(expr.left, left), f" {expr.op} ", _at_least(expr.right, binding + 1)]


def _list(items: tuple[Node, ...], separator: str = ", ") -> list[Part]:
    parts: list[Part] = []
    for item in items:
        if parts:
            parts.append(separator)
        parts.append((item, False))
    return parts


def _pipeline(pipeline: Pipeline, separator: str) -> list[Part]:
    parts: list[Part] = [(pipeline.source, False)]
    for operator in pipeline.operators:
        parts += [separator, (operator, False)]
    return parts


def _parts(node: Node) -> list[Part]:
    match node:
        case Query(lets=lets, body=body, earlier=earlier, settings=settings):
            parts: list[Part] = []
            statements: tuple[k.SetOption | k.DeclareParameters | Let | Pipeline, ...] = (
                *settings,
                *lets,
                *earlier,
            )
            for statement in statements:
                parts += [(statement, False), ";\n"]
            return [*parts, (body, False)]
        case k.SetOption(name=name, value=value):
            parts = [f"set {_name(name)}"]
            return parts if value is None else [*parts, " = ", (value, False)]
        case k.DeclareParameters(params=params):
            return ["declare query_parameters(", *_list(params), ")"]
        case Let(name=name, value=value):
            return [f"let {_name(name)} = ", (value, False)]
        case k.FunctionDef(params=params, body=body, view=view):
            head: list[Part] = ["view()"] if view else ["(", *_list(params), ")"]
            return [*head, " {\n", (body, False), "\n}"]
        case k.FunctionParam(name=name, type_name=type_name, default=None):
            return [f"{_name(name)}:{type_name}"]
        case k.FunctionParam(name=name, type_name=type_name, default=default) if default is not None:
            return [f"{_name(name)}:{type_name} = ", (default, False)]
        case Pipeline():
            return _pipeline(node, "\n| ")
        case TableRef(name=name):
            return [_name(name, wildcard=True)]
        case Datatable(columns=columns, values=values):
            parts = [f"datatable({_columns(columns)})["]
            for start in range(0, len(values), len(columns)):
                parts += ["\n    ", *_list(values[start : start + len(columns)])]
                parts.append("," if start + len(columns) < len(values) else "\n")
            return [*parts, "]"]
        case Where(predicate=predicate):
            return ["where ", (predicate, False)]
        case Summarize(aggregates=aggregates, by=by):
            parts = ["summarize", " " if aggregates else "", *_list(aggregates)]
            return [*parts, " by ", *_list(by)] if by else parts
        case Project(columns=columns):
            return ["project ", *_list(columns)]
        case Extend(columns=columns):
            return ["extend ", *_list(columns)]
        case Distinct(columns=columns):
            return ["distinct ", *_list(columns)]
        case Take(count=count):
            return [f"take {count}"]
        case k.Externaldata(columns=columns, urls=urls, options=options):
            parts = [f"externaldata({_columns(columns)})[", *_list(urls), "]"]
            return [*parts, " with (", *_list(options), ")"] if options else parts
        case k.Print(columns=columns):
            return ["print ", *_list(columns)]
        case k.Range(name=name, start=start, stop=stop, step=step):
            return [
                f"range {_name(name)} from ",
                (start, False),
                " to ",
                (stop, False),
                " step ",
                (step, False),
            ]
        case k.Render(visualization=visualization, options=options):
            parts = [f"render {visualization}"]
            return [*parts, " with (", *_list(options), ")"] if options else parts
        case k.Sort(by=by, params=params):
            return [f"sort{_options(params)} by ", *_list(by)]
        case k.SortKey(expr=expr, order=order, nulls=nulls):
            return [(expr, False), f" {order}" if order else "", f" nulls {nulls}" if nulls else ""]
        case k.Top(count=count, by=by, params=params):
            return [f"top{_options(params)} ", (count, False), " by ", (by, False)]
        case k.TopNested(levels=levels):
            return _list(levels)
        case k.TopNestedLevel(count=count, of=of, others=others, by=by, order=order):
            parts = ["top-nested "]
            parts += [(count, False), " "] if count is not None else []
            parts += ["of ", (of, False)]
            parts += [" with others = ", (others, False)] if others is not None else []
            return [*parts, " by ", (by, False), f" {order}" if order else ""]
        case (
            k.Join(kind=kind, right=right, on=on, params=params)
            | k.Lookup(kind=kind, right=right, on=on, params=params)
        ):
            spelled = _options(((("kind", kind),) if kind else ()) + params)
            parts = [f"{node.keyword}{spelled} ", *_table(right)]
            return [*parts, " on ", *_list(on)] if on else parts
        case k.Union(tables=tables, params=params):
            parts = [f"union{_options(params)} "]
            for table in tables:
                parts += [*([", "] if len(parts) > 1 else []), *_table(table)]
            return parts
        case k.MvExpand(columns=columns, limit=limit, params=params):
            parts = [f"mv-expand{_options(params)} ", *_list(columns)]
            return parts if limit is None else [*parts, " limit ", (limit, False)]
        case k.MvApply(columns=columns, operators=operators, limit=limit, params=params):
            parts = [f"mv-apply{_options(params)} ", *_list(columns)]
            parts += [] if limit is None else [" limit ", (limit, False)]
            return [*parts, " on (", *_list(operators, " | "), ")"]
        case k.ExpandColumn(name=name, expr=expr, to_type=to_type):
            parts = [f"{_name(name)}=" if name is not None else "", (expr, False)]
            return [*parts, f" to typeof({to_type})"] if to_type else parts
        case k.Parse(source=source, pattern=pattern, params=params):
            parts = [f"{node.keyword}{_options(params)} ", (source, False), " with"]
            for part in pattern:
                parts += [" ", (part, False)]
            return parts
        case k.ParseColumn(name=name, type_name=type_name):
            return [_name(name) + (f":{type_name}" if type_name else "")]
        case k.ProjectAway(columns=patterns) | k.ProjectKeep(columns=patterns):
            return [f"{node.keyword} ", ", ".join(_name(column.name, wildcard=True) for column in patterns)]
        case k.ProjectRename(columns=columns):
            return ["project-rename ", *_list(columns)]
        case k.ProjectReorder(columns=sort_keys):
            keys = (
                _name(cast(Name, key.expr).name, wildcard=True) + (f" {key.order}" if key.order else "")
                for key in sort_keys
            )
            return ["project-reorder ", ", ".join(keys)]
        case k.Search(tables=tables, predicate=predicate, params=params):
            scope = f" in ({', '.join(_name(table, wildcard=True) for table in tables)})" if tables else ""
            return [f"search{_options(params)}{scope} ", (predicate, False)]
        case k.Find(tables=tables, predicate=predicate, project=project, project_smart=smart, params=params):
            scope = f" in ({', '.join(_name(table, wildcard=True) for table in tables)})" if tables else ""
            parts = [f"find{_options(params)}{scope} where ", (predicate, False)]
            if smart:
                return [*parts, " project-smart"]
            return [*parts, " project ", *_list(project)] if project else parts
        case k.Scan(steps=steps, order_by=order_by, partition_by=partition_by, declare=declare):
            parts = [f"scan{_options(node.params)}"]
            parts += [" order by ", *_list(order_by)] if order_by else []
            parts += [" partition by ", *_list(partition_by)] if partition_by else []
            parts += [" declare (", *_list(declare), ")"] if declare is not None else []
            return [*parts, " with (", *_list(steps, " "), ")"]
        case k.ScanStep(name=name, predicate=predicate, assignments=assignments, output=output):
            parts = [
                f"step {_name(name)}" + (f" output={output}" if output else "") + ": ",
                (predicate, False),
            ]
            return [*parts, " => ", *_list(assignments), ";"] if assignments else [*parts, ";"]
        case k.Evaluate(plugin=plugin, params=params, schema=schema, extends_input=extends_input):
            parts = [f"evaluate{_options(params)} ", (plugin, False)]
            if schema is None:
                return parts
            declared = ", ".join((["*"] if extends_input else []) + ([_columns(schema)] if schema else []))
            return [*parts, f" : ({declared})"]
        case k.MakeSeries(aggregates=aggregates, on=on, start=start, stop=stop, step=step, by=by):
            parts = [f"make-series{_options(node.params)} ", *_list(aggregates), " on ", (on, False)]
            if node.in_range:
                parts += [" in range(", *_list((cast(Expr, start), cast(Expr, stop), step)), ")"]
            else:
                parts += [" from ", (start, False)] if start is not None else []
                parts += [" to ", (stop, False)] if stop is not None else []
                parts += [" step ", (step, False)]
            return [*parts, " by ", *_list(by)] if by else parts
        case k.SeriesAggregate(aggregate=aggregate, default=default):
            parts = [(aggregate, False)]
            return parts if default is None else [*parts, " default = ", (default, False)]
        case k.Fork(branches=branches):
            return ["fork ", *_list(branches, " ")]
        case k.ForkBranch(name=name, operators=operators):
            prefix = "" if name is None else f"{_name(name)} = "
            return [f"{prefix}(", *_list(operators, " | "), ")"]
        case k.Facet(columns=names, operators=operators):
            parts = ["facet by ", *_list(names)]
            return [*parts, " with (", *_list(operators, " | "), ")"] if operators else parts
        case k.Reduce(by=reduced, options=options, params=params):
            parts = [f"reduce{_options(params)} by ", (reduced, False)]
            return [*parts, " with ", *_list(options)] if options else parts
        case k.SampleDistinct(count=count, of=of, params=params):
            return [f"sample-distinct{_options(params)} ", (count, False), " of ", (of, False)]
        case k.TopHitters(count=count, of=of, by=weight):
            parts = ["top-hitters ", (count, False), " of ", (of, False)]
            return parts if weight is None else [*parts, " by ", (weight, False)]
        case k.ParseKv(source=source, columns=keys, options=options):
            parts = ["parse-kv ", (source, False), f" as ({_columns(keys)})"]
            return [*parts, " with (", *_list(options), ")"] if options else parts
        case k.Invoke(function=function):
            return ["invoke ", (function, False)]
        case k.Partition(by=by, operators=operators, params=params):
            return [f"partition{_options(params)} by ", (by, False), " (", *_list(operators, " | "), ")"]
        case k.Count() | k.GetSchema() | k.Consume():
            return [node.keyword]
        case k.Serialize(columns=columns):
            return ["serialize", " " if columns else "", *_list(columns)]
        case k.As(name=name, params=params):
            return [f"as{_options(params)} {_name(name)}"]
        case k.Sample(count=count):
            return ["sample ", (count, False)]
        case k.TupleAssignment(names=names, expr=expr):
            return [f"({', '.join(_name(name) for name in names)})=", (expr, False)]
        case Assignment(name=None, expr=expr):
            return [(expr, False)]
        case Assignment(name=str(name), expr=expr):
            return [f"{_name(name)}=", (expr, False)]
        case StringLit(value=value, verbatim=verbatim):
            return [_string(value, verbatim)]
        case NumberLit(value=value):
            return [str(value)]
        case TimespanLit(text=text):
            return [text]
        case BoolLit(value=value):
            return ["true" if value else "false"]
        case Name(name=name):
            return [_name(name, wildcard=name == "*")]
        case Call(function="typeof", args=(Name(name=type_name),)):
            return [f"typeof({type_name})"]
        case Call(function=function, args=args):
            return [f"{function}(", *_list(args), ")"]
        case k.Member(target=target, name=name):
            return [_at_least(target, _POSTFIX), f".{_name(name)}"]
        case k.TypedLit(type_name=type_name, text=text):
            return [f"{type_name}({text})"]
        case k.NullLit():
            return ["null"]
        case k.ObjectLit(items=items):
            parts = ["{"]
            for index, (key, value) in enumerate(items):
                parts += [", " if index else "", _string(key, verbatim=False), ": ", (value, False)]
            return [*parts, "}"]
        case ArrayLit(items=items):
            return ["[", *_list(items), "]"]
        case Unary(op=op, operand=operand):
            return [op, _at_least(operand, _UNARY)]
        case Binary():
            return _binary(node)
        case SetOp(op=op, left=left, items=items):
            return [_at_least(left, _SUM), f" {op} (", *_list(items), ")"]
        case Between(left=left, low=low, high=high, negated=negated):
            op = "!between" if negated else "between"
            bounds = [_at_least(low, _SUM), " .. ", _at_least(high, _SUM)]
            return [_at_least(left, _SUM), f" {op} (", *bounds, ")"]
        case Index(target=target, index=index):
            return [_at_least(target, _POSTFIX), "[", (index, False), "]"]
        case SubQuery(pipeline=pipeline):
            return ["(", *_pipeline(pipeline, " | "), ")"]
    raise TypeError(f"not a KQL syntax node: {node!r}")


def _name(name: str, wildcard: bool = False) -> str:
    """A bare identifier when the lexer would read it back as one, else ``['...']``; ``wildcard``
    where a ``*`` pattern may stand (``project-away``, ``union``)."""
    if (_IDENTIFIER.fullmatch(name) and name not in KEYWORDS) or re.fullmatch(r"\$\w*", name, re.ASCII):
        return name
    if wildcard and _WILDCARD.fullmatch(name):
        return name
    return f"[{_string(name, verbatim=False)}]"


def _columns(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{_name(column)}:{type_name}" for column, type_name in columns)


def _options(options: tuple[k.Option, ...]) -> str:
    return "".join(f" {name}={value}" for name, value in options)


def _table(pipeline: Pipeline) -> list[Part]:
    """A ``join``/``union`` side: a bare table name, else the pipeline in parentheses."""
    if not pipeline.operators and isinstance(pipeline.source, TableRef):
        return [(pipeline.source, False)]
    return ["(", *_pipeline(pipeline, " | "), ")"]


def _string(value: str, verbatim: bool) -> str:
    if verbatim:
        if "\n" in value or "\r" in value:
            raise ValueError("a verbatim string cannot hold a line break")
        return "@'" + value.replace("'", "''") + "'"
    return "'" + _TO_ESCAPE.sub(lambda match: _ESCAPES[match.group()], value) + "'"
