"""The KQL front end: ``parse`` text to a syntax tree, ``to_kql`` a tree back to text."""

from typing import TYPE_CHECKING

from . import syntax
from .syntax import *  # noqa: F403  (the tree's node types are part of this package's API)

if TYPE_CHECKING:
    from .parser import parse
    from .printer import to_kql

__all__ = [*syntax.__all__, "parse", "to_kql"]


def __getattr__(name: str) -> object:
    """``parse`` and ``to_kql`` load Lark on first use, not when the syntax tree is imported."""
    if name == "parse":
        from .parser import parse

        return parse
    if name == "to_kql":
        from .printer import to_kql

        return to_kql
    raise AttributeError(name)
