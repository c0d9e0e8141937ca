"""Use cases of members: enrolment, lookup, member codes, engagement, tags, segments and the
funnel, and the guides of stores."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime

from quanyu.auth import Principal, Role
from quanyu.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from quanyu.ids import new_id
from services.membership.domain import EngagementEvent, Funnel, Guide, Member, Stage, marketing, requests
from services.membership.domain.marketing import Before
from services.membership.handlers.access import enrolling_as, is_front, own_store
from services.membership.handlers.base import Tx, UseCases, code_hash
from services.membership.ports import Segment, Stores


class MemberCases(UseCases):
    def enroll(
        self,
        principal: Principal,
        customer_id: str,
        *,
        home_store_id: str,
        guide_id: str,
        channel: str,
        referrer_member_id: str,
        birthday: str = "",
    ) -> tuple[Member, bool]:
        requests.enrolment(customer_id, home_store_id, guide_id, referrer_member_id, birthday)
        home_store_id, channel = enrolling_as(principal, home_store_id, channel)
        if is_front(principal):
            # A till or channel enrols a customer identity knows (a channel, one of its own), never
            # an id it made up.
            known = (
                self.customers.holds(customer_id, principal.channel)
                if principal.role is Role.CHANNEL
                else self.customers.exists(customer_id)
            )
            if not known:
                raise NotFound("customer", customer_id)

        def enrolled(stores: Stores) -> tuple[Member, bool] | None:
            existing = stores.members.root_of_customer(customer_id)
            if existing is None:
                return None
            member = self._load(stores, existing)
            # Refused before anything else is said of the member (whom they may refer, say).
            if principal.role is Role.STORE and member.home_store_id != principal.store_id:
                raise PermissionDenied(
                    "the customer is a member already, of another store or of none; their member code "
                    "shows them at this till",
                    reason="MEMBER_OF_ANOTHER_STORE",
                )
            # Only an enrolled customer has a member of their own to name as the referrer.
            if referrer_member_id and stores.members.root_of(referrer_member_id) == existing:
                raise InvalidArgument("referrer_member_id", "a customer cannot refer themselves")
            return member, False

        def look(tx: Tx) -> tuple[str, tuple[Member, bool] | None]:
            # A guide is checked even for a member who exists: orders credits the guide it names.
            return self._guide_home(tx.stores, principal, guide_id, home_store_id), enrolled(tx.stores)

        # Most calls (every order of a known customer) find the member: a read, no write lock.
        home_store_id, found = self.uow.read(look)
        if found is not None:
            return found

        def enrol(tx: Tx) -> tuple[Member, bool]:
            found = enrolled(tx.stores)
            if found is not None:
                return found
            members = tx.stores.members
            referrer = ""
            if referrer_member_id:
                referrer_root = members.root_of(referrer_member_id)
                if referrer_root is None:
                    raise NotFound("member", referrer_member_id, reason="REFERRER_NOT_FOUND")
                referrer_member = members.get(referrer_root)
                if referrer_member is not None and referrer_member.customer_id == customer_id:
                    raise InvalidArgument("referrer_member_id", "a customer cannot refer themselves")
                referrer = referrer_root
            now = self.clock()
            member = Member.enrolled(
                new_id("mem"),
                customer_id,
                programme=self.programme,
                home_store_id=home_store_id,
                guide_id=guide_id,
                channel=channel,
                referrer_member_id=referrer,
                at=now,
                birthday=birthday,
            )
            members.add(member)
            self._tell(tx, marketing.enrolled(member, now))
            self._tell_orders(tx, member.member_id)
            return self._load(tx.stores, member.member_id), True

        return self.uow.run(enrol)

    @staticmethod
    def _guide_home(stores: Stores, principal: Principal, guide_id: str, home_store_id: str) -> str:
        """The home store once the guide is checked: a member is looked after only by a guide of
        their home store (given, or the guide's own when none is), and a till names only its own
        store's guides. A guide that does not exist, is inactive or is another store's is
        answered alike."""
        if not guide_id:
            return home_store_id
        guide = stores.guides.get(guide_id)
        till = principal.store_id if principal.role is Role.STORE else ""
        if guide is None or not guide.may_look_after(home_store_id, till):
            raise NotFound("guide", guide_id)
        return home_store_id or guide.store_id

    def get_member(
        self, principal: Principal, *, member_id: str = "", customer_id: str = "", member_code: str = ""
    ) -> Member:
        given = {"member_id": member_id, "customer_id": customer_id, "member_code": member_code}
        key = next((name for name, value in given.items() if value), None)
        return self.find_member(principal, key, given[key] if key else "")

    def find_member(self, principal: Principal, key: str | None, value: str) -> Member:
        """The member named by `key` (member_id, customer_id or member_code), when the caller
        reaches them."""
        requests.member_lookup(key, value)
        if key == "member_code":
            return self.uow.run(
                lambda tx: self._load(
                    tx.stores, self._admit(tx.stores, principal, value, store_id=principal.store_id)
                )
            )
        return self._reach(principal, **{key: value})  # type: ignore[arg-type]

    def create_member_code(self, principal: Principal, member_id: str) -> tuple[str, datetime]:
        """A fresh code for the member's app to show at a till, valid for a few minutes."""
        requests.ids(member_id=member_id)
        member = self._reach(principal, member_id=member_id)
        code = f"{secrets.randbelow(10**18):018d}"
        now = self.clock()
        expire = now + self.member_code_ttl
        self.uow.run(lambda tx: tx.stores.codes.add(code_hash(code), member.member_id, now, expire))
        return code, expire

    # --- engagement, tags, segments -----------------------------------------------------------

    def record_event(
        self,
        principal: Principal,
        customer_id: str,
        store_id: str,
        event_type: EngagementEvent | None,
        occur_time: datetime | None,
    ) -> None:
        requests.engagement(customer_id, store_id, event_type)
        if principal.role is Role.STORE:
            principal.require_store(store_id or principal.store_id)

        def find(tx: Tx) -> Member | None:
            root = tx.stores.members.root_of_customer(customer_id)
            return tx.stores.members.get(root) if root else None

        member = self.uow.read(find)
        # Not a member, or not one the caller reaches: accepted alike, with nothing moved.
        if member is None or not self._sees(principal, member):
            return
        assert event_type is not None  # the request's checks require one
        root_id, at = member.member_id, occur_time or self.clock()
        # The same engagement reported again (the same time given) is one event to marketing.
        cause = (
            "engagement/"
            + hashlib.sha256(
                f"{customer_id}|{store_id}|{event_type.value}|{at.isoformat()}".encode()
            ).hexdigest()[:40]
        )

        def engage(tx: Tx) -> None:
            if member.stage >= Stage.INTEREST:
                # Past interest, an engagement moves nothing: no lock, only marketing is told.
                self._tell(tx, marketing.engaged(cause, member, event_type, at))
                return
            locked = self._lock_root(tx.stores, root_id)
            before = Before.of(locked)
            self._tell(tx, marketing.engaged(cause, locked, event_type, at))
            if locked.engage(at):
                now = self.clock()
                tx.stores.members.save(locked, now)
                # A member enters a stage once: the stage names the change.
                stage = f"{root_id}/stage/{locked.stage.name}"
                self._tell_changed(tx, stage, before, self._load(tx.stores, root_id), now)

        self.uow.run(engage)

    def update_tags(self, member_id: str, add: Sequence[str], remove: Sequence[str]) -> Member:
        change = requests.tag_update(member_id, add, remove)
        # Read once, so a transaction run again names the same change.
        now = self.clock()
        return self.uow.run(lambda tx: self._retagged(tx, member_id, change, now))

    def _retagged(self, tx: Tx, member_id: str, change: requests.TagChange, now: datetime) -> Member:
        """The member (their root) with `change` made in `tx`, marketing told when the tags moved."""
        member = self._lock_root(tx.stores, member_id)
        before = Before.of(member)
        tx.stores.members.add_tags(member.member_id, change.add)
        tx.stores.members.remove_tags(member.member_id, change.remove)
        tagged = self._load(tx.stores, member.member_id)
        if before.moved(tagged)[2]:
            cause = (
                f"{tagged.member_id}/tags/"
                + hashlib.sha256(f"{sorted(tagged.tags)}|{now.isoformat()}".encode()).hexdigest()[:16]
            )
            self._tell_changed(tx, cause, before, tagged, now)
        return tagged

    def list_members(
        self, principal: Principal, filters: Segment, requested: int, token: str
    ) -> tuple[list[Member], str]:
        requests.ids(
            optional={
                name: str(filters.get(name, "")) for name in ("tier", "tag", "home_store_id", "guide_id")
            }
        )
        query = {**filters, "home_store_id": own_store(principal, str(filters.get("home_store_id", "")))}

        def fetch(tx: Tx, position: dict[str, str] | None, limit: int) -> list[Member]:
            ids = tx.stores.members.segment(query, str(position["after"]) if position else "", limit)
            return [self._load(tx.stores, member_id) for member_id in ids]

        return self._page(principal, token, requested, query=query, fetch=fetch, position=_after_member)

    def funnel(self, principal: Principal, home_store_id: str) -> Funnel:
        requests.ids(optional={"home_store_id": home_store_id})
        store = own_store(principal, home_store_id)
        return Funnel.of(self.uow.read(lambda tx: tx.stores.members.stage_counts(store)))

    # --- guides -------------------------------------------------------------------------------

    def upsert_guide(self, principal: Principal, guide: Guide | None) -> Guide:
        guide = requests.guide(guide)
        principal.require_store(guide.store_id)

        def work(tx: Tx) -> Guide:
            guides = tx.stores.guides
            existing = guides.get(guide.guide_id)
            if (
                principal.role is Role.STORE
                and existing is not None
                and existing.store_id != principal.store_id
            ):
                # Another store's guide id: taken, and nothing of its owner is told.
                raise AlreadyExists("a guide of another store has this id", reason="GUIDE_ID_TAKEN")
            guides.save(guide, self.clock())
            saved = guides.get(guide.guide_id)
            assert saved is not None
            return saved

        return self.uow.run(work)

    def get_guide(self, principal: Principal, guide_id: str) -> Guide:
        requests.ids(guide_id=guide_id)
        guide = self.uow.read(lambda tx: tx.stores.guides.get(guide_id))
        if guide is None or (principal.role is Role.STORE and guide.store_id != principal.store_id):
            raise NotFound("guide", guide_id)
        return guide

    def list_guides(
        self, principal: Principal, store_id: str, requested: int, token: str
    ) -> tuple[list[Guide], str]:
        requests.ids(optional={"store_id": store_id})
        store_id = own_store(principal, store_id)

        def fetch(tx: Tx, position: dict[str, str] | None, limit: int) -> list[Guide]:
            return tx.stores.guides.page(store_id, str(position["after"]) if position else "", limit)

        query = {"store": store_id}
        return self._page(principal, token, requested, query=query, fetch=fetch, position=_after_guide)


def _after_member(member: Member) -> dict[str, str]:
    return {"after": member.member_id}


def _after_guide(guide: Guide) -> dict[str, str]:
    return {"after": guide.guide_id}
