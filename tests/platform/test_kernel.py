"""The shared library is a kernel: nothing under libs/quanyu imports a service, the ops package or
what only ops use (matplotlib, tqdm: the `ops` extra). Read from the source, so an import inside a
function counts."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

KERNEL = Path(__file__).resolve().parents[2] / "libs" / "quanyu"
# The stubs generated from protos/ (libs/quanyu/<package>/v1) are not the kernel's own code.
GENERATED = ("common", "identity", "membership", "orders", "fulfilment", "marketing")
_PROJECT = tomllib.loads((KERNEL.parents[1] / "pyproject.toml").read_text())["project"]
# What the ops extra brings beyond the services' dependencies (matplotlib, tqdm, ...).
OPS_ONLY = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0] for r in _PROJECT["optional-dependencies"]["ops"]} - {
    re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0] for r in _PROJECT["dependencies"]
}
FORBIDDEN = {"services", "quanyu_ops", "matplotlib", "tqdm", *OPS_ONLY}


def kernel_modules() -> list[Path]:
    return sorted(
        path
        for path in KERNEL.rglob("*.py")
        if path.relative_to(KERNEL).parts[0] not in GENERATED and "__pycache__" not in path.parts
    )


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_kernel_has_modules_to_check() -> None:
    assert len(kernel_modules()) >= 10
    assert KERNEL / "clients.py" in kernel_modules()


@pytest.mark.parametrize("path", kernel_modules(), ids=lambda p: str(p.relative_to(KERNEL)))
def test_kernel_module_imports_no_service_no_ops_and_nothing_only_ops_use(path: Path) -> None:
    wrong = sorted(name for name in imported(path) if name.split(".")[0] in FORBIDDEN)
    assert not wrong, f"{path.relative_to(KERNEL.parents[1])} imports {', '.join(wrong)}"
