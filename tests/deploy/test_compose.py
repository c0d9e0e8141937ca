"""docker-compose.yml, the image it builds and the health probe it runs, as an operator relies on them."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from quanyu import probe
from quanyu.config import SERVICE_NAMES, Settings
from quanyu.server import RunningServer, start_server
from services.identity import bootstrap as identity_bootstrap
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_TEMPLATE = ROOT / "deploy" / "compose.env.example"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
PORTS = {"identity": 50051, "membership": 50052, "orders": 50053, "fulfilment": 50054, "marketing": 50055}
SECRET_VARIABLES = ("QUANYU_SIGNING_KEY", "QUANYU_PHONE_HASH_KEY", "PGPASSWORD", "POSTGRES_PASSWORD")
# `${NAME:?message}`: taken from .env when the file is loaded, refused when unset.
REQUIRED_VARIABLE = re.compile(r"^\$\{(?P<name>[A-Z_][A-Z0-9_]*):\?[^}]+\}$")
# What a generated key or password looks like (hex, base64, url-safe base64).
KEY_LIKE = re.compile(r"[A-Za-z0-9+/=_-]{24,}")
# The containers' scratch space, a tmpfs on their read-only root.
SCRATCH = "/tmp"  # noqa: S108


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def quanyu_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The containers that run the Quanyu image: the five services and the migration."""
    return {name: spec for name, spec in services(compose).items() if name != "postgres"}


def environment(service: dict[str, Any]) -> dict[str, str]:
    found = service.get("environment", {})
    assert isinstance(found, dict), "environment as a mapping, so that it can be checked and merged"
    return {str(key): str(value) for key, value in found.items()}


def published(entry: str, env: dict[str, str]) -> tuple[str, int, int]:
    """(address, host port, container port) of a `ports:` entry as compose reads it with `env`:
    `${NAME:-default}` is the variable when set and not empty, else the default."""

    def substitute(match: re.Match[str]) -> str:
        return env.get(match["name"]) or match["default"]

    expanded = re.sub(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*):-(?P<default>[^}]*)\}", substitute, entry)
    parts = expanded.split(":")
    # Without an address, compose publishes on every interface.
    assert len(parts) == 3, f"{entry}: names the address it is published on"
    address, host_port, container_port = parts
    return address, int(host_port), int(container_port)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert duration, "an empty duration"
    assert match, f"unexpected duration {duration!r}"
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def test_every_service_is_present_with_its_port(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"postgres", "migrate", *SERVICE_NAMES}
    for name, port in PORTS.items():
        service = services(compose)[name]
        assert service["command"] == ["serve", name]
        assert [published(entry, {}) for entry in service["ports"]] == [("127.0.0.1", port, port)]
        chosen = {"QUANYU_PUBLISH_ADDRESS": "0.0.0.0"}
        assert [published(entry, chosen) for entry in service["ports"]] == [("0.0.0.0", port, port)]
    assert "ports" not in services(compose)["postgres"], "the database is reached only by the services"


def test_health_checks_ask_the_grpc_health_service_not_a_tcp_port(compose: dict[str, Any]) -> None:
    for name, port in PORTS.items():
        check = services(compose)[name]["healthcheck"]
        assert check["test"] == ["CMD", "python", "-m", "quanyu.probe", "--address", f"127.0.0.1:{port}"]
        assert seconds(check["start_period"]) >= 30, "a service migrates and loads its data first"
    postgres = services(compose)["postgres"]["healthcheck"]["test"]
    assert postgres[:2] == ["CMD", "pg_isready"]
    assert "--host=127.0.0.1" in postgres, "over TCP, so the image's initialisation server does not count"


