"""Every service is built the same way: the same rooms under the same names, a domain free of
transport, storage and the clock, use cases free of SQL, and no module too long to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from quanyu.db import Database

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
NAMES = sorted(p.name for p in SERVICES.iterdir() if (p / "bootstrap.py").exists())
# Every service has these rooms; a room may be one module or a package of them.
ROOMS = ("domain/", "ports", "storage", "handlers", "grpc_servicer", "bootstrap", "config", "migrations/")
# What a domain must not reach for: the wire, the database, the caller's token, the server.
NOT_IN_DOMAIN = ("grpc", "google.protobuf", "sqlalchemy", "quanyu.db", "quanyu.auth", "quanyu.server")
MAX_LINES = 600


def _modules(room: Path) -> list[Path]:
    if room.is_dir():
        return sorted(room.rglob("*.py"))
    return [room.with_suffix(".py")] if room.with_suffix(".py").exists() else []


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _reaches(imports: set[str], prefix: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for name in imports)


def test_the_house_has_every_service() -> None:
    assert NAMES == ["fulfilment", "identity", "marketing", "membership", "orders"]


@pytest.mark.parametrize("service", NAMES)
def test_every_service_has_the_same_rooms(service: str) -> None:
    home = SERVICES / service
    missing = [
        room
        for room in ROOMS
        if not ((home / room).is_dir() if room.endswith("/") else _modules(home / room))
    ]
    assert missing == [], f"{service} lacks {missing}"


@pytest.mark.parametrize("service", NAMES)
def test_the_domain_knows_no_wire_no_database_and_no_clock(service: str) -> None:
    offences = []
    for module in _modules(SERVICES / service / "domain"):
        imports = _imports(module)
        offences += [f"{module.name} imports {p}" for p in NOT_IN_DOMAIN if _reaches(imports, p)]
        offences += [f"{module.name} imports {name}" for name in imports if name.endswith("_pb2")]
        source = module.read_text()
        offences += [f"{module.name} reads the clock" for call in ("utcnow(", ".now(") if call in source]
    assert offences == []


@pytest.mark.parametrize("service", NAMES)
def test_use_cases_hold_no_sql_and_no_messages(service: str) -> None:
    offences = []
    for module in _modules(SERVICES / service / "handlers"):
        imports = _imports(module)
        offences += [f"{module.name} imports {p}" for p in ("sqlalchemy", "grpc") if _reaches(imports, p)]
        offences += [f"{module.name} imports {name}" for name in imports if name.endswith("_pb2")]
    assert offences == []


def test_no_module_of_a_service_is_too_long_to_read() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in SERVICES.rglob("*.py")
        if "migrations" not in path.parts and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_use_case_goes_through_the_one_unit_of_work() -> None:
    # The closures over a raw connection that Database.run once ran are gone with it.
    assert not hasattr(Database, "run")
