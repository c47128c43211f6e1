"""An ATT&CK Navigator layer (format 4.5) of the converted rules' techniques.

Each ``attack.tNNNN[.NNN]`` tag becomes a technique; its score is the number of rules that tag it
and its comment their titles, so the layer shows coverage at a glance. The ATT&CK version is left
out (optional in the format): the Navigator then reads the IDs against its current version.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from . import rules

LAYER_VERSION = "4.5"
NAVIGATOR_VERSION = "5.2.0"  # the Navigator release that documents layer format 4.5
_TECHNIQUE = re.compile(r"attack\.(t\d{4}(?:\.\d{3})?)")


def layer(report: Mapping[str, Any]) -> dict[str, Any]:
    titles: dict[str, list[str]] = {}
    for _, rule in rules(report):
        for tag in rule.get("tags", ()):
            match = _TECHNIQUE.fullmatch(tag)
            if match:
                titles.setdefault(match[1].upper(), []).append(rule["title"])
    techniques = [
        {
            "techniqueID": technique,
            "score": len(names),
            "comment": "; ".join(sorted(names)),
            "enabled": True,
            "showSubtechniques": False,
        }
        for technique, names in sorted(titles.items())
    ]
    top = max((len(names) for names in titles.values()), default=1)
    return {
        "name": "rmm2sigma converted rules",
        "versions": {"layer": LAYER_VERSION, "navigator": NAVIGATOR_VERSION},
        "domain": "enterprise-attack",
        "description": f"Techniques tagged by {len(rules(report))} converted Sigma rules; score = rules.",
        "sorting": 3,
        "layout": {"layout": "side", "showID": True, "showName": True},
        "hideDisabled": False,
        "techniques": techniques,
        "gradient": {"colors": ["#ffe766", "#8ec843"], "minValue": 0, "maxValue": max(top, 1)},
        "legendItems": [],
        "metadata": [],
    }


def render_layer(report: Mapping[str, Any]) -> str:
    return json.dumps(layer(report), indent=2, ensure_ascii=False) + "\n"
