"""Identity as membership asks it (ports.Customers): that a customer exists, and which channels
they hold accounts on (a channel acts only for its own customers). An answer that is not "no such
customer" fails as quanyu.clients.failure_of classifies it.

Only positive answers are kept: an account once linked is never unlinked, and a merge moves it to
the survivor, whom the merged id then leads to, so "this customer holds a WeChat account" stays
true. A negative answer is asked again each time, since an account may be linked at any moment.
"""

from __future__ import annotations

import threading

import grpc

from quanyu.clients import failure_of
from quanyu.common.v1 import common_pb2
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc

_MAX_KEPT = 200_000
_CHANNEL_NAMES = {value: name for name, value in common_pb2.Channel.items()}


class CustomerChannels:
    def __init__(self, identity: identity_pb2_grpc.IdentityServiceStub) -> None:
        self._identity = identity
        self._lock = threading.Lock()
        self._known: dict[str, frozenset[str]] = {}

    def exists(self, customer_id: str) -> bool:
        return customer_id in self._known or self._ask(customer_id) is not None

    def holds(self, customer_id: str, channel: str) -> bool:
        """Whether the customer holds an account on `channel`."""
        known = self._known.get(customer_id)
        if known is not None and channel in known:
            return True
        asked = self._ask(customer_id)
        return asked is not None and channel in asked

    def _ask(self, customer_id: str) -> frozenset[str] | None:
        try:
            answer = self._identity.GetCustomer(identity_pb2.GetCustomerRequest(customer_id=customer_id))
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise failure_of("identity", error) from error
        channels = frozenset(_CHANNEL_NAMES.get(a.channel, "") for a in answer.customer.accounts)
        with self._lock:
            if len(self._known) >= _MAX_KEPT:
                self._known.clear()
            for key in {customer_id, answer.customer.customer_id}:
                self._known[key] = self._known.get(key, frozenset()) | channels
        return channels
