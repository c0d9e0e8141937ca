"""Who may do what, cell by cell, on the running services.

* Every RPC of every service, called with no token, an expired one, one signed with another key,
  a malformed one, and a token of each role: the first four are UNAUTHENTICATED everywhere, and a
  role is PERMISSION_DENIED exactly where the RPC's "Roles:" comment in the protos leaves it out.
* The object matrix: every RPC (and every way of calling it: by account or phone, with or without
  the member's code), as each role, on an object of each owner: the caller's own, another
  store's, another channel's customer's, and nobody's. A store's own objects are store A's, a
  channel's those of mini-program customers; another store's belong to store B and mini-program
  customers, another channel's customer's to store A and app-only customers. Each cell must give
  what the protos document: the role refused where the protos leave it out; the object acted on
  where it is the caller's own (and the answer showing no other channel's accounts); and where it
  is not, the very same answer as for nobody's object, so a caller learns nothing of it.
* Page tokens: a next_page_token handed to one caller is refused (INVALID_ARGUMENT) when another
  caller presents it, or when its caller asks another query with it.

A cell that lets through what it should refuse, or answers differently for a foreign object and
a missing one, is a leak.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu.identity.v1 import identity_pb2
from quanyu.marketing.v1 import marketing_pb2, marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from tests.conftest import hand_signed, throwaway_codec
from tests.orders.platform import Metadata
from tests.processes import poll
from tests.reliability.deployment import Deployment
from tests.reliability.fuzz import SERVICES
from tests.reliability.protos import proto_comments
from tests.reliability.world import SERVER_ERRORS, Outcome, World, attempt

DEADLINE = 20.0
MINI = "CHANNEL_WECHAT_MINI_PROGRAM"
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@dataclass
class AuthzFigures:
    cells: int = 0
    leaks: int = 0  # a refusal the architecture calls for that did not come, or a foreign object told apart
    over_refused: int = 0  # a role the protos admit refused for its role, or an own object refused
    problems: list[str] = field(default_factory=list)

    def leak(self, what: str) -> None:
        self.leaks += 1
        self.problems.append(f"leak: {what}")


def authorisation_matrix(d: Deployment) -> AuthzFigures:
    figures = AuthzFigures()
    w = World(d)
    _every_rpc_and_caller(d, w, figures)
    scene = _Scene.set_up(d, w)
    _object_matrix(d, scene, figures)
    _page_tokens(d, scene, figures)
    return figures


# --- every RPC, every kind of caller -------------------------------------------------------------


def documented_roles() -> dict[str, frozenset[Role]]:
    """The roles each RPC's comment in the protos admits, by full method name."""
    return {method: _roles_in(comment) for method, comment in proto_comments().rpcs.items()}


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
    key = d.var / "token-keys"
    yesterday = datetime.now(UTC) - timedelta(days=1)
    expired = (
        TokenCodec.local(d.var / "token-keys").issue(Principal(Role.OPS, "ops"), 60, now=yesterday).token
    )
    forged = throwaway_codec().issue(Principal(Role.OPS, "ops")).token
    valid = w.ops[0][1].removeprefix("Bearer ")
    return {
        "no token": (),
        "an expired token": (("authorization", f"Bearer {expired}"),),
        "a token signed with another key": (("authorization", f"Bearer {forged}"),),
        "a malformed token": (("authorization", "Bearer not.a.token"),),
        "another scheme": (("authorization", f"Basic {valid}"),),
        "a token of an unknown role": (("authorization", f"Bearer {_unknown_role_token(key)}"),),
    }


def _unknown_role_token(key: Path) -> str:

    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": "quanyu", "sub": "intruder", "role": "admin", "iat": now, "exp": now + 600}
    return hand_signed(key, claims)


def _call(
    d: Deployment, service: str, method: MethodDescriptor, request: Message, metadata: Metadata
) -> Outcome[bytes]:
    call = d.channel(service).unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda raw: raw,
    )
    return attempt(lambda: bytes(call(request, metadata=metadata, timeout=DEADLINE)))


# --- the object matrix: every RPC, every role, an object of each owner ----------------------------

OWN, OTHER_STORE, OTHER_CHANNEL, NOBODY = "own", "another store's", "another channel's customer's", "nobody's"
KINDS = (NOBODY, OWN, OTHER_STORE, OTHER_CHANNEL)
APP_CHANNEL = "CHANNEL_APP"


@dataclass(frozen=True)
class Target:
    """One object of each kind a call can name, all of one owner: a customer, their account and
    phone, their member with a coupon and a ledger entry, an order of theirs, a store and a guide."""

    customer_id: str
    account: common_pb2.ChannelAccount
    phone: str
    member_id: str
    coupon: str
    source_id: str
    order_id: str
    store_id: str
    guide_id: str
    # Marketing's campaign for the target's store alone (GetCampaignResults).
    campaign_id: str = ""


