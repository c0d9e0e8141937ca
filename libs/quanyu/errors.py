"""Errors that the domain raises, in the words of the Google API error model but free of gRPC.

Domain code raises these; the server maps them to status codes, ErrorInfo and BadRequest in one
place (quanyu.server), so no servicer ever builds a status by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, TypeVar

T = TypeVar("T")


class Code(StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNAVAILABLE = "UNAVAILABLE"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class QuanyuError(Exception):
    """A failure a caller can act on: a status code, a stable reason and a message for people."""

    code: ClassVar[Code]

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        violations: tuple[FieldViolation, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = violations
        # Seconds after which a retry may succeed (google.rpc.RetryInfo); None when it may not.
        self.retry_after = retry_after


class InvalidArgument(QuanyuError):
    code = Code.INVALID_ARGUMENT

    def __init__(self, field_name: str, description: str, *, reason: str = "INVALID_ARGUMENT") -> None:
        super().__init__(
            f"{field_name}: {description}",
            reason=reason,
            metadata={"field": field_name},
            violations=(FieldViolation(field_name, description),),
        )

    @classmethod
    def of(cls, violations: list[FieldViolation]) -> InvalidArgument:
        first, *rest = violations
        error = cls(first.field, first.description)
        if rest:
            error.violations = tuple(violations)
            error.message = "; ".join(f"{v.field}: {v.description}" for v in violations)
            error.args = (error.message,)
        return error


class NotFound(QuanyuError):
    code = Code.NOT_FOUND

    def __init__(self, what: str, key: str, *, reason: str | None = None) -> None:
        super().__init__(
            f"{what} {key!r} not found",
            reason=reason or f"{what.upper().replace(' ', '_')}_NOT_FOUND",
            metadata={"resource": what, "key": key},
        )


class AlreadyExists(QuanyuError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(QuanyuError):
    code = Code.FAILED_PRECONDITION


class PermissionDenied(QuanyuError):
    code = Code.PERMISSION_DENIED

    def __init__(
        self, message: str = "the caller may not do this", *, reason: str = "PERMISSION_DENIED"
    ) -> None:
        super().__init__(message, reason=reason)


class Unauthenticated(QuanyuError):
    code = Code.UNAUTHENTICATED

    def __init__(self, message: str, *, reason: str = "UNAUTHENTICATED") -> None:
        super().__init__(message, reason=reason)


class Unavailable(QuanyuError):
    code = Code.UNAVAILABLE


class ResourceExhausted(QuanyuError):
    """The caller used up its quota; `retry_after` says when the next call would be let in."""

    code = Code.RESOURCE_EXHAUSTED

    def __init__(
        self, message: str, *, reason: str, retry_after: float, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata, retry_after=retry_after)


class Aborted(QuanyuError):
    """A concurrent change won; the caller may retry the whole request."""

    code = Code.ABORTED


# C0 controls and DEL; searched in C rather than character by character in Python, as every
# id and text field of every request passes through here.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def field_path(*parts: str | int) -> str:
    """The path of a request field as google.rpc.BadRequest spells it: names joined by dots, an
    index of a repeated field in brackets (`field_path("stores", 3, "store_id")` is
    `stores[3].store_id`)."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part:
            path = f"{path}.{part}" if path else part
    return path


_LEADING_INDEX = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\]\.?")


def split_field_path(path: str) -> tuple[str, int | None, str]:
    """A path's first field, its index when it is an element of a repeated field, and the rest:
    `stores[3].store_id` is ("stores", 3, "store_id"); `name` is ("name", None, "")."""
    match = _LEADING_INDEX.match(path)
    if match:
        return match.group(1), int(match.group(2)), path[match.end() :]
    head, _, rest = path.partition(".")
    return head, None, rest


@dataclass
class Violations:
    """Collects every problem with a request so the caller learns them all in one answer."""

    found: list[FieldViolation] = field(default_factory=list)

    prefix: str = ""

    def add(self, field_name: str, description: str) -> None:
        self.found.append(FieldViolation(field_path(self.prefix, field_name), description))

    def within(self, *parts: str | int) -> Violations:
        """The same collection, naming fields below `parts` (an element of a repeated field, a
        nested message): the one place a nested field's path is spelled."""
        return Violations(self.found, field_path(self.prefix, *parts))

    def check(self, ok: bool, field_name: str, description: str) -> None:
        if not ok:
            self.add(field_name, description)

    def text(self, value: str, field_name: str, *, max_length: int, required: bool = True) -> None:
        """A caller-supplied string: present when required, bounded, and free of control
        characters (a NUL or a line break in an id is never meant and breaks logs and keys)."""
        if not value:
            if required:
                self.add(field_name, "is required")
            return
        if len(value) > max_length:
            self.add(field_name, f"must be at most {max_length} characters")
        elif _CONTROL_CHARACTER.search(value):
            self.add(field_name, "must not contain control characters")

    def raise_if_any(self) -> None:
        if self.found:
            raise InvalidArgument.of(self.found)


def in_request(index: int, step: Callable[[], T]) -> T:
    """`step`'s result, for the request at `index` of a batch call (AIP-233); a refusal of it is
    answered as the batch answers it: its fields under `requests[index]`, its message and
    metadata naming the request, everything else (code, reason) as the single call answers."""
    try:
        return step()
    except QuanyuError as error:
        raise of_request(index, error) from error


def of_request(index: int, error: QuanyuError) -> QuanyuError:
    """`error`, refusing the request at `index` of a batch, as the batch answers it."""
    path = field_path("requests", index)
    if isinstance(error, InvalidArgument):
        named = InvalidArgument.of(
            [FieldViolation(field_path(path, v.field), v.description) for v in error.violations]
        )
        named.reason = error.reason
        return named
    error.message = f"{path}: {error.message}"
    error.args = (error.message,)
    error.metadata = {**error.metadata, "request": path}
    return error


_BY_CODE: dict[Code, type[QuanyuError]] = {
    Code.INVALID_ARGUMENT: InvalidArgument,
    Code.NOT_FOUND: NotFound,
    Code.ALREADY_EXISTS: AlreadyExists,
    Code.FAILED_PRECONDITION: FailedPrecondition,
    Code.PERMISSION_DENIED: PermissionDenied,
    Code.UNAUTHENTICATED: Unauthenticated,
    Code.UNAVAILABLE: Unavailable,
    Code.ABORTED: Aborted,
    Code.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def error_for(
    code: Code,
    message: str,
    *,
    reason: str,
    metadata: Mapping[str, str] | None = None,
    violations: tuple[FieldViolation, ...] = (),
) -> QuanyuError:
    """The domain error for a status code, as when another service's answer is passed on."""
    cls = _BY_CODE[code]
    error = cls.__new__(cls)
    QuanyuError.__init__(error, message, reason=reason, metadata=metadata, violations=violations)
    return error
