"""Merging the members of two customers found to be one person (identity's merge, delivered
through its outbox): once per request id, whatever order two opposite merges run in."""

from __future__ import annotations

from datetime import datetime

from quanyu.errors import FailedPrecondition, NotFound
from services.membership.domain import Member, MergeRecord, marketing, requests
from services.membership.domain.marketing import Before
from services.membership.handlers.base import Tx, UseCases


class MergeCases(UseCases):
    def merge(self, survivor_customer_id: str, merged_customer_id: str, request_id: str) -> Member:
        requests.merge(survivor_customer_id, merged_customer_id, request_id)

        def work(tx: Tx) -> Member:
            members = tx.stores.members
            done = members.merge_request(request_id)
            if done is not None:
                done.require_same(survivor_customer_id, merged_customer_id)
                return self._load(tx.stores, self._root(tx.stores, done.survivor_member_id))
            now = self.clock()
            while True:
                survivor_root = members.root_of_customer(survivor_customer_id)
                merged_root = members.root_of_customer(merged_customer_id)
                # Lock both roots in a fixed order (two opposite merges cannot deadlock), and read
                # again if a concurrent merge folded one of them away before it was locked.
                roots = sorted({root for root in (survivor_root, merged_root) if root is not None})
                locked = {root: self._lock_root(tx.stores, root) for root in roots}
                if all(member.member_id == root for root, member in locked.items()):
                    break
            if survivor_root is None and merged_root is None:
                raise NotFound("member", survivor_customer_id, reason="MEMBER_NOT_FOUND")
            # A merged customer leading to another customer's member was merged before.
            if (
                merged_root is not None
                and merged_root != survivor_root
                and locked[merged_root].customer_id != merged_customer_id
            ):
                raise FailedPrecondition(
                    "the merged customer's member was already merged into another member",
                    reason="MEMBER_ALREADY_MERGED",
                )
            if survivor_root is None:
                assert merged_root is not None
                moved = locked[merged_root]
                moved.customer_id = survivor_customer_id
                members.save(moved, now)
                members.point_customer(survivor_customer_id, merged_root)
                result = merged_root
                self._tell_orders(tx, merged_root, wake=True)
            elif merged_root is None or merged_root == survivor_root:
                members.point_customer(merged_customer_id, survivor_root)
                result = survivor_root
            else:
                before = Before.of(locked[survivor_root])
                self._combine(tx, locked[survivor_root], locked[merged_root], now)
                members.point_customer(merged_customer_id, survivor_root)
                result = survivor_root
                # Marketing counts the merged member as the survivor from now on, and hears of
                # the survivor with the points and spend it took in.
                self._tell(tx, marketing.merged(request_id, merged_root, survivor_root, now))
                survivor = self._load(tx.stores, survivor_root)
                self._tell_changed(tx, f"merge/{request_id}/survivor", before, survivor, now)
                # Orders hears of both: the merged member stands for the survivor now, whose home
                # store or guide may be the merged one's.
                self._tell_orders(tx, survivor_root, merged_root)
            members.record_merge(
                MergeRecord(request_id, survivor_customer_id, merged_customer_id, result), now
            )
            return self._load(tx.stores, result)

        return self.uow.run(work)

    def _combine(self, tx: Tx, survivor: Member, merged: Member, now: datetime) -> None:
        stores = tx.stores
        for member in (survivor, merged):
            self._write_off(tx, member, now)
        stores.members.fold_into(survivor, merged, now)
        rolling = stores.ledger.rolling_spend(
            stores.members.group(survivor.member_id), self.programme.spend_window_start(now)
        )
        survivor.absorb(merged, self.programme, rolling)
        stores.members.save(survivor, now)
