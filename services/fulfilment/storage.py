"""Fulfilment's tables: its own database, read by no other service."""

from quanyu.db import new_metadata

metadata = new_metadata()
