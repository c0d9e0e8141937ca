"""The demo chain: stores in real districts of Shanghai, Hangzhou and Suzhou, a tea, coffee and
bakery catalogue, and each store's stock.

Everything here is plain data made from a fixed seed, so every run (and every machine) builds the
same chain: the same store ids at the same places with the same zones, hours and stock. Nothing
here talks to a service; `play` sends it through the fulfilment contract.

District centres are a landmark or the district government of each district, in WGS-84 as GPS
and OpenStreetMap give them (rounded to about 10 m). Stores are scattered around them with a
seeded random generator, closer in the city centres and farther apart in the suburbs.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

# One seed for the whole chain: changing it moves every store, so it stays fixed.
SEED = 20_240_618
TIMEZONE = "Asia/Shanghai"
METRES_PER_DEGREE = 111_320.0  # of latitude, and of longitude at the equator


@dataclass(frozen=True)
class City:
    key: str  # as `quanyu map --city` names it
    name: str
    code: str  # the first part of its store ids
    latitude: float
    longitude: float


# How far a district's stores deliver, and whether it is a suburb (where more open early and late).
CENTRE, INNER, SUBURB = "centre", "inner", "suburb"
_RADII = {CENTRE: (2000, 3000), INNER: (2500, 3500), SUBURB: (3000, 4000)}


@dataclass(frozen=True)
class District:
    city: str  # City.key
    code: str  # the middle part of its store ids
    name: str  # the district as people name it
    landmark: str  # where its centre is taken
    latitude: float
    longitude: float
    stores: int
    spread_m: float  # standard deviation of the stores' distance from the centre, each way
    ring: str  # CENTRE, INNER or SUBURB

    @property
    def radius_m(self) -> tuple[int, int]:
        """The delivery radii its stores get, smallest to largest."""
        return _RADII[self.ring]

    @property
    def suburb(self) -> bool:
        return self.ring == SUBURB


SH, HZ, SZ = "shanghai", "hangzhou", "suzhou"
CITIES = (
    City(SH, "Shanghai", "SH", 31.2304, 121.4737),
    City(HZ, "Hangzhou", "HZ", 30.2741, 120.1551),
    City(SZ, "Suzhou", "SZ", 31.2990, 120.5853),
)

DISTRICTS = (
    # Shanghai: the centre, the inner ring, then the new towns.
    District(SH, "HP", "Huangpu", "People's Square", 31.2318, 121.4728, 16, 1100, CENTRE),
    District(SH, "JA", "Jing'an", "Jing'an Temple", 31.2235, 121.4455, 16, 1100, CENTRE),
    District(SH, "XH", "Xuhui", "Xujiahui", 31.1951, 121.4369, 15, 1200, CENTRE),
    District(SH, "CN", "Changning", "Zhongshan Park", 31.2220, 121.4190, 11, 1300, INNER),
    District(SH, "PT", "Putuo", "Putuo District Government", 31.2498, 121.3968, 10, 1400, INNER),
    District(SH, "HK", "Hongkou", "Hongkou Football Stadium", 31.2720, 121.4800, 10, 1300, INNER),
    District(SH, "YP", "Yangpu", "Wujiaochang", 31.2990, 121.5140, 11, 1400, INNER),
    District(SH, "LJZ", "Pudong Lujiazui", "Lujiazui", 31.2370, 121.5040, 16, 1200, CENTRE),
    District(SH, "ZJ", "Pudong Zhangjiang", "Zhangjiang Hi-Tech Park", 31.2030, 121.5880, 10, 1700, INNER),
    District(SH, "MH", "Minhang", "Xinzhuang", 31.1114, 121.3855, 9, 1900, SUBURB),
    District(SH, "HQ", "Hongqiao", "Hongqiao Hub", 31.1960, 121.3260, 8, 1800, SUBURB),
    District(SH, "BS", "Baoshan", "Baoshan District Government", 31.4050, 121.4895, 8, 2000, SUBURB),
    District(SH, "JD", "Jiading", "Jiading New Town", 31.3750, 121.2655, 7, 2100, SUBURB),
    District(SH, "SJ", "Songjiang", "Songjiang New City", 31.0328, 121.2270, 8, 2100, SUBURB),
    # Hangzhou: around West Lake, across the Qiantang, and the tech towns.
    District(HZ, "SC", "Shangcheng", "Hubin, West Lake", 30.2580, 120.1655, 14, 1100, CENTRE),
    District(HZ, "GS", "Gongshu", "Wulin Square", 30.2725, 120.1635, 13, 1200, CENTRE),
    District(HZ, "XH", "Xihu", "Huanglong", 30.2730, 120.1310, 12, 1300, INNER),
    District(HZ, "BJ", "Binjiang", "Binjiang District Government", 30.2085, 120.2110, 12, 1400, INNER),
    District(HZ, "XS", "Xiaoshan", "Xiaoshan City Centre", 30.1640, 120.2640, 9, 1900, SUBURB),
    District(HZ, "YH", "Yuhang", "Future Sci-Tech City", 30.2900, 120.0030, 9, 1900, SUBURB),
    District(HZ, "QT", "Qiantang", "Xiasha", 30.3050, 120.3400, 7, 2000, SUBURB),
    # Suzhou: the old town, the industrial park on its lakes, and the districts around.
    District(SZ, "GS", "Gusu", "Guanqian Street", 31.3105, 120.6245, 13, 1100, CENTRE),
    District(SZ, "JJH", "SIP Jinji Lake", "Suzhou Center", 31.3185, 120.6710, 13, 1300, INNER),
    District(SZ, "DSH", "SIP Dushu Lake", "Dushu Lake", 31.2660, 120.7310, 9, 1700, SUBURB),
    District(SZ, "SND", "Huqiu (SND)", "Shishan", 31.2960, 120.5655, 9, 1700, INNER),
    District(SZ, "WZ", "Wuzhong", "Wuzhong District Government", 31.2700, 120.6300, 8, 1800, SUBURB),
    District(SZ, "XC", "Xiangcheng", "Yuanhe", 31.3690, 120.6420, 7, 2000, SUBURB),
)


@dataclass(frozen=True)
class Special:
    """A store placed by hand: a city's 24-hour cloud store or a late-night station store."""

    city: str
    code: str
    name: str
    latitude: float
    longitude: float
    radius_m: int