@dataclass
class _Scene:
    """Store A (the till calling) and store B; the mini-program (the channel calling) and the
    app. The caller's own objects belong to store A and to mini-program customers; another
    store's to B and mini-program customers; another channel's customer's to A and app-only
    customers; nobody's do not exist."""

    d: Deployment
    w: World
    sku: str
    store_a: str
    store_b: str
    guide_a: str
    guide_b: str
    targets: dict[str, Target]
    as_a: Metadata
    as_b: Metadata
    mini: Metadata
    member_b: membership_pb2.Member  # a member of B with entries to page through
    till_b: orders_pb2.Order  # a sale at B's till

    @classmethod
    def set_up(cls, d: Deployment, w: World) -> _Scene:
        sku = w.name("authz")
        store_a = w.store("A", 0, {sku: 500})
        store_b = w.store("B", 2_500, {sku: 500})
        guide_a, guide_b = w.guide(store_a), w.guide(store_b)
        scene = cls(
            d=d,
            w=w,
            sku=sku,
            store_a=store_a,
            store_b=store_b,
            guide_a=guide_a,
            guide_b=guide_b,
            targets={},
            as_a=w.store_token(store_a),
            as_b=w.store_token(store_b),
            mini=d.token(Role.CHANNEL, channel=MINI, subject=w.name("mini")),
            member_b=membership_pb2.Member(),
            till_b=orders_pb2.Order(),
        )
        scene.targets = {
            OWN: scene.target(MINI, store_a, guide_a, 0),
            OTHER_STORE: scene.target(MINI, store_b, guide_b, 2_500),
            OTHER_CHANNEL: scene.target(APP_CHANNEL, store_a, guide_a, 0),
            NOBODY: Target(
                customer_id=f"cus_{uuid.uuid4().hex}",
                account=common_pb2.ChannelAccount(
                    channel=common_pb2.CHANNEL_WECHAT_MINI_PROGRAM, external_id=w.name("nobody")
                ),
                phone=f"136{uuid.uuid4().int % 10**8:08d}",
                member_id=f"mem_{uuid.uuid4().hex}",
                coupon=uuid.uuid4().hex[:12].upper(),
                source_id=w.name("nobody-source"),
                order_id=f"ord_{uuid.uuid4().hex}",
                store_id=w.name("nowhere"),
                guide_id=w.name("no-guide"),
            ),
        }
        scene.targets = scene.marketing(scene.targets)
        scene.member_b = d.membership.GetMember(
            membership_pb2.GetMemberRequest(member_id=scene.targets[OTHER_STORE].member_id), metadata=w.ops
        ).member
        scene.till_b = d.orders.CreateOrder(
            w.in_store(w.name("till-b"), store_b, f"135{uuid.uuid4().int % 10**8:08d}", {sku: 1}),
            metadata=scene.as_b,
        ).order
        return scene

    def target(self, channel: str, store_id: str, guide_id: str, north_m: float) -> Target:
        """A customer of `channel` whose member's home is `store_id`, with points spent, a coupon and
        an order through their channel that `store_id` fulfils."""
        w, d = self.w, self.d
        external = w.name(f"{channel.lower()}-{uuid.uuid4().hex[:6]}")
        phone = f"138{uuid.uuid4().int % 10**8:08d}"
        customer_id = w.customer(channel, external, phone)
        member = d.membership.Enroll(
            membership_pb2.EnrollRequest(
                customer_id=customer_id,
                home_store_id=store_id,
                guide_id=guide_id,
                channel=common_pb2.Channel.Value(channel),
            ),
            metadata=w.service,
        ).member
        w.earn(member.member_id, 50_000)
        source_id = w.name(f"spent-{uuid.uuid4().hex[:6]}")
        d.membership.RedeemPoints(
            membership_pb2.RedeemPointsRequest(member_id=member.member_id, points=10, source_id=source_id),
            metadata=w.service,
        )
        return Target(
            customer_id=customer_id,
            account=common_pb2.ChannelAccount(
                channel=common_pb2.Channel.Value(channel), external_id=external
            ),
            phone=phone,
            member_id=member.member_id,
            coupon=w.coupon(member.member_id, 100),
            source_id=source_id,
            order_id=self.order(channel, customer_id, north_m),
            store_id=store_id,
            guide_id=guide_id,
        )

    def marketing(self, targets: dict[str, Target]) -> dict[str, Target]:
        """What marketing knows of the targets: each customer's account, as identity's outbox
        reports it, and a campaign for each store's members alone; nobody's campaign does not
        exist."""
        w, stub = self.w, marketing_pb2_grpc.MarketingServiceStub(self.d.channel("marketing"))
        linked = [
            marketing_pb2.Event(
                event_id=w.name(f"linked-{t.customer_id}"),
                account_linked=marketing_pb2.AccountLinked(customer_id=t.customer_id, account=t.account),
            )
            for kind, t in targets.items()
            if kind != NOBODY
        ]
        stub.IngestEvents(marketing_pb2.IngestEventsRequest(events=linked), metadata=w.service)
        campaigns = {f"cmp_{uuid.uuid4().hex}": ""}
        for store_id in (self.store_a, self.store_b):
            made = stub.CreateCampaign(
                marketing_pb2.CreateCampaignRequest(
                    campaign=marketing_pb2.Campaign(
                        name=f"{store_id}'s members",
                        trigger=marketing_pb2.Trigger(event=marketing_pb2.TRIGGER_EVENT_ORDER_COMPLETED),
                        audience=marketing_pb2.Audience(home_store_ids=[store_id]),
                        actions=[marketing_pb2.Action(grant_points=10)],
                    )
                ),
                metadata=w.ops,
            ).campaign
            campaigns[store_id] = made.campaign_id
        nobody = next(iter(campaigns))
        return {
            kind: replace(t, campaign_id=campaigns.get(t.store_id, nobody)) for kind, t in targets.items()
        }

    def order(self, channel: str, customer_id: str, north_m: float) -> str:
        """An order through `channel` for the customer, to the store `north_m` metres north."""
        request = orders_pb2.CreateOrderRequest(
            request_id=self.w.name(f"authz-{uuid.uuid4().hex[:8]}"),
            customer_id=customer_id,
            channel=common_pb2.Channel.Value(channel),
            fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
            lines=[common_pb2.Line(sku=self.sku, quantity=1, unit_price_cents=2_000)],
            delivery_location=self.w.here(north_m),
            delivery_address="8 Matrix Road",
        )
        order_id: str = self.d.orders.CreateOrder(request, metadata=self.w.ops).order.order_id
        return order_id

    def fresh_orders(self) -> dict[str, Target]:
        """The targets with new orders: for calls that move an order along, each role its own."""
        fresh = dict(self.targets)
        for kind, north in ((OWN, 0.0), (OTHER_STORE, 2_500.0), (OTHER_CHANNEL, 0.0)):
            t = self.targets[kind]
            channel = common_pb2.Channel.Name(t.account.channel)
            fresh[kind] = replace(t, order_id=self.order(channel, t.customer_id, north))
        return fresh

    def member_code(self, member_id: str) -> str:
        return self.w.member_code(member_id)


