"""Fixtures every test shares: databases on SQLite and (when reachable) PostgreSQL, settings,
tokens, and servers on free ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from quanyu.auth import Role, TokenCodec, caller
from quanyu.config import SERVICE_NAMES, Settings
from quanyu.db import normalise_url
from quanyu.server import ServiceApp, start_server
from tests.processes import free_port

# Tests assert behaviour, never time: Hypothesis's per-example deadline (200 ms) is a timing check,
# and on a shared machine it failed examples whose behaviour was right.
hypothesis_settings.register_profile("quanyu", deadline=None)
hypothesis_settings.load_profile("quanyu")

POSTGRES_URL = os.environ.get("QUANYU_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)] if POSTGRES_URL else ["sqlite"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema of the PostgreSQL test database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    yield from postgres_schema_url()


def postgres_schema_url() -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(normalise_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(normalise_url(POSTGRES_URL)).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of a local deployment living in this test's own directory."""
    settings = Settings(
        var_dir=tmp_path / "var",
        signing_key=SecretStr("k" * 48),
        phone_hash_key=SecretStr("p" * 48),
        server_workers=8,
    )
    # Calls between services go to ports nothing listens on unless a test starts that service,
    # never to a platform a developer may be running on the default ports.
    for name in SERVICE_NAMES:
        settings.service(name).target = f"127.0.0.1:{free_port()}"
    return settings


TokenFactory = Callable[..., str]


@pytest.fixture
def token(settings: Settings) -> TokenFactory:
    """token(Role.OPS), token(Role.STORE, store_id="s1"), token(Role.CHANNEL, channel="CHANNEL_APP")."""
    codec = TokenCodec.local(settings.issuer_key_dir())

    def make(role: Role, *, store_id: str = "", channel: str = "", ttl: int = 600, subject: str = "") -> str:
        return codec.issue(caller(role, store_id=store_id, channel=channel, subject=subject), ttl).token

    return make


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Served:
    channel: grpc.Channel
    target: str  # host:port, for another service's settings to dial


@contextmanager
def served(app: ServiceApp, settings: Settings) -> Iterator[Served]:
    """Serve an app on a free port of this machine: a channel to it, and where it listens."""
    server = start_server(app, settings, port=0)
    target = f"127.0.0.1:{server.port}"
    channel = grpc.insecure_channel(target)
    try:
        yield Served(channel, target)
    finally:
        channel.close()
        server.stop(grace=1)


@contextmanager
def running(app: ServiceApp, settings: Settings) -> Iterator[grpc.Channel]:
    """Serve an app on a free port of this machine and give a channel to it."""
    with served(app, settings) as serving:
        yield serving.channel


def throwaway_codec() -> TokenCodec:
    """A codec that signs with a key of its own, made for one test and trusted by nothing else."""
    import tempfile

    from quanyu.keys import write_key

    directory = Path(tempfile.mkdtemp(prefix="quanyu-keys-"))
    write_key(directory)
    return TokenCodec.local(directory)


def hand_signed(key_dir: Path, claims: dict[str, Any]) -> str:
    """A token with any claims at all, signed with the signing key of `key_dir` as identity signs."""
    import jwt

    from quanyu.keys import KeyRing

    kid, key = KeyRing(key_dir).signer()
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
