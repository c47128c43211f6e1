"""The one error type rmm2sigma raises for bad input: it always knows where."""

from __future__ import annotations

import re


class Rmm2SigmaError(Exception):
    """A problem with the user's input, located in the original file when possible.

    ``line`` and ``column`` are 1-based; ``context`` is the offending source line.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
        context: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        self.context = context

    def located(self, source: str, line_offset: int = 0, column_offset: int = 0) -> Rmm2SigmaError:
        """Re-anchor a position found inside an embedded text (e.g. an indented YAML `query:` block)."""
        return type(self)(
            self.message,
            source=source,
            line=None if self.line is None else self.line + line_offset,
            column=None if self.column is None else self.column + column_offset,
            context=self.context,
        )

    def __str__(self) -> str:
        where = printable(self.source or "<input>")
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {one_line(self.message)}"


def one_line(text: str) -> str:
    """Messages are printed one per input in summaries and logs: fold any line breaks."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def printable(text: str) -> str:
    """A path as it can be printed on one line: control characters (a newline in a name) escaped."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def split_location(message: str | None, source: str) -> tuple[int | None, int | None]:
    """The line and column of a message made by ``Rmm2SigmaError.__str__`` for ``source``."""
    prefix = printable(source) + ":"
    if not message or not message.startswith(prefix):
        return None, None
    match = re.match(r"(\d+)(?::(\d+))?: ", message[len(prefix) :])
    if not match:
        return None, None
    return int(match[1]), int(match[2]) if match[2] else None


class KqlSyntaxError(Rmm2SigmaError):
    """The KQL text does not parse."""


class UnsupportedKqlError(Rmm2SigmaError):
    """Valid KQL that has no Sigma counterpart (e.g. a join on a computed column)."""


class InexpressibleKqlError(UnsupportedKqlError):
    """A test or operator a Sigma rule cannot carry, but that only keeps fewer of the rows selected
    so far: the lowering leaves it out (the rule gets wider) instead of refusing the query."""


class InputError(Rmm2SigmaError):
    """The file itself cannot be read (encoding, size, not a query document)."""
