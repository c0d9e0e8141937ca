"""Per-caller rate quotas: a token bucket for each caller, refilled at its role's rate.

A caller is what its token names (`store:SH-001/till-3`): every till, backend and tool has its
own bucket, so one noisy caller is slowed down without touching the others. Buckets live in the
process: each replica grants its own quota, so a deployment of N replicas lets a caller through at
up to N times the rate (a gRPC client spreads its calls over the replicas it sees).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from quanyu.auth import Principal, Role
from quanyu.config import RoleRates
from quanyu.errors import ResourceExhausted

# Buckets kept at most; past it, the caller seen longest ago is forgotten.
_MAX_CALLERS = 100_000


@dataclass(frozen=True)
class Rate:
    """`per_second` sustained, up to `burst` at once; per_second 0 leaves the role unlimited."""

    per_second: float
    burst: int


class Quota:
    """One kind of quota (every call, phone look-ups) over every caller."""

    def __init__(
        self,
        what: str,
        rates: Mapping[Role, Rate],
        *,
        reason: str = "QUOTA_EXCEEDED",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._rates = {role: rate for role, rate in rates.items() if rate.per_second > 0}
        self._reason = reason
        self._clock = clock
        self._lock = threading.Lock()
        # caller -> (tokens left, when they were counted), least recently seen first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, principal: Principal) -> None:
        """Spend one unit of the caller's quota, or raise ResourceExhausted saying when to retry."""
        rate = self._rates.get(principal.role)
        if rate is None:
            return
        key = principal.name
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - at) * rate.per_second)
            granted = tokens >= 1.0
            if granted:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > _MAX_CALLERS:
                # The caller seen longest ago goes: it has refilled the most, and a full bucket is
                # what it would be given again.
                self._buckets.popitem(last=False)
        if granted:
            return
        wait = (1.0 - tokens) / rate.per_second
        raise ResourceExhausted(
            f"{key} is over its quota of {self._what} ({rate.per_second:g}/s, bursts of {rate.burst}); "
            f"retry in {wait:.2f} s",
            reason=self._reason,
            retry_after=math.ceil(wait * 1000) / 1000,
            metadata={"quota": self._what, "caller": key},
        )


def quota_from(what: str, config: RoleRates, *, reason: str = "QUOTA_EXCEEDED") -> Quota:
    """A quota with the rates a deployment configured for each role."""
    return Quota(
        what,
        {
            role: Rate(getattr(config, role.value).per_second, getattr(config, role.value).burst)
            for role in Role
        },
        reason=reason,
    )
