"""Phone numbers never reach a log line unmasked, whatever shape they arrive in."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from quanyu.logs import _PHONE, _masked, mask_phones


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("13800138000", "138****8000"),
        ("phone +86 138-0013-8000 is not valid", "phone 138****8000 is not valid"),
        ("8613800138000", "138****8000"),
        ("+86 138 0013 8000", "138****8000"),
        ("call +1 650-253-0000", "call +1****0000"),
        # The shortest text of each shape: 11 characters.
        ("+1234567890", "+1****7890"),
        ("19912345678", "199****5678"),
    ],
)
def test_phone_numbers_are_masked_in_free_text(text: str, masked: str) -> None:
    assert mask_phones(text) == masked


@pytest.mark.parametrize(
    "text", ["order ord_123 took 12.5 ms", "cus_5f2c9a1b", "2026-11-22T06:17:41Z", "12345"]
)
def test_text_without_phone_numbers_is_left_alone(text: str) -> None:
    assert mask_phones(text) == text


@given(st.text(alphabet="+-86 1390x", max_size=16))
@example("+1234567890")
@example("1391234567")
def test_short_text_is_skipped_only_where_no_number_can_fit(text: str) -> None:
    # Skipping the pattern for short text must never leave a number unmasked.
    assert mask_phones(text) == _PHONE.sub(_masked, text)
