"""Whatever members do, the books balance: every surviving member's balance is the sum of the
ledger entries of every member merged into it (and its own), equals the points left in its lots,
and is never negative; and the whole programme holds what was earned and given as bonuses and
back, less what was redeemed, expired and clawed back.

A Hypothesis state machine drives a real MembershipService on a real database through random
enrolments, earns, redemptions, reversals, clock changes, expiry runs and merges, and reads the
tables after every step; a plain test does the same from several threads at once.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import hypothesis
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from pydantic import SecretStr
from sqlalchemy import case, func, select

from quanyu.auth import Principal, Role
from quanyu.config import ServiceConfig, Settings
from quanyu.db import Database, utcnow
from quanyu.errors import FailedPrecondition, InvalidArgument, NotFound, QuanyuError
from quanyu.paging import PageTokens
from services.membership import bootstrap
from services.membership.domain import EntryKind, Programme, add_months
from services.membership.handlers import MembershipService
from services.membership.storage import ledger_entries, lot_draws, members, point_lots
from tests.conftest import POSTGRES_URL, postgres_schema_url

T = TypeVar("T")
SERVICE = Principal(Role.SERVICE, "ledger-test")


class _PlatformCallersOnly:
    """Identity, for a service only the platform's own callers (ops, services) call: they reach
    every customer, so membership never asks."""

    def exists(self, customer_id: str) -> bool:
        raise AssertionError("only a channel's or a till's calls ask identity")

    def holds(self, customer_id: str, channel: str) -> bool:
        raise AssertionError("only a channel's or a till's calls ask identity")


NO_CHANNEL_CALLERS = _PlatformCallersOnly()
CUSTOMERS = tuple(f"cust-{n}" for n in range(6))


# --- the books, read straight from the tables ----------------------------------------------------


@dataclass(frozen=True)
class Books:
    survivor_balances: dict[str, int]
    total_entries: int
    by_kind: dict[str, int]


# The reads behind every check, built once: a survivor's ledger is summed from the entries of its
# group, split by kind and by sign (a reversal gives back or takes back).
MEMBER_ROWS = select(
    members.c.member_id, members.c.root_member_id, members.c.points_balance, members.c.merged
)
ENTRY_SUMS = select(
    ledger_entries.c.member_id,
    ledger_entries.c.kind,
    func.sum(case((ledger_entries.c.points > 0, ledger_entries.c.points), else_=0)),
    func.sum(case((ledger_entries.c.points < 0, ledger_entries.c.points), else_=0)),
).group_by(ledger_entries.c.member_id, ledger_entries.c.kind)
LOT_SUMS = select(
    point_lots.c.root_member_id,
    func.sum(point_lots.c.remaining),
    func.sum(
        case(
            ((point_lots.c.remaining < 0) | (point_lots.c.remaining > point_lots.c.original), 1),
            else_=0,
        )
    ),
).group_by(point_lots.c.root_member_id)
REDEMPTIONS = select(
    ledger_entries.c.entry_id,
    ledger_entries.c.points,
    select(func.coalesce(func.sum(lot_draws.c.points), 0))
    .where(lot_draws.c.entry_id == ledger_entries.c.entry_id)
    .scalar_subquery(),
).where(ledger_entries.c.kind == EntryKind.REDEEM.value)


def check_books(database: Database) -> Books:
    """Assert every ledger invariant over the membership tables; what they add up to."""
    with database.snapshot() as db:
        rows = db.execute(MEMBER_ROWS).all()
        entry_rows = db.execute(ENTRY_SUMS).all()
        lot_rows = db.execute(LOT_SUMS).all()
        redemption_rows = db.execute(REDEMPTIONS).all()
    entry_sums: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    given_back = clawed_back = 0
    for member_id, kind, gains, losses in entry_rows:
        total = int(gains) + int(losses)
        entry_sums[member_id] = entry_sums.get(member_id, 0) + total
        by_kind[kind] = by_kind.get(kind, 0) + total
        if kind == EntryKind.REVERSAL.value:
            given_back += int(gains)
            clawed_back += int(losses)
    lot_sums = {root: int(total) for root, total, _ in lot_rows}
    assert all(int(outside) == 0 for _, _, outside in lot_rows), (
        "a lot holds less than nothing or more than it was given"
    )
    for entry_id, points, drawn in redemption_rows:
        assert int(drawn) == -int(points), f"redemption {entry_id} of {-points} drew {drawn} from lots"

    root_of = {row.member_id: row.root_member_id for row in rows}
    survivors = {
        row.member_id: int(row.points_balance) for row in rows if row.root_member_id == row.member_id
    }
    assert set(entry_sums) <= set(root_of), "ledger entries of members that do not exist"
    assert set(lot_sums) <= set(survivors), "lots held by members that were merged away"
    for row in rows:
        if row.member_id in survivors:
            assert not row.merged, f"{row.member_id} is its own root yet marked merged"
        else:
            assert row.root_member_id in survivors, f"{row.member_id} leads to a member merged away"
            assert row.merged, f"{row.member_id} leads elsewhere yet is not marked merged"
            assert row.points_balance == 0, f"merged member {row.member_id} still holds points"
    for survivor, balance in survivors.items():
        group = [member_id for member_id, root in root_of.items() if root == survivor]
        ledger = sum(entry_sums.get(member_id, 0) for member_id in group)
        assert balance >= 0, f"{survivor} has a negative balance {balance}"
        assert balance == ledger, f"{survivor}: balance {balance}, its ledger adds up to {ledger}"
        assert balance == lot_sums.get(survivor, 0), (
            f"{survivor}: balance {balance}, its lots hold {lot_sums.get(survivor, 0)}"
        )
    everything = sum(entry_sums.values())
    kind = {k.value: by_kind.get(k.value, 0) for k in EntryKind}
    assert sum(survivors.values()) == everything
    assert everything == (
        kind[EntryKind.EARN]
        + kind[EntryKind.REFERRAL_BONUS]
        + kind[EntryKind.ADJUST]  # points granted
        + given_back
        + kind[EntryKind.REDEEM]  # negative: what was redeemed
        + kind[EntryKind.EXPIRE]  # negative: what expired
        + clawed_back  # negative: what reversals took back
    )
    assert kind[EntryKind.EARN] >= 0
    assert kind[EntryKind.REFERRAL_BONUS] >= 0
    assert kind[EntryKind.ADJUST] >= 0
    assert kind[EntryKind.REDEEM] <= 0
    assert kind[EntryKind.EXPIRE] <= 0
    return Books(survivors, everything, kind)


def outcome(call: Callable[[], T]) -> T | QuanyuError:
    """What a use case answered, or the error it refused with."""
    try:
        return call()
    except QuanyuError as error:
        return error


def lapsed_points(database: Database, as_of: datetime) -> int:
    with database.snapshot() as db:
        return int(
            db.execute(
                select(func.coalesce(func.sum(point_lots.c.remaining), 0)).where(
                    point_lots.c.expire_time <= as_of
                )
            ).scalar_one()
        )


# --- a database and a service on a clock the test turns ------------------------------------------


class ManualClock:
    """Time the test moves on by months and hours; each reading is a millisecond after the last,
    so lots earned apart never expire at the same instant and runs replay alike."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            now = self._now
            self._now += timedelta(milliseconds=1)
            return now

    def peek(self) -> datetime:
        """What the next reading will be."""
        with self._lock:
            return self._now

    def advance(self, months: int, hours: int) -> datetime:
        with self._lock:
            self._now = add_months(self._now, months) + timedelta(hours=hours)
            return self._now


