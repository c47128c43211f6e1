"""``report.html``: one self-contained page (inline CSS, no script, no external asset).

Every text from the input is HTML-escaped, and a Content-Security-Policy forbids scripts and any
load from outside, so the page is inert whatever a query holds and works offline. Code boxes wrap
long lines (a minified query stays readable) and wide tables scroll in their own box, so nothing
widens the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from . import LABELS, label_of, rules, target_names, target_rows

_CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:1rem 1.5rem;
max-width:100rem;color:#1d232a;background:#fbfbfc}
h1{font-size:1.5rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d5d9de}
h3{font-size:1.05rem;margin:0 0 .4rem;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5rem 0}
th,td{border:1px solid #d5d9de;padding:.2rem .55rem;text-align:left;vertical-align:top}
th{background:#eef1f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.t{overflow-wrap:anywhere;min-width:16rem}
.rule{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:.9rem 1rem;margin:1.2rem 0}
.meta{margin:.2rem 0 .5rem;color:#4a5560;overflow-wrap:anywhere}
.meta code{font-size:.85rem}
ul.notes{margin:.3rem 0 .6rem;padding-left:1.2rem;overflow-wrap:anywhere}
.panes{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,30rem),1fr));gap:.7rem}
.pane{min-width:0;border:1px solid #d5d9de;border-radius:4px;background:#f6f8fa}
.pane h4{margin:0;padding:.3rem .6rem;font-size:.85rem;border-bottom:1px solid #d5d9de;background:#eef1f4}
pre{margin:0;padding:.5rem .6rem;overflow:auto;max-height:32rem;white-space:pre-wrap;overflow-wrap:anywhere;
font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.label{display:inline-block;padding:0 .45rem;border-radius:9px;font-size:.8rem;font-weight:600}
.exact{background:#d8f3dc;color:#1b5e20}.widened{background:#fff3c4;color:#7a5b00}
.approximate{background:#ffe0c2;color:#8a3b00}
.narrowed,.diverged,.failed{background:#ffd6d6;color:#9b1c1c}
.error{color:#9b1c1c;overflow-wrap:anywhere}
"""

_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(report: Mapping[str, Any], sigma_texts: Mapping[str, str]) -> str:
    summary = report["summary"]
    targets = target_names(report)
    all_rules = rules(report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>rmm2sigma report</title><style>{_CSS}</style></head><body>",
        "<h1>rmm2sigma conversion report</h1>",
        '<h2 id="summary">Summary</h2>',
        _table(
            ["inputs", "converted", "partial", "failed", "rules"],
            [[_num(summary[k]) for k in ("inputs", "converted", "partial", "failed", "rules")]],
        ),
        "<p>Per target (<code>sigma</code> is the rule itself):</p>",
    ]
    columns = ["converted", *LABELS, "failed"]
    parts.append(
        _table(
            ["target", *columns],
            [
                [f"<td>{escape(t)}</td>", *(_num(row[c]) for c in columns)]
                for t, row in target_rows(report).items()
            ],
        )
    )
    if all_rules:
        parts.append('<h2 id="rules">Rules</h2>')
        parts.append(
            _table(
                ["#", "rule", *targets],
                [
                    [
                        _num(n),
                        f'<td class="t"><a href="#rule-{n}">{escape(rule["title"])}</a></td>',
                        *(f"<td>{_badge(rule, t)}</td>" for t in targets),
                    ]
                    for n, (_, rule) in enumerate(all_rules, 1)
                ],
            )
        )
    for n, (entry, rule) in enumerate(all_rules, 1):
        parts.append(_rule(n, entry, rule, targets, sigma_texts.get(rule["sigma"], "")))
    problems = [entry for entry in report["inputs"] if entry["status"] != "converted"]
    if problems:
        parts.append('<h2 id="failed">Failed and partial inputs</h2><ul>')
        parts += [
            f'<li><span class="label failed">{escape(e["status"])}</span> '
            f'<span class="error">{escape(e["error"] or "")}</span></li>'
            for e in problems
        ]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _rule(n: int, entry: Mapping[str, Any], rule: Mapping[str, Any], targets: list[str], yaml: str) -> str:
    panes = [_pane("source KQL", rule.get("kql", "")), _pane(f"Sigma {_badge(rule, 'sigma')}", yaml)]
    for target in targets:
        if target in rule["queries"]:
            panes.append(_pane(f"{escape(target)} {_badge(rule, target)}", rule["queries"][target]))
        elif target in rule["target_errors"]:
            panes.append(
                f'<div class="pane"><h4>{escape(target)} <span class="label failed">failed</span></h4>'
                f'<p class="error">{escape(rule["target_errors"][target])}</p></div>'
            )
    notes = "".join(f"<li>{escape(note)}</li>" for note in rule["notes"])
    return (
        f'<section class="rule" id="rule-{n}"><h3>{n}. {escape(rule["title"])}</h3>'
        f'<div class="meta">{_badge(rule, None)} source <code>{escape(entry["source"])}</code>'
        f" · Sigma file <code>{escape(rule['sigma'])}</code> · id <code>{escape(rule['id'])}</code></div>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + f'<div class="panes">{"".join(panes)}</div></section>'
    )


def _pane(heading: str, code: str) -> str:
    """``heading`` is markup already; ``code`` is escaped here."""
    return f'<div class="pane"><h4>{heading}</h4><pre>{escape(code.rstrip())}</pre></div>'


def _badge(rule: Mapping[str, Any], target: str | None) -> str:
    if target is not None and target in rule["target_errors"]:
        label = "failed"
    elif target is None or target == "sigma" or target in rule["queries"]:
        label = rule["fidelity"] if target is None else label_of(rule, target)
    else:
        return ""
    return f'<span class="label {escape(label)}">{escape(label)}</span>'


def _num(value: int) -> str:
    return f'<td class="n">{value}</td>'


def _table(header: list[str], body: list[list[str]]) -> str:
    """``body`` cells are markup already (``<td>`` elements)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    rows = "".join(f"<tr>{''.join(cells)}</tr>" for cells in body)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
