"""Random well-formed messages sent to every RPC of every service, as a caller the RPC admits.

Each request is built by walking its message's descriptor. Some are wild throughout, others sound
but for a field or two. A wild field gets an extreme integer, a NaN or infinite double, an empty,
control-laden or 100 kB string, an unknown enum value, a timestamp at or past the calendar's ends,
a repeated field with a thousand elements, nested messages; a sound one gets a value in range and,
when it is named like an id (`store_id`, `member_id`, `order_id`, `code`, `phone`, `sku`,
`page_token`...), the id of something that exists, so requests reach past validation into the
rules and the storage behind them.

No answer may be UNKNOWN or INTERNAL (or UNAVAILABLE, DEADLINE_EXCEEDED and the like, with every
service up: a hang shows as the client's deadline passing), no service may log an error it did not
expect or give up an outbox effect for good, every process must stay alive and every service
SERVING; and membership's books must still balance afterwards.
"""

from __future__ import annotations

import math
import random
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from quanyu.auth import TOKEN_CHANNELS, Role
from quanyu.common.v1 import common_pb2
from quanyu.config import SERVICE_NAMES
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu.identity.v1 import identity_pb2
from quanyu.marketing.v1 import marketing_pb2
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from services.fulfilment.grpc_servicer import POLICY as FULFILMENT_POLICY
from services.identity.grpc_servicer import POLICY as IDENTITY_POLICY
from services.marketing.grpc_servicer import POLICY as MARKETING_POLICY
from services.membership.grpc_servicer import POLICY as MEMBERSHIP_POLICY
from services.orders.grpc_servicer import POLICY as ORDERS_POLICY
from tests.membership.test_ledger_invariants import check_books
from tests.orders.platform import Metadata
from tests.reliability.deployment import Deployment
from tests.reliability.world import World, attempt

SERVICES: dict[str, ServiceDescriptor] = {
    "identity": identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
    "membership": membership_pb2.DESCRIPTOR.services_by_name["MembershipService"],
    "orders": orders_pb2.DESCRIPTOR.services_by_name["OrderService"],
    "fulfilment": fulfilment_pb2.DESCRIPTOR.services_by_name["FulfilmentService"],
    "marketing": marketing_pb2.DESCRIPTOR.services_by_name["MarketingService"],
}
POLICIES = {**IDENTITY_POLICY, **MEMBERSHIP_POLICY, **ORDERS_POLICY, **FULFILMENT_POLICY, **MARKETING_POLICY}
# What a service may answer to a request it dislikes; anything else is the server's fault.
REFUSALS = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # a message over the server's size limit
    }
)
DEADLINE = 20.0
MAX_DEPTH = 4
BIG = 100_000  # characters in a "100 kB" string
MESSAGE_BUDGET = 3_000_000  # bytes of strings one request may carry
CHANNELS = sorted(TOKEN_CHANNELS)  # every channel a channel token may name
# Field descriptors come as pure-Python or upb objects, which the stubs type apart.
Field = Any


