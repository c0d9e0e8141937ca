"""`quanyu stores import` and `quanyu stock import` as ops run them, against a real fulfilment process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from geopy.distance import geodesic

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from services.fulfilment.domain.coordinates import gcj02_to_wgs84
from tests.conftest import bearer
from tests.processes import free_port, platform_env, run_cli, started, target, wait_serving

Stub = fulfilment_pb2_grpc.FulfilmentServiceStub
Metadata = tuple[tuple[str, str]]

ZONE = {
    "type": "Polygon",
    "coordinates": [[[121.46, 31.22], [121.49, 31.22], [121.49, 31.24], [121.46, 31.24], [121.46, 31.22]]],
}


class Platform:
    """One fulfilment process for the module, with what a test needs to call it and the CLI."""

    def __init__(self, env: dict[str, str], channel: grpc.Channel, ops: Metadata) -> None:
        self.env, self.stub, self.ops = env, Stub(channel), ops

    def store(self, store_id: str) -> fulfilment_pb2.Store:
        answer: fulfilment_pb2.GetStoreResponse = self.stub.GetStore(
            fulfilment_pb2.GetStoreRequest(store_id=store_id), metadata=self.ops
        )
        return answer.store

    def missing(self, store_id: str) -> bool:
        try:
            self.store(store_id)
        except grpc.RpcError as error:
            return bool(error.code() == grpc.StatusCode.NOT_FOUND)
        return False

    def stock(self, store_id: str) -> dict[str, int]:
        answer = self.stub.GetStock(fulfilment_pb2.GetStockRequest(store_id=store_id), metadata=self.ops)
        return {level.sku: level.on_hand for level in answer.levels}

    def store_ids(self) -> list[str]:
        found, token = [], ""
        while True:
            page = self.stub.ListStores(
                fulfilment_pb2.ListStoresRequest(page_size=1000, page_token=token), metadata=self.ops
            )
            found += [s.store_id for s in page.stores]
            token = page.next_page_token
            if not token:
                return found


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("import")
    env = platform_env(home / "var", QUANYU_LOG_LEVEL="WARNING")
    with started(["serve", "fulfilment"], env, home / "fulfilment.log") as serve:
        wait_serving(target(env, "fulfilment"), serve)
        ops = bearer(TokenCodec.local(home / "var" / "token-keys").issue(Principal(Role.OPS, "ops")).token)
        with grpc.insecure_channel(target(env, "fulfilment")) as channel:
            yield Platform(env, channel, ops)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def reported(output: str) -> list[str]:
    """The lines naming rejected rows, without the summary."""
    return [line for line in output.splitlines() if line.startswith(("line ", "features["))]


STORES_CSV = """\
store_id,name,latitude,longitude,coordinate_system,status,opening_hours,delivery_zone_geojson
T1,Bund,31.2400,121.4900,,,1-5 09:00-22:00; 6-7 10:00-23:00,
T2,Too far north,95,121.47,,,,
T3,,31.2,121.4,,,,
T4,Unknown status,31.2,121.4,,OPENN,,
T5,Bad zone,31.2,121.4,,,,"{""type"": ""Point"", ""coordinates"": [121.4, 31.2]}"
T6,Bad hours,31.2,121.4,,,1-5 9am-10pm,
T1,Bund again,31.2,121.4,,,,
T7,People's Square,31.2304,121.4737,gcj-02,paused,3 09:00-12:00,"{""type"": ""Polygon"",
 ""coordinates"": [[[121.46, 31.22], [121.49, 31.22], [121.49, 31.24], [121.46, 31.24], [121.46, 31.22]]]
}"
T8,Lost,31.2,east,,,,
"""


def test_a_stores_csv_loads_its_good_rows_and_reports_every_bad_one_by_line(
    platform: Platform, tmp_path: Path
) -> None:
    path = write(tmp_path / "stores.csv", STORES_CSV)
    result = run_cli(["stores", "import", str(path)], platform.env)

    assert result.returncode == 1, result.stderr
    assert reported(result.stdout) == [
        "line 3: store.location.latitude: must be a number of degrees from -90 to 90",
        "line 4: store.name: is required",
        'line 5: store.status: must be one of ACTIVE, PAUSED, CLOSED, not "OPENN"',
        "line 6: store.delivery_zone_geojson: must be a GeoJSON Polygon or MultiPolygon "
        "(or a Feature of one), not a Point",
        'line 7: store.opening_hours: "9am-10pm" is not a span of times such as 09:00-22:00',
        "line 8: store.store_id: repeats line 2",
        'line 12: store.location.longitude: must be a number of degrees from -180 to 180, not "east"',
    ]
    assert result.stdout.splitlines()[-1] == "stores: 2 loaded, 7 rejected (see above)"
    assert "Traceback" not in result.stderr

    bund = platform.store("T1")
    assert bund.name == "Bund"  # the first row, not the repeat
    assert [(h.weekday, h.open, h.close) for h in bund.opening_hours] == [
        *((day, "09:00", "22:00") for day in range(1, 6)),
        (6, "10:00", "23:00"),
        (7, "10:00", "23:00"),
    ]
    for store_id in ("T2", "T3", "T4", "T5", "T6", "T8"):
        assert platform.missing(store_id)

    # A zone quoted across three lines is one record; its GCJ-02 position is kept in WGS-84.
    square = platform.store("T7")
    assert json.loads(square.delivery_zone_geojson) == ZONE
    assert square.status == fulfilment_pb2.STORE_STATUS_PAUSED
    assert [(h.weekday, h.open, h.close) for h in square.opening_hours] == [(3, "09:00", "12:00")]
    assert square.location.system == common_pb2.COORDINATE_SYSTEM_WGS84
    expected = gcj02_to_wgs84(31.2304, 121.4737)
    stored = (square.location.latitude, square.location.longitude)
    assert geodesic(stored, expected).meters < 0.01
    assert geodesic(stored, (31.2304, 121.4737)).meters > 100  # the shift was undone, not ignored

    # Loading the same file again changes nothing and says the same.
    before = platform.store_ids()
    again = run_cli(["stores", "import", str(path)], platform.env)
    assert (again.returncode, again.stdout) == (1, result.stdout)
    assert platform.store_ids() == before
    assert platform.store("T1") == bund


def test_errors_beyond_the_first_batch_are_traced_to_their_lines(platform: Platform, tmp_path: Path) -> None:
    rows = ["store_id,name,latitude,longitude,delivery_radius_m"]
    for n in range(2500):
        rows.append(f"B{n:04d},Store {n},{30 + n / 10_000:.4f},{120 + n / 10_000:.4f},3000")
    rows[2201] = "B2200,Store 2200,31.1,-200,3000"  # refused by the service, in the third call
    rows[1501] = "B0007,Store 7 again,31.1,120.1,3000"  # repeats line 9, a call earlier
    rows[1801] = "B1800,Store 1800,31.1,120.1,far"
    path = write(tmp_path / "many.csv", "\n".join(rows) + "\n")

    result = run_cli(["stores", "import", str(path)], platform.env)

    assert result.returncode == 1, result.stderr
    assert reported(result.stdout) == [
        "line 1502: store.store_id: repeats line 9",
        'line 1802: store.delivery_radius_m: must be a number of metres, not "far"',
        "line 2202: store.location.longitude: must be a number of degrees from -180 to 180",
    ]
    assert result.stdout.splitlines()[-1] == "stores: 2,497 loaded, 3 rejected (see above)"
    assert platform.store("B2499").delivery_radius_m == 3000
    assert platform.missing("B2200")
    assert platform.store("B0007").name == "Store 7"


def test_a_geojson_feature_collection_loads_with_its_delivery_zone(
    platform: Platform, tmp_path: Path
) -> None:
    def point(lng: float, lat: float) -> dict[str, object]:
        return {"type": "Point", "coordinates": [lng, lat]}

    document = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": point(121.4737, 31.2304),
                "properties": {
                    "store_id": "G1",
                    "name": "Zoned",
                    "delivery_zone": ZONE,
                    "opening_hours": "1-7 08:00-02:00",
                    "priority": 2,
                    "max_active_orders": "12",
                },
            },
            {"type": "Feature", "id": "G2", "geometry": point(121.5, 31.3), "properties": {"name": "By id"}},
            {"type": "Feature", "geometry": None, "properties": {"store_id": "G3", "name": "Nowhere"}},
            {
                "type": "Feature",
                "geometry": point(121.5, 31.3),
                "properties": {"store_id": "G4", "name": "Broken zone", "delivery_zone_geojson": "{nope"},
            },
        ],
    }
    path = write(tmp_path / "stores.geojson", json.dumps(document))

    result = run_cli(["stores", "import", str(path)], platform.env)

    assert result.returncode == 1, result.stderr
    assert reported(result.stdout) == [
        "features[2]: store.location: the feature's geometry must be a Point [longitude, latitude]",
        "features[3]: store.delivery_zone_geojson: is not JSON: Expecting property name enclosed in "
        "double quotes at line 1 column 2",
    ]
    assert result.stdout.splitlines()[-1] == "stores: 2 loaded, 2 rejected (see above)"
    zoned = platform.store("G1")
    assert json.loads(zoned.delivery_zone_geojson) == ZONE
    assert (zoned.location.latitude, zoned.location.longitude) == (31.2304, 121.4737)
    assert (zoned.priority, zoned.max_active_orders, len(zoned.opening_hours)) == (2, 12, 7)
    assert platform.store("G2").name == "By id"
    assert platform.missing("G3")
    assert platform.missing("G4")


def test_stock_levels_load_per_store_and_bad_rows_are_reported(platform: Platform, tmp_path: Path) -> None:
    stores = write(
        tmp_path / "stores.csv", "store_id,name,latitude,longitude\nK1,One,31.2,121.4\nK2,Two,31.3,121.5\n"
    )
    assert run_cli(["stores", "import", str(stores)], platform.env).returncode == 0

    long_sku = "Z" * 65
    rows = ["store_id,sku,on_hand", "K1,MILK,12", "K1,BREAD,7", "NOWHERE,MILK,1", "K1,MILK,9", "K2,EGGS,-3"]
    rows += ["K2,TEA,x", "NOWHERE,TEA,2", "K2,RICE,40"]
    # 1,500 levels at K2: two calls, and the second refuses one SKU the service finds too long.
    rows += [f"K2,SKU{n:04d},{n}" for n in range(1500)]
    rows[1209] = f"K2,{long_sku},5"
    path = write(tmp_path / "stock.csv", "\n".join(rows) + "\n")

    result = run_cli(["stock", "import", str(path)], platform.env)

    assert result.returncode == 1, result.stderr
    assert sorted(reported(result.stdout), key=lambda line: int(line.split()[1].rstrip(":"))) == [
        'line 4: store_id: no store "NOWHERE"; import the store first',
        'line 5: sku: repeats line 2 for store "K1"',
        "line 6: on_hand: must not be negative",
        'line 7: on_hand: must be a whole number of units, not "x"',
        'line 8: store_id: no store "NOWHERE"; import the store first',
        "line 1210: sku: must be at most 64 characters",
    ]
    assert result.stdout.splitlines()[-1] == "stock levels: 1,502 loaded, 6 rejected (see above)"
    assert platform.stock("K1") == {"BREAD": 7, "MILK": 12}
    at_two = platform.stock("K2")
    assert len(at_two) == 1500
    assert (at_two["RICE"], at_two["SKU0000"], at_two["SKU1499"]) == (40, 0, 1499)
    assert "SKU1200" not in at_two

    # Quantities are absolute: a second run leaves the same levels.
    again = run_cli(["stock", "import", str(path)], platform.env)
    assert again.returncode == 1
    assert platform.stock("K1") == {"BREAD": 7, "MILK": 12}
    assert platform.stock("K2") == at_two


def test_a_store_token_sets_its_own_stock_and_is_refused_the_rest(platform: Platform, tmp_path: Path) -> None:
    stores = write(
        tmp_path / "stores.csv", "store_id,name,latitude,longitude\nP1,One,31.2,121.4\nP2,Two,31.3,121.5\n"
    )
    assert run_cli(["stores", "import", str(stores)], platform.env).returncode == 0
    own = (
        TokenCodec.local(Path(platform.env["QUANYU_VAR_DIR"]) / "token-keys")
        .issue(Principal(Role.STORE, "till-1", store_id="P1"))
        .token
    )
    path = write(tmp_path / "stock.csv", "store_id,sku,on_hand\nP1,MILK,3\nP2,MILK,4\n")

    result = run_cli(["stock", "import", str(path)], {**platform.env, "QUANYU_TOKEN": own})

    assert result.returncode == 1, result.stderr
    assert reported(result.stdout) == [
        "line 3: store_id: the token may not set this store's stock: "
        "a store terminal may act only for its own store"
    ]
    assert platform.stock("P1") == {"MILK": 3}
    assert platform.stock("P2") == {}
    # Stores are ops' to load: the same token cannot import them at all.
    refused = run_cli(["stores", "import", str(stores), "--token", own], platform.env)
    assert refused.returncode == 2
    assert "an ops token is needed" in refused.stderr


def test_a_missing_file_or_an_unreachable_service_exits_2_with_a_message(
    platform: Platform, tmp_path: Path
) -> None:
    missing = run_cli(["stores", "import", str(tmp_path / "nothing.csv")], platform.env)
    assert missing.returncode == 2
    assert f"{tmp_path / 'nothing.csv'}: no such file" in missing.stderr

    headless = write(tmp_path / "stock.csv", "store,sku\nK1,MILK\n")
    wrong = run_cli(["stock", "import", str(headless)], platform.env)
    assert wrong.returncode == 2
    assert "the header (line 1) lacks store_id, on_hand" in wrong.stderr

    stock = write(tmp_path / "good.csv", "store_id,sku,on_hand\nK1,MILK,1\n")
    nobody = {**platform.env, "QUANYU_FULFILMENT__PORT": str(free_port())}
    unreachable = run_cli(["stock", "import", str(stock)], nobody)
    assert unreachable.returncode == 2
    assert "cannot reach the fulfilment service at 127.0.0.1:" in unreachable.stderr
    for result in (missing, wrong, unreachable):
        assert "Traceback" not in result.stderr
