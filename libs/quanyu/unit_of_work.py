"""One unit of work for every use case: a transaction, the stores it reaches, and what happens
once it has committed.

A use case is a function of one `Transaction`: it loads domain objects through `tx.stores` (the
service's repositories), asks the domain what to do, saves, and records effects. The runner
commits it, or runs it again from the start when a concurrent transaction won (a unique key
taken, a serialization failure, a deadlock, or a repository finding that rows it read have
changed: `ConcurrentChange`). Whatever must be seen only once the change is durable (a counter,
a log line, waking a relay) goes to `tx.after_commit`: an attempt that is rolled back and run
again starts a fresh transaction, so its hooks are dropped and nothing is counted twice.

`InMemoryUnitOfWork` runs the same use cases over in-memory stores, so they are tested without a
database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from quanyu.db import Database, is_conflict, utcnow
from quanyu.errors import Aborted

S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)
T = TypeVar("T")

Clock = Callable[[], datetime]
"""What every service reads the time from; bootstrap passes the real one, tests a fixed one."""

system_clock: Clock = utcnow
"""The real time, the one every bootstrap passes unless a test gives its own."""


class ConcurrentChange(Aborted):
    """Rows a use case read a moment ago have changed under it (a conditional update matched
    nothing): running the whole use case again will see the change. Should the retries run out,
    the caller hears ABORTED and may retry the request."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} changed concurrently; retry the request", reason="CONCURRENT_CHANGE")


class Transaction(Generic[S_co]):
    """One attempt at a use case: the stores to load and save through, and the hooks that run
    only if this attempt commits."""

    def __init__(self, stores: S_co) -> None:
        self._stores = stores
        self._after_commit: list[Callable[[], None]] = []

    @property
    def stores(self) -> S_co:
        return self._stores

    def after_commit(self, hook: Callable[[], None]) -> None:
        self._after_commit.append(hook)

    def committed(self) -> None:
        for hook in self._after_commit:
            hook()


class UnitOfWork(Protocol[S_co]):
    def run(self, work: Callable[[Transaction[S_co]], T]) -> T:
        """Run a use case that writes, committing it or retrying it whole on a conflict."""
        ...

    def read(self, work: Callable[[Transaction[S_co]], T]) -> T:
        """Run a use case that only reads, over one consistent snapshot."""
        ...


class SqlUnitOfWork(Generic[S]):
    """Use cases over a service's database; `stores` builds its repositories on a connection."""

    def __init__(self, database: Database, stores: Callable[[Connection], S], *, attempts: int = 4) -> None:
        self.database = database
        self._stores = stores
        self._attempts = attempts

    def run(self, work: Callable[[Transaction[S]], T]) -> T:
        for attempt in range(1, self._attempts + 1):
            try:
                with self.database.transaction() as connection:
                    tx = Transaction(self._stores(connection))
                    result = work(tx)
            except (IntegrityError, OperationalError) as exc:
                if attempt == self._attempts or not is_conflict(exc):
                    raise
                continue
            except ConcurrentChange:
                if attempt == self._attempts:
                    raise
                continue
            tx.committed()
            return result
        raise AssertionError("unreachable")

    def read(self, work: Callable[[Transaction[S]], T]) -> T:
        for attempt in (1, 2):
            try:
                with self.database.snapshot() as connection:
                    tx = Transaction(self._stores(connection))
                    result = work(tx)
            except DBAPIError as exc:
                # A pooled connection the server dropped (a restart): reading again is harmless,
                # and the pool has discarded every connection as old as that one.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
                continue
            tx.committed()
            return result
        raise AssertionError("unreachable")


class InMemoryUnitOfWork(Generic[S]):
    """The same runner over stores kept in memory, for use cases tested without a database.

    `stores` is built once and shared by every transaction, as a database is; a use case that
    raises leaves whatever it changed in place, so tests of failures look at what they expect
    to be untouched rather than rely on a rollback.
    """

    def __init__(self, stores: S) -> None:
        self.stores = stores
        self.commits = 0

    def run(self, work: Callable[[Transaction[S]], T]) -> T:
        tx = Transaction(self.stores)
        result = work(tx)
        self.commits += 1
        tx.committed()
        return result

    def read(self, work: Callable[[Transaction[S]], T]) -> T:
        tx = Transaction(self.stores)
        result = work(tx)
        tx.committed()
        return result
