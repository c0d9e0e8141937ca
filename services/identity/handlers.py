"""Identity's use cases: each one a transaction over the repository, with the domain's rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from quanyu.auth import IssuedToken, Principal, Role, TokenCodec
from quanyu.db import Database, utcnow
from quanyu.errors import AlreadyExists, InvalidArgument, NotFound, Violations
from quanyu.ids import new_id
from quanyu.outbox import add_effect
from quanyu.phones import Phone
from quanyu.quota import Quota
from services.identity.domain import (
    ChannelAccount,
    Customer,
    PhoneHasher,
    Reach,
    ResolveRequest,
    check_merge,
    validate_account,
    validate_customer_id,
)
from services.identity.storage import CustomerRepository, outbox

CUSTOMERS_MERGED = "customers_merged"


@dataclass(frozen=True)
class Resolved:
    customer: Customer
    created: bool


class IdentityService:
    def __init__(
        self,
        database: Database,
        phones: PhoneHasher,
        tokens: TokenCodec,
        on_effects: Callable[[], None] = lambda: None,
        *,
        phone_lookups: Quota | None = None,
        store_exists: Callable[[str], bool] = lambda _: True,
    ) -> None:
        self._db = database
        self._phones = phones
        self._tokens = tokens
        self._on_effects = on_effects
        self._phone_lookups = phone_lookups
        self._store_exists = store_exists

    def _looking_up_phone(self, principal: Principal) -> None:
        """Whether a number is a customer's is itself worth stealing: each caller may ask only so
        often."""
        if self._phone_lookups is not None:
            self._phone_lookups.take(principal)

    def resolve_customer(self, principal: Principal, request: ResolveRequest) -> Resolved:
        """Find by account, else by phone, else create; link what the caller told us.

        Two channels resolving the same new person at once both try to create; the database's
        unique keys let one win and the other's retry finds that customer.
        """
        reach = Reach.of(principal)
        if request.account is None and reach.needs_account:
            raise InvalidArgument("account", f"a channel names its customer by a {reach.channel} account")
        if request.account is not None:
            reach.require_own(request.account)
        if request.phone is not None:
            self._looking_up_phone(principal)
        resolved = self._resolve(request)
        return Resolved(reach.view(resolved.customer), resolved.created)

    def _resolve(self, request: ResolveRequest) -> Resolved:
        phone_hash = self._phones.digest(request.phone) if request.phone else None
        # Most calls find a customer who is already complete: answer from a read, no write lock.
        with self._db.snapshot() as connection:
            known = self._known(CustomerRepository(connection), request, phone_hash)
        if known is not None:
            return Resolved(known, created=False)

        def work(connection: Connection) -> Resolved:
            repo = CustomerRepository(connection)
            now = utcnow()
            customer_id = None
            if request.account is not None:
                owner = repo.owner_of_account(request.account)
                customer_id = repo.survivor_of(owner) if owner else None
            if customer_id is None and phone_hash is not None:
                owner = repo.owner_of_phone(phone_hash)
                customer_id = repo.survivor_of(owner) if owner else None
                if customer_id is not None and request.account is not None:
                    repo.link_account(customer_id, request.account, now)
            if customer_id is None:
                # A new customer takes the account and the phone unconditionally: if a concurrent
                # resolve took either first, the unique key fails this attempt and the retry
                # finds that customer instead of leaving a second one behind.
                customer_id = new_id("cus")
                repo.create(customer_id, request.display_name, now)
                if request.account is not None:
                    repo.link_account(customer_id, request.account, now)
                if request.phone is not None and phone_hash is not None:
                    repo.link_phone(customer_id, phone_hash, request.phone.masked, now)
                return Resolved(self._load(repo, customer_id), created=True)
            repo.fill_display_name(customer_id, request.display_name, now)
            if (
                request.phone is not None
                and phone_hash is not None
                and repo.owner_of_phone(phone_hash) is None
            ):
                # Found by account with a phone nobody owns yet: the profile gains it.
                repo.link_phone(customer_id, phone_hash, request.phone.masked, now)
            return Resolved(self._load(repo, customer_id), created=False)

        return self._db.run(work)

    def _known(
        self, repo: CustomerRepository, request: ResolveRequest, phone_hash: str | None
    ) -> Customer | None:
        """The customer a resolve finds, when it would write nothing (no account or phone to link,
        no name to fill in); None when the write path must run."""
        owner = repo.owner_of_account(request.account) if request.account is not None else None
        if owner is None and request.account is not None:
            return None  # a new account: it must be linked, or a customer created
        if owner is None and phone_hash is not None:
            owner = repo.owner_of_phone(phone_hash)
        survivor = repo.survivor_of(owner) if owner else None
        if survivor is None:
            return None
        if phone_hash is not None and repo.owner_of_phone(phone_hash) is None:
            return None  # the profile would gain the phone
        customer = repo.get(survivor)
        if customer is None or (request.display_name and not customer.display_name):
            return None
        return customer

    def get_customer(self, principal: Principal, customer_id: str) -> Customer:
        violations = Violations()
        validate_customer_id(customer_id, "customer_id", violations)
        violations.raise_if_any()
        reach = Reach.of(principal)
        with self._db.snapshot() as connection:
            repo = CustomerRepository(connection)
            survivor = repo.survivor_of(customer_id)
            customer = repo.get(survivor) if survivor else None
        # A customer the caller does not act for is answered as one that does not exist.
        if customer is None or not reach.acts_for(customer):
            raise NotFound("customer", customer_id)
        return reach.view(customer)

    def lookup_by_account(self, principal: Principal, account: ChannelAccount) -> Customer:
        violations = Violations()
        validate_account(account, "account", violations)
        violations.raise_if_any()
        reach = Reach.of(principal)
        missing = NotFound("customer", f"{account.channel}:{account.external_id}")
        if not reach.names(account):
            raise missing  # another channel's account is nothing to this caller, not even known
        with self._db.snapshot() as connection:
            repo = CustomerRepository(connection)
            owner = repo.owner_of_account(account)
            survivor = repo.survivor_of(owner) if owner else None
            customer = repo.get(survivor) if survivor else None
        if customer is None:
            raise missing
        return reach.view(customer)

    def lookup_by_phone(self, principal: Principal, raw_phone: str) -> Customer:
        if not raw_phone:
            raise InvalidArgument("phone", "give a channel account or a phone")
        phone = Phone.parse(raw_phone)
        self._looking_up_phone(principal)
        reach = Reach.of(principal)
        with self._db.snapshot() as connection:
            repo = CustomerRepository(connection)
            owner = repo.owner_of_phone(self._phones.digest(phone))
            survivor = repo.survivor_of(owner) if owner else None
            customer = repo.get(survivor) if survivor else None
        if customer is None or not reach.acts_for(customer):
            # The masked form only: the key of a failed lookup must not leak the number.
            raise NotFound("customer", phone.masked)
        return reach.view(customer)

    def link_account(
        self, principal: Principal, customer_id: str, account: ChannelAccount | None
    ) -> Customer:
        violations = Violations()
        validate_customer_id(customer_id, "customer_id", violations)
        validate_account(account, "account", violations)
        violations.raise_if_any()
        assert account is not None
        reach = Reach.of(principal)
        reach.require_own(account)

        def work(connection: Connection) -> Customer:
            repo = CustomerRepository(connection)
            survivor = repo.survivor_of(customer_id)
            found = repo.get(survivor) if survivor else None
            if survivor is None or found is None or not reach.acts_for(found):
                raise NotFound("customer", customer_id)
            owner = repo.owner_of_account(account)
            if owner is None:
                repo.link_account(survivor, account, utcnow())
            elif repo.survivor_of(owner) != survivor:
                raise AlreadyExists(
                    "the account belongs to another customer; merge the customers instead",
                    reason="ACCOUNT_LINKED_ELSEWHERE",
                    metadata={"channel": account.channel},
                )
            return reach.view(self._load(repo, survivor))

        return self._db.run(work)

    def merge_customers(self, survivor_customer_id: str, merged_customer_id: str) -> Customer:
        check_merge(survivor_customer_id, merged_customer_id)

        def work(connection: Connection) -> Customer:
            repo = CustomerRepository(connection)
            # Lock both chains in a fixed order so two opposite merges cannot interleave.
            ends: dict[str, str | None] = {}
            for key in sorted((survivor_customer_id, merged_customer_id)):
                ends[key] = repo.survivor_of(key, lock=True)
            survivor, merged = ends[survivor_customer_id], ends[merged_customer_id]
            if survivor is None:
                raise NotFound("customer", survivor_customer_id)
            if merged is None:
                raise NotFound("customer", merged_customer_id)
            if survivor != merged:
                now = utcnow()
                repo.merge(survivor, merged, now)
                # Membership merges the two members too; the effect commits with the merge.
                add_effect(
                    connection,
                    outbox,
                    CUSTOMERS_MERGED,
                    {
                        "survivor_customer_id": survivor,
                        "merged_customer_id": merged,
                        "request_id": f"customer-merge:{merged}:{survivor}",
                    },
                    now,
                )
            return self._load(repo, survivor)

        customer = self._db.run(work)
        self._on_effects()
        return customer

    def issue_token(self, principal: Principal, ttl_seconds: int) -> IssuedToken:
        """A token for a caller that exists: a store token for a store fulfilment knows."""
        if principal.role is Role.STORE and not self._store_exists(principal.store_id):
            raise NotFound("store", principal.store_id)
        return self._tokens.issue(principal, ttl_seconds)

    @staticmethod
    def _load(repo: CustomerRepository, customer_id: str) -> Customer:
        customer = repo.get(customer_id)
        if customer is None:
            raise NotFound("customer", customer_id)
        return customer
