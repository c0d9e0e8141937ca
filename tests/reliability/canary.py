"""A canary phone number sent through every RPC that takes a phone, in every spelling callers use,
on paths that succeed and paths that fail; then the services' logs are searched for it unmasked,
and every table of every service's database (and the database files themselves, byte for byte)
for its digits. Only its masked form (139****5678) and its keyed hash may be stored or logged.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import column, inspect, select, table, text
from sqlalchemy.engine import make_url

from quanyu.common.v1 import common_pb2
from quanyu.config import SERVICE_NAMES
from quanyu.identity.v1 import identity_pb2
from quanyu.orders.v1 import orders_pb2
from tests.reliability.deployment import SQLITE, Deployment
from tests.reliability.world import World, attempt

# What may sit between the digits of a phone as people write it.
_GAP = r"[\s\-.()+/]*"


@dataclass
class CanaryFigures:
    calls: int = 0
    answered: int = 0  # calls that went through (the others were refused, as some are meant to be)
    sightings: int = 0
    recoverable: int = 0  # stored values from which the canary's number comes back by a guess
    problems: list[str] = field(default_factory=list)


def canary_phone(rng: random.Random) -> str:
    """A mainland mobile number no other check uses: 139 and eight random digits."""
    return f"139{rng.randrange(10**8):08d}"


_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
_ASCII = str.maketrans("０１２３４５６７８９", "0123456789")


def spellings(national: str) -> list[str]:
    """Every way the phone parser takes a number that callers use, full-width digits included."""
    a, b, c = national[:3], national[3:7], national[7:]
    return [
        national,
        f"86{national}",
        f"+86{national}",
        f"+86 {a}-{b}-{c}",
        f"+86 {a} {b} {c}",
        f"({a}) {b}-{c}",
        f"{a}.{b}.{c}",
        f"0086 {a} {b} {c}",
        f"{a} {b} {c}",
        national.translate(_FULL_WIDTH),
        f"{a}－{b}－{c}".translate(_FULL_WIDTH),
        f"{a}／{b}／{c}",
    ]


def canary_through_every_phone_rpc(d: Deployment, *, seed: int = 11) -> CanaryFigures:
    figures = CanaryFigures()
    rng = random.Random(seed)
    national = canary_phone(rng)
    w = World(d)
    sku = w.name("canary")
    store = w.store("C", 0, {sku: 100})
    till = w.store_token(store)

    def resolve(phone: str, account: common_pb2.ChannelAccount | None = None) -> object:
        request = identity_pb2.ResolveCustomerRequest(account=account, phone=phone)
        return d.identity.ResolveCustomer(request, metadata=w.service)

    def lookup(phone: str) -> object:
        return d.identity.LookupCustomer(identity_pb2.LookupCustomerRequest(phone=phone), metadata=w.service)

    def sell(request_id: str, phone: str, lines: dict[str, int]) -> object:
        return d.orders.CreateOrder(w.in_store(request_id, store, phone, lines), metadata=till)

    def deliver(request_id: str, phone: str) -> object:
        request = orders_pb2.CreateOrderRequest(
            request_id=request_id,
            phone=phone,
            channel=common_pb2.CHANNEL_APP,
            fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
            lines=[common_pb2.Line(sku=sku, quantity=1, unit_price_cents=100)],
            delivery_location=w.here(100),
            delivery_address="1 Canary Wharf",
        )
        return d.orders.CreateOrder(request, metadata=w.app)

    def malformed(request_id: str, phone: str) -> object:
        return d.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(request_id=request_id, phone=phone), metadata=w.ops
        )

    calls: list[Callable[[], object]] = []
    variants = spellings(national)
    for n, phone in enumerate(variants):
        calls += [
            partial(resolve, phone),
            partial(resolve, phone, w.account(w.name(f"canary-{n}"))),
            partial(lookup, phone),
            # An in-store sale at the till, and a delivery order naming the customer by phone.
            partial(sell, w.name(f"canary-till-{n}"), phone, {sku: 1}),
            partial(deliver, w.name(f"canary-delivery-{n}"), phone),
            # Refused: a request wrong elsewhere, a sale with no stock for it, and a request id
            # used again with another phone.
            partial(malformed, w.name(f"canary-bad-{n}"), phone),
            partial(sell, w.name(f"canary-short-{n}"), phone, {w.name("none-left"): 1}),
            partial(sell, w.name(f"canary-till-{(n + 1) % len(variants)}"), phone, {sku: 2}),
        ]
    # Numbers that are almost the canary: a digit more, a digit fewer, a letter in it.
    for near in (national + "9", national[:-1], national[:5] + "x" + national[6:]):
        calls += [partial(resolve, near), partial(lookup, near)]
    for call in calls:
        figures.calls += 1
        figures.answered += attempt(call).ok
    sightings = canary_sightings(d, national)
    figures.sightings = len(sightings)
    figures.problems += sightings
    recovered = phones_recoverable(d, national, variants)
    figures.recoverable = len(recovered)
    figures.problems += recovered
    return figures


def unmasked(national: str) -> re.Pattern[str]:
    """The digits after a mobile number's prefix, however spaced: what its mask (139****5678)
    hides and no log line or stored value may show."""
    return re.compile(_GAP.join(national[3:]))


def canary_sightings(d: Deployment, national: str) -> list[str]:
    """Every place the canary's digits appear unmasked: log lines, table cells, database bytes."""
    pattern = unmasked(national)
    d.logs_written()
    found = [f"log {path.name}: {match.group()!r}" for path, match in _log_matches(d.logs, pattern)]
    for service in SERVICE_NAMES:
        found += [f"{service} table {cell}" for cell in _table_matches(d, service, pattern)]
        if d.backend == SQLITE:
            found += [f"{service} file {name}" for name in _file_matches(d.database_urls[service], national)]
    return found


