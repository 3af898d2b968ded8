"""A retention setting that is not a duration is refused with a message that says what to
write, whatever the mistake (docs/configuration.md)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from allotment.config import Settings


@pytest.mark.parametrize("field", ["events_retention", "decisions_retention"])
@pytest.mark.parametrize("value", ["abc", "1.5d", "", "d", "nan", "inf"])
def test_a_retention_that_is_no_duration_says_what_to_write(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**{field: value})  # type: ignore[arg-type]
    error = refused.value.errors()[0]
    assert error["loc"] == (field,)
    assert "such as 30s, 10m, 72h or 14d" in error["msg"], error["msg"]
    assert "float" not in error["msg"]
