"""A canary phone number sent through every RPC that takes a phone, in every spelling callers use,
never appears unmasked in the services' logs, and their databases hold only its keyed hash and
masked form."""

from __future__ import annotations

import pytest

from tests.reliability.canary import canary_through_every_phone_rpc, unmasked
from tests.reliability.deployment import Deployment


@pytest.mark.parametrize(
    "text", ["13912345678", "+86 139-1234-5678", "(139) 1234 5678", "phone=+8613912345678;", "139.1234.5678"]
)
def test_the_canary_search_finds_a_number_however_it_is_written(text: str) -> None:
    assert unmasked("13912345678").search(text)


@pytest.mark.parametrize("text", ["139****5678", "+86 139****5678", "1391234", "12345679"])
def test_the_canary_search_lets_the_masked_form_and_other_numbers_pass(text: str) -> None:
    assert not unmasked("13912345678").search(text)


def test_a_canary_phone_is_never_logged_or_stored_unmasked_nor_recoverable_from_what_is_stored(
    each_backend: Deployment,
) -> None:
    figures = canary_through_every_phone_rpc(each_backend)
    assert figures.answered > 0
    assert (figures.sightings, figures.recoverable) == (0, 0), figures.problems
