"""Every string and repeated field of every request has a cap: documented in the protos, and
enforced with INVALID_ARGUMENT naming the field (never UNAVAILABLE, INTERNAL or a slow success).

For each RPC, each string field (at any depth) is sent 100,001 characters long and each repeated
field with 10,001 elements, one at a time, as ops (or, for an RPC ops may not call, as the first
role it admits); the answer must be INVALID_ARGUMENT with a field
violation naming that field (or, for a store row of ImportStores, a row error naming it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from quanyu.auth import Role
from quanyu.clients import field_violations
from tests.orders.platform import Metadata
from tests.reliability.deployment import Deployment
from tests.reliability.fuzz import POLICIES, SERVICES
from tests.reliability.protos import proto_comments
from tests.reliability.world import World

TOO_LONG = 100_001  # characters: past every string cap
TOO_MANY = 10_001  # elements: past every repeated cap
DEADLINE = 30.0
# Rows of a bulk import are judged one by one: a bad row is reported in the answer, the rest load.
ROW_REPORTS = {"/quanyu.fulfilment.v1.FulfilmentService/ImportStores": "stores"}


@dataclass(frozen=True)
class Oversized:
    method: str  # full method name
    path: str  # the field as a BadRequest names it, e.g. lines[0].sku
    request: Message


@dataclass
class SizeFigures:
    fields: int = 0
    undocumented: int = 0
    unenforced: int = 0
    problems: list[str] = field(default_factory=list)


def request_fields(
    descriptor: Descriptor, prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, list[Any]]]:
    """(path, [field descriptors from the top]) of every string and repeated field a request
    carries, through nested messages but not into google.protobuf types."""
    for item in descriptor.fields:
        path = f"{prefix}.{item.name}" if prefix else item.name
        if item.is_repeated or item.type == FieldDescriptor.TYPE_STRING:
            yield path, [item]
        nested = item.message_type
        if nested is not None and depth < 3:
            if nested.full_name.startswith("google."):
                continue
            step = f"{path}[0]" if item.is_repeated else path
            for inner_path, chain in request_fields(nested, step, depth + 1):
                yield inner_path, [item, *chain]


def oversized_requests() -> Iterator[Oversized]:
    for service in SERVICES.values():
        for method in service.methods:
            full = f"/{service.full_name}/{method.name}"
            for path, chain in request_fields(method.input_type):
                request = message_factory.GetMessageClass(method.input_type)()
                _oversize(request, chain)
                yield Oversized(full, path, request)


def _oversize(message: Message, chain: list[Any]) -> None:
    *hops, last = chain
    for hop in hops:
        message = getattr(message, hop.name).add() if hop.is_repeated else getattr(message, hop.name)
    target = getattr(message, last.name)
    if not last.is_repeated:
        setattr(message, last.name, "x" * TOO_LONG)
    elif last.type == FieldDescriptor.TYPE_MESSAGE:
        for _ in range(TOO_MANY):
            target.add()
    elif last.type == FieldDescriptor.TYPE_STRING:
        target.extend(f"x{n}" for n in range(TOO_MANY))
    else:
        target.extend([1] * TOO_MANY)


def sizes_are_capped(d: Deployment) -> SizeFigures:
    figures = SizeFigures()
    comments = proto_comments().fields
    w = World(d)
    for case in oversized_requests():
        figures.fields += 1
        service = next(name for name, s in SERVICES.items() if case.method.startswith(f"/{s.full_name}/"))
        leaf = case.path.rsplit(".", 1)[-1].split("[")[0]
        owner = _owner_of(case)
        if "at most" not in comments.get((owner, leaf), "").lower():
            figures.undocumented += 1
            figures.problems.append(f"{case.method} {case.path}: the proto documents no cap ({owner}.{leaf})")
        call = d.channel(service).unary_unary(
            case.method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_factory.GetMessageClass(
                _method(case.method).output_type
            ).FromString,
        )
        try:
            answer = call(case.request, metadata=_caller(w, case.method), timeout=DEADLINE)
        except grpc.RpcError as error:
            named = [f for f, _ in field_violations(error)]
            if error.code() is grpc.StatusCode.INVALID_ARGUMENT and any(_names(f, case.path) for f in named):
                continue
            figures.unenforced += 1
            figures.problems.append(
                f"{case.method} {case.path}: {error.code().name} {named} {error.details()}"
            )
            continue
        rows = ROW_REPORTS.get(case.method)
        reported = [e.field for e in getattr(answer, "errors", ())]
        if rows and case.path.startswith(f"{rows}[0].") and any(_names(f, case.path) for f in reported):
            continue
        figures.unenforced += 1
        figures.problems.append(f"{case.method} {case.path}: answered OK")
    return figures


def _caller(w: World, method: str) -> Metadata:
    """Ops where the RPC admits it; otherwise a caller of a role it admits, so the request is
    judged rather than its caller refused."""
    admitted = POLICIES[method]
    if Role.OPS in admitted:
        return w.ops
    return w.service if Role.SERVICE in admitted else w.app


def _names(violation: str, path: str) -> bool:
    """Whether a field violation names the field (or an element of it) the case oversized."""
    return violation == path or violation.startswith((f"{path}[", f"{path}."))


def _method(full: str) -> Any:
    service_name, method_name = full.strip("/").split("/")
    service = next(s for s in SERVICES.values() if s.full_name == service_name)
    return service.methods_by_name[method_name]


def _owner_of(case: Oversized) -> str:
    """The message that declares the oversized field."""
    descriptor = _method(case.method).input_type
    for step in case.path.split(".")[:-1]:
        descriptor = descriptor.fields_by_name[step.split("[")[0]].message_type
    return str(descriptor.name)
