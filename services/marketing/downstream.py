"""Marketing's view of the services around it, over their gRPC contracts: its effects on
membership, delivered from its outbox through membership's RPCs, and the time zone of each of
fulfilment's stores.

Each effect carries the key the grant derived for it, so a delivery repeated (a relay that died
after the call, two replicas leasing in turn) changes nothing on membership's side. A refusal is
final and left for ops; an unanswered call is tried again later. A store's zone is what a member
whose profile names none is reached in, at their home store's local time.

A campaign reaching a million members leaves a million effects, so they go to membership in
batches (BatchIssueCoupons, BatchGrantPoints, BatchUpdateTags: all of a batch or none); a batch
refused is delivered again one call an effect, so only the bad effect is left for ops. The codes
of the coupons membership issues are put into the grants' messages waiting for them, which the
channels may then pull."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import grpc
from sqlalchemy.engine import Connection

from quanyu.clients import failure_of
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.outbox import BatchDeliverer, Deliver, DeliverMany, refusals_are_final
from quanyu.wire import to_timestamp
from services.marketing.handlers.effects import GRANT_POINTS, ISSUE_COUPON, UPDATE_TAGS
from services.marketing.ports import IssuedCoupon

# Every effect goes to membership, in the order its grants made them.
LANES = {"membership": (ISSUE_COUPON, GRANT_POINTS, UPDATE_TAGS)}
# How long one call to membership may take before the relay tries it again later.
CALL_TIMEOUT_SECONDS = 5.0
# Membership's cap on the requests of one batch call; a batch that large takes well under a second.
BATCH_SIZE = 500
BATCH_TIMEOUT_SECONDS = 30.0

CouponsIssued = Callable[[Sequence[IssuedCoupon]], object]
# The codes of a batch of coupons kept in the transaction that marks the batch delivered.
KeepIssued = Callable[[Connection, Sequence[IssuedCoupon]], object]


def _coupon(payload: dict[str, Any]) -> membership_pb2.IssueCouponRequest:
    return membership_pb2.IssueCouponRequest(
        member_id=payload["member_id"],
        discount_cents=payload["discount_cents"],
        min_spend_cents=payload["min_spend_cents"],
        expire_time=to_timestamp(datetime.fromisoformat(payload["expire_time"])),
        request_id=payload["request_id"],
        campaign_id=payload["campaign_id"],
    )


def _grant(payload: dict[str, Any]) -> membership_pb2.GrantPointsRequest:
    return membership_pb2.GrantPointsRequest(
        member_id=payload["member_id"],
        points=payload["points"],
        source_id=payload["source_id"],
        reason=f"campaign {payload['campaign_id']}",
    )


def _tags(payload: dict[str, Any]) -> membership_pb2.UpdateTagsRequest:
    return membership_pb2.UpdateTagsRequest(
        member_id=payload["member_id"],
        add_tags=payload.get("add_tags", []),
        remove_tags=payload.get("remove_tags", []),
    )


def _issued(
    payloads: Sequence[dict[str, Any]], coupons: Sequence[membership_pb2.Coupon]
) -> list[IssuedCoupon]:
    """Each coupon's code for its effect's grant: membership answers in the order it was asked."""
    return [
        IssuedCoupon(
            payload["grant_key"],
            payload["request_id"],
            coupon.code,
            campaign_id=payload["campaign_id"],
            member_id=payload["member_id"],
        )
        for payload, coupon in zip(payloads, coupons, strict=True)
    ]


def deliverers(
    membership: membership_pb2_grpc.MembershipServiceStub, coupons_issued: CouponsIssued
) -> dict[str, Deliver]:
    """One call an effect: each kind's delivery alone, and what a refused batch falls back to."""

    def issue_coupon(payload: dict[str, Any]) -> None:
        coupon = membership.IssueCoupon(_coupon(payload), timeout=CALL_TIMEOUT_SECONDS).coupon
        coupons_issued(_issued([payload], [coupon]))

    def grant_points(payload: dict[str, Any]) -> None:
        membership.GrantPoints(_grant(payload), timeout=CALL_TIMEOUT_SECONDS)

    def update_tags(payload: dict[str, Any]) -> None:
        membership.UpdateTags(_tags(payload), timeout=CALL_TIMEOUT_SECONDS)

    plain: dict[str, Deliver] = {
        ISSUE_COUPON: issue_coupon,
        GRANT_POINTS: grant_points,
        UPDATE_TAGS: update_tags,
    }
    return {kind: refusals_are_final("membership", deliver) for kind, deliver in plain.items()}


