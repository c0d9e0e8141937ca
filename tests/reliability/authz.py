"""Who may do what, cell by cell, on the running services.

* Every RPC of every service, called with no token, an expired one, one signed with another key,
  a malformed one, and a token of each role: the first four are UNAUTHENTICATED everywhere, and a
  role is PERMISSION_DENIED exactly where the RPC's "Roles:" comment in the protos leaves it out.
* A store terminal (store A) aimed at store B's orders, stock, members, queue, reports and till,
  and a channel (the mini-program) aimed at the app's orders: refused with PERMISSION_DENIED
  where the protos bind the caller to its own store or channel, and in every case the very same
  answer as for an object that does not exist, so a caller learns nothing of what is not its own.
* Page tokens: a next_page_token handed to one caller is refused (INVALID_ARGUMENT) when another
  caller presents it, or when its caller asks another query with it.

A cell that lets through what it should refuse, or answers differently for a foreign object and
a missing one, is a leak.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from tests.orders.platform import Metadata
from tests.processes import poll
from tests.reliability.deployment import Deployment
from tests.reliability.fuzz import SERVICES
from tests.reliability.world import Outcome, World, attempt

PROTOS = Path(__file__).resolve().parents[2] / "protos"
DEADLINE = 20.0
MINI = "CHANNEL_WECHAT_MINI_PROGRAM"
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@dataclass
class AuthzFigures:
    cells: int = 0
    leaks: int = 0  # a refusal the architecture calls for that did not come, or a foreign object told apart
    over_refused: int = 0  # a role the protos admit, refused for its role
    problems: list[str] = field(default_factory=list)

    def leak(self, what: str) -> None:
        self.leaks += 1
        self.problems.append(f"leak: {what}")


def authorisation_matrix(d: Deployment) -> AuthzFigures:
    figures = AuthzFigures()
    w = World(d)
    _every_rpc_and_caller(d, w, figures)
    scene = _Scene.set_up(d, w)
    _foreign_objects(d, scene, figures)
    _page_tokens(d, scene, figures)
    return figures


# --- every RPC, every kind of caller -------------------------------------------------------------


def documented_roles() -> dict[str, frozenset[Role]]:
    """The roles each RPC's comment in the protos admits, by full method name."""
    found: dict[str, frozenset[Role]] = {}
    for path in sorted(PROTOS.glob("quanyu/*/v1/*.proto")):
        text = path.read_text()
        package = re.search(r"^package ([\w.]+);", text, re.MULTILINE)
        service = re.search(r"^service (\w+)", text, re.MULTILINE)
        if package is None or service is None:
            continue
        comment: list[str] = []
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("//"):
                comment.append(stripped[2:].strip())
                continue
            rpc = re.match(r"rpc (\w+)\(", stripped)
            if rpc:
                found[f"/{package[1]}.{service[1]}/{rpc[1]}"] = _roles_in(comment)
            comment = []
    return found


def _roles_in(comment: list[str]) -> frozenset[Role]:
    starts = [i for i, line in enumerate(comment) if line.startswith("Roles:")]
    if not starts:
        return frozenset()
    paragraph = []
    for line in comment[starts[0] :]:
        if not line:
            break
        paragraph.append(line)
    text = " ".join(paragraph).removeprefix("Roles:")
    if "any authenticated caller" in text:
        return frozenset(Role)
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\([^()]*\)", "", text)
    words = [item.strip().split(" ")[0].strip(".").lower() for item in re.split(r"[,;]", text)]
    return frozenset(Role(word) for word in words if word in {r.value for r in Role})


