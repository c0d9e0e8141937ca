"""The files ops load: UTF-8 text, CSV with a header row read record by record with the line each
starts on, and GeoJSON FeatureCollections of Point features; each row as the Store it describes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu_ops.importer.rows import Problem, RowValues, store_message

# A delivery zone sits in one CSV cell and may be up to a megabyte; csv refuses >128 KiB cells.
MAX_CSV_CELL = 4 * 1024 * 1024


class ImportFailed(Exception):
    """Nothing more can load: the file cannot be read, or the service cannot be reached or refuses."""


def line_label(number: int) -> str:
    return f"line {number}"


def feature_label(index: int) -> str:
    return f"features[{index}]"


def read_text(path: Path) -> str:
    """The file as text; UTF-8, with or without the byte-order mark Excel writes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImportFailed(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportFailed(f"{path}: is a directory, not a file") from None
    except OSError as error:
        raise ImportFailed(f"{path}: cannot be read: {error.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportFailed(
            f"{path}: is not UTF-8 text (byte {error.start}); save it as UTF-8 (in Excel: 'CSV UTF-8')"
        ) from None


class CsvTable:
    """A CSV file with a header row, read record by record with the line each record starts on."""

    def __init__(self, path: Path, text: str, required: Sequence[str], optional: Sequence[str]) -> None:
        csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_CELL))
        # newline="": line breaks inside quoted cells stay part of the cell, as csv expects.
        self._reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(self._reader)
        except StopIteration:
            raise ImportFailed(f"{path}: is empty; line 1 must be the header {','.join(required)}") from None
        except csv.Error as error:
            raise ImportFailed(f"{path}: line 1 is not a CSV header: {error}") from None
        self.columns = [name.strip().lower() for name in header]
        repeated = sorted({name for name in self.columns if name and self.columns.count(name) > 1})
        if repeated:
            raise ImportFailed(f"{path}: the header names {', '.join(repeated)} more than once")
        missing = [name for name in required if name not in self.columns]
        if missing:
            raise ImportFailed(
                f"{path}: the header (line 1) lacks {', '.join(missing)}; "
                f"it must name {','.join(required)}"
                + (f" and may name {','.join(optional)}" if optional else "")
            )
        self.ignored = [name for name in self.columns if name not in (*required, *optional)]
        self.rows = max(0, text.count("\n") + (0 if text.endswith("\n") else 1) - 1)

    def records(self) -> Iterator[tuple[int, dict[str, str] | Problem]]:
        """(line, cells by column), or (line, problem) for a record that does not fit the header."""
        end_of_previous = self._reader.line_num
        while True:
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as error:
                start, end_of_previous = end_of_previous + 1, self._reader.line_num
                yield start, Problem(start, "", f"is not valid CSV: {error}")
                continue
            start, end_of_previous = end_of_previous + 1, self._reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(self.columns):
                yield (
                    start,
                    Problem(
                        start,
                        "",
                        f"has {len(cells)} cells where the header has {len(self.columns)}; "
                        "a cell holding a comma must be in double quotes",
                    ),
                )
                continue
            yield start, {name: cell.strip() for name, cell in zip(self.columns, cells, strict=True)}


@dataclass(frozen=True)
class StoreRow:
    """One row of a stores file: the store it describes (None when it could not even be read as
    one), and what is wrong with it; only a row without problems is sent."""

    position: int
    store: fulfilment_pb2.Store | None
    problems: list[Problem]


def stores_from_csv(table: CsvTable) -> Iterator[StoreRow]:
    for line, record in table.records():
        if isinstance(record, Problem):
            yield StoreRow(line, None, [record])
            continue
        values = RowValues(line, record)
        point = (record["latitude"], record["longitude"])
        store = store_message(values, point, record.get("delivery_zone_geojson", ""))
        yield StoreRow(line, store, values.problems)


def geojson_features(path: Path, text: str) -> list[Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImportFailed(
            f"{path}: is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except (RecursionError, ValueError) as error:
        raise ImportFailed(f"{path}: is not JSON this importer reads: {error}") from None
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise ImportFailed(f"{path}: must be a GeoJSON FeatureCollection of Point features, one per store")
    features = document.get("features")
    if not isinstance(features, list):
        raise ImportFailed(f"{path}: the FeatureCollection has no array of features")
    return features


def stores_from_geojson(features: list[Any]) -> Iterator[StoreRow]:
    for index, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            yield StoreRow(index, None, [Problem(index, "", "is not a GeoJSON Feature")])
            continue
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            yield StoreRow(index, None, [Problem(index, "", "its properties must be an object")])
            continue
        if "store_id" not in properties and feature.get("id") is not None:
            # The feature's own id is the natural place for a store code too.
            properties = {**properties, "store_id": feature["id"]}
        values = RowValues(index, properties)
        geometry = feature.get("geometry")
        position = geometry.get("coordinates") if isinstance(geometry, dict) else None
        point: tuple[object, object] | None = None
        if (
            isinstance(geometry, dict)
            and geometry.get("type") == "Point"
            and isinstance(position, list)
            and len(position) >= 2
        ):
            # GeoJSON puts longitude first.
            point = (position[1], position[0])
        else:
            values.note("store.location", "the feature's geometry must be a Point [longitude, latitude]")
        store = store_message(values, point, _zone_text(values, properties))
        yield StoreRow(index, store, values.problems)


def _zone_text(values: RowValues, properties: Mapping[str, Any]) -> str:
    """The delivery zone's GeoJSON text: `delivery_zone` as a geometry, or `delivery_zone_geojson`."""
    shape, text = properties.get("delivery_zone"), properties.get("delivery_zone_geojson")
    if shape is not None and text not in (None, ""):
        values.note("store.delivery_zone_geojson", "give delivery_zone or delivery_zone_geojson, not both")
        return ""
    given = shape if shape is not None else text
    if isinstance(given, dict):
        return json.dumps(given, separators=(",", ":"))
    if isinstance(given, str) and shape is None:
        return given.strip()
    if given is not None:
        values.note("store.delivery_zone_geojson", "must be a GeoJSON Polygon or MultiPolygon")
    return ""


def is_geojson(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return True
    if suffix == ".csv":
        return False
    return text.lstrip().startswith("{")