@dataclass
class FuzzFigures:
    cases: int = 0
    server_errors: int = 0  # answers no valid request should get, crashes and hangs
    logged_errors: int = 0  # errors the services logged and did not expect
    effects_given_up: int = 0  # outbox effects refused for good by the service they were for
    ledger_violations: int = 0  # membership's books out of balance after it all
    answers: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def fuzz_every_rpc(d: Deployment, *, cases: int, seed: int = 1) -> FuzzFigures:
    figures = FuzzFigures()
    rng = random.Random(seed)
    w = World(d)
    pools = _Pools.seeded(d, w, rng)
    maker = MessageMaker(rng, pools, (w.lat, w.lng))
    callers = _Callers(d, w, pools, rng)
    methods = [(name, service, method) for name, service in SERVICES.items() for method in service.methods]
    marks = d.log_marks()
    for number in range(cases):
        name, service, method = (
            methods[number % len(methods)] if number < len(methods) else rng.choice(methods)
        )
        request = maker.message(method.input_type, wildness=rng.choice([1.0, 0.2, 0.05]))
        metadata = callers.pick(f"/{service.full_name}/{method.name}")
        outcome = attempt(lambda: _invoke(d, name, method, request, metadata))  # noqa: B023
        figures.cases += 1
        figures.answers[outcome.code.name] += 1
        if outcome.code not in REFUSALS:
            figures.server_errors += 1
            figures.problems.append(f"case {number} {method.full_name}: {outcome} for {_brief(request)}")
        if outcome.ok:
            pools.learn(outcome.value)
        for crashed in [s for s in SERVICE_NAMES if not d.alive(s)]:
            figures.server_errors += 1
            figures.problems.append(
                f"case {number} {method.full_name}: {crashed} died; request {_brief(request)}"
            )
            d.restore()
    d.logs_written()
    for event in d.log_events(marks):
        if event.get("event") == "outbox effect refused for good":
            figures.effects_given_up += 1
            figures.problems.append(
                f"{event.get('service')} gave up {event.get('kind')}: {event.get('error')}"
            )
    for error in d.server_errors(marks):
        figures.logged_errors += 1
        figures.problems.append(f"logged: {error}")
    try:
        check_books(d.databases["membership"])
    except AssertionError as violation:
        figures.ledger_violations += 1
        figures.problems.append(f"membership's books: {violation}")
    for running in SERVICE_NAMES:
        if not d.serving(running):
            figures.server_errors += 1
            figures.problems.append(f"{running} is not SERVING after the fuzzing")
    return figures


def _invoke(
    d: Deployment, service: str, method: MethodDescriptor, request: Message, metadata: Metadata
) -> Message:
    response = message_factory.GetMessageClass(method.output_type)
    call = d.channel(service).unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response.FromString,
    )
    answer: Message = call(request, metadata=metadata, timeout=DEADLINE)
    return answer


def _brief(message: Message) -> str:
    text = str(message).replace("\n", " ")
    return text[:300] + ("..." if len(text) > 300 else "")


# --- values that name real things ---------------------------------------------------------------