# What a cell must answer.
REACH = "reaches"  # the call acts on the object: anything but the answer nobody's object gets
AS_MISSING = "as missing"  # exactly the answer nobody's object gets, and no data
ANY = "any answer"  # the role is admitted and the object makes no difference the matrix checks
ALIKE = "alike"  # every object gets the same answer (e.g. an event is accepted for anyone)


@dataclass(frozen=True)
class Refused:
    code: grpc.StatusCode
    reason: str


Expect = str | Refused
Call = Callable[[_Scene, Metadata, Target, Role], Any]


@dataclass(frozen=True)
class Spec:
    """An RPC (or one way of calling it) in the matrix: how to call it on a target, and what each
    admitted role must get for each kind of object (the house rule unless `expect` says)."""

    method: str  # full method name
    call: Call
    expect: Callable[[Role, str], Expect] | None = None
    fresh_orders: bool = False  # the call moves an order along: each role gets orders of its own


def house_rule(role: Role, kind: str) -> Expect:
    """A store reaches its own store's objects, a channel its own customers', ops and services
    everything; nobody's object is missing for all."""
    if kind == NOBODY:
        return AS_MISSING
    if role is Role.STORE:
        return REACH if kind in (OWN, OTHER_CHANNEL) else AS_MISSING
    if role is Role.CHANNEL:
        return REACH if kind in (OWN, OTHER_STORE) else AS_MISSING
    return REACH


def store_reaches_all(role: Role, kind: str) -> Expect:
    """The till serves every customer of the chain (shown their till accounts only)."""
    if role is Role.STORE:
        return AS_MISSING if kind == NOBODY else REACH
    return house_rule(role, kind)


def public(role: Role, kind: str) -> Expect:
    return AS_MISSING if kind == NOBODY else REACH


def code_required(role: Role, kind: str) -> Expect:
    """Spending: a till needs the member's code, whoever's member it is."""
    if role is Role.STORE:
        return Refused(DENIED, "MEMBER_CODE_REQUIRED")
    return house_rule(role, kind)


def with_code(role: Role, kind: str) -> Expect:
    """With the code the member shows at this till, the till reaches any member; a code is no
    channel's to present."""
    if role is Role.STORE:
        return Refused(DENIED, "MEMBER_CODE_INVALID") if kind == NOBODY else REACH
    if role is Role.CHANNEL:
        return Refused(DENIED, "MEMBER_CODE_INVALID")
    return house_rule(role, kind)


def always(expect: Expect) -> Callable[[Role, str], Expect]:
    return lambda role, kind: expect


def _id(t: Target) -> str:
    return uuid.uuid4().hex[:10]


