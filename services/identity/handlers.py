"""Identity's use cases: each one a unit of work over the customers, with the domain's rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from datetime import timedelta

from quanyu.auth import (
    CHANNELS,
    MAX_STORE_ID_LENGTH,
    MAX_SUBJECT_LENGTH,
    IssuedToken,
    Principal,
    Role,
    TokenCodec,
    caller,
)
from quanyu.errors import AlreadyExists, InvalidArgument, NotFound, Violations
from quanyu.ids import new_id
from quanyu.keys import Fetched, Revocations
from quanyu.quota import Quota
from quanyu.unit_of_work import Clock, Transaction, UnitOfWork
from services.identity.domain import (
    CUSTOMERS_MERGED,
    MAX_TARGET_LENGTH,
    TOKEN_ISSUED,
    TOKEN_REVOKED,
    Actor,
    AuditRecord,
    ChannelAccount,
    Customer,
    PhoneHasher,
    Reach,
    ResolveRequest,
    Revocation,
    accounts_linked,
    merge,
    requests,
)
from services.identity.ports import Customers, Stores

Tx = Transaction[Stores]
# A use case called by no RPC (tests, tools) still leaves a trail that says so.
_UNNAMED = Actor("unnamed", "")


@dataclass(frozen=True)
class Resolved:
    customer: Customer
    created: bool


def reach_of(principal: Principal) -> Reach:
    """How far a caller reaches, by its role: a channel backend its channel's customers, a till
    every customer but only till accounts, ops and services everything."""
    if principal.role is Role.CHANNEL:
        return Reach.of_channel(principal.channel)
    if principal.role is Role.STORE:
        return Reach.of_till()
    return Reach.everything()


@dataclass
class IdentityService:
    uow: UnitOfWork[Stores]
    phones: PhoneHasher
    tokens: TokenCodec
    clock: Clock
    _: KW_ONLY
    on_effects: Callable[[], None] = lambda: None
    phone_lookups: Quota | None = None
    store_exists: Callable[[str], bool] = lambda _: True

    def _looking_up_phone(self, principal: Principal) -> None:
        """Whether a number is a customer's is itself worth stealing: each caller may ask only so
        often."""
        if self.phone_lookups is not None:
            self.phone_lookups.take(principal)

    def resolve_customer(self, principal: Principal, request: ResolveRequest) -> Resolved:
        """Find by account, else by phone, else create; link what the caller told us.

        Two channels resolving the same new person at once both try to create; the database's
        unique keys let one win and the other's retry finds that customer.
        """
        reach = reach_of(principal)
        if request.account is None and reach.needs_account:
            raise InvalidArgument("account", f"a channel names its customer by a {reach.channel} account")
        if request.account is not None:
            reach.require_own(request.account)
        if request.phone is not None:
            self._looking_up_phone(principal)
        resolved = self._resolve(request)
        return Resolved(reach.view(resolved.customer), resolved.created)

    def _resolve(self, request: ResolveRequest) -> Resolved:
        phone_hash = self.phones.digest(request.phone) if request.phone else None
        # Most calls find a customer who is already complete: answer from a read, no write lock.
        known = self.uow.read(lambda tx: _known(tx.stores.customers, request, phone_hash))
        if known is not None:
            return Resolved(known, created=False)

        def work(tx: Tx) -> Resolved:
            repo = tx.stores.customers
            now = self.clock()
            customer_id = None
            if request.account is not None:
                customer_id = _survivor(repo, repo.owner_of_account(request.account))
            linked: list[ChannelAccount] = []
            if customer_id is None and phone_hash is not None:
                customer_id = _survivor(repo, repo.owner_of_phone(phone_hash))
                if customer_id is not None and request.account is not None:
                    repo.link_account(customer_id, request.account, now)
                    linked.append(request.account)
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
                self._tell_orders(tx, customer_id)
                created = _load(repo, customer_id)
                self._tell_marketing(tx, created, created.accounts)
                tx.after_commit(self.on_effects)
                return Resolved(created, created=True)
            repo.fill_display_name(customer_id, request.display_name, now)
            gained_phone = (
                request.phone is not None
                and phone_hash is not None
                and repo.owner_of_phone(phone_hash) is None
            )
            if gained_phone and request.phone is not None and phone_hash is not None:
                # Found by account with a phone nobody owns yet: the profile gains it.
                repo.link_phone(customer_id, phone_hash, request.phone.masked, now)
            found = _load(repo, customer_id)
            self._tell_marketing(tx, found, linked)
            if linked or gained_phone:
                self._tell_orders(tx, customer_id)
                tx.after_commit(self.on_effects)
            return Resolved(found, created=False)

        return self.uow.run(work)

    def get_customer(self, principal: Principal, customer_id: str) -> Customer:
        requests.checked_customer_id(customer_id)
        reach = reach_of(principal)
        customer = self.uow.read(lambda tx: _current(tx.stores.customers, customer_id))
        # A customer the caller does not act for is answered as one that does not exist.
        if customer is None or not reach.acts_for(customer):
            raise NotFound("customer", customer_id)
        return reach.view(customer)

    def lookup_by_account(self, principal: Principal, account: ChannelAccount) -> Customer:
        requests.checked_account(account)
        reach = reach_of(principal)
        missing = NotFound("customer", f"{account.channel}:{account.external_id}")
        if not reach.names(account):
            raise missing  # another channel's account is nothing to this caller, not even known
        customer = self.uow.read(
            lambda tx: _current(tx.stores.customers, tx.stores.customers.owner_of_account(account))
        )
        if customer is None:
            raise missing
        return reach.view(customer)

    def lookup_by_phone(self, principal: Principal, raw_phone: str) -> Customer:
        phone = requests.checked_phone(raw_phone)
        self._looking_up_phone(principal)
        reach = reach_of(principal)
        phone_hash = self.phones.digest(phone)
        customer = self.uow.read(
            lambda tx: _current(tx.stores.customers, tx.stores.customers.owner_of_phone(phone_hash))
        )
        if customer is None or not reach.acts_for(customer):
            # The masked form only: the key of a failed lookup must not leak the number.
            raise NotFound("customer", phone.masked)
        return reach.view(customer)

    def link_account(
        self, principal: Principal, customer_id: str, account: ChannelAccount | None
    ) -> Customer:
        linked = requests.checked_link(customer_id, account)
        reach = reach_of(principal)
        reach.require_own(linked)

        def work(tx: Tx) -> Customer:
            repo = tx.stores.customers
            survivor = repo.survivor_of(customer_id)
            found = repo.get(survivor) if survivor else None
            if survivor is None or found is None or not reach.acts_for(found):
                raise NotFound("customer", customer_id)
            owner = repo.owner_of_account(linked)
            if owner is None:
                repo.link_account(survivor, linked, self.clock())
                self._tell_orders(tx, survivor)
            elif repo.survivor_of(owner) != survivor:
                raise AlreadyExists(
                    "the account belongs to another customer; merge the customers instead",
                    reason="ACCOUNT_LINKED_ELSEWHERE",
                    metadata={"channel": linked.channel},
                )
            customer = _load(repo, survivor)
            if owner is None:
                self._tell_marketing(tx, customer, [linked], wake=True)
            return reach.view(customer)

        return self.uow.run(work)

    def merge_customers(
        self, survivor_customer_id: str, merged_customer_id: str, actor: Actor = _UNNAMED
    ) -> Customer:
        requests.check_merge(survivor_customer_id, merged_customer_id)

        def work(tx: Tx) -> Customer:
            repo = tx.stores.customers
            # Lock both chains in a fixed order so two opposite merges cannot interleave.
            ends: dict[str, str | None] = {}
            for key in sorted((survivor_customer_id, merged_customer_id)):
                ends[key] = repo.survivor_of(key, lock=True)
            survivor, merged = ends[survivor_customer_id], ends[merged_customer_id]
            if survivor is None:
                raise NotFound("customer", survivor_customer_id)
            if merged is None:
                raise NotFound("customer", merged_customer_id)
            effect = merge(survivor, merged)
            if effect is not None:
                now = self.clock()
                repo.merge(survivor, merged, now)
                # Membership merges the two members too; the effect commits with the merge.
                tx.stores.outbox.add(effect, now)
                tx.after_commit(self.on_effects)
                # Orders hears of both in the merge's transaction: the merged customer's accounts,
                # phones and id stand for the survivor from the moment it applies them.
                self._tell_orders(tx, survivor, merged)
                # The survivor holds the merged customer's accounts now; marketing hears of all
                # of them, those it knew of already being repeats it ignores.
                survivor_now = _load(repo, survivor)
                self._tell_marketing(tx, survivor_now, survivor_now.accounts)
                tx.stores.audit.add(
                    AuditRecord(
                        now,
                        actor.name,
                        CUSTOMERS_MERGED,
                        f"customer:{merged}",
                        actor.request_id,
                        f"into {survivor}",
                    )
                )
                return survivor_now
            return _load(repo, survivor)

        return self.uow.run(work)

    def _tell_orders(self, tx: Tx, *customer_ids: str) -> None:
        """Orders hears of each customer as the transaction leaves them (accounts, phones,
        merge), under their next version; the caller wakes the relay once it commits."""
        now = self.clock()
        for customer_id in customer_ids:
            tx.stores.outbox.add(tx.stores.customers.state_for_orders(customer_id), now)

    def _tell_marketing(
        self, tx: Tx, customer: Customer, accounts: list[ChannelAccount], *, wake: bool = False
    ) -> None:
        """Marketing hears of the accounts the customer gained, in the transaction that gave them;
        with `wake`, the relay is woken once it commits (else the caller wakes it)."""
        for event in accounts_linked(customer, accounts, self.clock()):
            tx.stores.outbox.add(event, event.occur_time)
        if accounts and wake:
            tx.after_commit(self.on_effects)

    def issue_token(
        self,
        role: Role | None,
        *,
        subject: str,
        store_id: str,
        channel: str,
        ttl_seconds: int,
        actor: Actor = _UNNAMED,
    ) -> IssuedToken:
        """A token for a caller that exists: a store token for a store fulfilment knows. `channel`
        is "" for none, else a channel's name (anything else is not a channel); `ttl_seconds` 0
        is the default lifetime."""
        violations = Violations()
        violations.check(
            role is not None, "role", "must be ROLE_OPS, ROLE_SERVICE, ROLE_CHANNEL or ROLE_STORE"
        )
        violations.text(subject, "subject", max_length=MAX_SUBJECT_LENGTH, required=False)
        violations.text(store_id, "store_id", max_length=MAX_STORE_ID_LENGTH, required=False)
        violations.check(not channel or channel in CHANNELS, "channel", "is not a channel")
        violations.check(ttl_seconds >= 0, "ttl_seconds", "must not be negative")
        violations.raise_if_any()
        assert role is not None
        principal = caller(role, store_id=store_id, channel=channel, subject=subject)
        if principal.role is Role.STORE and not self.store_exists(principal.store_id):
            raise NotFound("store", principal.store_id)
        issued = self.tokens.issue(principal, ttl_seconds or None, now=self.clock())
        # Kept before the token is handed out: a token nobody can account for is never issued.
        detail = f"{principal.role.value} {principal.name} until {issued.expire_time.isoformat()}"
        self._audit(actor, TOKEN_ISSUED, f"token:{issued.token_id}", detail)
        return issued

    def revoke_token(self, *, token_id: str, subject: str, actor: Actor = _UNNAMED) -> None:
        """Refuse one token, or every token of a subject issued until now, everywhere."""
        violations = Violations()
        violations.check(bool(token_id) != bool(subject), "target", "give token_id or subject")
        violations.text(token_id, "token_id", max_length=MAX_TARGET_LENGTH, required=False)
        violations.text(subject, "subject", max_length=MAX_TARGET_LENGTH, required=False)
        violations.raise_if_any()
        now = self.clock()

        def work(tx: Tx) -> None:
            tx.stores.revocations.add(Revocation(token_id, subject, now.replace(microsecond=0), now))
            target = f"token:{token_id}" if token_id else f"subject:{subject}"
            tx.stores.audit.add(AuditRecord(now, actor.name, TOKEN_REVOKED, target, actor.request_id))

        self.uow.run(work)

    def token_trust(self) -> Fetched:
        """What every service verifies tokens with: the issuer's public keys and the revocations."""
        return Fetched(self.tokens.trust_keys(), self.revocations())

    def revocations(self) -> Revocations:
        """The revocations that may still name a live token: those younger than the longest life a
        token may have."""
        longest = max(self.tokens.lifetime(role) for role in Role)
        since = self.clock() - timedelta(seconds=longest)
        found = self.uow.read(lambda tx: tx.stores.revocations.since(since))
        return Revocations(
            frozenset(r.token_id for r in found if r.token_id),
            _latest_by_subject(found),
        )

    def _audit(self, actor: Actor, action: str, target: str, detail: str = "") -> None:
        record = AuditRecord(self.clock(), actor.name, action, target, actor.request_id, detail)
        self.uow.run(lambda tx: tx.stores.audit.add(record))