def batched(
    membership: membership_pb2_grpc.MembershipServiceStub, keep_issued: KeepIssued
) -> dict[str, BatchDeliverer]:
    """Up to BATCH_SIZE effects of a kind in one call; with `deliverers` for a refused batch."""

    def issue_coupons(payloads: list[dict[str, Any]]) -> list[IssuedCoupon]:
        request = membership_pb2.BatchIssueCouponsRequest(requests=[_coupon(p) for p in payloads])
        coupons = membership.BatchIssueCoupons(request, timeout=BATCH_TIMEOUT_SECONDS).coupons
        return _issued(payloads, coupons)

    def grant_points(payloads: list[dict[str, Any]]) -> None:
        request = membership_pb2.BatchGrantPointsRequest(requests=[_grant(p) for p in payloads])
        membership.BatchGrantPoints(request, timeout=BATCH_TIMEOUT_SECONDS)

    def update_tags(payloads: list[dict[str, Any]]) -> None:
        request = membership_pb2.BatchUpdateTagsRequest(requests=[_tags(p) for p in payloads])
        membership.BatchUpdateTags(request, timeout=BATCH_TIMEOUT_SECONDS)

    def guarded(deliver: DeliverMany) -> DeliverMany:
        return refusals_are_final("membership", deliver)

    return {
        # The codes are kept in the transaction that marks the batch delivered: should it not
        # commit, the batch is delivered again, membership answers with the same coupons, and
        # the codes are kept then.
        ISSUE_COUPON: BatchDeliverer(guarded(issue_coupons), size=BATCH_SIZE, keep=keep_issued),
        GRANT_POINTS: BatchDeliverer(guarded(grant_points), size=BATCH_SIZE),
        UPDATE_TAGS: BatchDeliverer(guarded(update_tags), size=BATCH_SIZE),
    }


# ListStores' largest page.
STORE_PAGE = 1000


class StoreZones:
    """Every store's IANA zone, read from fulfilment's ListStores and kept in memory: a run asks
    for a zone per member, far too often to ask fulfilment each time. `refresh` reads them all
    again (bootstrap runs it periodically); until the first refresh succeeds, and for a store
    fulfilment does not list, the zone is unknown ("") and the member counts as Asia/Shanghai."""

    def __init__(
        self,
        fulfilment: fulfilment_pb2_grpc.FulfilmentServiceStub,
        *,
        timeout: float = 10.0,
        page_size: int = STORE_PAGE,
    ) -> None:
        self._fulfilment = fulfilment
        self._timeout = timeout
        self._page_size = page_size
        self._zones: dict[str, str] = {}
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether a refresh has succeeded yet."""
        return self._loaded

    def zone(self, store_id: str) -> str:
        return self._zones.get(store_id, "")

    def zones(self) -> set[str]:
        return {zone for zone in self._zones.values() if zone}

    def refresh(self) -> int:
        """Read every store's zone; how many stores are known. A failure leaves the zones read
        before in place (Unavailable or the refusal fulfilment gave)."""
        zones: dict[str, str] = {}
        token = ""
        while True:
            try:
                answer = self._fulfilment.ListStores(
                    fulfilment_pb2.ListStoresRequest(page_size=self._page_size, page_token=token),
                    timeout=self._timeout,
                )
            except grpc.RpcError as error:
                raise failure_of("fulfilment", error) from error
            zones.update({store.store_id: store.timezone for store in answer.stores})
            token = answer.next_page_token
            if not token:
                break
        # Swapped whole: a run reading zones meanwhile sees the old map or the new, not half of each.
        with self._lock:
            self._zones = zones
            self._loaded = True
        return len(zones)