def _specs() -> list[Spec]:
    ident, memb, ords, fulf, mark = (
        "/quanyu.identity.v1.IdentityService/",
        "/quanyu.membership.v1.MembershipService/",
        "/quanyu.orders.v1.OrderService/",
        "/quanyu.fulfilment.v1.FulfilmentService/",
        "/quanyu.marketing.v1.MarketingService/",
    )
    i, m, o, f, mk = identity_pb2, membership_pb2, orders_pb2, fulfilment_pb2, marketing_pb2

    def own_account(s: _Scene, role: Role) -> common_pb2.ChannelAccount:
        """An account of the caller's own to link: a till card, a mini-program openid; ops and
        services link a JD account, which makes no customer one of the callers' here."""
        channel = {
            Role.STORE: common_pb2.CHANNEL_STORE_POS,
            Role.CHANNEL: common_pb2.CHANNEL_WECHAT_MINI_PROGRAM,
        }.get(role, common_pb2.CHANNEL_JD)
        return common_pb2.ChannelAccount(
            channel=channel, external_id=s.w.name(f"link-{uuid.uuid4().hex[:8]}")
        )

    def resolve(s: _Scene, meta: Metadata, t: Target, role: Role) -> Any:
        # A till names its customer by the phone they tell it; the others by the account. Nobody's
        # account or phone makes a new customer, so it is a new one each time.
        if t is s.targets[NOBODY]:
            fresh = uuid.uuid4().hex[:8]
            t = replace(
                t,
                phone=f"136{uuid.uuid4().int % 10**8:08d}",
                account=common_pb2.ChannelAccount(channel=t.account.channel, external_id=f"nobody-{fresh}"),
            )
        request = (
            i.ResolveCustomerRequest(phone=t.phone)
            if role is Role.STORE
            else i.ResolveCustomerRequest(account=t.account)
        )
        return s.d.identity.ResolveCustomer(request, metadata=meta)

    def resolve_expect(role: Role, kind: str) -> Expect:
        if role is Role.CHANNEL and kind == OTHER_CHANNEL:
            return Refused(DENIED, "OTHER_CHANNEL")
        return ANY  # a new account or phone makes a new customer: nothing to compare it with

    def create_order(s: _Scene, meta: Metadata, t: Target, role: Role) -> Any:
        if role is Role.STORE:
            request = s.w.in_store(s.w.name(f"sale-{uuid.uuid4().hex[:8]}"), t.store_id, t.phone, {s.sku: 1})
        else:
            request = orders_pb2.CreateOrderRequest(
                request_id=s.w.name(f"order-{uuid.uuid4().hex[:8]}"),
                customer_id=t.customer_id,
                channel=common_pb2.CHANNEL_WECHAT_MINI_PROGRAM
                if role is Role.CHANNEL
                else common_pb2.CHANNEL_APP,
                fulfilment_type=common_pb2.FULFILMENT_TYPE_PICKUP,
                origin_store_id=s.store_a,
                lines=[common_pb2.Line(sku=s.sku, quantity=1, unit_price_cents=1_000)],
            )
        return s.d.orders.CreateOrder(request, metadata=meta)

    def create_expect(role: Role, kind: str) -> Expect:
        if role is Role.STORE:
            return REACH if kind in (OWN, OTHER_CHANNEL) else AS_MISSING  # sells at its own store only
        return house_rule(role, kind)

    def enroll_expect(role: Role, kind: str) -> Expect:
        if role is Role.STORE and kind == OTHER_STORE:
            return Refused(DENIED, "MEMBER_OF_ANOTHER_STORE")
        if role in (Role.OPS, Role.SERVICE):
            return ANY  # the platform's callers enrol any customer id they give
        return house_rule(role, kind)

    def platform_any(role: Role, kind: str) -> Expect:
        """Stores and channels by the house rule; the platform's callers may do anything with ids
        nobody has (ops: a guide of a store yet to open, a list of nothing)."""
        if role in (Role.OPS, Role.SERVICE):
            return ANY
        return house_rule(role, kind)

    def store_scoped(role: Role, kind: str) -> Expect:
        """Named by store: a till its own store only; the platform's callers any store."""
        if role is Role.STORE:
            return REACH if kind in (OWN, OTHER_CHANNEL) else AS_MISSING
        return ANY

    def own_store_else_missing(role: Role, kind: str) -> Expect:
        if role is Role.STORE:
            return REACH if kind in (OWN, OTHER_CHANNEL) else AS_MISSING
        return house_rule(role, kind)

    return [
        # identity
        Spec(ident + "ResolveCustomer", resolve, resolve_expect),
        Spec(
            ident + "GetCustomer",
            lambda s, meta, t, role: s.d.identity.GetCustomer(
                i.GetCustomerRequest(customer_id=t.customer_id), metadata=meta
            ),
            store_reaches_all,
        ),
        Spec(
            ident + "LookupCustomer",
            lambda s, meta, t, role: s.d.identity.LookupCustomer(
                i.LookupCustomerRequest(account=t.account), metadata=meta
            ),
            lambda role, kind: AS_MISSING if role is Role.STORE else house_rule(role, kind),
        ),
        Spec(
            ident + "LookupCustomer#phone",
            lambda s, meta, t, role: s.d.identity.LookupCustomer(
                i.LookupCustomerRequest(phone=t.phone), metadata=meta
            ),
            store_reaches_all,
        ),
        Spec(
            ident + "LinkAccount",
            lambda s, meta, t, role: s.d.identity.LinkAccount(
                i.LinkAccountRequest(customer_id=t.customer_id, account=own_account(s, role)), metadata=meta
            ),
            store_reaches_all,
        ),
        Spec(
            ident + "MergeCustomers",
            lambda s, meta, t, role: s.d.identity.MergeCustomers(
                i.MergeCustomersRequest(
                    survivor_customer_id=f"cus_{_id(t)}", merged_customer_id=f"cus_{_id(t)}"
                ),
                metadata=meta,
            ),
            always(ANY),
        ),
        Spec(
            ident + "IssueToken",
            lambda s, meta, t, role: s.d.identity.IssueToken(
                i.IssueTokenRequest(role=i.ROLE_STORE, store_id=t.store_id, ttl_seconds=60), metadata=meta
            ),
            public,
        ),
        # membership
        Spec(
            memb + "Enroll",
            lambda s, meta, t, role: s.d.membership.Enroll(
                m.EnrollRequest(customer_id=t.customer_id), metadata=meta
            ),
            enroll_expect,
        ),
        Spec(
            memb + "GetMember",
            lambda s, meta, t, role: s.d.membership.GetMember(
                m.GetMemberRequest(member_id=t.member_id), metadata=meta
            ),
        ),
        Spec(
            memb + "GetMember#code",
            lambda s, meta, t, role: s.d.membership.GetMember(
                m.GetMemberRequest(member_code=_code(s, t)), metadata=meta
            ),
            lambda role, kind: with_code(role, kind) if role in (Role.STORE, Role.CHANNEL) else ANY,
        ),
        Spec(
            memb + "CreateMemberCode",
            lambda s, meta, t, role: s.d.membership.CreateMemberCode(
                m.CreateMemberCodeRequest(member_id=t.member_id), metadata=meta
            ),
        ),
        Spec(
            memb + "EarnPoints",
            lambda s, meta, t, role: s.d.membership.EarnPoints(
                m.EarnPointsRequest(
                    member_id=t.member_id, source_id=s.w.name(f"earn-{_id(t)}"), spend_cents=100
                ),
                metadata=meta,
            ),
        ),
        Spec(
            memb + "RedeemPoints",
            lambda s, meta, t, role: s.d.membership.RedeemPoints(
                m.RedeemPointsRequest(member_id=t.member_id, points=1, source_id=s.w.name(f"spend-{_id(t)}")),
                metadata=meta,
            ),
            code_required,
        ),
        Spec(
            memb + "RedeemPoints#code",
            lambda s, meta, t, role: s.d.membership.RedeemPoints(
                m.RedeemPointsRequest(
                    member_id=t.member_id,
                    points=1,
                    source_id=s.w.name(f"spend-{_id(t)}"),
                    member_code=_code(s, t),
                ),
                metadata=meta,
            ),
            with_code,
        ),
        Spec(
            memb + "ReversePoints",
            lambda s, meta, t, role: s.d.membership.ReversePoints(
                m.ReversePointsRequest(source_id=t.source_id), metadata=meta
            ),
            always(ANY),
        ),
        Spec(
            memb + "ListLedgerEntries",
            lambda s, meta, t, role: s.d.membership.ListLedgerEntries(
                m.ListLedgerEntriesRequest(member_id=t.member_id), metadata=meta
            ),
        ),
        Spec(
            memb + "ListLedgerEntries#code",
            lambda s, meta, t, role: s.d.membership.ListLedgerEntries(
                m.ListLedgerEntriesRequest(member_id=t.member_id, member_code=_code(s, t)), metadata=meta
            ),
            with_code,
        ),
        Spec(
            memb + "GrantPoints",
            lambda s, meta, t, role: s.d.membership.GrantPoints(
                m.GrantPointsRequest(
                    member_id=t.member_id, points=5, source_id=s.w.name(f"grant-{_id(t)}"), reason="MATRIX"
                ),
                metadata=meta,
            ),
        ),
        Spec(
            memb + "ListCoupons",
            lambda s, meta, t, role: s.d.membership.ListCoupons(
                m.ListCouponsRequest(member_id=t.member_id, include_inactive=True), metadata=meta
            ),
        ),
        Spec(
            memb + "IssueCoupon",
            lambda s, meta, t, role: s.d.membership.IssueCoupon(
                m.IssueCouponRequest(
                    member_id=t.member_id,
                    discount_cents=1,
                    expire_time=_tomorrow(),
                    request_id=s.w.name(_id(t)),
                ),
                metadata=meta,
            ),
        ),
        Spec(
            memb + "RedeemCoupon",
            lambda s, meta, t, role: s.d.membership.RedeemCoupon(
                m.RedeemCouponRequest(
                    code=t.coupon, member_id=t.member_id, order_id=f"ord_{_id(t)}", order_amount_cents=10_000
                ),
                metadata=meta,
            ),
            code_required,
        ),
        Spec(
            memb + "RedeemCoupon#code",
            lambda s, meta, t, role: s.d.membership.RedeemCoupon(
                m.RedeemCouponRequest(
                    code=t.coupon,
                    member_id=t.member_id,
                    order_id=f"ord_{_id(t)}",
                    order_amount_cents=10_000,
                    member_code=_code(s, t),
                ),
                metadata=meta,
            ),
            with_code,
        ),
        Spec(
            memb + "ReleaseCoupon",
            lambda s, meta, t, role: s.d.membership.ReleaseCoupon(
                m.ReleaseCouponRequest(code=t.coupon, order_id=f"ord_{_id(t)}"), metadata=meta
            ),
        ),
        Spec(
            memb + "RecordEvent",
            lambda s, meta, t, role: s.d.membership.RecordEvent(
                m.RecordEventRequest(customer_id=t.customer_id, event_type=m.EVENT_TYPE_VIEW), metadata=meta
            ),
            always(ALIKE),
        ),
        Spec(
            memb + "ListMembers",
            lambda s, meta, t, role: s.d.membership.ListMembers(
                m.ListMembersRequest(home_store_id=t.store_id), metadata=meta
            ),
            store_scoped,
        ),
        Spec(
            memb + "UpdateTags",
            lambda s, meta, t, role: s.d.membership.UpdateTags(
                m.UpdateTagsRequest(member_id=t.member_id, add_tags=["matrix"]), metadata=meta
            ),
        ),
        Spec(
            memb + "BatchIssueCoupons",
            lambda s, meta, t, role: s.d.membership.BatchIssueCoupons(
                m.BatchIssueCouponsRequest(
                    requests=[
                        m.IssueCouponRequest(
                            member_id=t.member_id,
                            discount_cents=1,
                            expire_time=_tomorrow(),
                            request_id=s.w.name(f"batch-{_id(t)}"),
                        )
                    ]
                ),
                metadata=meta,
            ),
        ),
        Spec(
            memb + "BatchGrantPoints",
            lambda s, meta, t, role: s.d.membership.BatchGrantPoints(
                m.BatchGrantPointsRequest(
                    requests=[
                        m.GrantPointsRequest(
                            member_id=t.member_id, points=5, source_id=s.w.name(f"batch-grant-{_id(t)}")
                        )
                    ]
                ),
                metadata=meta,
            ),
        ),
        Spec(
            memb + "BatchUpdateTags",
            lambda s, meta, t, role: s.d.membership.BatchUpdateTags(
                m.BatchUpdateTagsRequest(
                    requests=[m.UpdateTagsRequest(member_id=t.member_id, add_tags=["matrix"])]
                ),
                metadata=meta,
            ),
        ),
        Spec(
            memb + "BatchEarnPoints",
            lambda s, meta, t, role: s.d.membership.BatchEarnPoints(
                m.BatchEarnPointsRequest(
                    requests=[
                        m.EarnPointsRequest(
                            member_id=t.member_id, spend_cents=100, source_id=s.w.name(f"batch-earn-{_id(t)}")
                        )
                    ]
                ),
                metadata=meta,
            ),
        ),
        Spec(
            memb + "GetFunnel",
            lambda s, meta, t, role: s.d.membership.GetFunnel(
                m.GetFunnelRequest(home_store_id=t.store_id), metadata=meta
            ),
            store_scoped,
        ),
        Spec(
            memb + "MergeMembers",
            lambda s, meta, t, role: s.d.membership.MergeMembers(
                m.MergeMembersRequest(
                    survivor_customer_id=f"cus_{_id(t)}",
                    merged_customer_id=f"cus_{_id(t)}",
                    request_id=_id(t),
                ),
                metadata=meta,
            ),
            always(ANY),
        ),
        Spec(
            memb + "UpsertGuide",
            lambda s, meta, t, role: s.d.membership.UpsertGuide(
                m.UpsertGuideRequest(
                    guide=m.Guide(guide_id=s.w.name(f"g-{_id(t)}"), store_id=t.store_id, active=True)
                ),
                metadata=meta,
            ),
            store_scoped,
        ),
        Spec(
            memb + "GetGuide",
            lambda s, meta, t, role: s.d.membership.GetGuide(
                m.GetGuideRequest(guide_id=t.guide_id), metadata=meta
            ),
            own_store_else_missing,
        ),
        Spec(
            memb + "ListGuides",
            lambda s, meta, t, role: s.d.membership.ListGuides(
                m.ListGuidesRequest(store_id=t.store_id), metadata=meta
            ),
            store_scoped,
        ),
        # orders
        Spec(ords + "CreateOrder", create_order, create_expect),
        Spec(
            ords + "GetOrder",
            lambda s, meta, t, role: s.d.orders.GetOrder(
                o.GetOrderRequest(order_id=t.order_id), metadata=meta
            ),
        ),
        Spec(
            ords + "ListOrders",
            lambda s, meta, t, role: s.d.orders.ListOrders(
                o.ListOrdersRequest(store_id=t.store_id)
                if role is Role.STORE
                else o.ListOrdersRequest(customer_id=t.customer_id),
                metadata=meta,
            ),
            lambda role, kind: store_scoped(role, kind) if role is Role.STORE else house_rule(role, kind),
        ),
        *[
            Spec(ords + name, _move(name), fresh_orders=True)
            for name in ("AcceptOrder", "RejectOrder", "MarkOrderReady", "CompleteOrder", "CancelOrder")
        ],
        Spec(
            ords + "GetStoreReport",
            lambda s, meta, t, role: s.d.orders.GetStoreReport(
                o.GetStoreReportRequest(store_id=t.store_id), metadata=meta
            ),
            store_scoped,
        ),
        Spec(
            ords + "GetGuideReport",
            lambda s, meta, t, role: s.d.orders.GetGuideReport(
                o.GetGuideReportRequest(guide_id=t.guide_id), metadata=meta
            ),
            own_store_else_missing,
        ),
        Spec(
            ords + "GetOrderHistory",
            lambda s, meta, t, role: s.d.orders.GetOrderHistory(
                o.GetOrderHistoryRequest(order_id=t.order_id), metadata=meta
            ),
        ),
        Spec(
            ords + "GetOutboxStatus",
            lambda s, meta, t, role: s.d.orders.GetOutboxStatus(o.GetOutboxStatusRequest(), metadata=meta),
            always(ANY),
        ),
        Spec(
            ords + "IngestCustomerEvents",
            lambda s, meta, t, role: s.d.orders.IngestCustomerEvents(
                o.IngestCustomerEventsRequest(
                    events=[
                        o.CustomerEvent(
                            event_id=f"matrix/{_id(t)}",
                            member=o.MemberState(
                                member_id=f"mem_matrix_{_id(t)}",
                                version=1,
                                customer_id=f"cus_matrix_{_id(t)}",
                                root_member_id=f"mem_matrix_{_id(t)}",
                            ),
                        )
                    ]
                ),
                metadata=meta,
            ),
            always(ANY),
        ),
        # fulfilment
        Spec(
            fulf + "UpsertStore",
            lambda s, meta, t, role: s.d.fulfilment.UpsertStore(
                f.UpsertStoreRequest(
                    store=f.Store(store_id=s.w.name(f"new-{_id(t)}"), name="New", location=s.w.here(90_000))
                ),
                metadata=meta,
            ),
            always(ANY),
        ),
        Spec(
            fulf + "ImportStores",
            lambda s, meta, t, role: s.d.fulfilment.ImportStores(f.ImportStoresRequest(), metadata=meta),
            always(ANY),
        ),
        Spec(
            fulf + "GetStore",
            lambda s, meta, t, role: s.d.fulfilment.GetStore(
                f.GetStoreRequest(store_id=t.store_id), metadata=meta
            ),
            public,
        ),
        Spec(
            fulf + "ListStores",
            lambda s, meta, t, role: s.d.fulfilment.ListStores(
                f.ListStoresRequest(page_size=1), metadata=meta
            ),
            always(ANY),
        ),
        Spec(
            fulf + "SetStock",
            lambda s, meta, t, role: s.d.fulfilment.SetStock(
                f.SetStockRequest(
                    store_id=t.store_id, levels=[f.SkuQuantity(sku=s.w.name("matrix-sku"), on_hand=5)]
                ),
                metadata=meta,
            ),
            lambda role, kind: store_scoped(role, kind) if role is Role.STORE else public(role, kind),
        ),
        Spec(
            fulf + "GetStock",
            lambda s, meta, t, role: s.d.fulfilment.GetStock(
                f.GetStockRequest(store_id=t.store_id), metadata=meta
            ),
            lambda role, kind: store_scoped(role, kind) if role is Role.STORE else public(role, kind),
        ),
        Spec(
            fulf + "FindNearestStores",
            lambda s, meta, t, role: s.d.fulfilment.FindNearestStores(
                f.FindNearestStoresRequest(location=s.w.here()), metadata=meta
            ),
            always(ANY),
        ),
        *[
            Spec(fulf + name, _reservation(name), always(ANY))
            for name in ("AssignStore", "ReleaseReservation", "CommitReservation", "BatchCommitReservations")
        ],
        Spec(
            fulf + "ExplainAssignment",
            lambda s, meta, t, role: s.d.fulfilment.ExplainAssignment(
                f.ExplainAssignmentRequest(order_id=t.order_id), metadata=meta
            ),
            public,
        ),
        Spec(
            fulf + "CheckStoreOpen",
            lambda s, meta, t, role: s.d.fulfilment.CheckStoreOpen(
                f.CheckStoreOpenRequest(store_id=t.store_id), metadata=meta
            ),
            lambda role, kind: store_scoped(role, kind) if role is Role.STORE else public(role, kind),
        ),
        # marketing: a store reads the results of its own store's campaigns only; a channel sets
        # consent for customers with an account on it only (ops for anyone, answered alike); an
        # acknowledgement of another channel's message, or of none, changes nothing
        Spec(
            mark + "GetCampaignResults",
            lambda s, meta, t, role: _marketing(s).GetCampaignResults(
                mk.GetCampaignResultsRequest(campaign_id=t.campaign_id), metadata=meta
            ),
        ),
        Spec(
            mark + "SetContactPreferences",
            lambda s, meta, t, role: _marketing(s).SetContactPreferences(
                mk.SetContactPreferencesRequest(
                    customer_id=t.customer_id,
                    channel=common_pb2.CHANNEL_WECHAT_MINI_PROGRAM,
                    marketing_consent=True,
                ),
                metadata=meta,
            ),
            lambda role, kind: ALIKE if role is Role.OPS else house_rule(role, kind),
        ),
        Spec(
            mark + "AckMessages",
            lambda s, meta, t, role: _marketing(s).AckMessages(
                mk.AckMessagesRequest(message_ids=[f"msg_{t.customer_id}"[:64]]), metadata=meta
            ),
            always(ALIKE),
        ),
    ]


