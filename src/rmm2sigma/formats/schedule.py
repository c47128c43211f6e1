"""When a deployed rule runs and how far back it looks, from the source rule or its time window.

Sentinel analytic rules carry ``queryFrequency`` and ``queryPeriod`` (``5m``, ``1h``, ``14d``);
hunting queries carry neither, only a window in the KQL (``Timestamp > ago(5d)``). The period is
the source's ``queryPeriod``, else the window, else the frequency; the frequency is the source's
``queryFrequency``, else one hour (Sentinel's own default for a new scheduled rule). A period
shorter than the frequency would leave events unseen between runs, so it is raised to the
frequency, and a note says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

DEFAULT_FREQUENCY = 3600
_SPAN = re.compile(r"^\s*(\d+)\s*([smhd])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Schedule:
    """Seconds between runs and seconds looked back by each run; plain data (crosses processes)."""

    frequency: int
    period: int
    notes: tuple[str, ...] = ()


def parse_span(text: str) -> int | None:
    """``5m`` / ``1h`` / ``14d`` (Sentinel's form) in seconds; None when not of that form."""
    match = _SPAN.match(text)
    return int(match.group(1)) * _UNITS[match.group(2).lower()] if match else None


def compact(seconds: int) -> str:
    """The largest whole unit: 86400 -> ``1d``, 5400 -> ``90m``."""
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def schedule(frequency: str | None, period: str | None, window: timedelta | None) -> Schedule:
    notes: list[str] = []

    def read(name: str, text: str | None) -> int | None:
        if text is None:
            return None
        seconds = parse_span(text)
        if not seconds:
            notes.append(f"schedule: {name} {text!r} is not of the form 5m/1h/14d; ignored")
        return seconds or None

    every = read("queryFrequency", frequency) or DEFAULT_FREQUENCY
    back = read("queryPeriod", period) or (int(window.total_seconds()) if window else None) or every
    if back < every:
        notes.append(
            f"schedule: the look-back ({compact(back)}) is shorter than the frequency ({compact(every)}); "
            f"raised to {compact(every)} so no event falls between two runs"
        )
        back = every
    return Schedule(every, back, tuple(notes))