def _every_rpc_and_caller(d: Deployment, w: World, figures: AuthzFigures) -> None:
    documented = documented_roles()
    strangers = _strangers(d, w)
    members = {
        Role.OPS: w.ops,
        Role.SERVICE: w.service,
        Role.CHANNEL: w.app,
        Role.STORE: w.store_token(w.name("SA")),
    }
    for name, service in SERVICES.items():
        for method in service.methods:
            full = f"/{service.full_name}/{method.name}"
            roles = documented.get(full)
            if not roles:
                figures.problems.append(f"{full} documents no roles")
                continue
            empty = message_factory.GetMessageClass(method.input_type)()
            for stranger, metadata in strangers.items():
                figures.cells += 1
                outcome = _call(d, name, method, empty, metadata)
                if outcome.code != UNAUTHENTICATED:
                    figures.leak(f"{full} with {stranger}: {outcome}")
            for role, metadata in members.items():
                figures.cells += 1
                outcome = _call(d, name, method, empty, metadata)
                refused_for_role = outcome.code == DENIED and outcome.reason == "PERMISSION_DENIED"
                if role in roles and (refused_for_role or outcome.code == UNAUTHENTICATED):
                    figures.over_refused += 1
                    figures.problems.append(
                        f"{full} refuses {role.value}, which its comment admits: {outcome}"
                    )
                elif role not in roles and outcome.code != DENIED:
                    figures.leak(f"{full} lets {role.value} in, which its comment leaves out: {outcome}")


def _strangers(d: Deployment, w: World) -> dict[str, Metadata]:
    key = (d.var / "signing.key").read_bytes().strip()
    yesterday = datetime.now(UTC) - timedelta(days=1)
    expired = TokenCodec(key).issue(Principal(Role.OPS, "ops"), 60, now=yesterday).token
    forged = TokenCodec(b"another deployment's key, 32+ bytes long").issue(Principal(Role.OPS, "ops")).token
    valid = w.ops[0][1].removeprefix("Bearer ")
    return {
        "no token": (),
        "an expired token": (("authorization", f"Bearer {expired}"),),
        "a token signed with another key": (("authorization", f"Bearer {forged}"),),
        "a malformed token": (("authorization", "Bearer not.a.token"),),
        "another scheme": (("authorization", f"Basic {valid}"),),
        "a token of an unknown role": (("authorization", f"Bearer {_unknown_role_token(key)}"),),
    }


def _unknown_role_token(key: bytes) -> str:
    import jwt

    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": "quanyu", "sub": "intruder", "role": "admin", "iat": now, "exp": now + 600}
    return jwt.encode(claims, key, algorithm="HS256")


def _call(
    d: Deployment, service: str, method: MethodDescriptor, request: Message, metadata: Metadata
) -> Outcome[bytes]:
    call = d.channel(service).unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda raw: raw,
    )
    return attempt(lambda: bytes(call(request, metadata=metadata, timeout=DEADLINE)))


# --- another store's and another channel's objects -------------------------------------------------


@dataclass
class _Scene:
    """Store B's orders, stock, members, queue and till, with store A and a channel looking on."""

    w: World
    store_a: str
    store_b: str
    sku: str
    order_b: orders_pb2.Order  # a delivery order through the app, fulfilled by B
    till_b: orders_pb2.Order  # an in-store order at B's till
    member_b: membership_pb2.Member  # a member whose home store is B
    coupon_b: str
    guide_b: str
    as_a: Metadata
    as_b: Metadata
    mini: Metadata

    @classmethod
    def set_up(cls, d: Deployment, w: World) -> _Scene:
        sku = w.name("authz")
        store_a = w.store("A", 3_000, {})
        store_b = w.store("B", 0, {sku: 100})
        guide_b = w.name("guide-B")
        order_b = d.orders.CreateOrder(
            w.delivery(w.name("order-b"), w.name("buyer"), {sku: 1}), metadata=w.app
        ).order
        as_b = w.store_token(store_b)
        tills = []
        for n in range(2):
            till = w.in_store(
                w.name(f"till-{n}"), store_b, f"1390000{uuid.uuid4().int % 10_000:04d}", {sku: 1}
            )
            till.guide_id = guide_b
            tills.append(d.orders.CreateOrder(till, metadata=as_b).order)
        member_b = d.membership.GetMember(
            membership_pb2.GetMemberRequest(member_id=tills[0].member_id), metadata=w.ops
        ).member
        for n in range(2):
            d.membership.EarnPoints(
                membership_pb2.EarnPointsRequest(
                    member_id=member_b.member_id,
                    source_id=w.name(f"seed-{n}"),
                    spend_cents=50_000,
                    store_id=store_b,
                ),
                metadata=w.service,
            )
        return cls(
            w=w,
            store_a=store_a,
            store_b=store_b,
            sku=sku,
            order_b=order_b,
            till_b=tills[0],
            member_b=member_b,
            coupon_b=w.coupon(member_b.member_id, 100),
            guide_b=guide_b,
            as_a=w.store_token(store_a),
            as_b=as_b,
            mini=d.token(Role.CHANNEL, channel=MINI, subject=w.name("mini")),
        )


