"""`quanyu membership expire` writes off lapsed points once, however often ops run it."""

from __future__ import annotations

from pathlib import Path

from quanyu.auth import Principal, Role
from quanyu.config import Settings
from services.membership import bootstrap
from tests.processes import platform_env, run_cli

OPS = Principal(Role.OPS, "ops")


def test_the_expiry_command_writes_lapsed_points_off_exactly_once(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "var")
    settings = Settings(var_dir=tmp_path / "var")
    bootstrap.migrate(settings)
    service = bootstrap.build_service(settings)
    member, _ = service.enroll(
        OPS, "cus_expiring", home_store_id="SH-001", guide_id="", channel="CHANNEL_APP", referrer_member_id=""
    )
    service.earn(member.member_id, "order-1", 25_000, "SH-001")
    service.close()

    not_yet = run_cli(["membership", "expire"], env)
    assert not_yet.returncode == 0, not_yet.stderr
    assert "points: 0 lapsed" in not_yet.stdout

    lapsed = run_cli(["membership", "expire", "--as-of", "2099-01-01", "--tiers"], env)
    assert lapsed.returncode == 0, lapsed.stderr
    assert "points: 1 lapsed" in lapsed.stdout
    again = run_cli(["membership", "expire", "--as-of", "2099-01-01"], env)
    assert "points: 0 lapsed" in again.stdout

    service = bootstrap.build_service(settings)
    try:
        after = service.get_member(OPS, member_id=member.member_id)
        entries, _ = service.list_entries(OPS, member.member_id, 50, "")
    finally:
        service.close()
    assert after.points_balance == 0
    assert [e.kind.value for e in entries] == ["EXPIRE", "EARN"]
