"""A gRPC health probe for container health checks: `python -m quanyu.probe --address HOST:PORT`.

It asks the server's `grpc.health.v1.Health/Check` and exits 0 when the answer is SERVING, 1 for
anything else: nothing listening, NOT_SERVING (a service draining after SIGTERM), a service name
the server does not know, or no answer within the timeout. One line on standard output says why,
which is what `docker inspect` shows of a failing health check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quanyu.clients import open_channel
from quanyu.config import Settings, get_settings

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT_SECONDS = 2.0


def health_status(
    address: str,
    service: str = "",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    settings: Settings | None = None,
) -> str:
    """The health of `service` at `address` as the server names it, or the gRPC status of the failed call.

    An empty `service` asks about the server as a whole. With `settings` that turn mutual TLS on,
    the probe presents their certificate, as the services' own clients do.
    """
    with open_channel(settings, address) if settings else grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            return str(code.name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m quanyu.probe",
        description="Exit 0 when a gRPC server answers SERVING to a health check, 1 otherwise.",
    )
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"host:port (default {DEFAULT_ADDRESS})")
    parser.add_argument(
        "--service",
        default="",
        help="service name to ask about, e.g. quanyu.identity.v1.IdentityService (default: the whole server)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A container's own QUANYU_TLS_* settings: with mutual TLS on, its gRPC port wants them.
    status = health_status(args.address, args.service, args.timeout, get_settings())
    print(f"{args.address} {args.service or '(server)'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
