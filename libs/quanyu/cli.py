"""The `quanyu` command: run the platform, one service, its migrations, or print a caller token."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from quanyu.auth import DEFAULT_TTL_SECONDS, Principal, Role, TokenCodec
from quanyu.config import SERVICE_NAMES, ConfigurationError, get_settings
from quanyu.errors import QuanyuError
from quanyu.logs import configure_logging


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
    token.add_argument("--subject", help="who the token names (default: the role)")
    token.add_argument("--store-id", default="", help="the store a store token is bound to")
    token.add_argument("--channel", default="", help="the channel of a channel token, e.g. CHANNEL_APP")
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="lifetime in seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [name for name in getattr(args, "services", []) if name not in SERVICE_NAMES]
    if unknown:
        parser.error(f"unknown service {unknown[0]!r}; choose from {', '.join(SERVICE_NAMES)}")
    try:
        settings = get_settings()
        if args.command in ("serve", "up"):
            settings.check_startable()
        if args.command == "serve":
            configure_logging(settings.log_level, service=args.service)
            from quanyu.server import serve_until_signalled

            module = service_module(args.service)
            module.migrate(settings)
            serve_until_signalled(module.build_app(settings), settings)
            return 0
        configure_logging(settings.log_level)
        if args.command == "up":
            from quanyu.supervisor import supervise

            for name in args.services or SERVICE_NAMES:
                service_module(name).migrate(settings)
            return supervise(args.services or SERVICE_NAMES, settings)
        if args.command == "migrate":
            for name in args.services or SERVICE_NAMES:
                service_module(name).migrate(settings)
                print(f"{name}: migrated")
            return 0
        if args.command == "token":
            principal = Principal(Role(args.role), args.subject or args.role, args.store_id, args.channel)
            issued = TokenCodec(settings.signing_key_bytes()).issue(principal, args.ttl)
            print(
                f"# {principal.role.value} token, expires {issued.expire_time.isoformat()}", file=sys.stderr
            )
            print(issued.token)
            return 0
    except (ConfigurationError, QuanyuError) as error:
        print(f"quanyu: {error}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
