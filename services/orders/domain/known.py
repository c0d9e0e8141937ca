"""The customers and members orders knows without asking: what identity and membership tell it
of each change (IngestCustomerEvents), and what they answered for a customer's first order.

Each state told is whole (every account and phone of a customer; a member's customer, the member
they are part of, home store and guide) and carries a version that grows with every change of
it, so orders keeps the newest it has heard of, whatever order the events arrive in. A state
learnt from an answer has version 0: any state told supersedes it.

Orders answers from what it knows only when identity and membership would answer the same and
write nothing; anything it does not know for sure (an account or phone it has not heard of, or
heard of as two customers' while a merge is half told; a guide to check; a channel the customer
is not known to hold) is asked of them, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from quanyu.errors import Violations
from services.orders.domain.order import Member
from services.orders.domain.requests import MAX_ID_LENGTH, CustomerRef

# IngestCustomerEvents' caps (identity tells a customer holding more as withheld).
MAX_EVENTS = 500
MAX_EVENT_ID_LENGTH = 128
MAX_ACCOUNTS = 100
MAX_EXTERNAL_ID_LENGTH = 128
MAX_PHONE_HASHES = 20
MAX_PHONE_HASH_LENGTH = 64
# Merges form chains (A into B, B into C); past this many links orders asks instead.
MAX_CHAIN = 64


@dataclass(frozen=True)
class CustomerState:
    """A customer as identity holds them: `merged_into` empty while they stand."""

    customer_id: str
    version: int
    merged_into: str
    accounts: tuple[tuple[str, str], ...]  # (channel, external id)
    phone_hashes: tuple[str, ...]
    # Holds more accounts or phones than identity tells: never answered from what orders knows.
    withheld: bool = False


@dataclass(frozen=True)
class MemberState:
    """A member as membership holds them: `root_member_id` is their own id while they stand."""

    member_id: str
    version: int
    customer_id: str
    root_member_id: str
    home_store_id: str
    guide_id: str


@dataclass(frozen=True)
class CustomerEvent:
    event_id: str
    customer: CustomerState | None = None
    member: MemberState | None = None


@dataclass(frozen=True)
class KnownCustomer:
    customer_id: str
    merged_into: str
    withheld: bool
    channels: frozenset[str]


class Known(Protocol):
    """What orders knows, as the recognition below reads it."""

    def owners_of_account(self, channel: str, external_id: str) -> list[str]: ...

    def owners_of_phone(self, phone_hash: str) -> list[str]: ...

    def customer(self, customer_id: str) -> KnownCustomer | None: ...

    def members_of(self, customer_id: str) -> list[MemberState]: ...

    def member(self, member_id: str) -> MemberState | None: ...


def check_events(events: list[CustomerEvent], invalid: dict[str, str] | None = None) -> None:
    """Every problem of an ingest request, named by its field path. `invalid` holds what the
    transport could not even read (an account's channel that is no channel)."""
    v = Violations()
    for field_name, description in (invalid or {}).items():
        v.add(field_name, description)
    if len(events) > MAX_EVENTS:
        v.add("events", f"at most {MAX_EVENTS} events")
        v.raise_if_any()
    for index, event in enumerate(events):
        at = f"events[{index}]"
        v.text(event.event_id, f"{at}.event_id", max_length=MAX_EVENT_ID_LENGTH)
        if (event.customer is None) == (event.member is None):
            v.add(at, "give exactly one of customer and member")
        if event.customer is not None:
            _check_customer(v, event.customer, f"{at}.customer")
        if event.member is not None:
            _check_member(v, event.member, f"{at}.member")
    v.raise_if_any()


def _check_customer(v: Violations, state: CustomerState, at: str) -> None:
    v.text(state.customer_id, f"{at}.customer_id", max_length=MAX_ID_LENGTH)
    v.check(state.version >= 1, f"{at}.version", "must be at least 1")
    v.text(state.merged_into, f"{at}.merged_into_customer_id", max_length=MAX_ID_LENGTH, required=False)
    if len(state.accounts) > MAX_ACCOUNTS:
        v.add(f"{at}.accounts", f"at most {MAX_ACCOUNTS} accounts")
    else:
        for index, (_, external_id) in enumerate(state.accounts):
            v.text(external_id, f"{at}.accounts[{index}].external_id", max_length=MAX_EXTERNAL_ID_LENGTH)
    if len(state.phone_hashes) > MAX_PHONE_HASHES:
        v.add(f"{at}.phone_hashes", f"at most {MAX_PHONE_HASHES} phone hashes")
    else:
        for index, phone_hash in enumerate(state.phone_hashes):
            v.text(phone_hash, f"{at}.phone_hashes[{index}]", max_length=MAX_PHONE_HASH_LENGTH)


def _check_member(v: Violations, state: MemberState, at: str) -> None:
    v.text(state.member_id, f"{at}.member_id", max_length=MAX_ID_LENGTH)
    v.check(state.version >= 1, f"{at}.version", "must be at least 1")
    v.text(state.customer_id, f"{at}.customer_id", max_length=MAX_ID_LENGTH)
    v.text(state.root_member_id, f"{at}.root_member_id", max_length=MAX_ID_LENGTH)
    v.text(state.home_store_id, f"{at}.home_store_id", max_length=MAX_ID_LENGTH, required=False)
    v.text(state.guide_id, f"{at}.guide_id", max_length=MAX_ID_LENGTH, required=False)


def known_customer(known: Known, ref: CustomerRef, phone_hash: str | None) -> KnownCustomer | None:
    """The customer identity would answer for `ref` without writing anything, when orders knows
    them for sure; None: ask identity.

    Identity finds by id, else by account, else by phone. Found by account, it links the phone
    given when nobody holds it yet: unless the phone is known to be someone's, that is a write,
    and identity is asked.
    """
    if ref.customer_id:
        return _standing(known, ref.customer_id)
    if ref.account_external_id:
        owners = known.owners_of_account(ref.account_channel, ref.account_external_id)
        if len(owners) != 1:
            return None
        if ref.phone and (phone_hash is None or not known.owners_of_phone(phone_hash)):
            return None
        return _standing(known, owners[0])
    if phone_hash is None:
        return None
    owners = known.owners_of_phone(phone_hash)
    return _standing(known, owners[0]) if len(owners) == 1 else None


def _standing(known: Known, customer_id: str) -> KnownCustomer | None:
    """The customer an id stands for now: itself, or the end of its chain of merges."""
    current = customer_id
    for _ in range(MAX_CHAIN):
        found = known.customer(current)
        if found is None or found.withheld:
            return None
        if not found.merged_into:
            return found
        current = found.merged_into
    return None


def known_member(known: Known, customer_id: str) -> Member | None:
    """The member membership's Enroll would answer for a customer who is one already (the member
    their own member is part of now); None: ask membership."""
    own = known.members_of(customer_id)
    if len(own) != 1:
        return None
    member: MemberState | None = own[0]
    for _ in range(MAX_CHAIN):
        if member is None:
            return None
        if member.root_member_id == member.member_id:
            return Member(member.member_id, member.home_store_id, member.guide_id)
        member = known.member(member.root_member_id)
    return None
