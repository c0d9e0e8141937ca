"""The points ledger: append-only entries, the lots a member's balance is made of (points earned
together, expiring together), and every movement on them — earning, a referral bonus, redeeming
oldest lots first, expiry, and taking an earn or a redemption back.

A `PointsAccount` is a member with the lots loaded for one use case. Each movement changes the
member's balance and the lots alike and leaves a `Posting`: the entry the ledger appends, the
points it takes from which lots, and whether it opens a lot of its own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from quanyu.errors import FailedPrecondition, InvalidArgument
from services.membership.domain.members import Member
from services.membership.domain.programme import Programme


class EntryKind(StrEnum):
    EARN = "EARN"
    REDEEM = "REDEEM"
    REVERSAL = "REVERSAL"
    EXPIRE = "EXPIRE"
    ADJUST = "ADJUST"
    REFERRAL_BONUS = "REFERRAL_BONUS"


# What a source's reversal takes back.
REVERSIBLE = (EntryKind.EARN, EntryKind.REFERRAL_BONUS, EntryKind.REDEEM)


@dataclass(frozen=True)
class Entry:
    entry_id: str
    member_id: str
    kind: EntryKind
    points: int
    balance_after: int
    source_id: str
    store_id: str
    create_time: datetime
    expire_time: datetime | None
    spend_cents: int
    spend_time: datetime | None
    shortfall_points: int
    seq: int
    owner: str = ""

    def require_same_request(
        self, same_member: bool, *, spend: int | None = None, points: int | None = None
    ) -> None:
        """A retry must be the same request: same member (or one merged with it), same amount."""
        same_amount = (spend is None or self.spend_cents == spend) and (
            points is None or self.points == points
        )
        if not (same_member and same_amount):
            raise InvalidArgument(
                "source_id", "was used for another member or amount", reason="SOURCE_ID_REUSED"
            )


def source_key(kind: str, owner: str, source_id: str) -> str:
    """The ledger key of a caller's source id: the platform's own keep the shape they always had;
    a till's or a channel's carry their owner, its length first, so one caller's ids never name
    another's entries however either is spelt (store `A:1` with source `X` and store `A` with
    source `1:X` are two keys)."""
    return f"{kind}:{source_id}" if not owner else f"{kind}@{len(owner)}:{owner}:{source_id}"


def grant_key(source_id: str) -> str:
    """The ledger key of a grant: a source id grants once."""
    return f"grant:{source_id}"


@dataclass(frozen=True)
class Lot:
    """Points earned together that expire together: what a redemption draws from, oldest first."""

    lot_id: str
    expire_time: datetime
    remaining: int


def draw_oldest_first(lots: Iterable[Lot], points: int, at: datetime) -> list[tuple[str, int]]:
    """Which live lots pay for `points`, soonest to expire first: [(lot_id, points taken)].

    The caller has checked the balance; lots already past their expiry are not drawn from (the
    expiry run writes them off).
    """
    taken: list[tuple[str, int]] = []
    left = points
    for lot in sorted(lots, key=lambda lot: (lot.expire_time, lot.lot_id)):
        if left == 0:
            break
        if lot.remaining <= 0 or lot.expire_time <= at:
            continue
        take = min(left, lot.remaining)
        taken.append((lot.lot_id, take))
        left -= take
    if left:
        raise ValueError(f"the live lots hold {points - left} points, not {points}")
    return taken


@dataclass(frozen=True)
class Clawback:
    """Taking back an earn: what is still unspent in its lot comes back; what was already spent
    (or expired) is recorded as the shortfall, so the balance never goes negative."""

    recovered: int
    shortfall: int


def claw_back(earned: int, unspent: int) -> Clawback:
    recovered = max(0, min(earned, unspent))
    return Clawback(recovered=recovered, shortfall=earned - recovered)


@dataclass(frozen=True)
class Posting:
    """One movement as the ledger records it: the entry (its id and sequence are the ledger's),
    the points taken from lots, and the lot it opens under its own id when `lot_expire_time` is
    set (in the account of `root_member_id`)."""

    member_id: str
    root_member_id: str
    kind: EntryKind
    points: int
    balance_after: int
    source_id: str
    store_id: str
    key: str
    create_time: datetime
    owner: str = ""
    expire_time: datetime | None = None
    spend_cents: int = 0
    spend_time: datetime | None = None
    reverses: str | None = None
    shortfall: int = 0
    takes: tuple[tuple[str, int], ...] = ()
    lot_expire_time: datetime | None = None

    @property
    def draws(self) -> tuple[tuple[str, int], ...]:
        """Which lots paid for a redemption, so that giving it back restores their expiry."""
        return self.takes if self.kind is EntryKind.REDEEM else ()


class PointsAccount:
    """A member's points with the lots one use case needs: the lapsed ones to write off, the live
    ones to redeem from, the one an earn opened to claw back from."""

    def __init__(self, member: Member, lots: Iterable[Lot] = ()) -> None:
        self.member = member
        self.lots = {lot.lot_id: lot for lot in lots}

    @property
    def balance(self) -> int:
        return self.member.points_balance

    def _take(self, lot_id: str, points: int) -> None:
        lot = self.lots[lot_id]
        self.lots[lot_id] = replace(lot, remaining=lot.remaining - points)

    def _move(
        self, kind: EntryKind, points: int, *, source_id: str, store_id: str, key: str, at: datetime
    ) -> Posting:
        """Change the balance by `points` (signed): the posting of that, lots untouched so far."""
        self.member.points_balance += points
        return Posting(
            member_id=self.member.member_id,
            root_member_id=self.member.member_id,
            kind=kind,
            points=points,
            balance_after=self.balance,
            source_id=source_id,
            store_id=store_id,
            key=key,
            create_time=at,
        )

    def expire(self, as_of: datetime, now: datetime) -> list[Posting]:
        """Write off what is left in every lot that lapsed by `as_of`, soonest first."""
        lapsed = sorted(
            (lot for lot in self.lots.values() if lot.remaining > 0 and lot.expire_time <= as_of),
            key=lambda lot: (lot.expire_time, lot.lot_id),
        )
        postings = []
        for lot in lapsed:
            self._take(lot.lot_id, lot.remaining)
            posting = self._move(
                EntryKind.EXPIRE,
                -lot.remaining,
                source_id=lot.lot_id,
                store_id="",
                key=f"expire:{lot.lot_id}",
                at=now,
            )
            postings.append(replace(posting, takes=((lot.lot_id, lot.remaining),)))
        return postings

    def earn(
        self,
        programme: Programme,
        *,
        spend_cents: int,
        source_id: str,
        store_id: str,
        at: datetime,
        earned_today: int,
        rolling_spend_cents: int,
    ) -> Posting:
        """Points for a spend at the tier the member had, within the day's caps, expiring after
        the programme's validity; the spend then counts toward tier and stage."""
        points = programme.earnable(programme.points_for(spend_cents, self.member.tier, at), earned_today)
        posting = self._credit(
            programme,
            EntryKind.EARN,
            points,
            source_id=source_id,
            store_id=store_id,
            key=f"earn:{source_id}",
            at=at,
        )
        self.member.purchase(spend_cents, at, programme, rolling_spend_cents + spend_cents)
        return replace(posting, spend_cents=spend_cents, spend_time=at)

    def grant(self, programme: Programme, points: int, *, source_id: str, at: datetime) -> Posting:
        """Points given rather than earned (a campaign's reward): an ADJUST entry whose points
        open a lot that expires like earned ones. No spend, so no tier or stage moves."""
        if points <= 0:
            raise ValueError("a grant credits points")
        return self._credit(
            programme,
            EntryKind.ADJUST,
            points,
            source_id=source_id,
            store_id="",
            key=grant_key(source_id),
            at=at,
        )

    def referral_bonus(
        self, programme: Programme, points: int, *, referred_member_id: str, source_id: str, at: datetime
    ) -> Posting:
        """The referrer's bonus for a referred member's first purchase, once per referred member."""
        key = f"referral:{referred_member_id}"
        return self._credit(
            programme, EntryKind.REFERRAL_BONUS, points, source_id=source_id, store_id="", key=key, at=at
        )

    def _credit(
        self,
        programme: Programme,
        kind: EntryKind,
        points: int,
        *,
        source_id: str,
        store_id: str,
        key: str,
        at: datetime,
    ) -> Posting:
        """Points that expire after the programme's validity, in a lot of their own (when any)."""
        posting = self._move(kind, points, source_id=source_id, store_id=store_id, key=key, at=at)
        expire = programme.expiry(at)
        return replace(posting, expire_time=expire, lot_expire_time=expire if points > 0 else None)

    def redeem(
        self, points: int, *, source_id: str, store_id: str, key: str, owner: str, at: datetime
    ) -> Posting:
        """Spend `points` from the live lots, soonest to expire first."""
        if self.balance < points:
            raise FailedPrecondition(
                f"the member has {self.balance} points, not {points}",
                reason="INSUFFICIENT_POINTS",
                metadata={"balance": str(self.balance)},
            )
        draws = draw_oldest_first(self.lots.values(), points, at)
        for lot_id, taken in draws:
            self._take(lot_id, taken)
        posting = self._move(
            EntryKind.REDEEM, -points, source_id=source_id, store_id=store_id, key=key, at=at
        )
        return replace(posting, owner=owner, takes=tuple(draws))

    def reverse(
        self, entry: Entry, programme: Programme, at: datetime, paid_from: Sequence[Lot] = ()
    ) -> Posting:
        """Take `entry` back: a redemption's points return, keeping the expiry of the soonest of
        the lots that paid for it (`paid_from`); an earn or bonus is clawed back from its own lot
        as far as its points are unspent, and its spend no longer counts."""
        if entry.kind is EntryKind.REDEEM:
            expire = min((lot.expire_time for lot in paid_from), default=programme.expiry(at))
            return replace(
                self._reversal(entry, -entry.points, at), expire_time=expire, lot_expire_time=expire
            )
        lot = self.lots.get(entry.entry_id)
        clawback = claw_back(entry.points, lot.remaining if lot else 0)
        if clawback.recovered:
            self._take(entry.entry_id, clawback.recovered)
        self.member.lifetime_spend_cents -= entry.spend_cents
        return replace(
            self._reversal(entry, -clawback.recovered, at),
            spend_cents=-entry.spend_cents,
            spend_time=entry.spend_time,
            shortfall=clawback.shortfall,
            takes=((entry.entry_id, clawback.recovered),) if clawback.recovered else (),
        )

    def _reversal(self, entry: Entry, points: int, at: datetime) -> Posting:
        """The entry's own member, source and owner: a reversal stands beside what it undoes."""
        posting = self._move(
            EntryKind.REVERSAL,
            points,
            source_id=entry.source_id,
            store_id=entry.store_id,
            key=f"reverse:{entry.entry_id}",
            at=at,
        )
        return replace(posting, member_id=entry.member_id, owner=entry.owner, reverses=entry.entry_id)
