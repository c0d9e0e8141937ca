"""IdentityService over gRPC, called the way a channel frontend, a till or ops would call it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.clients import error_reason, field_violations
from quanyu.common.v1 import common_pb2
from quanyu.config import Settings
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from services.fulfilment import bootstrap as fulfilment_bootstrap
from services.identity import bootstrap
from tests.conftest import TokenFactory, bearer, running, served, throwaway_codec

WECHAT = common_pb2.CHANNEL_WECHAT_MINI_PROGRAM


@pytest.fixture
def stub(settings: Settings, database_url: str) -> Iterator[identity_pb2_grpc.IdentityServiceStub]:
    settings.identity.database_url = database_url
    bootstrap.migrate(settings)
    with running(bootstrap.build_app(settings), settings) as channel:
        yield identity_pb2_grpc.IdentityServiceStub(channel)


@pytest.fixture
def channel_token(token: TokenFactory) -> str:
    return token(Role.CHANNEL, channel="CHANNEL_WECHAT_MINI_PROGRAM")


def account(external_id: str, channel: int = WECHAT) -> common_pb2.ChannelAccount:
    return common_pb2.ChannelAccount(channel=common_pb2.Channel.ValueType(channel), external_id=external_id)


def test_a_channel_resolves_a_customer_and_a_till_finds_them_by_phone(
    stub: identity_pb2_grpc.IdentityServiceStub, channel_token: str, token: TokenFactory
) -> None:
    created = stub.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(
            account=account("openid-1"), phone="+86 138-0013-8000", display_name="Li"
        ),
        metadata=bearer(channel_token),
    )
    assert created.created
    assert created.customer.customer_id.startswith("cus_")
    assert created.customer.phone_masked == "138****8000"
    assert created.customer.create_time.seconds > 0
    till = token(Role.STORE, store_id="store-1")
    found = stub.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(
            account=account("pos-77", common_pb2.CHANNEL_STORE_POS), phone="13800138000"
        ),
        metadata=bearer(till),
    )
    assert not found.created
    assert found.customer.customer_id == created.customer.customer_id
    # The till is shown till accounts only; the WeChat openid stays the mini-program's.
    assert {(a.channel, a.external_id) for a in found.customer.accounts} == {
        (common_pb2.CHANNEL_STORE_POS, "pos-77"),
    }
    looked_up = stub.LookupCustomer(
        identity_pb2.LookupCustomerRequest(phone="8613800138000"), metadata=bearer(till)
    )
    assert looked_up.customer == found.customer


def test_lookup_of_nobody_is_not_found(
    stub: identity_pb2_grpc.IdentityServiceStub, channel_token: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.LookupCustomer(
            identity_pb2.LookupCustomerRequest(account=account("ghost")), metadata=bearer(channel_token)
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (identity_pb2.ResolveCustomerRequest(), "account"),
        (identity_pb2.ResolveCustomerRequest(phone="12345"), "phone"),
        (
            identity_pb2.ResolveCustomerRequest(account=account("x", common_pb2.CHANNEL_UNSPECIFIED)),
            "account.channel",
        ),
        (identity_pb2.ResolveCustomerRequest(account=account("x", 99)), "account.channel"),
        (identity_pb2.ResolveCustomerRequest(account=account("")), "account.external_id"),
        (identity_pb2.ResolveCustomerRequest(account=account("y" * 129)), "account.external_id"),
        (identity_pb2.ResolveCustomerRequest(account=account("nul\x00")), "account.external_id"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    stub: identity_pb2_grpc.IdentityServiceStub,
    channel_token: str,
    request_message: identity_pb2.ResolveCustomerRequest,
    field: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ResolveCustomer(request_message, metadata=bearer(channel_token))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in [name for name, _ in field_violations(caught.value)]
    assert field in (caught.value.details() or "")


def test_link_to_another_customers_account_is_already_exists(
    stub: identity_pb2_grpc.IdentityServiceStub, channel_token: str
) -> None:
    meta = bearer(channel_token)
    alice = stub.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(account=account("alice")), metadata=meta
    ).customer
    bob = stub.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(account=account("bob")), metadata=meta
    ).customer
    with pytest.raises(grpc.RpcError) as caught:
        stub.LinkAccount(
            identity_pb2.LinkAccountRequest(customer_id=bob.customer_id, account=account("alice")),
            metadata=meta,
        )
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(caught.value) == "ACCOUNT_LINKED_ELSEWHERE"
    linked = stub.LinkAccount(
        identity_pb2.LinkAccountRequest(customer_id=alice.customer_id, account=account("alice-2")),
        metadata=meta,
    )
    assert len(linked.customer.accounts) == 2
    # Another channel's account is not the mini-program's to link.
    with pytest.raises(grpc.RpcError) as caught:
        stub.LinkAccount(
            identity_pb2.LinkAccountRequest(
                customer_id=alice.customer_id, account=account("a-app", common_pb2.CHANNEL_APP)
            ),
            metadata=meta,
        )
    assert (caught.value.code(), error_reason(caught.value)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "OTHER_CHANNEL",
    )


def test_ops_merge_customers_and_the_merged_id_leads_to_the_survivor(
    stub: identity_pb2_grpc.IdentityServiceStub, channel_token: str, token: TokenFactory
) -> None:
    meta = bearer(channel_token)
    first = stub.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(phone="13800138000"), metadata=bearer(token(Role.OPS))
    ).customer
    second = stub.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(account=account("w")), metadata=meta
    ).customer
    ops = bearer(token(Role.OPS))
    merged = stub.MergeCustomers(
        identity_pb2.MergeCustomersRequest(
            survivor_customer_id=second.customer_id, merged_customer_id=first.customer_id
        ),
        metadata=ops,
    )
    assert merged.customer.customer_id == second.customer_id
    assert merged.customer.phone_masked == "138****8000"
    got = stub.GetCustomer(identity_pb2.GetCustomerRequest(customer_id=first.customer_id), metadata=meta)
    assert got.customer.customer_id == second.customer_id
    with pytest.raises(grpc.RpcError) as caught:
        stub.MergeCustomers(
            identity_pb2.MergeCustomersRequest(
                survivor_customer_id=second.customer_id, merged_customer_id=second.customer_id
            ),
            metadata=ops,
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(caught.value)] == ["merged_customer_id"]


@pytest.fixture
def with_stores(
    settings: Settings, database_url: str, tmp_path: Path, token: TokenFactory
) -> Iterator[identity_pb2_grpc.IdentityServiceStub]:
    """Identity beside a fulfilment that has one store, store-9: tokens are issued only for stores
    that exist."""
    settings.fulfilment.database_url = f"sqlite:///{tmp_path / 'fulfilment.db'}"
    fulfilment_bootstrap.migrate(settings)
    with served(fulfilment_bootstrap.build_app(settings), settings) as fulfilment:
        fulfilment_pb2_grpc.FulfilmentServiceStub(fulfilment.channel).UpsertStore(
            fulfilment_pb2.UpsertStoreRequest(
                store=fulfilment_pb2.Store(
                    store_id="store-9",
                    name="Nine",
                    location=common_pb2.LatLng(latitude=31.2, longitude=121.4),
                )
            ),
            metadata=bearer(token(Role.OPS)),
        )
        settings.fulfilment.target = fulfilment.target
        settings.identity.database_url = database_url
        bootstrap.migrate(settings)
        with running(bootstrap.build_app(settings), settings) as channel:
            yield identity_pb2_grpc.IdentityServiceStub(channel)


def test_ops_issue_tokens_that_the_platform_accepts(
    with_stores: identity_pb2_grpc.IdentityServiceStub, token: TokenFactory, settings: Settings
) -> None:
    stub = with_stores
    answer = stub.IssueToken(
        identity_pb2.IssueTokenRequest(role=identity_pb2.ROLE_STORE, store_id="store-9", ttl_seconds=120),
        metadata=bearer(token(Role.OPS)),
    )
    principal = TokenCodec.local(settings.issuer_key_dir()).verify(answer.token)
    assert (principal.role, principal.store_id, principal.subject) == (Role.STORE, "store-9", "store:store-9")
    assert answer.expire_time.seconds > 0
    # The issued token works: a till can resolve customers with it.
    stub.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(phone="13800138000"), metadata=bearer(answer.token)
    )
    for bad, field in [
        (identity_pb2.IssueTokenRequest(), "role"),
        (identity_pb2.IssueTokenRequest(role=identity_pb2.ROLE_STORE), "store_id"),
        (identity_pb2.IssueTokenRequest(role=identity_pb2.ROLE_CHANNEL), "channel"),
        (identity_pb2.IssueTokenRequest(role=identity_pb2.ROLE_OPS, ttl_seconds=-5), "ttl_seconds"),
        (
            identity_pb2.IssueTokenRequest(
                role=identity_pb2.ROLE_CHANNEL, channel=common_pb2.CHANNEL_STORE_POS
            ),
            "channel",
        ),
        (
            identity_pb2.IssueTokenRequest(
                role=identity_pb2.ROLE_CHANNEL, channel=common_pb2.Channel.ValueType(99)
            ),
            "channel",
        ),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.IssueToken(bad, metadata=bearer(token(Role.OPS)))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(caught.value)] == [field]
    # A store the chain does not have gets no token.
    with pytest.raises(grpc.RpcError) as caught:
        stub.IssueToken(
            identity_pb2.IssueTokenRequest(role=identity_pb2.ROLE_STORE, store_id="store-404"),
            metadata=bearer(token(Role.OPS)),
        )
    assert (caught.value.code(), error_reason(caught.value)) == (
        grpc.StatusCode.NOT_FOUND,
        "STORE_NOT_FOUND",
    )
    named = stub.IssueToken(
        identity_pb2.IssueTokenRequest(role=identity_pb2.ROLE_STORE, store_id="store-9", subject="till-3"),
        metadata=bearer(token(Role.OPS)),
    )
    assert TokenCodec.local(settings.issuer_key_dir()).verify(named.token).subject == "store:store-9/till-3"


# --- Authentication and authorisation, for every RPC -------------------------------------

CALLS = {
    "ResolveCustomer": identity_pb2.ResolveCustomerRequest(phone="13800138000"),
    "GetCustomer": identity_pb2.GetCustomerRequest(customer_id="cus_missing"),
    "LookupCustomer": identity_pb2.LookupCustomerRequest(phone="13800138000"),
    "LinkAccount": identity_pb2.LinkAccountRequest(customer_id="cus_missing", account=account("z")),
    "MergeCustomers": identity_pb2.MergeCustomersRequest(
        survivor_customer_id="cus_a", merged_customer_id="cus_b"
    ),
    "IssueToken": identity_pb2.IssueTokenRequest(role=identity_pb2.ROLE_OPS),
    "RevokeToken": identity_pb2.RevokeTokenRequest(token_id="t-unknown"),
    "GetTokenTrust": identity_pb2.GetTokenTrustRequest(),
}
ALLOWED = {
    "ResolveCustomer": set(Role),
    "GetCustomer": set(Role),
    "LookupCustomer": set(Role),
    "LinkAccount": set(Role),
    "MergeCustomers": {Role.OPS},
    "IssueToken": {Role.OPS},
    "RevokeToken": {Role.OPS},
    "GetTokenTrust": {Role.SERVICE, Role.OPS},
}


def test_the_matrix_covers_every_rpc_of_the_service() -> None:
    declared = {m.name for m in identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].methods}
    assert declared == set(CALLS) == set(ALLOWED)


def role_token(token: TokenFactory, role: Role) -> str:
    return token(
        role,
        store_id="s1" if role is Role.STORE else "",
        channel="CHANNEL_APP" if role is Role.CHANNEL else "",
    )


@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_rpc_refuses_missing_malformed_forged_and_expired_tokens(
    stub: identity_pb2_grpc.IdentityServiceStub, method: str, settings: Settings
) -> None:
    ours, theirs = TokenCodec.local(settings.issuer_key_dir()), throwaway_codec()
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    cases = {
        "missing": (),
        "not bearer": (("authorization", "Basic abc"),),
        "malformed": bearer("not-a-jwt"),
        "signed with another key": bearer(theirs.issue(Principal(Role.OPS, "ops")).token),
        "expired": bearer(ours.issue(Principal(Role.OPS, "ops"), 60, now=long_ago).token),
    }
    call = getattr(stub, method)
    for name, metadata in cases.items():
        with pytest.raises(grpc.RpcError) as caught:
            call(CALLS[method], metadata=metadata)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED, name


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("role", list(Role))
def test_every_rpc_admits_only_its_roles(
    stub: identity_pb2_grpc.IdentityServiceStub, token: TokenFactory, method: str, role: Role
) -> None:
    try:
        getattr(stub, method)(CALLS[method], metadata=bearer(role_token(token, role)))
        code, reason = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, reason = error.code(), error_reason(error)
    if role in ALLOWED[method]:
        # Admitted: whatever the answer, it is not a refusal of the role (a till may still be
        # refused another channel's account, with a reason of its own).
        assert (code, reason) != (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert code is not grpc.StatusCode.UNAUTHENTICATED
    else:
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
