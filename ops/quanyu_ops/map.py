"""`quanyu map`: a picture of where the chain delivers and where its latest orders went, as a PNG.

It reads the running platform like any ops tool: the stores through fulfilment's ListStores, the
latest orders through orders' ListOrders and, for each, the assignment decision through
fulfilment's ExplainAssignment. It draws, per city, each store and its delivery zone (the polygon
when one is set, else the radius), shades the ground no active store delivers to, and joins each
customer to the store serving them, coloured by how it went: assigned at once, re-routed after a
store turned the order down, or unfulfillable.

Drawing is offline (matplotlib's Agg backend, no map tiles): a light grid of longitude and
latitude, and the district centres of the demo chain named, so the picture reads on its own.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import numpy as np
import shapely
from geographiclib.geodesic import Geodesic
from geopy.distance import geodesic
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Polygon
from matplotlib.ticker import FuncFormatter
from numpy.typing import NDArray
from shapely.geometry import shape

from quanyu.auth import Principal, Role
from quanyu.clients import open_channel
from quanyu.common.v1 import common_pb2
from quanyu.config import Settings
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from quanyu_ops.demo.chain import CITIES, DISTRICTS, TIMEZONE, City, nearest_city
from quanyu_ops.deployment import Deployment

CALL_SECONDS = 10.0
DEFAULT_ORDERS = 200
# Sample points per degree when looking for ground no zone covers: about one every 280 m.
COVERAGE_SAMPLES_PER_DEGREE = 400
CIRCLE_POINTS = 72
MARGIN_DEGREES = 0.035
# WGS-84's mean radius, (2a + b) / 3.
MEAN_RADIUS_M = 6_371_008.8
# How far from a radius's edge, as a share of it, the sphere is trusted to tell inside from outside.
RADIUS_MARGIN = 0.01

ASSIGNED, REROUTED, UNFULFILLABLE = "assigned", "re-routed", "unfulfillable"
COLOURS = {ASSIGNED: "#1b7f5a", REROUTED: "#e07b00", UNFULFILLABLE: "#c62828"}
STORE_COLOUR = "#27408b"
ZONE_COLOUR = "#4a78c2"
ROUND_THE_CLOCK_COLOUR = "#7b3fa0"
IDLE_COLOUR = "#9e9e9e"
UNCOVERED_COLOUR = "#f3e1d6"
COVERED_COLOUR = "#e6eef9"


class MapFailed(Exception):
    """The map cannot be drawn: the platform is unreachable or refuses the call."""


@dataclass(frozen=True)
class StoreDot:
    store_id: str
    name: str
    latitude: float
    longitude: float
    active: bool
    around_the_clock: bool
    radius_m: float
    zone: list[list[tuple[float, float]]]  # outlines of (longitude, latitude); empty: the radius
    zone_shape: Any = None  # the zone as a shapely geometry, holes and all, to test points against

    @property
    def wide(self) -> bool:
        """A store reaching across a city (a cloud store): its zone is drawn as an outline only."""
        return self.radius_m > 8000 and not self.zone


@dataclass(frozen=True)
class Route:
    order_id: str
    outcome: str
    latitude: float
    longitude: float
    store_id: str  # the store serving it; "" when none
    rejected: tuple[str, ...]


@dataclass
class Panel:
    city: City
    stores: list[StoreDot] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)


# --- reading the platform -------------------------------------------------------------------


def _zone(geojson: str) -> tuple[list[list[tuple[float, float]]], Any]:
    """The outlines of a GeoJSON zone (every ring, holes too) and the zone as a geometry."""
    if not geojson:
        return [], None
    geometry = shape(json.loads(geojson))
    polygons = list(geometry.geoms) if hasattr(geometry, "geoms") else [geometry]
    rings = [ring for polygon in polygons for ring in (polygon.exterior, *polygon.interiors)]
    return [[(float(x), float(y)) for x, y in ring.coords] for ring in rings], geometry


def read_stores(
    stub: fulfilment_pb2_grpc.FulfilmentServiceStub, metadata: tuple[tuple[str, str], ...]
) -> list[StoreDot]:
    stores: list[StoreDot] = []
    token = ""
    while True:
        page = stub.ListStores(
            fulfilment_pb2.ListStoresRequest(page_size=1000, page_token=token),
            metadata=metadata,
            timeout=CALL_SECONDS,
        )
        stores += [
            StoreDot(
                store_id=s.store_id,
                name=s.name,
                latitude=s.location.latitude,
                longitude=s.location.longitude,
                active=s.status
                in (fulfilment_pb2.STORE_STATUS_ACTIVE, fulfilment_pb2.STORE_STATUS_UNSPECIFIED),
                around_the_clock=not s.opening_hours,
                radius_m=s.delivery_radius_m,
                zone=rings,
                zone_shape=geometry,
            )
            for s in page.stores
            for rings, geometry in [_zone(s.delivery_zone_geojson)]
        ]
        token = page.next_page_token
        if not token:
            return stores


def read_routes(
    orders: orders_pb2_grpc.OrderServiceStub,
    fulfilment: fulfilment_pb2_grpc.FulfilmentServiceStub,
    metadata: tuple[tuple[str, str], ...],
    limit: int,
) -> list[Route]:
    """The latest `limit` orders that went looking for a store, newest first."""
    routes: list[Route] = []
    token = ""
    while len(routes) < limit:
        page = orders.ListOrders(
            orders_pb2.ListOrdersRequest(page_size=min(1000, max(limit, 1)), page_token=token),
            metadata=metadata,
            timeout=CALL_SECONDS,
        )
        for order in page.orders:
            route = _route(fulfilment, metadata, order)
            if route is not None:
                routes.append(route)
            if len(routes) >= limit:
                break
        token = page.next_page_token
        if not token:
            break
    return routes


def _route(
    fulfilment: fulfilment_pb2_grpc.FulfilmentServiceStub,
    metadata: tuple[tuple[str, str], ...],
    order: orders_pb2.Order,
) -> Route | None:
    # A till sale never looks for a store, and a cancelled order no longer holds one.
    if order.fulfilment_type == common_pb2.FULFILMENT_TYPE_IN_STORE or order.status in (
        orders_pb2.ORDER_STATUS_CANCELLED,
        orders_pb2.ORDER_STATUS_PENDING_ASSIGNMENT,
    ):
        return None
    try:
        decision = fulfilment.ExplainAssignment(
            fulfilment_pb2.ExplainAssignmentRequest(order_id=order.order_id),
            metadata=metadata,
            timeout=CALL_SECONDS,
        ).decision
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    location = decision.location if decision.HasField("location") else order.delivery_location
    if order.status == orders_pb2.ORDER_STATUS_UNFULFILLABLE or not decision.assignments:
        outcome, store_id = UNFULFILLABLE, ""
    else:
        outcome = REROUTED if order.rejected_store_ids else ASSIGNED
        store_id = decision.assignments[0].store_id
    return Route(
        order.order_id,
        outcome,
        location.latitude,
        location.longitude,
        store_id,
        tuple(order.rejected_store_ids),
    )


# --- geometry -------------------------------------------------------------------------------


def circle(latitude: float, longitude: float, radius_m: float) -> list[tuple[float, float]]:
    """A geodesic circle as a ring of (longitude, latitude)."""
    ring = []
    for step in range(CIRCLE_POINTS + 1):
        point = Geodesic.WGS84.Direct(latitude, longitude, 360.0 * step / CIRCLE_POINTS, radius_m)
        ring.append((float(point["lon2"]), float(point["lat2"])))
    return ring


def uncovered(
    stores: Sequence[StoreDot], lons: NDArray[np.float64], lats: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Which sample points no active store delivers to, decided as fulfilment decides: inside the
    zone's polygon, or within the radius by the geodesic distance on the WGS-84 ellipsoid (geopy)."""
    covered = np.zeros(lons.shape, dtype=bool)
    for store in sorted(stores, key=lambda s: -s.radius_m):
        if not store.active:
            continue
        if store.zone_shape is not None:
            covered |= shapely.contains_xy(store.zone_shape, lons, lats)
        elif store.radius_m > 0:
            covered |= within_radius(store, lons, lats, ~covered)
    return ~covered


