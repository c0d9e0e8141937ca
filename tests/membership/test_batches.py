"""The batch RPCs (AIP-233) over gRPC, on SQLite and PostgreSQL: BatchIssueCoupons,
BatchGrantPoints, BatchUpdateTags and BatchEarnPoints act as their single forms do on each request, all in one
transaction; a retried batch changes nothing, one bad request refuses them all naming its path."""

from __future__ import annotations

from datetime import timedelta

import grpc

from quanyu.clients import error_reason, field_violations
from tests.membership import test_grpc
from tests.membership.test_grpc import (
    START,
    Meta,
    Stub,
    enroll,
    failure,
    ledger,
    member,
    merge,
    pb,
    stamp,
)

# The membership server and callers of test_grpc, under the names its tests take them by.
start, m, stub, ops, svc = test_grpc.start, test_grpc.m, test_grpc.stub, test_grpc.ops, test_grpc.svc

EXPIRE = stamp(START + timedelta(days=30))


def coupon_request(member_id: str, request_id: str, discount: int = 500) -> pb.IssueCouponRequest:
    return pb.IssueCouponRequest(
        member_id=member_id,
        discount_cents=discount,
        expire_time=EXPIRE,
        request_id=request_id,
        campaign_id="cmp-1",
    )


def coupons_of(stub: Stub, meta: Meta, member_id: str) -> list[str]:
    listed = stub.ListCoupons(pb.ListCouponsRequest(member_id=member_id, page_size=100), metadata=meta)
    return sorted(c.code for c in listed.coupons)


def test_a_batch_of_coupons_is_issued_in_order_and_a_retry_answers_the_same_coupons(
    stub: Stub, ops: Meta
) -> None:
    members = [enroll(stub, ops, f"cus-{n}").member_id for n in range(5)]
    batch = pb.BatchIssueCouponsRequest(
        requests=[coupon_request(member_id, f"cmp-1:{member_id}") for member_id in members]
    )
    issued = list(stub.BatchIssueCoupons(batch, metadata=ops).coupons)
    assert [c.member_id for c in issued] == members
    assert all(c.discount_cents == 500 and c.campaign_id == "cmp-1" for c in issued)
    assert len({c.code for c in issued}) == 5
    assert [coupons_of(stub, ops, member_id) for member_id in members] == [[c.code] for c in issued]

    again = list(stub.BatchIssueCoupons(batch, metadata=ops).coupons)
    assert [c.code for c in again] == [c.code for c in issued]
    assert [coupons_of(stub, ops, member_id) for member_id in members] == [[c.code] for c in issued]
    # The single call under one of the batch's request ids is a retry too, and vice versa.
    single = stub.IssueCoupon(coupon_request(members[2], f"cmp-1:{members[2]}"), metadata=ops).coupon
    assert single.code == issued[2].code
    # One request id twice in a batch is one coupon.
    twice = pb.BatchIssueCouponsRequest(requests=[coupon_request(members[0], "x-1")] * 2)
    first, second = stub.BatchIssueCoupons(twice, metadata=ops).coupons
    assert first.code == second.code
    assert len(coupons_of(stub, ops, members[0])) == 2


def test_one_bad_coupon_request_refuses_the_whole_batch_naming_its_path(stub: Stub, ops: Meta) -> None:
    members = [enroll(stub, ops, f"cus-{n}").member_id for n in range(3)]
    good = [coupon_request(member_id, f"r-{member_id}") for member_id in members]

    no_expiry = pb.IssueCouponRequest(member_id=members[2], discount_cents=500, request_id="r-bad")
    error = failure(stub.BatchIssueCoupons, pb.BatchIssueCouponsRequest(requests=[*good[:2], no_expiry]), ops)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert dict(field_violations(error)) == {"requests[2].expire_time": "is required"}

    bad_discount = coupon_request(members[1], "r-zero", discount=0)
    error = failure(
        stub.BatchIssueCoupons, pb.BatchIssueCouponsRequest(requests=[good[0], bad_discount]), ops
    )
    assert set(dict(field_violations(error))) == {"requests[1].discount_cents"}

    unknown = coupon_request("mem-nobody", "r-nobody")
    error = failure(stub.BatchIssueCoupons, pb.BatchIssueCouponsRequest(requests=[*good, unknown]), ops)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "requests[3]" in (error.details() or "")
    assert all(coupons_of(stub, ops, member_id) == [] for member_id in members)

    # A request id reused for another coupon, even when the first was issued alone.
    stub.IssueCoupon(good[0], metadata=ops)
    reused = coupon_request(members[0], good[0].request_id, discount=900)
    error = failure(stub.BatchIssueCoupons, pb.BatchIssueCouponsRequest(requests=[good[1], reused]), ops)
    assert dict(field_violations(error)) == {"requests[1].request_id": "was used for a different coupon"}
    assert error_reason(error) == "REQUEST_ID_REUSED"
    assert coupons_of(stub, ops, members[1]) == []


