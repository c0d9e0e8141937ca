"""The importer names a refused field as the row's, from the path the service gave, through the
kernel's field paths rather than by rewriting text."""

from __future__ import annotations

import pytest

from quanyu.errors import field_path
from quanyu_ops.importer.loading import row_field
from quanyu_ops.importer.rows import RowValues, level_row, parse_opening_hours


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (field_path("stores", 3, "location", "latitude"), "store.location.latitude"),
        (field_path("stores", 0, "store_id"), "store.store_id"),
        (field_path("stores", 12), "store"),
        ("stores", "stores"),
        ("request_id", "request_id"),
    ],
)
def test_a_field_of_a_stores_element_is_named_as_the_rows_store(given: str, named: str) -> None:
    assert row_field(given, "stores", "store") == named


def test_a_stock_row_with_a_negative_or_missing_quantity_is_refused_with_its_field() -> None:
    problems = level_row(7, {"store_id": "S1", "sku": "", "on_hand": "-2"})
    assert isinstance(problems, list)
    assert {(p.position, p.field) for p in problems} == {(7, "sku"), (7, "on_hand")}


def test_a_spreadsheets_whole_number_is_whole() -> None:
    values = RowValues(3, {"priority": "12.0", "max_active_orders": "1.5"})
    assert values.whole("priority", "store.priority") == 12
    assert values.whole("max_active_orders", "store.max_active_orders") == 0
    assert [p.field for p in values.problems] == ["store.max_active_orders"]


def test_opening_hours_as_ops_write_them() -> None:
    hours = parse_opening_hours("1-2 09:00-22:00; 7 10:00-24:00")
    assert [(h.weekday, h.open, h.close) for h in hours] == [
        (1, "09:00", "22:00"),
        (2, "09:00", "22:00"),
        (7, "10:00", "24:00"),
    ]
