"""Shorthands of KQL rewritten as the plain query they stand for, before lowering.

* ``search [kind=case_sensitive] [in (T, U)] predicate`` is, by Kusto's definition, ``union T, U |
  where predicate'``, where a bare term ``"x"`` is ``* has "x"``, ``Column:"x"`` is ``Column has
  "x"``, and a ``*`` at the ends of a term makes it ``hasprefix``/``hassuffix``/``contains``.
* ``find in (T, U) where a or b [project ...]`` is, as Kusto documents it, each table filtered with
  the alternatives of the predicate that read its columns, and a table none of them reads left out:
  ``union (T | where a), (U | where b)``. An alternative reading columns a table has and lacks has
  no documented meaning there: refused. ``project`` only shapes the output.
* ``let V = view () { T | where ... };`` is a tabular ``let`` that a query reads by name: ``V``.
  Its own ``let`` statements move before it (unless a name is already taken: then it stays a view,
  which the lowering refuses as a table it cannot see).

Rewriting them here lets the union split and the lowering handle them like any other query (one
Sigma rule per table, keywords for a test on every column); the new nodes keep the positions of
what the user wrote, so messages still point at it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import replace
from fnmatch import fnmatchcase

from . import syntax as k
from .printer import to_kql

# a term's leading/trailing `*` -> the operator it means (case-insensitive spelling)
_TERM_OPERATORS = {(False, False): "has", (False, True): "hasprefix", (True, False): "hassuffix"}


def desugared(query: k.Query, schema: Mapping[str, Mapping[str, str]]) -> k.Query:
    """The query with its views, ``search`` and ``find`` rewritten; else itself."""
    return _without_find(_without_search(_without_views(query)), schema)


def _without_views(query: k.Query) -> k.Query:
    lets = _plain_lets(query.lets, set())
    return query if lets == query.lets else replace(query, lets=lets)


def _plain_lets(lets: tuple[k.Let, ...], taken: set[str]) -> tuple[k.Let, ...]:
    """``lets`` with each view a tabular ``let``, its own lets (views too) moved before it."""
    taken = taken | {let.name for let in lets}
    out: list[k.Let] = []
    for let in lets:
        view = let.value
        plain = isinstance(view, k.FunctionDef) and view.view and not view.params and not view.body.earlier
        if isinstance(view, k.FunctionDef) and plain and not {i.name for i in view.body.lets} & taken:
            inner = _plain_lets(view.body.lets, taken)
            taken |= {i.name for i in inner}
            out.extend((*inner, replace(let, value=view.body.body)))
        else:
            out.append(let)
    return tuple(out)


def _without_search(query: k.Query) -> k.Query:
    """The query with its ``search`` (as the source or as an operator) rewritten; else itself."""
    body = query.body
    operators = tuple(_where(op) if isinstance(op, k.Search) else op for op in body.operators)
    source = body.source
    if isinstance(source, k.Search):
        if not source.tables:
            raise k.refusal(
                "`search` without `in (...)` reads every table, which no Sigma rule can: "
                "name the tables with `search in (DeviceProcessEvents, ...)`",
                source,
            )
        tables = tuple(k.Pipeline(k.TableRef(name, source.pos), (), source.pos) for name in source.tables)
        operators = (_where(source), *operators)
        single = len(tables) == 1 and "*" not in source.tables[0]
        new_source: k.Source = tables[0].source if single else k.Union(tables, (), source.pos)
        return replace(query, body=k.Pipeline(new_source, operators, body.pos))
    if operators == body.operators:
        return query
    return replace(query, body=replace(body, operators=operators))


def _without_find(query: k.Query, schema: Mapping[str, Mapping[str, str]]) -> k.Query:
    """The query with its source ``find in (T, U) where ...`` rewritten as the union it reads."""
    find = query.body.source
    if not isinstance(find, k.Find):
        return query
    if not find.tables:
        raise k.refusal("`find` without `in (...)` reads every table, which no Sigma rule can", find)
    # a wildcard names the schema's tables it matches, with case as union's do (``union._expanded``)
    tables = [
        name
        for table in find.tables
        for name in sorted(known for known in schema if fnmatchcase(known, table)) or [table]
    ]
    read = {name for table in tables for name in schema.get(table, {})}  # a column of some table
    alternatives = [(alt, set(k.names(alt)) & read) for alt in k.chain(find.predicate, "or")]
    used = set().union(*(columns for _, columns in alternatives))
    branches: list[k.Pipeline] = []
    for table in tables:
        columns = set(schema.get(table, read))  # a table the schema lacks: the lowering names it
        for alt, reads in alternatives:
            if reads & columns and not reads <= columns:
                raise k.refusal(
                    f"`find`: `{to_kql(alt)}` reads columns {table} has and columns it lacks, and "
                    "Kusto does not say how find filters such a table",
                    alt,
                )
        kept = [alt for alt, reads in alternatives if reads <= columns]
        if kept and (used & columns or not used):  # a table none of the columns read is left out
            where = k.Where(functools.reduce(lambda a, b: k.Binary("or", a, b, b.pos), kept), find.pos)
            branches.append(k.Pipeline(k.TableRef(table, find.pos), (where,), find.pos))
    if not branches:
        raise k.refusal("`find`: no table it searches has a column its predicate reads", find)
    if len(branches) == 1:
        (branch,) = branches
        operators = (*branch.operators, *query.body.operators)
        return replace(query, body=k.Pipeline(branch.source, operators, query.body.pos))
    source_column = dict(find.params).get("withsource", "source_")  # find always names the table
    union = k.Union(tuple(branches), (("withsource", source_column),), find.pos)
    return replace(query, body=k.Pipeline(union, query.body.operators, query.body.pos))


def _where(search: k.Search) -> k.Where:
    case_sensitive = dict(search.params).get("kind") == "case_sensitive"
    return k.Where(_predicate(search.predicate, case_sensitive), search.pos)


def _predicate(expr: k.Expr, case_sensitive: bool) -> k.Expr:
    """A search predicate in ``where`` terms: bare terms over every column, ``:`` as ``has``."""
    if isinstance(expr, k.StringLit):
        return _term(k.Name("*", expr.pos), expr, case_sensitive)
    if isinstance(expr, k.Binary) and expr.op in ("and", "or"):
        return replace(
            expr, left=_predicate(expr.left, case_sensitive), right=_predicate(expr.right, case_sensitive)
        )
    if isinstance(expr, k.Binary) and expr.op == ":" and isinstance(expr.right, k.StringLit):
        return _term(expr.left, expr.right, case_sensitive)
    if isinstance(expr, k.Call) and expr.function == "not" and len(expr.args) == 1:
        return replace(expr, args=(_predicate(expr.args[0], case_sensitive),))
    return expr


def _term(column: k.Expr, term: k.StringLit, case_sensitive: bool) -> k.Expr:
    text = term.value
    starts, ends = text.startswith("*") and len(text) > 1, text.endswith("*") and len(text) > 1
    needle = text[1 if starts else 0 : len(text) - 1 if ends else len(text)]
    if "*" in needle:  # `"Lab*PC"`: a regex over terms
        pattern = r"\b" + ".*".join(map(re.escape, needle.split("*"))) + r"\b"
        regex = replace(term, value=pattern if case_sensitive else "(?i)" + pattern)
        return k.Binary("matches regex", column, regex, column.pos)
    op = "contains" if starts and ends else _TERM_OPERATORS[(starts, ends)]
    return k.Binary(op + "_cs" if case_sensitive else op, column, replace(term, value=needle), column.pos)
