"""The batch use cases (issue_coupons, grant_many, update_tags_many) over stores in memory and
over a database whose first attempt meets a conflict: all of a batch or none of it, each request
as its single form, counted once however often the transaction runs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from quanyu.errors import InvalidArgument, NotFound
from services.membership.domain import requests
from services.membership.domain.coupons import CODE_ALPHABET, CODE_LENGTH
from services.membership.handlers import MembershipService
from services.membership.handlers.coupons import new_coupon_code
from tests.membership import test_use_cases
from tests.membership.test_use_cases import START, counted, enrol, in_memory

# The service whose first attempt at each transaction meets a conflict, on SQLite and PostgreSQL.
retried = test_use_cases.retried

EXPIRE = START + timedelta(days=30)


def issue(member_id: str, request_id: str, discount: int = 500) -> requests.CouponIssue:
    return requests.CouponIssue(member_id, discount, 0, EXPIRE, request_id, "cmp-1")


def test_coupons_refused_half_way_leave_nothing_behind() -> None:
    service, _, stores = in_memory()
    first, second = enrol(service, "cus-1"), enrol(service, "cus-2")
    with pytest.raises(NotFound) as missing:
        service.issue_coupons([issue(first, "r-1"), issue(second, "r-2"), issue("mem-nobody", "r-3")])
    assert missing.value.metadata["request"] == "requests[2]"
    assert stores.coupons.by_code == {}


def test_a_batch_refused_half_way_is_rolled_back(retried: MembershipService) -> None:
    first, second = enrol(retried, "cus-1"), enrol(retried, "cus-2")
    with pytest.raises(InvalidArgument) as reused:
        retried.grant_many(
            [
                requests.PointsGrant(first, 10, "g-1"),
                requests.PointsGrant(second, 10, "g-2"),
                requests.PointsGrant(second, 11, "g-1"),
            ]
        )
    assert [v.field for v in reused.value.violations] == ["requests[2].source_id"]
    assert retried.uow.read(lambda tx: tx.stores.ledger.by_key("grant:g-1")) is None

    with pytest.raises(NotFound):
        retried.update_tags_many([requests.TagUpdate(first, ["vip"]), requests.TagUpdate("mem-x", ["vip"])])
    member = retried.uow.read(lambda tx: tx.stores.members.get(first))
    assert member is not None
    assert member.tags == []


def test_every_problem_of_every_request_is_named_in_one_answer() -> None:
    service, _, _ = in_memory()
    with pytest.raises(InvalidArgument) as refused:
        service.update_tags_many(
            [
                requests.TagUpdate("", ["a"]),
                requests.TagUpdate("mem-1", ["a", ""], ["a"]),
            ]
        )
    assert sorted(v.field for v in refused.value.violations) == [
        "requests[0].member_id",
        "requests[1].add_tags[1]",
        "requests[1].remove_tags",
    ]


def test_a_batch_run_again_after_a_conflict_issues_and_counts_once(retried: MembershipService) -> None:
    members = [enrol(retried, f"cus-{n}") for n in range(3)]
    granted = counted("quanyu_points_granted")
    entries = retried.grant_many([requests.PointsGrant(m, 25, f"cmp-1:{m}") for m in members])
    assert [e.points for e in entries] == [25, 25, 25]
    assert counted("quanyu_points_granted") - granted == 75
    assert [
        e.entry_id for e in retried.grant_many([requests.PointsGrant(m, 25, f"cmp-1:{m}") for m in members])
    ] == [e.entry_id for e in entries]
    assert counted("quanyu_points_granted") - granted == 75

    coupons = retried.issue_coupons([issue(m, f"cmp-1:{m}") for m in members])
    assert [c.member_id for c in coupons] == members
    again = retried.issue_coupons([issue(m, f"cmp-1:{m}") for m in members])
    assert [c.code for c in again] == [c.code for c in coupons]


def test_coupon_codes_are_drawn_evenly_from_the_alphabet() -> None:
    # A random byte picks a character without bias only when the alphabet's size divides 256.
    assert 256 % len(CODE_ALPHABET) == 0
    codes = [new_coupon_code() for _ in range(2_000)]
    assert all(len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET) for code in codes)
    assert set("".join(codes)) == set(CODE_ALPHABET)
    assert len(set(codes)) == len(codes)
