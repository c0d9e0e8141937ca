"""The keys that sign caller tokens, and what a verifier trusts: public keys by key id and the
tokens revoked.

Caller tokens are signed with Ed25519 (JWT `EdDSA`). The issuer keys sign any role and are held
only by identity and the ops command; every other service holds their public halves (mounted,
and fetched from identity so a key added there is trusted within seconds). Each service signs the
tokens of its own calls with a service key, trusted for the `service` role only: a service that is
broken into can act as a service, which it already could, and never mint an ops, store or channel
token.

A key directory holds `<kid>.pem` (private) and `<kid>.pub.pem` (public) files; a file `signing`
naming a kid picks the key that signs, otherwise the greatest kid does (kids are dated, so the
newest). Directories are read again every second, so a key added to a mounted secret is used
without a restart.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = structlog.get_logger("quanyu.keys")

PRIVATE_SUFFIX = ".pem"
PUBLIC_SUFFIX = ".pub.pem"
SIGNING_FILE = "signing"
KID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
_RELOAD_SECONDS = 1.0


class KeyError_(RuntimeError):  # noqa: N801
    """A key directory that cannot sign: empty, unreadable, or naming a key it lacks."""


def new_kid(prefix: str = "k") -> str:
    """A key id that sorts after every earlier one: the key that signs by default is the newest."""
    return f"{prefix}{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def write_key(directory: Path, kid: str | None = None) -> str:
    """Add a new key pair to a directory; its kid. The private file is readable by its owner only
    and appears whole (written aside, then linked into place)."""
    kid = kid or new_kid()
    if not KID.match(kid):
        raise ValueError(f"key id {kid!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for name, data, mode in (
        (f"{kid}{PUBLIC_SUFFIX}", public_pem(private.public_key()), 0o644),
        (f"{kid}{PRIVATE_SUFFIX}", pem, 0o600),
    ):
        aside = directory / f".{name}.{os.getpid()}.{time.monotonic_ns()}"
        aside.write_bytes(data)
        aside.chmod(mode)
        try:
            os.link(aside, directory / name)
        finally:
            aside.unlink()
    return kid


def ensure_local_keys(directory: Path, prefix: str = "k") -> None:
    """A local deployment's key directory, given a first key when it has none. Processes starting
    at once may each add one; any of them signs and every one is trusted."""
    if not directory.is_dir() or not any(directory.glob(f"*{PUBLIC_SUFFIX}")):
        write_key(directory, new_kid(prefix))


def _kid_of(path: Path, suffix: str) -> str | None:
    kid = path.name[: -len(suffix)]
    return kid if KID.match(kid) else None


def read_public_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """The public keys a directory holds, by kid; nothing when it does not exist."""
    keys: dict[str, Ed25519PublicKey] = {}
    if not directory.is_dir():
        return keys
    for path in sorted(directory.glob(f"*{PUBLIC_SUFFIX}")):
        kid = _kid_of(path, PUBLIC_SUFFIX)
        if kid is None:
            continue
        try:
            keys[kid] = load_public_pem(path.read_bytes())
        except (OSError, ValueError):
            log.warning("public key not readable; skipped", path=str(path))
    return keys


class KeyRing:
    """The private keys of a directory: one signs, all of their public halves verify."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._read_at = -_RELOAD_SECONDS
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._signing = ""

    @property
    def directory(self) -> Path:
        return self._directory

    def _fresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < _RELOAD_SECONDS and self._keys:
                return
            keys: dict[str, Ed25519PrivateKey] = {}
            for path in sorted(self._directory.glob(f"*{PRIVATE_SUFFIX}")):
                if path.name.endswith(PUBLIC_SUFFIX):
                    continue
                kid = _kid_of(path, PRIVATE_SUFFIX)
                if kid is None:
                    continue
                loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
                if isinstance(loaded, Ed25519PrivateKey):
                    keys[kid] = loaded
            if not keys:
                raise KeyError_(f"no Ed25519 private key (<kid>{PRIVATE_SUFFIX}) in {self._directory}")
            chosen = self._directory / SIGNING_FILE
            signing = chosen.read_text().strip() if chosen.is_file() else max(keys)
            if signing not in keys:
                raise KeyError_(f"{chosen} names key {signing!r}, which {self._directory} does not hold")
            self._keys, self._signing, self._read_at = keys, signing, time.monotonic()

    def signer(self) -> tuple[str, Ed25519PrivateKey]:
        self._fresh()
        return self._signing, self._keys[self._signing]

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        self._fresh()
        return {kid: key.public_key() for kid, key in self._keys.items()}


