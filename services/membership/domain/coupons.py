"""Coupons: issued to a member once per request id, taken by one order at a time, given back when
that order is cancelled."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from quanyu.errors import FailedPrecondition, InvalidArgument

# Base32 without look-alikes (0/O, 1/I): a code a cashier can read off a phone and type.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 12


@dataclass(frozen=True)
class Coupon:
    code: str
    member_id: str
    discount_cents: int
    min_spend_cents: int
    expire_time: datetime
    redeemed_order_id: str | None
    request_fingerprint: str
    redeemed_store_id: str = ""
    campaign_id: str = ""
    create_time: datetime | None = None  # when it was issued

    @classmethod
    def issued(
        cls,
        code: str,
        member_id: str,
        *,
        discount_cents: int,
        min_spend_cents: int,
        expire_time: datetime,
        fingerprint: str,
        campaign_id: str = "",
        at: datetime | None = None,
    ) -> Coupon:
        """A fresh coupon, free to redeem; `fingerprint` is the request's (coupon_fingerprint)."""
        return cls(
            code,
            member_id,
            discount_cents,
            min_spend_cents,
            expire_time,
            None,
            fingerprint,
            campaign_id=campaign_id,
            create_time=at,
        )

    def active(self, now: datetime) -> bool:
        """Still usable: not redeemed and not expired."""
        return self.redeemed_order_id is None and self.expire_time > now

    def require_same_request(self, fingerprint: str) -> None:
        if self.request_fingerprint != fingerprint:
            raise InvalidArgument("request_id", "was used for a different coupon", reason="REQUEST_ID_REUSED")

    def discount_for(self, order_amount_cents: int) -> int:
        return min(self.discount_cents, order_amount_cents)

    def redeemed_by(self, order_id: str, store_id: str) -> bool:
        """Whether this very order (at this store) holds the coupon already: a retry."""
        return self.redeemed_order_id == order_id and self.redeemed_store_id == store_id

    def require_redeemable(self, order_amount_cents: int, now: datetime) -> None:
        """Free, unexpired, and the order spends enough."""
        if self.redeemed_order_id is not None:
            raise already_redeemed()
        if self.expire_time <= now:
            raise FailedPrecondition("the coupon has expired", reason="COUPON_EXPIRED")
        if order_amount_cents < self.min_spend_cents:
            raise FailedPrecondition(
                f"the coupon needs an order of at least {self.min_spend_cents} fen",
                reason="MIN_SPEND_NOT_MET",
            )


def already_redeemed() -> FailedPrecondition:
    return FailedPrecondition("the coupon was used by another order", reason="COUPON_ALREADY_REDEEMED")


def coupon_fingerprint(
    member_id: str, discount_cents: int, min_spend_cents: int, expire_time: datetime, campaign_id: str = ""
) -> str:
    """What an IssueCoupon request asked for: a retry under its request id must ask the same. A
    coupon of no campaign keeps the fingerprint coupons had before campaigns."""
    asked = f"{member_id}|{discount_cents}|{min_spend_cents}|{expire_time.isoformat()}"
    if campaign_id:
        asked += f"|campaign:{campaign_id}"
    return hashlib.sha256(asked.encode()).hexdigest()
