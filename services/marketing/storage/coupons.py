"""The coupons issued for the campaigns' grants, kept by their code."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from services.marketing.ports import IssuedCoupon
from services.marketing.storage.tables import issued_coupons


class CouponRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def add_issued(self, issued: Sequence[IssuedCoupon], now: datetime) -> None:
        if not issued:
            return
        dialect = postgresql if self._db.dialect.name == "postgresql" else sqlite
        # A batch delivered again is answered with the same coupons: their rows are there already.
        self._db.execute(
            dialect.insert(issued_coupons).on_conflict_do_nothing(),
            [
                {
                    "code": i.code,
                    "campaign_id": i.campaign_id,
                    "member_id": i.member_id,
                    "grant_key": i.grant_key,
                    "issue_time": now,
                    "redeemed_order_id": "",
                }
                for i in issued
            ],
        )

    def redeem(self, code: str, order_id: str) -> bool:
        done = self._db.execute(
            update(issued_coupons).where(issued_coupons.c.code == code).values(redeemed_order_id=order_id)
        )
        return bool(done.rowcount)

    def counts(self, campaign_id: str) -> tuple[int, int]:
        c = issued_coupons.c
        row = self._db.execute(
            select(func.count(), func.count().filter(c.redeemed_order_id != "")).where(
                c.campaign_id == campaign_id
            )
        ).one()
        return int(row[0]), int(row[1])
