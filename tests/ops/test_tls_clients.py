"""The command-line clients reach a platform whose services demand mutual TLS: the importer, the
map and the demo present the certificate of QUANYU_TLS_CERT/_KEY/_CA, as the services do, and the
same commands in plain text are refused."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quanyu.config import Settings
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu_ops.demo.play import Calls, Deadline
from quanyu_ops.deployment import Deployment
from quanyu_ops.supervisor import is_serving
from tests.processes import free_port, platform_env, run_cli, started, target, wait_serving

STORES_CSV = "store_id,name,latitude,longitude\nTLS1,Bund,31.2400,121.4900\n"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    authority: bool = False,
) -> bytes:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=authority, path_length=None), critical=True)
    )
    if not authority:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def tls_files(directory: Path) -> dict[str, str]:
    """An authority, and one certificate it signs for the services and one for the operator."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    (directory / "ca.crt").write_bytes(
        _certificate("quanyu-ca", ca_key, _name("quanyu-ca"), ca_key, authority=True)
    )
    env = {"QUANYU_TLS_CA": str(directory / "ca.crt")}
    for holder in ("service", "operator"):
        key = ec.generate_private_key(ec.SECP256R1())
        (directory / f"{holder}.crt").write_bytes(_certificate(holder, key, _name("quanyu-ca"), ca_key))
        (directory / f"{holder}.key").write_bytes(_key(key))
        env[f"{holder}:QUANYU_TLS_CERT"] = str(directory / f"{holder}.crt")
        env[f"{holder}:QUANYU_TLS_KEY"] = str(directory / f"{holder}.key")
    return env


@dataclass
class Platform:
    operator: dict[str, str]  # the environment of a command run with the operator's certificate
    plain: dict[str, str]  # the same without any TLS setting

    def settings(self) -> Settings:
        """The operator's settings, as the demo reads them from this environment."""
        settings = Settings()
        settings.var_dir = Path(self.operator["QUANYU_VAR_DIR"])
        settings.tls_cert = Path(self.operator["QUANYU_TLS_CERT"])
        settings.tls_key = Path(self.operator["QUANYU_TLS_KEY"])
        settings.tls_ca = Path(self.operator["QUANYU_TLS_CA"])
        for service in ("fulfilment", "orders", "membership"):
            settings.service(service).port = int(self.operator[f"QUANYU_{service.upper()}__PORT"])
        return settings


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("tls-clients")
    files = tls_files(home)
    plain = platform_env(home / "var", QUANYU_LOG_LEVEL="WARNING")
    with ExitStack() as stack:
        for service in ("fulfilment", "orders", "membership"):
            health = free_port()
            env = {
                **plain,
                "QUANYU_TLS_CA": files["QUANYU_TLS_CA"],
                "QUANYU_TLS_CERT": files["service:QUANYU_TLS_CERT"],
                "QUANYU_TLS_KEY": files["service:QUANYU_TLS_KEY"],
                "QUANYU_HEALTH_PORT": str(health),
            }
            serve = stack.enter_context(started(["serve", service], env, home / f"{service}.log"))
            # Health in plain text on its own port: the gRPC port itself wants a certificate.
            wait_serving(f"127.0.0.1:{health}", serve)
        operator = {
            **plain,
            "QUANYU_TLS_CA": files["QUANYU_TLS_CA"],
            "QUANYU_TLS_CERT": files["operator:QUANYU_TLS_CERT"],
            "QUANYU_TLS_KEY": files["operator:QUANYU_TLS_KEY"],
        }
        yield Platform(operator, plain)


@pytest.fixture(scope="module")
def stores_loaded(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("stores") / "stores.csv"
    path.write_text(STORES_CSV)
    loaded = run_cli(["stores", "import", str(path)], platform.operator)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines()[-1] == "stores: 1 loaded, 0 rejected"


def test_the_importer_loads_over_mutual_tls_and_is_refused_in_plain_text(
    platform: Platform, stores_loaded: None, tmp_path: Path
) -> None:
    path = tmp_path / "stock.csv"
    path.write_text("store_id,sku,on_hand\nTLS1,SKU-1,7\n")
    assert run_cli(["stock", "import", str(path)], platform.operator).returncode == 0

    refused = run_cli(["stock", "import", str(path)], platform.plain)
    assert refused.returncode != 0
    assert "UNAVAILABLE" in refused.stderr


def test_the_map_reads_stores_and_orders_over_mutual_tls(
    platform: Platform, stores_loaded: None, tmp_path: Path
) -> None:
    out = tmp_path / "map.png"
    drawn = run_cli(["map", "--out", str(out), "--city", "shanghai"], platform.operator, timeout=120)
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith(f"{out}: 1 stores")
    assert out.read_bytes().startswith(b"\x89PNG")

    refused = run_cli(["map", "--out", str(tmp_path / "plain.png"), "--city", "shanghai"], platform.plain)
    assert refused.returncode != 0
    assert "UNAVAILABLE" in refused.stderr


def test_the_demo_sees_the_platform_serving_and_calls_it_over_mutual_tls(
    platform: Platform, stores_loaded: None
) -> None:
    settings = platform.settings()
    fulfilment = target(platform.operator, "fulfilment")
    assert is_serving(fulfilment, settings=settings)
    assert not is_serving(fulfilment), "the gRPC port refuses plain text"

    channels: list[grpc.Channel] = []
    calls = Calls(Deployment(settings, looked=()), channels, Deadline(30))
    try:
        answer = calls.fulfilment.GetStore(
            fulfilment_pb2.GetStoreRequest(store_id="TLS1"), metadata=calls.ops, timeout=10
        )
    finally:
        for channel in channels:
            channel.close()
    assert answer.store.name == "Bund"