@dataclass
class _Pools:
    """Ids of things that exist, grown with every answer that names more of them."""

    values: dict[str, list[str]]
    rng: random.Random

    @classmethod
    def seeded(cls, d: Deployment, w: World, rng: random.Random) -> _Pools:
        skus = [w.name(f"fz-{n}") for n in range(3)]
        stores = [w.store("A", 0, dict.fromkeys(skus, 50)), w.store("B", 800, dict.fromkeys(skus, 50))]
        # A store with hours in a zone behind UTC, whose wall clock a time near the calendar's
        # ends falls off.
        evening = [
            fulfilment_pb2.OpeningHours(weekday=day, open="09:00", close="22:00") for day in range(1, 8)
        ]
        store = fulfilment_pb2.Store(
            store_id=w.name("SC"),
            name="Store C",
            location=w.here(1_600),
            delivery_radius_m=5_000,
            timezone="America/New_York",
            opening_hours=evening,
        )
        d.fulfilment.UpsertStore(fulfilment_pb2.UpsertStoreRequest(store=store), metadata=w.ops)
        w.set_stock(store.store_id, dict.fromkeys(skus, 50))
        stores.append(store.store_id)
        members = [w.member(w.name(f"fz-{n}")) for n in range(3)]
        for member in members:
            w.earn(member.member_id, 50_000)
        coupons = [w.coupon(m.member_id, 500) for m in members]
        placed = d.orders.CreateOrder(
            w.delivery(w.name("fz-order"), w.name("fz-0"), {skus[0]: 1}), metadata=w.app
        )
        # Members of customers identity never heard of: what MergeMembers is called on directly, so
        # that ops merging members by hand never contradicts the merges identity asks for (which
        # membership would then refuse for good, rightly).
        loose = [f"{w.name('loose')}-{n}" for n in range(3)]
        for customer_id in loose:
            d.membership.Enroll(membership_pb2.EnrollRequest(customer_id=customer_id), metadata=w.service)
        # Reservations of orders that orders never heard of, which the fulfilment RPCs that
        # reserve, release and commit are called on directly, for the same reason.
        loose_orders = [f"{w.name('loose-order')}-{n}" for n in range(3)]
        for order_id in loose_orders:
            d.fulfilment.AssignStore(
                fulfilment_pb2.AssignStoreRequest(
                    order_id=order_id,
                    location=w.here(),
                    lines=[common_pb2.Line(sku=skus[1], quantity=1)],
                    fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
                ),
                metadata=w.service,
            )
        phones = [
            "13800138000",
            "+86 139-1234-5678",
            "8613700137000",
            "+44 20 7946 0958",
            "12345",
            "138001380001",
        ]
        pools = cls(
            {
                "store": stores,
                "member": [m.member_id for m in members],
                "customer": [m.customer_id for m in members],
                "loose_customer": loose,
                "loose_order": loose_orders,
                "order": [placed.order.order_id],
                "code": coupons,
                "sku": skus,
                "phone": phones,
                "external_id": [w.name(f"fz-{n}") for n in range(3)],
                "page_token": [],
                "guide": ["guide-1", w.name("guide")],
                "tag": ["vip", "新客", "t" * 64, "t" * 65],
                "tier": ["BRONZE", "SILVER", "GOLD", "PLATINUM", "DIAMOND"],
                "request": [w.name("fz-order")],
            },
            rng,
        )
        return pools

    def learn(self, answer: object) -> None:
        """Remember the ids an answer names, so later requests can name them too."""
        if not isinstance(answer, Message):
            return
        for descriptor, value in answer.ListFields():
            if descriptor.name == "next_page_token" and value:
                self._add("page_token", str(value))
            elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value if descriptor.is_repeated else [value]:
                    self.learn(item)
            elif descriptor.type == FieldDescriptor.TYPE_STRING and value:
                kind = _POOL_OF.get(descriptor.name)
                if kind is not None:
                    for item in value if descriptor.is_repeated else [value]:
                        self._add(kind, str(item))

    def _add(self, kind: str, value: str) -> None:
        found = self.values.setdefault(kind, [])
        if value not in found and len(found) < 200:
            found.append(value)

    def for_field(self, name: str, message: str) -> str | None:
        kind = _POOL_OF.get((message, name)) or _POOL_OF.get(name)
        if kind is None or not self.values.get(kind):
            return None
        return self.rng.choice(self.values[kind])


_POOL_OF: dict[str | tuple[str, str], str] = {
    ("quanyu.membership.v1.MergeMembersRequest", "survivor_customer_id"): "loose_customer",
    ("quanyu.membership.v1.MergeMembersRequest", "merged_customer_id"): "loose_customer",
    ("quanyu.fulfilment.v1.AssignStoreRequest", "order_id"): "loose_order",
    # What orders is told of customers and members takes a state as told (the service role is
    # the platform's own): fuzzed states name customers and members no order is placed for.
    ("quanyu.orders.v1.CustomerState", "customer_id"): "loose_customer",
    ("quanyu.orders.v1.CustomerState", "merged_into_customer_id"): "loose_customer",
    ("quanyu.orders.v1.MemberState", "member_id"): "loose_customer",
    ("quanyu.orders.v1.MemberState", "customer_id"): "loose_customer",
    ("quanyu.orders.v1.MemberState", "root_member_id"): "loose_customer",
    ("quanyu.fulfilment.v1.ReleaseReservationRequest", "order_id"): "loose_order",
    ("quanyu.fulfilment.v1.CommitReservationRequest", "order_id"): "loose_order",
    "store_id": "store",
    "preferred_store_id": "store",
    "home_store_id": "store",
    "origin_store_id": "store",
    "fulfilling_store_id": "store",
    "exclude_store_ids": "store",
    "rejected_store_ids": "store",
    "member_id": "member",
    "referrer_member_id": "member",
    "customer_id": "customer",
    "survivor_customer_id": "customer",
    "merged_customer_id": "customer",
    "order_id": "order",
    "code": "code",
    "coupon_code": "code",
    "sku": "sku",
    "skus": "sku",
    "phone": "phone",
    "external_id": "external_id",
    "page_token": "page_token",
    "guide_id": "guide",
    "tag": "tag",
    "tags": "tag",
    "add_tags": "tag",
    "remove_tags": "tag",
    "tier": "tier",
    "request_id": "request",
    "source_id": "request",
    # marketing
    "campaign_id": "campaign",
    "message_id": "message",
    "message_ids": "message",
    "survivor_member_id": "member",
    "tiers": "tier",
    "home_store_ids": "store",
    "guide_ids": "guide",
}

