"""The one unit of work: commits, retries a use case whole when a concurrent one won, and runs
after-commit hooks once, for the attempt that committed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Connection

from quanyu.db import Database
from quanyu.errors import Code
from quanyu.unit_of_work import ConcurrentChange, InMemoryUnitOfWork, SqlUnitOfWork, Transaction

metadata = MetaData()
counters = Table(
    "counters",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("value", Integer, nullable=False),
)


class Counters:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def value(self, name: str) -> int | None:
        row = self.connection.execute(select(counters.c.value).where(counters.c.name == name)).first()
        return None if row is None else int(row.value)

    def create(self, name: str) -> None:
        self.connection.execute(insert(counters).values(name=name, value=0))

    def bump(self, name: str, seen: int) -> None:
        done = self.connection.execute(
            update(counters).where(counters.c.name == name, counters.c.value == seen).values(value=seen + 1)
        )
        if done.rowcount != 1:
            raise ConcurrentChange(f"counter {name}")


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    metadata.create_all(db.engine)
    yield db
    metadata.drop_all(db.engine)
    db.dispose()


def test_a_committed_use_case_runs_its_hooks_once(database: Database) -> None:
    uow = SqlUnitOfWork(database, Counters)
    heard: list[str] = []

    def create(tx: Transaction[Counters]) -> str:
        tx.stores.create("a")
        tx.after_commit(lambda: heard.append("created"))
        return "done"

    assert uow.run(create) == "done"
    assert heard == ["created"]
    assert uow.read(lambda tx: tx.stores.value("a")) == 0


def test_a_failed_use_case_is_rolled_back_and_its_hooks_never_run(database: Database) -> None:
    uow = SqlUnitOfWork(database, Counters)
    heard: list[str] = []

    def broken(tx: Transaction[Counters]) -> None:
        tx.stores.create("b")
        tx.after_commit(lambda: heard.append("created"))
        raise ValueError("the rule said no")

    with pytest.raises(ValueError, match="said no"):
        uow.run(broken)
    assert heard == []
    assert uow.read(lambda tx: tx.stores.value("b")) is None


def test_a_concurrent_change_reruns_the_use_case_and_hooks_count_once(database: Database) -> None:
    uow = SqlUnitOfWork(database, Counters)
    uow.run(lambda tx: tx.stores.create("c"))
    attempts: list[int] = []
    counted: list[int] = []

    def bump(tx: Transaction[Counters]) -> None:
        seen = tx.stores.value("c")
        assert seen is not None
        attempts.append(seen)
        tx.stores.bump("c", seen)
        tx.after_commit(lambda: counted.append(seen))
        if len(attempts) == 1:
            # As a repository does when a conditional update finds the rows it read have moved.
            raise ConcurrentChange("counter c")

    uow.run(bump)
    # The first attempt's write was rolled back: the second saw the same value and counted once.
    assert attempts == [0, 0]
    assert counted == [0]
    assert uow.read(lambda tx: tx.stores.value("c")) == 1


def test_a_unique_key_taken_by_a_concurrent_writer_reruns_the_use_case(database: Database) -> None:
    uow = SqlUnitOfWork(database, Counters)
    tries: list[bool] = []

    def create_once(tx: Transaction[Counters]) -> str:
        if tx.stores.value("d") is not None:
            tries.append(False)
            return "found"
        tries.append(True)
        if len(tries) == 1:
            # The row another writer committed between this attempt's read and its insert.
            with database.engine.begin() as other:
                other.execute(insert(counters).values(name="d", value=7))
        tx.stores.create("d")
        return "created"

    if database.dialect == "sqlite":
        pytest.skip("SQLite's single writer cannot commit beside an open write transaction")
    assert uow.run(create_once) == "found"
    assert tries == [True, False]


def test_retries_run_out_as_aborted(database: Database) -> None:
    uow = SqlUnitOfWork(database, Counters, attempts=3)
    calls: list[int] = []

    def always_stale(tx: Transaction[Counters]) -> None:
        calls.append(1)
        raise ConcurrentChange("counter e")

    with pytest.raises(ConcurrentChange) as raised:
        uow.run(always_stale)
    assert raised.value.code is Code.ABORTED
    assert len(calls) == 3


def test_the_in_memory_unit_of_work_runs_the_same_use_cases() -> None:
    uow = InMemoryUnitOfWork({"f": 1})
    heard: list[int] = []

    def bump(tx: Transaction[dict[str, int]]) -> int:
        tx.stores["f"] += 1
        tx.after_commit(lambda: heard.append(tx.stores["f"]))
        return tx.stores["f"]

    assert uow.run(bump) == 2
    assert heard == [2]
    assert uow.commits == 1