def _latest_by_subject(found: list[Revocation]) -> dict[str, int]:
    latest: dict[str, int] = {}
    for revocation in found:
        if revocation.subject:
            second = int(revocation.issued_before.timestamp())
            latest[revocation.subject] = max(second, latest.get(revocation.subject, second))
    return latest


def _survivor(repo: Customers, customer_id: str | None) -> str | None:
    return repo.survivor_of(customer_id) if customer_id else None


def _current(repo: Customers, customer_id: str | None) -> Customer | None:
    """The customer an id stands for today (None: no such customer)."""
    survivor = _survivor(repo, customer_id)
    return repo.get(survivor) if survivor else None


def _known(repo: Customers, request: ResolveRequest, phone_hash: str | None) -> Customer | None:
    """The customer a resolve finds, when it would write nothing (no account or phone to link,
    no name to fill in); None when the write path must run."""
    owner = repo.owner_of_account(request.account) if request.account is not None else None
    if owner is None and request.account is not None:
        return None  # a new account: it must be linked, or a customer created
    if owner is None and phone_hash is not None:
        owner = repo.owner_of_phone(phone_hash)
    survivor = _survivor(repo, owner)
    if survivor is None:
        return None
    if phone_hash is not None and repo.owner_of_phone(phone_hash) is None:
        return None  # the profile would gain the phone
    customer = repo.get(survivor)
    if customer is None or (request.display_name and not customer.display_name):
        return None
    return customer


def _load(repo: Customers, customer_id: str) -> Customer:
    customer = repo.get(customer_id)
    if customer is None:
        raise NotFound("customer", customer_id)
    return customer
