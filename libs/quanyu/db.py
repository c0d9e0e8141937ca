"""Database plumbing every service shares: engines, transactions, UTC times and migrations.

The same code and migrations serve an embedded SQLite file and PostgreSQL. Correctness under
concurrency comes from the database: write transactions on SQLite take the write lock up front
(BEGIN IMMEDIATE), so two processes never deadlock on a lock upgrade, and on PostgreSQL callers
rely on unique keys, conditional updates and row locks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    create_engine,
    event,
    func,
    text,
)
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.types import TypeDecorator

from quanyu import tracing
from quanyu.metrics import DB_STATEMENTS, DB_TRANSACTIONS

T = TypeVar("T")

_WRITE = "quanyu_write"
_READ = "quanyu_read"
SQLITE_BUSY_TIMEOUT_MS = 15_000

# One naming convention for constraints, so migrations name them the same on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


# SQLite numbers rows itself only for an INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT identity.
SEQUENCE = BigInteger().with_variant(Integer(), "sqlite")


def timestamps() -> tuple[Column[datetime], Column[datetime]]:
    """When a row was created and last changed: the two columns most tables keep."""
    return (
        Column("create_time", UtcDateTime(), nullable=False),
        Column("update_time", UtcDateTime(), nullable=False),
    )


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}
_ABSENT = object()


def from_row(cls: type[T], row: Any, **given: Any) -> T:
    """A domain dataclass from a row whose columns carry its fields' names; `given` holds the
    fields whose values are not a column as such (an enum, a value object, child rows), and a
    field neither gives keeps its default."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    values = {}
    for name in names:
        if name not in given and (value := getattr(row, name, _ABSENT)) is not _ABSENT:
            values[name] = value
    return cls(**values, **given)


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time, stored as UTC and always read back timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalise_url(url: str) -> str:
    """postgresql:// URLs are served by psycopg 3, the driver this project installs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_engine(url: str, **options: Any) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **options)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy's begin event decide how a transaction starts (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        # A writer takes the lock at BEGIN; a reader starts a snapshot and never blocks a writer.
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
        connection.info[_BEGUN] = True

    return engine


def _postgres_engine(url: str, **options: Any) -> Engine:
    """psycopg in autocommit, so that no statement the driver adds costs a round trip of its own.

    A write transaction sends its BEGIN from SQLAlchemy's begin event (as on SQLite) and ends
    with COMMIT or ROLLBACK, as before. A read sends its statements alone: under READ COMMITTED,
    PostgreSQL's default and the only level this project runs, every statement of a transaction
    sees a snapshot of its own anyway, so BEGIN and ROLLBACK around reads bought nothing but two
    round trips, and each ROLLBACK made psycopg drop the connection's prepared statements
    (DEALLOCATE ALL, a third round trip), so the hot statements were parsed and planned afresh.
    There is no pre-ping either (a ";" on every checkout): a connection found dead by the BEGIN
    of a write is replaced and the BEGIN sent again (see Database.transaction), and one found dead
    by a read invalidates the whole pool, so a restart of the server costs at most the reads
    under way.
    """
    engine = create_engine(url, isolation_level="AUTOCOMMIT", **options)

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        if not connection.get_execution_options().get(_READ, False):
            connection.exec_driver_sql("BEGIN")
            connection.info[_BEGUN] = True

    @event.listens_for(engine, "before_cursor_execute")
    def refuse_writes_in_reads(connection: Connection, *args: Any) -> None:
        # A read has no transaction to roll back: a write there would stay. SQLAlchemy's
        # arguments after the connection: cursor, statement, parameters, context, executemany.
        statement, context = args[1], args[3]
        writes = context is not None and (context.isinsert or context.isupdate or context.isdelete)
        if writes and connection.get_execution_options().get(_READ, False):
            raise ReadOnlyViolation(f"a read-only view cannot write: {statement.split(None, 1)[0]}")

    return engine


# Marks a connection whose transaction sent its BEGIN: only that one's end reaches the database
# (a PostgreSQL read has none, and the driver's commit or rollback of it sends nothing).
_BEGUN = "quanyu_begun"


def count_statements(engine: Engine) -> None:
    """Count, in the process's metrics, every statement the engine sends and every transaction
    that ends, as the database sees them."""
    sent = DB_STATEMENTS
    ended = {end: DB_TRANSACTIONS.labels(end) for end in ("commit", "rollback")}

    @event.listens_for(engine, "before_cursor_execute")
    def statement(*_: Any) -> None:
        sent.inc()

    def end(connection: Connection, how: str) -> None:
        # An invalidated connection's end reaches no database, and asking for its info would
        # try to reconnect.
        if connection.invalidated:
            return
        if connection.info.pop(_BEGUN, False):
            sent.inc()
            ended[how].inc()

    event.listen(engine, "commit", lambda connection: end(connection, "commit"))
    event.listen(engine, "rollback", lambda connection: end(connection, "rollback"))


class ReadOnlyViolation(RuntimeError):
    """A statement that writes, run on a read-only view (a bug in the caller)."""


def _use_wal(cursor: Any) -> None:
    """Put the file in WAL mode (it stays so): readers then never block the writer.

    Switching takes the write lock, and SQLite refuses at once, without waiting its busy timeout,
    when another connection holds that lock: replicas starting together on a new file, each
    switching it. The loser tries again until the busy timeout and finds the file switched.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            busy = error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


