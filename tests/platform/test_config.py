"""Configuration: environment variables, local keys made once, production refusing to guess."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from quanyu.config import ConfigurationError, Environment, Settings
from quanyu.db import Database


def test_defaults_are_the_contract_ports_and_sqlite_files_under_var(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    assert [
        settings.service(n).port for n in ("identity", "membership", "orders", "fulfilment", "marketing")
    ] == [50051, 50052, 50053, 50054, 50055]
    assert settings.database_url("orders") == f"sqlite:///{tmp_path.resolve() / 'orders.db'}"
    assert settings.target("fulfilment") == "127.0.0.1:50054"


def test_environment_variables_override_one_field_and_keep_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANYU_ORDERS__DATABASE_URL", "postgresql://db/orders")
    monkeypatch.setenv("QUANYU_IDENTITY__TARGET", "identity.quanyu.svc:50051")
    monkeypatch.setenv("QUANYU_HOST", "0.0.0.0")
    settings = Settings()
    assert settings.database_url("orders") == "postgresql://db/orders"
    assert settings.orders.port == 50053
    assert settings.target("identity") == "identity.quanyu.svc:50051"
    assert settings.target("membership") == "127.0.0.1:50052"


def test_the_database_pool_holds_a_connection_per_server_worker_unless_sized(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A pool smaller than the workers would close connections as fast as it opens them.
    monkeypatch.setenv("QUANYU_SERVER_WORKERS", "12")
    settings = Settings(var_dir=tmp_path)
    database = Database(settings.database_url("orders"), pool_size=settings.database_pool_size)
    try:
        assert database.engine.pool.size() == 12  # type: ignore[attr-defined]
    finally:
        database.dispose()
    monkeypatch.setenv("QUANYU_DATABASE_POOL_SIZE", "4")
    assert Settings(var_dir=tmp_path).database_pool_size == 4
    monkeypatch.setenv("QUANYU_DATABASE_POOL_SIZE", "-1")
    with pytest.raises(ValueError, match="database_pool_size"):
        Settings(var_dir=tmp_path)


def test_a_local_deployment_makes_its_keys_once_even_when_services_start_together(tmp_path: Path) -> None:
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def read() -> None:
        barrier.wait()
        keys.append(Settings(var_dir=tmp_path).signing_key_bytes())

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1
    assert len(keys[0]) >= 32
    assert (tmp_path / "signing.key").stat().st_mode & 0o077 == 0
    assert Settings(var_dir=tmp_path).phone_hash_key_bytes() != keys[0]


def test_production_refuses_to_generate_keys(tmp_path: Path) -> None:
    settings = Settings(env=Environment.PRODUCTION, var_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="QUANYU_SIGNING_KEY"):
        settings.signing_key_bytes()
    with pytest.raises(ConfigurationError, match="QUANYU_PHONE_HASH_KEY"):
        settings.phone_hash_key_bytes()
    assert not (tmp_path / "signing.key").exists()
