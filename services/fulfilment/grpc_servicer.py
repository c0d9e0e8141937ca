"""FulfilmentService over gRPC: messages in, use cases called, messages out. No rules live here."""

from __future__ import annotations

import math

import grpc

from quanyu.auth import ANY_ROLE, Role, current_principal
from quanyu.common.v1 import common_pb2
from quanyu.db import utcnow
from quanyu.errors import InvalidArgument, Violations
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.server import rpc_policy
from quanyu.wire import from_timestamp, to_timestamp
from services.fulfilment.domain.assignment import Assignment, AssignmentRequest, FulfilmentType, Line
from services.fulfilment.domain.coordinates import CoordinateSystem, to_wgs84
from services.fulfilment.domain.stores import Store, StoreDraft, StoreStatus
from services.fulfilment.handlers import MAX_EXCLUDED_STORES, MAX_LINES, MAX_SKU_LENGTH, FulfilmentService
from services.fulfilment.storage import StockLevel

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
        "ExplainAssignment": (Role.OPS,),
        "CheckStoreOpen": (Role.SERVICE, Role.OPS, Role.STORE),
    },
)

_SYSTEMS = {
    common_pb2.COORDINATE_SYSTEM_UNSPECIFIED: CoordinateSystem.WGS84,
    common_pb2.COORDINATE_SYSTEM_WGS84: CoordinateSystem.WGS84,
    common_pb2.COORDINATE_SYSTEM_GCJ02: CoordinateSystem.GCJ02,
    common_pb2.COORDINATE_SYSTEM_BD09: CoordinateSystem.BD09,
}
_STATUS_IN = {
    fulfilment_pb2.STORE_STATUS_UNSPECIFIED: None,
    fulfilment_pb2.STORE_STATUS_ACTIVE: StoreStatus.ACTIVE,
    fulfilment_pb2.STORE_STATUS_PAUSED: StoreStatus.PAUSED,
    fulfilment_pb2.STORE_STATUS_CLOSED: StoreStatus.CLOSED,
}
_STATUS_OUT = {v: k for k, v in _STATUS_IN.items() if v is not None}
_TYPES = {
    common_pb2.FULFILMENT_TYPE_DELIVERY: FulfilmentType.DELIVERY,
    common_pb2.FULFILMENT_TYPE_PICKUP: FulfilmentType.PICKUP,
    common_pb2.FULFILMENT_TYPE_IN_STORE: FulfilmentType.IN_STORE,
}
_TYPES_OUT = {v: k for k, v in _TYPES.items()}


def location_from(
    message: common_pb2.LatLng, field_name: str, violations: Violations
) -> tuple[float, float] | None:
    """A caller's location in WGS-84, whatever map it came from; None (and a violation) if bad."""
    latitude, longitude = message.latitude, message.longitude
    system = _SYSTEMS.get(message.system)
    ok = True
    if not (math.isfinite(latitude) and -90 <= latitude <= 90):
        violations.add(f"{field_name}.latitude", "must be a number of degrees from -90 to 90")
        ok = False
    if not (math.isfinite(longitude) and -180 <= longitude <= 180):
        violations.add(f"{field_name}.longitude", "must be a number of degrees from -180 to 180")
        ok = False
    if system is None:
        violations.add(f"{field_name}.system", "is not a known coordinate system")
        ok = False
    if not ok or system is None:
        return None
    return to_wgs84(latitude, longitude, system)


def lines_from(
    messages: list[common_pb2.Line], violations: Violations, *, required: bool
) -> tuple[Line, ...]:
    if required and not messages:
        violations.add("lines", "name at least one line")
    if len(messages) > MAX_LINES:
        violations.add("lines", f"at most {MAX_LINES} lines")
        return ()
    for index, line in enumerate(messages):
        violations.text(line.sku, f"lines[{index}].sku", max_length=MAX_SKU_LENGTH)
        violations.check(line.quantity > 0, f"lines[{index}].quantity", "must be greater than zero")
        violations.check(
            line.unit_price_cents >= 0, f"lines[{index}].unit_price_cents", "must not be negative"
        )
    return tuple(Line(m.sku, m.quantity, m.unit_price_cents) for m in messages)


def draft_from(message: fulfilment_pb2.Store) -> StoreDraft:
    violations = Violations()
    location = None
    if message.HasField("location"):
        location = location_from(message.location, "store.location", violations)
    if message.status not in _STATUS_IN:
        violations.add("store.status", "is not a known store status")
    violations.raise_if_any()
    return StoreDraft(
        store_id=message.store_id,
        name=message.name,
        latitude=location[0] if location else None,
        longitude=location[1] if location else None,
        status=_STATUS_IN[message.status],
        delivery_radius_m=message.delivery_radius_m,
        delivery_zone_geojson=message.delivery_zone_geojson,
        opening_hours=[(h.weekday, h.open, h.close) for h in message.opening_hours],
        timezone=message.timezone,
        max_active_orders=message.max_active_orders,
        priority=message.priority,
    )