def test_a_batch_holds_one_to_five_hundred_requests(stub: Stub, ops: Meta) -> None:
    member_id = enroll(stub, ops, "cus-1").member_id
    for call, request in (
        (stub.BatchIssueCoupons, pb.BatchIssueCouponsRequest()),
        (stub.BatchGrantPoints, pb.BatchGrantPointsRequest()),
        (stub.BatchUpdateTags, pb.BatchUpdateTagsRequest()),
        (stub.BatchEarnPoints, pb.BatchEarnPointsRequest()),
        (
            stub.BatchIssueCoupons,
            pb.BatchIssueCouponsRequest(requests=[coupon_request(member_id, f"r-{n}") for n in range(501)]),
        ),
        (
            stub.BatchGrantPoints,
            pb.BatchGrantPointsRequest(
                requests=[pb.GrantPointsRequest(member_id=member_id, points=1, source_id="s")] * 501
            ),
        ),
        (
            stub.BatchEarnPoints,
            pb.BatchEarnPointsRequest(
                requests=[pb.EarnPointsRequest(member_id=member_id, spend_cents=1, source_id="s")] * 501
            ),
        ),
    ):
        error = failure(call, request, ops)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert set(dict(field_violations(error))) == {"requests"}
    full = pb.BatchIssueCouponsRequest(requests=[coupon_request(member_id, f"r-{n}") for n in range(500)])
    assert len(stub.BatchIssueCoupons(full, metadata=ops).coupons) == 500


def test_a_merged_away_member_id_reaches_the_survivor_as_in_the_single_calls(
    stub: Stub, ops: Meta, svc: Meta
) -> None:
    survivor = enroll(stub, ops, "cus-main").member_id
    merged = enroll(stub, ops, "cus-old").member_id
    merge(stub, svc, "cus-main", "cus-old", "merge-1")

    coupon = stub.BatchIssueCoupons(
        pb.BatchIssueCouponsRequest(requests=[coupon_request(merged, "r-1")]), metadata=ops
    ).coupons[0]
    assert coupon.member_id == survivor
    grants = pb.BatchGrantPointsRequest(
        requests=[pb.GrantPointsRequest(member_id=merged, points=40, source_id="cmp-1:a")]
    )
    assert stub.BatchGrantPoints(grants, metadata=ops).entries[0].member_id == survivor
    tags = pb.BatchUpdateTagsRequest(requests=[pb.UpdateTagsRequest(member_id=merged, add_tags=["vip"])])
    assert stub.BatchUpdateTags(tags, metadata=ops).members[0].member_id == survivor
    assert member(stub, ops, survivor).points_balance == 40
    assert list(member(stub, ops, survivor).tags) == ["vip"]


def test_points_are_granted_in_one_batch_and_a_retry_grants_nothing_more(stub: Stub, ops: Meta) -> None:
    first = enroll(stub, ops, "cus-1").member_id
    second = enroll(stub, ops, "cus-2").member_id
    batch = pb.BatchGrantPointsRequest(
        requests=[
            pb.GrantPointsRequest(member_id=first, points=100, source_id="cmp-1:1", reason="welcome"),
            pb.GrantPointsRequest(member_id=second, points=200, source_id="cmp-1:2"),
            pb.GrantPointsRequest(member_id=first, points=30, source_id="cmp-2:1"),
        ]
    )
    entries = list(stub.BatchGrantPoints(batch, metadata=ops).entries)
    assert [(e.member_id, e.points, e.balance_after) for e in entries] == [
        (first, 100, 100),
        (second, 200, 200),
        (first, 30, 130),
    ]
    again = list(stub.BatchGrantPoints(batch, metadata=ops).entries)
    assert [e.entry_id for e in again] == [e.entry_id for e in entries]
    assert (member(stub, ops, first).points_balance, member(stub, ops, second).points_balance) == (130, 200)
    assert len(ledger(stub, ops, first)) == 2

    # One grant refused refuses them all; each is named by its path.
    refused = pb.BatchGrantPointsRequest(
        requests=[
            pb.GrantPointsRequest(member_id=first, points=5, source_id="cmp-3:1"),
            pb.GrantPointsRequest(member_id=second, points=0, source_id="cmp-3:2"),
            pb.GrantPointsRequest(member_id=second, points=5, source_id=""),
        ]
    )
    error = failure(stub.BatchGrantPoints, refused, ops)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(dict(field_violations(error))) == {"requests[1].points", "requests[2].source_id"}
    # A source id already granted with other points, or a member who does not exist, after a grant
    # the batch made: that grant is undone with the rest.
    for bad in (
        pb.GrantPointsRequest(member_id=first, points=99, source_id="cmp-1:1"),
        pb.GrantPointsRequest(member_id="mem-nobody", points=5, source_id="cmp-3:3"),
    ):
        ahead = pb.GrantPointsRequest(member_id=second, points=7, source_id="cmp-3:ahead")
        error = failure(stub.BatchGrantPoints, pb.BatchGrantPointsRequest(requests=[ahead, bad]), ops)
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert "requests[1]" in (error.details() or "")
    assert (member(stub, ops, first).points_balance, member(stub, ops, second).points_balance) == (130, 200)