_GEOJSON = [
    '{"type": "Polygon", "coordinates": [[[121.4, 31.2], [121.5, 31.2], [121.5, 31.3], [121.4, 31.2]]]}',
    '{"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]]]}',
    '{"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}',  # a bow tie
    '{"type": "Polygon", "coordinates": [[[NaN, 0], [1, Infinity], [1, 0], [NaN, 0]]]}',
    '{"type": "Polygon", "coordinates": [[[1e308, 1e308], [-1e308, 0], [0, 1], [1e308, 1e308]]]}',
    '{"type": "Polygon", "coordinates": []}',
    '{"type": "Polygon", "coordinates": [[]]}',
    '{"type": "Polygon", "coordinates": [[["a", "b"]]]}',
    '{"type": "Point", "coordinates": [121.4, 31.2]}',
    '{"type": "GeometryCollection", "geometries": []}',
    '{"type": "Polygon"}',
    '{"coordinates": 5}',
    "[]",
    "null",
    "{",
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' * 50_000 + "1" + "}" * 50_000,
    '{"type": "Polygon", "coordinates": [['
    + ", ".join(f"[{121 + i * 1e-5}, {31 + (i % 2) * 1e-3}]" for i in range(20_000))
    + ", [121, 31]]]}",
]
# The first and last seconds a Timestamp may hold, one past each, and the extremes of int64.
_SECONDS = (0, 1, -62135596800, 253402300799, -62135596801, 253402300800, 2**63 - 1, -(2**63))
_TIMEZONES = ["Asia/Shanghai", "UTC", "", "Mars/Olympus", "../../../etc/passwd", "Etc/GMT+14", "EST5EDT", " "]
_CLOCK = ["09:00", "22:00", "00:00", "23:59", "24:00", "25:61", "9:00", "-1:00", "12:00:00", "noon", ""]
_TEXT = [
    "",
    " ",
    "x",
    "李雷",
    "🙂🙃" * 10,
    "a\x00b",
    "\x00",
    "line\nbreak",
    "\t\r\x1b[31m",
    "\u202egnp.exe",
    "' OR '1'='1' --",
    "%s%s%n%x",
    "../../etc/passwd",
    "null",
    "0",
    "-1",
    "NaN",
    "{}",
    "x" * 64,
    "x" * 65,
    "x" * 129,
]


