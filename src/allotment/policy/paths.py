"""Paths into a policy document, as error reports and diffs print them.

("plans", "team", "seats", "burst", "window")  →  plans.team.seats.burst.window
("rules", 0, "when")                           →  rules[0].when
("features", "Bad Name")                       →  features["Bad Name"]
()                                             →  $   (the document itself)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

ROOT = "$"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Location = tuple[str | int, ...]


def format_path(location: Sequence[str | int]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            # A key that would read as path syntax (a dot, a bracket, a space) is quoted.
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    return text or ROOT