@dataclass(frozen=True)
class _Pair:
    """One cell: the same call made on a foreign object and on a missing one."""

    what: str
    foreign: Callable[[], object]
    missing: Callable[[], object]
    ids: tuple[str, str]  # the foreign and the missing id, masked before comparing
    denied: bool = True  # the architecture refuses the foreign call outright


def _foreign_objects(d: Deployment, s: _Scene, figures: AuthzFigures) -> None:
    for pair in _pairs(d, s):
        figures.cells += 1
        foreign, missing = attempt(pair.foreign), attempt(pair.missing)
        if pair.denied and foreign.code != DENIED:
            figures.leak(f"{pair.what}: the foreign object answered {foreign}")
        if _masked(foreign, pair.ids) != _masked(missing, pair.ids):
            figures.leak(f"{pair.what}: foreign {foreign} but missing {missing}")


def _masked(outcome: Outcome[object], ids: tuple[str, str]) -> tuple[str, str, str, bytes]:
    message = outcome.message
    for value in ids:
        message = message.replace(value, "<id>")
    body = outcome.value.SerializeToString(deterministic=True) if isinstance(outcome.value, Message) else b""
    return outcome.code.name, outcome.reason, message, body


def _pairs(d: Deployment, s: _Scene) -> list[_Pair]:
    o, f, m = d.orders, d.fulfilment, d.membership
    a, mini = s.as_a, s.mini
    nowhere = f"nowhere-{uuid.uuid4().hex[:8]}"
    no_order = "ord_" + uuid.uuid4().hex
    order_b = s.order_b.order_id
    till_b = s.till_b.order_id
    no_member, no_code = f"mem-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex[:12].upper()
    pairs: list[_Pair] = []

    def by_order(
        what: str, call: Callable[[str], object], *, who: str = "store A", order: str = order_b
    ) -> None:
        pairs.append(
            _Pair(
                f"{who}: {what} of another's order",
                lambda: call(order),
                lambda: call(no_order),
                (order, no_order),
            )
        )

    def by_store(what: str, call: Callable[[str], object], *, denied: bool = True) -> None:
        pairs.append(
            _Pair(
                f"store A: {what} of store B",
                lambda: call(s.store_b),
                lambda: call(nowhere),
                (s.store_b, nowhere),
                denied,
            )
        )

    # Orders: every order RPC on B's orders, fulfilled (order_b) and originated (till_b) there.
    for order in (order_b, till_b):
        by_order(
            "GetOrder", lambda i: o.GetOrder(orders_pb2.GetOrderRequest(order_id=i), metadata=a), order=order
        )
        by_order(
            "GetOrderHistory",
            lambda i: o.GetOrderHistory(orders_pb2.GetOrderHistoryRequest(order_id=i), metadata=a),
            order=order,
        )
        by_order(
            "AcceptOrder",
            lambda i: o.AcceptOrder(orders_pb2.AcceptOrderRequest(order_id=i), metadata=a),
            order=order,
        )
        by_order(
            "RejectOrder",
            lambda i: o.RejectOrder(orders_pb2.RejectOrderRequest(order_id=i, reason="no staff"), metadata=a),
            order=order,
        )
        by_order(
            "MarkOrderReady",
            lambda i: o.MarkOrderReady(orders_pb2.MarkOrderReadyRequest(order_id=i), metadata=a),
            order=order,
        )
        by_order(
            "CompleteOrder",
            lambda i: o.CompleteOrder(orders_pb2.CompleteOrderRequest(order_id=i), metadata=a),
            order=order,
        )
        by_order(
            "CancelOrder",
            lambda i: o.CancelOrder(orders_pb2.CancelOrderRequest(order_id=i, reason="x"), metadata=a),
            order=order,
        )
    by_store(
        "the queue (ListOrders)", lambda i: o.ListOrders(orders_pb2.ListOrdersRequest(store_id=i), metadata=a)
    )
    by_store(
        "GetStoreReport", lambda i: o.GetStoreReport(orders_pb2.GetStoreReportRequest(store_id=i), metadata=a)
    )
    by_store(
        "an in-store order (CreateOrder)",
        lambda i: o.CreateOrder(
            s.w.in_store(s.w.name(f"intrude-{i}"), i, "13900001111", {s.sku: 1}), metadata=a
        ),
    )
    by_store(
        "a rejection on its behalf (RejectOrder store_id)",
        lambda i: o.RejectOrder(
            orders_pb2.RejectOrderRequest(order_id=order_b, reason="x", store_id=i), metadata=a
        ),
    )
    pairs.append(
        _Pair(
            "store A: GetGuideReport of B's guide",
            lambda: o.GetGuideReport(orders_pb2.GetGuideReportRequest(guide_id=s.guide_b), metadata=a),
            lambda: o.GetGuideReport(orders_pb2.GetGuideReportRequest(guide_id=nowhere), metadata=a),
            (s.guide_b, nowhere),
            denied=False,
        )
    )
    # Fulfilment: B's stock and hours.
    by_store(
        "SetStock",
        lambda i: f.SetStock(
            fulfilment_pb2.SetStockRequest(
                store_id=i, levels=[fulfilment_pb2.SkuQuantity(sku=s.sku, on_hand=0)]
            ),
            metadata=a,
        ),
    )
    by_store("GetStock", lambda i: f.GetStock(fulfilment_pb2.GetStockRequest(store_id=i), metadata=a))
    by_store(
        "CheckStoreOpen",
        lambda i: f.CheckStoreOpen(fulfilment_pb2.CheckStoreOpenRequest(store_id=i), metadata=a),
    )
    # Membership: B's members, funnel and till.
    by_store(
        "ListMembers", lambda i: m.ListMembers(membership_pb2.ListMembersRequest(home_store_id=i), metadata=a)
    )
    by_store("GetFunnel", lambda i: m.GetFunnel(membership_pb2.GetFunnelRequest(home_store_id=i), metadata=a))
    member_b = s.member_b.member_id

    def redeem_points(member_id: str, store_id: str) -> object:
        request = membership_pb2.RedeemPointsRequest(
            member_id=member_id,
            points=1,
            source_id=s.w.name(f"intrude-{uuid.uuid4().hex[:6]}"),
            store_id=store_id,
        )
        return m.RedeemPoints(request, metadata=a)

    def redeem_coupon(code: str, member_id: str, store_id: str) -> object:
        request = membership_pb2.RedeemCouponRequest(
            code=code, member_id=member_id, order_id=no_order, order_amount_cents=10_000, store_id=store_id
        )
        return m.RedeemCoupon(request, metadata=a)

    by_store("RedeemPoints at its till", lambda i: redeem_points(member_b, i))
    by_store("RedeemCoupon at its till", lambda i: redeem_coupon(s.coupon_b, member_b, i))
    pairs.append(
        _Pair(
            "store A: RedeemPoints at B's till, for a member who exists or not",
            lambda: redeem_points(member_b, s.store_b),
            lambda: redeem_points(no_member, s.store_b),
            (member_b, no_member),
        )
    )
    pairs.append(
        _Pair(
            "store A: RedeemCoupon at B's till, with a coupon that exists or not",
            lambda: redeem_coupon(s.coupon_b, member_b, s.store_b),
            lambda: redeem_coupon(no_code, no_member, s.store_b),
            (s.coupon_b, no_code),
        )
    )
    # A channel: the app's orders, seen from the mini-program.
    by_order(
        "GetOrder", lambda i: o.GetOrder(orders_pb2.GetOrderRequest(order_id=i), metadata=mini), who="channel"
    )
    by_order(
        "CancelOrder",
        lambda i: o.CancelOrder(orders_pb2.CancelOrderRequest(order_id=i), metadata=mini),
        who="channel",
    )
    customer = s.order_b.customer_id
    no_customer = f"cus-{uuid.uuid4().hex[:12]}"
    pairs.append(
        _Pair(
            "channel: ListOrders of a customer who ordered through another channel",
            lambda: o.ListOrders(orders_pb2.ListOrdersRequest(customer_id=customer), metadata=mini),
            lambda: o.ListOrders(orders_pb2.ListOrdersRequest(customer_id=no_customer), metadata=mini),
            (customer, no_customer),
            denied=False,
        )
    )
    through_jd = s.w.delivery(s.w.name("intrude-jd"), s.w.name("buyer"), {s.sku: 1})
    through_jd.channel = common_pb2.CHANNEL_JD
    pairs.append(
        _Pair(
            "channel: CreateOrder through another channel",
            lambda: o.CreateOrder(
                s.w.delivery(s.w.name("intrude-app"), s.w.name("buyer"), {s.sku: 1}), metadata=mini
            ),
            lambda: o.CreateOrder(through_jd, metadata=mini),
            ("", ""),
        )
    )
    return pairs