class WriteTurns:
    """A lock its waiters get in the order they asked for it. A plain lock goes to whichever
    thread grabs it first, and the thread that just released it, still running, nearly always
    does: a scheduled run writing page after page kept the outbox relay of its own process from
    marking a single batch delivered until the run was over.

    A waiter may ask to go `ahead` of the ordinary ones (behind any that asked ahead before it):
    an outbox relay's writes are short and few, and behind eight request threads each of its
    lease and delivered writes waited out eight transactions while its lane fell behind. After
    AHEAD_IN_A_ROW turns given ahead while an ordinary waiter waits, that waiter has the next
    one: lanes working through a backlog would otherwise hold every request's write back for as
    long as the backlog lasts, and with the database cut off each of their writes waits out the
    busy timeout, so a request waited several of them before it could answer UNAVAILABLE."""

    AHEAD_IN_A_ROW = 1

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._ahead: deque[object] = deque()  # waiters that asked to go ahead, in order
        self._ordinary: deque[object] = deque()  # the others, in order
        self._ahead_in_a_row = 0  # turns given ahead since an ordinary waiter's last
        self._held = False

    @property
    def waiting(self) -> int:
        """Threads holding or waiting for a turn."""
        with self._changed:
            return len(self._ahead) + len(self._ordinary) + self._held

    def __enter__(self) -> None:
        self._take(ahead=False)

    def __exit__(self, *_: object) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()

    @contextmanager
    def ahead(self) -> Iterator[None]:
        """A turn before every ordinary waiter's, but for one in every AHEAD_IN_A_ROW + 1."""
        self._take(ahead=True)
        try:
            yield
        finally:
            self.__exit__()

    def _next(self) -> deque[object]:
        """The queue whose first waiter has the next turn."""
        if self._ahead and (not self._ordinary or self._ahead_in_a_row < self.AHEAD_IN_A_ROW):
            return self._ahead
        return self._ordinary

    def _take(self, *, ahead: bool) -> None:
        me = object()
        mine = self._ahead if ahead else self._ordinary
        with self._changed:
            mine.append(me)
            while self._held or mine is not self._next() or mine[0] is not me:
                self._changed.wait()
            mine.popleft()
            self._ahead_in_a_row = self._ahead_in_a_row + 1 if ahead else 0
            self._held = True


