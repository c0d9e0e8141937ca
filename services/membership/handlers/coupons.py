"""Use cases of coupons: issuing one per request id, redeeming it for one order, giving it back."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from quanyu.auth import Principal
from quanyu.errors import FailedPrecondition, NotFound
from services.membership.domain import Coupon, requests
from services.membership.domain.coupons import (
    CODE_ALPHABET,
    CODE_LENGTH,
    already_redeemed,
    coupon_fingerprint,
)
from services.membership.handlers.access import is_front
from services.membership.handlers.base import Tx, UseCases
from services.membership.ports import CouponListing


class CouponCases(UseCases):
    def issue_coupon(
        self,
        member_id: str,
        discount_cents: int,
        min_spend_cents: int,
        expire_time: datetime | None,
        request_id: str,
        *,
        campaign_id: str = "",
    ) -> Coupon:
        now = self.clock()
        expire = requests.CouponIssue(
            member_id, discount_cents, min_spend_cents, expire_time, request_id, campaign_id
        ).checked(now)
        fingerprint = coupon_fingerprint(member_id, discount_cents, min_spend_cents, expire, campaign_id)

        def work(tx: Tx) -> Coupon:
            done = tx.stores.coupons.by_request(request_id)
            if done is not None:
                done.require_same_request(fingerprint)
                return done
            code = new_coupon_code()
            root = self._root(tx.stores, member_id)
            coupon = Coupon.issued(
                code,
                root,
                discount_cents=discount_cents,
                min_spend_cents=min_spend_cents,
                expire_time=expire,
                fingerprint=fingerprint,
                campaign_id=campaign_id,
                at=now,
            )
            tx.stores.coupons.issue(coupon, request_id, now)
            return coupon

        return self.uow.run(work)

    def list_coupons(
        self, principal: Principal, member_id: str, include_inactive: bool, requested: int, token: str
    ) -> tuple[list[Coupon], str]:
        """A member's coupons (and those of members merged into them), newest first: the usable
        ones, or with `include_inactive` every one. Read by whoever reaches the member."""
        requests.coupon_page(member_id, token)
        now = self.clock()

        def fetch(tx: Tx, position: dict[str, Any] | None, limit: int) -> list[Coupon]:
            group = tx.stores.members.group(self._root(tx.stores, member_id))
            before = (datetime.fromisoformat(position["time"]), str(position["code"])) if position else None
            return tx.stores.coupons.page(
                CouponListing(group, None if include_inactive else now, before, limit)
            )

        def check() -> None:
            # A channel its own customers' members, a till its own members: no member code here.
            self._reach(principal, member_id=member_id)

        query = {"member": member_id, "inactive": include_inactive}
        return self._page(
            principal, token, requested, query=query, fetch=fetch, position=_before, check=check
        )

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
        requests.coupon_redemption(
            self.programme,
            code=code,
            member_id=member_id,
            order_id=order_id,
            order_amount_cents=order_amount_cents,
            store_id=store_id,
            member_code=member_code,
        )
        store_id = self._may_spend(principal, member_id, member_code, store_id)

        def work(tx: Tx) -> tuple[Coupon, int]:
            coupons, members = tx.stores.coupons, tx.stores.members
            coupon = coupons.get(code)
            owned = coupon is not None and members.root_of(coupon.member_id) == members.root_of(member_id)
            if coupon is None or (not owned and is_front(principal)):
                # Another member's coupon is nothing to a till or a channel, not even known.
                raise NotFound("coupon", code)
            if not owned:
                raise FailedPrecondition("the coupon belongs to another member", reason="COUPON_NOT_OWNED")
            discount = coupon.discount_for(order_amount_cents)
            if coupon.redeemed_by(order_id, store_id):
                return coupon, discount
            now = self.clock()
            coupon.require_redeemable(order_amount_cents, now)
            if not coupons.redeem(code, order_id, store_id, now):
                # A concurrent call took the coupon since it was read: when that was a copy of this
                # call (the same order), the redemption stands and this call answers with it.
                taken = coupons.get(code)
                if taken is not None and taken.redeemed_order_id == order_id:
                    return taken, discount
                raise already_redeemed()
            redeemed = coupons.get(code)
            assert redeemed is not None
            return redeemed, discount

        return self.uow.run(work)

    def release_coupon(self, code: str, order_id: str) -> Coupon:
        requests.coupon_release(code, order_id)

        def work(tx: Tx) -> Coupon:
            coupons = tx.stores.coupons
            if coupons.get(code) is None:
                raise NotFound("coupon", code)
            coupons.release(code, order_id)
            released = coupons.get(code)
            assert released is not None
            return released

        return self.uow.run(work)


def new_coupon_code() -> str:
    # One read of random bytes rather than a call per character (a campaign issues a million): a
    # byte picks a character without bias, as 256 is a multiple of the alphabet's 32.
    return "".join(CODE_ALPHABET[byte % len(CODE_ALPHABET)] for byte in secrets.token_bytes(CODE_LENGTH))


def _before(coupon: Coupon) -> dict[str, str]:
    assert coupon.create_time is not None
    return {"time": coupon.create_time.isoformat(), "code": coupon.code}
