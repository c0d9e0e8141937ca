"""The shared database layer on an embedded SQLite file, as replicas open it."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from quanyu.db import Database

REPLICAS = 4


def open_and_write(url: str, replica: int, together: threading.Barrier, failures: list[Exception]) -> None:
    """One replica's first moments: its own engine, then a write as soon as all are ready."""
    database = Database(url, pool_size=1)
    try:
        together.wait(timeout=10)
        with database.transaction() as connection:
            connection.execute(text("CREATE TABLE IF NOT EXISTS opened (replica INTEGER)"))
            connection.execute(text("INSERT INTO opened VALUES (:replica)"), {"replica": replica})
    except Exception as error:
        failures.append(error)
    finally:
        database.dispose()


def test_replicas_opening_a_new_sqlite_file_together_all_get_in(tmp_path: Path) -> None:
    # The first connection of each replica switches the new file to WAL; SQLite refuses a switch
    # at once while another holds the write lock, which once stopped a replica from starting.
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
        check = Database(url, pool_size=1)
        try:
            with check.snapshot() as connection:
                assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
                assert connection.execute(text("SELECT count(*) FROM opened")).scalar_one() == REPLICAS
        finally:
            check.dispose()