class MessageMaker:
    """Builds a random message of any type by walking its descriptor.

    Each field gets a wild value (an extreme, a malformed or oversized one) with the probability
    `wildness` of the message, else a plausible one (a real id, a value in range), so some
    requests are wild throughout and others are sound but for a field or two.
    """

    def __init__(self, rng: random.Random, pools: _Pools, area: tuple[float, float]) -> None:
        self._rng = rng
        self._pools = pools
        self._area = area
        self._budget = 0
        self._wildness = 1.0

    def message(self, descriptor: Descriptor, wildness: float) -> Message:
        self._budget = MESSAGE_BUDGET
        self._wildness = wildness
        built: Message = message_factory.GetMessageClass(descriptor)()
        self._fill(built, 0)
        return built

    def _wild(self) -> bool:
        return self._rng.random() < self._wildness

    def _fill(self, message: Message, depth: int) -> None:
        for fd in message.DESCRIPTOR.fields:
            if self._rng.random() < 0.3:
                continue  # left unset
            try:
                if fd.is_repeated:
                    self._fill_repeated(message, fd, depth)
                elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                    if depth < MAX_DEPTH:
                        self._fill_message(getattr(message, fd.name), depth + 1)
                else:
                    setattr(message, fd.name, self._scalar(fd, message.DESCRIPTOR.full_name))
            except (ValueError, TypeError):
                continue  # a value the field's type cannot hold (a closed enum, a float out of range)

    def _fill_repeated(self, message: Message, fd: Field, depth: int) -> None:
        wild = depth == 0 and self._wild()
        count = self._rng.choice([0, 1, 2, 3, 5, 10, 201, 1000] if wild else [1, 1, 2, 3])
        items: Any = getattr(message, fd.name)
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= MAX_DEPTH:
                return
            for _ in range(count if count < 100 or self._budget > 0 else 1):
                self._fill_message(items.add(), depth + 1)
            return
        for _ in range(count):
            try:
                items.append(self._scalar(fd, message.DESCRIPTOR.full_name))
            except (ValueError, TypeError):
                continue

    def _fill_message(self, message: Message, depth: int) -> None:
        if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
            now = int(time.time())
            seconds = [now, now + 86_400, now - 86_400 * 30]
            nanos = [0, 123_456_789, 999_999_999]
            if self._wild():
                seconds, nanos = [*seconds, *_SECONDS], [*nanos, -1, 10**9, 2**31 - 1]
            message.seconds = self._rng.choice(seconds)  # type: ignore[attr-defined]
            message.nanos = self._rng.choice(nanos)  # type: ignore[attr-defined]
            return
        message.SetInParent()
        self._fill(message, depth)

    def _scalar(self, fd: Field, message: str) -> Any:
        rng = self._rng
        kind = fd.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self._string(fd.name, message)
        if kind == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in fd.enum_type.values if v.number]  # a field of enum type has one
            wild = [0, max(known) + 1, 99, -1, 2**31 - 1, -(2**31)]
            return rng.choice(wild if self._wild() else known)
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return self._double(fd.name)
        if kind == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.choice([0, 1, 16, 1000]))
        return self._integer(fd)

    def _integer(self, fd: Field) -> int:
        rng = self._rng
        if not self._wild():
            return rng.randint(*_PLAUSIBLE_INTEGERS.get(fd.name, (0, 10)))
        small = [0, 1, -1, 2, 100, 5_000, 100_000]
        if fd.type in (
            FieldDescriptor.TYPE_INT32,
            FieldDescriptor.TYPE_SINT32,
            FieldDescriptor.TYPE_SFIXED32,
        ):
            return rng.choice([*small, 2**31 - 1, -(2**31), rng.randint(-(2**31), 2**31 - 1)])
        if fd.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return rng.choice([0, 1, 2**32 - 1, rng.randint(0, 2**32 - 1)])
        if fd.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return rng.choice([0, 1, 2**64 - 1, 2**63, rng.randint(0, 2**64 - 1)])
        return rng.choice(
            [*small, 2**31, 2**53, 2**53 + 1, 2**62, 2**63 - 1, -(2**63), rng.randint(-(2**63), 2**63 - 1)]
        )

    def _double(self, name: str) -> float:
        rng = self._rng
        if name in ("latitude", "longitude"):
            centre = self._area[0] if name == "latitude" else self._area[1]
            if not self._wild():
                return centre + rng.uniform(-0.02, 0.02)
            limit = 90.0 if name == "latitude" else 180.0
            return rng.choice([*_SPECIAL_DOUBLES, limit, -limit, limit + 1e-9, rng.uniform(-limit, limit)])
        if not self._wild():
            return rng.uniform(0, 10_000)
        return rng.choice([*_SPECIAL_DOUBLES, 1e7, rng.uniform(-1e6, 1e6)])

    def _string(self, name: str, message: str) -> str:
        rng = self._rng
        known = self._pools.for_field(name, message)
        if not self._wild():
            if known is not None:
                return known
            return rng.choice(_PLAUSIBLE_TEXT.get(name, [f"{name}-{uuid.uuid4().hex[:8]}"]))
        if known is not None and rng.random() < 0.3:
            return known + rng.choice(["", " ", "\x00", "x" * 70])
        return self._wild_string(name)

    def _wild_string(self, name: str) -> str:
        rng = self._rng
        specific = {
            "delivery_zone_geojson": _GEOJSON,
            "timezone": _TIMEZONES,
            "open": _CLOCK,
            "close": _CLOCK,
        }
        if name in specific and rng.random() < 0.7:
            return self._spend(rng.choice(specific[name]))
        choice = rng.random()
        if choice < 0.1:
            return self._spend(rng.choice(["x", "李", "\x00", "9"]) * BIG)
        if choice < 0.2:
            return self._spend("".join(chr(rng.randint(1, 0xD7FF)) for _ in range(rng.randint(1, 2_000))))
        if choice < 0.4:
            return "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 40)))
        return rng.choice(_TEXT)

    def _spend(self, text: str) -> str:
        """A long string, while the request's budget lasts; a short one after that."""
        if self._budget < len(text) * 3:
            return text[:16]
        self._budget -= len(text) * 3
        return text


