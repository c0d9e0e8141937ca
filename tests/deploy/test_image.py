"""A service image carries what the services need and nothing only ops use: the project installed
without its `ops` extra, so neither matplotlib nor tqdm, and the image's command still serving."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


# What the ops extra brings that the services' dependencies do not (all import by the same name).
OPS_ONLY = tuple(sorted(_names(PROJECT["optional-dependencies"]["ops"]) - _names(PROJECT["dependencies"])))


def _run_instructions() -> list[str]:
    """The Dockerfile's RUN instructions, each with its continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip().startswith("RUN ")]


def test_matplotlib_and_tqdm_are_in_the_ops_extra_and_not_the_services_dependencies() -> None:
    assert {"matplotlib", "tqdm"} <= set(OPS_ONLY)
    assert not _names(PROJECT["dependencies"]) & {"matplotlib", "tqdm"}


def test_the_image_installs_the_project_without_its_extras() -> None:
    installs = [run for run in _run_instructions() if "pip install" in run]
    assert installs, "the Dockerfile installs the project with pip"
    for run in installs:
        assert "optional-dependencies" not in run
        assert not re.search(r"\.\[[^\]]*\]", run), f"an extra installed into the image: {run}"
        assert not any(name in run for name in OPS_ONLY), run
    # The dependencies come from the project's own list, the project itself with no more.
    assert any("['project']['dependencies']" in run for run in installs)
    assert any("pip install --no-deps ." in run for run in installs)


def test_the_image_copies_the_ops_package_that_gives_it_its_command() -> None:
    assert re.search(r"^COPY ops \./ops$", DOCKERFILE.read_text(), re.M)
    assert '"quanyu_ops.cli:main"' in (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^ENTRYPOINT \["quanyu"\]$', DOCKERFILE.read_text(), re.M)


def test_the_development_install_has_the_ops_extra() -> None:
    assert "-e '.[dev,ops]'" in (ROOT / "Makefile").read_text()


def test_the_images_command_serves_and_migrates_without_ops_only_packages() -> None:
    """What the image runs (`quanyu serve`, `quanyu migrate`, the probe), imported with what only
    ops use (matplotlib, tqdm, ...) made unimportable, as it is in the image."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {OPS_ONLY!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None

        sys.meta_path.insert(0, Absent())
        import quanyu.probe
        from quanyu_ops.cli import _parser, service_module
        from quanyu.config import SERVICE_NAMES
        from quanyu.server import serve_until_signalled
        _parser()
        for name in SERVICE_NAMES:
            module = service_module(name)
            assert module.MIGRATIONS.is_dir()
            assert callable(module.build_app) and callable(module.migrate)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {OPS_ONLY!r})
        assert not loaded, loaded
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