def within_radius(
    store: StoreDot, lons: NDArray[np.float64], lats: NDArray[np.float64], asked: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """Of the `asked` points, those within the store's radius along the ellipsoid.

    The exact geodesic is solved for the points near the edge only. A point whose distance on the
    mean sphere is more than RADIUS_MARGIN of the radius inside or outside it is on that side on the
    ellipsoid too: between sphere and ellipsoid, distances of a few dozen kilometres differ by less
    than 0.6 %.
    """
    rough = _mean_sphere_m(store.latitude, store.longitude, lats, lons)
    inside = asked & (rough <= store.radius_m * (1 - RADIUS_MARGIN))
    near_edge = asked & ~inside & (rough < store.radius_m * (1 + RADIUS_MARGIN))
    centre = (store.latitude, store.longitude)
    for index in zip(*np.nonzero(near_edge), strict=True):
        point = (float(lats[index]), float(lons[index]))
        inside[index] = geodesic(centre, point).meters <= store.radius_m
    return inside


def _mean_sphere_m(
    latitude: float, longitude: float, lats: NDArray[np.float64], lons: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Great-circle distances on the sphere of the ellipsoid's mean radius: only to sort points
    into clearly in, clearly out and near the edge (see within_radius)."""
    phi1, phi2 = math.radians(latitude), np.radians(lats)
    dphi, dlambda = phi2 - phi1, np.radians(lons - longitude)
    a = np.sin(dphi / 2) ** 2 + math.cos(phi1) * np.cos(phi2) * np.sin(dlambda / 2) ** 2
    distances: NDArray[np.float64] = 2 * MEAN_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
    return distances


# --- drawing --------------------------------------------------------------------------------


Bounds = tuple[float, float, float, float]  # west, east, south, north


def panels_for(city: str, stores: Sequence[StoreDot], routes: Sequence[Route]) -> tuple[list[Panel], int]:
    """One panel per city asked for, and how many stores lie outside every city drawn."""
    panels = {c.key: Panel(c) for c in CITIES if city in ("all", c.key)}
    outside = 0
    for store in stores:
        home = nearest_city(store.latitude, store.longitude)
        if home is not None and home.key in panels:
            panels[home.key].stores.append(store)
        elif home is None:
            outside += 1
    for route in routes:
        home = nearest_city(route.latitude, route.longitude)
        if home is not None and home.key in panels:
            panels[home.key].routes.append(route)
    return list(panels.values()), outside


def _bounds(panel: Panel) -> Bounds:
    """(west, east, south, north): the city's stores, customers and district centres, with a margin."""
    lons = [s.longitude for s in panel.stores] + [r.longitude for r in panel.routes]
    lats = [s.latitude for s in panel.stores] + [r.latitude for r in panel.routes]
    for district in DISTRICTS:
        if district.city == panel.city.key:
            lons.append(district.longitude)
            lats.append(district.latitude)
    return (
        min(lons) - MARGIN_DEGREES,
        max(lons) + MARGIN_DEGREES,
        min(lats) - MARGIN_DEGREES,
        max(lats) + MARGIN_DEGREES,
    )


def _degrees(axis: str) -> FuncFormatter:
    def name(value: float, _position: float) -> str:
        return f"{value:.2f}°{axis}"

    return FuncFormatter(name)


def draw_panel(ax: Axes, panel: Panel) -> None:
    """One city: its frame, then what is on the ground, then its title."""
    bounds = _bounds(panel)
    _frame(ax, bounds)
    ax.xaxis.set_major_formatter(_degrees("E"))
    ax.yaxis.set_major_formatter(_degrees("N"))
    ax.tick_params(labelsize=7.5, colors="#555555")
    _draw_ground(ax, panel, bounds, close=False)
    counts = _tally(panel.routes)
    ax.set_title(
        f"{panel.city.name} — {len(panel.stores)} stores, {len(panel.routes)} orders"
        + (f" ({counts})" if counts else ""),
        fontsize=9.5,
        loc="left",
    )
    if panel.city.key in _CLOSE_UPS:
        _close_up(ax, panel, _CLOSE_UPS[panel.city.key])


@dataclass(frozen=True)
class CloseUp:
    """A close-up of a crowded city centre, where stores stand a few hundred metres apart."""

    title: str
    latitude: float
    longitude: float
    half_width: float  # degrees of longitude
    box: Bounds  # where it sits in the panel: left, bottom, width, height as fractions of it


_CLOSE_UPS = {
    "shanghai": CloseUp(
        "Central Shanghai: People's Square to the Bund", 31.2345, 121.4800, 0.015, (0.58, 0.01, 0.41, 0.36)
    )
}

# Where a district's name goes, in points from its centre, where the centres crowd together.
_LABEL_OFFSETS = {
    ("shanghai", "HP"): (4, 10),
    ("shanghai", "JA"): (-16, 2),
    ("shanghai", "LJZ"): (30, -2),
    ("shanghai", "CN"): (-26, -6),
    ("shanghai", "XH"): (4, -12),
    ("shanghai", "HK"): (0, 9),
    ("hangzhou", "XH"): (-18, 8),
    ("hangzhou", "GS"): (14, 12),
    ("hangzhou", "SC"): (18, -10),
}


def _close_up(ax: Axes, panel: Panel, close_up: CloseUp) -> None:
    half_height = close_up.half_width * math.cos(math.radians(close_up.latitude))
    bounds = (
        close_up.longitude - close_up.half_width,
        close_up.longitude + close_up.half_width,
        close_up.latitude - half_height,
        close_up.latitude + half_height,
    )
    inset = ax.inset_axes(close_up.box)
    _frame(inset, bounds)
    inset.set_xticklabels([])
    inset.set_yticklabels([])
    inset.tick_params(length=0)
    _draw_ground(inset, panel, bounds, close=True)
    inset.set_title(close_up.title, fontsize=7, pad=2)
    ax.indicate_inset_zoom(inset, edgecolor="#555555", alpha=0.8)


def _frame(ax: Axes, bounds: Bounds) -> None:
    west, east, south, north = bounds
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    # Degrees of longitude are shorter than degrees of latitude here: keep distances true.
    ax.set_aspect(1 / math.cos(math.radians((south + north) / 2)))
    ax.set_facecolor("white")
    ax.grid(color="#d9d9d9", linewidth=0.5, zorder=0)


def _draw_ground(ax: Axes, panel: Panel, bounds: Bounds, *, close: bool) -> None:
    """Covered and uncovered ground, zones, routes, stores, then names: of the districts, or in a
    close-up (where zones would be a tangle of lines) of the stores the routes lead to."""
    west, east, south, north = bounds
    lons, lats = np.meshgrid(
        np.linspace(west, east, max(60, int((east - west) * COVERAGE_SAMPLES_PER_DEGREE))),
        np.linspace(south, north, max(60, int((north - south) * COVERAGE_SAMPLES_PER_DEGREE))),
    )
    # The ground is first shaded by whether any store delivers there at all; the faint zones drawn
    # over it then deepen the colour where more stores reach.
    gaps = uncovered(panel.stores, lons, lats).astype(float)
    ax.contourf(
        lons, lats, gaps, levels=[-0.5, 0.5, 1.5], colors=[COVERED_COLOUR, UNCOVERED_COLOUR], zorder=1
    )
    if not close:
        for store in panel.stores:
            _draw_zone(ax, store)
    where = {s.store_id: s for s in panel.stores}
    for route in panel.routes:
        _draw_route(ax, route, where, width=2.2 if close else 1.6)
    for kind, colour, marker, size in (
        ("idle", IDLE_COLOUR, "s", 12),
        ("store", STORE_COLOUR, "s", 9),
        ("clock", ROUND_THE_CLOCK_COLOUR, "*", 110),
    ):
        chosen = [s for s in panel.stores if _kind(s) == kind]
        if chosen:
            ax.scatter(
                [s.longitude for s in chosen],
                [s.latitude for s in chosen],
                s=size,
                marker=marker,
                color="white" if kind == "idle" else colour,
                edgecolors=colour if kind == "idle" else "white",
                linewidths=0.3 if kind == "store" else 0.8,
                zorder=7,
            )
    if close:
        _name_route_stores(ax, panel, bounds)
        return
    for district in DISTRICTS:
        if district.city == panel.city.key:
            ax.annotate(
                district.name,
                (district.longitude, district.latitude),
                xytext=_LABEL_OFFSETS.get((district.city, district.code), (0, 7)),
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=7.5,
                color="#222222",
                zorder=8,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.7},
            )


def _draw_zone(ax: Axes, store: StoreDot) -> None:
    if not store.active or (store.radius_m <= 0 and not store.zone):
        return  # a store taking no orders, or one that does not deliver, covers nothing
    for ring in store.zone or [circle(store.latitude, store.longitude, store.radius_m)]:
        if store.wide:
            # Filled, a zone as wide as a city would tint it all; its outline says enough.
            ax.add_patch(
                Polygon(
                    ring,
                    closed=True,
                    fill=False,
                    edgecolor=ROUND_THE_CLOCK_COLOUR,
                    linestyle=(0, (4, 3)),
                    linewidth=0.9,
                    alpha=0.7,
                    zorder=2,
                )
            )
            continue
        ax.add_patch(
            Polygon(ring, closed=True, facecolor=ZONE_COLOUR, edgecolor="none", alpha=0.06, zorder=2)
        )
        ax.add_patch(
            Polygon(
                ring,
                closed=True,
                fill=False,
                edgecolor=ZONE_COLOUR,
                linestyle="-" if store.zone else ":",
                linewidth=0.8 if store.zone else 0.4,
                alpha=0.55 if store.zone else 0.3,
                zorder=2,
            )
        )


def _name_route_stores(ax: Axes, panel: Panel, bounds: Bounds) -> None:
    west, east, south, north = bounds
    # Only where an order was turned down: the stores of a re-routing are the story a close-up tells.
    turned = [r for r in panel.routes if r.rejected]
    named = {r.store_id for r in turned} | {s for r in turned for s in r.rejected}
    rejecting = {s for r in turned for s in r.rejected}
    for store in panel.stores:
        if store.store_id in named and west < store.longitude < east and south < store.latitude < north:
            ax.annotate(
                store.store_id,
                (store.longitude, store.latitude),
                # Stores that turned an order down are named above, those serving below, so the two
                # ends of a re-routing stay apart when the stores stand close together.
                xytext=(0, 8) if store.store_id in rejecting else (0, -8),
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=6,
                color=STORE_COLOUR,
                zorder=8,
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
            )


def _draw_route(ax: Axes, route: Route, where: dict[str, StoreDot], *, width: float) -> None:
    colour = COLOURS[route.outcome]
    for store_id in route.rejected:
        if store_id in where:
            gone = where[store_id]
            ax.plot(
                [route.longitude, gone.longitude],
                [route.latitude, gone.latitude],
                color=colour,
                linestyle=(0, (1.5, 1.5)),
                linewidth=width * 0.6,
                alpha=0.8,
                zorder=4,
            )
    if route.store_id in where:
        serving = where[route.store_id]
        ax.plot(
            [route.longitude, serving.longitude],
            [route.latitude, serving.latitude],
            color=colour,
            linewidth=width,
            zorder=5,
        )
    unfulfillable = route.outcome == UNFULFILLABLE
    ax.scatter(
        [route.longitude],
        [route.latitude],
        s=55 if unfulfillable else 16,
        marker="X" if unfulfillable else "o",
        color=colour,
        edgecolors="white",
        linewidths=0.6,
        zorder=6,
    )


def _kind(store: StoreDot) -> str:
    if not store.active:
        return "idle"
    return "clock" if store.around_the_clock else "store"


def _tally(routes: Iterable[Route]) -> str:
    counts = {outcome: 0 for outcome in COLOURS}
    for route in routes:
        counts[route.outcome] += 1
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)


