"""What orders knows of customers and members (services.orders.domain.known), in its own
database: every replica reads the same, and no process keeps a copy of its own, so a state told
to any replica holds for all of them from its commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from services.orders.domain.known import CustomerState, KnownCustomer, MemberState
from services.orders.storage.tables import known_accounts, known_customers, known_members, known_phones

# Built once: the look-ups run on every order of a returning customer.
_PHONE_OWNERS = select(known_phones.c.customer_id).where(known_phones.c.phone_hash == bindparam("hash"))
_MEMBER_COLUMNS = (
    known_members.c.member_id,
    known_members.c.version,
    known_members.c.customer_id,
    known_members.c.root_member_id,
    known_members.c.home_store_id,
    known_members.c.guide_id,
)
# Everything an order asks of a customer, in one round trip where it took up to three, one after
# the other: the customer (no row: not known), the channels of their accounts, and their members;
# a row for each account and member of theirs. Looking an account up reads its owners' with it.
_held = known_accounts.alias("held")


def _with_accounts_and_members(source: Any, customer_id: Any) -> Any:
    return source.outerjoin(_held, _held.c.customer_id == customer_id).outerjoin(
        known_members, known_members.c.customer_id == customer_id
    )


_KNOWN_OF = (
    known_customers.c.merged_into,
    known_customers.c.withheld,
    _held.c.channel,
    *_MEMBER_COLUMNS,
)
# Where a row's member begins: after the customer it is about and what is known of them.
_MEMBER_AT = 1 + len(_KNOWN_OF) - len(_MEMBER_COLUMNS)
_ACCOUNT_OWNERS = (
    select(known_accounts.c.customer_id.label("owner"), *_KNOWN_OF)
    .select_from(
        _with_accounts_and_members(
            known_accounts.outerjoin(
                known_customers, known_customers.c.customer_id == known_accounts.c.customer_id
            ),
            known_accounts.c.customer_id,
        )
    )
    .where(
        known_accounts.c.channel == bindparam("channel"),
        known_accounts.c.external_id == bindparam("external"),
    )
)
_CUSTOMER = (
    select(known_customers.c.customer_id.label("owner"), *_KNOWN_OF)
    .select_from(_with_accounts_and_members(known_customers, known_customers.c.customer_id))
    .where(known_customers.c.customer_id == bindparam("customer"))
)
_MEMBERS_OF = select(*_MEMBER_COLUMNS).where(known_members.c.customer_id == bindparam("customer"))
_MEMBER = select(*_MEMBER_COLUMNS).where(known_members.c.member_id == bindparam("member"))
_CUSTOMER_KNOWN = select(known_customers.c.version).where(
    known_customers.c.customer_id == bindparam("customer")
)
_MEMBER_KNOWN = select(known_members.c.version).where(known_members.c.member_id == bindparam("member"))
# Only a newer state replaces the one kept: the database decides, whichever replica applies it.
_NEWER_CUSTOMER = (
    update(known_customers)
    .where(known_customers.c.customer_id == bindparam("customer"), known_customers.c.version < bindparam("v"))
    .values(version=bindparam("v"), merged_into=bindparam("merged"), withheld=bindparam("held"))
)
_NEWER_MEMBER = (
    update(known_members)
    .where(known_members.c.member_id == bindparam("member"), known_members.c.version < bindparam("v"))
    .values(
        version=bindparam("v"),
        customer_id=bindparam("customer"),
        root_member_id=bindparam("root"),
        home_store_id=bindparam("home"),
        guide_id=bindparam("guide"),
    )
)
_FORGET_ACCOUNTS = delete(known_accounts).where(known_accounts.c.customer_id == bindparam("customer"))
_FORGET_PHONES = delete(known_phones).where(known_phones.c.customer_id == bindparam("customer"))


_INSERTS = {
    table.name: insert(table) for table in (known_customers, known_accounts, known_phones, known_members)
}


class KnownRepository:
    """What orders knows, on the connection of the current transaction."""

    def __init__(self, connection: Connection) -> None:
        self._db = connection
        # What a look-up read of a customer besides what it was asked, for this transaction's
        # next asks; forgotten at any write.
        self._customers: dict[str, KnownCustomer | None] = {}
        self._members: dict[str, list[MemberState]] = {}

    # --- reading -------------------------------------------------------------------------------

    def owners_of_account(self, channel: str, external_id: str) -> list[str]:
        rows = self._db.execute(_ACCOUNT_OWNERS, {"channel": channel, "external": external_id}).all()
        return self._keep(rows)

    def owners_of_phone(self, phone_hash: str) -> list[str]:
        return list(self._db.execute(_PHONE_OWNERS, {"hash": phone_hash}).scalars())

    def customer(self, customer_id: str) -> KnownCustomer | None:
        if customer_id not in self._customers:
            self._keep(self._db.execute(_CUSTOMER, {"customer": customer_id}).all())
        return self._customers.get(customer_id)

    def members_of(self, customer_id: str) -> list[MemberState]:
        if customer_id in self._members:
            return list(self._members[customer_id])
        return [MemberState(*row) for row in self._db.execute(_MEMBERS_OF, {"customer": customer_id})]

    def _keep(self, rows: Sequence[Any]) -> list[str]:
        """The customers `rows` (of _KNOWN_OF) are about, in the order first read, with what they
        tell of each kept."""
        by_owner: dict[str, list[Any]] = {}
        for row in rows:
            by_owner.setdefault(row.owner, []).append(row)
        for owner, theirs in by_owner.items():
            first = theirs[0]
            # merged_into is never NULL in a row kept: NULL is no row of the customer's.
            self._customers[owner] = (
                None
                if first.merged_into is None
                else KnownCustomer(
                    owner,
                    first.merged_into,
                    bool(first.withheld),
                    frozenset(row.channel for row in theirs if row.channel is not None),
                )
            )
            members = {
                row.member_id: MemberState(*row[_MEMBER_AT:]) for row in theirs if row.member_id is not None
            }
            self._members[owner] = list(members.values())
        return list(by_owner)

    def _forget(self) -> None:
        self._customers.clear()
        self._members.clear()

    def member(self, member_id: str) -> MemberState | None:
        row = self._db.execute(_MEMBER, {"member": member_id}).one_or_none()
        return MemberState(*row) if row else None

    # --- writing -------------------------------------------------------------------------------

    def apply_customer(self, state: CustomerState) -> bool:
        """Keep `state` if newer than the state kept (or none is); whether it was kept."""
        self._forget()
        newer = self._db.execute(
            _NEWER_CUSTOMER,
            {
                "customer": state.customer_id,
                "v": state.version,
                "merged": state.merged_into,
                "held": state.withheld,
            },
        )
        if newer.rowcount == 0:
            if self._db.execute(_CUSTOMER_KNOWN, {"customer": state.customer_id}).first() is not None:
                return False
            self._add_customer(state)
            return True
        self._db.execute(_FORGET_ACCOUNTS, {"customer": state.customer_id})
        self._db.execute(_FORGET_PHONES, {"customer": state.customer_id})
        self._add_holdings(state)
        return True

    def apply_member(self, state: MemberState) -> bool:
        self._forget()
        newer = self._db.execute(
            _NEWER_MEMBER,
            {
                "member": state.member_id,
                "v": state.version,
                "customer": state.customer_id,
                "root": state.root_member_id,
                "home": state.home_store_id,
                "guide": state.guide_id,
            },
        )
        if newer.rowcount == 1:
            return True
        if self._db.execute(_MEMBER_KNOWN, {"member": state.member_id}).first() is not None:
            return False
        self._db.execute(_INSERTS["known_members"], _member_row(state))
        return True

    def remember_customer(self, state: CustomerState) -> None:
        """Keep `state` (learnt from an answer) unless something is kept of the customer already."""
        self._forget()
        if self._db.execute(_CUSTOMER_KNOWN, {"customer": state.customer_id}).first() is None:
            self._add_customer(state)

    def remember_member(self, state: MemberState) -> None:
        self._forget()
        if self._db.execute(_MEMBER_KNOWN, {"member": state.member_id}).first() is None:
            self._db.execute(_INSERTS["known_members"], _member_row(state))

    def _add_customer(self, state: CustomerState) -> None:
        # A concurrent insert of the same customer fails this one on the key, and the unit of work
        # runs it again, to find that customer kept.
        self._db.execute(
            _INSERTS["known_customers"],
            {
                "customer_id": state.customer_id,
                "version": state.version,
                "merged_into": state.merged_into,
                "withheld": state.withheld,
            },
        )
        self._add_holdings(state)

    def _add_holdings(self, state: CustomerState) -> None:
        accounts = sorted(set(state.accounts))
        if accounts:
            self._db.execute(
                _INSERTS["known_accounts"],
                [{"channel": c, "external_id": e, "customer_id": state.customer_id} for c, e in accounts],
            )
        phones = sorted(set(state.phone_hashes))
        if phones:
            self._db.execute(
                _INSERTS["known_phones"],
                [{"phone_hash": h, "customer_id": state.customer_id} for h in phones],
            )


def _member_row(state: MemberState) -> dict[str, Any]:
    return {
        "member_id": state.member_id,
        "version": state.version,
        "customer_id": state.customer_id,
        "root_member_id": state.root_member_id,
        "home_store_id": state.home_store_id,
        "guide_id": state.guide_id,
    }