class Database:
    """One service's database: a pool of connections and the two kinds of transaction."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        if self.url.startswith("sqlite"):
            self.engine = _sqlite_engine(self.url, pool_size=pool_size, max_overflow=pool_size // 2)
        else:
            self.engine = _postgres_engine(self.url, pool_size=pool_size, max_overflow=pool_size // 2)
        tracing.trace_statements(self.engine)
        count_statements(self.engine)
        self._writer = self.engine.execution_options(**{_WRITE: True})
        self._reader = self.engine.execution_options(**{_READ: True})
        # SQLite lets one writer in at a time and makes the others sleep and poll for the lock
        # (1, 2, 5, 10… ms), which collapses throughput under concurrent writes. Writers of this
        # process queue for their turn instead, first come first served, and wake the moment it
        # is theirs. This is for speed only: other processes still wait in SQLite, which stays
        # the arbiter of correctness.
        self._write_turn: WriteTurns | None = WriteTurns() if self.dialect == "sqlite" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, *, ahead: bool = False) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises. On
        SQLite, `ahead` takes the process's writer before the ordinary writers waiting for it
        (for a few short writes that others wait on, such as an outbox relay's)."""
        if self._write_turn is None:
            with self._begun() as connection:
                yield connection
            return
        turn = self._write_turn.ahead() if ahead else self._write_turn
        with turn, self._writer.begin() as connection:
            yield connection

    @contextmanager
    def _begun(self) -> Iterator[Connection]:
        """A write transaction on PostgreSQL. Without a pre-ping, its BEGIN is what finds a
        connection the server dropped (a restart, a failover): nothing has run yet, so it begins
        again on a fresh connection (the pool has discarded every older one by then)."""
        for attempt in (1, 2):
            connection = self._writer.connect()
            try:
                tx = connection.begin()
            except DBAPIError as error:
                connection.close()
                if attempt == 2 or not error.connection_invalidated:
                    raise
                continue
            with connection, tx:
                yield connection
            return

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only view. On SQLite one snapshot for the whole block; on PostgreSQL (READ
        COMMITTED, where a transaction's statements each see a snapshot of their own anyway)
        each statement runs alone, with no BEGIN or ROLLBACK round trip. A statement that
        writes is refused on PostgreSQL and rolled back on SQLite."""
        if self.dialect != "sqlite":
            with self._reader.connect() as connection:
                yield connection
            return
        with self.engine.connect() as connection, connection.begin() as tx:
            yield connection
            tx.rollback()

    def dispose(self) -> None:
        self.engine.dispose()


def is_conflict(exc: DBAPIError) -> bool:
    """True when the error means a concurrent transaction won, so a retry will see its work."""
    if isinstance(exc, IntegrityError):
        return True
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40001", "40P01")


def is_unavailable(exc: BaseException) -> bool:
    """True when the database cannot be reached, is too busy, or made the transaction give way to
    another (a deadlock or serialization failure that outlasted the retries): the caller may
    retry later."""
    if isinstance(exc, OperationalError):
        # SQLite's generic error (too many variables, an integer overflow) is a statement the
        # code should never have sent: a bug, not a reason to tell the caller to retry.
        original = exc.orig
        return not (
            isinstance(original, sqlite3.Error)
            and getattr(original, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_ERROR
        )
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


# Sums of money are taken in two halves that each stay far inside 64 bits (a half of every
# amount summed over fewer than 2^31 rows), then joined in Python, whose integers have no limit:
# SQLite's SUM fails on overflow where PostgreSQL widens to numeric. Amounts are bounded where
# they come in, but rows written before the bounds (or a report over all of history) may still
# hold sums past 2^63.
_HALF = 2**31


def wide_sum(amount: Any) -> tuple[Any, Any]:
    """The two halves of SUM(amount) for integer amounts of either sign (both databases divide
    integers toward zero and give a remainder the dividend's sign, so each amount is exactly
    its quotient times 2^31 plus its remainder); join them with `joined_sum`."""
    return (
        func.coalesce(func.sum(amount // _HALF), 0),
        func.coalesce(func.sum(amount % _HALF), 0),
    )


def joined_sum(high: Any, low: Any) -> int:
    return int(high) * _HALF + int(low)


def migrate(database: Database, script_location: Path) -> None:
    """Bring a service's schema to the newest migration; safe when replicas start together.

    The migrations run inside one write transaction: on SQLite it holds the write lock, on
    PostgreSQL an advisory lock, so a second replica waits and then finds nothing to do.
    """
    config = Config()
    config.set_main_option("script_location", str(script_location))
    with database.transaction() as connection:
        if connection.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(str(script_location.name).encode()).digest()[:7], "big")
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            _ensure_schema(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def migrate_url(url: str, script_location: Path) -> None:
    """Migrate the database at `url` with a short-lived engine of its own."""
    database = Database(url, pool_size=1)
    try:
        migrate(database, script_location)
    finally:
        database.dispose()


def _ensure_schema(connection: Connection) -> None:
    # A deployment may give each service its own schema through the URL's search_path.
    search_path = connection.execute(text("SELECT current_setting('search_path')")).scalar_one()
    schema = str(search_path).split(",")[0].strip().strip('"')
    if schema and schema not in ("$user", "public"):
        quoted = connection.dialect.identifier_preparer.quote(schema)
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))


def run_migrations_online(context: Any, metadata: MetaData) -> None:
    """The body of every service's alembic env.py: migrate on the connection migrate() holds."""
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def utcnow() -> datetime:
    return datetime.now(UTC)