def test_tags_change_in_one_batch_and_a_bad_tag_refuses_every_change(stub: Stub, ops: Meta) -> None:
    first = enroll(stub, ops, "cus-1").member_id
    second = enroll(stub, ops, "cus-2").member_id
    batch = pb.BatchUpdateTagsRequest(
        requests=[
            pb.UpdateTagsRequest(member_id=first, add_tags=["vip", "tea"]),
            pb.UpdateTagsRequest(member_id=second, add_tags=["coffee"]),
            pb.UpdateTagsRequest(member_id=first, remove_tags=["tea"]),
        ]
    )
    changed = list(stub.BatchUpdateTags(batch, metadata=ops).members)
    assert [list(x.tags) for x in changed] == [["tea", "vip"], ["coffee"], ["vip"]]
    assert [list(x.tags) for x in stub.BatchUpdateTags(batch, metadata=ops).members] == [
        ["tea", "vip"],
        ["coffee"],
        ["vip"],
    ]
    refused = pb.BatchUpdateTagsRequest(
        requests=[
            pb.UpdateTagsRequest(member_id=second, add_tags=["new"]),
            pb.UpdateTagsRequest(member_id=first, add_tags=["ok", "x" * 65]),
        ]
    )
    error = failure(stub.BatchUpdateTags, refused, ops)
    assert set(dict(field_violations(error))) == {"requests[1].add_tags[1]"}
    missing = pb.BatchUpdateTagsRequest(
        requests=[
            pb.UpdateTagsRequest(member_id=second, add_tags=["new"]),
            pb.UpdateTagsRequest(member_id="mem-nobody", add_tags=["new"]),
        ]
    )
    assert failure(stub.BatchUpdateTags, missing, ops).code() is grpc.StatusCode.NOT_FOUND
    assert list(member(stub, ops, second).tags) == ["coffee"]
    assert list(member(stub, ops, first).tags) == ["vip"]


def test_points_are_earned_in_one_batch_as_each_earn_would_and_a_retry_earns_nothing_more(
    stub: Stub, ops: Meta, svc: Meta
) -> None:
    first = enroll(stub, ops, "cus-1").member_id
    second = enroll(stub, ops, "cus-2").member_id
    alone = enroll(stub, ops, "cus-3").member_id
    # What the single call credits for the same spends, to a member of the same tier.
    single = [
        svc_earn(stub, svc, alone, f"alone-{n}", spend).entry.points
        for n, spend in enumerate((12_345, 5_000), 1)
    ]
    batch = pb.BatchEarnPointsRequest(
        requests=[
            pb.EarnPointsRequest(member_id=first, source_id="ord-1", spend_cents=12_345, store_id="SH-1"),
            pb.EarnPointsRequest(member_id=second, source_id="ord-2", spend_cents=12_345),
            pb.EarnPointsRequest(member_id=first, source_id="ord-3", spend_cents=5_000),
        ]
    )
    entries = list(stub.BatchEarnPoints(batch, metadata=svc).entries)
    assert [(e.member_id, e.source_id, e.points) for e in entries] == [
        (first, "ord-1", single[0]),
        (second, "ord-2", single[0]),
        (first, "ord-3", single[1]),
    ]
    assert entries[2].balance_after == sum(single)
    again = list(stub.BatchEarnPoints(batch, metadata=svc).entries)
    assert [e.entry_id for e in again] == [e.entry_id for e in entries]
    assert member(stub, ops, first).points_balance == sum(single)
    assert member(stub, ops, second).points_balance == single[0]

    # One earn refused refuses them all; each is named by its path.
    refused = pb.BatchEarnPointsRequest(
        requests=[
            pb.EarnPointsRequest(member_id=first, source_id="ord-4", spend_cents=100),
            pb.EarnPointsRequest(member_id=second, source_id="ord-5", spend_cents=-1),
            pb.EarnPointsRequest(member_id="", source_id="ord-6", spend_cents=100),
        ]
    )
    error = failure(stub.BatchEarnPoints, refused, svc)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(dict(field_violations(error))) == {"requests[1].spend_cents", "requests[2].member_id"}
    # A source id already earned with another spend, or a member who does not exist, after an earn
    # the batch made: that earn is undone with the rest.
    for bad in (
        pb.EarnPointsRequest(member_id=first, source_id="ord-1", spend_cents=99),
        pb.EarnPointsRequest(member_id="mem-nobody", source_id="ord-7", spend_cents=100),
    ):
        ahead = pb.EarnPointsRequest(member_id=second, source_id="ord-ahead", spend_cents=10_000)
        error = failure(stub.BatchEarnPoints, pb.BatchEarnPointsRequest(requests=[ahead, bad]), svc)
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert "requests[1]" in (error.details() or "")
    assert (member(stub, ops, first).points_balance, member(stub, ops, second).points_balance) == (
        sum(single),
        single[0],
    )


def svc_earn(stub: Stub, svc: Meta, member_id: str, source_id: str, spend: int) -> pb.EarnPointsResponse:
    earned: pb.EarnPointsResponse = stub.EarnPoints(
        pb.EarnPointsRequest(member_id=member_id, source_id=source_id, spend_cents=spend), metadata=svc
    )
    return earned
