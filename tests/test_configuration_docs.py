"""docs/configuration.md lists every setting the service reads, and nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

from allotment.config import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_every_setting_is_documented_and_every_documented_one_exists() -> None:
    documented = set(re.findall(r"`ALLOTMENT_([A-Z0-9_]+)`", DOC.read_text()))
    settings = {name.upper() for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from docs/configuration.md"
    assert documented - settings == set(), "docs/configuration.md names unknown settings"
