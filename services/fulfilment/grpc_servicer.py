"""FulfilmentService over gRPC: messages in, use cases called, messages out. No rules live here:
what a request may hold is checked by the domain (domain/requests.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import grpc

from quanyu.auth import ANY_ROLE, Role, current_principal
from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.server import Servicer, current_actor, rpc_policy
from quanyu.wire import from_timestamp, to_timestamp
from services.fulfilment.domain.assignment import Assignment, FulfilmentType, Line
from services.fulfilment.domain.coordinates import MapPoint
from services.fulfilment.domain.reservations import StockLevel
from services.fulfilment.domain.stores import Store, StoreDraft, StoreStatus
from services.fulfilment.handlers import FulfilmentService

SERVICE = fulfilment_pb2.DESCRIPTOR.services_by_name["FulfilmentService"]
_STOCK_KEEPERS = (Role.OPS, Role.SERVICE, Role.STORE)
_ASSIGNERS = (Role.SERVICE, Role.OPS)
POLICY = rpc_policy(
    SERVICE,
    {
        "UpsertStore": (Role.OPS,),
        "ImportStores": (Role.OPS,),
        "GetStore": ANY_ROLE,
        "ListStores": ANY_ROLE,
        "SetStock": _STOCK_KEEPERS,
        "GetStock": _STOCK_KEEPERS,
        "FindNearestStores": ANY_ROLE,
        "AssignStore": _ASSIGNERS,
        "ReleaseReservation": _ASSIGNERS,
        "CommitReservation": _ASSIGNERS,
        "BatchCommitReservations": _ASSIGNERS,
        "ExplainAssignment": (Role.OPS,),
        "CheckStoreOpen": (Role.SERVICE, Role.OPS, Role.STORE),
    },
)

_TYPES_OUT = {
    FulfilmentType.DELIVERY: common_pb2.FULFILMENT_TYPE_DELIVERY,
    FulfilmentType.PICKUP: common_pb2.FULFILMENT_TYPE_PICKUP,
    FulfilmentType.IN_STORE: common_pb2.FULFILMENT_TYPE_IN_STORE,
}
_STATUS_OUT = {
    StoreStatus.ACTIVE: fulfilment_pb2.STORE_STATUS_ACTIVE,
    StoreStatus.PAUSED: fulfilment_pb2.STORE_STATUS_PAUSED,
    StoreStatus.CLOSED: fulfilment_pb2.STORE_STATUS_CLOSED,
}


def _name(enum: Any, number: int, prefix: str) -> str:
    """An enum value as the domain reads it: "" when unspecified, its name without the enum's
    prefix (`FULFILMENT_TYPE_PICKUP` is "PICKUP"), or, for a number this build does not know, the
    number, which the domain's checks report with every other problem of the request."""
    if number == 0:
        return ""
    if number not in enum.values():
        return str(number)
    return str(enum.Name(number)).removeprefix(prefix)


def point_from(message: common_pb2.LatLng) -> MapPoint:
    return MapPoint(
        message.latitude,
        message.longitude,
        _name(common_pb2.CoordinateSystem, message.system, "COORDINATE_SYSTEM_"),
    )


def _point(request: Any) -> MapPoint | None:
    return point_from(request.location) if request.HasField("location") else None


def _type(number: int) -> str:
    return _name(common_pb2.FulfilmentType, number, "FULFILMENT_TYPE_")


def _lines(messages: Iterable[common_pb2.Line]) -> list[Line]:
    return [Line(m.sku, m.quantity, m.unit_price_cents) for m in messages]


def _at(request: Any) -> datetime | None:
    """The request's at_time; None when it names none (the use case takes now)."""
    return from_timestamp(request.at_time, field_name="at_time", present=request.HasField("at_time"))


def draft_from(message: fulfilment_pb2.Store) -> StoreDraft:
    point = _point(message)
    return StoreDraft(
        store_id=message.store_id,
        name=message.name,
        latitude=point.latitude if point else None,
        longitude=point.longitude if point else None,
        status=_name(fulfilment_pb2.StoreStatus, message.status, "STORE_STATUS_"),
        delivery_radius_m=message.delivery_radius_m,
        delivery_zone_geojson=message.delivery_zone_geojson,
        opening_hours=[(h.weekday, h.open, h.close) for h in message.opening_hours],
        timezone=message.timezone,
        max_active_orders=message.max_active_orders,
        priority=message.priority,
        coordinate_system=point.system if point else "",
    )


def store_message(store: Store) -> fulfilment_pb2.Store:
    return fulfilment_pb2.Store(
        store_id=store.store_id,
        name=store.name,
        location=_wgs84((store.latitude, store.longitude)),
        status=_STATUS_OUT[store.status],
        delivery_radius_m=store.delivery_radius_m,
        delivery_zone_geojson=store.delivery_zone_geojson,
        opening_hours=[
            fulfilment_pb2.OpeningHours(
                weekday=h.weekday, open=h.open.strftime("%H:%M"), close=h.close.strftime("%H:%M")
            )
            for h in store.opening_hours
        ],
        timezone=store.timezone,
        max_active_orders=store.max_active_orders,
        priority=store.priority,
    )


def assignment_message(assignment: Assignment) -> fulfilment_pb2.Assignment:
    return fulfilment_pb2.Assignment(
        store_id=assignment.store_id,
        distance_m=assignment.distance_m,
        lines=[
            common_pb2.Line(sku=ln.sku, quantity=ln.quantity, unit_price_cents=ln.unit_price_cents)
            for ln in assignment.lines
        ],
    )


