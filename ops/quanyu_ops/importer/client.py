"""The fulfilment service as the importer calls it: an ops token, deadlines, and the retries on
UNAVAILABLE of the channel's service configuration (quanyu.clients), as every Quanyu client has.
Every call is idempotent, so sending a batch again is harmless."""

from __future__ import annotations

from typing import Any

import grpc

from quanyu.clients import SERVICE_PACKAGES, open_channel, retry_service_config
from quanyu.config import Settings
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu_ops.deployment import bearer_metadata
from quanyu_ops.importer.formats import ImportFailed

# A batch of stores with detailed zones takes the service a while to check and index.
IMPORT_DEADLINE_SECONDS = 120.0
STOCK_DEADLINE_SECONDS = 30.0


def fulfilment_channel(settings: Settings) -> grpc.Channel:
    """A channel to fulfilment that retries a call the service did not answer (restarting, rolling
    out), over mutual TLS when the deployment's services use it."""
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", retry_service_config(SERVICE_PACKAGES["fulfilment"])),
    ]
    return open_channel(settings, settings.target("fulfilment"), options)


class FulfilmentClient:
    """ImportStores and SetStock with the importer's token and deadlines."""

    def __init__(self, channel: grpc.Channel, target: str, token: str) -> None:
        self._stub = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
        self._target = target
        self._metadata = bearer_metadata(token)

    def start_import(self, request: fulfilment_pb2.ImportStoresRequest) -> Any:
        return self._stub.ImportStores.future(
            request, timeout=IMPORT_DEADLINE_SECONDS, metadata=self._metadata
        )

    def finish_import(self, call: Any) -> fulfilment_pb2.ImportStoresResponse:
        """The answer to a started ImportStores; ImportFailed when the call failed as a whole."""
        try:
            answer: fulfilment_pb2.ImportStoresResponse = call.result()
        except grpc.RpcError as error:
            raise self.failure(error, IMPORT_DEADLINE_SECONDS) from None
        return answer

    def set_stock(self, request: fulfilment_pb2.SetStockRequest) -> fulfilment_pb2.SetStockResponse:
        """SetStock; a refusal is the caller's to read."""
        answer: fulfilment_pb2.SetStockResponse = self._stub.SetStock(
            request, timeout=STOCK_DEADLINE_SECONDS, metadata=self._metadata
        )
        return answer

    def failure(self, error: grpc.RpcError, deadline: float) -> ImportFailed:
        """Why nothing more can load, for a call that failed as a whole."""
        code, details = error.code(), error.details()
        if code == grpc.StatusCode.UNAVAILABLE:
            return ImportFailed(
                f"cannot reach the fulfilment service at {self._target}: {details} "
                "(is it running? QUANYU_FULFILMENT__TARGET or QUANYU_FULFILMENT__PORT say where it is)"
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ImportFailed(
                f"the fulfilment service at {self._target} did not answer within {deadline:g} s"
            )
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return ImportFailed(
                f"the fulfilment service refused the token: {details}; pass --token or set QUANYU_TOKEN"
            )
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return ImportFailed(f"the token may not do this: {details}; an ops token is needed")
        return ImportFailed(f"the fulfilment service answered {code.name}: {details}")