def _legend() -> list[Line2D | Patch]:
    return [
        Line2D([], [], marker="s", linestyle="none", color=STORE_COLOUR, markersize=5, label="store"),
        Line2D(
            [],
            [],
            marker="*",
            linestyle="none",
            color=ROUND_THE_CLOCK_COLOUR,
            markersize=11,
            label="store open around the clock",
        ),
        Line2D(
            [],
            [],
            marker="s",
            linestyle="none",
            markerfacecolor="white",
            markeredgecolor=IDLE_COLOUR,
            markersize=5,
            label="store paused or closed",
        ),
        Patch(
            facecolor=COVERED_COLOUR, edgecolor="#b8c8e0", label="a store delivers here (deeper: more stores)"
        ),
        Patch(facecolor=UNCOVERED_COLOUR, edgecolor="#e0c6b6", label="no store delivers here"),
        Line2D([], [], color=ZONE_COLOUR, linestyle=":", label="delivery zone: a radius"),
        Line2D([], [], color=ZONE_COLOUR, label="delivery zone: a drawn polygon"),
        Line2D([], [], color=ROUND_THE_CLOCK_COLOUR, linestyle=(0, (4, 3)), label="a cloud store's reach"),
        Line2D(
            [],
            [],
            color=COLOURS[ASSIGNED],
            marker="o",
            markersize=4,
            label="customer → store: assigned at once",
        ),
        Line2D(
            [],
            [],
            color=COLOURS[REROUTED],
            marker="o",
            markersize=4,
            label="re-routed (dotted: to the store that turned it down)",
        ),
        Line2D(
            [],
            [],
            color=COLOURS[UNFULFILLABLE],
            marker="X",
            linestyle="none",
            markersize=7,
            label="unfulfillable: every store in reach turned it down",
        ),
    ]


