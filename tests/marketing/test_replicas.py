"""Two marketing replicas on one database, as production runs them: events spread over both, or the
same event delivered to both at once, grant exactly what the campaign allows, once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.marketing.v1 import marketing_pb2 as pb
from quanyu.marketing.v1 import marketing_pb2_grpc
from tests.conftest import bearer
from tests.processes import free_port, platform_env, started, wait_serving

Stub = marketing_pb2_grpc.MarketingServiceStub
Meta = tuple[tuple[str, str]]


@dataclass
class Replicas:
    stubs: list[Stub]
    ops: Meta
    service: Meta

    def running(self, limits: pb.Limits) -> str:
        made = (
            self.stubs[0]
            .CreateCampaign(
                pb.CreateCampaignRequest(
                    campaign=pb.Campaign(
                        name="Points for an order",
                        trigger=pb.Trigger(event=pb.TRIGGER_EVENT_ORDER_COMPLETED),
                        actions=[pb.Action(grant_points=10)],
                        limits=limits,
                    )
                ),
                metadata=self.ops,
            )
            .campaign
        )
        self.stubs[1].StartCampaign(pb.StartCampaignRequest(campaign_id=made.campaign_id), metadata=self.ops)
        return str(made.campaign_id)

    def results(self, campaign_id: str) -> pb.GetCampaignResultsResponse:
        answer: pb.GetCampaignResultsResponse = self.stubs[0].GetCampaignResults(
            pb.GetCampaignResultsRequest(campaign_id=campaign_id), metadata=self.ops
        )
        return answer


@pytest.fixture
def replicas(tmp_path: Path, database_url: str) -> Iterator[Replicas]:
    """Two `quanyu serve marketing` processes sharing one database and one signing key."""
    var = tmp_path / "var"
    with ExitStack() as stack:
        stubs = []
        for name in ("a", "b"):
            port = free_port()
            env = platform_env(
                var, QUANYU_MARKETING__PORT=str(port), QUANYU_MARKETING__DATABASE_URL=database_url
            )
            process = stack.enter_context(started(["serve", "marketing"], env, tmp_path / f"{name}.log"))
            wait_serving(f"127.0.0.1:{port}", process)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
            stubs.append(Stub(channel))
        codec = TokenCodec.local(var / "token-keys")
        yield Replicas(
            stubs,
            ops=bearer(codec.issue(Principal(Role.OPS, "ops")).token),
            service=bearer(codec.issue(Principal(Role.SERVICE, "orders")).token),
        )


def order(index: int) -> pb.Event:
    return pb.Event(
        event_id=f"orders/{index}",
        order_completed=pb.OrderCompleted(order_id=f"o-{index}", member_id=f"mem-{index}", total_cents=5000),
    )


def test_fifty_orders_over_two_replicas_grant_exactly_the_ten_the_campaign_allows(replicas: Replicas) -> None:
    campaign_id = replicas.running(pb.Limits(max_grants=10))
    events = 50
    gate = threading.Barrier(events)

    def ingest(index: int) -> pb.IngestEventsResponse:
        gate.wait()
        answer: pb.IngestEventsResponse = replicas.stubs[index % 2].IngestEvents(
            pb.IngestEventsRequest(events=[order(index)]), metadata=replicas.service, timeout=60
        )
        return answer

    with ThreadPoolExecutor(events) as pool:
        answers = list(pool.map(ingest, range(events)))
    assert sum(a.accepted for a in answers) == events
    results = replicas.results(campaign_id)
    assert (results.grants, results.members_reached, results.points_granted) == (10, 10, 100)
    assert results.exhausted_limit == "max_grants"


def test_one_event_delivered_to_both_replicas_at_once_grants_once(replicas: Replicas) -> None:
    campaign_id = replicas.running(pb.Limits())
    events = 20
    gate = threading.Barrier(2 * events)

    def deliver(job: tuple[int, int]) -> pb.IngestEventsResponse:
        index, replica = job
        gate.wait()
        answer: pb.IngestEventsResponse = replicas.stubs[replica].IngestEvents(
            pb.IngestEventsRequest(events=[order(index)]), metadata=replicas.service, timeout=60
        )
        return answer

    with ThreadPoolExecutor(2 * events) as pool:
        answers = list(pool.map(deliver, [(i, r) for i in range(events) for r in (0, 1)]))
    assert (sum(a.accepted for a in answers), sum(a.duplicates for a in answers)) == (events, events)
    results = replicas.results(campaign_id)
    assert (results.grants, results.members_reached) == (events, events)
