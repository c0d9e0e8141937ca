"""Service-to-service calls over mutual TLS: a client with the authority's certificate gets in,
one without a certificate (or in plain text) is refused, and probes still see health."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quanyu.clients import service_channel
from quanyu.config import Settings
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from services.identity import bootstrap
from tests.processes import free_port


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    authority: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=authority, path_length=None), critical=True)
    )
    if not authority:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def tls_settings(settings: Settings, tmp_path: Path, database_url: str) -> Settings:
    authority_key = ec.generate_private_key(ec.SECP256R1())
    authority = _issue("quanyu-ca", authority_key, _name("quanyu-ca"), authority_key, authority=True)
    service_key = ec.generate_private_key(ec.SECP256R1())
    service = _issue("identity", service_key, authority.subject, authority_key)
    for name, data in (
        ("ca.pem", _pem(authority)),
        ("svc.pem", _pem(service)),
        ("svc.key", _key_pem(service_key)),
    ):
        (tmp_path / name).write_bytes(data)
    settings.tls_ca, settings.tls_cert, settings.tls_key = (
        tmp_path / "ca.pem",
        tmp_path / "svc.pem",
        tmp_path / "svc.key",
    )
    settings.health_port = free_port()
    settings.identity.database_url = database_url
    return settings


@pytest.fixture
def identity_port(tls_settings: Settings) -> Iterator[int]:
    from quanyu.server import start_server

    bootstrap.migrate(tls_settings)
    running = start_server(bootstrap.build_app(tls_settings), tls_settings, port=0)
    yield running.port
    running.stop(grace=0)


def test_a_service_with_a_certificate_from_the_authority_is_served(
    tls_settings: Settings, identity_port: int
) -> None:
    tls_settings.identity.target = f"localhost:{identity_port}"
    stub = identity_pb2_grpc.IdentityServiceStub(service_channel(tls_settings, "identity", caller="orders"))
    answer = stub.ResolveCustomer(identity_pb2.ResolveCustomerRequest(phone="13800138000"), timeout=10)
    assert answer.created


def test_a_client_without_a_certificate_is_refused(tls_settings: Settings, identity_port: int) -> None:
    assert tls_settings.tls_ca is not None
    no_certificate = grpc.ssl_channel_credentials(root_certificates=tls_settings.tls_ca.read_bytes())
    for channel in (
        grpc.secure_channel(f"localhost:{identity_port}", no_certificate),
        grpc.insecure_channel(f"127.0.0.1:{identity_port}"),
    ):
        with channel, pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_probes_still_see_health_in_plain_text_on_their_own_port(
    tls_settings: Settings, identity_port: int
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tls_settings.health_port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
