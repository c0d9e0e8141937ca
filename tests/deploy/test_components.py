"""The optional components of deploy/k8s (monitoring, the edge, network policies, the collector),
rendered on each overlay and all at once, valid against the Kubernetes schemas and the CRDs they
use, and doing what an operator relies on: every service scraped and alerted on, every gRPC
service reachable through the edge, each service reachable by its callers only."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import promql_parser
import pytest
import yaml

from quanyu import tracing
from quanyu.config import SERVICE_NAMES
from tests.deploy.test_kubernetes import (
    GRPC_PORTS,
    K8S,
    KUBERNETES_VERSIONS,
    METRICS_PORTS,
    ROOT,
    Manifest,
    kustomize_command,
    of_kind,
    pod,
    render,
    server,
)

COMPONENTS = ("monitoring", "edge-gateway", "edge-nginx", "network-policies", "otel-collector")
EVERYTHING = "overlays/prod+" + "+".join(f"components/{c}" for c in COMPONENTS)
VARIANTS = (
    *(f"overlays/prod+components/{c}" for c in COMPONENTS),
    EVERYTHING,
    EVERYTHING.replace("overlays/prod", "overlays/dev"),
    # With mutual TLS too: the components must not trip over its patches.
    EVERYTHING + "+components/mtls",
)
SCHEMAS = Path(__file__).parent / "schemas"
VALIDATORS = ROOT / ".tools" / "node_modules"
README = ROOT / "deploy" / "README.md"
CUSTOM_GROUPS = ("gateway.networking.k8s.io/", "monitoring.coreos.com/")


def custom(manifest: Manifest) -> bool:
    return str(manifest["apiVersion"]).startswith(CUSTOM_GROUPS)


def validate_custom(objects: list[Manifest]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (VALIDATORS / "@kubernetes-models" / "gateway-api").is_dir():
        pytest.skip("no CRD validators: `make crd-validators` installs them (needs npm)")
    done = subprocess.run(
        [node, str(SCHEMAS / "validate.mjs"), str(VALIDATORS)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def service_names_in_protos() -> dict[str, str]:
    """Each Quanyu service and the full name of its gRPC service, from the .proto files."""
    found = {}
    for name in SERVICE_NAMES:
        (proto,) = (ROOT / "protos" / "quanyu" / name / "v1").glob("*.proto")
        text = proto.read_text()
        package = re.search(r"^package ([\w.]+);", text, re.M)
        service = re.search(r"^service (\w+) \{", text, re.M)
        assert package
        assert service
        found[name] = f"{package[1]}.{service[1]}"
    return found


@functools.cache
def call_graph() -> dict[str, set[str]]:
    """Which services each service calls, as its code opens channels to them."""
    graph: dict[str, set[str]] = {}
    for name in SERVICE_NAMES:
        code = "\n".join(p.read_text() for p in (ROOT / "services" / name).rglob("*.py"))
        graph[name] = set(re.findall(r'service_channel\(\s*settings,\s*"(\w+)"', code)) - {name}
    return graph


# ---- valid objects


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_is_valid_against_kubernetes_or_its_crd(variant: str) -> None:
    objects = render(variant)
    failures = []
    for manifest in (m for m in objects if not custom(m)):
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                failures.append(f"{manifest['kind']}/{manifest['metadata']['name']} on {version}: {error}")
    crds = [m for m in objects if custom(m)]
    failures += [f"{r['kind']}/{r['name']}: {r['error']}" for r in validate_custom(crds) if r["error"]]
    assert not failures, "\n".join(failures)
    # Everything lands in the platform's namespace, the Namespace itself aside.
    assert {m["metadata"].get("namespace") for m in objects if m["kind"] != "Namespace"} == {"quanyu"}


def test_the_crd_validators_refuse_what_the_api_server_would() -> None:
    route = next(m for m in render(EVERYTHING) if m["kind"] == "GRPCRoute")
    wrong_match = json.loads(json.dumps(route))
    wrong_match["spec"]["rules"][0]["matches"][0]["method"]["type"] = "Prefix"
    monitor = next(m for m in render(EVERYTHING) if m["kind"] == "PodMonitor")
    wrong_interval = json.loads(json.dumps(monitor))
    wrong_interval["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    rule = next(m for m in render(EVERYTHING) if m["kind"] == "PrometheusRule")
    no_expression = json.loads(json.dumps(rule))
    del no_expression["spec"]["groups"][0]["rules"][0]["expr"]
    results = validate_custom([wrong_match, wrong_interval, no_expression])
    assert all(r["error"] for r in results), results


def test_the_crd_validators_refuse_a_misspelt_field() -> None:
    """The API server prunes a field its CRD does not know unless the client asks for strict field
    validation (kubectl does; GitOps controllers and client libraries often do not), and the setting
    the field meant goes with it, silently: an alert that never waits its `for`, a route with no
    host. The validators refuse it."""
    objects = render(EVERYTHING)
    route = json.loads(json.dumps(next(m for m in objects if m["kind"] == "GRPCRoute")))
    route["spec"]["hostname"] = route["spec"].pop("hostnames", ["grpc.example.com"])
    monitor = json.loads(json.dumps(next(m for m in objects if m["kind"] == "PodMonitor")))
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    endpoint["intervall"] = endpoint.pop("interval", "30s")
    rule = json.loads(json.dumps(next(m for m in objects if m["kind"] == "PrometheusRule")))
    alert = next(r for r in rule["spec"]["groups"][0]["rules"] if "for" in r)
    alert["fro"] = alert.pop("for")
    results = validate_custom([route, monitor, rule])
    for result, misspelt in zip(results, ("hostname", "intervall", "fro"), strict=True):
        assert misspelt in (result["error"] or ""), result
    # Unchanged, the same objects pass.
    originals = [next(m for m in objects if m["kind"] == kind) for kind in ("GRPCRoute", "PodMonitor")]
    assert [r["error"] for r in validate_custom(originals)] == [None, None]


def test_every_alert_and_dashboard_query_is_valid_promql() -> None:
    """Parsed by Prometheus's parser as ported to Rust (promql-parser), with its type checks: a
    rule whose expression does not parse is refused by the operator's admission webhook, or, where
    none runs, fails at every evaluation without firing."""
    objects = render("overlays/prod+components/monitoring")
    (rule,) = of_kind(objects, "PrometheusRule").values()
    expressions = {
        r.get("alert") or r["record"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]
    }
    dashboard = json.loads(of_kind(objects, "ConfigMap")["quanyu-grafana-dashboard"]["data"]["quanyu.json"])
    for panel in dashboard["panels"]:
        for number, query in enumerate(panel.get("targets", [])):
            # Grafana fills its own variables in before Prometheus sees the query.
            expr = query["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m")
            expressions[f"{panel['title']} #{number}"] = expr
    assert len(expressions) > len(ALERTS)
    problems = {}
    for name, expr in expressions.items():
        try:
            promql_parser.parse(expr)
        except ValueError as error:
            problems[name] = f"{error}: {expr}"
    assert not problems, problems
    # What the parser refuses: a range function given an instant vector, a bracket left open.
    for wrong, why in (
        ("rate(grpc_server_handled_total) > 0", "expected type matrix"),
        ("sum by (job) (up", "unclosed left parenthesis"),
    ):
        with pytest.raises(ValueError, match=why):
            promql_parser.parse(wrong)


# ---- monitoring


def test_every_service_is_scraped_on_its_metrics_port() -> None:
    objects = render("overlays/prod+components/monitoring")
    monitors = of_kind(objects, "PodMonitor")
    assert set(monitors) == set(SERVICE_NAMES)
    for name, deployment in of_kind(objects, "Deployment").items():
        spec = monitors[name]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        # No other service's pods are picked up.
        for other, other_deployment in of_kind(objects, "Deployment").items():
            if other != name:
                other_labels = other_deployment["spec"]["template"]["metadata"]["labels"]
                assert not spec["selector"]["matchLabels"].items() <= other_labels.items()
        (endpoint,) = spec["podMetricsEndpoints"]
        ports = {p["name"]: p["containerPort"] for p in server(deployment)["ports"]}
        assert ports[endpoint["port"]] == METRICS_PORTS[name]
        assert endpoint["path"] == "/metrics"
        # up{job="orders"}: the job is the service's name, as the alerts and the dashboard say.
        assert labels[spec["jobLabel"]] == name


ALERTS = {
    "QuanyuServiceDown",
    "QuanyuServiceAbsent",
    "QuanyuErrorRatioHigh",
    "QuanyuLatencyHigh",
    "QuanyuOutboxLagging",
    "QuanyuOutboxFailedEffects",
    "QuanyuReservationsStuckOpen",
    "QuanyuMarketingBudgetExhausted",
    "QuanyuMarketingMessageBacklog",
}


def test_each_alert_has_a_severity_and_a_runbook_in_the_operators_guide() -> None:
    (rule,) = of_kind(render("overlays/prod+components/monitoring"), "PrometheusRule").values()
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}
    assert set(alerts) == ALERTS
    guide = README.read_text()
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"]), name
        anchor = alert["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower()
        # A heading of its own, so the anchor lands on it, with what to do underneath.
        section = re.search(rf"^#+ {name}\n+(.+?)(?=^#)", guide, re.M | re.S)
        assert section, f"deploy/README.md has no section for {name}"
        assert len(section[1].split()) >= 20, f"{name}: the runbook says what to do"
    # Every service's down alert covers all five.
    down = alerts["QuanyuServiceAbsent"]["expr"]
    assert all(f'job="{name}"' in down for name in SERVICE_NAMES)
    assert all(name in alerts["QuanyuServiceDown"]["expr"] for name in SERVICE_NAMES)


def test_the_dashboard_is_loaded_by_grafanas_sidecar_and_shows_what_ops_watch() -> None:
    maps = of_kind(render("overlays/prod+components/monitoring"), "ConfigMap")
    dashboard_map = maps["quanyu-grafana-dashboard"]
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_map["data"]["quanyu.json"])
    assert dashboard["uid"] == "quanyu-overview"
    titles = {panel["title"]: panel for panel in dashboard["panels"]}
    for wanted, series in (
        ("Orders per minute by status", "quanyu_orders"),
        ("Assignment outcomes per minute", "quanyu_assignments_total"),
        ("RPC latency p99 by method", "grpc_server_handling_seconds_bucket"),
        ("Outbox lag (oldest undelivered effect)", "quanyu_outbox_lag_seconds"),
    ):
        assert any(series in target["expr"] for target in titles[wanted]["targets"]), wanted
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# ---- the edge


def test_the_grpc_route_sends_each_grpc_service_to_its_kubernetes_service_over_tls() -> None:
    objects = render("overlays/prod+components/edge-gateway")
    (gateway,) = of_kind(objects, "Gateway").values()
    (route,) = of_kind(objects, "GRPCRoute").values()
    (listener,) = gateway["spec"]["listeners"]
    assert (listener["protocol"], listener["port"], listener["tls"]["mode"]) == ("HTTPS", 443, "Terminate")
    assert listener["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "quanyu-edge-tls"}]
    assert route["spec"]["parentRefs"] == [
        {"name": gateway["metadata"]["name"], "sectionName": listener["name"]}
    ]
    services = of_kind(objects, "Service")
    routed = {}
    for rule in route["spec"]["rules"]:
        ((match,), (backend,)) = rule["matches"], rule["backendRefs"]
        assert match["method"]["type"] == "Exact"
        assert "method" not in match["method"], "every method of the service"
        routed[match["method"]["service"]] = (backend["name"], backend["port"])
    expected = {
        grpc: (name, services[name]["spec"]["ports"][0]["port"])
        for name, grpc in service_names_in_protos().items()
    }
    assert routed == expected
    assert all(port == GRPC_PORTS[name] for name, port in routed.values())


def test_the_nginx_edge_speaks_grpc_to_the_services_and_limits_each_caller() -> None:
    objects = render("overlays/prod+components/edge-nginx")
    services = of_kind(objects, "Service")
    grpc_names = service_names_in_protos()
    ingresses = of_kind(objects, "Ingress")
    assert len(ingresses) == len(SERVICE_NAMES)
    routed = {}
    for ingress in ingresses.values():
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
        assert int(annotations["nginx.ingress.kubernetes.io/limit-rps"]) > 0
        assert int(annotations["nginx.ingress.kubernetes.io/limit-connections"]) > 0
        (tls,) = ingress["spec"]["tls"]
        assert tls["secretName"] == "quanyu-edge-tls"
        (rule,) = ingress["spec"]["rules"]
        assert rule["host"] in tls["hosts"]
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert path["pathType"] == "Prefix"
            routed[path["path"]] = (backend["name"], backend["port"]["number"])
    assert routed == {
        f"/{grpc}/": (name, services[name]["spec"]["ports"][0]["port"]) for name, grpc in grpc_names.items()
    }


# ---- network policies


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    return bool(selector.get("matchLabels", {}).items() <= labels.items()) and not selector.get(
        "matchExpressions"
    )


def allowed_ports(rules: list[Manifest], key: str, peer: dict[str, str]) -> set[int]:
    """The ports the rules open towards (or from) a pod of the namespace with these labels."""
    ports: set[int] = set()
    for rule in rules:
        peers = rule.get(key)
        in_namespace = [p for p in peers or [] if "namespaceSelector" not in p and "ipBlock" not in p]
        if peers is None or any(selects(p["podSelector"], peer) for p in in_namespace):
            ports |= {p["port"] for p in rule.get("ports", [])} or {0}
    return ports


def policies_for(policies: list[Manifest], labels: dict[str, str]) -> list[Manifest]:
    return [p for p in policies if selects(p["spec"]["podSelector"], labels)]


def test_each_service_is_reached_by_its_callers_only_and_reaches_only_its_callees() -> None:
    objects = render("overlays/prod+components/network-policies")
    policies = list(of_kind(objects, "NetworkPolicy").values())
    pods = {
        name: d["spec"]["template"]["metadata"]["labels"]
        for name, d in of_kind(objects, "Deployment").items()
    }
    graph = call_graph()
    assert graph["orders"] >= {"identity", "membership", "fulfilment"}, "the call graph is read from the code"
    for source, source_labels in pods.items():
        for target, target_labels in pods.items():
            if source == target:
                continue
            port = GRPC_PORTS[target]
            egress = [r for p in policies_for(policies, source_labels) for r in p["spec"].get("egress", [])]
            ingress = [r for p in policies_for(policies, target_labels) for r in p["spec"].get("ingress", [])]
            goes_out = port in allowed_ports(egress, "to", target_labels)
            comes_in = port in allowed_ports(ingress, "from", source_labels)
            assert (goes_out and comes_in) == (target in graph[source]), f"{source} -> {target}:{port}"
    # Everything not allowed is denied: a policy selecting every pod for both directions.
    (deny,) = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]


def test_the_edge_reaches_every_service_and_prometheus_its_metrics_alone() -> None:
    objects = render("overlays/prod+components/network-policies")
    policies = of_kind(objects, "NetworkPolicy")
    for name in SERVICE_NAMES:
        ingress = policies[name]["spec"]["ingress"]
        edge = [
            r
            for r in ingress
            if {"namespaceSelector": {"matchLabels": {"quanyu.io/edge": "true"}}} in r["from"]
        ]
        assert [p["port"] for r in edge for p in r["ports"]] == [GRPC_PORTS[name]]
        monitoring = [
            r for r in ingress if any("namespaceSelector" in p for p in r["from"]) and r not in edge
        ]
        assert [p["port"] for r in monitoring for p in r["ports"]] == [METRICS_PORTS[name]]
        assert monitoring[0]["from"] == [
            {"namespaceSelector": {"matchLabels": {"quanyu.io/monitoring": "true"}}}
        ]
        egress = policies[name]["spec"]["egress"]
        outside = {
            p["port"] for r in egress if any("ipBlock" in t for t in r.get("to", [])) for p in r["ports"]
        }
        assert outside == {5432}, f"{name}: only the database outside the cluster"
        assert any(p["port"] == 53 for r in egress for p in r["ports"]), f"{name}: DNS"
    migrate = policies["quanyu-migrate"]["spec"]
    assert "ingress" not in migrate
    assert {p["port"] for r in migrate["egress"] for p in r["ports"]} == {53, 5432}


# ---- traces


def test_the_collector_component_points_every_service_at_the_collector() -> None:
    objects = render("overlays/prod+components/otel-collector")
    config = of_kind(objects, "ConfigMap")
    (quanyu_config,) = [m for name, m in config.items() if name.startswith("quanyu-config")]
    endpoint = quanyu_config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert tracing.otlp_endpoint_from(quanyu_config["data"]) == endpoint
    host, port = endpoint.removeprefix("http://").split(":")
    service = of_kind(objects, "Service")[host]
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    collector = of_kind(objects, "Deployment")["otel-collector"]
    assert service["spec"]["selector"].items() <= collector["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod(collector)["containers"]
    assert re.search(r":\d+\.\d+\.\d+$", container["image"]), "a pinned collector"
    (volume,) = pod(collector)["volumes"]
    (collector_config,) = [m for name, m in config.items() if name == volume["configMap"]["name"]]
    settings = yaml.safe_load(collector_config["data"]["collector.yaml"])
    assert settings["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(f":{port}")
    assert settings["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    # Every Quanyu container reads that ConfigMap.
    for name, deployment in of_kind(objects, "Deployment").items():
        if name in SERVICE_NAMES:
            sources = [s.get("configMapRef", {}).get("name") for s in server(deployment)["envFrom"]]
            assert quanyu_config["metadata"]["name"] in sources


def test_compose_can_send_every_services_spans_to_a_collector() -> None:
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    extra = yaml.safe_load((ROOT / "deploy" / "compose.otel.yaml").read_text())
    collector = extra["services"]["otel-collector"]
    assert all(port.startswith("127.0.0.1:") for port in collector["ports"]), "OTLP not open to the network"
    (mount,) = collector["volumes"]
    assert (ROOT / mount.split(":")[0]).resolve() == K8S / "components" / "otel-collector" / "collector.yaml"
    quanyu = {name for name in base["services"] if name != "postgres"}
    assert quanyu <= set(extra["services"])
    for name in quanyu:
        environment = extra["services"][name]["environment"]
        assert tracing.otlp_endpoint_from(environment) == "http://otel-collector:4317", name


def test_the_overlay_the_operators_guide_shows_renders_with_every_component(tmp_path: Path) -> None:
    """Step 6 of deploy/README.md, as written, on a copy of deploy/k8s."""
    guide = README.read_text()
    block = re.search(r"# overlays/chain/kustomization.yaml\n(.*?)\n +```", guide, re.S)
    assert block, "the guide shows an overlay"
    kustomization = yaml.safe_load(
        re.sub(r"^   ", "", block[1], flags=re.M).replace("sha256:…", "sha256:" + "0" * 64)
    )
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    chain = copy / "overlays" / "chain"
    chain.mkdir()
    (chain / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    objects = render_directory(chain)
    assert {c.split("/")[-1] for c in kustomization["components"]} <= set(COMPONENTS)
    policies = of_kind(objects, "NetworkPolicy")
    for name in (*SERVICE_NAMES, "quanyu-migrate"):
        blocks = [
            t["ipBlock"]["cidr"]
            for r in policies[name]["spec"]["egress"]
            for t in r.get("to", [])
            if "ipBlock" in t
        ]
        assert blocks == ["10.20.0.15/32"], name
    hosts = {
        rule["host"] for ingress in of_kind(objects, "Ingress").values() for rule in ingress["spec"]["rules"]
    }
    assert hosts == {"grpc.your-chain.cn"}


def render_directory(directory: Path) -> tuple[Manifest, ...]:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize to render the overlays")
    built = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert built.returncode == 0, built.stderr
    return tuple(document for document in yaml.safe_load_all(built.stdout) if document)
