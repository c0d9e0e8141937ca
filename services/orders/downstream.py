"""Orders' view of the services it calls, over their gRPC contracts.

Answers come back as domain values and failures as domain errors: a service that cannot be
reached (down, too slow, overloaded) is Unavailable; any other refusal keeps its code, reason and
field violations so the caller of orders learns exactly what the other service said.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.clients import failure_of
from quanyu.common.v1 import common_pb2
from quanyu.errors import FailedPrecondition, NotFound
from quanyu.events import ingest_request
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from services.orders.domain import CustomerRef, FulfilmentType, Line, Location, Member, Where
from services.orders.ports import Customer, Earn, Placed

T = TypeVar("T")

_TYPES = {
    FulfilmentType.DELIVERY: common_pb2.FULFILMENT_TYPE_DELIVERY,
    FulfilmentType.PICKUP: common_pb2.FULFILMENT_TYPE_PICKUP,
    FulfilmentType.IN_STORE: common_pb2.FULFILMENT_TYPE_IN_STORE,
}


def _stamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


class GrpcDownstream:
    def __init__(
        self,
        identity: identity_pb2_grpc.IdentityServiceStub,
        membership: membership_pb2_grpc.MembershipServiceStub,
        fulfilment: fulfilment_pb2_grpc.FulfilmentServiceStub,
        marketing: marketing_pb2_grpc.MarketingServiceStub,
        *,
        assign_timeout: float,
    ) -> None:
        self._identity = identity
        self._membership = membership
        self._fulfilment = fulfilment
        self._marketing = marketing
        self._assign_timeout = assign_timeout

    @staticmethod
    def _call(service: str, method: Callable[..., T], request: Any, **options: Any) -> T:
        try:
            return method(request, **options)
        except grpc.RpcError as error:
            raise failure_of(service, error) from error

    # --- identity -----------------------------------------------------------------------------

    def resolve_customer(self, ref: CustomerRef) -> Customer:
        if ref.customer_id:
            found = self._call(
                "identity",
                self._identity.GetCustomer,
                identity_pb2.GetCustomerRequest(customer_id=ref.customer_id),
            ).customer
        else:
            request = identity_pb2.ResolveCustomerRequest(phone=ref.phone)
            if ref.account_external_id:
                request.account.CopyFrom(
                    common_pb2.ChannelAccount(
                        channel=common_pb2.Channel.Value(ref.account_channel),
                        external_id=ref.account_external_id,
                    )
                )
            found = self._call("identity", self._identity.ResolveCustomer, request).customer
        accounts = tuple((common_pb2.Channel.Name(a.channel), str(a.external_id)) for a in found.accounts)
        return Customer(str(found.customer_id), frozenset(channel for channel, _ in accounts), accounts)

    # --- membership ---------------------------------------------------------------------------

    def enroll(self, customer_id: str, home_store_id: str, guide_id: str, channel: str) -> Member:
        answer = self._call(
            "membership",
            self._membership.Enroll,
            membership_pb2.EnrollRequest(
                customer_id=customer_id,
                home_store_id=home_store_id,
                guide_id=guide_id,
                channel=common_pb2.Channel.Value(channel),
            ),
        )
        member = answer.member
        return Member(member.member_id, member.home_store_id, member.guide_id)

    def redeem_coupon(
        self, code: str, member_id: str, order_id: str, amount_cents: int, *, store_id: str, member_code: str
    ) -> int:
        answer = self._call(
            "membership",
            self._membership.RedeemCoupon,
            membership_pb2.RedeemCouponRequest(
                code=code,
                member_id=member_id,
                order_id=order_id,
                order_amount_cents=amount_cents,
                store_id=store_id,
                member_code=member_code,
            ),
        )
        return int(answer.discount_cents)

    def redeem_points(
        self, member_id: str, points: int, source_id: str, *, store_id: str, member_code: str
    ) -> None:
        self._call(
            "membership",
            self._membership.RedeemPoints,
            membership_pb2.RedeemPointsRequest(
                member_id=member_id,
                points=points,
                source_id=source_id,
                store_id=store_id,
                member_code=member_code,
            ),
        )

    def release_coupon(self, code: str, order_id: str) -> None:
        self._call(
            "membership",
            self._membership.ReleaseCoupon,
            membership_pb2.ReleaseCouponRequest(code=code, order_id=order_id),
        )

    def reverse_points(self, source_id: str, reason: str) -> None:
        self._call(
            "membership",
            self._membership.ReversePoints,
            membership_pb2.ReversePointsRequest(source_id=source_id, reason=reason),
        )

    def earn_points(self, member_id: str, source_id: str, spend_cents: int, store_id: str) -> int:
        answer = self._call(
            "membership",
            self._membership.EarnPoints,
            membership_pb2.EarnPointsRequest(
                member_id=member_id, source_id=source_id, spend_cents=spend_cents, store_id=store_id
            ),
        )
        return int(answer.entry.points)

    def earn_points_many(self, earns: Sequence[Earn]) -> list[int]:
        answer = self._call(
            "membership",
            self._membership.BatchEarnPoints,
            membership_pb2.BatchEarnPointsRequest(
                requests=[
                    membership_pb2.EarnPointsRequest(
                        member_id=e.member_id,
                        source_id=e.source_id,
                        spend_cents=e.spend_cents,
                        store_id=e.store_id,
                    )
                    for e in earns
                ]
            ),
        )
        return [int(entry.points) for entry in answer.entries]

    # --- fulfilment ---------------------------------------------------------------------------

    def assign(
        self, order_id: str, lines: Sequence[Line], kind: FulfilmentType, where: Where, *, at: datetime
    ) -> list[Placed]:
        location = where.location
        if location is None and where.near_store_id:
            location = self._location_of(where.near_store_id)
        request = fulfilment_pb2.AssignStoreRequest(
            order_id=order_id,
            lines=[
                common_pb2.Line(sku=ln.sku, quantity=ln.quantity, unit_price_cents=ln.unit_price_cents)
                for ln in lines
            ],
            fulfilment_type=_TYPES[kind],
            exclude_store_ids=list(where.exclude),
            preferred_store_id=where.preferred_store_id,
            at_time=_stamp(at),
        )
        if location is not None:
            request.location.CopyFrom(
                common_pb2.LatLng(
                    latitude=location[0],
                    longitude=location[1],
                    system=common_pb2.CoordinateSystem.ValueType(location[2]),
                )
            )
        # A short deadline: when fulfilment is slow the order waits as PENDING_ASSIGNMENT
        # rather than keeping the customer waiting.
        answer = self._call("fulfilment", self._fulfilment.AssignStore, request, timeout=self._assign_timeout)
        return [
            Placed(a.store_id, tuple(Line(ln.sku, ln.quantity, ln.unit_price_cents) for ln in a.lines))
            for a in answer.assignments
        ]

    def _location_of(self, store_id: str) -> Location:
        """A store's own location, the reference point for the stores near it."""
        try:
            store = self._call(
                "fulfilment", self._fulfilment.GetStore, fulfilment_pb2.GetStoreRequest(store_id=store_id)
            ).store
        except NotFound as gone:
            raise FailedPrecondition(
                f"store {store_id} is no longer known, and the order has no location to look from",
                reason="NO_STORE_IN_RANGE",
            ) from gone
        where = store.location
        return (where.latitude, where.longitude, int(where.system))

    def release(self, order_id: str, store_id: str = "") -> None:
        self._call(
            "fulfilment",
            self._fulfilment.ReleaseReservation,
            fulfilment_pb2.ReleaseReservationRequest(order_id=order_id, store_id=store_id),
        )

    def commit(self, order_id: str) -> None:
        self._call(
            "fulfilment",
            self._fulfilment.CommitReservation,
            fulfilment_pb2.CommitReservationRequest(order_id=order_id),
        )

    def commit_many(self, order_ids: Sequence[str]) -> None:
        self._call(
            "fulfilment",
            self._fulfilment.BatchCommitReservations,
            fulfilment_pb2.BatchCommitReservationsRequest(
                requests=[fulfilment_pb2.CommitReservationRequest(order_id=o) for o in order_ids]
            ),
        )

    def is_open(self, store_id: str, at: datetime) -> bool:
        answer = self._call(
            "fulfilment",
            self._fulfilment.CheckStoreOpen,
            fulfilment_pb2.CheckStoreOpenRequest(store_id=store_id, at_time=_stamp(at)),
        )
        return bool(answer.open)

    # --- marketing ----------------------------------------------------------------------------

    def ingest_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        self._call(
            "marketing",
            self._marketing.IngestEvents,
            ingest_request(events),
        )
