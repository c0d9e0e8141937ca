"""Batch forms of the use cases a campaign's outbox delivers (AIP-233): each request is checked as
its single form checks it, any problem named by its path (`requests[3].expire_time`), and all of
them are applied in one transaction, or none. Retried, a batch changes nothing: each request is
idempotent by its own key, as the single call is."""

from __future__ import annotations

from collections.abc import Sequence

from quanyu.audit_record import Actor
from quanyu.errors import NotFound, Violations, in_request, of_request
from services.membership.domain import Coupon, Entry, Member, requests
from services.membership.domain.coupons import coupon_fingerprint
from services.membership.handlers.base import Tx
from services.membership.handlers.coupons import CouponCases, new_coupon_code
from services.membership.handlers.members import MemberCases
from services.membership.handlers.points import POINTS_GRANTED_ACTION, PointsCases


class BatchCases(MemberCases, PointsCases, CouponCases):
    def issue_coupons(self, issues: Sequence[requests.CouponIssue]) -> list[Coupon]:
        """Coupons for every request in one transaction; those a request id has issued already
        are answered as they are. Members are found and coupons written with one statement each
        (a campaign issues a million)."""
        now = self.clock()
        requests.batch(len(issues), lambda index, violations: issues[index].check(now, violations))
        fingerprints = [_fingerprint(issue) for issue in issues]

        def work(tx: Tx) -> list[Coupon]:
            done = tx.stores.coupons.by_requests({issue.request_id for issue in issues})
            roots = tx.stores.members.roots_of({i.member_id for i in issues if i.request_id not in done})
            fresh: list[tuple[Coupon, str]] = []
            answered = []
            for index, (issue, fingerprint) in enumerate(zip(issues, fingerprints, strict=True)):
                coupon = done.get(issue.request_id)
                if coupon is None:
                    root = roots.get(issue.member_id)
                    if root is None:
                        raise of_request(index, NotFound("member", issue.member_id))
                    assert issue.expire_time is not None
                    coupon = Coupon.issued(
                        new_coupon_code(),
                        root,
                        discount_cents=issue.discount_cents,
                        min_spend_cents=issue.min_spend_cents,
                        expire_time=issue.expire_time,
                        fingerprint=fingerprint,
                        campaign_id=issue.campaign_id,
                        at=now,
                    )
                    # A request id twice in one batch is a retry within it: the same coupon.
                    done[issue.request_id] = coupon
                    fresh.append((coupon, issue.request_id))
                else:
                    in_request(index, lambda: coupon.require_same_request(fingerprint))  # noqa: B023 - called at once
                answered.append(coupon)
            if fresh:
                tx.stores.coupons.issue_many(fresh, now)
            return answered

        return self.uow.run(work)

    def earn_many(self, earns: Sequence[requests.PointsEarn]) -> list[Entry]:
        """Each earn as `earn` makes it, in the order given, all in one transaction: orders'
        outbox credits the points of many orders with one call and one commit."""
        requests.batch(
            len(earns),
            lambda index, violations: requests.earning(
                self.programme,
                earns[index].member_id,
                earns[index].source_id,
                earns[index].spend_cents,
                earns[index].store_id,
                violations=violations,
            ),
        )

        def work(tx: Tx) -> list[Entry]:
            return [
                in_request(
                    index,
                    lambda: self._earned(tx, e.member_id, e.source_id, e.spend_cents, e.store_id)[0],  # noqa: B023 - called at once
                )
                for index, e in enumerate(earns)
            ]

        return self.uow.run(work)

    def grant_many(self, grants: Sequence[requests.PointsGrant], actor: Actor | None = None) -> list[Entry]:
        """Each grant as `grant` makes it, all in one transaction (with the batch's audit record
        when an `actor` grants by hand)."""
        requests.batch(
            len(grants),
            lambda index, violations: requests.grant(
                grants[index].member_id,
                grants[index].points,
                grants[index].source_id,
                grants[index].reason,
                violations,
            ),
        )

        def work(tx: Tx) -> list[Entry]:
            entries = [
                in_request(index, lambda: self._granted(tx, g.member_id, g.points, g.source_id)[0])  # noqa: B023 - called at once
                for index, g in enumerate(grants)
            ]
            if actor is not None:
                target = "members:" + ",".join(g.member_id for g in grants)
                detail = f"{sum(g.points for g in grants)} points over {len(grants)} grants"
                tx.stores.audit.add(actor.did(POINTS_GRANTED_ACTION, target, self.clock(), detail))
            return entries

        return self.uow.run(work)

    def update_tags_many(self, updates: Sequence[requests.TagUpdate]) -> list[Member]:
        """Each change as `update_tags` makes it, all in one transaction."""
        changes: list[requests.TagChange] = []

        def check(index: int, violations: Violations) -> None:
            update = updates[index]
            violations.text(update.member_id, "member_id", max_length=requests.MAX_ID_LENGTH)
            changes.append(requests.TagChange.collected(update.add, update.remove, violations))

        requests.batch(len(updates), check)
        # Read once, so a transaction run again names the same changes.
        now = self.clock()

        def work(tx: Tx) -> list[Member]:
            return [
                in_request(index, lambda: self._retagged(tx, u.member_id, change, now))  # noqa: B023 - called at once
                for index, (u, change) in enumerate(zip(updates, changes, strict=True))
            ]

        return self.uow.run(work)


def _fingerprint(issue: requests.CouponIssue) -> str:
    assert issue.expire_time is not None  # checked
    return coupon_fingerprint(
        issue.member_id, issue.discount_cents, issue.min_spend_cents, issue.expire_time, issue.campaign_id
    )
