"""Every string and repeated field of every request has a documented cap, enforced with
INVALID_ARGUMENT naming the field."""

from __future__ import annotations

from tests.reliability.deployment import Deployment
from tests.reliability.sizes import sizes_are_capped


def test_every_string_and_repeated_field_has_a_documented_cap_enforced_by_name(d: Deployment) -> None:
    figures = sizes_are_capped(d)
    assert figures.problems == []
    assert figures.fields > 100
