"""What orders knows of customers and members, kept in memory for use cases tested without a
database: the same rules as storage/known.py (a state kept only when newer; one learnt from an
answer only where nothing is kept)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.orders.domain.known import CustomerState, KnownCustomer, MemberState


@dataclass
class MemoryKnown:
    customers: dict[str, CustomerState] = field(default_factory=dict)
    members: dict[str, MemberState] = field(default_factory=dict)

    def owners_of_account(self, channel: str, external_id: str) -> list[str]:
        return sorted(c.customer_id for c in self.customers.values() if (channel, external_id) in c.accounts)

    def owners_of_phone(self, phone_hash: str) -> list[str]:
        return sorted(c.customer_id for c in self.customers.values() if phone_hash in c.phone_hashes)

    def customer(self, customer_id: str) -> KnownCustomer | None:
        found = self.customers.get(customer_id)
        if found is None:
            return None
        channels = frozenset(channel for channel, _ in found.accounts)
        return KnownCustomer(customer_id, found.merged_into, found.withheld, channels)

    def members_of(self, customer_id: str) -> list[MemberState]:
        return [m for m in self.members.values() if m.customer_id == customer_id]

    def member(self, member_id: str) -> MemberState | None:
        return self.members.get(member_id)

    def apply_customer(self, state: CustomerState) -> bool:
        kept = self.customers.get(state.customer_id)
        if kept is not None and kept.version >= state.version:
            return False
        self.customers[state.customer_id] = state
        return True

    def apply_member(self, state: MemberState) -> bool:
        kept = self.members.get(state.member_id)
        if kept is not None and kept.version >= state.version:
            return False
        self.members[state.member_id] = state
        return True

    def remember_customer(self, state: CustomerState) -> None:
        self.customers.setdefault(state.customer_id, state)

    def remember_member(self, state: MemberState) -> None:
        self.members.setdefault(state.member_id, state)