# The cloud store (a store with no counter that only delivers, 云仓) of each city is open around the
# clock and reaches across the city centre. The railway-station stores stay open all night too, as
# station shops do; with them a delivery in central Shanghai has two stores to go to at any hour.
CLOUD_STORES = (
    Special(SH, "SH-CLOUD", "Shanghai Cloud Store · Xuhui Riverside", 31.1800, 121.4580, 12_000),
    Special(HZ, "HZ-CLOUD", "Hangzhou Cloud Store · Gongshu", 30.3000, 120.1550, 12_000),
    Special(SZ, "SZ-CLOUD", "Suzhou Cloud Store · SIP", 31.3000, 120.6600, 12_000),
)
STATION_STORES = (
    Special(SH, "SH-STN-SHZ", "Shanghai Railway Station (24h)", 31.2495, 121.4560, 3500),
    Special(SH, "SH-STN-HQ", "Hongqiao Railway Station (24h)", 31.1944, 121.3200, 3500),
    Special(HZ, "HZ-STN-EAST", "Hangzhou East Station (24h)", 30.2910, 120.2125, 3500),
    Special(SZ, "SZ-STN", "Suzhou Railway Station (24h)", 31.3300, 120.6110, 3500),
)

# Weekly hours as (weekday, open, close); 1 = Monday. A close before the open runs past midnight.
Hours = tuple[tuple[int, str, str], ...]
WEEKDAYS, WEEKEND = (1, 2, 3, 4, 5), (6, 7)
DAY_HOURS: Hours = (*((d, "09:00", "22:00") for d in WEEKDAYS), *((d, "09:00", "23:30") for d in WEEKEND))
LONG_HOURS: Hours = (*((d, "07:00", "23:00") for d in WEEKDAYS), *((d, "07:00", "00:30") for d in WEEKEND))
AROUND_THE_CLOCK: Hours = ()  # no hours at all: open around the clock