def test_the_migration_runs_once_after_postgres_is_healthy_and_before_every_service(
    compose: dict[str, Any],
) -> None:
    migrate = services(compose)["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "healthcheck" not in migrate
    assert "ports" not in migrate
    for name in SERVICE_NAMES:
        depends_on = services(compose)[name]["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
        assert "postgres" not in depends_on, "the migration stands between the database and the services"


def test_orders_starts_once_the_services_it_calls_are_healthy(compose: dict[str, Any]) -> None:
    depends_on = services(compose)["orders"]["depends_on"]
    for name in ("identity", "membership", "fulfilment"):
        assert depends_on[name] == {"condition": "service_healthy"}
    # Identity reaches membership only through its outbox, which retries: no start-up order.
    assert set(services(compose)["identity"]["depends_on"]) == {"migrate"}


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    template = dict(
        line.split("=", 1)
        for line in ENV_TEMPLATE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    for name, service in services(compose).items():
        for variable, value in environment(service).items():
            if variable in SECRET_VARIABLES:
                match = REQUIRED_VARIABLE.match(value)
                assert match, f"{name}: {variable} must come from .env, not be written here"
                assert template.get(match["name"]) == "", f"{match['name']} is in the template, empty"
            if variable.endswith("__DATABASE_URL"):
                assert make_url(value).password is None, f"{name}: {variable} carries no password"
            # A directory keys are mounted at is a place, not a key.
            mounted = variable.endswith("_KEY_DIR") and value.startswith("/etc/quanyu/")
            assert mounted or not KEY_LIKE.fullmatch(value), (
                f"{name}: {variable} looks like a key written here"
            )
    quanyu = environment(services(compose)["identity"])
    assert set(SECRET_VARIABLES) - {"POSTGRES_PASSWORD"} <= set(quanyu)
    assert "POSTGRES_PASSWORD" in environment(services(compose)["postgres"])
    assert not re.search(r"postgresql://[^@\s/]*:[^@\s$]+@", COMPOSE_FILE.read_text())


def test_every_quanyu_container_runs_the_one_image_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    specs = quanyu_services(compose).values()
    assert len({spec["image"] for spec in specs}) == 1
    assert all(spec["build"] == {"context": ".", "dockerfile": "deploy/docker/Dockerfile"} for spec in specs)
    assert (ROOT / "deploy" / "docker" / "Dockerfile").is_file()
    postgres = services(compose)["postgres"]["image"]
    assert re.fullmatch(r"postgres:\d+\.\d+(-\w+)?", postgres), f"{postgres}: an exact version"


def test_services_run_in_production_and_reach_each_other_by_service_name(compose: dict[str, Any]) -> None:
    for name, service in quanyu_services(compose).items():
        env = environment(service)
        assert env["QUANYU_ENV"] == "production", name
        assert env["QUANYU_HOST"] == "0.0.0.0", name
        for other, port in PORTS.items():
            assert env[f"QUANYU_{other.upper()}__TARGET"] == f"{other}:{port}"
            url = make_url(env[f"QUANYU_{other.upper()}__DATABASE_URL"])
            assert (url.drivername, url.host, url.port) == ("postgresql", "postgres", 5432)
            assert url.database == "quanyu", "one database"
            assert url.query["options"] == f"-csearch_path={other}", "a schema per service"
        # Docker's stop timeout is longer than the drain, so a graceful shutdown is never cut short.
        assert seconds(service["stop_grace_period"]) > float(env["QUANYU_GRACE_SECONDS"])
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert {SCRATCH, env["QUANYU_VAR_DIR"]} <= set(service["tmpfs"])


def test_the_image_runs_quanyu_as_an_unprivileged_user() -> None:
    dockerfile = DOCKERFILE.read_text()
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", bases[0]), "an exact version"
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert len(user) == 1
    assert int(user[0][0]) > 0, "not root"
    assert 'ENTRYPOINT ["quanyu"]' in dockerfile
    assert 'CMD ["serve", "identity"]' in dockerfile
    assert "QUANYU_HOST=0.0.0.0" in dockerfile
    assert "python -m grpc_tools.protoc" in dockerfile
    assert "--grpc_python_out" in dockerfile
    assert "mypy" not in dockerfile


def test_the_build_context_leaves_out_local_state_and_generated_stubs() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".tools", "var", "tests", "bench", ".env", "**/__pycache__"} <= ignored
    assert {f"libs/quanyu/{package}" for package in ("common", *SERVICE_NAMES)} <= ignored
    assert "libs/quanyu/.generated" in ignored


@pytest.fixture
def identity(settings: Settings) -> Iterator[RunningServer]:
    """The real identity service, migrated and serving on a free port."""
    identity_bootstrap.migrate(settings)
    server = start_server(identity_bootstrap.build_app(settings), settings, port=0)
    try:
        yield server
    finally:
        server.stop(grace=0)


def health_check(compose: dict[str, Any], service: str, port: int) -> list[str]:
    """The health check command compose runs in `service`'s container, aimed at `port` here."""
    command = list(services(compose)[service]["healthcheck"]["test"][1:])
    address = command.index("--address") + 1
    command[address] = f"127.0.0.1:{port}"
    return [sys.executable if part == "python" else part for part in command]


def test_the_health_check_passes_while_the_service_serves_and_fails_while_it_drains(
    compose: dict[str, Any], identity: RunningServer
) -> None:
    command = health_check(compose, "identity", identity.port)
    serving = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert serving.returncode == 0, serving.stdout + serving.stderr
    assert "SERVING" in serving.stdout

    identity.health.enter_graceful_shutdown()
    draining = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert draining.returncode == 1, draining.stdout + draining.stderr
    assert "NOT_SERVING" in draining.stdout


def test_the_health_check_fails_when_nothing_answers(compose: dict[str, Any]) -> None:
    command = [*health_check(compose, "identity", free_port()), "--timeout", "0.5"]
    answer = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert answer.returncode == 1, shlex.join(command) + "\n" + answer.stdout + answer.stderr
    assert "UNAVAILABLE" in answer.stdout or "DEADLINE_EXCEEDED" in answer.stdout


def test_the_probe_asks_about_one_service_by_name(identity: RunningServer) -> None:
    address = f"127.0.0.1:{identity.port}"
    assert probe.main(["--address", address, "--service", "quanyu.identity.v1.IdentityService"]) == 0
    assert probe.main(["--address", address, "--service", "quanyu.orders.v1.OrderService"]) == 1
    assert probe.health_status(address, "no.such.Service") == "NOT_FOUND"
