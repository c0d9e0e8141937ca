"""The shared database layer on an embedded SQLite file, as replicas open it."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import text

from quanyu.db import Database, WriteTurns

REPLICAS = 4


def open_and_write(url: str, replica: int, together: threading.Barrier, failures: list[Exception]) -> None:
    """One replica's first moments: its own engine, then a write as soon as all are ready."""
    database = None
    try:
        database = Database(url, pool_size=1)
        together.wait(timeout=10)
        with database.transaction() as connection:
            connection.execute(text("CREATE TABLE IF NOT EXISTS opened (replica INTEGER)"))
            connection.execute(text("INSERT INTO opened VALUES (:replica)"), {"replica": replica})
    except Exception as error:
        failures.append(error)
        together.abort()  # the others stop waiting for this one
    finally:
        if database is not None:
            database.dispose()


def opened_by(url: str) -> tuple[str, int]:
    """The file's journal mode and how many replicas wrote to it."""
    database = Database(url, pool_size=1)
    try:
        with database.snapshot() as connection:
            mode = connection.execute(text("PRAGMA journal_mode")).scalar_one()
            return str(mode), int(connection.execute(text("SELECT count(*) FROM opened")).scalar_one())
    finally:
        database.dispose()


def test_a_replica_opening_a_new_file_while_another_holds_the_write_lock_waits_its_turn(
    tmp_path: Path,
) -> None:
    # SQLite refuses to switch a file to WAL at once, without waiting out its busy timeout,
    # while another connection holds the write lock: a second replica starting just then died.
    path = tmp_path / "new.db"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("CREATE TABLE opened (replica INTEGER)")
    first.execute("BEGIN IMMEDIATE")
    first.execute("INSERT INTO opened VALUES (0)")
    failures: list[Exception] = []
    second = threading.Thread(
        target=open_and_write, args=(f"sqlite:///{path}", 1, threading.Barrier(1), failures)
    )
    second.start()
    try:
        second.join(timeout=0.5)
        # Without waiting its turn, it would have given up by now.
        assert second.is_alive(), f"the second replica gave up: {failures!r}"
    finally:
        first.execute("COMMIT")
        first.close()
        second.join(timeout=30)
    assert not second.is_alive()
    assert not failures
    assert opened_by(f"sqlite:///{path}") == ("wal", 2)


def test_replicas_opening_a_new_sqlite_file_together_all_get_in(tmp_path: Path) -> None:
    for round_no in range(60):
        url = f"sqlite:///{tmp_path / f'round-{round_no}.db'}"
        together = threading.Barrier(REPLICAS)
        failures: list[Exception] = []
        threads = [
            threading.Thread(target=open_and_write, args=(url, replica, together, failures))
            for replica in range(REPLICAS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, f"round {round_no}: {failures[0]!r}"
        assert opened_by(url) == ("wal", REPLICAS)


def test_a_writer_waiting_for_its_turn_goes_before_the_one_that_just_wrote_asks_again() -> None:
    turns = WriteTurns()
    order: list[str] = []

    def waiter() -> None:
        with turns:
            order.append("waiter")

    turns.__enter__()
    other = threading.Thread(target=waiter, daemon=True)
    other.start()
    deadline = time.monotonic() + 10
    while turns.waiting < 2:  # until the other thread has asked for its turn
        assert time.monotonic() < deadline, "the other thread never asked for a turn"
        time.sleep(0.001)
    turns.__exit__()
    # Asked again at once, by the thread that still runs: a plain lock would let it straight in.
    with turns:
        order.append("again")
    other.join(timeout=10)
    assert order == ["waiter", "again"]


def counted() -> tuple[float, float, float]:
    """The process's statements sent, and transactions committed and rolled back, so far."""
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return (
        value("quanyu_db_statements_total"),
        value("quanyu_db_transactions_total", end="commit"),
        value("quanyu_db_transactions_total", end="rollback"),
    )


def test_statements_and_transactions_are_counted_as_the_database_sees_them(database_url: str) -> None:
    database = Database(database_url, pool_size=1)
    try:
        with database.transaction() as connection:
            connection.execute(text("CREATE TABLE counted (n INTEGER)"))
        start = counted()
        with database.transaction() as connection:
            connection.execute(text("INSERT INTO counted VALUES (1)"))
            connection.execute(text("INSERT INTO counted VALUES (2)"))
        written = counted()
        with database.snapshot() as connection:
            connection.execute(text("SELECT count(*) FROM counted")).scalar_one()
        read = counted()
    finally:
        database.dispose()

    # A write: BEGIN, two inserts and COMMIT, one transaction.
    assert tuple(b - a for a, b in zip(start, written, strict=True)) == (4, 1, 0)
    if database.dialect == "sqlite":
        # A read is a snapshot on SQLite: BEGIN, the select and ROLLBACK.
        assert tuple(b - a for a, b in zip(written, read, strict=True)) == (3, 0, 1)
    else:
        # On PostgreSQL a read sends its statement alone: no transaction for it.
        assert tuple(b - a for a, b in zip(written, read, strict=True)) == (1, 0, 0)


def turns_taken(waiters: list[tuple[bool, str]]) -> list[str]:
    """The order in which waiters get their turns when they ask, one after another (ahead or
    not), while the turn is held, and it is then given up."""
    turns = WriteTurns()
    order: list[str] = []

    def wants(ahead: bool, name: str) -> None:
        with turns.ahead() if ahead else turns:
            order.append(name)

    def asked(count: int) -> None:
        deadline = time.monotonic() + 10
        while turns.waiting < count:
            assert time.monotonic() < deadline, "a thread never asked for its turn"
            time.sleep(0.001)

    turns.__enter__()
    threads = []
    # Each waiter asks once the one before it is queued, so the order they asked in is known.
    for number, (ahead, name) in enumerate(waiters, start=2):
        thread = threading.Thread(target=wants, args=(ahead, name), daemon=True)
        thread.start()
        threads.append(thread)
        asked(number)
    turns.__exit__()
    for thread in threads:
        thread.join(timeout=10)
    return order


def test_a_writer_asking_ahead_goes_before_ordinary_waiters_but_after_earlier_ones_ahead() -> None:
    order = turns_taken(
        [(False, "first request"), (True, "first relay"), (True, "second relay"), (False, "second request")]
    )
    # One turn ahead, then the ordinary waiter that asked first, in turn while both kinds wait.
    assert WriteTurns.AHEAD_IN_A_ROW == 1
    assert order == ["first relay", "first request", "second relay", "second request"]


def test_an_ordinary_waiter_has_its_turn_after_a_few_given_ahead() -> None:
    relays = [f"relay {n}" for n in range(1, 8)]
    order = turns_taken([(False, "request"), *((True, relay) for relay in relays)])
    limit = WriteTurns.AHEAD_IN_A_ROW
    assert order == [*relays[:limit], "request", *relays[limit:]]
