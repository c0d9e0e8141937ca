"""Caller tokens (HS256 JWTs naming a role) and the principal of the call being served."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property

import jwt

from quanyu.common.v1 import common_pb2
from quanyu.errors import InvalidArgument, PermissionDenied, Unauthenticated, Violations

ISSUER = "quanyu"
ALGORITHM = "HS256"
MAX_TTL_SECONDS = 366 * 24 * 3600
DEFAULT_TTL_SECONDS = 24 * 3600
MAX_SUBJECT_LENGTH = 128
MAX_STORE_ID_LENGTH = 64
_VERIFIED_CACHE_SIZE = 10_000

# The till's own channel: its customers are reached through a store token, never a channel token.
STORE_POS = "CHANNEL_STORE_POS"
CHANNELS = frozenset(name for name in common_pb2.Channel.keys() if name != "CHANNEL_UNSPECIFIED")  # noqa: SIM118
TOKEN_CHANNELS = CHANNELS - {STORE_POS}


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

    @cached_property
    def tenant(self) -> str:
        """What the caller acts for: `store:SH-001`, `channel:CHANNEL_TMALL`, or the role for the
        platform's own callers (ops and services act for the whole chain)."""
        if self.role is Role.STORE:
            return f"store:{self.store_id}"
        if self.role is Role.CHANNEL:
            return f"channel:{self.channel}"
        return self.role.value

    @cached_property
    def name(self) -> str:
        """The caller as history, logs and quotas name it: the tenant, then the terminal or backend
        the subject names (`store:SH-001/till-3`). A subject that already starts with the tenant
        is taken as it is, so a subject can never pass for another store or channel."""
        tenant, subject = self.tenant, self.subject
        if subject == tenant or subject.startswith(f"{tenant}/"):
            return subject
        return f"{tenant}/{subject}"

    @cached_property
    def owner(self) -> str:
        """The namespace of the caller's idempotency keys (AIP-155 request ids, source ids).

        A store's tills share one, as do a channel backend's replicas, so a retry from another
        terminal or pod of the same client is still a retry; two stores or two channels never
        share one, so no store or channel can learn or block another's keys. Ops and the
        platform's services are the platform: they share the empty namespace, which is also
        where every key written before keys had owners lives.
        """
        return self.tenant if self.role in (Role.STORE, Role.CHANNEL) else ""

    def require_store(self, store_id: str) -> None:
        """A store terminal acts only for its own store; other roles are not bound to one."""
        if self.role is Role.STORE and store_id != self.store_id:
            raise PermissionDenied("a store terminal may act only for its own store", reason="OTHER_STORE")


def default_subject(role: Role, store_id: str = "", channel: str = "") -> str:
    """What a token names when its issuer names no terminal: at least the store or channel."""
    if role is Role.STORE:
        return f"store:{store_id}"
    if role is Role.CHANNEL:
        return f"channel:{channel}"
    return role.value


def caller(role: Role, *, store_id: str = "", channel: str = "", subject: str = "") -> Principal:
    """The principal a new token is for, checked and named: the subject given names the terminal or
    backend within its store or channel (`till-3` of a store token for SH-001 becomes
    `store:SH-001/till-3`); none given names at least the store or channel."""
    draft = Principal(role, subject or default_subject(role, store_id, channel), store_id, channel)
    validate_principal(draft)
    principal = Principal(role, draft.name, store_id, channel)
    validate_principal(principal)
    return principal


def channel_named(text: str, field_name: str = "channel") -> str:
    """A channel as callers spell it: CHANNEL_TMALL, TMALL or tmall are one channel; anything
    else is refused, listing what exists."""
    candidate = text.strip().upper()
    if candidate and not candidate.startswith("CHANNEL_"):
        candidate = f"CHANNEL_{candidate}"
    if candidate not in CHANNELS:
        raise InvalidArgument(field_name, f"{text!r} is not a channel; one of {', '.join(sorted(CHANNELS))}")
    return candidate


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
        # A token signed with the deployment's key may still carry claims no issuer of ours writes
        # (an old release, a hand-made token): each is checked for its type and value, so nothing
        # a verified token says can reach the services as a value they do not expect.
        role, subject = claims.get("role"), claims.get("sub")
        store_id, channel = claims.get("store_id", ""), claims.get("channel", "")
        if not all(isinstance(value, str) for value in (role, subject, store_id, channel)):
            raise Unauthenticated("the token's claims are not valid", reason="TOKEN_INVALID")
        try:
            principal = Principal(Role(str(role)), str(subject), str(store_id), str(channel))
            validate_principal(principal)
        except (ValueError, InvalidArgument) as exc:
            raise Unauthenticated("the token names no valid caller", reason="TOKEN_INVALID") from exc
        return principal, float(claims["exp"])


def validate_principal(principal: Principal) -> None:
    """The shape a caller must have: a store token names one store id, a channel token one channel
    a backend can speak for (the till's own channel belongs to store tokens), others neither."""
    violations = Violations()
    violations.text(principal.subject, "subject", max_length=MAX_SUBJECT_LENGTH)
    if principal.role is Role.STORE:
        violations.text(principal.store_id, "store_id", max_length=MAX_STORE_ID_LENGTH)
    elif principal.store_id:
        violations.add("store_id", "only a store token is bound to a store")
    if principal.role is Role.CHANNEL:
        if principal.channel not in TOKEN_CHANNELS:
            violations.add(
                "channel",
                "a channel token needs a channel other than CHANNEL_STORE_POS (the till's, for store tokens)",
            )
    elif principal.channel:
        violations.add("channel", "only a channel token is bound to a channel")
    violations.raise_if_any()


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
