"""Conversions between protobuf well-known types and Python values, shared by every servicer."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.errors import InvalidArgument


def to_timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp, *, field_name: str, present: bool = True) -> datetime | None:
    """An aware UTC datetime, or None when the field was not sent; INVALID_ARGUMENT naming
    `field_name` when it holds no time a datetime can (years 1 to 9999, nanos below a second)."""
    if not present or (stamp.seconds == 0 and stamp.nanos == 0):
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidArgument(field_name, "must lie between years 1 and 9999, nanos 0 to 999999999") from exc
