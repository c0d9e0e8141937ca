"""The `quanyu` command wherever it is run: it finds the deployment's keys or says where it looked,
and `quanyu up` refuses to start a second platform on ports another one holds."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from pathlib import Path

import pytest

from quanyu.auth import Role, TokenCodec
from quanyu.config import SERVICE_NAMES, ConfigurationError
from quanyu_ops.deployment import find_deployment
from quanyu_ops.ports import owner_of
from tests.processes import QUANYU, free_port, platform_env, run_cli, started, target, wait_serving


def _environment_without_quanyu() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("QUANYU_")}


def test_token_from_a_subdirectory_is_signed_with_the_deployments_key(tmp_path: Path) -> None:
    deployment = tmp_path / "shop"
    (deployment / "var").mkdir(parents=True)
    key = secrets.token_hex(32)
    (deployment / "var" / "signing.key").write_text(key + "\n")
    elsewhere = deployment / "reports" / "2026"
    elsewhere.mkdir(parents=True)

    printed = subprocess.run(
        [*QUANYU, "token", "--role", "ops"],
        cwd=elsewhere,
        env=_environment_without_quanyu(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert printed.returncode == 0, printed.stderr
    assert TokenCodec.local(deployment / "var" / "token-keys").verify(printed.stdout.strip()).role is Role.OPS
    assert not (elsewhere / "var").exists()


def test_token_with_no_deployment_in_reach_says_where_it_looked_and_mints_no_key(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()

    deployment = find_deployment({}, nowhere, checkout=None)

    with pytest.raises(ConfigurationError) as refused:
        deployment.signing_key()
    assert str(nowhere / "var") in str(refused.value)
    assert "QUANYU_VAR_DIR" in str(refused.value)
    assert not list(tmp_path.rglob("signing.key"))


def test_with_no_deployment_yet_the_checkouts_var_gets_the_key_and_not_the_working_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere, checkout = tmp_path / "elsewhere", tmp_path / "checkout"
    elsewhere.mkdir()
    checkout.mkdir()

    key = find_deployment({}, elsewhere, checkout).signing_key()

    assert (checkout / "var" / "signing.key").read_bytes().strip() == key
    assert "did not exist; created it" in capsys.readouterr().err
    assert not (elsewhere / "var").exists()
    # Found from then on, wherever the command runs.
    assert find_deployment({}, elsewhere, checkout).settings.var_dir == checkout / "var"


def test_token_for_a_var_dir_named_outright_says_it_created_the_key(tmp_path: Path) -> None:
    env = {**_environment_without_quanyu(), "QUANYU_VAR_DIR": str(tmp_path / "var")}

    printed = run_cli(["token", "--role", "ops"], env)

    assert printed.returncode == 0, printed.stderr
    assert f"{tmp_path / 'var' / 'signing.key'} did not exist; created it" in printed.stderr
    assert TokenCodec.local(tmp_path / "var" / "token-keys").verify(printed.stdout.strip()).role is Role.OPS


def test_up_names_a_taken_port_and_its_process_and_starts_nothing(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "var")
    port = int(env["QUANYU_ORDERS__PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()

        result = run_cli(["up"], env, timeout=30)

    assert result.returncode == 3
    assert f"port {port} (orders gRPC) is taken by pid {os.getpid()}" in result.stderr
    assert not any((tmp_path / "var" / f"{name}.db").exists() for name in SERVICE_NAMES)


def test_up_while_the_platform_runs_says_so_and_exits_before_starting_anything(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "var")
    with started(["up"], env, tmp_path / "first.log") as first:
        for service in SERVICE_NAMES:
            wait_serving(target(env, service), first, timeout=30)

        again = run_cli(["up"], env, timeout=30)

        assert again.returncode == 3
        for service in SERVICE_NAMES:
            port = int(env[f"QUANYU_{service.upper()}__PORT"])
            owner = owner_of(port)
            assert owner is not None
            assert f"port {port} ({service} gRPC) is taken by pid {owner[0]}" in again.stderr
        assert "serve" in again.stderr
        assert "SERVING" not in again.stderr
        assert first.poll() is None


def test_owner_of_a_port_nobody_listens_on_is_none() -> None:
    assert owner_of(free_port()) is None
