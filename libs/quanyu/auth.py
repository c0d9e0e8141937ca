"""Caller tokens (HS256 JWTs naming a role) and the principal of the call being served."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

from quanyu.errors import InvalidArgument, PermissionDenied, Unauthenticated

ISSUER = "quanyu"
ALGORITHM = "HS256"
MAX_TTL_SECONDS = 366 * 24 * 3600
DEFAULT_TTL_SECONDS = 24 * 3600
_VERIFIED_CACHE_SIZE = 10_000


class Role(StrEnum):
    OPS = "ops"
    SERVICE = "service"
    CHANNEL = "channel"
    STORE = "store"


ANY_ROLE = frozenset(Role)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a role, a subject, and the store or channel a token is bound to."""

    role: Role
    subject: str
    store_id: str = ""
    channel: str = ""  # a common.v1.Channel value name, e.g. CHANNEL_WECHAT_MINI_PROGRAM

    def require_store(self, store_id: str) -> None:
        """A store terminal acts only for its own store; other roles are not bound to one."""
        if self.role is Role.STORE and store_id != self.store_id:
            raise PermissionDenied("a store terminal may act only for its own store", reason="OTHER_STORE")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expire_time: datetime


class TokenCodec:
    """Signs and verifies caller tokens with the deployment's shared key."""

    def __init__(self, key: bytes, *, leeway_seconds: float = 5.0) -> None:
        if len(key) < 32:
            raise ValueError("the signing key must be at least 32 bytes")
        self._key = key
        self._leeway = leeway_seconds
        self._verified: dict[str, tuple[Principal, float]] = {}

    def issue(
        self,
        principal: Principal,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        *,
        now: datetime | None = None,
    ) -> IssuedToken:
        validate_principal(principal)
        if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise InvalidArgument("ttl_seconds", f"must be between 1 and {MAX_TTL_SECONDS}")
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + timedelta(seconds=ttl_seconds)
        claims: dict[str, object] = {
            "iss": ISSUER,
            "sub": principal.subject,
            "role": principal.role.value,
            "iat": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
        }
        if principal.store_id:
            claims["store_id"] = principal.store_id
        if principal.channel:
            claims["channel"] = principal.channel
        return IssuedToken(jwt.encode(claims, self._key, algorithm=ALGORITHM), expires)

    def verify(self, token: str) -> Principal:
        """The principal a token names; Unauthenticated when it is forged, malformed or expired.

        Callers present the same token call after call (a service's token lives an hour), so a
        verified token is remembered until it expires rather than checked again each time.
        """
        known = self._verified.get(token)
        if known is not None:
            principal, expires = known
            if time.time() < expires + self._leeway:
                return principal
            self._verified.pop(token, None)
        principal, expires = self._verify(token)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("the token is not valid", reason="TOKEN_INVALID") from exc
        try:
            principal = Principal(
                role=Role(str(claims.get("role"))),
                subject=str(claims["sub"]),
                store_id=str(claims.get("store_id", "")),
                channel=str(claims.get("channel", "")),
            )
            validate_principal(principal)
        except (ValueError, InvalidArgument) as exc:
            raise Unauthenticated("the token names no valid role", reason="TOKEN_INVALID") from exc
        return principal, float(claims["exp"])


def validate_principal(principal: Principal) -> None:
    if not principal.subject or len(principal.subject) > 128:
        raise InvalidArgument("subject", "must be 1 to 128 characters")
    if principal.role is Role.STORE and not principal.store_id:
        raise InvalidArgument("store_id", "a store token needs its store id")
    if principal.role is not Role.STORE and principal.store_id:
        raise InvalidArgument("store_id", "only a store token is bound to a store")
    if principal.role is Role.CHANNEL and not principal.channel:
        raise InvalidArgument("channel", "a channel token needs its channel")
    if principal.role is not Role.CHANNEL and principal.channel:
        raise InvalidArgument("channel", "only a channel token is bound to a channel")


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing authorization metadata: send 'Bearer <token>'", reason="TOKEN_MISSING")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_INVALID")
    return token.strip()


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("quanyu_principal", default=None)


def current_principal() -> Principal:
    """The principal of the call being served; only valid inside an authenticated RPC."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller", reason="TOKEN_MISSING")
    return principal


@contextmanager
def acting_as(principal: Principal) -> Iterator[Principal]:
    token = _current.set(principal)
    try:
        yield principal
    finally:
        _current.reset(token)
