"""The map shades the ground a store delivers to as fulfilment decides it: within the radius by the
geodesic distance on the WGS-84 ellipsoid (geopy), not on a sphere."""

from __future__ import annotations

import numpy as np
from geographiclib.geodesic import Geodesic
from geopy.distance import geodesic

from quanyu_ops.map import StoreDot, uncovered


def store(latitude: float, longitude: float, radius_m: float) -> StoreDot:
    return StoreDot("S", "S", latitude, longitude, True, False, radius_m, [])


def test_points_just_inside_and_outside_a_radius_are_told_apart_on_the_ellipsoid() -> None:
    # North and south of a store the sphere's and the ellipsoid's metres differ most (about 0.3 %
    # at Shanghai's latitude, 15 m over 5 km): points a few metres either side of the edge.
    centre = store(31.23, 121.47, 5000.0)
    points = [
        Geodesic.WGS84.Direct(centre.latitude, centre.longitude, azimuth, centre.radius_m + offset)
        for azimuth in range(0, 360, 15)
        for offset in (-4.0, 4.0)
    ]
    lats = np.array([p["lat2"] for p in points], dtype=np.float64)
    lons = np.array([p["lon2"] for p in points], dtype=np.float64)

    gaps = uncovered([centre], lons, lats)

    for lat, lon, gap in zip(lats, lons, gaps, strict=True):
        inside = geodesic((centre.latitude, centre.longitude), (lat, lon)).meters <= centre.radius_m
        assert bool(gap) is not inside, (lat, lon)


def test_ground_far_from_every_store_is_uncovered_and_near_one_is_covered() -> None:
    lats = np.array([31.23, 31.23, 31.50], dtype=np.float64)
    lons = np.array([121.47, 121.48, 121.90], dtype=np.float64)

    gaps = uncovered([store(31.23, 121.47, 3000.0)], lons, lats)

    assert gaps.tolist() == [False, False, True]


def test_a_paused_store_covers_nothing() -> None:
    paused = StoreDot("S", "S", 31.23, 121.47, False, False, 3000.0, [])
    gaps = uncovered([paused], np.array([121.47]), np.array([31.23]))
    assert gaps.tolist() == [True]
