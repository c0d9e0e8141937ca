"""Identity's tables, and the repositories that read and write them inside one transaction
(`SqlStores`, the `Stores` of SqlUnitOfWork)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from quanyu.audit import AuditRecords, audit_table
from quanyu.db import UtcDateTime, new_metadata, timestamps
from quanyu.outbox import add_effect, outbox_table
from services.identity.domain import (
    MAX_MERGE_CHAIN,
    AccountLinked,
    ChannelAccount,
    Customer,
    CustomersMerged,
    CustomerState,
    Revocation,
)

metadata = new_metadata()
_ID = BigInteger().with_variant(Integer(), "sqlite")

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("display_name", String(64), nullable=False, default=""),
    Column("phone_masked", String(32), nullable=False, default=""),
    # Set once this customer was merged into another: lookups follow it to the survivor.
    Column("merged_into", String(64), ForeignKey("customers.customer_id"), nullable=True),
    # Grows with every change orders is told of (accounts, phones, the merge): orders keeps the
    # newest state it has heard of, whatever order its events arrive in.
    Column("version", BigInteger, nullable=False, server_default="0"),
    *timestamps(),
)

# A phone is kept only as its keyed hash; the primary key makes "one phone, one customer" a
# rule of the database, which is what stops two channels creating the same person twice.
customer_phones = Table(
    "customer_phones",
    metadata,
    Column("phone_hash", String(64), primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("phone_masked", String(32), nullable=False),
    Column("link_time", UtcDateTime(), nullable=False),
)

channel_accounts = Table(
    "channel_accounts",
    metadata,
    Column("channel", String(48), primary_key=True),
    Column("external_id", String(128), primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.customer_id"), nullable=False),
    Column("link_time", UtcDateTime(), nullable=False),
    Index("ix_channel_accounts_customer_id", "customer_id"),
)

# Tokens refused before they expire: one by its id, or every token of a subject issued until then.
token_revocations = Table(
    "token_revocations",
    metadata,
    Column(
        "revocation_id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("token_id", String(128), nullable=False, default=""),
    Column("subject", String(128), nullable=False, default=""),
    Column("issued_before", UtcDateTime(), nullable=False),
    Column("revoke_time", UtcDateTime(), nullable=False, index=True),
)

# Privileged actions (see quanyu.audit): tokens issued and revoked, customers merged.
audit_records = audit_table(metadata)

# Merges that membership must apply too, delivered by the relay (see quanyu.outbox).
outbox = outbox_table(metadata)


class CorruptMergeChain(RuntimeError):
    pass


# The reads every resolve and lookup makes, built once: only their parameters change per call,
# and a statement built per call costs more to construct and key for the cache than to run.
_MERGED_INTO = select(customers.c.merged_into).where(customers.c.customer_id == bindparam("customer"))
_MERGED_INTO_LOCKED = _MERGED_INTO.with_for_update()
_CUSTOMER = select(customers).where(customers.c.customer_id == bindparam("customer"))
_ACCOUNTS_OF = (
    select(channel_accounts.c.channel, channel_accounts.c.external_id)
    .where(channel_accounts.c.customer_id == bindparam("customer"))
    .order_by(channel_accounts.c.link_time, channel_accounts.c.channel, channel_accounts.c.external_id)
)
_ACCOUNT_OWNER = select(channel_accounts.c.customer_id).where(
    channel_accounts.c.channel == bindparam("channel"),
    channel_accounts.c.external_id == bindparam("external_id"),
)
_PHONES_OF = (
    select(customer_phones.c.phone_hash)
    .where(customer_phones.c.customer_id == bindparam("customer"))
    .order_by(customer_phones.c.phone_hash)
)
# Also takes the customer's row lock: two changes of one customer are told in the order they
# committed, each with the state the one before left.
_NEXT_VERSION = (
    update(customers)
    .where(customers.c.customer_id == bindparam("customer"))
    .values(version=customers.c.version + 1)
    .returning(customers.c.version)
)
_PHONE_OWNER = select(customer_phones.c.customer_id).where(customer_phones.c.phone_hash == bindparam("hash"))


class CustomerRepository:
    """Customers as the domain sees them, on the connection of the current transaction."""

    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def survivor_of(self, customer_id: str, *, lock: bool = False) -> str | None:
        """The customer an id stands for today: itself, or the end of its chain of merges."""
        current = customer_id
        query = _MERGED_INTO_LOCKED if lock else _MERGED_INTO
        for _ in range(MAX_MERGE_CHAIN):
            row = self._db.execute(query, {"customer": current}).one_or_none()
            if row is None:
                return None if current == customer_id else current
            if row.merged_into is None:
                return current
            current = row.merged_into
        raise CorruptMergeChain(f"merge chain from {customer_id} is longer than {MAX_MERGE_CHAIN}")

    def get(self, customer_id: str) -> Customer | None:
        row = self._db.execute(_CUSTOMER, {"customer": customer_id}).one_or_none()
        if row is None:
            return None
        accounts = self._db.execute(_ACCOUNTS_OF, {"customer": customer_id}).all()
        return Customer(
            customer_id=row.customer_id,
            display_name=row.display_name,
            phone_masked=row.phone_masked,
            create_time=row.create_time,
            accounts=[ChannelAccount(a.channel, a.external_id) for a in accounts],
        )

    def owner_of_account(self, account: ChannelAccount) -> str | None:
        owner: str | None = self._db.execute(
            _ACCOUNT_OWNER, {"channel": account.channel, "external_id": account.external_id}
        ).scalar_one_or_none()
        return owner

    def state_for_orders(self, customer_id: str) -> CustomerState:
        """The customer as orders is told of them, under the next version (the row stays locked
        until the transaction ends)."""
        version = int(self._db.execute(_NEXT_VERSION, {"customer": customer_id}).scalar_one())
        merged_into = self._db.execute(_MERGED_INTO, {"customer": customer_id}).scalar_one()
        accounts = self._db.execute(_ACCOUNTS_OF, {"customer": customer_id}).all()
        phones = self._db.execute(_PHONES_OF, {"customer": customer_id}).scalars()
        return CustomerState(
            customer_id,
            version,
            merged_into,
            tuple(ChannelAccount(a.channel, a.external_id) for a in accounts),
            tuple(phones),
        )

    def owner_of_phone(self, phone_hash: str) -> str | None:
        owner: str | None = self._db.execute(_PHONE_OWNER, {"hash": phone_hash}).scalar_one_or_none()
        return owner

    def create(self, customer_id: str, display_name: str, now: datetime) -> None:
        self._db.execute(
            insert(customers).values(
                customer_id=customer_id,
                display_name=display_name,
                phone_masked="",
                create_time=now,
                update_time=now,
            )
        )

    def link_account(self, customer_id: str, account: ChannelAccount, now: datetime) -> None:
        self._db.execute(
            insert(channel_accounts).values(
                channel=account.channel,
                external_id=account.external_id,
                customer_id=customer_id,
                link_time=now,
            )
        )

    def link_phone(self, customer_id: str, phone_hash: str, phone_masked: str, now: datetime) -> None:
        self._db.execute(
            insert(customer_phones).values(
                phone_hash=phone_hash, customer_id=customer_id, phone_masked=phone_masked, link_time=now
            )
        )
        # The first phone a customer gets is the one shown (masked) on the profile.
        self._db.execute(
            update(customers)
            .where(customers.c.customer_id == customer_id, customers.c.phone_masked == "")
            .values(phone_masked=phone_masked, update_time=now)
        )

    def fill_display_name(self, customer_id: str, display_name: str, now: datetime) -> None:
        if display_name:
            self._db.execute(
                update(customers)
                .where(customers.c.customer_id == customer_id, customers.c.display_name == "")
                .values(display_name=display_name, update_time=now)
            )

    def merge(self, survivor_id: str, merged_id: str, now: datetime) -> None:
        """Move the merged customer's accounts and phones to the survivor and point it there."""
        merged = self._db.execute(select(customers).where(customers.c.customer_id == merged_id)).one()
        self._db.execute(
            update(channel_accounts)
            .where(channel_accounts.c.customer_id == merged_id)
            .values(customer_id=survivor_id)
        )
        self._db.execute(
            update(customer_phones)
            .where(customer_phones.c.customer_id == merged_id)
            .values(customer_id=survivor_id)
        )
        if merged.phone_masked:
            self._db.execute(
                update(customers)
                .where(customers.c.customer_id == survivor_id, customers.c.phone_masked == "")
                .values(phone_masked=merged.phone_masked, update_time=now)
            )
        self.fill_display_name(survivor_id, merged.display_name, now)
        # Shorten every chain that ended at the merged customer, then close it.
        self._db.execute(
            update(customers)
            .where(customers.c.merged_into == merged_id)
            .values(merged_into=survivor_id, update_time=now)
        )
        self._db.execute(
            update(customers)
            .where(customers.c.customer_id == merged_id)
            .values(merged_into=survivor_id, phone_masked="", update_time=now)
        )


class EffectLog:
    """The outbox of the current transaction."""

    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def add(self, effect: CustomersMerged | AccountLinked | CustomerState, now: datetime) -> None:
        add_effect(self._db, outbox, effect.KIND, effect.payload, now)


class RevocationRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def add(self, revocation: Revocation) -> None:
        self._db.execute(
            insert(token_revocations).values(
                token_id=revocation.token_id,
                subject=revocation.subject,
                issued_before=revocation.issued_before,
                revoke_time=revocation.revoke_time,
            )
        )

    def since(self, since: datetime) -> list[Revocation]:
        rows = self._db.execute(
            select(token_revocations).where(token_revocations.c.revoke_time > since)
        ).mappings()
        return [Revocation(r["token_id"], r["subject"], r["issued_before"], r["revoke_time"]) for r in rows]


class SqlStores:
    """The repositories of one transaction's connection."""

    def __init__(self, connection: Connection) -> None:
        self.customers = CustomerRepository(connection)
        self.revocations = RevocationRepository(connection)
        self.audit = AuditRecords(connection, audit_records)
        self.outbox = EffectLog(connection)
