"""The checks every request's text goes through before any use case sees it."""

from __future__ import annotations

import pytest

from quanyu.errors import InvalidArgument, Violations

CONTROL = [chr(code) for code in (*range(32), 127)]


@pytest.mark.parametrize("character", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
def test_a_control_character_anywhere_in_text_is_refused_naming_the_field(character: str) -> None:
    for value in (character, f"ord{character}", f"{character}er", f"o{character}rder"):
        violations = Violations()
        violations.text(value, "order_id", max_length=64)
        with pytest.raises(InvalidArgument) as raised:
            violations.raise_if_any()
        assert [(v.field, v.description) for v in raised.value.violations] == [
            ("order_id", "must not contain control characters")
        ]


@pytest.mark.parametrize(
    "value", ["SH-0001", " spaced out ", "~!@#$%^&*()_+{}|:<>?", "上海徐汇店", "café", "\u0080\u00a0", "🛒"]
)
def test_printable_text_of_any_script_passes(value: str) -> None:
    violations = Violations()
    violations.text(value, "store_id", max_length=64)
    violations.raise_if_any()
    assert violations.found == []


def test_missing_and_overlong_text_are_told_apart_from_control_characters() -> None:
    violations = Violations()
    violations.text("", "request_id", max_length=64)
    violations.text("x" * 65, "store_id", max_length=64)
    violations.text("a\nb", "sku", max_length=64, required=False)
    violations.text("", "coupon_code", max_length=64, required=False)
    assert [(v.field, v.description) for v in violations.found] == [
        ("request_id", "is required"),
        ("store_id", "must be at most 64 characters"),
        ("sku", "must not contain control characters"),
    ]


def test_field_paths_are_spelled_in_one_place() -> None:
    from quanyu.errors import Violations, field_path, split_field_path

    assert field_path("stores", 3, "store_id") == "stores[3].store_id"
    assert field_path("", "name") == "name"
    assert split_field_path("stores[3].store_id") == ("stores", 3, "store_id")
    assert split_field_path("name") == ("name", None, "")
    violations = Violations()
    violations.within("lines", 2).text("", "sku", max_length=8)
    violations.within("stores", 0).within("address").check(False, "city", "is required")
    assert [v.field for v in violations.found] == ["lines[2].sku", "stores[0].address.city"]
