"""Identifiers the platform hands out: a readable prefix and 128 random bits."""

import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
