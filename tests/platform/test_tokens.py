"""Tokens say who calls: every claim of a token signed with the deployment's key is checked for its
type and value, so whatever a verified token says is a caller the services know how to serve;
subjects name the terminal within its store or channel."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quanyu.auth import CHANNELS, Principal, Role, TokenCodec, caller, channel_named
from quanyu.errors import InvalidArgument, Unauthenticated
from quanyu.keys import write_key
from tests.conftest import hand_signed

KEY_DIR = Path(tempfile.mkdtemp(prefix="quanyu-token-test-"))
write_key(KEY_DIR)
CODEC = TokenCodec.local(KEY_DIR)
NOW = int(datetime.now(UTC).timestamp())
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=300),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
ROLES = st.one_of(st.sampled_from([r.value for r in Role]), ANYTHING)
CHANNEL_VALUES = st.one_of(
    st.sampled_from(sorted(CHANNELS)), st.just("WECHAT"), st.just("CHANNEL_UNSPECIFIED"), ANYTHING
)


def signed(claims: dict[str, Any]) -> str:
    return hand_signed(KEY_DIR, claims)


@given(
    role=ROLES,
    subject=st.one_of(st.text(max_size=200), ANYTHING),
    store_id=st.one_of(st.just(""), st.text(max_size=100), ANYTHING),
    channel=st.one_of(st.just(""), CHANNEL_VALUES),
    drop=st.sets(st.sampled_from(["role", "sub", "store_id", "channel"])),
)
def test_any_claims_either_name_a_caller_the_services_know_or_are_unauthenticated(
    role: Any, subject: Any, store_id: Any, channel: Any, drop: set[str]
) -> None:
    claims = {"iss": "quanyu", "iat": NOW, "exp": NOW + 600, "role": role, "sub": subject}
    claims |= {"store_id": store_id, "channel": channel}
    for name in drop:
        claims.pop(name)
    try:
        token = signed(claims)
    except (TypeError, ValueError):
        return  # not even encodable as a JWT
    try:
        principal = CODEC.verify(token)
    except Unauthenticated:
        return
    # A verified caller is whole: a known role, and the store or channel its role is bound to.
    assert isinstance(principal.role, Role)
    assert principal.name
    assert principal.tenant
    assert isinstance(principal.owner, str)
    bound = (bool(principal.store_id), principal.channel)
    if principal.role is Role.STORE:
        assert bound == (True, "")
    elif principal.role is Role.CHANNEL:
        assert not principal.store_id
        assert principal.channel in CHANNELS - {"CHANNEL_STORE_POS"}
    else:
        assert bound == (False, "")


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"role": "channel", "channel": "WECHAT"}, "a channel that does not exist"),
        ({"role": "channel", "channel": "CHANNEL_STORE_POS"}, "the till's own channel"),
        ({"role": "store"}, "a store token without its store"),
        ({"role": "admin"}, "a role that does not exist"),
        ({"role": "ops", "store_id": "SH-001"}, "ops bound to a store"),
        ({"role": "ops", "sub": ["ops"]}, "a subject that is not text"),
        ({"role": 1}, "a role that is not text"),
        ({"role": "store", "store_id": "x" * 65}, "a store id longer than any store's"),
        ({"role": "store", "store_id": "SH\n001"}, "a store id with a line break"),
    ],
)
def test_a_token_naming_no_real_caller_is_refused(claims: dict[str, Any], why: str) -> None:
    token = signed({"iss": "quanyu", "iat": NOW, "exp": NOW + 600, "sub": "someone", **claims})
    with pytest.raises(Unauthenticated):
        CODEC.verify(token)


def test_a_tokens_subject_names_the_terminal_within_its_store_or_channel() -> None:
    assert caller(Role.STORE, store_id="SH-001", subject="till-3").subject == "store:SH-001/till-3"
    assert caller(Role.STORE, store_id="SH-001").subject == "store:SH-001"
    assert caller(Role.CHANNEL, channel="CHANNEL_TMALL").subject == "channel:CHANNEL_TMALL"
    assert caller(Role.SERVICE, subject="orders").subject == "service/orders"
    assert caller(Role.OPS, subject="alice").subject == "ops/alice"
    assert caller(Role.OPS).subject == "ops"  # not whoever runs the server that issued it
    # A subject that claims another store's name stays inside its own store.
    assert (
        caller(Role.STORE, store_id="SH", subject="store:SH-001/till-3").subject
        == "store:SH/store:SH-001/till-3"
    )
    # Tokens minted before subjects were named are named alike when read.
    assert Principal(Role.STORE, "till-3", store_id="SH-001").name == "store:SH-001/till-3"


def test_a_callers_request_ids_are_its_store_or_channel_s_and_the_platform_shares_one() -> None:
    till, tablet = (
        caller(Role.STORE, store_id="A", subject="till-1"),
        caller(Role.STORE, store_id="A", subject="t"),
    )
    assert till.owner == tablet.owner == "store:A"
    assert caller(Role.STORE, store_id="B").owner != till.owner
    assert caller(Role.CHANNEL, channel="CHANNEL_APP").owner == "channel:CHANNEL_APP"
    assert caller(Role.OPS, subject="alice").owner == caller(Role.SERVICE, subject="orders").owner == ""


@pytest.mark.parametrize("spelling", ["CHANNEL_TMALL", "TMALL", "tmall", " Tmall "])
def test_a_channel_is_named_in_any_case_with_or_without_its_prefix(spelling: str) -> None:
    assert channel_named(spelling) == "CHANNEL_TMALL"


@pytest.mark.parametrize("spelling", ["WECHAT", "", "CHANNEL_UNSPECIFIED", "TAOBAO"])
def test_a_channel_that_does_not_exist_is_refused_with_the_ones_that_do(spelling: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        channel_named(spelling)
    assert "CHANNEL_WECHAT_MINI_PROGRAM" in refused.value.message
