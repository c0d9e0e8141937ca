"""A campaign's results against its control group: the conversion of members reached and of members
held out, their revenue, and the uplift with its 95 % interval.

The interval is Newcombe's hybrid score interval for a difference of two independent proportions
(Newcombe 1998, "Interval estimation for the difference between independent proportions", method
10): each group's Wilson score interval, combined by the square-and-add of their distances from
the estimates. Why this one and not the textbook Wald interval p1 − p2 ± z·√(p1q1/n1 + p2q2/n2):

- Wald collapses to a width of zero when a group converts 0 % or 100 % (a holdout of 40 members
  of whom none bought says "no doubt at all"), and its coverage falls far below 95 % for the small
  groups a store-level campaign or a 5 % holdout makes.
- Wilson intervals stay inside [0, 1] and keep close to their nominal coverage at small counts and
  at the extremes; Newcombe's combination inherits that, stays inside [−1, 1], and needs no
  iteration, so it is computed for every results call without a statistics library.

A group with no members has no conversion: its rate, the uplift and the interval are NaN, never 0,
which would claim a measured "no effect". Callers show NaN as "not enough data yet".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist

CONFIDENCE = 0.95
# 1.959963984540054: the two-sided 95 % point of the standard normal.
Z_95 = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
DEFAULT_CONVERSION_DAYS = 14


def wilson(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval for successes/trials (no continuity correction); (NaN, NaN) for no
    trials."""
    if trials <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    # At 0 and 1 the bound is exact; rounding must not push it a hair past the estimate.
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == trials else centre + half)


@dataclass(frozen=True)
class Difference:
    estimate: float
    low: float
    high: float


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z_95) -> Difference:
    """p1 − p2 for x1/n1 and x2/n2 with Newcombe's hybrid score interval (method 10):
    low = d − √((p1 − l1)² + (u2 − p2)²), high = d + √((u1 − p1)² + (p2 − l2)²), where (l, u)
    are each proportion's Wilson interval. NaN throughout when either group is empty."""
    if n1 <= 0 or n2 <= 0:
        return Difference(math.nan, math.nan, math.nan)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Difference(d, max(-1.0, low), min(1.0, high))


@dataclass(frozen=True)
class Group:
    """Members of one arm (reached, or held out), how many placed a completed order within the
    conversion window of being reached or held out, and what those orders came to."""

    members: int = 0
    converted: int = 0
    revenue_cents: int = 0

    @property
    def conversion(self) -> float:
        return self.converted / self.members if self.members > 0 else math.nan


@dataclass(frozen=True)
class Results:
    reached_conversion: float
    holdout_conversion: float
    uplift: float
    uplift_low: float
    uplift_high: float
    reached_revenue_cents: int
    holdout_revenue_cents: int


def results(reached: Group, held_out: Group) -> Results:
    uplift = newcombe(reached.converted, reached.members, held_out.converted, held_out.members)
    return Results(
        reached_conversion=reached.conversion,
        holdout_conversion=held_out.conversion,
        uplift=uplift.estimate,
        uplift_low=uplift.low,
        uplift_high=uplift.high,
        reached_revenue_cents=reached.revenue_cents,
        holdout_revenue_cents=held_out.revenue_cents,
    )


def converted(
    reached_at: datetime, completed_orders: Iterable[datetime], days: int = DEFAULT_CONVERSION_DAYS
) -> bool:
    """Whether a member reached (or held out) at `reached_at` placed a completed order within
    `days` after it: the same rule for both arms, so the comparison is fair."""
    until = reached_at + timedelta(days=days)
    return any(reached_at <= t < until for t in completed_orders)
