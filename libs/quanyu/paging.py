"""AIP-158 paging: page sizes with a default and a cap, and opaque, tamper-proof page tokens.

A token carries where the previous page ended, bound to the query and the caller that asked:
changing a filter, forging a position or passing a token to another caller is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from quanyu.errors import InvalidArgument, Violations

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_LENGTH = 2048


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(requested or default, maximum)


_TOO_LONG = f"must be at most {MAX_TOKEN_LENGTH} characters"


def check_page_token(token: str, violations: Violations) -> None:
    """A token longer than any this service hands out is refused with the request's other problems
    (decode refuses it alike, for callers that check the token on its own)."""
    violations.check(len(token) <= MAX_TOKEN_LENGTH, "page_token", _TOO_LONG)


class PageTokens:
    def __init__(self, key: bytes, purpose: str) -> None:
        self._key = hashlib.sha256(key + b"\x00page-token\x00" + purpose.encode()).digest()

    def encode(self, position: Mapping[str, Any], *, query: Mapping[str, Any], caller: str) -> str:
        body = json.dumps({"p": position, "q": self._fingerprint(query, caller)}, separators=(",", ":"))
        raw = body.encode()
        mac = hmac.new(self._key, raw, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + raw).decode().rstrip("=")

    def decode(self, token: str, *, query: Mapping[str, Any], caller: str) -> dict[str, Any] | None:
        """The position a token names, or None for the first page."""
        if not token:
            return None
        invalid = InvalidArgument("page_token", "is not a page token of this query; start again without one")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidArgument("page_token", _TOO_LONG)
        try:
            data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError) as exc:
            raise invalid from exc
        mac, raw = data[:16], data[16:]
        if not hmac.compare_digest(mac, hmac.new(self._key, raw, hashlib.sha256).digest()[:16]):
            raise invalid
        body = json.loads(raw)
        if body.get("q") != self._fingerprint(query, caller) or not isinstance(body.get("p"), dict):
            raise invalid
        position: dict[str, Any] = body["p"]
        return position

    @staticmethod
    def _fingerprint(query: Mapping[str, Any], caller: str) -> str:
        canonical = json.dumps({"query": query, "caller": caller}, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]
