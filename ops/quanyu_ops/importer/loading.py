"""Loading a file: rows gathered into the calls the service takes, one call in flight while the
next batch is read, and every refusal traced back to the rows it concerns."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from quanyu.clients import error_info, field_violations
from quanyu.errors import field_path, split_field_path
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu_ops.importer.client import STOCK_DEADLINE_SECONDS, FulfilmentClient
from quanyu_ops.importer.formats import (
    CsvTable,
    StoreRow,
    feature_label,
    geojson_features,
    is_geojson,
    read_text,
    stores_from_csv,
    stores_from_geojson,
)
from quanyu_ops.importer.progress import Progress, Report, warn_ignored
from quanyu_ops.importer.rows import (
    OPTIONAL_STORE_COLUMNS,
    STOCK_COLUMNS,
    STORE_COLUMNS,
    LevelRow,
    Problem,
    level_row,
    shown,
)

STORES_PER_CALL = 1000
LEVELS_PER_CALL = 1000
# The service reads requests of up to 16 MiB; delivery zones can be large, so a batch of stores
# is also cut short by size, well below that.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


# --- stores ---------------------------------------------------------------------------------


@dataclass
class StoreBatch:
    """The stores of one ImportStores call, the rows rejected before it, and how many rows of the
    file it covers (for the progress bar)."""

    positions: list[int] = field(default_factory=list)
    stores: list[fulfilment_pb2.Store] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    size: int = 0
    rows: int = 0


def store_batches(rows: Iterable[StoreRow], label: Callable[[int], str]) -> Iterator[StoreBatch]:
    """Rows in batches the service takes, a store id repeated in the file rejected where it repeats."""
    first_seen: dict[str, int] = {}
    batch = StoreBatch()
    for row in rows:
        batch.rows += 1
        problems = row.problems
        store_id = row.store.store_id if row.store is not None else ""
        if store_id in first_seen:
            repeat = Problem(row.position, "store.store_id", f"repeats {label(first_seen[store_id])}")
            problems = [*problems, repeat]
        elif store_id:
            # Even a rejected row claims its id: a later row with it is a repeat all the same.
            first_seen[store_id] = row.position
        if problems or row.store is None:
            batch.problems += problems
            continue
        size = row.store.ByteSize()
        if batch.stores and batch.size + size > MAX_REQUEST_BYTES:
            yield batch
            batch = StoreBatch()
        batch.positions.append(row.position)
        batch.stores.append(row.store)
        batch.size += size
        if len(batch.stores) == STORES_PER_CALL:
            yield batch
            batch = StoreBatch()
    if batch.rows:
        yield batch


def import_stores(path: Path, service: FulfilmentClient, report: Report, progress: Progress) -> None:
    text = read_text(path)
    rows: Iterable[StoreRow]
    if is_geojson(path, text):
        features = geojson_features(path, text)
        report.label, total, rows = feature_label, len(features), stores_from_geojson(features)
    else:
        table = CsvTable(path, text, STORE_COLUMNS, OPTIONAL_STORE_COLUMNS)
        warn_ignored(path, table)
        total, rows = table.rows, stores_from_csv(table)
    with progress(total) as bar:
        in_flight: tuple[StoreBatch, Any] | None = None
        # One call in flight: the next batch is read and parsed while the service stores this one.
        for batch in store_batches(rows, report.label):
            if in_flight is not None:
                _settle(service, report, *in_flight)
                bar.update(in_flight[0].rows)
                in_flight = None
            if batch.stores:
                request = fulfilment_pb2.ImportStoresRequest(stores=batch.stores)
                in_flight = (batch, service.start_import(request))
            else:
                report.reject(batch.problems)
                bar.update(batch.rows)
        if in_flight is not None:
            _settle(service, report, *in_flight)
            bar.update(in_flight[0].rows)


def _settle(service: FulfilmentClient, report: Report, batch: StoreBatch, call: Any) -> None:
    answer = service.finish_import(call)
    report.loaded += answer.upserted
    refused = [
        Problem(batch.positions[e.index], row_field(e.field, "stores", "store"), e.description)
        for e in answer.errors
        if 0 <= e.index < len(batch.positions)
    ]
    report.reject([*batch.problems, *refused])


def row_field(path: str, repeated: str, row: str) -> str:
    """A field of a call's element as the row names it: `stores[3].location.latitude` of an
    ImportStores call is `store.location.latitude` of the row the store came from."""
    head, index, rest = split_field_path(path)
    if head != repeated or index is None:
        return path
    return field_path(row, rest)


# --- stock ----------------------------------------------------------------------------------


class StockLoader:
    """Stock levels sent store by store, up to LEVELS_PER_CALL at a time, each refusal traced
    back to the rows it concerns."""

    def __init__(self, service: FulfilmentClient, report: Report) -> None:
        self._service = service
        self._report = report
        # Stores the service refused outright (unknown, or not the token's): their later rows
        # are refused for the same reason without asking again.
        self._refused: dict[str, tuple[str, str]] = {}

    def send(self, store_id: str, rows: list[LevelRow]) -> None:
        # SetStock is all or nothing. When the service names the levels at fault, only their rows
        # are rejected and the others are sent again, so each round sends strictly fewer rows.
        while rows:
            if store_id in self._refused:
                self._refuse(rows, self._refused[store_id])
                return
            request = fulfilment_pb2.SetStockRequest(
                store_id=store_id,
                levels=[fulfilment_pb2.SkuQuantity(sku=r.sku, on_hand=r.on_hand) for r in rows],
            )
            try:
                answer = self._service.set_stock(request)
            except grpc.RpcError as error:
                rows = self._still_to_send(store_id, rows, error)
                continue
            self._report.loaded += len(answer.levels)
            return

    def _still_to_send(self, store_id: str, rows: list[LevelRow], error: grpc.RpcError) -> list[LevelRow]:
        """Reports the rows a refusal rejects; gives back those worth sending again."""
        code, details = error.code(), str(error.details() or error.code().name)
        faulty: dict[int, list[tuple[str, str]]] = {}
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            whole: list[str] = []
            for name, description in field_violations(error):
                head, index, rest = split_field_path(name)
                if head == "levels" and index is not None and index < len(rows):
                    faulty.setdefault(index, []).append((rest, description))
                else:
                    whole.append(f"{name}: {description}" if name else description)
            if whole:
                faulty = {i: [("", "; ".join(whole))] for i in range(len(rows))}
        elif code == grpc.StatusCode.FAILED_PRECONDITION:
            # BELOW_RESERVED names the SKUs whose new on-hand falls below what orders hold.
            info = error_info(error)
            named = set(info.metadata.get("skus", "").split(",")) if info else set()
            faulty = {i: [("on_hand", details)] for i, row in enumerate(rows) if row.sku in named}
        elif code == grpc.StatusCode.NOT_FOUND:
            self._refused[store_id] = ("store_id", f"no store {shown(store_id)}; import the store first")
            return rows
        elif code == grpc.StatusCode.PERMISSION_DENIED:
            self._refused[store_id] = ("store_id", f"the token may not set this store's stock: {details}")
            return rows
        else:
            raise self._service.failure(error, STOCK_DEADLINE_SECONDS) from None
        if not faulty:
            # A refusal that names no row of the call: it applies to them all.
            faulty = {i: [("", details)] for i in range(len(rows))}
        self._report.reject(
            Problem(rows[i].line, name, description)
            for i, found in faulty.items()
            for name, description in found
        )
        return [row for i, row in enumerate(rows) if i not in faulty]

    def _refuse(self, rows: Iterable[LevelRow], why: tuple[str, str]) -> None:
        self._report.reject(Problem(row.line, *why) for row in rows)


def import_stock(path: Path, service: FulfilmentClient, report: Report, progress: Progress) -> None:
    table = CsvTable(path, read_text(path), STOCK_COLUMNS, ())
    warn_ignored(path, table)
    loader = StockLoader(service, report)
    waiting: dict[str, list[LevelRow]] = {}
    # Per store, the line each SKU was first given on: a repeat is reported, never silently won.
    first_seen: dict[str, dict[str, int]] = {}
    with progress(table.rows) as bar:
        for line, record in table.records():
            bar.update(1)
            if isinstance(record, Problem):
                report.reject([record])
                continue
            row = level_row(line, record)
            if isinstance(row, list):
                report.reject(row)
                continue
            store_id = record["store_id"]
            skus = first_seen.setdefault(store_id, {})
            if row.sku in skus:
                report.reject(
                    [Problem(line, "sku", f"repeats line {skus[row.sku]} for store {shown(store_id)}")]
                )
                continue
            skus[row.sku] = line
            pending = waiting.setdefault(store_id, [])
            pending.append(row)
            if len(pending) == LEVELS_PER_CALL:
                loader.send(store_id, waiting.pop(store_id))
        for store_id, rows in waiting.items():
            loader.send(store_id, rows)
