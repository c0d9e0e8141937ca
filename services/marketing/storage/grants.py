"""Grants, one per member and occurrence of a campaign, and the claims on scheduled runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from quanyu.db import from_row
from quanyu.unit_of_work import ConcurrentChange
from services.marketing.domain import Counters
from services.marketing.ports import GrantRecord, Outcome, Reach, RunClaim
from services.marketing.storage.sql import insert_new
from services.marketing.storage.tables import (
    campaign_counters,
    completed_orders,
    grants,
    member_turns,
    run_claims,
)


class GrantRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection
        # The members' turns this transaction holds, by campaign and holder.
        self._turns: set[tuple[str, str]] = set()

    def get(self, slot: str) -> GrantRecord | None:
        row = self._db.execute(select(grants).where(grants.c.slot == slot)).first()
        return _grant(row) if row else None

    def add(self, grant: GrantRecord) -> None:
        # A plain insert: a concurrent decision for the slot fails it, and the unit of work runs
        # the use case again, which then finds this one's row.
        self._db.execute(grants.insert().values(**_columns(grant)))

    def lock_member(self, campaign_id: str, holder_id: str) -> None:
        # SQLite lets one writer in at a time, which already gives each member their turn (as in
        # lock_members); a turn taken once is held till commit, so a call's later events for the
        # same member and campaign have it already.
        if self._db.dialect.name != "postgresql" or (campaign_id, holder_id) in self._turns:
            return
        self._turns.add((campaign_id, holder_id))
        insert_new(self._db, member_turns, {"campaign_id": campaign_id, "holder_id": holder_id, "turns": 0})
        # The update takes the row's lock until commit (SQLite's write lock covers it anyway).
        self._db.execute(
            update(member_turns)
            .where(member_turns.c.campaign_id == campaign_id, member_turns.c.holder_id == holder_id)
            .values(turns=member_turns.c.turns + 1)
        )

    def lock_members(self, campaign_id: str, holder_ids: Sequence[str]) -> None:
        # SQLite lets one writer in at a time (every write transaction begins IMMEDIATE), which
        # already gives each member their turn; writing a turn row per member of a page there
        # would only slow a run over a million members.
        if self._db.dialect.name != "postgresql" or not holder_ids:
            return
        ordered = sorted(set(holder_ids))
        self._db.execute(
            postgresql.insert(member_turns).on_conflict_do_nothing(),
            [{"campaign_id": campaign_id, "holder_id": h, "turns": 0} for h in ordered],
        )
        # In member id order, the order every grant takes a member's turn in: a page and an event
        # for one of its members queue on that member's row rather than deadlock.
        for chunk in _chunks(ordered):
            self._db.execute(
                select(member_turns.c.holder_id)
                .where(member_turns.c.campaign_id == campaign_id, member_turns.c.holder_id.in_(chunk))
                .order_by(member_turns.c.holder_id)
                .with_for_update()
            ).all()

    def decided(self, slots: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(slots)):
            found.update(self._db.execute(select(grants.c.slot).where(grants.c.slot.in_(chunk))).scalars())
        return found

    def counts_for(
        self, campaign_id: str, holder_ids: Sequence[str], since: datetime | None
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        for chunk in _chunks(list(holder_ids)):
            query = (
                select(grants.c.holder_id, func.count())
                .where(
                    grants.c.campaign_id == campaign_id,
                    grants.c.holder_id.in_(chunk),
                    grants.c.outcome == Outcome.GRANTED.value,
                )
                .group_by(grants.c.holder_id)
            )
            if since is not None:
                query = query.where(grants.c.grant_time > since)
            counts.update({row[0]: int(row[1]) for row in self._db.execute(query)})
        return counts

    def reached(self, campaign_id: str, holder_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(holder_ids)):
            query = (
                select(grants.c.holder_id)
                .where(
                    grants.c.campaign_id == campaign_id,
                    grants.c.holder_id.in_(chunk),
                    grants.c.outcome.in_([Outcome.GRANTED.value, Outcome.HELD_OUT.value]),
                )
                .distinct()
            )
            found.update(self._db.execute(query).scalars())
        return found

    def add_many(self, records: Sequence[GrantRecord]) -> None:
        if records:
            self._db.execute(grants.insert(), [_columns(g) for g in records])

    def count_for(self, campaign_id: str, holder_id: str, since: datetime | None) -> int:
        query = select(func.count()).where(
            grants.c.campaign_id == campaign_id,
            grants.c.holder_id == holder_id,
            grants.c.outcome == Outcome.GRANTED.value,
        )
        if since is not None:
            query = query.where(grants.c.grant_time > since)
        return int(self._db.execute(query).scalar_one())

    def move_holder(self, holder_id: str, survivor_id: str) -> int:
        moved = self._db.execute(
            update(grants).where(grants.c.holder_id == holder_id).values(holder_id=survivor_id)
        )
        return int(moved.rowcount)

    def counters(self, campaign_id: str, holder_id: str, since: datetime | None) -> Counters:
        row = self._db.execute(
            select(campaign_counters).where(campaign_counters.c.campaign_id == campaign_id)
        ).first()
        member = self.count_for(campaign_id, holder_id, since)
        if row is None:
            return Counters(member_grants=member)
        return Counters(member, row.grants, row.points, row.coupon_cents)

    def of_member(self, campaign_id: str, member_id: str) -> list[GrantRecord]:
        rows = self._db.execute(
            select(grants)
            .where(grants.c.campaign_id == campaign_id, grants.c.member_id == member_id)
            .order_by(grants.c.grant_time, grants.c.slot)
        )
        return [_grant(row) for row in rows]

    def count(self, campaign_id: str, outcome: Outcome) -> int:
        query = select(func.count(func.distinct(grants.c.member_id))).where(
            grants.c.campaign_id == campaign_id, grants.c.outcome == outcome.value
        )
        return int(self._db.execute(query).scalar_one())

    def reaches(self, campaign_id: str, outcome: Outcome, window: timedelta) -> list[Reach]:
        first = (
            select(grants.c.member_id, func.min(grants.c.grant_time).label("reach_time"))
            .where(grants.c.campaign_id == campaign_id, grants.c.outcome == outcome.value)
            .group_by(grants.c.member_id)
            .subquery()
        )
        rows = self._db.execute(
            select(
                first.c.member_id,
                first.c.reach_time,
                completed_orders.c.complete_time,
                completed_orders.c.total_cents,
            )
            .select_from(first)
            .outerjoin(
                completed_orders,
                and_(
                    completed_orders.c.member_id == first.c.member_id,
                    completed_orders.c.complete_time >= first.c.reach_time,
                    completed_orders.c.cancelled.is_(False),
                ),
            )
            .order_by(first.c.member_id, completed_orders.c.complete_time)
        )
        found: dict[str, tuple[datetime, list[tuple[datetime, int]]]] = {}
        for row in rows:
            reach_time = _aware(row.reach_time)
            _, orders = found.setdefault(row.member_id, (reach_time, []))
            # The window is applied here: date arithmetic is spelled differently by each database.
            if row.complete_time is not None and row.complete_time < reach_time + window:
                orders.append((row.complete_time, int(row.total_cents)))
        return [Reach(member, at, tuple(orders)) for member, (at, orders) in found.items()]


def _aware(value: datetime) -> datetime:
    # MIN() of a column loses its type on some drivers; the value is UTC either way.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# Bound parameters per IN list: well under SQLite's limit of 32,766, whatever the page size.
_CHUNK = 5000


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]


def _columns(grant: GrantRecord) -> dict[str, Any]:
    return {
        "slot": grant.slot,
        "grant_key": grant.grant_key,
        "campaign_id": grant.campaign_id,
        "version": grant.version,
        "member_id": grant.member_id,
        "holder_id": grant.holder_id,
        "occurrence_id": grant.occurrence_id,
        "outcome": grant.outcome.value,
        "limit_name": grant.limit_name,
        "points": grant.points,
        "coupon_cents": grant.coupon_cents,
        "grant_time": grant.grant_time,
    }


def _grant(row: Any) -> GrantRecord:
    return from_row(GrantRecord, row, outcome=Outcome(row.outcome))


class RunRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def claim(
        self, campaign_id: str, run_key: str, who: str, now: datetime, lease: timedelta
    ) -> RunClaim | None:
        fresh = {
            "campaign_id": campaign_id,
            "run_key": run_key,
            "claimed_by": who,
            "lease_until": now + lease,
            "cursor": "",
            "done": False,
            "attempts": 1,
            "create_time": now,
            "update_time": now,
        }
        if not insert_new(self._db, run_claims, fresh):
            c = run_claims.c
            # Taken over only once its holder's lease has lapsed (or by the holder itself).
            taken = self._db.execute(
                update(run_claims)
                .where(
                    c.campaign_id == campaign_id,
                    c.run_key == run_key,
                    c.done.is_(False),
                    or_(c.claimed_by == who, c.lease_until <= now),
                )
                .values(claimed_by=who, lease_until=now + lease, attempts=c.attempts + 1, update_time=now)
            )
            if taken.rowcount != 1:
                return None
        return self.get(campaign_id, run_key)

    def advance(self, claim: RunClaim, cursor: str, now: datetime, lease: timedelta) -> RunClaim:
        self._move(claim, now, cursor=cursor, lease_until=now + lease)
        return RunClaim(
            claim.campaign_id, claim.run_key, claim.claimed_by, now + lease, cursor, False, claim.attempts
        )

    def finish(self, claim: RunClaim, now: datetime) -> None:
        self._move(claim, now, done=True)

    def get(self, campaign_id: str, run_key: str) -> RunClaim | None:
        row = self._db.execute(
            select(run_claims).where(run_claims.c.campaign_id == campaign_id, run_claims.c.run_key == run_key)
        ).first()
        if row is None:
            return None
        return RunClaim(
            row.campaign_id, row.run_key, row.claimed_by, row.lease_until, row.cursor, row.done, row.attempts
        )

    def _move(self, claim: RunClaim, now: datetime, **values: object) -> None:
        c = run_claims.c
        # Only while the claim is still this claimant's: one that lost its lease to another
        # replica must stop rather than write over the other's progress.
        moved = self._db.execute(
            update(run_claims)
            .where(
                c.campaign_id == claim.campaign_id,
                c.run_key == claim.run_key,
                c.claimed_by == claim.claimed_by,
                c.attempts == claim.attempts,
                c.done.is_(False),
            )
            .values(update_time=now, **values)
        )
        if moved.rowcount != 1:
            raise ConcurrentChange(f"run {claim.run_key} of campaign {claim.campaign_id}")
