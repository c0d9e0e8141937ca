"""SIGTERM to orders while callers keep placing orders: health turns NOT_SERVING while calls are
still in flight, those calls finish with their orders, new calls are refused with UNAVAILABLE, and
no call fails any other way (but for gRPC's own CANCELLED for a call arriving as it stops, which no
handler took in: see tests/reliability/shutdown.py)."""

from __future__ import annotations

from tests.reliability.deployment import Deployment
from tests.reliability.shutdown import WORKERS, graceful_shutdown


def test_sigterm_under_load_finishes_calls_in_flight_and_refuses_only_later_ones_with_unavailable(
    d: Deployment,
) -> None:
    figures = graceful_shutdown(d, rounds=1)
    assert figures.problems == []
    assert figures.in_flight == WORKERS
    assert (figures.failed_beyond_refused, figures.health_late) == (0, 0)
