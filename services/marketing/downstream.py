"""Marketing's view of the services it reads from, over their gRPC contracts: the time zone of
each store, from fulfilment, so a member whose profile names no zone is reached at their home
store's local time."""

from __future__ import annotations

import threading

import grpc

from quanyu.clients import failure_of
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc

# ListStores' largest page.
STORE_PAGE = 1000


class StoreZones:
    """Every store's IANA zone, read from fulfilment's ListStores and kept in memory: a run asks
    for a zone per member, far too often to ask fulfilment each time. `refresh` reads them all
    again (bootstrap runs it periodically); until the first refresh succeeds, and for a store
    fulfilment does not list, the zone is unknown ("") and the member counts as Asia/Shanghai."""

    def __init__(
        self,
        fulfilment: fulfilment_pb2_grpc.FulfilmentServiceStub,
        *,
        timeout: float = 10.0,
        page_size: int = STORE_PAGE,
    ) -> None:
        self._fulfilment = fulfilment
        self._timeout = timeout
        self._page_size = page_size
        self._zones: dict[str, str] = {}
        self._lock = threading.Lock()

    def zone(self, store_id: str) -> str:
        return self._zones.get(store_id, "")

    def zones(self) -> set[str]:
        return {zone for zone in self._zones.values() if zone}

    def refresh(self) -> int:
        """Read every store's zone; how many stores are known. A failure leaves the zones read
        before in place (Unavailable or the refusal fulfilment gave)."""
        zones: dict[str, str] = {}
        token = ""
        while True:
            try:
                answer = self._fulfilment.ListStores(
                    fulfilment_pb2.ListStoresRequest(page_size=self._page_size, page_token=token),
                    timeout=self._timeout,
                )
            except grpc.RpcError as error:
                raise failure_of("fulfilment", error) from error
            zones.update({store.store_id: store.timezone for store in answer.stores})
            token = answer.next_page_token
            if not token:
                break
        # Swapped whole: a run reading zones meanwhile sees the old map or the new, not half of each.
        with self._lock:
            self._zones = zones
        return len(zones)
