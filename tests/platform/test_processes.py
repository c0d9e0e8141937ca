"""The `quanyu` command as an operator runs it: real processes on free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import common_pb2
from quanyu.config import SERVICE_NAMES
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.logs import REQUEST_ID_HEADER
from tests.conftest import bearer
from tests.processes import (
    children_of,
    free_port,
    outgoing_ports,
    platform_env,
    run_cli,
    started,
    target,
    wait_serving,
)


def reflected_services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return {s.name for answer in answers for s in answer.list_services_response.service}


def test_quanyu_up_serves_all_four_restarts_a_crashed_one_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "var")
    with started(["up"], env, tmp_path / "up.log") as up:
        for service in SERVICE_NAMES:
            assert wait_serving(target(env, service), up, timeout=30) < 30
            assert "grpc.health.v1.Health" in reflected_services(target(env, service))
        assert "quanyu.identity.v1.IdentityService" in reflected_services(target(env, "identity"))
        for service in SERVICE_NAMES:
            assert (tmp_path / "var" / f"{service}.db").exists()

        # A channel frontend's first call, with a token from `quanyu token`.
        printed = run_cli(["token", "--role", "channel", "--channel", "CHANNEL_APP"], env)
        assert printed.returncode == 0, printed.stderr
        channel_token = printed.stdout.strip().splitlines()[-1]
        with grpc.insecure_channel(target(env, "identity")) as channel:
            answer = identity_pb2_grpc.IdentityServiceStub(channel).ResolveCustomer(
                identity_pb2.ResolveCustomerRequest(
                    account=common_pb2.ChannelAccount(
                        channel=common_pb2.CHANNEL_APP, external_id="app-user-1"
                    ),
                    phone="13800138000",
                ),
                metadata=bearer(channel_token),
            )
        assert answer.created

        # A store token is signed only for a store the chain has, and names its terminal.
        ops = bearer(
            TokenCodec.local(tmp_path / "var" / "token-keys").issue(Principal(Role.OPS, "ops")).token
        )
        with grpc.insecure_channel(target(env, "fulfilment")) as channel:
            fulfilment_pb2_grpc.FulfilmentServiceStub(channel).UpsertStore(
                fulfilment_pb2.UpsertStoreRequest(
                    store=fulfilment_pb2.Store(
                        store_id="store-7",
                        name="Seven",
                        location=common_pb2.LatLng(latitude=31.2, longitude=121.4),
                    )
                ),
                metadata=ops,
            )
        printed = run_cli(["token", "--role", "store", "--store-id", "store-7", "--subject", "till-3"], env)
        assert printed.returncode == 0, printed.stderr
        principal = TokenCodec.local(tmp_path / "var" / "token-keys").verify(
            printed.stdout.strip().splitlines()[-1]
        )
        assert (principal.store_id, principal.subject) == ("store-7", "store:store-7/till-3")
        nowhere = run_cli(["token", "--role", "store", "--store-id", "store-404"], env)
        assert nowhere.returncode == 2
        assert "there is no store 'store-404'" in nowhere.stderr

        # A service that crashes is started again.
        before = set(children_of(up.pid))
        assert len(before) == len(SERVICE_NAMES)
        identity_pid = next(pid for pid in before if b"identity" in Path(f"/proc/{pid}/cmdline").read_bytes())
        os.kill(identity_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while identity_pid in children_of(up.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert wait_serving(target(env, "identity"), up, timeout=30) < 30
        after = set(children_of(up.pid))
        assert identity_pid not in after
        assert len(after) == len(SERVICE_NAMES)

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        for pid in after:
            assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes()


def test_every_call_is_logged_as_json_with_its_request_id_and_no_phone_number(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "var")
    log_path = tmp_path / "identity.log"
    with started(["serve", "identity"], env, log_path) as serve:
        wait_serving(target(env, "identity"), serve)
        token = TokenCodec.local(Path(tmp_path / "var") / "token-keys")
        ops = token.issue(Principal(Role.OPS, "ops")).token
        with grpc.insecure_channel(target(env, "identity")) as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            _, call = stub.ResolveCustomer.with_call(
                identity_pb2.ResolveCustomerRequest(phone="+86 138-0013-8000"),
                metadata=(*bearer(ops), (REQUEST_ID_HEADER, "trace-me-1")),
            )
            assert dict(call.trailing_metadata())[REQUEST_ID_HEADER] == "trace-me-1"
            with pytest.raises(grpc.RpcError) as caught:
                stub.LookupCustomer(
                    identity_pb2.LookupCustomerRequest(phone="13900139000"), metadata=bearer(ops)
                )
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("event") == "rpc"]
    traced = [line for line in calls if line.get("request_id") == "trace-me-1"]
    assert traced
    assert traced[0]["method"] == "/quanyu.identity.v1.IdentityService/ResolveCustomer"
    assert traced[0]["code"] == "OK"
    assert traced[0]["duration_ms"] >= 0
    assert any(line["code"] == "NOT_FOUND" for line in calls)
    for digits in ("13800138000", "0013-8000", "0013 8000", "0013 9000", "13900139000"):
        assert digits not in text


def test_production_without_a_signing_key_refuses_to_start(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "var", QUANYU_ENV="production")
    result = run_cli(["serve", "identity"], env, timeout=60)
    assert result.returncode == 2
    assert "QUANYU_SIGNING_KEY" in result.stderr
    assert "QUANYU_PHONE_HASH_KEY" in result.stderr


def test_quanyu_token_prints_a_token_signed_with_the_local_key_as_its_last_line(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "var")
    result = run_cli(["token", "--role", "channel", "--channel", "TMALL", "--ttl", "60"], env)
    assert result.returncode == 0, result.stderr
    principal = TokenCodec.local(tmp_path / "var" / "token-keys").verify(
        result.stdout.strip().splitlines()[-1]
    )
    # Named at least by its channel, never by the bare role.
    assert (principal.role, principal.channel, principal.subject) == (
        Role.CHANNEL,
        "CHANNEL_TMALL",
        "channel:CHANNEL_TMALL",
    )
    for refused_args, named in [
        (["--role", "store"], "store_id"),
        (["--role", "channel", "--channel", "WECHAT"], "not a channel"),
        (["--role", "channel"], "channel"),
        (["--role", "channel", "--channel", "CHANNEL_STORE_POS"], "CHANNEL_STORE_POS"),
        (["--role", "ops", "--store-id", "s1"], "store_id"),
    ]:
        refused = run_cli(["token", *refused_args], env)
        assert refused.returncode == 2, refused_args
        assert named in refused.stderr
    # A store token asks fulfilment whether the store exists: with no platform running, it says so.
    unchecked = run_cli(["token", "--role", "store", "--store-id", "store-7"], env)
    assert unchecked.returncode == 2
    assert "cannot tell whether store 'store-7' exists" in unchecked.stderr
    assert "make run" in unchecked.stderr


def test_quanyu_migrate_prepares_every_database(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "var")
    result = run_cli(["migrate"], env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "var").glob("*.db")) == sorted(f"{s}.db" for s in SERVICE_NAMES)


def test_free_ports_are_never_handed_out_twice_and_stay_clear_of_outgoing_connections() -> None:
    # A test starts many servers, each told its port before it binds: a port handed out twice, or
    # one the kernel may give a client connection meanwhile, makes a server fail to start.
    outgoing = outgoing_ports()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    if outgoing.start > 10_000 or outgoing.stop <= 65_535:  # some ports are left to listen on
        assert not [port for port in ports if port in outgoing]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", ports[-1]))
        listener.listen()