@dataclass(frozen=True)
class DemoStore:
    store_id: str
    name: str
    city: str
    district: str  # District.name, or "" for a store placed by hand
    latitude: float
    longitude: float
    radius_m: int
    zone: tuple[tuple[float, float], ...] = ()  # (longitude, latitude) ring, closed; empty: radius
    hours: Hours = DAY_HOURS
    max_active_orders: int = 30
    paused: bool = False
    kind: str = "store"  # "store", "cloud" or "station"

    @property
    def zone_geojson(self) -> str:
        if not self.zone:
            return ""
        return json.dumps({"type": "Polygon", "coordinates": [[list(p) for p in self.zone]]})


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    core: bool  # every store carries it


@dataclass(frozen=True)
class Chain:
    stores: tuple[DemoStore, ...]
    products: tuple[Product, ...]
    stock: dict[str, dict[str, int]] = field(hash=False)  # store id -> sku -> on hand

    def store(self, store_id: str) -> DemoStore:
        return next(s for s in self.stores if s.store_id == store_id)

    def product(self, name: str) -> Product:
        return next(p for p in self.products if p.name == name)


def city_of(key: str) -> City:
    return next(c for c in CITIES if c.key == key)


def offset(latitude: float, longitude: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point `north_m` north and `east_m` east of another; plenty exact at a few kilometres."""
    lat = latitude + north_m / METRES_PER_DEGREE
    lng = longitude + east_m / (METRES_PER_DEGREE * math.cos(math.radians(latitude)))
    return round(lat, 6), round(lng, 6)


def _polygon_zone(
    rng: random.Random, latitude: float, longitude: float, radius_m: int
) -> tuple[tuple[float, float], ...]:
    # An uneven seven-sided zone about as large as the radius it replaces, as zones drawn along
    # rivers and ring roads are.
    corners = 7
    start = rng.uniform(0, 2 * math.pi)
    ring: list[tuple[float, float]] = []
    for i in range(corners):
        angle = start + 2 * math.pi * i / corners + rng.uniform(-0.25, 0.25)
        reach = radius_m * rng.uniform(0.7, 1.25)
        lat, lng = offset(latitude, longitude, reach * math.cos(angle), reach * math.sin(angle))
        ring.append((lng, lat))
    ring.append(ring[0])
    return tuple(ring)


def _district_stores(rng: random.Random, district: District) -> list[DemoStore]:
    city = city_of(district.city)
    stores = []
    for n in range(1, district.stores + 1):
        lat, lng = offset(
            district.latitude,
            district.longitude,
            rng.gauss(0, district.spread_m),
            rng.gauss(0, district.spread_m),
        )
        radius = rng.randrange(district.radius_m[0], district.radius_m[1] + 1, 250)
        # About one store in eight has a drawn zone instead of a radius.
        zone = _polygon_zone(rng, lat, lng, radius) if rng.random() < 0.12 else ()
        # A third of suburban stores and a quarter of the others open early and close late.
        hours = LONG_HOURS if rng.random() < (0.35 if district.suburb else 0.25) else DAY_HOURS
        stores.append(
            DemoStore(
                store_id=f"{city.code}-{district.code}-{n:02d}",
                name=f"{district.name} {n:02d}",
                city=city.key,
                district=district.name,
                latitude=lat,
                longitude=lng,
                radius_m=radius,
                zone=zone,
                hours=hours,
                max_active_orders=rng.choice((20, 25, 30, 40)),
                # A store or two is shut for refitting: on the map, taking no orders.
                paused=n > 3 and rng.random() < 0.015,
            )
        )
    return stores


def _special(special: Special, kind: str) -> DemoStore:
    return DemoStore(
        store_id=special.code,
        name=special.name,
        city=special.city,
        district="",
        latitude=special.latitude,
        longitude=special.longitude,
        radius_m=special.radius_m,
        hours=AROUND_THE_CLOCK,
        max_active_orders=200 if kind == "cloud" else 40,
        kind=kind,
    )


# --- the catalogue --------------------------------------------------------------------------

# (sku prefix, yuan from, yuan to, names, formats); a product is a name in a format. The first
# names of each group are the core range every store carries.
_GROUPS: tuple[tuple[str, float, float, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "RTD",
        6,
        19,
        (
            "Osmanthus Oolong Milk Tea",
            "Jasmine Green Tea",
            "Brown Sugar Boba Milk",
            "White Peach Oolong",
            "Lychee Black Tea",
            "Honey Lemon Black Tea",
            "Tieguanyin Milk Tea",
            "Longjing Green Tea",
            "Grapefruit Jasmine",
            "Taro Milk Tea",
            "Coconut Oolong",
            "Yuzu Green Tea",
            "Aged Pu'er Tea",
            "Dianhong Milk Tea",
            "Mango Pomelo Sago",
            "Chrysanthemum Tea",
        ),
        ("bottle 500 ml", "can 310 ml", "cold brew 350 ml"),
    ),
    (
        "COF",
        8,
        24,
        (
            "Oat Latte",
            "Americano",
            "Coconut Latte",
            "Latte",
            "Flat White",
            "Cold Brew",
            "Osmanthus Latte",
            "Sea Salt Caramel Latte",
            "Pu'er Latte",
            "Mocha",
            "Hazelnut Latte",
            "Yunnan Single Origin Cold Brew",
        ),
        ("can 250 ml", "bottle 330 ml"),
    ),
    (
        "BEAN",
        38,
        168,
        (
            "House Espresso Blend",
            "Yunnan Baoshan",
            "Yunnan Pu'er Honey Process",
            "Ethiopia Yirgacheffe",
            "Colombia Huila",
            "Brazil Cerrado",
            "Kenya Nyeri",
            "Guatemala Antigua",
            "Sumatra Mandheling",
            "Decaf Blend",
        ),
        ("beans 250 g", "drip bags 10 x 10 g", "capsules 10"),
    ),
    (
        "BAK",
        6,
        38,
        (
            "Butter Croissant",
            "Egg Tart",
            "Pork Floss Bun",
            "Cheese Baked Bun",
            "Red Bean Bun",
            "Pineapple Bun",
            "Taro Mochi Bread",
            "Matcha Swiss Roll",
            "Almond Croissant",
            "Sesame Bagel",
            "Milk Toast",
            "Brioche Loaf",
            "Chocolate Babka",
            "Scallion Bread",
            "Salted Egg Yolk Puff",
            "Lotus Seed Mooncake",
            "Cinnamon Roll",
            "Blueberry Muffin",
            "Banana Walnut Loaf",
            "Basque Cheesecake",
            "Tiramisu Cup",
            "Mango Mousse",
            "Sweet Potato Bun",
            "Coconut Tart",
            "Osmanthus Rice Cake",
        ),
        ("single", "box of 4"),
    ),
    (
        "LEAF",
        28,
        398,
        (
            "West Lake Longjing",
            "Anxi Tieguanyin",
            "Wuyi Da Hong Pao",
            "Keemun Black",
            "Yunnan Dianhong",
            "Fuding White Peony",
            "Jasmine Silver Needle",
            "Aged Pu'er Cake",
            "Dongting Biluochun",
            "Huangshan Maofeng",
            "Lapsang Souchong",
            "Osmanthus Oolong Leaves",
        ),
        ("50 g tin", "100 g tin", "tea bags 20 x 2 g", "gift box 250 g"),
    ),
    (
        "SNK",
        9,
        68,
        (
            "Walnut Cookies",
            "Sea Salt Soda Crackers",
            "Pineapple Cake",
            "Peanut Sesame Brittle",
            "Matcha Almonds",
            "Dried Mango",
            "Hawthorn Strips",
            "Egg Rolls",
            "Seaweed Rice Crackers",
            "Spicy Peanuts",
            "Black Sesame Balls",
            "Plum Candy",
        ),
        ("bag", "gift box"),
    ),
    (
        "DRK",
        3,
        22,
        (
            "Spring Water 550 ml",
            "Sparkling Water Lemon 330 ml",
            "Fresh Milk 950 ml",
            "Oat Milk 1 L",
            "Coconut Water 330 ml",
            "Soy Milk 250 ml",
            "Greek Yogurt Cup",
            "Sour Plum Drink 450 ml",
            "Kombucha Ginger 330 ml",
            "Barley Tea 500 ml",
        ),
        ("",),
    ),
    (
        "MER",
        29,
        299,
        (
            "Ceramic Mug",
            "Double-Wall Glass",
            "Tumbler 450 ml",
            "Canvas Tote",
            "Gaiwan Set",
            "Pour-Over Kettle",
            "Tea Infuser Bottle",
            "Dripper and Filters",
            "Hand Grinder",
            "Tea Tray",
        ),
        ("celadon", "ink black", "oat white"),
    ),
)
_CORE_PER_GROUP = 4


def _catalogue(rng: random.Random) -> list[Product]:
    products = []
    for prefix, low, high, names, formats in _GROUPS:
        number = 0
        for rank, name in enumerate(names):
            for fmt in formats:
                number += 1
                yuan = rng.uniform(low, high)
                # Prices end in .0 or .5 yuan, and gift sizes cost more.
                if "gift" in fmt or "box of 4" in fmt or "250 g" in fmt:
                    yuan *= 1.8
                products.append(
                    Product(
                        sku=f"{prefix}-{number:03d}",
                        name=f"{name} ({fmt})" if fmt else name,
                        price_cents=round(yuan * 2) * 50,
                        core=rank < _CORE_PER_GROUP and fmt == formats[0],
                    )
                )
    return products


def _stock(rng: random.Random, store: DemoStore, products: Sequence[Product]) -> dict[str, int]:
    if store.kind == "cloud":
        return {p.sku: rng.randint(300, 600) for p in products}
    levels = {}
    for product in products:
        if product.core:
            levels[product.sku] = rng.randint(20, 80)
        elif rng.random() < 0.6:
            # A few of the SKUs a store lists are sold out, as in any store: listed, none on the shelf.
            levels[product.sku] = rng.choice((0, rng.randint(2, 40), rng.randint(5, 60)))
    return levels


def build_chain(seed: int = SEED) -> Chain:
    """The whole chain, the same for the same seed."""
    # Not for secrets: a seeded generator is what makes the chain the same on every run.
    rng = random.Random(seed)  # noqa: S311
    stores: list[DemoStore] = []
    for district in DISTRICTS:
        stores += _district_stores(rng, district)
    stores += [_special(s, "cloud") for s in CLOUD_STORES]
    stores += [_special(s, "station") for s in STATION_STORES]
    products = _catalogue(rng)
    stock = {store.store_id: _stock(rng, store, products) for store in stores}
    return Chain(tuple(stores), tuple(products), stock)


def nearest_city(latitude: float, longitude: float, within_m: float = 80_000) -> City | None:
    """The demo city a point belongs to, or None when it is far from all three."""
    best, best_m = None, within_m
    for city in CITIES:
        north = (latitude - city.latitude) * METRES_PER_DEGREE
        east = (longitude - city.longitude) * METRES_PER_DEGREE * math.cos(math.radians(city.latitude))
        metres = math.hypot(north, east)
        if metres < best_m:
            best, best_m = city, metres
    return best
