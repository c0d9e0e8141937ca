"""Membership's use cases, each one transaction: the member row of the survivor is locked
first, so two tills or two replicas working on one member take turns in the database."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.engine import Connection

from quanyu.auth import STORE_POS, Principal, Role
from quanyu.db import Database, utcnow
from quanyu.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violations,
)
from quanyu.paging import PageTokens, check_page_token, page_size
from services.membership.domain import (
    MAX_ID_LENGTH,
    MAX_MEMBER_CODE_LENGTH,
    MAX_SOURCE_ID_LENGTH,
    EngagementEvent,
    EntryKind,
    Guide,
    Programme,
    Stage,
    TagChange,
    claw_back,
    conversion_rates,
    draw_oldest_first,
    invalid_member_code,
    require_code_to_spend,
    sees,
    stage_after_event,
    stage_after_purchase,
    validate_guide,
)
from services.membership.metrics import POINTS_EARNED, POINTS_EXPIRED, POINTS_REDEEMED
from services.membership.repository import (
    Coupon,
    CouponRepository,
    Entry,
    GuideRepository,
    LedgerRepository,
    Member,
    MemberCodeRepository,
    MemberRepository,
)

# Base32 without look-alikes (0/O, 1/I): a code a cashier can read off a phone and type.
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class Funnel:
    counts: dict[Stage, int]
    conversions: list[tuple[Stage, Stage, float]]


DEFAULT_MEMBER_CODE_TTL = timedelta(minutes=2)
# What a code is checked against when the member named does not exist: no code is ever its.
_NO_MEMBER = "\x00no member"


class Customers(Protocol):
    """What identity says of customers (see services.membership.customers)."""

    def exists(self, customer_id: str) -> bool: ...

    def holds(self, customer_id: str, channel: str) -> bool: ...


def _code_hash(code: str) -> str:
    return hashlib.sha256(f"member-code|{code}".encode()).hexdigest()


# One redemption spends at most this many points (¥1,000,000 of value): above any real order.
MAX_POINTS_PER_CALL = 100_000_000


def _source_key(kind: str, owner: str, source_id: str) -> str:
    """The ledger key of a caller's source id: the platform's own keep the shape they always had;
    a till's or a channel's carry their owner, its length first, so one caller's ids never name
    another's entries however either is spelt (store `A:1` with source `X` and store `A` with
    source `1:X` are two keys)."""
    return f"{kind}:{source_id}" if not owner else f"{kind}@{len(owner)}:{owner}:{source_id}"


def _require(violations: Violations, value: str, field_name: str, max_length: int = MAX_ID_LENGTH) -> None:
    violations.text(value, field_name, max_length=max_length)


class MembershipService:
    def __init__(
        self,
        database: Database,
        programme: Programme,
        page_tokens: PageTokens,
        customers: Customers,
        *,
        clock: Callable[[], datetime] = utcnow,
        member_code_ttl: timedelta = DEFAULT_MEMBER_CODE_TTL,
    ) -> None:
        self._db = database
        self.programme = programme
        self._pages = page_tokens
        self._customers = customers
        self._clock = clock
        self._code_ttl = member_code_ttl

    def close(self) -> None:
        self._db.dispose()

    # --- members ------------------------------------------------------------------------------

    def enroll(
        self,
        principal: Principal,
        customer_id: str,
        *,
        home_store_id: str,
        guide_id: str,
        channel: str,
        referrer_member_id: str,
    ) -> tuple[Member, bool]:
        violations = Violations()
        _require(violations, customer_id, "customer_id")
        violations.text(home_store_id, "home_store_id", max_length=MAX_ID_LENGTH, required=False)
        violations.text(guide_id, "guide_id", max_length=MAX_ID_LENGTH, required=False)
        violations.text(referrer_member_id, "referrer_member_id", max_length=MAX_ID_LENGTH, required=False)
        violations.raise_if_any()
        home_store_id, channel = self._enrolling_as(principal, home_store_id, channel)
        if principal.role in (Role.CHANNEL, Role.STORE):
            # A till or channel enrols a customer identity knows (a channel, one of its own), never
            # an id it made up.
            known = (
                self._customers.holds(customer_id, principal.channel)
                if principal.role is Role.CHANNEL
                else self._customers.exists(customer_id)
            )
            if not known:
                raise NotFound("customer", customer_id)

        def enrolled(connection: Connection) -> tuple[Member, bool] | None:
            repo = MemberRepository(connection)
            existing = repo.root_of_customer(customer_id)
            if existing is None:
                return None
            member = self._load(repo, existing)
            # Refused before anything else is said of the member (whom they may refer, say).
            if principal.role is Role.STORE and member.home_store_id != principal.store_id:
                raise PermissionDenied(
                    "the customer is a member already, of another store or of none; their member code "
                    "shows them at this till",
                    reason="MEMBER_OF_ANOTHER_STORE",
                )
            # Only an enrolled customer has a member of their own to name as the referrer.
            if referrer_member_id and repo.root_of(referrer_member_id) == existing:
                raise InvalidArgument("referrer_member_id", "a customer cannot refer themselves")
            return member, False

        # Most calls (every order of a known customer) find the member: a read, no write lock.
        with self._db.snapshot() as connection:
            # A guide is checked even for a member who exists: orders credits the guide it names.
            home_store_id = self._guide_home(connection, principal, guide_id, home_store_id)
            found = enrolled(connection)
        if found is not None:
            return found

        def work(connection: Connection) -> tuple[Member, bool]:
            found = enrolled(connection)
            if found is not None:
                return found
            repo = MemberRepository(connection)
            referrer = ""
            if referrer_member_id:
                referrer_root = repo.root_of(referrer_member_id)
                if referrer_root is None:
                    raise NotFound("member", referrer_member_id, reason="REFERRER_NOT_FOUND")
                referrer_member = repo.get(referrer_root)
                if referrer_member is not None and referrer_member.customer_id == customer_id:
                    raise InvalidArgument("referrer_member_id", "a customer cannot refer themselves")
                referrer = referrer_root
            member_id = repo.create(
                customer_id,
                tier=self.programme.entry_tier,
                home_store_id=home_store_id,
                guide_id=guide_id,
                channel=channel,
                referrer_member_id=referrer,
                now=self._clock(),
            )
            return self._load(repo, member_id), True

        return self._db.run(work)

    @staticmethod
    def _enrolling_as(principal: Principal, home_store_id: str, channel: str) -> tuple[str, str]:
        """The home store and channel an enrolment records: a till enrols with itself as home
        through its own channel, a channel backend through its own channel."""
        if principal.role is Role.STORE:
            if home_store_id and home_store_id != principal.store_id:
                raise PermissionDenied("a store enrols members with itself as home", reason="OTHER_STORE")
            if channel and channel != STORE_POS:
                raise PermissionDenied("a store enrols through its till", reason="OTHER_CHANNEL")
            return principal.store_id, STORE_POS
        if principal.role is Role.CHANNEL:
            if channel and channel != principal.channel:
                raise PermissionDenied("a channel enrols through itself", reason="OTHER_CHANNEL")
            return home_store_id, principal.channel
        return home_store_id, channel

    def _guide_home(
        self, connection: Connection, principal: Principal, guide_id: str, home_store_id: str
    ) -> str:
        """The home store once the guide is checked: a member is looked after only by a guide of
        their home store (given, or the guide's own when none is), and a till names only its own
        store's guides. A guide that does not exist, is inactive or is another store's is
        answered alike."""
        if not guide_id:
            return home_store_id
        guide = GuideRepository(connection).get(guide_id)
        if (
            guide is None
            or not guide.active
            or (home_store_id and guide.store_id != home_store_id)
            or (principal.role is Role.STORE and guide.store_id != principal.store_id)
        ):
            raise NotFound("guide", guide_id)
        return home_store_id or guide.store_id

    def get_member(
        self, principal: Principal, *, member_id: str = "", customer_id: str = "", member_code: str = ""
    ) -> Member:
        if member_code:
            return self._db.run(
                lambda c: self._load(
                    MemberRepository(c), self._admit(c, principal, member_code, store_id=principal.store_id)
                )
            )
        with self._db.snapshot() as connection:
            repo = MemberRepository(connection)
            root = repo.root_of(member_id) if member_id else repo.root_of_customer(customer_id)
            member = repo.get(root) if root else None
        if member is None or not self._sees(principal, member):
            raise NotFound("member", member_id or customer_id)
        return member

    def _sees(self, principal: Principal, member: Member) -> bool:
        return sees(
            principal,
            member.home_store_id,
            holds_channel_account=lambda: self._customers.holds(member.customer_id, principal.channel),
        )

    def _admit(
        self, connection: Connection, principal: Principal, code: str, *, store_id: str, member_root: str = ""
    ) -> str:
        """The member a code stands for (their root), once the code is found valid here: unexpired,
        `member_root`'s when one is named, and shown at `store_id` (the first store it is shown at
        keeps it: a till's own store, or the store orders names for a till's sale). Every failure
        is one answer."""
        if len(code) > MAX_MEMBER_CODE_LENGTH:
            raise InvalidArgument("member_code", f"must be at most {MAX_MEMBER_CODE_LENGTH} characters")
        if principal.role is Role.CHANNEL:
            # A code is for the till it is shown at; a channel acts for its own customers instead.
            raise invalid_member_code()
        codes, repo = MemberCodeRepository(connection), MemberRepository(connection)
        key = _code_hash(code)
        found = codes.get(key)
        if found is not None and store_id and not found.store_id and found.expire_time > self._clock():
            found = codes.bind(key, store_id)
        if found is None:
            raise invalid_member_code()
        code_root = repo.root_of(found.member_id)
        if not found.admits(member_root or code_root or "", code_root, store_id, self._clock()):
            raise invalid_member_code()
        assert code_root is not None
        return code_root

    def create_member_code(self, principal: Principal, member_id: str) -> tuple[str, datetime]:
        """A fresh code for the member's app to show at a till, valid for a few minutes."""
        violations = Violations()
        _require(violations, member_id, "member_id")
        violations.raise_if_any()
        member = self.get_member(principal, member_id=member_id)
        code = f"{secrets.randbelow(10**18):018d}"
        now = self._clock()
        expire = now + self._code_ttl
        self._db.run(lambda c: MemberCodeRepository(c).add(_code_hash(code), member.member_id, now, expire))
        return code, expire

    # --- guides -------------------------------------------------------------------------------

    def upsert_guide(self, principal: Principal, guide: Guide) -> Guide:
        violations = Violations()
        validate_guide(guide, violations)
        violations.raise_if_any()
        principal.require_store(guide.store_id)

        def work(connection: Connection) -> Guide:
            guides = GuideRepository(connection)
            existing = guides.get(guide.guide_id)
            if (
                principal.role is Role.STORE
                and existing is not None
                and existing.store_id != principal.store_id
            ):
                # Another store's guide id: taken, and nothing of its owner is told.
                raise AlreadyExists("a guide of another store has this id", reason="GUIDE_ID_TAKEN")
            guides.save(guide, self._clock())
            saved = guides.get(guide.guide_id)
            assert saved is not None
            return saved

        return self._db.run(work)

    def get_guide(self, principal: Principal, guide_id: str) -> Guide:
        violations = Violations()
        _require(violations, guide_id, "guide_id")
        violations.raise_if_any()
        with self._db.snapshot() as connection:
            guide = GuideRepository(connection).get(guide_id)
        if guide is None or (principal.role is Role.STORE and guide.store_id != principal.store_id):
            raise NotFound("guide", guide_id)
        return guide

    def list_guides(
        self, principal: Principal, store_id: str, requested: int, token: str
    ) -> tuple[list[Guide], str]:
        violations = Violations()
        violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH, required=False)
        violations.raise_if_any()
        store_id = self._own_store(principal, store_id)
        size = page_size(requested)
        query = {"store": store_id}
        position = self._pages.decode(token, query=query, caller=principal.name)
        with self._db.snapshot() as connection:
            found = GuideRepository(connection).page(
                store_id, str(position["after"]) if position else "", size + 1
            )
        more = len(found) > size
        found = found[:size]
        next_token = (
            self._pages.encode({"after": found[-1].guide_id}, query=query, caller=principal.name)
            if more
            else ""
        )
        return found, next_token

    def _load(self, repo: MemberRepository, member_id: str) -> Member:
        member = repo.get(member_id)
        if member is None:
            raise NotFound("member", member_id)
        return member

    def _lock_root(self, connection: Connection, member_id: str) -> Member:
        repo = MemberRepository(connection)
        while True:
            root = repo.root_of(member_id)
            member = repo.get(root, lock=True) if root else None
            if member is None:
                raise NotFound("member", member_id)
            # A concurrent merge may have folded the root into another member between reading it
            # and locking it; once locked, a member that is still its own root stays one.
            if repo.root_of(member.member_id) == member.member_id:
                return member

    # --- points -------------------------------------------------------------------------------

    def earn(self, member_id: str, source_id: str, spend_cents: int, store_id: str) -> tuple[Entry, Member]:
        violations = Violations()
        _require(violations, member_id, "member_id")
        _require(violations, source_id, "source_id", MAX_SOURCE_ID_LENGTH)
        violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH, required=False)
        violations.check(spend_cents >= 0, "spend_cents", "must not be negative")
        violations.check(
            spend_cents <= self.programme.max_spend_cents,
            "spend_cents",
            f"must be at most {self.programme.max_spend_cents}",
        )
        violations.raise_if_any()

        def work(connection: Connection) -> tuple[Entry, Member]:
            ledger, repo = LedgerRepository(connection), MemberRepository(connection)
            key = f"earn:{source_id}"
            done = ledger.by_key(key)
            if done is not None:
                self._same_source(repo, done, member_id, spend=spend_cents)
                return done, self._load(repo, self._root(repo, done.member_id))
            member = self._lock_root(connection, member_id)
            now = self._clock()
            self._expire_lapsed(connection, member, now)
            group = repo.group(member.member_id)
            first_purchase = spend_cents > 0 and ledger.purchases(group) == 0
            points = self.programme.earnable(
                self.programme.points_for(spend_cents, member.tier, now),
                ledger.earned_since(group, self.programme.day_start(now)),
            )
            member.points_balance += points
            rolling = ledger.rolling_spend(group, self.programme.spend_window_start(now)) + spend_cents
            member.tier = self.programme.upgraded(member.tier, rolling)
            member.lifetime_spend_cents += spend_cents
            stage = stage_after_purchase(member.stage, member.last_purchase_time, now, self.programme)
            self._enter(member, stage, now)
            member.last_purchase_time = now
            expire = self.programme.expiry(now)
            entry = ledger.append(
                member_id=member.member_id,
                kind=EntryKind.EARN,
                points=points,
                balance_after=member.points_balance,
                source_id=source_id,
                store_id=store_id,
                key=key,
                now=now,
                expire_time=expire,
                spend_cents=spend_cents,
                spend_time=now,
            )
            if points > 0:
                ledger.open_lot(entry.entry_id, member.member_id, points, expire)
            repo.save(member, now)
            POINTS_EARNED.inc(points)
            if first_purchase and member.referrer_member_id:
                self._credit_referrer(connection, member, source_id, now)
            return entry, self._load(repo, member.member_id)

        return self._db.run(work)

    def _credit_referrer(
        self, connection: Connection, referred: Member, source_id: str, now: datetime
    ) -> None:
        """The referrer's bonus, once per referred member however often the earn is retried, and
        within the referrer's caps: the points of their day, and the bonuses of their day (a till
        that enrols made-up customers naming one referrer, each buying nothing much, would
        otherwise mint points for that referrer without end)."""
        ledger = LedgerRepository(connection)
        key = f"referral:{referred.member_id}"
        if ledger.by_key(key) is not None or self.programme.referral_bonus_points <= 0:
            return
        referrer = self._lock_root(connection, referred.referrer_member_id)
        group, day = MemberRepository(connection).group(referrer.member_id), self.programme.day_start(now)
        if ledger.bonuses_since(group, day) >= self.programme.max_referral_bonuses_per_member_day:
            return
        bonus = self.programme.earnable(self.programme.referral_bonus_points, ledger.earned_since(group, day))
        if bonus <= 0:
            return
        referrer.points_balance += bonus
        expire = self.programme.expiry(now)
        entry = ledger.append(
            member_id=referrer.member_id,
            kind=EntryKind.REFERRAL_BONUS,
            points=bonus,
            balance_after=referrer.points_balance,
            source_id=source_id,
            store_id="",
            key=key,
            now=now,
            expire_time=expire,
        )
        ledger.open_lot(entry.entry_id, referrer.member_id, bonus, expire)
        MemberRepository(connection).save(referrer, now)

    def redeem(
        self,
        principal: Principal,
        member_id: str,
        points: int,
        source_id: str,
        *,
        store_id: str,
        member_code: str = "",
    ) -> tuple[Entry, Member]:
        if principal.role is Role.STORE:
            store_id = store_id or principal.store_id
        violations = Violations()
        _require(violations, member_id, "member_id")
        _require(violations, source_id, "source_id", MAX_SOURCE_ID_LENGTH)
        violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH, required=False)
        violations.check(points > 0, "points", "must be greater than zero")
        violations.check(points <= MAX_POINTS_PER_CALL, "points", f"must be at most {MAX_POINTS_PER_CALL}")
        violations.text(member_code, "member_code", max_length=MAX_MEMBER_CODE_LENGTH, required=False)
        violations.raise_if_any()
        principal.require_store(store_id)
        require_code_to_spend(principal, member_code)
        self._may_spend(principal, member_id, member_code, store_id)
        owner = principal.owner

        def work(connection: Connection) -> tuple[Entry, Member]:
            ledger, repo = LedgerRepository(connection), MemberRepository(connection)
            key = _source_key("redeem", owner, source_id)
            done = ledger.by_key(key) or self._redeemed_before_owners(ledger, principal, source_id)
            if done is not None:
                self._same_source(repo, done, member_id, points=-points)
                return done, self._load(repo, self._root(repo, done.member_id))
            now = self._clock()
            if not self.programme.may_redeem(now):
                raise FailedPrecondition(
                    "points can be redeemed only in the programme's redemption windows",
                    reason="OUTSIDE_REDEMPTION_WINDOW",
                )
            member = self._lock_root(connection, member_id)
            self._expire_lapsed(connection, member, now)
            if member.points_balance < points:
                raise FailedPrecondition(
                    f"the member has {member.points_balance} points, not {points}",
                    reason="INSUFFICIENT_POINTS",
                    metadata={"balance": str(member.points_balance)},
                )
            draws = draw_oldest_first(ledger.lots(member.member_id), points, now)
            member.points_balance -= points
            entry = ledger.append(
                member_id=member.member_id,
                kind=EntryKind.REDEEM,
                points=-points,
                balance_after=member.points_balance,
                source_id=source_id,
                store_id=store_id,
                key=key,
                now=now,
                owner=owner,
            )
            for lot_id, taken in draws:
                ledger.take_from_lot(lot_id, taken)
            ledger.record_draws(entry.entry_id, draws)
            POINTS_REDEEMED.inc(points)
            repo.save(member, now)
            return entry, self._load(repo, member.member_id)

        return self._db.run(work)

    def reverse(self, principal: Principal, source_id: str) -> list[Entry]:
        """Undo what a source did: earns (and the referral bonus they paid) are clawed back as far
        as their points are unspent, redemptions are given back. Once per entry. The source is the
        caller's own: its namespace of source ids (Principal.owner)."""
        violations = Violations()
        _require(violations, source_id, "source_id", MAX_SOURCE_ID_LENGTH)
        violations.raise_if_any()

        def work(connection: Connection) -> list[Entry]:
            ledger = LedgerRepository(connection)
            reversals = []
            for entry in ledger.by_source(
                principal.owner, source_id, (EntryKind.EARN, EntryKind.REFERRAL_BONUS, EntryKind.REDEEM)
            ):
                done = ledger.by_key(f"reverse:{entry.entry_id}")
                reversals.append(done if done is not None else self._reverse_one(connection, entry))
            return reversals

        return self._db.run(work)

    def _reverse_one(self, connection: Connection, entry: Entry) -> Entry:
        ledger, repo = LedgerRepository(connection), MemberRepository(connection)
        member = self._lock_root(connection, entry.member_id)
        now = self._clock()
        self._expire_lapsed(connection, member, now)
        append = functools.partial(
            ledger.append,
            member_id=entry.member_id,
            kind=EntryKind.REVERSAL,
            source_id=entry.source_id,
            store_id=entry.store_id,
            key=f"reverse:{entry.entry_id}",
            now=now,
            owner=entry.owner,
            reverses=entry.entry_id,
        )
        if entry.kind is EntryKind.REDEEM:
            given_back = -entry.points
            member.points_balance += given_back
            draws = ledger.draws(entry.entry_id)
            # The points keep the expiry of the lots they came from (the soonest of them).
            expire = min((lot.expire_time for lot, _ in draws), default=self.programme.expiry(now))
            reversal = append(points=given_back, balance_after=member.points_balance, expire_time=expire)
            ledger.open_lot(reversal.entry_id, member.member_id, given_back, expire)
        else:
            lot = ledger.lot(entry.entry_id)
            clawback = claw_back(entry.points, lot.remaining if lot else 0)
            if clawback.recovered:
                ledger.take_from_lot(entry.entry_id, clawback.recovered)
            member.points_balance -= clawback.recovered
            member.lifetime_spend_cents -= entry.spend_cents
            reversal = append(
                points=-clawback.recovered,
                balance_after=member.points_balance,
                spend_cents=-entry.spend_cents,
                spend_time=entry.spend_time,
                shortfall=clawback.shortfall,
            )
        repo.save(member, now)
        return reversal

    def list_entries(
        self, principal: Principal, member_id: str, requested: int, token: str, member_code: str = ""
    ) -> tuple[list[Entry], str]:
        violations = Violations()
        _require(violations, member_id, "member_id")
        violations.text(member_code, "member_code", max_length=MAX_MEMBER_CODE_LENGTH, required=False)
        check_page_token(token, violations)
        violations.raise_if_any()
        size = page_size(requested)
        caller = principal.name
        position = self._pages.decode(token, query={"member": member_id}, caller=caller)
        self._may_read(principal, member_id, member_code, principal.store_id)
        with self._db.snapshot() as connection:
            repo = MemberRepository(connection)
            root = repo.root_of(member_id)
            if root is None:
                raise NotFound("member", member_id)
            entries = LedgerRepository(connection).page(
                repo.group(root), int(position["before"]) if position else None, size + 1
            )
        more = len(entries) > size
        entries = entries[:size]
        next_token = (
            self._pages.encode({"before": entries[-1].seq}, query={"member": member_id}, caller=caller)
            if more
            else ""
        )
        return entries, next_token

    def expire(self, as_of: datetime | None = None) -> int:
        """Write EXPIRE entries for what is left of lapsed earnings, once; how many were written."""
        as_of = as_of or self._clock()
        written = 0
        while True:
            with self._db.snapshot() as connection:
                lapsed = LedgerRepository(connection).lapsed_lots(as_of)
            if not lapsed:
                return written
            for _, root in lapsed:
                written += self._db.run(functools.partial(self._expire_root, root=root, as_of=as_of))

    def _expire_root(self, connection: Connection, *, root: str, as_of: datetime) -> int:
        return self._expire_lapsed(connection, self._lock_root(connection, root), as_of, save=True)

    def _expire_lapsed(
        self, connection: Connection, member: Member, as_of: datetime, *, save: bool = False
    ) -> int:
        """Write off the member's lapsed lots (the caller holds the member's lock)."""
        ledger = LedgerRepository(connection)
        written = 0
        for lot_id, _ in ledger.lapsed_lots(as_of, member.member_id, limit=10_000):
            lot = ledger.lot(lot_id)
            if lot is None or lot.remaining == 0:
                continue
            ledger.take_from_lot(lot_id, lot.remaining)
            member.points_balance -= lot.remaining
            ledger.append(
                member_id=member.member_id,
                kind=EntryKind.EXPIRE,
                points=-lot.remaining,
                balance_after=member.points_balance,
                source_id=lot_id,
                store_id="",
                key=f"expire:{lot_id}",
                now=self._clock(),
            )
            written += 1
            POINTS_EXPIRED.inc(lot.remaining)
        if written and save:
            MemberRepository(connection).save(member, self._clock())
        return written

    def evaluate_tiers(self, as_of: datetime | None = None) -> int:
        """Move every member to the tier their rolling spend earns, down as well as up."""
        as_of = as_of or self._clock()
        since = self.programme.spend_window_start(as_of)
        changed = 0
        after = ""
        while True:
            with self._db.snapshot() as connection:
                batch = MemberRepository(connection).segment({}, after, 500)
            if not batch:
                return changed
            after = batch[-1]
            for member_id in batch:

                def work(connection: Connection, member_id: str = member_id) -> int:
                    member = self._lock_root(connection, member_id)
                    rolling = LedgerRepository(connection).rolling_spend(
                        MemberRepository(connection).group(member.member_id), since
                    )
                    tier = self.programme.tier_for(rolling).name
                    if tier == member.tier:
                        return 0
                    member.tier = tier
                    MemberRepository(connection).save(member, self._clock())
                    return 1

                changed += self._db.run(work)

    # --- coupons ------------------------------------------------------------------------------

    def issue_coupon(
        self,
        member_id: str,
        discount_cents: int,
        min_spend_cents: int,
        expire_time: datetime | None,
        request_id: str,
    ) -> Coupon:
        violations = Violations()
        _require(violations, member_id, "member_id")
        _require(violations, request_id, "request_id", 128)
        violations.check(discount_cents > 0, "discount_cents", "must be greater than zero")
        violations.check(min_spend_cents >= 0, "min_spend_cents", "must not be negative")
        now = self._clock()
        if expire_time is None:
            violations.add("expire_time", "is required")
        elif expire_time <= now:
            violations.add("expire_time", "must be in the future")
        violations.raise_if_any()
        assert expire_time is not None
        fingerprint = hashlib.sha256(
            f"{member_id}|{discount_cents}|{min_spend_cents}|{expire_time.isoformat()}".encode()
        ).hexdigest()

        def work(connection: Connection) -> Coupon:
            coupons, repo = CouponRepository(connection), MemberRepository(connection)
            done = coupons.by_request(request_id)
            if done is not None:
                if done.request_fingerprint != fingerprint:
                    raise InvalidArgument(
                        "request_id", "was used for a different coupon", reason="REQUEST_ID_REUSED"
                    )
                return done
            root = repo.root_of(member_id)
            if root is None:
                raise NotFound("member", member_id)
            code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
            coupon = Coupon(code, root, discount_cents, min_spend_cents, expire_time, None, fingerprint)
            coupons.issue(coupon, request_id, now)
            return coupon

        return self._db.run(work)

    def redeem_coupon(
        self,
        principal: Principal,
        *,
        code: str,
        member_id: str,
        order_id: str,
        order_amount_cents: int,
        store_id: str,
        member_code: str = "",
    ) -> tuple[Coupon, int]:
        if principal.role is Role.STORE:
            store_id = store_id or principal.store_id
        violations = Violations()
        _require(violations, code, "code", 32)
        _require(violations, member_id, "member_id")
        _require(violations, order_id, "order_id")
        violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH, required=False)
        violations.check(order_amount_cents >= 0, "order_amount_cents", "must not be negative")
        violations.check(
            order_amount_cents <= self.programme.max_spend_cents,
            "order_amount_cents",
            f"must be at most {self.programme.max_spend_cents}",
        )
        violations.text(member_code, "member_code", max_length=MAX_MEMBER_CODE_LENGTH, required=False)
        violations.raise_if_any()
        principal.require_store(store_id)
        require_code_to_spend(principal, member_code)
        self._may_spend(principal, member_id, member_code, store_id)

        def work(connection: Connection) -> tuple[Coupon, int]:
            coupons, repo = CouponRepository(connection), MemberRepository(connection)
            coupon = coupons.get(code)
            owned = coupon is not None and repo.root_of(coupon.member_id) == repo.root_of(member_id)
            if coupon is None or (not owned and principal.role in (Role.CHANNEL, Role.STORE)):
                # Another member's coupon is nothing to a till or a channel, not even known.
                raise NotFound("coupon", code)
            if not owned:
                raise FailedPrecondition("the coupon belongs to another member", reason="COUPON_NOT_OWNED")
            discount = min(coupon.discount_cents, order_amount_cents)
            if coupon.redeemed_order_id == order_id and coupon.redeemed_store_id == store_id:
                return coupon, discount
            if coupon.redeemed_order_id is not None:
                raise FailedPrecondition(
                    "the coupon was used by another order", reason="COUPON_ALREADY_REDEEMED"
                )
            now = self._clock()
            if coupon.expire_time <= now:
                raise FailedPrecondition("the coupon has expired", reason="COUPON_EXPIRED")
            if order_amount_cents < coupon.min_spend_cents:
                raise FailedPrecondition(
                    f"the coupon needs an order of at least {coupon.min_spend_cents} fen",
                    reason="MIN_SPEND_NOT_MET",
                )
            if not coupons.redeem(code, order_id, store_id, now):
                # A concurrent call took the coupon since it was read: when that was a copy of this
                # call (the same order), the redemption stands and this call answers with it.
                taken = coupons.get(code)
                if taken is not None and taken.redeemed_order_id == order_id:
                    return taken, discount
                raise FailedPrecondition(
                    "the coupon was used by another order", reason="COUPON_ALREADY_REDEEMED"
                )
            redeemed = coupons.get(code)
            assert redeemed is not None
            return redeemed, discount

        return self._db.run(work)

    def release_coupon(self, code: str, order_id: str) -> Coupon:
        violations = Violations()
        _require(violations, code, "code", 32)
        _require(violations, order_id, "order_id")
        violations.raise_if_any()

        def work(connection: Connection) -> Coupon:
            coupons = CouponRepository(connection)
            if coupons.get(code) is None:
                raise NotFound("coupon", code)
            coupons.release(code, order_id)
            released = coupons.get(code)
            assert released is not None
            return released

        return self._db.run(work)

    # --- engagement, tags, segments ---------------------------------------------------------

    def record_event(
        self,
        principal: Principal,
        customer_id: str,
        store_id: str,
        event_type: EngagementEvent | None,
        occur_time: datetime | None,
    ) -> None:
        violations = Violations()
        _require(violations, customer_id, "customer_id")
        violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH, required=False)
        violations.check(
            event_type is not None, "event_type", f"must be {', '.join(e.value for e in EngagementEvent)}"
        )
        violations.raise_if_any()
        if principal.role is Role.STORE:
            principal.require_store(store_id or principal.store_id)
        with self._db.snapshot() as connection:
            repo = MemberRepository(connection)
            root = repo.root_of_customer(customer_id)
            member = repo.get(root) if root else None
        # Not a member, or not one the caller reaches: accepted alike, with nothing moved.
        if member is None or member.stage >= Stage.INTEREST or not self._sees(principal, member):
            return

        root_id = member.member_id

        def work(connection: Connection) -> None:
            locked = self._lock_root(connection, root_id)
            if locked.stage < Stage.INTEREST:
                self._enter(locked, stage_after_event(locked.stage), occur_time or self._clock())
                MemberRepository(connection).save(locked, self._clock())

        self._db.run(work)

    @staticmethod
    def _enter(member: Member, stage: Stage, at: datetime) -> None:
        """Move forward to `stage`, remembering when each stage passed on the way was entered."""
        for step in Stage:
            if member.stage < step <= stage and member.stage_times.get(step) is None:
                member.stage_times[step] = at
        member.stage = max(member.stage, stage)

    def update_tags(self, member_id: str, add: Sequence[str], remove: Sequence[str]) -> Member:
        violations = Violations()
        _require(violations, member_id, "member_id")
        change = TagChange.checked(add, remove, violations)

        def work(connection: Connection) -> Member:
            member = self._lock_root(connection, member_id)
            repo = MemberRepository(connection)
            repo.add_tags(member.member_id, change.add)
            repo.remove_tags(member.member_id, change.remove)
            return self._load(repo, member.member_id)

        return self._db.run(work)

    def list_members(
        self, principal: Principal, filters: dict[str, str | int], requested: int, token: str
    ) -> tuple[list[Member], str]:
        filters = dict(filters)
        filters["home_store_id"] = self._own_store(principal, str(filters.get("home_store_id", "")))
        size = page_size(requested)
        caller = principal.name
        position = self._pages.decode(token, query=filters, caller=caller)
        with self._db.snapshot() as connection:
            repo = MemberRepository(connection)
            ids = repo.segment(filters, str(position["after"]) if position else "", size + 1)
            more = len(ids) > size
            page = [self._load(repo, member_id) for member_id in ids[:size]]
        next_token = (
            self._pages.encode({"after": page[-1].member_id}, query=filters, caller=caller) if more else ""
        )
        return page, next_token

    def funnel(self, principal: Principal, home_store_id: str) -> Funnel:
        store = self._own_store(principal, home_store_id)
        with self._db.snapshot() as connection:
            counts = MemberRepository(connection).stage_counts(store)
        complete = {stage: counts.get(stage, 0) for stage in Stage}
        return Funnel(complete, conversion_rates(complete))

    @staticmethod
    def _own_store(principal: Principal, home_store_id: str) -> str:
        """A store terminal sees only its own members; empty means its own store."""
        if principal.role is Role.STORE:
            if home_store_id and home_store_id != principal.store_id:
                raise PermissionDenied("a store sees only its own members", reason="OTHER_STORE")
            return principal.store_id
        return home_store_id

    # --- merges -------------------------------------------------------------------------------

    def merge(self, survivor_customer_id: str, merged_customer_id: str, request_id: str) -> Member:
        violations = Violations()
        _require(violations, survivor_customer_id, "survivor_customer_id")
        _require(violations, merged_customer_id, "merged_customer_id")
        _require(violations, request_id, "request_id", 128)
        if survivor_customer_id and survivor_customer_id == merged_customer_id:
            violations.add("merged_customer_id", "a customer cannot be merged into itself")
        violations.raise_if_any()

        def work(connection: Connection) -> Member:
            repo = MemberRepository(connection)
            done = repo.merge_request(request_id)
            if done is not None:
                if (done.survivor_customer_id, done.merged_customer_id) != (
                    survivor_customer_id,
                    merged_customer_id,
                ):
                    raise InvalidArgument(
                        "request_id", "was used for another merge", reason="REQUEST_ID_REUSED"
                    )
                return self._load(repo, self._root(repo, done.survivor_member_id))
            now = self._clock()
            while True:
                survivor_root = repo.root_of_customer(survivor_customer_id)
                merged_root = repo.root_of_customer(merged_customer_id)
                # Lock both roots in a fixed order (two opposite merges cannot deadlock), and read
                # again if a concurrent merge folded one of them away before it was locked.
                roots = sorted({root for root in (survivor_root, merged_root) if root is not None})
                if [self._lock_root(connection, root).member_id for root in roots] == roots:
                    break
            if survivor_root is None and merged_root is None:
                raise NotFound("member", survivor_customer_id, reason="MEMBER_NOT_FOUND")
            # A merged customer leading to another customer's member was merged before.
            if (
                merged_root is not None
                and merged_root != survivor_root
                and self._load(repo, merged_root).customer_id != merged_customer_id
            ):
                raise FailedPrecondition(
                    "the merged customer's member was already merged into another member",
                    reason="MEMBER_ALREADY_MERGED",
                )
            if survivor_root is None:
                assert merged_root is not None
                moved = self._lock_root(connection, merged_root)
                moved.customer_id = survivor_customer_id
                repo.save(moved, now)
                repo.point_customer(survivor_customer_id, merged_root)
                result = merged_root
            elif merged_root is None or merged_root == survivor_root:
                repo.point_customer(merged_customer_id, survivor_root)
                result = survivor_root
            else:
                # Lock both in a fixed order so two opposite merges cannot deadlock or interleave.
                first, second = sorted((survivor_root, merged_root))
                locked = {
                    m.member_id: m
                    for m in (self._lock_root(connection, first), self._lock_root(connection, second))
                }
                survivor, merged = locked[survivor_root], locked[merged_root]
                self._combine(connection, survivor, merged, now)
                repo.point_customer(merged_customer_id, survivor.member_id)
                result = survivor.member_id
            repo.record_merge(request_id, survivor_customer_id, merged_customer_id, result, now)
            return self._load(repo, result)

        return self._db.run(work)

    def _combine(self, connection: Connection, survivor: Member, merged: Member, now: datetime) -> None:
        repo, ledger = MemberRepository(connection), LedgerRepository(connection)
        self._expire_lapsed(connection, survivor, now)
        self._expire_lapsed(connection, merged, now)
        repo.fold_into(survivor, merged, now)
        survivor.points_balance += merged.points_balance
        survivor.lifetime_spend_cents += merged.lifetime_spend_cents
        survivor.home_store_id = survivor.home_store_id or merged.home_store_id
        survivor.guide_id = survivor.guide_id or merged.guide_id
        survivor.referrer_member_id = survivor.referrer_member_id or merged.referrer_member_id
        purchases = [t for t in (survivor.last_purchase_time, merged.last_purchase_time) if t is not None]
        survivor.last_purchase_time = max(purchases, default=None)
        for stage in Stage:
            times = [
                t for t in (survivor.stage_times.get(stage), merged.stage_times.get(stage)) if t is not None
            ]
            if times:
                survivor.stage_times[stage] = min(times)
        survivor.stage = max(survivor.stage, merged.stage)
        rolling = ledger.rolling_spend(repo.group(survivor.member_id), self.programme.spend_window_start(now))
        survivor.tier = self.programme.upgraded(
            max(survivor.tier, merged.tier, key=lambda name: self.programme.tier(name).threshold_cents),
            rolling,
        )
        repo.save(survivor, now)

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _redeemed_before_owners(
        ledger: LedgerRepository, principal: Principal, source_id: str
    ) -> Entry | None:
        """A till's redemption made before source ids had owners, under its shared key: its retry
        after the upgrade finds it there rather than spending again. Only the till's own store's."""
        if principal.role is not Role.STORE:
            return None
        earlier = ledger.by_key(_source_key("redeem", "", source_id))
        if earlier is None or earlier.owner or earlier.store_id != principal.store_id:
            return None
        return earlier

    def _may_spend(self, principal: Principal, member_id: str, member_code: str, store_id: str) -> None:
        """Spending needs the member: their code (a till's only way, checked for this member at
        the store it is spent at, also when orders spends it for a till's sale), or a channel
        acting for its own customer; ops and services act for the chain. Checked before the
        spend's own transaction, which then holds no lock while identity is asked."""
        if principal.role in (Role.OPS, Role.SERVICE) and not member_code:
            return
        self._may_read(principal, member_id, member_code, store_id)

    def _may_read(self, principal: Principal, member_id: str, member_code: str, store_id: str) -> None:
        """The member is the caller's to read: by their code shown at `store_id`, or as one of its
        own. A member the caller does not reach is answered as one that does not exist, and a
        code for a member who does not exist as any other code not valid here."""
        if not member_code:
            self.get_member(principal, member_id=member_id)
            return

        def admit(connection: Connection) -> str:
            root = MemberRepository(connection).root_of(member_id) or _NO_MEMBER
            return self._admit(connection, principal, member_code, store_id=store_id, member_root=root)

        self._db.run(admit)

    @staticmethod
    def _root(repo: MemberRepository, member_id: str) -> str:
        root = repo.root_of(member_id)
        if root is None:
            raise NotFound("member", member_id)
        return root

    @staticmethod
    def _same_source(
        repo: MemberRepository,
        done: Entry,
        member_id: str,
        *,
        spend: int | None = None,
        points: int | None = None,
    ) -> None:
        """A retry must be the same request: same member (or one merged with it), same amount."""
        same_member = repo.root_of(done.member_id) == repo.root_of(member_id)
        same_amount = (spend is None or done.spend_cents == spend) and (
            points is None or done.points == points
        )
        if not (same_member and same_amount):
            raise InvalidArgument(
                "source_id", "was used for another member or amount", reason="SOURCE_ID_REUSED"
            )