def _marketing(s: _Scene) -> marketing_pb2_grpc.MarketingServiceStub:
    return marketing_pb2_grpc.MarketingServiceStub(s.d.channel("marketing"))


def _code(s: _Scene, t: Target) -> str:
    """The code the target member's app shows now; nobody's is one nobody was given."""
    if t.member_id.startswith("mem_") and t is not s.targets[NOBODY]:
        return s.member_code(t.member_id)
    return "000000000000000000"


def _tomorrow() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    return stamp


def _move(name: str) -> Call:
    def call(s: _Scene, meta: Metadata, t: Target, role: Role) -> Any:
        stub = s.d.orders
        if name == "AcceptOrder":
            return stub.AcceptOrder(orders_pb2.AcceptOrderRequest(order_id=t.order_id), metadata=meta)
        if name == "RejectOrder":
            return stub.RejectOrder(
                orders_pb2.RejectOrderRequest(order_id=t.order_id, reason="matrix"), metadata=meta
            )
        if name == "MarkOrderReady":
            return stub.MarkOrderReady(orders_pb2.MarkOrderReadyRequest(order_id=t.order_id), metadata=meta)
        if name == "CompleteOrder":
            return stub.CompleteOrder(orders_pb2.CompleteOrderRequest(order_id=t.order_id), metadata=meta)
        return stub.CancelOrder(
            orders_pb2.CancelOrderRequest(order_id=t.order_id, reason="matrix"), metadata=meta
        )

    return call


