"""Caller tokens signed with Ed25519 keys by kid: who may sign which role, how long a token of each
role may live, and revocation by token id or subject."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from quanyu.auth import DEFAULT_LIFETIMES, Principal, Role, TokenCodec
from quanyu.errors import InvalidArgument, Unauthenticated
from quanyu.keys import (
    Fetched,
    KeyRing,
    Revocations,
    Trust,
    TrustedKey,
    issuer_keys,
    joined,
    service_keys,
    write_key,
)
from tests.conftest import hand_signed

OPS = Principal(Role.OPS, "ops/alice")


@pytest.fixture
def issuer(tmp_path: Path) -> Path:
    write_key(tmp_path / "issuer", "k1")
    return tmp_path / "issuer"


@pytest.fixture
def services(tmp_path: Path) -> Path:
    write_key(tmp_path / "service", "s1")
    return tmp_path / "service"


def verifier(issuer: Path, services: Path, fetch: object = None) -> TokenCodec:
    return TokenCodec(Trust(joined(issuer_keys(issuer), service_keys(services)), fetch))  # type: ignore[arg-type]


def reason(error: pytest.ExceptionInfo[Unauthenticated]) -> str:
    return error.value.reason


def test_a_service_key_signs_service_tokens_and_nothing_else(issuer: Path, services: Path) -> None:
    check = verifier(issuer, services)
    own = TokenCodec.local(services, roles=frozenset({"service"}))
    assert check.verify(own.issue(Principal(Role.SERVICE, "orders")).token).role is Role.SERVICE
    for forged in (OPS, Principal(Role.STORE, "store:S1", store_id="S1")):
        with pytest.raises(Unauthenticated) as refused:
            check.verify(own.issue(forged).token)
        assert reason(refused) == "TOKEN_INVALID"
    # The issuer's key signs every role.
    assert check.verify(TokenCodec.local(issuer).issue(OPS).token).subject == "ops/alice"


def test_a_token_of_a_key_nobody_trusts_or_of_another_algorithm_is_refused(
    issuer: Path, services: Path, tmp_path: Path
) -> None:
    check = verifier(issuer, services)
    write_key(tmp_path / "elsewhere", "k1")  # the same kid, another key
    for token in (
        TokenCodec.local(tmp_path / "elsewhere").issue(OPS).token,
        jwt.encode({"iss": "quanyu", "sub": "x", "role": "ops", "iat": 1, "exp": 2**40}, "k" * 40, "HS256"),
        jwt.encode({"iss": "quanyu", "sub": "x", "role": "ops"}, "k" * 40, "HS256", headers={"kid": "k1"}),
    ):
        with pytest.raises(Unauthenticated):
            check.verify(token)


def test_each_role_lives_at_most_its_lifetime_when_issued_and_when_presented(
    issuer: Path, services: Path
) -> None:
    codec = TokenCodec.local(issuer)
    assert DEFAULT_LIFETIMES[Role.OPS] <= 12 * 3600
    assert 24 * 3600 <= DEFAULT_LIFETIMES[Role.STORE] <= 31 * 24 * 3600
    assert 24 * 3600 <= DEFAULT_LIFETIMES[Role.CHANNEL] <= 31 * 24 * 3600
    with pytest.raises(InvalidArgument) as refused:
        codec.issue(OPS, DEFAULT_LIFETIMES[Role.OPS] + 1)
    assert [v.field for v in refused.value.violations] == ["ttl_seconds"]
    # The default lifetime of a role is never over its longest.
    issued = codec.issue(OPS)
    assert issued.expire_time - datetime.now(UTC) <= timedelta(seconds=DEFAULT_LIFETIMES[Role.OPS])
    # A year-long ops token, however signed, is refused where it is presented.
    now = int(datetime.now(UTC).timestamp())
    year = hand_signed(
        issuer, {"iss": "quanyu", "sub": "ops", "role": "ops", "iat": now, "exp": now + 366 * 86400}
    )
    with pytest.raises(Unauthenticated) as too_long:
        verifier(issuer, services).verify(year)
    assert reason(too_long) == "TOKEN_TOO_LONG"
    # A deployment may shorten a role's life.
    short = TokenCodec.local(issuer, lifetimes={Role.STORE: 3600})
    with pytest.raises(InvalidArgument):
        short.issue(Principal(Role.STORE, "store:S1", store_id="S1"), 7200)


def test_revocation_by_token_id_and_by_subject_until_a_second(issuer: Path, services: Path) -> None:
    codec = TokenCodec.local(issuer)
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    lost = codec.issue(OPS, 600, now=earlier)
    other = codec.issue(Principal(Role.OPS, "ops/bob"), 600, now=earlier)
    till_before = codec.issue(Principal(Role.STORE, "store:S1/till-3", store_id="S1"), 600, now=earlier)
    till_after = codec.issue(Principal(Role.STORE, "store:S1/till-3", store_id="S1"), 600)
    revoked = Revocations(
        frozenset({lost.token_id}), {"store:S1/till-3": int((earlier + timedelta(seconds=1)).timestamp())}
    )
    check = verifier(issuer, services, lambda: Fetched({}, revoked))
    # Seen before the revocation, then refused: a verified token is remembered, its revocation is not.
    assert check.verify(lost.token).subject == "ops/alice"
    check.trust.refresh()
    for token in (lost.token, till_before.token):
        with pytest.raises(Unauthenticated) as refused:
            check.verify(token)
        assert reason(refused) == "TOKEN_REVOKED"
    assert check.verify(other.token).subject == "ops/bob"
    assert check.verify(till_after.token).subject == "store:S1/till-3"


def test_a_key_identity_starts_signing_with_is_fetched_the_first_time_a_token_names_it(
    issuer: Path, services: Path, tmp_path: Path
) -> None:
    published = tmp_path / "published"
    write_key(published, "k2")
    asked: list[int] = []

    def fetch() -> Fetched:
        asked.append(1)
        return Fetched(KeyRing(published).public_keys(), Revocations())

    check = verifier(issuer, services, fetch)
    assert check.verify(TokenCodec.local(published).issue(OPS).token).subject == "ops/alice"
    assert asked == [1]
    # A made-up kid asks again at most every half second, so it cannot hammer identity.
    _, stranger = KeyRing(published).signer()
    made_up = jwt.encode({"iss": "quanyu"}, stranger, algorithm="EdDSA", headers={"kid": "zz-made-up"})
    for _ in range(20):
        with pytest.raises(Unauthenticated):
            check.verify(made_up)
    assert len(asked) <= 2
    assert isinstance(check.trust.key("k2"), TrustedKey)