# --- page tokens ----------------------------------------------------------------------------------


def _page_tokens(d: Deployment, s: _Scene, figures: AuthzFigures) -> None:
    w = s.w
    alice, bob = w.ops, d.token(Role.OPS, subject=w.name("bob"))
    member = s.member_b.member_id
    lists: list[tuple[str, Lister, str, str]] = [
        (
            "ListStores",
            lambda who, token, _: d.fulfilment.ListStores(
                fulfilment_pb2.ListStoresRequest(page_size=1, page_token=token), metadata=who
            ),
            "",
            "",
        ),
        (
            "ListOrders",
            lambda who, token, store: d.orders.ListOrders(
                orders_pb2.ListOrdersRequest(store_id=store, page_size=1, page_token=token), metadata=who
            ),
            s.store_b,
            s.store_a,
        ),
        (
            "ListMembers",
            lambda who, token, store: d.membership.ListMembers(
                membership_pb2.ListMembersRequest(home_store_id=store, page_size=1, page_token=token),
                metadata=who,
            ),
            s.store_b,
            s.store_a,
        ),
        (
            "ListLedgerEntries",
            lambda who, token, whose: d.membership.ListLedgerEntries(
                membership_pb2.ListLedgerEntriesRequest(member_id=whose, page_size=1, page_token=token),
                metadata=who,
            ),
            member,
            s.till_b.member_id if s.till_b.member_id != member else w.name("nobody"),
        ),
    ]
    others = {"another ops caller": bob, "a service": w.service, "store B": s.as_b, "store A": s.as_a}
    for name, call, query, other_query in lists:
        _one_list(
            name, call, query=query, other_query=other_query, owner=alice, others=others, figures=figures
        )


Lister = Callable[[Metadata, str, str], object]


def _one_list(
    name: str,
    call: Lister,
    *,
    query: str,
    other_query: str,
    owner: Metadata,
    others: dict[str, Metadata],
    figures: AuthzFigures,
) -> None:
    first: Outcome[object] = poll(
        lambda: attempt(lambda: call(owner, "", query)), lambda o: o.ok, f"{name} answers"
    )
    token = str(getattr(first.answer(), "next_page_token", ""))
    if not token:
        figures.problems.append(f"{name}: no second page to take a token from")
        return
    for who, metadata in others.items():
        figures.cells += 1
        used = attempt(lambda m=metadata: call(m, token, query))  # type: ignore[misc]
        if used.ok:
            figures.leak(f"{name}: a page token of one caller served {who}")
        elif used.code not in (grpc.StatusCode.INVALID_ARGUMENT, DENIED):
            figures.problems.append(f"{name}: another caller's page token answered {used}")
    if other_query:
        figures.cells += 1
        used = attempt(lambda: call(owner, token, other_query))
        if used.ok:
            figures.leak(f"{name}: a page token served another query")