def _reservation(name: str) -> Call:
    def call(s: _Scene, meta: Metadata, t: Target, role: Role) -> Any:
        stub, order_id = s.d.fulfilment, f"ord_{uuid.uuid4().hex}"
        if name == "AssignStore":
            return stub.AssignStore(
                fulfilment_pb2.AssignStoreRequest(
                    order_id=order_id,
                    location=s.w.here(),
                    lines=[common_pb2.Line(sku=s.sku, quantity=1)],
                    fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
                ),
                metadata=meta,
            )
        if name == "ReleaseReservation":
            return stub.ReleaseReservation(
                fulfilment_pb2.ReleaseReservationRequest(order_id=order_id), metadata=meta
            )
        if name == "BatchCommitReservations":
            return stub.BatchCommitReservations(
                fulfilment_pb2.BatchCommitReservationsRequest(
                    requests=[fulfilment_pb2.CommitReservationRequest(order_id=order_id)]
                ),
                metadata=meta,
            )
        return stub.CommitReservation(
            fulfilment_pb2.CommitReservationRequest(order_id=order_id), metadata=meta
        )

    return call


def _object_matrix(d: Deployment, s: _Scene, figures: AuthzFigures) -> None:
    documented = documented_roles()
    callers = {Role.OPS: s.w.ops, Role.SERVICE: s.w.service, Role.CHANNEL: s.mini, Role.STORE: s.as_a}
    for spec in _specs():
        admitted = documented.get(spec.method.split("#")[0], frozenset())
        for role, meta in callers.items():
            targets = s.fresh_orders() if spec.fresh_orders and role in admitted else s.targets
            row = _Row(
                spec, role, targets, {kind: _cell(s, spec, meta, targets[kind], role) for kind in KINDS}
            )
            for kind in KINDS:
                figures.cells += 1
                _judge(figures, row, kind, admitted)