def store_message(store: Store) -> fulfilment_pb2.Store:
    return fulfilment_pb2.Store(
        store_id=store.store_id,
        name=store.name,
        location=common_pb2.LatLng(
            latitude=store.latitude, longitude=store.longitude, system=common_pb2.COORDINATE_SYSTEM_WGS84
        ),
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


class FulfilmentServicer(fulfilment_pb2_grpc.FulfilmentServiceServicer):
    def __init__(self, service: FulfilmentService) -> None:
        self._service = service

    def UpsertStore(
        self, request: fulfilment_pb2.UpsertStoreRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.UpsertStoreResponse:
        if not request.HasField("store"):
            raise InvalidArgument("store", "is required")
        return fulfilment_pb2.UpsertStoreResponse(
            store=store_message(self._service.upsert_store(draft_from(request.store)))
        )

    def ImportStores(
        self, request: fulfilment_pb2.ImportStoresRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ImportStoresResponse:
        drafts, errors = [], []
        for index, message in enumerate(request.stores):
            try:
                drafts.append(draft_from(message))
            except InvalidArgument as error:
                errors += [
                    fulfilment_pb2.RowError(
                        index=index,
                        field=v.field.replace("store", f"stores[{index}]", 1),
                        description=v.description,
                    )
                    for v in error.violations
                ]
                drafts.append(StoreDraft("", "", None, None, None, 0, "", [], "", 0, 0))
        bad_rows = {e.index for e in errors}
        upserted, row_errors = self._service.import_stores(drafts)
        errors += [
            fulfilment_pb2.RowError(index=e.index, field=e.field, description=e.description)
            for e in row_errors
            if e.index not in bad_rows
        ]
        return fulfilment_pb2.ImportStoresResponse(
            upserted=upserted, errors=sorted(errors, key=lambda e: e.index)
        )

    def GetStore(
        self, request: fulfilment_pb2.GetStoreRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.GetStoreResponse:
        return fulfilment_pb2.GetStoreResponse(store=store_message(self._service.get_store(request.store_id)))

    def ListStores(
        self, request: fulfilment_pb2.ListStoresRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ListStoresResponse:
        stores, token = self._service.list_stores(current_principal(), request.page_size, request.page_token)
        return fulfilment_pb2.ListStoresResponse(
            stores=[store_message(s) for s in stores], next_page_token=token
        )

    def SetStock(
        self, request: fulfilment_pb2.SetStockRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.SetStockResponse:
        levels = self._service.set_stock(
            current_principal(), request.store_id, [(level.sku, level.on_hand) for level in request.levels]
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
        violations = Violations()
        location = None
        if request.HasField("location"):
            location = location_from(request.location, "location", violations)
        else:
            violations.add("location", "is required")
        lines = lines_from(list(request.lines), violations, required=False)
        kind = _TYPES.get(request.fulfilment_type, FulfilmentType.PICKUP)
        if request.fulfilment_type not in (*_TYPES, common_pb2.FULFILMENT_TYPE_UNSPECIFIED):
            violations.add("fulfilment_type", "is not a known fulfilment type")
        violations.raise_if_any()
        assert location is not None
        at = (
            from_timestamp(request.at_time, field_name="at_time", present=request.HasField("at_time"))
            or utcnow()
        )
        matches = self._service.find_nearest(
            location,
            limit=request.limit,
            max_distance_m=request.max_distance_m,
            lines=[(ln.sku, ln.quantity) for ln in lines],
            fulfilment_type=kind,
            at=at,
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
        violations = Violations()
        violations.text(request.order_id, "order_id", max_length=64)
        kind = _TYPES.get(request.fulfilment_type)
        if kind is None:
            violations.add("fulfilment_type", "must be DELIVERY, PICKUP or IN_STORE")
        location = None
        if request.HasField("location"):
            location = location_from(request.location, "location", violations)
        elif kind is FulfilmentType.DELIVERY:
            violations.add("location", "is required for delivery")
        if kind is FulfilmentType.IN_STORE and not request.preferred_store_id:
            violations.add("preferred_store_id", "is required for an in-store order")
        if (
            kind is FulfilmentType.PICKUP
            and not request.HasField("location")
            and not request.preferred_store_id
        ):
            violations.add("location", "give the customer's location or a preferred store for pickup")
        violations.text(request.preferred_store_id, "preferred_store_id", max_length=64, required=False)
        if len(request.exclude_store_ids) > MAX_EXCLUDED_STORES:
            violations.add("exclude_store_ids", f"at most {MAX_EXCLUDED_STORES} stores")
        else:
            for index, store_id in enumerate(request.exclude_store_ids):
                violations.text(store_id, f"exclude_store_ids[{index}]", max_length=64)
        lines = lines_from(list(request.lines), violations, required=True)
        violations.raise_if_any()
        assert kind is not None
        at = (
            from_timestamp(request.at_time, field_name="at_time", present=request.HasField("at_time"))
            or utcnow()
        )
        placed = self._service.assign(
            AssignmentRequest(
                order_id=request.order_id,
                location=location,
                lines=lines,
                fulfilment_type=kind,
                at=at,
                exclude=frozenset(request.exclude_store_ids),
                preferred_store_id=request.preferred_store_id,
                allow_split=request.allow_split,
            )
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

    def CheckStoreOpen(
        self, request: fulfilment_pb2.CheckStoreOpenRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.CheckStoreOpenResponse:
        at = (
            from_timestamp(request.at_time, field_name="at_time", present=request.HasField("at_time"))
            or utcnow()
        )
        return fulfilment_pb2.CheckStoreOpenResponse(
            open=self._service.is_open(current_principal(), request.store_id, at)
        )

    def ExplainAssignment(
        self, request: fulfilment_pb2.ExplainAssignmentRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ExplainAssignmentResponse:
        found = self._service.explain(request.order_id)
        return fulfilment_pb2.ExplainAssignmentResponse(
            decision=fulfilment_pb2.AssignmentDecision(
                order_id=found.order_id,
                location=_wgs84(found.location) if found.location else None,
                fulfilment_type=_TYPES_OUT.get(
                    FulfilmentType(found.fulfilment_type), common_pb2.FULFILMENT_TYPE_UNSPECIFIED
                ),
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
