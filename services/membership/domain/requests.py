"""Every request's values checked once, before any use case runs: each problem is named by its
field's path (google.rpc.BadRequest), all of a request's problems in one answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from quanyu.errors import InvalidArgument, Violations
from quanyu.paging import check_page_token
from services.membership.domain.members import Guide, is_birthday
from services.membership.domain.programme import Programme
from services.membership.domain.stages import EngagementEvent

MAX_TAG_LENGTH = 64
MAX_TAGS_PER_CALL = 50
MAX_ID_LENGTH = 64
MAX_SOURCE_ID_LENGTH = 128
MAX_REQUEST_ID_LENGTH = 128
MAX_COUPON_CODE_LENGTH = 32
MAX_MEMBER_CODE_LENGTH = 32
MAX_REASON_LENGTH = 256
# One redemption spends at most this many points (¥1,000,000 of value): above any real order.
MAX_POINTS_PER_CALL = 100_000_000
# Requests one batch call (BatchIssueCoupons...) carries: one transaction's worth.
MAX_BATCH = 500


def _optional(violations: Violations, **values: str) -> None:
    for name, value in values.items():
        violations.text(value, name, max_length=MAX_ID_LENGTH, required=False)


def _required(violations: Violations, **values: str) -> None:
    for name, value in values.items():
        violations.text(value, name, max_length=MAX_ID_LENGTH)


def _member_code(violations: Violations, member_code: str) -> None:
    violations.text(member_code, "member_code", max_length=MAX_MEMBER_CODE_LENGTH, required=False)


def _amount(violations: Violations, value: int, name: str, programme: Programme) -> None:
    violations.check(value >= 0, name, "must not be negative")
    violations.check(value <= programme.max_spend_cents, name, f"must be at most {programme.max_spend_cents}")


def ids(*, optional: dict[str, str] | None = None, **required: str) -> None:
    """A request of ids alone: those named as keywords are required, `optional` ones may be empty."""
    violations = Violations()
    _required(violations, **required)
    _optional(violations, **(optional or {}))
    violations.raise_if_any()


def enrolment(
    customer_id: str, home_store_id: str, guide_id: str, referrer_member_id: str, birthday: str = ""
) -> None:
    violations = Violations()
    _required(violations, customer_id=customer_id)
    _optional(
        violations, home_store_id=home_store_id, guide_id=guide_id, referrer_member_id=referrer_member_id
    )
    violations.check(
        not birthday or is_birthday(birthday), "birthday", 'must be "MM-DD", a day of the calendar'
    )
    violations.raise_if_any()


MEMBER_KEYS = ("member_id", "customer_id", "member_code")


def member_lookup(key: str | None, value: str) -> None:
    """GetMember names its member one way (`key`): by id, by customer, or by the code their app
    shows."""
    if key not in MEMBER_KEYS or not value:
        raise InvalidArgument(key or "key", "give a member id or a customer id")
    violations = Violations()
    violations.text(value, key, max_length=MAX_MEMBER_CODE_LENGTH if key == "member_code" else MAX_ID_LENGTH)
    violations.raise_if_any()


def guide(given: Guide | None) -> Guide:
    if given is None:
        raise InvalidArgument("guide", "is required")
    violations = Violations()
    inside = violations.within("guide")
    _required(inside, guide_id=given.guide_id, store_id=given.store_id)
    _optional(inside, name=given.name)
    violations.raise_if_any()
    return given


def earning(
    programme: Programme,
    member_id: str,
    source_id: str,
    spend_cents: int,
    store_id: str,
    *,
    violations: Violations | None = None,
) -> None:
    """An earn's values; in a batch, `violations` collects them under the request's path."""
    inside = violations is not None
    violations = violations if violations is not None else Violations()
    _required(violations, member_id=member_id)
    violations.text(source_id, "source_id", max_length=MAX_SOURCE_ID_LENGTH)
    _optional(violations, store_id=store_id)
    _amount(violations, spend_cents, "spend_cents", programme)
    if not inside:
        violations.raise_if_any()


def redemption(member_id: str, points: int, source_id: str, store_id: str, member_code: str) -> None:
    violations = Violations()
    _required(violations, member_id=member_id)
    violations.text(source_id, "source_id", max_length=MAX_SOURCE_ID_LENGTH)
    _optional(violations, store_id=store_id)
    violations.check(points > 0, "points", "must be greater than zero")
    violations.check(points <= MAX_POINTS_PER_CALL, "points", f"must be at most {MAX_POINTS_PER_CALL}")
    _member_code(violations, member_code)
    violations.raise_if_any()


def grant(
    member_id: str, points: int, source_id: str, reason: str, violations: Violations | None = None
) -> None:
    """A grant's values; in a batch, `violations` collects them under the request's path."""
    inside = violations is not None
    violations = violations if violations is not None else Violations()
    _required(violations, member_id=member_id)
    violations.text(source_id, "source_id", max_length=MAX_SOURCE_ID_LENGTH)
    violations.check(points > 0, "points", "must be greater than zero")
    violations.check(points <= MAX_POINTS_PER_CALL, "points", f"must be at most {MAX_POINTS_PER_CALL}")
    violations.check(
        len(reason) <= MAX_REASON_LENGTH, "reason", f"must be at most {MAX_REASON_LENGTH} characters"
    )
    if not inside:
        violations.raise_if_any()


def coupon_page(member_id: str, page_token: str) -> None:
    violations = Violations()
    _required(violations, member_id=member_id)
    check_page_token(page_token, violations)
    violations.raise_if_any()


def reversal(source_id: str, reason: str) -> None:
    violations = Violations()
    violations.check(
        len(reason) <= MAX_REASON_LENGTH, "reason", f"must be at most {MAX_REASON_LENGTH} characters"
    )
    violations.text(source_id, "source_id", max_length=MAX_SOURCE_ID_LENGTH)
    violations.raise_if_any()


def ledger_page(member_id: str, member_code: str, page_token: str) -> None:
    violations = Violations()
    _required(violations, member_id=member_id)
    _member_code(violations, member_code)
    check_page_token(page_token, violations)
    violations.raise_if_any()


@dataclass(frozen=True)
class CouponIssue:
    member_id: str
    discount_cents: int
    min_spend_cents: int
    expire_time: datetime | None
    request_id: str
    campaign_id: str = ""

    def checked(self, now: datetime) -> datetime:
        """The coupon's expiry, once every value is found good (it must lie ahead of `now`)."""
        violations = Violations()
        self.check(now, violations)
        violations.raise_if_any()
        assert self.expire_time is not None
        return self.expire_time

    def check(self, now: datetime, violations: Violations) -> None:
        """Every problem with the request's values, into `violations` (under its path in a batch)."""
        _required(violations, member_id=self.member_id)
        violations.text(self.request_id, "request_id", max_length=MAX_REQUEST_ID_LENGTH)
        _optional(violations, campaign_id=self.campaign_id)
        violations.check(self.discount_cents > 0, "discount_cents", "must be greater than zero")
        violations.check(self.min_spend_cents >= 0, "min_spend_cents", "must not be negative")
        if self.expire_time is None:
            violations.add("expire_time", "is required")
        elif self.expire_time <= now:
            violations.add("expire_time", "must be in the future")


