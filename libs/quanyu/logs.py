"""Structured JSON logs, one line an event, with the request id bound and phone numbers masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Mainland mobile numbers in any of the shapes callers send (+86 138-0013-8000, 8613800138000,
# 13800138000) and any other international number written with a leading "+".
_PHONE = re.compile(
    r"(?<!\d)(?:\+?86[\s-]?)?(1[3-9]\d)[\s-]?\d{4}[\s-]?(\d{4})(?!\d)"
    r"|\+(\d{1,3})[\d\s-]{5,}(\d{4})(?!\d)"
)


def mask_phones(text: str) -> str:
    """Replace every phone number in free text by its masked form (138****8000)."""

    def masked(match: re.Match[str]) -> str:
        if match.group(1):
            return f"{match.group(1)}****{match.group(2)}"
        return f"+{match.group(3)}****{match.group(4)}"

    return _PHONE.sub(masked, text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phones(value)
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    return value


def _mask_phone_numbers(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Runs last, after tracebacks are rendered, so an exception message quoting a number is
    # masked too.
    for key, value in event.items():
        event[key] = _mask_value(value)
    return event


def configure_logging(level: str = "INFO", *, service: str | None = None) -> None:
    """Send structlog and the standard library's logging as JSON lines to standard error.

    Standard error keeps standard output free for what commands print (a token, a report).
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.insert(0, _bind_service(service))
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.dict_tracebacks,
            _mask_phone_numbers,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library (alembic, grpc) come out as JSON too.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.dict_tracebacks,
                _mask_phone_numbers,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))


def _bind_service(service: str) -> Any:
    def add_service(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("service", service)
        return event

    return add_service


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
