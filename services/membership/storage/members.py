"""Members (with their tags, the customers leading to them and the merges that folded them),
their member codes, and the guides of stores, loaded and saved as domain objects."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from services.membership.domain import Guide, Member, MemberCode, MergeRecord, Stage
from services.membership.domain.known import MemberState
from services.membership.ports import Segment
from services.membership.storage.tables import (
    coupons,
    guides,
    member_codes,
    member_customers,
    member_merges,
    member_tags,
    members,
    point_lots,
)

_STAGE_TIME_COLUMN = {
    Stage.INTEREST: "interest_time",
    Stage.PURCHASE: "purchase_time",
    Stage.LOYALTY: "loyalty_time",
}


# A member's fields that are columns of its row by the same name.
_MEMBER_COLUMNS = tuple(f.name for f in fields(Member) if f.name not in {"stage", "stage_times", "tags"})
_MERGE_FIELDS = tuple(f.name for f in fields(MergeRecord))


def _member(row: Any, tags: list[str]) -> Member:
    return Member(
        **{name: getattr(row, name) for name in _MEMBER_COLUMNS},
        stage=Stage(row.stage),
        stage_times={
            Stage.AWARENESS: row.enroll_time,
            **{stage: getattr(row, column) for stage, column in _STAGE_TIME_COLUMN.items()},
        },
        tags=tags,
    )


def _changing(member: Member) -> dict[str, Any]:
    """The columns of a member row the use cases change."""
    values: dict[str, Any] = {
        "customer_id": member.customer_id,
        "tier": member.tier,
        "points_balance": member.points_balance,
        "home_store_id": member.home_store_id,
        "guide_id": member.guide_id,
        "stage": int(member.stage),
        "lifetime_spend_cents": member.lifetime_spend_cents,
        "referrer_member_id": member.referrer_member_id,
        "last_purchase_time": member.last_purchase_time,
        "birthday": member.birthday,
    }
    for stage, column in _STAGE_TIME_COLUMN.items():
        values[column] = member.stage_times.get(stage)
    return values


# The reads behind every enrolment, lookup and points movement, built once: only their
# parameters change per call, and a statement built per call costs more to construct and key for
# the cache than to run.
_ROOT_OF = select(members.c.root_member_id).where(members.c.member_id == bindparam("member"))
_MEMBER_OF_CUSTOMER = select(member_customers.c.member_id).where(
    member_customers.c.customer_id == bindparam("customer")
)
_MEMBER = select(members).where(members.c.member_id == bindparam("member"))
_MEMBER_LOCKED = _MEMBER.with_for_update()
# Also takes the member's row lock: two changes of one member are told in the order they committed.
_NEXT_VERSION = (
    update(members)
    .where(members.c.member_id == bindparam("member"))
    .values(version=members.c.version + 1)
    .returning(
        members.c.version,
        members.c.customer_id,
        members.c.root_member_id,
        members.c.home_store_id,
        members.c.guide_id,
    )
)
# Sets the columns named by the parameters it is given (all but the key).
_SAVE_MEMBER = update(members).where(members.c.member_id == bindparam("saved_member"))
_TAGS_OF = (
    select(member_tags.c.tag)
    .where(member_tags.c.member_id == bindparam("member"))
    .order_by(member_tags.c.tag)
)
_GROUP = select(members.c.member_id).where(members.c.root_member_id == bindparam("root"))


class MemberRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    # --- finding -------------------------------------------------------------------------------

    def root_of(self, member_id: str) -> str | None:
        root: str | None = self._db.execute(_ROOT_OF, {"member": member_id}).scalar_one_or_none()
        return root

    def roots_of(self, member_ids: Collection[str]) -> dict[str, str]:
        found = self._db.execute(
            select(members.c.member_id, members.c.root_member_id).where(members.c.member_id.in_(member_ids))
        )
        return {member_id: root for member_id, root in found}

    def root_of_customer(self, customer_id: str) -> str | None:
        member_id = self._db.execute(_MEMBER_OF_CUSTOMER, {"customer": customer_id}).scalar_one_or_none()
        return self.root_of(member_id) if member_id else None

    def get(self, member_id: str, *, lock: bool = False) -> Member | None:
        row = self._db.execute(_MEMBER_LOCKED if lock else _MEMBER, {"member": member_id}).one_or_none()
        if row is None:
            return None
        tags = list(self._db.execute(_TAGS_OF, {"member": member_id}).scalars())
        return _member(row, tags)

    def group(self, root_member_id: str) -> list[str]:
        return list(self._db.execute(_GROUP, {"root": root_member_id}).scalars())

    # --- writing -------------------------------------------------------------------------------

    def add(self, member: Member) -> None:
        # The customer's key first: a concurrent enrolment of the same customer fails here.
        self._db.execute(
            insert(member_customers).values(customer_id=member.customer_id, member_id=member.member_id)
        )
        self._db.execute(
            insert(members).values(
                member_id=member.member_id,
                root_member_id=member.member_id,
                enrolled_channel=member.enrolled_channel,
                enroll_time=member.enroll_time,
                merged=False,
                update_time=member.enroll_time,
                **_changing(member),
            )
        )

    def save(self, member: Member, now: datetime) -> None:
        self._db.execute(
            _SAVE_MEMBER, {**_changing(member), "update_time": now, "saved_member": member.member_id}
        )

    def add_tags(self, member_id: str, tags: Sequence[str]) -> None:
        have = set(
            self._db.execute(select(member_tags.c.tag).where(member_tags.c.member_id == member_id)).scalars()
        )
        fresh = [{"member_id": member_id, "tag": tag} for tag in tags if tag not in have]
        if fresh:
            self._db.execute(insert(member_tags), fresh)

    def remove_tags(self, member_id: str, tags: Sequence[str]) -> None:
        if tags:
            self._db.execute(
                member_tags.delete().where(member_tags.c.member_id == member_id, member_tags.c.tag.in_(tags))
            )

    def state_for_orders(self, member_id: str) -> MemberState:
        row = self._db.execute(_NEXT_VERSION, {"member": member_id}).one()
        return MemberState(
            member_id, int(row.version), row.customer_id, row.root_member_id, row.home_store_id, row.guide_id
        )

    def point_customer(self, customer_id: str, member_id: str) -> None:
        moved = self._db.execute(
            update(member_customers)
            .where(member_customers.c.customer_id == customer_id)
            .values(member_id=member_id)
        )
        if moved.rowcount == 0:
            self._db.execute(insert(member_customers).values(customer_id=customer_id, member_id=member_id))

    def fold_into(self, survivor: Member, merged: Member, now: datetime) -> None:
        self._db.execute(
            update(members)
            .where(members.c.root_member_id == merged.member_id)
            .values(root_member_id=survivor.member_id, update_time=now)
        )
        self._db.execute(
            update(members)
            .where(members.c.member_id == merged.member_id)
            .values(merged=True, points_balance=0, update_time=now)
        )
        self._db.execute(
            update(point_lots)
            .where(point_lots.c.root_member_id == merged.member_id)
            .values(root_member_id=survivor.member_id)
        )
        self._db.execute(
            update(coupons)
            .where(coupons.c.member_id == merged.member_id, coupons.c.redeemed_order_id.is_(None))
            .values(member_id=survivor.member_id)
        )
        self.add_tags(survivor.member_id, merged.tags)

    def record_merge(self, merge: MergeRecord, now: datetime) -> None:
        self._db.execute(insert(member_merges).values(**asdict(merge), create_time=now))

    def merge_request(self, request_id: str) -> MergeRecord | None:
        row = self._db.execute(
            select(member_merges).where(member_merges.c.request_id == request_id)
        ).one_or_none()
        if row is None:
            return None
        return MergeRecord(**{name: getattr(row, name) for name in _MERGE_FIELDS})

    # --- segments ------------------------------------------------------------------------------

    def segment(self, filters: Segment, after: str, limit: int) -> list[str]:
        query = select(members.c.member_id).where(members.c.merged.is_(False), members.c.member_id > after)
        for column in ("tier", "home_store_id", "guide_id"):
            if filters.get(column):
                query = query.where(members.c[column] == filters[column])
        if filters.get("stage"):
            query = query.where(members.c.stage == int(filters["stage"]))
        if filters.get("tag"):
            query = query.where(
                members.c.member_id.in_(
                    select(member_tags.c.member_id).where(member_tags.c.tag == filters["tag"])
                )
            )
        return list(self._db.execute(query.order_by(members.c.member_id).limit(limit)).scalars())

    def stage_counts(self, home_store_id: str) -> dict[Stage, int]:
        query = (
            select(members.c.stage, func.count()).where(members.c.merged.is_(False)).group_by(members.c.stage)
        )
        if home_store_id:
            query = query.where(members.c.home_store_id == home_store_id)
        return {Stage(stage): int(count) for stage, count in self._db.execute(query)}


_CODE = select(member_codes).where(member_codes.c.code_hash == bindparam("code"))
_BIND_CODE = (
    update(member_codes)
    .where(member_codes.c.code_hash == bindparam("code"), member_codes.c.store_id == "")
    .values(store_id=bindparam("store"))
)


class MemberCodeRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def add(self, code_hash: str, member_id: str, now: datetime, expire_time: datetime) -> None:
        # A member's lapsed codes go as a new one comes: the table holds a few rows per member.
        self._db.execute(
            member_codes.delete().where(
                member_codes.c.member_id == member_id, member_codes.c.expire_time <= now
            )
        )
        self._db.execute(
            insert(member_codes).values(
                code_hash=code_hash,
                member_id=member_id,
                store_id="",
                create_time=now,
                expire_time=expire_time,
            )
        )

    def get(self, code_hash: str) -> MemberCode | None:
        row = self._db.execute(_CODE, {"code": code_hash}).one_or_none()
        return MemberCode(row.member_id, row.expire_time, row.store_id) if row else None

    def bind(self, code_hash: str, store_id: str) -> MemberCode | None:
        # Tied to whichever store got there first, when two tried at once.
        self._db.execute(_BIND_CODE, {"code": code_hash, "store": store_id})
        return self.get(code_hash)


_GUIDE = select(guides).where(guides.c.guide_id == bindparam("guide"))


def _guide(row: Any) -> Guide:
    return Guide(row.guide_id, row.store_id, row.name, row.active)


class GuideRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def get(self, guide_id: str) -> Guide | None:
        row = self._db.execute(_GUIDE, {"guide": guide_id}).one_or_none()
        return _guide(row) if row else None

    def save(self, guide: Guide, now: datetime) -> None:
        values = {"store_id": guide.store_id, "name": guide.name, "active": guide.active, "update_time": now}
        changed = self._db.execute(update(guides).where(guides.c.guide_id == guide.guide_id).values(**values))
        if changed.rowcount == 0:
            self._db.execute(insert(guides).values(guide_id=guide.guide_id, create_time=now, **values))

    def page(self, store_id: str, after: str, limit: int) -> list[Guide]:
        query = select(guides).where(guides.c.guide_id > after)
        if store_id:
            query = query.where(guides.c.store_id == store_id)
        return [_guide(r) for r in self._db.execute(query.order_by(guides.c.guide_id).limit(limit))]