@dataclass(frozen=True)
class Revocations:
    """Tokens refused before they expire: by token id, or every token of a subject issued at or
    before a second."""

    token_ids: frozenset[str] = frozenset()
    subjects: Mapping[str, int] = field(default_factory=dict)

    def refuse(self, token_id: str, subject: str, issued_at: int) -> bool:
        if token_id and token_id in self.token_ids:
            return True
        before = self.subjects.get(subject)
        return before is not None and issued_at <= before


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    public_key: Ed25519PublicKey
    # None: any role (an issuer key); otherwise the roles it may sign (a service key: `service`).
    roles: frozenset[str] | None = None


@dataclass(frozen=True)
class Fetched:
    """What the deployment's issuer says: its public keys and the tokens revoked."""

    keys: Mapping[str, Ed25519PublicKey]
    revocations: Revocations


class Trust:
    """What a verifier trusts: mounted keys, and the keys and revocations fetched from the issuer
    every `refresh_seconds` (and at once when a token names a kid nobody has seen).

    When the issuer cannot be reached the last answer stands: the tokens revoked stay refused and
    the mounted keys keep every call served.
    """

    def __init__(
        self,
        mounted: Callable[[], Mapping[str, TrustedKey]],
        fetch: Callable[[], Fetched] | None = None,
        *,
        refresh_seconds: float = 2.0,
        least_gap_seconds: float = 0.5,
    ) -> None:
        self._mounted, self._fetch = mounted, fetch
        self._refresh, self._gap = refresh_seconds, least_gap_seconds
        self._lock = threading.Lock()
        self._fetched = Fetched({}, Revocations())
        # When a token naming an unseen kid last made us ask. The periodic refresh does not count:
        # a key the issuer starts signing with just after a periodic answer must still be asked for.
        self._asked_for_unseen_at = float("-inf")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def key(self, kid: str) -> TrustedKey | None:
        found = self._known(kid)
        if found is None and self._fetch is not None:
            # A kid nobody has seen is most often a key the issuer just started signing with.
            self.refresh(force=False)
            found = self._known(kid)
        return found

    def _known(self, kid: str) -> TrustedKey | None:
        mounted = self._mounted().get(kid)
        if mounted is not None:
            return mounted
        fetched = self._fetched.keys.get(kid)
        return TrustedKey(kid, fetched) if fetched is not None else None

    def revocations(self) -> Revocations:
        return self._fetched.revocations

    def refresh(self, *, force: bool = True) -> bool:
        """Ask the issuer now; False when it could not be asked or answered nothing new. Without
        `force`, asks at most every `least_gap_seconds`, so tokens with made-up kids cannot make
        a verifier hammer identity."""
        if self._fetch is None:
            return False
        with self._lock:
            if not force:
                if time.monotonic() - self._asked_for_unseen_at < self._gap:
                    return False
                self._asked_for_unseen_at = time.monotonic()
            try:
                self._fetched = self._fetch()
            except Exception as error:
                log.warning("token trust not refreshed; the last answer stands", error=str(error))
                return False
            return True

    def start(self) -> None:
        if self._fetch is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="token-trust", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        self.refresh()
        while not self._stopping.wait(self._refresh):
            self.refresh()


def issuer_keys(directory: Path) -> Callable[[], Mapping[str, TrustedKey]]:
    """The public keys of a mounted directory, trusted for every role; read again each second."""
    return _cached(directory, None)


def service_keys(directory: Path) -> Callable[[], Mapping[str, TrustedKey]]:
    """The service keys of a directory, trusted for the `service` role only."""
    return _cached(directory, frozenset({"service"}))


def _cached(directory: Path, roles: frozenset[str] | None) -> Callable[[], Mapping[str, TrustedKey]]:
    state: dict[str, object] = {"at": float("-inf"), "keys": {}}
    lock = threading.Lock()

    def read() -> Mapping[str, TrustedKey]:
        with lock:
            if time.monotonic() - float(state["at"]) >= _RELOAD_SECONDS:  # type: ignore[arg-type]
                state["keys"] = {
                    kid: TrustedKey(kid, key, roles) for kid, key in read_public_keys(directory).items()
                }
                state["at"] = time.monotonic()
            return state["keys"]  # type: ignore[return-value]

    return read


def joined(*sources: Callable[[], Mapping[str, TrustedKey]]) -> Callable[[], Mapping[str, TrustedKey]]:
    """Several mounted sources as one; a kid in an earlier one wins."""

    def read() -> Mapping[str, TrustedKey]:
        keys: dict[str, TrustedKey] = {}
        for source in reversed(sources):
            keys.update(source())
        return keys

    return read