def local_settings(var_dir: Path, database_url: str) -> Settings:
    return Settings(
        var_dir=var_dir,
        signing_key=SecretStr("k" * 48),
        phone_hash_key=SecretStr("p" * 48),
        server_workers=8,
        membership=ServiceConfig(port=0, database_url=database_url),
    )


def service_on_clock(
    settings: Settings, programme: Programme, clock: Callable[[], datetime]
) -> MembershipService:
    """What bootstrap.build_service builds, running `programme` and telling time by `clock`."""
    return MembershipService(
        bootstrap.unit_of_work(
            Database(settings.database_url(bootstrap.NAME), pool_size=settings.server_workers)
        ),
        programme,
        PageTokens(settings.signing_key_bytes(), purpose=bootstrap.NAME),
        NO_CHANNEL_CALLERS,
        clock=clock,
    )


@contextmanager
def sqlite_url() -> Iterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="quanyu-ledger-"))
    try:
        yield f"sqlite:///{directory / 'membership.db'}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- the state machine ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Earned:
    member_id: str
    spend_cents: int
    entry_id: str


@dataclass(frozen=True)
class Redeemed:
    member_id: str
    points: int
    entry_id: str


class LedgerMachine(RuleBasedStateMachine):
    """One programme on a fresh database per example, worked by random steps."""

    members = Bundle("members")

    @staticmethod
    def database_url() -> AbstractContextManager[str]:
        return sqlite_url()

    def __init__(self) -> None:
        super().__init__()
        with ExitStack() as stack:
            url = stack.enter_context(self.database_url())
            var = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quanyu-ledger-var-")))
            settings = local_settings(var, url)
            bootstrap.migrate(settings)
            self.clock = ManualClock(datetime(2025, 1, 31, 9, 30, tzinfo=UTC))
            # Points last four months here, so that a few steps of the clock see them lapse.
            self.service = service_on_clock(settings, Programme(validity_months=4), self.clock)
            stack.callback(self.service.close)
            self.database = Database(url, pool_size=1)
            stack.callback(self.database.dispose)
            self.stack = stack.pop_all()  # closed by teardown
        self.known_customers: set[str] = set()
        self.sources: list[str] = []
        self.earns: dict[str, Earned] = {}
        self.redeems: dict[str, Redeemed] = {}
        self.reversed: dict[str, list[str]] = {}
        self.merges: dict[str, tuple[str, str]] = {}

    def teardown(self) -> None:
        self.stack.close()

    # --- reading the tables ---

    def root_of(self, member_id: str) -> str:
        with self.database.snapshot() as db:
            root: str = db.execute(
                select(members.c.root_member_id).where(members.c.member_id == member_id)
            ).scalar_one()
        return root

    def live_points(self, root: str) -> int:
        """Points the member could spend now: in its lots and not past their expiry."""
        with self.database.snapshot() as db:
            return int(
                db.execute(
                    select(func.coalesce(func.sum(point_lots.c.remaining), 0)).where(
                        point_lots.c.root_member_id == root, point_lots.c.expire_time > self.clock.peek()
                    )
                ).scalar_one()
            )

    def member_of(self, customer_id: str) -> str | None:
        try:
            return self.service.get_member(SERVICE, customer_id=customer_id).member_id
        except NotFound:
            return None

    def entry_count(self) -> int:
        with self.database.snapshot() as db:
            return int(db.execute(select(func.count()).select_from(ledger_entries)).scalar_one())

    def reversible_entries(self, source_id: str) -> int:
        kinds = [EntryKind.EARN.value, EntryKind.REFERRAL_BONUS.value, EntryKind.REDEEM.value]
        with self.database.snapshot() as db:
            return int(
                db.execute(
                    select(func.count())
                    .select_from(ledger_entries)
                    .where(ledger_entries.c.source_id == source_id, ledger_entries.c.kind.in_(kinds))
                ).scalar_one()
            )

    def source(self, data: st.DataObject) -> str:
        """A new source id, or one used before (by an earn, a redemption or both)."""
        if bool(self.sources) and data.draw(st.booleans(), label="reuse a source"):
            return data.draw(st.sampled_from(self.sources), label="source")
        source = f"src-{len(self.sources)}"
        self.sources.append(source)
        return source

    # --- steps ---

    @initialize(
        target=members,
        first=st.lists(
            st.tuples(st.sampled_from(CUSTOMERS), st.integers(10_000, 200_000)), min_size=1, max_size=3
        ),
    )
    def first_members(self, first: list[tuple[str, int]]) -> MultipleResults[str]:
        """A few members with points to spend from the start."""
        enrolled = []
        for customer, spend in first:
            member_id = self.enrol_customer(customer, None)
            source = f"src-{len(self.sources)}"
            self.sources.append(source)
            entry, _ = self.service.earn(member_id, source, spend, "store-1")
            self.earns[source] = Earned(member_id, spend, entry.entry_id)
            enrolled.append(member_id)
        return multiple(*enrolled)

    @rule(
        target=members,
        customer=st.sampled_from(CUSTOMERS),
        referrer=st.none() | members,
    )
    def enrol(self, customer: str, referrer: str | None) -> str:
        return self.enrol_customer(customer, referrer)

    def enrol_customer(self, customer: str, referrer: str | None) -> str:
        own = self.member_of(customer)
        result = outcome(
            lambda: self.service.enroll(
                SERVICE,
                customer,
                home_store_id="store-1",
                guide_id="",
                channel="CHANNEL_APP",
                referrer_member_id=referrer or "",
            )
        )
        if isinstance(result, QuanyuError):
            # Nobody refers themselves, enrolled already or not.
            assert isinstance(result, InvalidArgument), result
            assert own is not None
            assert referrer is not None
            assert self.root_of(referrer) == own
            return own
        member, created = result
        assert created == (own is None)
        assert created == (customer not in self.known_customers)
        self.known_customers.add(customer)
        return member.member_id

    @rule(member=members, spend=st.integers(0, 150_000), data=st.data())
    def earn(self, member: str, spend: int, data: st.DataObject) -> None:
        source = self.source(data)
        before = self.earns.get(source)
        if before is not None and data.draw(st.booleans(), label="a true retry"):
            member, spend = before.member_id, before.spend_cents
        same_request = before is not None and (self.root_of(member), spend) == (
            self.root_of(before.member_id),
            before.spend_cents,
        )
        result = outcome(lambda: self.service.earn(member, source, spend, "store-1"))
        if before is not None and not same_request:
            hypothesis.event("earn: source reused for another member or amount")
            assert isinstance(result, InvalidArgument), result
            assert result.reason == "SOURCE_ID_REUSED"
            return
        assert not isinstance(result, QuanyuError), result
        entry, survivor = result
        assert survivor.member_id == self.root_of(member)
        if before is not None:
            hypothesis.event("earn: retried")
            assert entry.entry_id == before.entry_id, "a retried earn credited again"
            return
        hypothesis.event("earn: credited")
        assert entry.kind is EntryKind.EARN
        assert entry.points >= 0
        self.earns[source] = Earned(member, spend, entry.entry_id)

    @rule(member=members, points=st.integers(1, 400) | st.integers(400, 4_000), data=st.data())
    def redeem(self, member: str, points: int, data: st.DataObject) -> None:
        source = self.source(data)
        before = self.redeems.get(source)
        if before is not None and data.draw(st.booleans(), label="a true retry"):
            member, points = before.member_id, before.points
        root = self.root_of(member)
        live, entries = self.live_points(root), self.entry_count()
        result = outcome(lambda: self.service.redeem(SERVICE, member, points, source, store_id="store-1"))
        if before is not None:
            if (root, points) != (self.root_of(before.member_id), before.points):
                hypothesis.event("redeem: source reused for another member or amount")
                assert isinstance(result, InvalidArgument), result
                assert result.reason == "SOURCE_ID_REUSED"
            else:
                hypothesis.event("redeem: retried")
                assert not isinstance(result, QuanyuError), result
                assert result[0].entry_id == before.entry_id, "a retried redemption spent again"
            return
        if live < points:
            hypothesis.event("redeem: refused, too few points")
            assert isinstance(result, FailedPrecondition), f"spent {points} points of {live} live ones"
            assert result.reason == "INSUFFICIENT_POINTS"
            assert result.metadata["balance"] == str(live)
            assert self.entry_count() == entries, "a refused redemption wrote to the ledger"
            return
        hypothesis.event("redeem: spent")
        assert not isinstance(result, QuanyuError), f"refused {points} of {live} live points: {result}"
        entry, survivor = result
        assert entry.kind is EntryKind.REDEEM
        assert entry.points == -points
        assert survivor.member_id == root
        assert survivor.points_balance == live - points
        self.redeems[source] = Redeemed(member, points, entry.entry_id)

    @precondition(lambda self: bool(self.sources))
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(self.sources), label="source")
        expected = self.reversible_entries(source)
        reversals = self.service.reverse(SERVICE, source)
        ids = [entry.entry_id for entry in reversals]
        assert len(ids) == expected, f"{len(ids)} reversals for {expected} entries"
        assert all(entry.kind is EntryKind.REVERSAL for entry in reversals)
        assert set(self.reversed.get(source, [])) <= set(ids), "a retried reversal wrote new entries"
        self.reversed[source] = ids
        hypothesis.event(f"reverse: {min(len(ids), 2)}+ entries")

    @rule(months=st.integers(0, 3), hours=st.integers(0, 72))
    def time_passes(self, months: int, hours: int) -> None:
        self.clock.advance(months, hours)

    @rule(months=st.integers(0, 3), hours=st.integers(0, 72))
    def expiry_run(self, months: int, hours: int) -> None:
        self.clock.advance(months, hours)
        as_of = self.clock.peek()  # what the run reads as its moment
        hypothesis.event(f"expiry run: {'wrote off' if self.service.expire() else 'nothing lapsed'}")
        assert lapsed_points(self.database, as_of) == 0, "points past their expiry left after the run"
        assert self.service.expire(as_of=as_of) == 0, "a second run found more to write off"

    @rule(
        survivor=st.sampled_from(CUSTOMERS),
        merged=st.sampled_from(CUSTOMERS),
        data=st.data(),
    )
    def merge(self, survivor: str, merged: str, data: st.DataObject) -> None:
        request = f"merge-{len(self.merges)}"
        if bool(self.merges) and data.draw(st.booleans(), label="reuse a request id"):
            request = data.draw(st.sampled_from(sorted(self.merges)), label="request")
        result = outcome(lambda: self.service.merge(survivor, merged, request))
        if survivor == merged or self.merges.get(request) not in (None, (survivor, merged)):
            assert isinstance(result, InvalidArgument), result
            return
        if not {survivor, merged} & self.known_customers:
            assert isinstance(result, NotFound), result
            return
        if isinstance(result, FailedPrecondition):
            # The merged customer stands for a member that was merged into another's before.
            hypothesis.event("merge: refused, merged before")
            assert result.reason == "MEMBER_ALREADY_MERGED"
            owner = self.service.get_member(SERVICE, customer_id=merged)
            assert owner.customer_id != merged
            assert owner.member_id != self.member_of(survivor)
            return
        assert not isinstance(result, QuanyuError), result
        hypothesis.event("merge: done")
        self.merges[request] = (survivor, merged)
        self.known_customers |= {survivor, merged}
        for customer in (survivor, merged):
            assert self.service.get_member(SERVICE, customer_id=customer).member_id == result.member_id

    # --- after every step ---

    @invariant()
    def books_balance(self) -> None:
        check_books(self.database)