def _wgs84(location: tuple[float, float]) -> common_pb2.LatLng:
    return common_pb2.LatLng(
        latitude=location[0], longitude=location[1], system=common_pb2.COORDINATE_SYSTEM_WGS84
    )


class FulfilmentServicer(
    Servicer[FulfilmentService], fulfilment_pb2_grpc.FulfilmentServiceServicer, service=SERVICE, policy=POLICY
):
    def UpsertStore(
        self, request: fulfilment_pb2.UpsertStoreRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.UpsertStoreResponse:
        draft = draft_from(request.store) if request.HasField("store") else None
        return fulfilment_pb2.UpsertStoreResponse(
            store=store_message(self._service.upsert_store(draft, current_actor()))
        )

    def ImportStores(
        self, request: fulfilment_pb2.ImportStoresRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ImportStoresResponse:
        upserted, errors = self._service.import_stores(
            [draft_from(m) for m in request.stores], current_actor()
        )
        return fulfilment_pb2.ImportStoresResponse(
            upserted=upserted,
            errors=[
                fulfilment_pb2.RowError(index=e.index, field=e.field, description=e.description)
                for e in errors
            ],
        )

    def GetStore(
        self, request: fulfilment_pb2.GetStoreRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.GetStoreResponse:
        return fulfilment_pb2.GetStoreResponse(store=store_message(self._service.get_store(request.store_id)))

    def ListStores(
        self, request: fulfilment_pb2.ListStoresRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ListStoresResponse:
        stores, token = self._service.list_stores(current_principal(), request.page_size, request.page_token)
        return fulfilment_pb2.ListStoresResponse(stores=map(store_message, stores), next_page_token=token)

    def SetStock(
        self, request: fulfilment_pb2.SetStockRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.SetStockResponse:
        levels = self._service.set_stock(
            current_principal(),
            request.store_id,
            [(level.sku, level.on_hand) for level in request.levels],
            current_actor(),
        )
        return fulfilment_pb2.SetStockResponse(levels=[_level(lv) for lv in levels])

    def GetStock(
        self, request: fulfilment_pb2.GetStockRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.GetStockResponse:
        levels = self._service.get_stock(current_principal(), request.store_id, list(request.skus))
        return fulfilment_pb2.GetStockResponse(levels=[_level(lv) for lv in levels])

    def FindNearestStores(
        self, request: fulfilment_pb2.FindNearestStoresRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.FindNearestStoresResponse:
        matches = self._service.find_nearest(
            _point(request),
            limit=request.limit,
            max_distance_m=request.max_distance_m,
            lines=_lines(request.lines),
            fulfilment_type=_type(request.fulfilment_type),
            at=_at(request),
        )
        return fulfilment_pb2.FindNearestStoresResponse(
            matches=[
                fulfilment_pb2.StoreMatch(
                    store=store_message(m.store),
                    distance_m=m.distance_m,
                    can_fulfil=m.can_fulfil,
                    reasons=m.reasons,
                )
                for m in matches
            ]
        )

    def AssignStore(
        self, request: fulfilment_pb2.AssignStoreRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.AssignStoreResponse:
        placed = self._service.assign(
            request.order_id,
            _point(request),
            _lines(request.lines),
            _type(request.fulfilment_type),
            _at(request),
            exclude=list(request.exclude_store_ids),
            preferred_store_id=request.preferred_store_id,
            allow_split=request.allow_split,
        )
        return fulfilment_pb2.AssignStoreResponse(assignments=[assignment_message(a) for a in placed])

    def ReleaseReservation(
        self, request: fulfilment_pb2.ReleaseReservationRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ReleaseReservationResponse:
        self._service.release(request.order_id, request.store_id)
        return fulfilment_pb2.ReleaseReservationResponse()

    def CommitReservation(
        self, request: fulfilment_pb2.CommitReservationRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.CommitReservationResponse:
        self._service.commit(request.order_id)
        return fulfilment_pb2.CommitReservationResponse()

    def BatchCommitReservations(
        self, request: fulfilment_pb2.BatchCommitReservationsRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.BatchCommitReservationsResponse:
        self._service.commit_many([r.order_id for r in request.requests])
        return fulfilment_pb2.BatchCommitReservationsResponse()

    def CheckStoreOpen(
        self, request: fulfilment_pb2.CheckStoreOpenRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.CheckStoreOpenResponse:
        return fulfilment_pb2.CheckStoreOpenResponse(
            open=self._service.is_open(current_principal(), request.store_id, _at(request))
        )

    def ExplainAssignment(
        self, request: fulfilment_pb2.ExplainAssignmentRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ExplainAssignmentResponse:
        found = self._service.explain(request.order_id)
        return fulfilment_pb2.ExplainAssignmentResponse(
            decision=fulfilment_pb2.AssignmentDecision(
                order_id=found.order_id,
                location=_wgs84(found.location) if found.location else None,
                fulfilment_type=_TYPES_OUT[FulfilmentType(found.fulfilment_type)],
                assignments=[assignment_message(a) for a in found.assignments],
                candidates=[
                    fulfilment_pb2.CandidateVerdict(
                        store_id=v.store_id,
                        distance_m=v.distance_m or 0.0,
                        chosen=v.chosen,
                        reasons=v.reasons,
                    )
                    for v in found.verdicts
                ],
                decide_time=to_timestamp(found.decide_time),
                outcome_reason=found.outcome_reason,
            )
        )


def _level(level: StockLevel) -> fulfilment_pb2.StockLevel:
    return fulfilment_pb2.StockLevel(
        store_id=level.store_id,
        sku=level.sku,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
    )
