"""``yaml_text.dump_yaml`` writes what ruamel writes with rmm2sigma's settings, byte for byte, and
does it without ruamel for the documents rmm2sigma writes (its speed is the point)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rmm2sigma import yaml_text
from rmm2sigma.yaml_text import Literal, dump_yaml, ruamel_dump

# pieces that each decide a style: indicators, quotes, escapes, document markers, YAML 1.2
# look-alikes (true, 0x1f, 2020-01-02, ~), Unicode, the line breaks ruamel is left with
PIECES = st.sampled_from(
    [
        *"abXZ09 -_.:#'\"?*&!|>%@`,[]{}~=<\\/\t\r\n\x00\x07\x1b\xa0é€😀+eE\x85\u2028\ufeff",
        *("true", "null", "0x", "0o", "---", "...", ": ", " #", "yes", "1_0", "2020-01-02", ".nan"),
    ]
)
TEXT = st.lists(PIECES, max_size=8).map("".join)
SCALAR = st.one_of(TEXT, st.none(), st.booleans(), st.integers(), st.dates(), st.just([]), st.just({}))
TREE = st.recursive(
    st.one_of(SCALAR, TEXT.map(Literal)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(TEXT, TREE, min_size=1, max_size=5))
@example({"a": [{"b": [None, 1]}, "x" * 5000, ["nested"]], "q": Literal("  indented\n\n")})
def test_the_same_text_as_ruamel(document: dict[str, Any]) -> None:
    assert dump_yaml(document) == ruamel_dump(document)


def test_rule_documents_do_not_need_ruamel(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(document: Any) -> str:
        raise AssertionError("left to ruamel")

    monkeypatch.setattr(yaml_text, "ruamel_dump", refuse)
    rule = {
        "title": "Remote Tool - Create Process",
        "id": "0b0cd37c-1d40-4032-ac16-4ada687b3a49",
        "related": [{"id": "1b0cd37c-1d40-4032-ac16-4ada687b3a49", "type": "similar"}],
        "references": ["https://example.com/a?b=c#d"],
        "date": dt.date(2026, 11, 23),
        "tags": ["attack.command-and-control", "attack.t1219"],
        "detection": {
            "selection": {"Image|endswith": ["\\tool.exe", "*x?"], "CommandLine|re": "^a: b$'", "Port": 443},
            "filter_main_empty": {"User": ["", None]},
            "condition": "selection and not filter_main_empty",
        },
        "falsepositives": ["Unknown"],
    }
    sentinel = {"description": Literal("Finds it.\n\nrmm2sigma fidelity: widened\n"), "tactics": []}
    assert dump_yaml(rule).startswith("title: Remote Tool - Create Process\n")
    assert "description: |\n    Finds it.\n\n    rmm2sigma" in dump_yaml(sentinel)
