"""A crash between a change and its commit, as the tests of the transactional outboxes see it:
an outbox that records through the real one, then fails the transaction just after an effect
of the watched kind was written, so the change and its effect must vanish together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass
class Failing:
    """The next `times` transactions that record a watched effect fail just after it, with `error`."""

    times: int = 0
    error: type[Exception] = RuntimeError


class FlakyOutbox:
    def __init__(self, real: Any, failing: Failing, watched: Callable[[Any], bool]) -> None:
        self._real, self._failing, self._watched = real, failing, watched

    def add(self, effect: Any, now: datetime, **options: Any) -> None:
        self._real.add(effect, now, **options)
        if self._watched(effect) and self._failing.times > 0:
            self._failing.times -= 1
            raise self._failing.error("the change fails after its event was written")
