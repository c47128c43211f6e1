"""What the command line shows a person: the offending source line under a failure, and progress.

The source line is read back from the input (or the kept stdin bytes) the same way the converter
decoded it, so the line and column of a message point into the text shown here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from .errors import Rmm2SigmaError, printable
from .sources import MAX_INPUT_BYTES, decode, read_bounded

WINDOW = 100
"""Characters of a long line shown around the column: a minified query stays one screen wide."""

PROGRESS_MIN_INPUTS = 5
"""Fewer inputs finish before a progress bar would be worth drawing."""


def source_excerpt(entry: Mapping[str, Any], stdin: bytes | None = None) -> list[str]:
    """The offending line of a failed input, indented, with a caret under the column; ``[]`` when
    the message has no line or the line cannot be read back."""
    line, column = entry.get("line"), entry.get("column")
    if line is None:
        return []
    try:
        data = stdin if entry["source"] == "-" else read_bounded(entry["source"], MAX_INPUT_BYTES)
    except Rmm2SigmaError:
        return []
    if data is None:
        return []
    try:
        text = decode(data, entry["source"])
    except Rmm2SigmaError:  # the failure was the encoding itself: show what decodes
        text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return []
    return caret(lines[line - 1], column, line)


def caret(text: str, column: int | None, number: int) -> list[str]:
    """``text`` as ``  12 | ...`` and, when ``column`` is known, a ``^`` under that character.

    Control characters are shown escaped and tabs kept, so the caret lines up in a terminal.
    """
    start = 0
    if column is not None and len(text) > WINDOW:
        start = max(0, min(column - 1 - WINDOW // 2, len(text) - WINDOW))
    shown = text[start : start + WINDOW] if len(text) > WINDOW else text
    before = "…" if start else ""
    after = "…" if start + WINDOW < len(text) else ""
    gutter = f"{number:>5} | "
    lines = [gutter + before + _visible(shown) + after]
    if column is not None:
        prefix = shown[: max(0, column - 1 - start)]
        pad = "".join("\t" if c == "\t" else " " * len(_visible(c)) for c in prefix)
        lines.append(" " * (len(gutter) - 2) + "| " + " " * len(before) + pad + "^")
    return lines


def _visible(text: str) -> str:
    return "".join(c if c == "\t" else printable(c) for c in text)


class Advance(Protocol):
    def __call__(self, result: object) -> None: ...


@contextmanager
def progress(total: int, enabled: bool) -> Iterator[Advance | None]:
    """A rich progress bar on stderr for ``total`` inputs, or ``None`` when it is not wanted.

    Rich is imported only here: ``--help`` and small runs never pay for it.
    """
    if not enabled or total < PROGRESS_MIN_INPUTS:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("convert", total=total)
        yield lambda _result: bar.advance(task)