def _cell(s: _Scene, spec: Spec, meta: Metadata, target: Target, role: Role) -> Outcome[Message]:
    return attempt(lambda: spec.call(s, meta, target, role))


@dataclass(frozen=True)
class _Row:
    """One RPC called by one role on an object of each kind."""

    spec: Spec
    role: Role
    targets: dict[str, Target]
    outcomes: dict[str, Outcome[Message]]


def _judge(figures: AuthzFigures, row: _Row, kind: str, admitted: frozenset[Role]) -> None:
    where = f"{row.spec.method} as {row.role.value} on {kind} object"
    outcome, missing = row.outcomes[kind], row.outcomes[NOBODY]
    if outcome.code in SERVER_ERRORS:
        figures.problems.append(f"{where}: {outcome}")
        return
    if row.role not in admitted:
        if (outcome.code, outcome.reason) != (DENIED, "PERMISSION_DENIED"):
            figures.leak(f"{where}: a role the protos leave out got {outcome}")
        return
    expect = (row.spec.expect or house_rule)(row.role, kind)
    ids = _ids(row.targets[kind]) + _ids(row.targets[NOBODY])
    if isinstance(expect, Refused):
        if (outcome.code, outcome.reason) != (expect.code, expect.reason):
            figures.leak(f"{where}: expected {expect.code.name} {expect.reason}, got {outcome}")
        return
    alike = _view(outcome, ids) == _view(missing, ids)
    if expect in (AS_MISSING, ALIKE):
        if not alike:
            figures.leak(f"{where}: told apart from nobody's: {outcome} / {missing}")
        return
    if expect == REACH and (outcome.code in (DENIED, grpc.StatusCode.NOT_FOUND, UNAUTHENTICATED) or alike):
        figures.over_refused += 1
        figures.problems.append(f"{where}: refused what is the caller's own: {outcome}")
        return
    if outcome.ok and outcome.value is not None:
        _kept_promise(figures, where, row.role, outcome.value)


