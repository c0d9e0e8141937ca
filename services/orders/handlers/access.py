"""Who may do what to which order: a store or channel acts only on what is its own, and learns
nothing of other orders, not even that they exist."""

from __future__ import annotations

from quanyu.auth import STORE_POS, Principal, Role
from quanyu.errors import InvalidArgument, NotFound, PermissionDenied, QuanyuError, error_for
from services.orders.domain import SYSTEM, FulfilmentType, Order, OrderRequest

# The principal of orders' own automatic changes (an accept timeout, a re-route).
SYSTEM_PRINCIPAL = Principal(Role.SERVICE, SYSTEM)


def actor_of(principal: Principal) -> str:
    """Who did it, for the order's history: the terminal or backend, within its store or channel
    (`store:SH-001/till-3`)."""
    if principal is SYSTEM_PRINCIPAL:
        return SYSTEM
    return principal.name


def visible(principal: Principal, order_id: str, order: Order | None) -> Order:
    if principal.role is Role.STORE and (order is None or not order.is_for_store(principal.store_id)):
        raise PermissionDenied("not this store's order", reason="OTHER_STORE")
    if principal.role is Role.CHANNEL and (order is None or order.channel != principal.channel):
        raise PermissionDenied("not this channel's order", reason="OTHER_CHANNEL")
    if order is None:
        raise NotFound("order", order_id)
    return order


def fulfilling_store_only(principal: Principal, order_id: str, order: Order | None) -> Order:
    """A store reads the orders it originated but changes only those it fulfils."""
    if principal.role is Role.STORE and (order is None or order.fulfilling_store_id != principal.store_id):
        raise PermissionDenied("only the fulfilling store's terminal may do this", reason="OTHER_STORE")
    if order is None:
        raise NotFound("order", order_id)
    return order


def as_answered_by(service: str, error: QuanyuError) -> QuanyuError:
    """`error` as it reads when `service` gave it and orders passed it on: a refusal orders makes
    on another service's behalf must read the same as that service's own."""
    return error_for(error.code, f"{service}: {error.message}", reason=error.reason, metadata=error.metadata)


def check_caller(principal: Principal, request: OrderRequest) -> None:
    """Who may place what. A till sells at its own store, to customers it names by phone, till
    account or id, and spends a member's value only with their member code. A channel places
    online orders for its own customers, named by an account of its channel (or an id that holds
    one), and never a till sale: that would take another store's stock at its till price."""
    if principal.role is Role.STORE:
        if (
            request.fulfilment_type is not FulfilmentType.IN_STORE
            or request.origin_store_id != principal.store_id
        ):
            raise PermissionDenied(
                "a store terminal places in-store orders for its own store only", reason="OTHER_STORE"
            )
        if request.channel != STORE_POS or (
            request.customer.account_channel and request.customer.account_channel != STORE_POS
        ):
            raise PermissionDenied(
                "a till sells through its own channel and till accounts", reason="OTHER_CHANNEL"
            )
        if (request.coupon_code or request.points_to_redeem) and not request.member_code:
            raise PermissionDenied(
                "spending a member's points or coupons at the till needs the member code their app shows",
                reason="MEMBER_CODE_REQUIRED",
            )
    if principal.role is Role.CHANNEL:
        if request.channel != principal.channel or (
            request.customer.account_channel and request.customer.account_channel != principal.channel
        ):
            raise PermissionDenied("a channel places orders for its own channel only", reason="OTHER_CHANNEL")
        if request.fulfilment_type is FulfilmentType.IN_STORE:
            raise PermissionDenied(
                "in-store orders are placed by the store's till", reason="IN_STORE_AT_TILL_ONLY"
            )
        if not (request.customer.account_external_id or request.customer.customer_id):
            raise InvalidArgument(
                "account", f"a channel names its customer by a {principal.channel} account or a customer_id"
            )
