"""`quanyu demo` and `quanyu map` as a newcomer runs them, on real processes and free ports.

The demo is run twice on one var dir: first with nothing running, so it starts the platform
itself and must stop it again; then against a platform started beforehand, which it must leave
running and where a second run plays every flow afresh. The map is then drawn from what the two
runs left behind.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from quanyu.config import SERVICE_NAMES
from tests.processes import health_status, platform_env, run_cli, started, target, wait_serving

FLOWS = (
    r"1\. WeChat mini-program delivery → .+ \(SH-[A-Z0-9-]+\), [0-9.,]+ k?m away",
    r"2\. .+ rejected it \(no staff\) → re-routed to .+ \(SH-[A-Z0-9-]+\)",
    r"3\. night order for 02:00 → Hangzhou Cloud Store .+ \(HZ-CLOUD\)",
    r"4\. till sale at .+ \(SZ-GS-01\) → new member mem_\w+, home store SZ-GS-01, guide Lin Xiaoyu",
    r"5\. delivery completed by .+ → [1-9][0-9]* points earned",
    r"6\. busy hour: [1-9][0-9]* more orders → ",
    r"7\. first-purchase coupon → [1-9][0-9]* reached, [1-9][0-9]* held out, uplift ",
    # Pulled, or held while Shanghai is in its quiet hours: the test runs at any time of day.
    r"8\. birthday greeting → [0-9]+ messages? pulled(, [0-9]+ held for quiet hours)?, none without consent",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def summary(stdout: str) -> list[str]:
    """The lines after "What the demo played", up to the blank line that ends them."""
    lines = stdout.splitlines()
    start = next(i for i, text in enumerate(lines) if text.startswith("What the demo played"))
    played = []
    for text in lines[start + 1 :]:
        if not text.strip():
            break
        played.append(text.strip())
    return played


def run_id(stdout: str) -> str:
    found = re.search(r"^Quanyu demo, run (\S+)$", stdout, re.MULTILINE)
    assert found is not None, stdout
    return found[1]


def check_played_every_flow(stdout: str) -> None:
    played = summary(stdout)
    assert len(played) == len(FLOWS), stdout
    for text, pattern in zip(played, FLOWS, strict=True):
        assert text.startswith("✓ "), stdout
        assert re.search(pattern, text), f"{text!r} does not match {pattern!r}"
    assert "quanyu map" in stdout.split("Where to look next:")[1]


def test_the_demo_plays_every_flow_on_a_platform_it_starts_or_finds_and_the_map_draws_it(
    tmp_path: Path,
) -> None:
    env = platform_env(tmp_path / "var")

    # Nothing running: the demo starts the platform for itself and stops it at the end.
    alone = run_cli(["demo", "--timeout", "180"], env, timeout=240)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "Starting the platform for the demo" in alone.stdout
    check_played_every_flow(alone.stdout)
    for service in SERVICE_NAMES:
        assert health_status(target(env, service)) is None, f"{service} still answers after the demo"

    # A platform already running on the same var dir: used, left running, and played afresh.
    with started(["up"], env, tmp_path / "up.log") as up:
        for service in SERVICE_NAMES:
            wait_serving(target(env, service), up)
        again = run_cli(["demo", "--timeout", "180"], env, timeout=240)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "The platform is running" in again.stdout
        check_played_every_flow(again.stdout)
        assert run_id(alone.stdout) != run_id(again.stdout)
        assert up.poll() is None

        picture = tmp_path / "tmp.png"
        drawn = run_cli(["map", "--out", str(picture)], env)
        assert drawn.returncode == 0, drawn.stdout + drawn.stderr
        assert "re-routed" in drawn.stdout  # at least the demo's own delivery order
        data = picture.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 10_000
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert width >= 1200
        assert height > 600

        one_city = run_cli(["map", "--city", "suzhou", "--out", str(tmp_path / "suzhou.png")], env)
        assert one_city.returncode == 0, one_city.stdout + one_city.stderr
        assert (tmp_path / "suzhou.png").read_bytes().startswith(PNG_SIGNATURE)
