"""`make lint` holds the protos to the ones last landed on main, so a change that would break a
caller of a service fails the build before it lands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


def lint_commands() -> list[str]:
    planned = subprocess.run(
        ["make", "-n", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return planned.stdout.splitlines()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_lint_compares_the_protos_with_main_where_this_branch_left_it() -> None:
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", "main"], cwd=ROOT, check=False).returncode:
        pytest.skip("no local main to compare with (CI names origin/main)")
    base = git("merge-base", "HEAD", "main")
    if base == git("rev-parse", "HEAD"):
        base = git("rev-parse", "HEAD~1")
    breaking = [line for line in lint_commands() if " breaking " in line]
    assert breaking == [
        f"cd protos && ../.tools/node_modules/.bin/buf breaking --against '../.git#ref={base},subdir=protos'"
    ]


def breaking(protos: Path, against: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", "--against", str(against)],
        cwd=protos,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not BUF.exists(), reason="no buf: `make lint` installs it with npm")
def test_the_rules_refuse_a_renamed_field_and_accept_an_added_one(tmp_path: Path) -> None:
    changed = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", changed)
    proto = changed / "quanyu" / "marketing" / "v1" / "marketing.proto"
    original = proto.read_text()

    # A field renamed: callers built from the old file send what this one no longer reads by name.
    proto.write_text(original.replace("string campaign_id = 1;", "string campaign_ident = 1;", 1))
    refused = breaking(changed, ROOT / "protos")
    assert refused.returncode != 0
    assert 'changed name from "campaign_id" to "campaign_ident"' in refused.stdout

    # A message added is a compatible change.
    proto.write_text(original + "\nmessage NotYetUsed {\n  string note = 1;\n}\n")
    assert breaking(changed, ROOT / "protos").returncode == 0
