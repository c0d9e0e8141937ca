"""Marketing's view of the services around it, over their gRPC contracts: its effects on
membership, delivered from its outbox through membership's RPCs, and the time zone of each of
fulfilment's stores.

Each effect carries the key the grant derived for it, so a delivery repeated (a relay that died
after the call, two replicas leasing in turn) changes nothing on membership's side. A refusal is
final and left for ops; an unanswered call is tried again later. A store's zone is what a member
whose profile names none is reached in, at their home store's local time."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import grpc

from quanyu.clients import failure_of
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.outbox import Deliver, refusals_are_final
from quanyu.wire import to_timestamp
from services.marketing.handlers.effects import GRANT_POINTS, ISSUE_COUPON, UPDATE_TAGS

# Every effect goes to membership, in the order its grants made them.
LANES = {"membership": (ISSUE_COUPON, GRANT_POINTS, UPDATE_TAGS)}
# How long one call to membership may take before the relay tries it again later.
CALL_TIMEOUT_SECONDS = 5.0


def deliverers(membership: membership_pb2_grpc.MembershipServiceStub) -> dict[str, Deliver]:
    def issue_coupon(payload: dict[str, Any]) -> None:
        membership.IssueCoupon(
            membership_pb2.IssueCouponRequest(
                member_id=payload["member_id"],
                discount_cents=payload["discount_cents"],
                min_spend_cents=payload["min_spend_cents"],
                expire_time=to_timestamp(datetime.fromisoformat(payload["expire_time"])),
                request_id=payload["request_id"],
                campaign_id=payload["campaign_id"],
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )

    def grant_points(payload: dict[str, Any]) -> None:
        membership.GrantPoints(
            membership_pb2.GrantPointsRequest(
                member_id=payload["member_id"],
                points=payload["points"],
                source_id=payload["source_id"],
                reason=f"campaign {payload['campaign_id']}",
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )

    def update_tags(payload: dict[str, Any]) -> None:
        membership.UpdateTags(
            membership_pb2.UpdateTagsRequest(
                member_id=payload["member_id"],
                add_tags=payload.get("add_tags", []),
                remove_tags=payload.get("remove_tags", []),
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )

    plain: dict[str, Deliver] = {
        ISSUE_COUPON: issue_coupon,
        GRANT_POINTS: grant_points,
        UPDATE_TAGS: update_tags,
    }
    return {kind: refusals_are_final("membership", deliver) for kind, deliver in plain.items()}


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
