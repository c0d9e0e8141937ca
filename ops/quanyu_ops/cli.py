"""The `quanyu` command: run the platform or one service, migrate, print a token, import stores and stock,
play the demo and draw the map."""

from __future__ import annotations

import argparse
import getpass
import importlib
import sys
from collections.abc import Sequence
from datetime import date, datetime, time
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

from quanyu import tracing
from quanyu.auth import Role, caller, channel_named
from quanyu.config import SERVICE_NAMES, ConfigurationError, Settings
from quanyu.errors import QuanyuError
from quanyu.logs import configure_logging
from quanyu_ops.deployment import Deployment, local_deployment


def service_module(name: str) -> ModuleType:
    """A service's composition root: `migrate(settings)` and `build_app(settings)`."""
    return importlib.import_module(f"services.{name}.bootstrap")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quanyu", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run every service, restarting any that crashes; Ctrl-C stops them")
    up.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"which services (default: all of {', '.join(SERVICE_NAMES)})",
    )
    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICE_NAMES)
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("services", nargs="*", metavar="SERVICE", help="which services (default: all)")
    token = commands.add_parser("token", help="print a bearer token signed with this deployment's key")
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument(
        "--subject",
        help="the terminal or backend the token is for, e.g. till-3 (named within its store or channel: "
        "store:SH-001/till-3); default: the store, the channel, or ops/<your user name>",
    )
    token.add_argument(
        "--store-id", default="", help="the store a store token is bound to; it must exist in fulfilment"
    )
    token.add_argument(
        "--channel", default="", help="the channel of a channel token, e.g. CHANNEL_APP (or APP)"
    )
    token.add_argument(
        "--ttl", type=int, default=0, help="lifetime in seconds (0: a day, or the role's longest if shorter)"
    )
    revoke = commands.add_parser("revoke", help="revoke a token, or every token of a subject issued so far")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--token-id", default="", help="the token's id (IssueToken's token_id, its jti)")
    target.add_argument("--subject", default="", help="e.g. store:SH-001/till-3")
    audit = commands.add_parser("audit", help="print the audit trail of privileged actions, newest first")
    audit.add_argument(
        "services", nargs="*", metavar="SERVICE", help="which services (default: all that keep one)"
    )
    audit.add_argument("--limit", type=int, default=100, help="at most this many records")
    keys = commands.add_parser("keys", help="token signing keys")
    new_key = keys.add_subparsers(dest="action", required=True).add_parser(
        "new", help="add a new Ed25519 key pair to a key directory and print its kid"
    )
    new_key.add_argument("directory", type=Path)
    new_key.add_argument("--kid", help="the key id (default: k<UTC time>, newer keys sort later)")
    membership = commands.add_parser("membership", help="membership operations for ops")
    expire = membership.add_subparsers(dest="action", required=True).add_parser(
        "expire",
        help="write off what is left of points past their expiry, once (the service also does this hourly)",
    )
    expire.add_argument(
        "--as-of",
        type=date.fromisoformat,
        help="expire points lapsed by the start of this day (YYYY-MM-DD, programme time zone); default now",
    )
    expire.add_argument(
        "--tiers", action="store_true", help="also move members to the tier their spend earns"
    )
    for what, description in _IMPORTS.items():
        load = commands.add_parser(what, help=f"bulk-load {what} into the running fulfilment service")
        load = load.add_subparsers(dest="action", required=True).add_parser(
            "import", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        load.add_argument("file", type=Path, help="the file to load")
        load.add_argument(
            "--token",
            help="bearer token to call with (default: $QUANYU_TOKEN, else an ops token signed with "
            "this deployment's signing key)",
        )
    demo = commands.add_parser(
        "demo", help="load a demo chain into the platform (starting it if needed) and play the main flows"
    )
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds the whole demo may take")
    drawing = commands.add_parser(
        "map", help="draw stores, delivery zones and the latest assignments as a PNG"
    )
    drawing.add_argument("--out", type=Path, help="the PNG to write (default: VAR_DIR/quanyu-map.png)")
    drawing.add_argument("--city", default="all", choices=["all", "shanghai", "hangzhou", "suzhou"])
    drawing.add_argument("--orders", type=int, default=200, help="how many of the latest orders to draw")
    return parser


_IMPORTS = {
    "stores": """Load stores into the fulfilment service (ImportStores, 1000 per call).

FILE is CSV (.csv) or a GeoJSON FeatureCollection (.geojson, .json); otherwise the content decides.
CSV: a header row naming store_id,name,latitude,longitude and optionally coordinate_system
(WGS84|GCJ02|BD09, default WGS84), status (ACTIVE|PAUSED|CLOSED), delivery_radius_m, timezone,
max_active_orders, priority, opening_hours ("1-5 09:00-22:00; 6-7 10:00-23:00", weekdays 1=Mon..7=Sun,
empty = around the clock) and delivery_zone_geojson (a GeoJSON Polygon or MultiPolygon).
GeoJSON: Point features (WGS-84) with the same names as properties; the zone as delivery_zone
(a geometry) or delivery_zone_geojson (text).

Rows the file or the service rejects are listed with their line (GeoJSON: features[i]); the
rest load. Loading again replaces the stores, so a re-run is harmless.
Exit status: 0 all loaded, 1 some rows rejected, 2 file unreadable or service unreachable.""",
    "stock": """Set stock levels in the fulfilment service (SetStock, per store, 1000 per call).

FILE is CSV with a header row naming store_id,sku,on_hand. Quantities are absolute, so a re-run
is harmless; a (store_id, sku) given twice is rejected where it repeats.

Rows the file or the service rejects are listed with their line; the rest load.
Exit status: 0 all loaded, 1 some rows rejected, 2 file unreadable or service unreachable.""",
}


def _expire_points(settings: Settings, as_of: date | None, *, tiers: bool) -> int:
    module = service_module("membership")
    module.migrate(settings)
    service = module.build_service(settings)
    try:
        moment = None
        if as_of is not None:
            moment = datetime.combine(as_of, time(0), ZoneInfo(service.programme.timezone))
        written = service.expire(moment)
        print(f"points: {written} lapsed earnings written off")
        if tiers:
            print(f"tiers: {service.evaluate_tiers(moment)} members moved")
    finally:
        service.close()
    return 0


def _serve(args: argparse.Namespace, deployment: Deployment) -> int:
    settings = deployment.settings
    settings.check_startable()
    configure_logging(settings.log_level, service=args.service)
    from quanyu.server import serve_until_signalled

    module = service_module(args.service)
    module.migrate(settings)
    tracing.configure_tracing(args.service, settings.otlp_endpoint)
    serve_until_signalled(module.build_app(settings), settings)
    return 0


def _up(args: argparse.Namespace, deployment: Deployment) -> int:
    settings = deployment.settings
    settings.check_startable()
    from quanyu_ops.supervisor import refuse_taken_ports, supervise

    refused = refuse_taken_ports(args.services or SERVICE_NAMES, settings)
    if refused is not None:
        return refused
    for name in args.services or SERVICE_NAMES:
        service_module(name).migrate(settings)
    return supervise(args.services or SERVICE_NAMES, deployment)


def _migrate(args: argparse.Namespace, deployment: Deployment) -> int:
    for name in args.services or SERVICE_NAMES:
        service_module(name).migrate(deployment.settings)
        print(f"{name}: migrated")
    return 0


def _token(args: argparse.Namespace, deployment: Deployment) -> int:
    role = Role(args.role)
    channel = channel_named(args.channel, "--channel") if args.channel else ""
    principal = caller(role, store_id=args.store_id, channel=channel, subject=args.subject or _operator(role))
    # The key first: without the deployment's key no token is worth checking a store for.
    if deployment.settings.token_key_dir is None:
        deployment.signing_key()
    if role is Role.STORE:
        _require_store(deployment, principal.store_id)
    issued = deployment.issue(principal, args.ttl)
    print(
        f"# {principal.role.value} token for {principal.name}, expires {issued.expire_time.isoformat()}",
        file=sys.stderr,
    )
    print(issued.token)
    return 0


def _operator(role: Role) -> str:
    """An ops token from the command names the person at the keyboard (ops/alice)."""
    if role is not Role.OPS:
        return ""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _require_store(deployment: Deployment, store_id: str) -> None:
    """A store token for a store the chain does not have would act for nothing: ask fulfilment,
    which keeps the stores, before signing one."""
    from quanyu.clients import store_exists
    from quanyu.fulfilment.v1 import fulfilment_pb2_grpc
    from quanyu_ops.trail import operator_bearer, ops_channel

    settings = deployment.settings
    # As the operator, with an ops token: the ops command holds no service key.
    with ops_channel(settings, "fulfilment", operator_bearer(deployment)) as channel:
        try:
            exists = store_exists(fulfilment_pb2_grpc.FulfilmentServiceStub(channel), store_id)
        except QuanyuError as error:
            raise ConfigurationError(
                f"{error.message} at {settings.target('fulfilment')}: start the platform (make run) "
                "or point QUANYU_FULFILMENT__TARGET at it"
            ) from error
    if not exists:
        raise ConfigurationError(
            f"there is no store {store_id!r}: add it first (quanyu stores import, or UpsertStore)"
        )


def _import(args: argparse.Namespace, deployment: Deployment) -> int:
    from quanyu_ops.importer.command import main as load

    return load(args.command, args.file, token=args.token, deployment=deployment)


def _membership(args: argparse.Namespace, deployment: Deployment) -> int:
    return _expire_points(deployment.settings, args.as_of, tiers=args.tiers)


def _demo(args: argparse.Namespace, deployment: Deployment) -> int:
    from quanyu_ops.demo import play

    return play.main(deployment, timeout=args.timeout)


def _map(args: argparse.Namespace, deployment: Deployment) -> int:
    from quanyu_ops.map import main as draw_map

    return draw_map(deployment, out=args.out, city=args.city, orders=args.orders)


def _revoke(args: argparse.Namespace, deployment: Deployment) -> int:
    from quanyu_ops import trail

    return trail.revoke(deployment, token_id=args.token_id, subject=args.subject)


def _audit(args: argparse.Namespace, deployment: Deployment) -> int:
    from quanyu_ops import trail

    return trail.audit(deployment, args.services, args.limit)


def _keys(args: argparse.Namespace, deployment: Deployment) -> int:
    from quanyu_ops import trail

    return trail.new_key(args.directory, args.kid)


_COMMANDS = {
    "revoke": _revoke,
    "audit": _audit,
    "keys": _keys,
    "serve": _serve,
    "up": _up,
    "migrate": _migrate,
    "token": _token,
    "membership": _membership,
    "demo": _demo,
    "map": _map,
    **dict.fromkeys(_IMPORTS, _import),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [name for name in getattr(args, "services", []) if name not in SERVICE_NAMES]
    if unknown:
        parser.error(f"unknown service {unknown[0]!r}; choose from {', '.join(SERVICE_NAMES)}")
    try:
        deployment = local_deployment()
        if args.command != "serve":
            configure_logging(deployment.settings.log_level)
        return _COMMANDS[args.command](args, deployment)
    except (ConfigurationError, QuanyuError) as error:
        print(f"quanyu: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
