"""Each running service answers Prometheus scrapes with its calls and its own figures."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from quanyu.auth import Role
from quanyu.common.v1 import common_pb2
from quanyu.config import SERVICE_NAMES
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from tests.orders.platform import Platform, platform


def families(running: Platform, service: str) -> set[str]:
    """Every metric the service declares, observed yet or not, as its `# TYPE` lines name it."""
    port = running.env[f"QUANYU_{service.upper()}__METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def scrape(running: Platform, service: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    port = running.env[f"QUANYU_{service.upper()}__METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(
        v for found, v in samples.get(name, []) if all(found.get(k) == want for k, want in labels.items())
    )


def test_every_service_exports_its_calls_and_its_own_figures(tmp_path: Path) -> None:
    with platform(tmp_path) as running:
        ops = running.token(Role.OPS)
        running.fulfilment.UpsertStore(
            fulfilment_pb2.UpsertStoreRequest(
                store=fulfilment_pb2.Store(
                    store_id="SH-1",
                    name="SH-1",
                    location=common_pb2.LatLng(latitude=31.23, longitude=121.47),
                    delivery_radius_m=5000,
                )
            ),
            metadata=ops,
        )
        running.fulfilment.SetStock(
            fulfilment_pb2.SetStockRequest(
                store_id="SH-1", levels=[fulfilment_pb2.SkuQuantity(sku="tea", on_hand=5)]
            ),
            metadata=ops,
        )
        order = running.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(
                request_id="metrics-1",
                phone="13800138000",
                channel=common_pb2.CHANNEL_APP,
                fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
                lines=[common_pb2.Line(sku="tea", quantity=1, unit_price_cents=2500)],
                delivery_location=common_pb2.LatLng(latitude=31.2301, longitude=121.4702),
                delivery_address="1 Renmin Road",
            ),
            metadata=ops,
        ).order
        member = running.membership.GetMember(
            membership_pb2.GetMemberRequest(member_id=order.member_id), metadata=ops
        ).member
        running.membership.EarnPoints(
            membership_pb2.EarnPointsRequest(
                member_id=member.member_id, source_id="gift-1", spend_cents=10_000
            ),
            metadata=ops,
        )

        fulfilment = scrape(running, "fulfilment")
        assert value(fulfilment, "grpc_server_handled_total", grpc_method="AssignStore", grpc_code="OK") == 1
        assert value(fulfilment, "grpc_server_handling_seconds_count", grpc_method="AssignStore") == 1
        assert value(fulfilment, "quanyu_assignments_total", outcome="ASSIGNED") == 1
        assert value(fulfilment, "quanyu_reservations_open") == 1
        assert 0 < value(fulfilment, "quanyu_reservations_oldest_seconds") < 120
        # The conventional names and labels, so stock gRPC dashboards read them.
        assert (
            value(
                fulfilment,
                "grpc_server_handled_total",
                grpc_type="unary",
                grpc_service="quanyu.fulfilment.v1.FulfilmentService",
                grpc_method="AssignStore",
                grpc_code="OK",
            )
            == 1
        )
        assert value(fulfilment, "grpc_server_started_total", grpc_method="AssignStore") == 1

        membership = scrape(running, "membership")
        assert value(membership, "quanyu_points_earned_total") == 100
        assert value(membership, "grpc_server_handled_total", grpc_method="Enroll", grpc_code="OK") == 1

        orders = scrape(running, "orders")
        assert value(orders, "quanyu_orders", status="ASSIGNED") == 1
        assert value(orders, "grpc_server_handled_total", grpc_method="CreateOrder", grpc_code="OK") == 1
        assert "quanyu_outbox_lag_seconds" in orders
        assert "quanyu_outbox_undelivered" in orders

        identity = scrape(running, "identity")
        assert (
            value(identity, "grpc_server_handled_total", grpc_method="ResolveCustomer", grpc_code="OK") == 1
        )


MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "components" / "monitoring"
# Series Prometheus makes itself, not the services.
PROMETHEUS_OWN = {"up"}


def named_series(text: str) -> set[str]:
    """The metric names an alert or a panel reads: identifiers before a selector or a range,
    leaving out recording rules (with a colon), functions and label names."""
    names = set(re.findall(r"(?<![\w:])([a-z_][a-z0-9_]*)(?=\{|\[)", text))
    return names - {"by", "without", "on", "ignoring"}


def family_of(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_series_the_alerts_and_the_dashboard_read_is_one_a_service_exports(tmp_path: Path) -> None:
    rules = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    expressions = [rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"]]
    dashboard = json.loads((MONITORING / "dashboards" / "quanyu.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    wanted = {family_of(name) for expr in expressions for name in named_series(expr)} - PROMETHEUS_OWN
    assert {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
        "quanyu_outbox_lag_seconds",
    } <= wanted
    with platform(tmp_path) as running:
        exported = set().union(*(families(running, name) for name in SERVICE_NAMES))
    # A counter's TYPE line names it without _total.
    exported |= {f"{name}_total" for name in exported}
    assert wanted <= exported, sorted(wanted - exported)