def _figure_size(panels: Sequence[Panel]) -> tuple[float, float]:
    if len(panels) != 1:
        return 12.0, 8.6
    # One city: as tall as a page allows, and as wide as the city's shape asks.
    west, east, south, north = _bounds(panels[0])
    shape_ratio = (north - south) / ((east - west) * math.cos(math.radians((south + north) / 2)))
    height = 8.5
    return min(14.0, max(9.0, height / shape_ratio + 1.0)), height + 1.8


def draw(panels: Sequence[Panel], out: Path, *, outside: int, when: datetime) -> None:
    # At 150 dpi a figure 12 inches wide is 1800 pixels, still legible when a page shows it 1200 wide.
    figure = Figure(figsize=_figure_size(panels), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)  # drawn off screen, whatever backend the environment names
    if len(panels) == 3:
        # The largest city down the left, the other two stacked on the right.
        grid = figure.add_gridspec(2, 2, width_ratios=(1.0, 1.15))
        axes = [
            figure.add_subplot(grid[:, 0]),
            figure.add_subplot(grid[0, 1]),
            figure.add_subplot(grid[1, 1]),
        ]
    else:
        axes = [figure.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    for ax, panel in zip(axes, panels, strict=True):
        draw_panel(ax, panel)
    stores = sum(len(p.stores) for p in panels)
    routes = [r for p in panels for r in p.routes]
    local = when.astimezone(ZoneInfo(TIMEZONE))
    figure.suptitle(
        "Quanyu — stores, delivery zones and the latest assignments\n"
        f"{stores} stores, {len(routes)} orders ({_tally(routes) or 'none yet'}); "
        f"drawn {local:%Y-%m-%d %H:%M} Shanghai time"
        + (f"; {outside} stores outside these cities not shown" if outside else ""),
        fontsize=11,
    )
    figure.legend(
        handles=_legend(),
        loc="outside lower center",
        ncols=4 if figure.get_figwidth() >= 11 else 3,
        fontsize=8,
        frameon=False,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", facecolor="white")


def main(deployment: Deployment, *, out: Path | None, city: str = "all", orders: int = DEFAULT_ORDERS) -> int:
    """`quanyu map`: 0 when the picture is written, 1 when there is nothing to draw, 2 when the
    platform cannot be read."""
    out = out or deployment.settings.var_dir / "quanyu-map.png"
    try:
        stores, routes = _read(deployment, max(0, orders))
    except MapFailed as error:
        print(f"quanyu map: {error}", file=sys.stderr)
        return 2
    panels, outside = panels_for(city, stores, routes)
    if not any(p.stores for p in panels):
        print(
            "quanyu map: no stores to draw in "
            + ("the demo's cities" if city == "all" else city.title())
            + "; load some with `quanyu demo` or `quanyu stores import`",
            file=sys.stderr,
        )
        return 1
    draw([p for p in panels if p.stores], out, outside=outside, when=datetime.now(UTC))
    drawn = [r for p in panels for r in p.routes]
    print(
        f"{out}: {sum(len(p.stores) for p in panels)} stores, {len(drawn)} orders ({_tally(drawn) or 'none'})"
    )
    return 0


def _read(deployment: Deployment, orders: int) -> tuple[list[StoreDot], list[Route]]:
    settings = deployment.settings
    metadata = deployment.bearer(Principal(Role.OPS, "quanyu-map"), 600)
    with (
        _channel(settings, "fulfilment") as fulfilment_channel,
        _channel(settings, "orders") as orders_channel,
    ):
        fulfilment = fulfilment_pb2_grpc.FulfilmentServiceStub(fulfilment_channel)
        try:
            stores = read_stores(fulfilment, metadata)
            routes = read_routes(
                orders_pb2_grpc.OrderServiceStub(orders_channel), fulfilment, metadata, orders
            )
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            hint = " (is the platform running? `make run`)" if code == grpc.StatusCode.UNAVAILABLE else ""
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            raise MapFailed(f"{code.name}: {details}{hint}") from None
    return stores, routes


def _channel(settings: Settings, service: str) -> grpc.Channel:
    return open_channel(settings, settings.target(service))
