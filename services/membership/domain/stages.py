"""The AIPL lifecycle: awareness on enrolment, interest after an engagement, purchase after the
first order, loyalty after a repeat purchase within the programme's window; and the funnel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum

from services.membership.domain.programme import Programme, add_months


class Stage(IntEnum):
    """AIPL: a member only ever moves forward through these."""

    AWARENESS = 1
    INTEREST = 2
    PURCHASE = 3
    LOYALTY = 4


class EngagementEvent(StrEnum):
    """What a member did that shows interest (membership.RecordEvent)."""

    VIEW = "VIEW"
    FOLLOW = "FOLLOW"
    ADD_TO_CART = "ADD_TO_CART"
    SHARE = "SHARE"


def stage_after_event(stage: Stage) -> Stage:
    return max(stage, Stage.INTEREST)


def stage_after_purchase(
    stage: Stage, previous_purchase: datetime | None, at: datetime, programme: Programme
) -> Stage:
    """PURCHASE after the first; LOYALTY once a purchase follows another within the window."""
    if previous_purchase is not None and previous_purchase >= add_months(
        at, -programme.loyalty_window_months
    ):
        return Stage.LOYALTY
    return max(stage, Stage.PURCHASE)


def conversion_rates(counts: dict[Stage, int]) -> list[tuple[Stage, Stage, float]]:
    """For consecutive stages, the share of members at the earlier stage or beyond who reached the
    later one or beyond."""
    at_or_beyond = {stage: sum(n for s, n in counts.items() if s >= stage) for stage in Stage}
    rates = []
    for earlier, later in zip(list(Stage), list(Stage)[1:], strict=False):
        base = at_or_beyond[earlier]
        rates.append((earlier, later, at_or_beyond[later] / base if base else 0.0))
    return rates


@dataclass(frozen=True)
class Funnel:
    """How many members stand at each stage, and how many moved on from each to the next."""

    counts: dict[Stage, int]
    conversions: list[tuple[Stage, Stage, float]]

    @classmethod
    def of(cls, counts: dict[Stage, int]) -> Funnel:
        complete = {stage: counts.get(stage, 0) for stage in Stage}
        return cls(complete, conversion_rates(complete))
