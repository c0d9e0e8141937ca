"""Caller tokens (EdDSA JWTs naming a role, signed with keys by `kid`) and the principal of the
call being served."""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from quanyu.common.v1 import common_pb2
from quanyu.errors import InvalidArgument, PermissionDenied, Unauthenticated, Violations
from quanyu.keys import KeyRing, Trust, TrustedKey

ISSUER = "quanyu"
ALGORITHM = "EdDSA"
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
    token_id: str = ""  # the token's `jti`, what RevokeToken names


# The longest a token of each role may live, unless the deployment says otherwise
# (QUANYU_TOKEN_LIFETIME__OPS and so on): a lost till or a leaked backend token stops working on
# its own within days, an ops token within a shift.
DEFAULT_LIFETIMES: Mapping[Role, int] = {
    Role.OPS: 8 * 3600,
    Role.SERVICE: 24 * 3600,
    Role.STORE: 7 * 24 * 3600,
    Role.CHANNEL: 30 * 24 * 3600,
}


class TokenCodec:
    """Signs caller tokens (when it holds a signing key ring) and verifies them against what the
    deployment trusts: public keys by `kid`, and the tokens revoked (see quanyu.keys)."""

    def __init__(
        self,
        trust: Trust,
        *,
        signer: KeyRing | None = None,
        lifetimes: Mapping[Role, int] = DEFAULT_LIFETIMES,
        leeway_seconds: float = 5.0,
    ) -> None:
        self._trust, self._signer = trust, signer
        self._lifetimes = {**DEFAULT_LIFETIMES, **lifetimes}
        self._leeway = leeway_seconds
        self._verified: dict[str, tuple[Principal, float, str, int]] = {}

    @classmethod
    def local(
        cls,
        directory: Path,
        *,
        lifetimes: Mapping[Role, int] = DEFAULT_LIFETIMES,
        roles: frozenset[str] | None = None,
    ) -> TokenCodec:
        """A codec that signs with a key directory and trusts just its keys (for `roles`; every
        role by default): the ops command, a service's own calls, tests."""
        ring = KeyRing(directory)
        return cls(
            Trust(lambda: {kid: TrustedKey(kid, key, roles) for kid, key in ring.public_keys().items()}),
            signer=ring,
            lifetimes=lifetimes,
        )

    @property
    def trust(self) -> Trust:
        return self._trust

    def trust_keys(self) -> dict[str, Ed25519PublicKey]:
        """The public halves of the keys this codec signs with (what the issuer publishes)."""
        return self._signer.public_keys() if self._signer is not None else {}

    def lifetime(self, role: Role) -> int:
        return self._lifetimes[role]

    def issue(
        self,
        principal: Principal,
        ttl_seconds: int | None = None,
        *,
        now: datetime | None = None,
    ) -> IssuedToken:
        validate_principal(principal)
        if self._signer is None:
            raise RuntimeError("this process holds no key that signs caller tokens")
        longest = self._lifetimes[principal.role]
        ttl = ttl_seconds or min(DEFAULT_TTL_SECONDS, longest)
        if not 0 < ttl <= longest:
            raise InvalidArgument(
                "ttl_seconds", f"must be between 1 and {longest} for a {principal.role.value} token"
            )
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + timedelta(seconds=ttl)
        token_id = uuid.uuid4().hex
        claims: dict[str, object] = {
            "iss": ISSUER,
            "sub": principal.subject,
            "role": principal.role.value,
            "iat": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": token_id,
        }
        if principal.store_id:
            claims["store_id"] = principal.store_id
        if principal.channel:
            claims["channel"] = principal.channel
        kid, key = self._signer.signer()
        token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})
        return IssuedToken(token, expires, token_id)

    def verify(self, token: str) -> Principal:
        """The principal a token names; Unauthenticated when it is forged, malformed, expired,
        lives longer than its role may, or is revoked.

        Callers present the same token call after call (a service's token lives an hour), so a
        verified token is remembered until it expires rather than checked again each time; the
        revocations are consulted on every call.
        """
        known = self._verified.get(token)
        if known is None or time.time() >= known[1] + self._leeway:
            self._verified.pop(token, None)
            known = self._verify(token)
            if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = known
        principal, _, token_id, issued_at = known
        if self._trust.revocations().refuse(token_id, principal.subject, issued_at):
            raise Unauthenticated("the token has been revoked", reason="TOKEN_REVOKED")
        return principal

    def _verify(self, token: str) -> tuple[Principal, float, str, int]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("the token is not valid", reason="TOKEN_INVALID") from exc
        trusted = self._trust.key(kid) if isinstance(kid, str) and kid else None
        if trusted is None:
            raise Unauthenticated(
                "the token is signed with a key this deployment does not trust", reason="TOKEN_INVALID"
            )
        try:
            claims = jwt.decode(
                token,
                trusted.public_key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("the token is not valid", reason="TOKEN_INVALID") from exc
        # A token signed with a trusted key may still carry claims no issuer of ours writes (an
        # old release, a hand-made token): each is checked for its type and value, so nothing a
        # verified token says can reach the services as a value they do not expect.
        role, subject = claims.get("role"), claims.get("sub")
        store_id, channel = claims.get("store_id", ""), claims.get("channel", "")
        token_id = claims.get("jti", "")
        if not all(isinstance(value, str) for value in (role, subject, store_id, channel, token_id)):
            raise Unauthenticated("the token's claims are not valid", reason="TOKEN_INVALID")
        try:
            principal = Principal(Role(str(role)), str(subject), str(store_id), str(channel))
            validate_principal(principal)
        except (ValueError, InvalidArgument) as exc:
            raise Unauthenticated("the token names no valid caller", reason="TOKEN_INVALID") from exc
        if trusted.roles is not None and principal.role.value not in trusted.roles:
            raise Unauthenticated("the token's key may not sign for its role", reason="TOKEN_INVALID")
        issued_at, expires = claims["iat"], claims["exp"]
        if not isinstance(issued_at, int) or not isinstance(expires, int):
            raise Unauthenticated("the token's times are not valid", reason="TOKEN_INVALID")
        # A token made to live longer than its role may (by an older release, or a key misused)
        # is refused rather than trusted for its whole life.
        if expires - issued_at > self._lifetimes[principal.role]:
            raise Unauthenticated("the token lives longer than its role may", reason="TOKEN_TOO_LONG")
        return principal, float(expires), str(token_id), issued_at


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
