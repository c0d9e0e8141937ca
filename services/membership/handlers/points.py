"""Use cases of points: earning (and the referrer's bonus a first purchase pays), redeeming,
reversing what a source did, the ledger's pages, expiry and the tier evaluation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime

from quanyu.audit_record import Actor
from quanyu.auth import Principal, Role
from services.membership.domain import Entry, EntryKind, Member, PointsAccount, Posting, requests
from services.membership.domain.ledger import REVERSIBLE, grant_key, source_key
from services.membership.domain.marketing import Before
from services.membership.handlers.base import Tx, UseCases
from services.membership.metrics import POINTS_EARNED, POINTS_GRANTED, POINTS_REDEEMED
from services.membership.ports import LedgerStore

# Points granted by hand (by ops) are a privileged action, kept on the audit trail with the grant;
# a campaign's grants are traced by the campaign's start there and by its own records in marketing.
POINTS_GRANTED_ACTION = "POINTS_GRANTED"

# Members the expiry and tier runs read at once, each then changed in its own transaction.
_BATCH = 500


class PointsCases(UseCases):
    def earn(self, member_id: str, source_id: str, spend_cents: int, store_id: str) -> tuple[Entry, Member]:
        requests.earning(self.programme, member_id, source_id, spend_cents, store_id)
        return self.uow.run(lambda tx: self._earned(tx, member_id, source_id, spend_cents, store_id))

    def _earned(
        self, tx: Tx, member_id: str, source_id: str, spend_cents: int, store_id: str
    ) -> tuple[Entry, Member]:
        """An earn in `tx`, or the entry of the one already made under `source_id`."""
        stores = tx.stores
        done = stores.ledger.by_key(f"earn:{source_id}")
        if done is not None:
            return self._retried(tx, done, member_id, spend=spend_cents)
        account = self._account(tx, member_id)
        member, now = account.member, self.clock()
        before = Before.of(member)
        group = stores.members.group(member.member_id)
        first_purchase = spend_cents > 0 and stores.ledger.purchases(group) == 0
        posting = account.earn(
            self.programme,
            spend_cents=spend_cents,
            source_id=source_id,
            store_id=store_id,
            at=now,
            earned_today=stores.ledger.earned_since(group, self.programme.day_start(now)),
            rolling_spend_cents=stores.ledger.rolling_spend(group, self.programme.spend_window_start(now)),
        )
        entry = stores.ledger.append(posting)
        stores.members.save(member, now)
        tx.after_commit(lambda: POINTS_EARNED.inc(posting.points))
        if first_purchase and member.referrer_member_id:
            self._credit_referrer(tx, member, source_id, now)
        earned = self._load(stores, member.member_id)
        self._tell_changed(tx, f"entry/{entry.entry_id}", before, earned, now)
        return entry, earned

    def _credit_referrer(self, tx: Tx, referred: Member, source_id: str, now: datetime) -> None:
        """The referrer's bonus, once per referred member however often the earn is retried, and
        within the referrer's caps of points and of bonuses a day."""
        stores = tx.stores
        if (
            stores.ledger.by_key(f"referral:{referred.member_id}") is not None
            or self.programme.referral_bonus_points <= 0
        ):
            return
        referrer = self._lock_root(stores, referred.referrer_member_id)
        group, day = stores.members.group(referrer.member_id), self.programme.day_start(now)
        bonus = self.programme.referral_bonus(
            stores.ledger.earned_since(group, day), stores.ledger.bonuses_since(group, day)
        )
        if bonus <= 0:
            return
        before = Before.of(referrer)
        account = PointsAccount(referrer)
        entry = stores.ledger.append(
            account.referral_bonus(
                self.programme, bonus, referred_member_id=referred.member_id, source_id=source_id, at=now
            )
        )
        stores.members.save(referrer, now)
        self._tell_changed(tx, f"entry/{entry.entry_id}", before, self._load(stores, referrer.member_id), now)

    def grant(
        self, member_id: str, points: int, source_id: str, reason: str = "", actor: Actor | None = None
    ) -> tuple[Entry, Member]:
        """Credit points not earned by spend (a campaign's reward), once per source id; they expire
        like earned points. With an `actor` (ops granting by hand) the grant is kept on the audit
        trail, in its transaction."""
        requests.grant(member_id, points, source_id, reason)

        def work(tx: Tx) -> tuple[Entry, Member]:
            granted = self._granted(tx, member_id, points, source_id)
            if actor is not None:
                detail = f"{points} points, source {source_id}, {reason}"
                tx.stores.audit.add(
                    actor.did(POINTS_GRANTED_ACTION, f"member:{member_id}", self.clock(), detail)
                )
            return granted

        return self.uow.run(work)

    def _granted(self, tx: Tx, member_id: str, points: int, source_id: str) -> tuple[Entry, Member]:
        """A grant in `tx`, or the entry of the one already made under `source_id`."""
        done = tx.stores.ledger.by_key(grant_key(source_id))
        if done is not None:
            return self._retried(tx, done, member_id, points=points)
        account = self._account(tx, member_id)
        now, before = self.clock(), Before.of(account.member)
        posting = account.grant(self.programme, points, source_id=source_id, at=now)
        return self._posted(tx, account, posting, now, lambda: POINTS_GRANTED.inc(points), before=before)

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
        requests.redemption(member_id, points, source_id, store_id, member_code)
        store_id = self._may_spend(principal, member_id, member_code, store_id)
        owner = principal.owner
        key = source_key("redeem", owner, source_id)

        def work(tx: Tx) -> tuple[Entry, Member]:
            stores = tx.stores
            done = stores.ledger.by_key(key) or _redeemed_before_owners(stores.ledger, principal, source_id)
            if done is not None:
                return self._retried(tx, done, member_id, points=-points)
            now = self.clock()
            self.programme.require_redemption_window(now)
            account = self._account(tx, member_id, live=True)
            before = Before.of(account.member)
            posting = account.redeem(
                points, source_id=source_id, store_id=store_id, key=key, owner=owner, at=now
            )
            return self._posted(tx, account, posting, now, lambda: POINTS_REDEEMED.inc(points), before=before)

        return self.uow.run(work)

    def _posted(
        self,
        tx: Tx,
        account: PointsAccount,
        posting: Posting,
        now: datetime,
        count: Callable[[], None],
        *,
        before: Before,
    ) -> tuple[Entry, Member]:
        """The posting appended to the ledger and its member saved, marketing told of the member
        now; `count` once it has committed."""
        entry = tx.stores.ledger.append(posting)
        tx.stores.members.save(account.member, now)
        tx.after_commit(count)
        member = self._load(tx.stores, account.member.member_id)
        self._tell_changed(tx, f"entry/{entry.entry_id}", before, member, now)
        return entry, member

    def _retried(
        self, tx: Tx, done: Entry, member_id: str, *, spend: int | None = None, points: int | None = None
    ) -> tuple[Entry, Member]:
        """The answer to a retry of a movement already made: the same request gets its entry."""
        members = tx.stores.members
        done.require_same_request(
            members.root_of(done.member_id) == members.root_of(member_id), spend=spend, points=points
        )
        return done, self._load(tx.stores, self._root(tx.stores, done.member_id))

    def reverse(self, principal: Principal, source_id: str, reason: str = "") -> list[Entry]:
        """Undo what a source did: earns (and the referral bonus they paid) are clawed back as far
        as their points are unspent, redemptions are given back. Once per entry. The source is the
        caller's own: its namespace of source ids (Principal.owner)."""
        requests.reversal(source_id, reason)

        def work(tx: Tx) -> list[Entry]:
            ledger = tx.stores.ledger
            reversals = []
            for entry in ledger.by_source(principal.owner, source_id, REVERSIBLE):
                done = ledger.by_key(f"reverse:{entry.entry_id}")
                reversals.append(done if done is not None else self._reverse_one(tx, entry))
            return reversals

        return self.uow.run(work)

    def _reverse_one(self, tx: Tx, entry: Entry) -> Entry:
        stores = tx.stores
        account = self._account(tx, entry.member_id)
        now, before = self.clock(), Before.of(account.member)
        paid_from = []
        if entry.kind is EntryKind.REDEEM:
            paid_from = stores.ledger.draws(entry.entry_id)
        else:
            lot = stores.ledger.lot(entry.entry_id)
            if lot is not None:
                account.lots.setdefault(lot.lot_id, lot)
        posting = account.reverse(entry, self.programme, now, paid_from=paid_from)
        reversal = stores.ledger.append(posting)
        stores.members.save(account.member, now)
        reversed_now = self._load(stores, account.member.member_id)
        self._tell_changed(tx, f"entry/{reversal.entry_id}", before, reversed_now, now)
        return reversal

    def list_entries(
        self, principal: Principal, member_id: str, requested: int, token: str, member_code: str = ""
    ) -> tuple[list[Entry], str]:
        requests.ledger_page(member_id, member_code, token)

        def fetch(tx: Tx, position: dict[str, int] | None, limit: int) -> list[Entry]:
            group = tx.stores.members.group(self._root(tx.stores, member_id))
            return tx.stores.ledger.page(group, int(position["before"]) if position else None, limit)

        def check() -> None:
            self._may_read(principal, member_id, member_code, principal.store_id)

        query = {"member": member_id}
        return self._page(
            principal, token, requested, query=query, fetch=fetch, position=_before, check=check
        )

    # --- the periodic runs --------------------------------------------------------------------

    def expire(self, as_of: datetime | None = None) -> int:
        """Write EXPIRE entries for what is left of lapsed earnings, once; how many were written."""
        as_of = as_of or self.clock()
        written = 0
        while True:
            lapsed = self.uow.read(lambda tx: tx.stores.ledger.lapsed_roots(as_of, _BATCH))
            if not lapsed:
                return written
            for root in lapsed:
                written += self.uow.run(functools.partial(self._expire_root, root=root, as_of=as_of))

    def _expire_root(self, tx: Tx, *, root: str, as_of: datetime) -> int:
        member = self._lock_root(tx.stores, root)
        before = Before.of(member)
        _, written = self._write_off(tx, member, as_of)
        if written:
            now = self.clock()
            tx.stores.members.save(member, now)
            # One expiry run writes a member's lapsed points off once: the run's time names it.
            cause = f"{root}/expired/{as_of.isoformat()}"
            self._tell_changed(tx, cause, before, self._load(tx.stores, root), now)
        return written

    def evaluate_tiers(self, as_of: datetime | None = None) -> int:
        """Move every member to the tier their rolling spend earns, down as well as up."""
        as_of = as_of or self.clock()
        since = self.programme.spend_window_start(as_of)

        def evaluate(tx: Tx, member_id: str) -> int:
            member = self._lock_root(tx.stores, member_id)
            before = Before.of(member)
            rolling = tx.stores.ledger.rolling_spend(tx.stores.members.group(member.member_id), since)
            if not member.reevaluate_tier(self.programme, rolling):
                return 0
            now = self.clock()
            tx.stores.members.save(member, now)
            cause = f"{member.member_id}/tier/{as_of.isoformat()}"
            self._tell_changed(tx, cause, before, self._load(tx.stores, member.member_id), now)
            return 1

        changed, after = 0, ""
        while True:
            batch = self.uow.read(functools.partial(_members_after, after=after))
            if not batch:
                return changed
            after = batch[-1]
            for member_id in batch:
                changed += self.uow.run(functools.partial(evaluate, member_id=member_id))


def _redeemed_before_owners(ledger: LedgerStore, principal: Principal, source_id: str) -> Entry | None:
    """A till's redemption made before source ids had owners, under its shared key: its retry
    after the upgrade finds it there rather than spending again. Only the till's own store's."""
    if principal.role is not Role.STORE:
        return None
    earlier = ledger.by_key(source_key("redeem", "", source_id))
    if earlier is None or earlier.owner or earlier.store_id != principal.store_id:
        return None
    return earlier


def _members_after(tx: Tx, *, after: str) -> list[str]:
    return tx.stores.members.segment({}, after, _BATCH)


def _before(entry: Entry) -> dict[str, int]:
    return {"before": entry.seq}