def _log_matches(logs: Path, pattern: re.Pattern[str]) -> list[tuple[Path, re.Match[str]]]:
    """Matches in the logs read with full-width digits as ASCII, so no spelling hides a number."""
    return [
        (path, match)
        for path in sorted(logs.glob("*.log"))
        for match in pattern.finditer(path.read_text(errors="replace").translate(_ASCII))
    ]


def phones_recoverable(d: Deployment, national: str, variants: list[str]) -> list[str]:
    """Stored values an attacker holding the databases could turn back into the canary's number
    by trying the 10^4 numbers behind its masked form: an unkeyed hash of any spelling of it, or
    an order's fingerprint computed the way a plain hash of the request would be. Trying the true
    number stands for that search: if it matches, the search would have found it."""
    digests = set()
    for spelling in {*variants, f"+86{national}", national}:
        for algorithm in ("sha256", "sha1", "md5", "sha512"):
            digests.add(hashlib.new(algorithm, spelling.encode()).hexdigest())
    found = []
    for service in SERVICE_NAMES:
        for cell in _cells(d, service):
            if cell[2] in digests:
                found.append(f"{service} {cell[0]}.{cell[1]}: an unkeyed hash of the phone")
    with d.databases["orders"].snapshot() as db:
        rows = db.execute(text("SELECT order_id, request_fingerprint FROM orders")).all()
        for order_id, fingerprint in rows:
            order = (
                db.execute(text("SELECT * FROM orders WHERE order_id = :o"), {"o": order_id}).one()._mapping
            )
            lines = db.execute(_LINES_OF_ORDER, {"o": order_id}).all()
            for phone in variants:
                if _plain_fingerprint(order, [list(line) for line in lines], phone) == fingerprint:
                    found.append(f"orders order {order_id}: its fingerprint gives the phone back")
    return found


_LINES_OF_ORDER = text(
    "SELECT sku, quantity, unit_price_cents FROM order_lines WHERE order_id = :o ORDER BY line_no"
)


def _plain_fingerprint(order: Any, lines: list[list[Any]], phone: str) -> str:
    """A request's fingerprint as an unkeyed SHA-256 of its payload (how it was once computed)."""
    location = None
    if order["delivery_latitude"] is not None:
        location = [order["delivery_latitude"], order["delivery_longitude"], order["delivery_system"]]
    body = {
        "customer": ["", "", "", phone],
        "channel": order["channel"],
        "type": order["fulfilment_type"],
        "lines": lines,
        "location": location,
        "address": order["delivery_address"],
        "origin": order["origin_store_id"],
        "guide": order["guide_id"],
        "coupon": order["coupon_code"],
        "points": order["points_redeemed"],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _table_matches(d: Deployment, service: str, pattern: re.Pattern[str]) -> list[str]:
    """Every cell of every table, whatever its type, read as text."""
    return [
        f"{name}.{column_name}: {value[:80]!r}"
        for name, column_name, value in _cells(d, service)
        if pattern.search(value.translate(_ASCII))
    ]


def _cells(d: Deployment, service: str) -> Iterator[tuple[str, str, str]]:
    """(table, column, value as text) of every cell of every table of a service's database."""
    with d.databases[service].snapshot() as db:
        inspector = inspect(db)
        for name in inspector.get_table_names():
            columns = [c["name"] for c in inspector.get_columns(name)]
            rows: list[Any] = list(db.execute(select(*(column(c) for c in columns)).select_from(table(name))))
            for row in rows:
                for column_name, value in zip(columns, tuple(row), strict=True):
                    yield (
                        name,
                        column_name,
                        value.decode(errors="replace") if isinstance(value, bytes) else str(value),
                    )


def _file_matches(url: str, national: str) -> list[str]:
    """The canary's digits anywhere in the SQLite file or its write-ahead log, live or deleted.

    Read by grep in a process of its own: closing a file this process also has open through
    SQLite would drop SQLite's POSIX locks on it, and with them the test's view of the database.
    """
    path = Path(str(make_url(url).database))
    files = [str(f) for f in (path, path.with_name(path.name + "-wal")) if f.exists()]
    found = subprocess.run(
        ["grep", "--files-with-matches", "--binary-files=text", "--fixed-strings", national[3:], *files],
        capture_output=True,
        text=True,
        check=False,
    )
    return [Path(line).name for line in found.stdout.splitlines()]
