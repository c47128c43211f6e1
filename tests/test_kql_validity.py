"""Our parser and Microsoft's Kusto.Language agree on which queries are syntactically valid KQL.

Kusto.Language runs under node (``npm ci --prefix tools/kusto``); ``tools/kusto/syntax.js`` parses
without a schema, so only what the grammar rejects counts, never an unknown table or column. The
shipped fixtures (``tests/fixtures/kql/valid`` and ``invalid``) cover every construct the parser
reads; the two shared corpora are checked when they sit next to the repository (``../shared``,
or where ``RMM2SIGMA_SHARED`` points).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import corpus
from rmm2sigma.errors import InputError, KqlSyntaxError, UnsupportedKqlError
from rmm2sigma.kql import parse
from rmm2sigma.sources import read_source
from rmm2sigma.verify.kusto_language import kusto_tools_dir

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "kql"
CORPORA = ("azure-sentinel-rmm", "azure-sentinel-defender")
SCRIPT = REPO / "tools" / "kusto" / "syntax.js"

NODE = shutil.which("node")
TOOLS = kusto_tools_dir()
needs_kusto = pytest.mark.skipif(
    NODE is None or TOOLS is None,
    reason="Kusto.Language is not installed (node and `npm ci --prefix tools/kusto` are needed)",
)


def kusto_valid(texts: list[str]) -> list[bool]:
    """Per text, whether Kusto.Language parses it without a syntax error (one node process)."""
    assert NODE is not None and TOOLS is not None
    env = {**os.environ, "NODE_PATH": str(TOOLS / "node_modules")}
    proc = subprocess.run(
        [NODE, str(SCRIPT)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
        check=True,
    )
    errors: list[list[dict[str, object]]] = json.loads(proc.stdout)
    assert len(errors) == len(texts)
    return [not found for found in errors]


def ours_valid(text: str) -> bool:
    try:
        parse(text)
    except KqlSyntaxError:
        return False
    except UnsupportedKqlError:  # valid KQL (`let` statements only) with nothing to convert
        return True
    return True


def disagreements(texts: dict[str, str]) -> dict[str, str]:
    """Names of the texts where the two parsers disagree, with what each said."""
    verdicts = kusto_valid(list(texts.values()))
    found = {}
    for (name, text), kusto in zip(texts.items(), verdicts, strict=True):
        ours = ours_valid(text)
        if ours != kusto:
            found[name] = f"Kusto.Language says {'valid' if kusto else 'invalid'}, we say the opposite"
    return found


@needs_kusto
def test_fixtures_mean_what_their_folder_says_and_both_parsers_agree() -> None:
    texts = {
        path.relative_to(FIXTURES).as_posix(): path.read_text(encoding="utf-8")
        for path in FIXTURES.rglob("*.kql")
    }
    assert sum(name.startswith("valid/") for name in texts) >= 25
    assert sum(name.startswith("invalid/") for name in texts) >= 5
    verdicts = dict(zip(texts, kusto_valid(list(texts.values())), strict=True))
    assert {name for name, valid in verdicts.items() if valid} == {n for n in texts if n.startswith("valid/")}
    assert {name: ours_valid(text) for name, text in texts.items()} == verdicts


@needs_kusto
@pytest.mark.corpus
def test_corpus_validity_agrees_with_kusto_language() -> None:
    """Every readable query of both corpora, in one Kusto.Language run; unreadable files are
    counted, not checked (the reader refuses them before any KQL is seen)."""
    folders = [corpus(name) for name in CORPORA]
    texts: dict[str, str] = {}
    unreadable = []
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")):
            try:
                texts[f"{folder.name}/{path.name}"] = read_source(str(path)).kql
            except InputError:
                unreadable.append(path.name)
    for name in CORPORA:
        assert sum(text.startswith(f"{name}/") for text in texts) >= 150, name
    assert len(unreadable) <= 5, unreadable
    assert disagreements(texts) == {}
