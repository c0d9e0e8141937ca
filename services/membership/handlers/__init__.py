"""Membership's use cases, each one unit of work: load through the stores, ask the domain, save,
and count what happened once it has committed. Split by what they act on; `MembershipService`
is all of them on one programme, clock and database."""

from services.membership.handlers.base import DEFAULT_MEMBER_CODE_TTL
from services.membership.handlers.batches import BatchCases
from services.membership.handlers.merges import MergeCases

__all__ = ["DEFAULT_MEMBER_CODE_TTL", "MembershipService"]


class MembershipService(BatchCases, MergeCases):
    """Every membership use case (services.membership.handlers.*)."""