_SPECIAL_DOUBLES = (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1e-300)
_PLAUSIBLE_INTEGERS = {
    "quantity": (1, 3),
    "page_size": (0, 5),
    "limit": (0, 5),
    "points": (1, 500),
    "points_to_redeem": (0, 500),
    "unit_price_cents": (0, 10_000),
    "spend_cents": (0, 100_000),
    "discount_cents": (1, 2_000),
    "min_spend_cents": (0, 10_000),
    "order_amount_cents": (0, 50_000),
    "on_hand": (0, 100),
    "ttl_seconds": (0, 3_600),
    "weekday": (1, 7),
    "max_active_orders": (0, 10),
    "priority": (0, 5),
}
_PLAUSIBLE_TEXT = {
    "name": ["Store 1", "门店一"],
    "display_name": ["李雷", "Han Meimei", ""],
    "delivery_address": ["1 Test Road", "上海市黄浦区人民大道1号"],
    "reason": ["no staff", "CANCELLED", ""],
    "subject": ["fuzz-tool", ""],
    "timezone": ["Asia/Shanghai", "Europe/London", "America/New_York", "Pacific/Kiritimati", ""],
    "open": ["09:00", "00:00", "22:30"],
    "close": ["22:00", "02:00", "09:00"],
    "delivery_zone_geojson": [_GEOJSON[0], ""],
    "request_id": [f"fz-{n}" for n in range(20)],
    "source_id": [f"fz-{n}" for n in range(20)],
}


class _Callers:
    """A token for each kind of caller an RPC admits, ops most often."""

    def __init__(self, d: Deployment, w: World, pools: _Pools, rng: random.Random) -> None:
        self._rng = rng
        self._ops = w.ops
        self._by_role: dict[Role, Callable[[], Metadata]] = {
            Role.OPS: lambda: w.ops,
            Role.SERVICE: lambda: w.service,
            Role.CHANNEL: lambda: self._channel_token(d, w),
            Role.STORE: lambda: w.store_token(rng.choice(pools.values["store"] + ["nowhere"])),
        }
        self._channels: dict[str, Metadata] = {}

    def _channel_token(self, d: Deployment, w: World) -> Metadata:
        channel = self._rng.choice(CHANNELS)
        if channel not in self._channels:
            self._channels[channel] = d.token(Role.CHANNEL, channel=channel, subject=f"fz-{channel}")
        return self._channels[channel]

    def pick(self, method: str) -> Metadata:
        admitted: Sequence[Role] = sorted(POLICIES[method])
        if Role.OPS in admitted and self._rng.random() < 0.6:
            return self._ops
        return self._by_role[self._rng.choice(admitted)]()
