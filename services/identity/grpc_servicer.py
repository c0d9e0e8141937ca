"""IdentityService over gRPC: messages in, use cases called, messages out. No rules live here."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.auth import Role, current_principal
from quanyu.common.v1 import common_pb2
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.keys import public_pem
from quanyu.server import Servicer, current_actor, rpc_policy
from quanyu.wire import to_timestamp
from services.identity.domain import ChannelAccount, Customer, ResolveRequest
from services.identity.handlers import IdentityService

SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
_CALLERS = (Role.CHANNEL, Role.STORE, Role.SERVICE, Role.OPS)
POLICY = rpc_policy(
    SERVICE,
    {
        "ResolveCustomer": _CALLERS,
        "GetCustomer": _CALLERS,
        "LookupCustomer": _CALLERS,
        "LinkAccount": _CALLERS,
        "MergeCustomers": (Role.OPS,),
        "IssueToken": (Role.OPS,),
        "RevokeToken": (Role.OPS,),
        "GetTokenTrust": (Role.SERVICE, Role.OPS),
    },
)

_ROLES = {
    identity_pb2.ROLE_OPS: Role.OPS,
    identity_pb2.ROLE_SERVICE: Role.SERVICE,
    identity_pb2.ROLE_CHANNEL: Role.CHANNEL,
    identity_pb2.ROLE_STORE: Role.STORE,
}


def _channel(number: int) -> str:
    """A channel by its name; "" when unspecified, the number when this build does not know it
    (for the checks to report with every other problem of the request)."""
    if number == common_pb2.CHANNEL_UNSPECIFIED:
        return ""
    known = number in common_pb2.Channel.values()
    return common_pb2.Channel.Name(common_pb2.Channel.ValueType(number)) if known else str(number)


def account_from(message: common_pb2.ChannelAccount) -> ChannelAccount:
    """The account as sent; an unknown or unspecified channel is left empty, for the domain's
    checks to report with every other problem of the request."""
    channel = _channel(message.channel)
    return ChannelAccount(channel if channel.startswith("CHANNEL_") else "", message.external_id)


def customer_message(customer: Customer) -> identity_pb2.Customer:
    return identity_pb2.Customer(
        customer_id=customer.customer_id,
        display_name=customer.display_name,
        phone_masked=customer.phone_masked,
        accounts=[
            common_pb2.ChannelAccount(channel=common_pb2.Channel.Value(a.channel), external_id=a.external_id)
            for a in customer.accounts
        ],
        create_time=to_timestamp(customer.create_time),
    )


class IdentityServicer(
    Servicer[IdentityService], identity_pb2_grpc.IdentityServiceServicer, service=SERVICE, policy=POLICY
):
    def ResolveCustomer(
        self, request: identity_pb2.ResolveCustomerRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ResolveCustomerResponse:
        account = account_from(request.account) if request.HasField("account") else None
        resolved = self._service.resolve_customer(
            current_principal(), ResolveRequest.checked(account, request.phone, request.display_name)
        )
        return identity_pb2.ResolveCustomerResponse(
            customer=customer_message(resolved.customer), created=resolved.created
        )

    def GetCustomer(
        self, request: identity_pb2.GetCustomerRequest, context: grpc.ServicerContext
    ) -> identity_pb2.GetCustomerResponse:
        return identity_pb2.GetCustomerResponse(
            customer=customer_message(self._service.get_customer(current_principal(), request.customer_id))
        )

    def LookupCustomer(
        self, request: identity_pb2.LookupCustomerRequest, context: grpc.ServicerContext
    ) -> identity_pb2.LookupCustomerResponse:
        key = request.WhichOneof("key")
        if key == "account":
            customer = self._service.lookup_by_account(current_principal(), account_from(request.account))
        else:
            customer = self._service.lookup_by_phone(current_principal(), request.phone)
        return identity_pb2.LookupCustomerResponse(customer=customer_message(customer))

    def LinkAccount(
        self, request: identity_pb2.LinkAccountRequest, context: grpc.ServicerContext
    ) -> identity_pb2.LinkAccountResponse:
        account = account_from(request.account) if request.HasField("account") else None
        customer = self._service.link_account(current_principal(), request.customer_id, account)
        return identity_pb2.LinkAccountResponse(customer=customer_message(customer))

    def MergeCustomers(
        self, request: identity_pb2.MergeCustomersRequest, context: grpc.ServicerContext
    ) -> identity_pb2.MergeCustomersResponse:
        customer = self._service.merge_customers(
            request.survivor_customer_id, request.merged_customer_id, current_actor()
        )
        return identity_pb2.MergeCustomersResponse(customer=customer_message(customer))

    def IssueToken(
        self, request: identity_pb2.IssueTokenRequest, context: grpc.ServicerContext
    ) -> identity_pb2.IssueTokenResponse:
        issued = self._service.issue_token(
            _ROLES.get(request.role),
            subject=request.subject,
            store_id=request.store_id,
            channel=_channel(request.channel),
            ttl_seconds=request.ttl_seconds,
            actor=current_actor(),
        )
        return identity_pb2.IssueTokenResponse(
            token=issued.token, expire_time=to_timestamp(issued.expire_time), token_id=issued.token_id
        )

    def RevokeToken(
        self, request: identity_pb2.RevokeTokenRequest, context: grpc.ServicerContext
    ) -> identity_pb2.RevokeTokenResponse:
        self._service.revoke_token(token_id=request.token_id, subject=request.subject, actor=current_actor())
        return identity_pb2.RevokeTokenResponse()

    def GetTokenTrust(
        self, request: identity_pb2.GetTokenTrustRequest, context: grpc.ServicerContext
    ) -> identity_pb2.GetTokenTrustResponse:
        trust = self._service.token_trust()
        return identity_pb2.GetTokenTrustResponse(
            keys=[
                identity_pb2.TokenKey(kid=kid, public_key_pem=public_pem(key).decode())
                for kid, key in sorted(trust.keys.items())
            ],
            revoked_token_ids=sorted(trust.revocations.token_ids),
            revoked_subjects=[
                identity_pb2.RevokedSubject(subject=subject, issued_before=Timestamp(seconds=second))
                for subject, second in sorted(trust.revocations.subjects.items())
            ],
        )