class PostgresLedgerMachine(LedgerMachine):
    @staticmethod
    def database_url() -> AbstractContextManager[str]:
        return contextmanager(postgres_schema_url)()


MACHINE_SETTINGS = hypothesis.settings(
    max_examples=30,
    stateful_step_count=30,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
LedgerMachine.TestCase.settings = MACHINE_SETTINGS
PostgresLedgerMachine.TestCase.settings = MACHINE_SETTINGS

TestLedgerStaysBalancedOnSqlite = LedgerMachine.TestCase
TestLedgerStaysBalancedOnPostgres = pytest.mark.postgres(
    pytest.mark.skipif(not POSTGRES_URL, reason="QUANYU_TEST_POSTGRES_URL is not set")(
        PostgresLedgerMachine.TestCase
    )
)


# --- many threads at once ------------------------------------------------------------------------

THREADS = 8
STEPS = 25
EXPECTED_REFUSALS = {"INSUFFICIENT_POINTS", "SOURCE_ID_REUSED", "MEMBER_ALREADY_MERGED"}


def test_members_worked_from_many_threads_at_once_keep_balances_equal_to_ledger_and_lots(
    settings: Settings, database_url: str
) -> None:
    settings.membership.database_url = database_url
    bootstrap.migrate(settings)
    service = bootstrap.build_service(settings)
    database = Database(database_url, pool_size=1)
    try:
        first, _ = service.enroll(
            SERVICE, CUSTOMERS[0], home_store_id="store-1", guide_id="", channel="", referrer_member_id=""
        )
        ids = [first.member_id]
        for number, customer in enumerate(CUSTOMERS[1:], start=1):
            referrer = ids[number // 2] if number % 2 else ""
            ids.append(
                service.enroll(
                    SERVICE,
                    customer,
                    home_store_id="store-1",
                    guide_id="",
                    channel="",
                    referrer_member_id=referrer,
                )[0].member_id
            )
        for number, member_id in enumerate(ids):
            service.earn(member_id, f"seed-{number}", 80_000, "store-1")
        check_books(database)

        barrier = threading.Barrier(THREADS)
        failures: list[str] = []
        refusals: dict[str, int] = {}
        done: list[int] = []
        lock = threading.Lock()

        def step(rng: random.Random, thread: int, number: int) -> None:
            # Shared source ids collide across threads: retries, and reuse for another member.
            shared = f"shared-{rng.randrange(12)}"
            own = f"t{thread}-{number}"
            action = rng.choice(["earn", "earn", "redeem", "redeem", "reverse", "expire", "merge"])
            if action == "earn":
                source = shared if rng.random() < 0.4 else own
                service.earn(rng.choice(ids), source, 1_000 * (1 + int(source[-1]) % 7), "store-1")
            elif action == "redeem":
                source = shared if rng.random() < 0.4 else own
                service.redeem(
                    SERVICE, rng.choice(ids), 50 * (1 + int(source[-1]) % 9), source, store_id="store-1"
                )
            elif action == "reverse":
                service.reverse(SERVICE, rng.choice([shared, f"seed-{rng.randrange(len(ids))}"]))
            elif action == "expire":
                service.expire(as_of=utcnow() + timedelta(days=rng.choice([1, 200, 370, 400])))
            else:
                survivor, merged = rng.sample(CUSTOMERS, 2)
                service.merge(survivor, merged, f"merge-{own}")

        def worker(thread: int) -> None:
            rng = random.Random(thread)
            barrier.wait(timeout=60)
            for number in range(STEPS):
                try:
                    step(rng, thread, number)
                except (FailedPrecondition, InvalidArgument) as error:
                    with lock:
                        if error.reason in EXPECTED_REFUSALS:
                            refusals[error.reason] = refusals.get(error.reason, 0) + 1
                        else:
                            failures.append(f"thread {thread} step {number}: {error!r}")
                except Exception as error:
                    with lock:
                        failures.append(f"thread {thread} step {number}: {error!r}")
            with lock:
                done.append(thread)

        threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        assert sorted(done) == list(range(THREADS)), "a worker never finished (an endless expiry run?)"
        assert not failures, "\n".join(failures)

        books = check_books(database)
        # The threads did spend, write off and merge (else this proves little).
        assert books.by_kind[EntryKind.REDEEM] < 0
        assert books.by_kind[EntryKind.EXPIRE] < 0
        assert len(books.survivor_balances) < len(CUSTOMERS)
        # Every customer leads to a member that survives, and every survivor's answer agrees.
        for customer in CUSTOMERS:
            member = service.get_member(SERVICE, customer_id=customer)
            assert books.survivor_balances[member.member_id] == member.points_balance
        # What is left can all be written off in one run, after which nothing is left to spend.
        far = utcnow() + timedelta(days=800)
        service.expire(as_of=far)
        assert lapsed_points(database, far) == 0
        assert check_books(database).total_entries == 0
    finally:
        database.dispose()
        service.close()
