"""Who reaches a member, and how: the trust rules between callers that every use case applies
(a channel acts for its own customers, a store for its own till and members, ops and services for
the whole chain; spending at a till needs the member's code)."""

from __future__ import annotations

from collections.abc import Callable

from quanyu.auth import STORE_POS, Principal, Role
from quanyu.errors import PermissionDenied


def sees(principal: Principal, home_store_id: str, *, holds_channel_account: Callable[[], bool]) -> bool:
    """Whether a caller may read a member (balance, ledger, coupons) without the member's code.

    A channel backend reads the members of its own customers (a customer holding an account on its
    channel); a store reads its own members (whose home store it is); ops and services read all.
    Whether the customer holds the account is asked only of a channel, and only when needed.
    """
    if principal.role is Role.CHANNEL:
        return holds_channel_account()
    if principal.role is Role.STORE:
        return bool(home_store_id) and home_store_id == principal.store_id
    return True


def require_code_to_spend(principal: Principal, member_code: str) -> None:
    """A till spends a member's points or coupons only with the code the member's app shows:
    a store token alone, whoever's member it is, never spends anyone's value."""
    if principal.role is Role.STORE and not member_code:
        raise PermissionDenied(
            "spending a member's points or coupons at the till needs the member code their app shows",
            reason="MEMBER_CODE_REQUIRED",
        )


def spending_store(principal: Principal, store_id: str) -> str:
    """The store a spend happens at: a till's own when it names none, and never another's."""
    if principal.role is Role.STORE:
        store_id = store_id or principal.store_id
    principal.require_store(store_id)
    return store_id


def enrolling_as(principal: Principal, home_store_id: str, channel: str) -> tuple[str, str]:
    """The home store and channel an enrolment records: a till enrols with itself as home
    through its own channel, a channel backend through its own channel."""
    if principal.role is Role.STORE:
        if home_store_id and home_store_id != principal.store_id:
            raise PermissionDenied("a store enrols members with itself as home", reason="OTHER_STORE")
        if channel and channel != STORE_POS:
            raise PermissionDenied("a store enrols through its till", reason="OTHER_CHANNEL")
        return principal.store_id, STORE_POS
    if principal.role is Role.CHANNEL:
        if channel and channel != principal.channel:
            raise PermissionDenied("a channel enrols through itself", reason="OTHER_CHANNEL")
        return home_store_id, principal.channel
    return home_store_id, channel


def own_store(principal: Principal, home_store_id: str) -> str:
    """A store terminal sees only its own members; empty means its own store."""
    if principal.role is Role.STORE:
        if home_store_id and home_store_id != principal.store_id:
            raise PermissionDenied("a store sees only its own members", reason="OTHER_STORE")
        return principal.store_id
    return home_store_id


def is_front(principal: Principal) -> bool:
    """A till or a channel backend: a caller acting for some customers, not for the chain."""
    return principal.role in (Role.CHANNEL, Role.STORE)
