"""What orders is told of members, so that it can place a returning customer's order without
asking membership: the member as they stand after an enrolment or a merge (customer, the member
they are part of, home store and guide), with a version that grows with each change, in one of
orders' CustomerEvents in its JSON form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ORDERS_EVENT = "orders_customer_event"


@dataclass(frozen=True)
class MemberState:
    member_id: str
    version: int
    customer_id: str
    root_member_id: str
    home_store_id: str
    guide_id: str

    @property
    def payload(self) -> dict[str, Any]:
        return {
            "event_id": f"membership/member/{self.member_id}/{self.version}",
            "member": {
                "member_id": self.member_id,
                "version": self.version,
                "customer_id": self.customer_id,
                "root_member_id": self.root_member_id,
                "home_store_id": self.home_store_id,
                "guide_id": self.guide_id,
            },
        }