def coupon_redemption(
    programme: Programme,
    *,
    code: str,
    member_id: str,
    order_id: str,
    order_amount_cents: int,
    store_id: str,
    member_code: str,
) -> None:
    violations = Violations()
    violations.text(code, "code", max_length=MAX_COUPON_CODE_LENGTH)
    _required(violations, member_id=member_id, order_id=order_id)
    _optional(violations, store_id=store_id)
    _amount(violations, order_amount_cents, "order_amount_cents", programme)
    _member_code(violations, member_code)
    violations.raise_if_any()


def coupon_release(code: str, order_id: str) -> None:
    violations = Violations()
    violations.text(code, "code", max_length=MAX_COUPON_CODE_LENGTH)
    _required(violations, order_id=order_id)
    violations.raise_if_any()


def engagement(customer_id: str, store_id: str, event_type: EngagementEvent | None) -> None:
    violations = Violations()
    _required(violations, customer_id=customer_id)
    _optional(violations, store_id=store_id)
    violations.check(
        event_type is not None, "event_type", f"must be {', '.join(e.value for e in EngagementEvent)}"
    )
    violations.raise_if_any()


@dataclass
class TagChange:
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    @classmethod
    def checked(
        cls, add: Sequence[str], remove: Sequence[str], violations: Violations | None = None
    ) -> TagChange:
        """The change, once every problem with it (and with the rest of the request, collected in
        `violations`) is found none."""
        violations = violations or Violations()
        change = cls.collected(add, remove, violations)
        violations.raise_if_any()
        return change

    @classmethod
    def collected(cls, add: Sequence[str], remove: Sequence[str], violations: Violations) -> TagChange:
        """The change, its problems added to `violations` (under its request's path in a batch)."""
        for name, tags in (("add_tags", add), ("remove_tags", remove)):
            if len(tags) > MAX_TAGS_PER_CALL:
                violations.add(name, f"at most {MAX_TAGS_PER_CALL} tags a call")
                continue
            for index, tag in enumerate(tags):
                violations.within(name, index).text(tag, "", max_length=MAX_TAG_LENGTH)
        both = sorted(set(add) & set(remove))
        if both:
            violations.add("remove_tags", f"a tag cannot be added and removed at once: {', '.join(both)}")
        return cls(sorted(set(add)), sorted(set(remove)))


def tag_update(member_id: str, add: Sequence[str], remove: Sequence[str]) -> TagChange:
    violations = Violations()
    _required(violations, member_id=member_id)
    return TagChange.checked(add, remove, violations)


def batch(count: int, check: Callable[[int, Violations], None]) -> None:
    """A batch request (AIP-233): 1 to MAX_BATCH requests, each checked by `check(its index, the
    violations named below requests[index])`; every problem of every request in one answer."""
    violations = Violations()
    if count == 0:
        violations.add("requests", "at least one request is needed")
    elif count > MAX_BATCH:
        violations.add("requests", f"at most {MAX_BATCH} requests a call")
    else:
        for index in range(count):
            check(index, violations.within("requests", index))
    violations.raise_if_any()


def merge(survivor_customer_id: str, merged_customer_id: str, request_id: str) -> None:
    violations = Violations()
    _required(violations, survivor_customer_id=survivor_customer_id, merged_customer_id=merged_customer_id)
    violations.text(request_id, "request_id", max_length=MAX_REQUEST_ID_LENGTH)
    if survivor_customer_id and survivor_customer_id == merged_customer_id:
        violations.add("merged_customer_id", "a customer cannot be merged into itself")
    violations.raise_if_any()


@dataclass(frozen=True)
class PointsEarn:
    """One request of a BatchEarnPoints: as EarnPoints takes it."""

    member_id: str
    source_id: str
    spend_cents: int
    store_id: str = ""


@dataclass(frozen=True)
class PointsGrant:
    """One request of a BatchGrantPoints: as GrantPoints takes it."""

    member_id: str
    points: int
    source_id: str
    reason: str = ""


@dataclass(frozen=True)
class TagUpdate:
    """One request of a BatchUpdateTags: as UpdateTags takes it."""

    member_id: str
    add: Sequence[str] = ()
    remove: Sequence[str] = ()
