"""Per-caller quotas: each caller's bucket fills at its role's rate up to its burst, callers never
share one, and a refusal says when the next call would be let in."""

from __future__ import annotations

import pytest

from quanyu.auth import Principal, Role
from quanyu.errors import ResourceExhausted
from quanyu.quota import Quota, Rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_gets_its_burst_then_one_call_per_refill_and_is_told_when() -> None:
    clock = Clock()
    quota = Quota("phone look-ups", {Role.STORE: Rate(per_second=0.5, burst=3)}, clock=clock)
    till = Principal(Role.STORE, "till-1", store_id="A")
    for _ in range(3):
        quota.take(till)
    with pytest.raises(ResourceExhausted) as refused:
        quota.take(till)
    assert refused.value.retry_after == pytest.approx(2.0)
    assert refused.value.metadata["caller"] == "store:A/till-1"
    clock.now += 2.0
    quota.take(till)
    with pytest.raises(ResourceExhausted):
        quota.take(till)


def test_callers_never_share_a_bucket_and_an_unlimited_role_is_never_refused() -> None:
    clock = Clock()
    quota = Quota("calls", {Role.STORE: Rate(1, 1), Role.SERVICE: Rate(0, 1)}, clock=clock)
    quota.take(Principal(Role.STORE, "till-1", store_id="A"))
    quota.take(Principal(Role.STORE, "till-2", store_id="A"))  # another terminal of the store
    quota.take(Principal(Role.STORE, "till-1", store_id="B"))  # the same name at another store
    with pytest.raises(ResourceExhausted):
        quota.take(Principal(Role.STORE, "till-1", store_id="A"))
    for _ in range(1000):
        quota.take(Principal(Role.SERVICE, "orders"))
    quota.take(Principal(Role.OPS, "ops"))  # a role without a rate is not limited