def _kept_promise(figures: AuthzFigures, where: str, role: Role, answer: Message) -> None:
    """No more data than the protos promise: a channel is shown its own channel's accounts only, a
    till its till accounts only."""
    if role not in (Role.CHANNEL, Role.STORE):
        return
    allowed = common_pb2.CHANNEL_WECHAT_MINI_PROGRAM if role is Role.CHANNEL else common_pb2.CHANNEL_STORE_POS
    for account in _accounts(answer):
        if account.channel != allowed:
            figures.leak(f"{where}: shown a {common_pb2.Channel.Name(account.channel)} account")


def _accounts(message: Message) -> Iterator[common_pb2.ChannelAccount]:
    if isinstance(message, common_pb2.ChannelAccount):
        yield message
        return
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        for item in value if descriptor.is_repeated else [value]:
            yield from _accounts(item)


def _ids(t: Target) -> tuple[str, ...]:
    return (
        t.customer_id,
        t.member_id,
        t.order_id,
        t.store_id,
        t.guide_id,
        t.coupon,
        t.account.external_id,
        t.campaign_id,
    )


_NAMED_IN_MESSAGES = re.compile(r"CHANNEL_[A-Z_]+|\d{3}\*{4}\d{4}")


def _view(outcome: Outcome[Message], ids: tuple[str, ...]) -> tuple[str, str, str, bytes]:
    """What an answer tells: its code, reason, message and body, with the ids the caller itself
    sent (and the channels and masked phones it named) masked out."""
    message = outcome.message
    for value in sorted(ids, key=len, reverse=True):  # longest first: a store id is in a guide's
        if value:
            message = message.replace(value, "<id>")
    message = _NAMED_IN_MESSAGES.sub("<named>", message)
    body = outcome.value.SerializeToString(deterministic=True) if outcome.value is not None else b""
    return outcome.code.name, outcome.reason, message, body


def _attempt(call: Callable[[], Message]) -> Outcome[Message]:
    return attempt(call)


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
            "ListCoupons",
            lambda who, token, whose: d.membership.ListCoupons(
                membership_pb2.ListCouponsRequest(
                    member_id=whose, include_inactive=True, page_size=1, page_token=token
                ),
                metadata=who,
            ),
            member,
            s.till_b.member_id if s.till_b.member_id != member else w.name("nobody"),
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
