"""What every membership use case shares: the unit of work, the programme, the clock, identity,
page tokens, and the steps many of them take (finding and locking a member, checking that the
caller reaches them, admitting a member code)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from quanyu.auth import Principal, Role
from quanyu.errors import NotFound
from quanyu.paging import PageTokens, page_size
from quanyu.unit_of_work import Clock, Transaction, UnitOfWork
from services.membership.domain import Member, PointsAccount, Programme, invalid_member_code, marketing
from services.membership.domain.known import ORDERS_EVENT
from services.membership.domain.marketing import MARKETING_EVENT, Before
from services.membership.handlers.access import require_code_to_spend, sees, spending_store
from services.membership.metrics import POINTS_EXPIRED
from services.membership.ports import Customers, Stores

T = TypeVar("T")
Tx = Transaction[Stores]

DEFAULT_MEMBER_CODE_TTL = timedelta(minutes=2)
# What a code is checked against when the member named does not exist: no code is ever its.
_NO_MEMBER = "\x00no member"


def _existing(found: T | None, member_id: str) -> T:
    if found is None:
        raise NotFound("member", member_id)
    return found


def code_hash(code: str) -> str:
    return hashlib.sha256(f"member-code|{code}".encode()).hexdigest()


@dataclass
class UseCases:
    uow: UnitOfWork[Stores]
    programme: Programme
    page_tokens: PageTokens
    customers: Customers
    _: KW_ONLY
    clock: Clock
    member_code_ttl: timedelta = DEFAULT_MEMBER_CODE_TTL
    # Wakes the relay once a transaction that told marketing something has committed.
    on_effects: Callable[[], None] = lambda: None

    def close(self) -> None:
        """Let go of the database's connections (a unit of work in memory holds none)."""
        database = getattr(self.uow, "database", None)
        if database is not None:
            database.dispose()

    # --- finding members -----------------------------------------------------------------------

    @staticmethod
    def _load(stores: Stores, member_id: str) -> Member:
        return _existing(stores.members.get(member_id), member_id)

    @staticmethod
    def _root(stores: Stores, member_id: str) -> str:
        return _existing(stores.members.root_of(member_id), member_id)

    @staticmethod
    def _lock_root(stores: Stores, member_id: str) -> Member:
        """The member `member_id` is part of now, its row locked until the transaction ends:
        two tills or two replicas working on one member take turns in the database."""
        while True:
            root = stores.members.root_of(member_id)
            member = _existing(stores.members.get(root, lock=True) if root else None, member_id)
            # A concurrent merge may have folded the root into another member between reading it
            # and locking it; once locked, a member that is still its own root stays one.
            if stores.members.root_of(member.member_id) == member.member_id:
                return member

    def _account(self, tx: Tx, member_id: str, *, live: bool = False) -> PointsAccount:
        """The member locked, with their lapsed lots written off (and counted once committed);
        with `live`, holding every lot they can still spend from."""
        now = self.clock()
        member = self._lock_root(tx.stores, member_id)
        if not live:
            return self._write_off(tx, member, now)[0]
        account = PointsAccount(member, tx.stores.ledger.open_lots(member.member_id))
        self._expire(tx, account, now)
        return account

    def _write_off(self, tx: Tx, member: Member, as_of: datetime) -> tuple[PointsAccount, int]:
        """The member's lots lapsed by `as_of` written off: the account, and how many lots were."""
        account = PointsAccount(member, tx.stores.ledger.lapsed_lots(member.member_id, as_of))
        return account, self._expire(tx, account, as_of)

    def _expire(self, tx: Tx, account: PointsAccount, as_of: datetime) -> int:
        """Expire what lapsed by `as_of` among the account's lots; counted once committed."""
        postings = account.expire(as_of, self.clock())
        for posting in postings:
            tx.stores.ledger.append(posting)
        expired = -sum(p.points for p in postings)
        if expired:
            tx.after_commit(lambda: POINTS_EXPIRED.inc(expired))
        return len(postings)

    # --- what marketing is told ----------------------------------------------------------------

    def _tell(self, tx: Tx, event: dict[str, Any]) -> None:
        """Tell marketing `event` with the change: only if it commits, and once."""
        tx.stores.outbox.add(MARKETING_EVENT, event, self.clock())
        tx.after_commit(self.on_effects)

    def _tell_orders(self, tx: Tx, *member_ids: str, wake: bool = False) -> None:
        """Orders hears of each member as the transaction leaves them, under their next version;
        with `wake`, the relay is woken once it commits (else the caller wakes it)."""
        now = self.clock()
        for member_id in member_ids:
            state = tx.stores.members.state_for_orders(member_id)
            tx.stores.outbox.add(ORDERS_EVENT, state.payload, now)
        if wake:
            tx.after_commit(self.on_effects)

    def _tell_changed(self, tx: Tx, cause: str, before: Before, member: Member, now: datetime) -> None:
        """Marketing hears of the member (a root, as loaded after the change) as they are now,
        with their points by expiry: the one read this adds to a change."""
        tier_moved, stage_moved, _ = before.moved(member)
        lots = tx.stores.ledger.open_lots(member.member_id)
        self._tell(
            tx,
            marketing.changed(cause, member, lots, now, tier_changed=tier_moved, stage_changed=stage_moved),
        )

    # --- who reaches whom ----------------------------------------------------------------------

    def _sees(self, principal: Principal, member: Member) -> bool:
        return sees(
            principal,
            member.home_store_id,
            holds_channel_account=lambda: self.customers.holds(member.customer_id, principal.channel),
        )

    def _reach(self, principal: Principal, member_id: str = "", customer_id: str = "") -> Member:
        """The member, when the caller reaches them; one that it does not is answered as one that
        does not exist."""

        def find(tx: Tx) -> Member | None:
            members = tx.stores.members
            root = members.root_of(member_id) if member_id else members.root_of_customer(customer_id)
            return members.get(root) if root else None

        member = self.uow.read(find)
        if member is None or not self._sees(principal, member):
            raise NotFound("member", member_id or customer_id)
        return member

    def _admit(
        self, stores: Stores, principal: Principal, code: str, *, store_id: str, member_root: str = ""
    ) -> str:
        """The member a code stands for (their root), once the code is found valid here: unexpired,
        `member_root`'s when one is named, and shown at `store_id` (the first store it is shown at
        keeps it: a till's own store, or the store orders names for a till's sale). Every failure
        is one answer."""
        if principal.role is Role.CHANNEL:
            # A code is for the till it is shown at; a channel acts for its own customers instead.
            raise invalid_member_code()
        key, now = code_hash(code), self.clock()
        found = stores.codes.get(key)
        if found is not None and found.binds_to(store_id, now):
            found = stores.codes.bind(key, store_id)
        if found is None:
            raise invalid_member_code()
        code_root = stores.members.root_of(found.member_id)
        if not found.admits(member_root or code_root or "", code_root, store_id, self.clock()):
            raise invalid_member_code()
        assert code_root is not None
        return code_root

    def _may_spend(self, principal: Principal, member_id: str, member_code: str, store_id: str) -> str:
        """The store a spend happens at, once the caller may spend there for the member: their
        code (a till's only way, checked for this member at the store it is spent at, also when
        orders spends it for a till's sale), or a channel acting for its own customer; ops and
        services act for the chain. Checked before the spend's own transaction, which then holds
        no lock while identity is asked."""
        store_id = spending_store(principal, store_id)
        require_code_to_spend(principal, member_code)
        if principal.role not in (Role.OPS, Role.SERVICE) or member_code:
            self._may_read(principal, member_id, member_code, store_id)
        return store_id

    def _may_read(self, principal: Principal, member_id: str, member_code: str, store_id: str) -> None:
        """The member is the caller's to read: by their code shown at `store_id`, or as one of its
        own. A member the caller does not reach is answered as one that does not exist, and a
        code for a member who does not exist as any other code not valid here."""
        if not member_code:
            self._reach(principal, member_id=member_id)
            return

        def admit(tx: Tx) -> str:
            root = tx.stores.members.root_of(member_id) or _NO_MEMBER
            return self._admit(tx.stores, principal, member_code, store_id=store_id, member_root=root)

        self.uow.run(admit)

    # --- paging --------------------------------------------------------------------------------

    def _page(
        self,
        principal: Principal,
        token: str,
        requested: int,
        *,
        query: Mapping[str, Any],
        fetch: Callable[[Tx, Any, int], Sequence[T]],
        position: Callable[[T], dict[str, Any]],
        check: Callable[[], None] | None = None,
    ) -> tuple[list[T], str]:
        """One page of what `fetch(tx, where the last page ended or None, how many)` finds, and the
        token of the next (empty when this is the last); `check` runs once the token is read."""
        size = page_size(requested)
        caller = principal.name
        after = self.page_tokens.decode(token, query=query, caller=caller)
        if check is not None:
            check()
        found = list(self.uow.read(lambda tx: fetch(tx, after, size + 1)))
        page = found[:size]
        more = len(found) > size
        return page, (self.page_tokens.encode(position(page[-1]), query=query, caller=caller) if more else "")
