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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from quanyu.auth import Principal, Role
from quanyu.config import RoleRates
from quanyu.errors import ResourceExhausted

# Buckets kept at most; past it, the full ones (callers idle long enough to be back at their
# burst) are forgotten, which changes nothing for them.
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
        # caller -> (tokens left, when they were counted, the caller's rate)
        self._buckets: dict[str, tuple[float, float, Rate]] = {}

    def take(self, principal: Principal) -> None:
        """Spend one unit of the caller's quota, or raise ResourceExhausted saying when to retry."""
        rate = self._rates.get(principal.role)
        if rate is None:
            return
        key = principal.name
        now = self._clock()
        with self._lock:
            tokens, at, _ = self._buckets.get(key, (float(rate.burst), now, rate))
            tokens = min(float(rate.burst), tokens + (now - at) * rate.per_second)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now, rate)
                wait = (1.0 - tokens) / rate.per_second
            else:
                if len(self._buckets) >= _MAX_CALLERS and key not in self._buckets:
                    self._forget_full(now)
                self._buckets[key] = (tokens - 1.0, now, rate)
                return
        raise ResourceExhausted(
            f"{key} is over its quota of {self._what} ({rate.per_second:g}/s, bursts of {rate.burst}); "
            f"retry in {wait:.2f} s",
            reason=self._reason,
            retry_after=math.ceil(wait * 1000) / 1000,
            metadata={"quota": self._what, "caller": key},
        )

    def _forget_full(self, now: float) -> None:
        full = [
            key
            for key, (tokens, at, rate) in self._buckets.items()
            if tokens + (now - at) * rate.per_second >= rate.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= _MAX_CALLERS:
            self._buckets.clear()


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
