"""Deployment configuration, read once from QUANYU_* environment variables with safe local defaults."""

from __future__ import annotations

import os
import secrets
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from quanyu.auth import Role

SERVICE_NAMES = ("identity", "membership", "orders", "fulfilment", "marketing")


class Environment(StrEnum):
    LOCAL = "local"
    PRODUCTION = "production"


class ConfigurationError(RuntimeError):
    """The deployment is configured in a way a service must not start with."""


class ServiceConfig(BaseModel):
    """Where one service listens, keeps its data and is reached by the others."""

    port: int = Field(ge=0, le=65535)
    # Empty: a SQLite file under the var directory. Otherwise an SQLAlchemy URL; a plain
    # postgresql:// URL is served by psycopg 3.
    database_url: str = ""
    # host:port other services dial; empty means this machine's host and the port above.
    target: str = ""
    # Port of the Prometheus metrics endpoint; 0 turns it off.
    metrics_port: int = Field(default=0, ge=0, le=65535)


class RateConfig(BaseModel):
    """A caller's quota: `per_second` sustained (0: no limit), up to `burst` calls at once."""

    per_second: float = Field(ge=0)
    burst: int = Field(ge=1)


class RoleRates(BaseModel):
    """One quota per role; every caller (token subject) of the role has a bucket of its own."""

    ops: RateConfig
    service: RateConfig
    channel: RateConfig
    store: RateConfig


# A till makes a sale every few seconds at its busiest and polls its queue; a channel backend
# speaks for a whole channel's customers; ops tools import in batches; services are the platform.
DEFAULT_CALL_QUOTA = RoleRates(
    ops=RateConfig(per_second=500, burst=1000),
    service=RateConfig(per_second=10_000, burst=20_000),
    channel=RateConfig(per_second=2_000, burst=4_000),
    store=RateConfig(per_second=20, burst=100),
)
# Finding a customer by phone tells whether a number is a customer's: a till needs it once per
# customer at the counter, a channel once per sign-up. Services resolve the phones a till's sale
# carries, already counted against that till's calls.
DEFAULT_PHONE_LOOKUP_QUOTA = RoleRates(
    ops=RateConfig(per_second=20, burst=100),
    service=RateConfig(per_second=0, burst=1),
    channel=RateConfig(per_second=50, burst=200),
    store=RateConfig(per_second=0.2, burst=20),
)


class TokenLifetimes(BaseModel):
    """The longest a caller token of each role may live, in seconds: IssueToken and the ops
    command refuse longer, and every service refuses a token made to live longer."""

    ops: int = Field(default=8 * 3600, gt=0)
    service: int = Field(default=24 * 3600, gt=0)
    store: int = Field(default=7 * 24 * 3600, gt=0)
    channel: int = Field(default=30 * 24 * 3600, gt=0)


class Settings(BaseSettings):
    """Everything a Quanyu process reads from its environment.

    Nested values use a double underscore: QUANYU_ORDERS__DATABASE_URL, QUANYU_IDENTITY__PORT.
    """

    model_config = SettingsConfigDict(
        env_prefix="QUANYU_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        extra="ignore",
    )

    env: Environment = Environment.LOCAL
    host: str = "127.0.0.1"
    var_dir: Path = Path("var")
    log_level: str = "INFO"
    # HMAC keys: of the page tokens the services hand out, and of phone lookups. A local run
    # creates them once under var/; production must be given them. (Caller tokens are signed with
    # the Ed25519 keys below, never with these.)
    signing_key: SecretStr | None = None
    phone_hash_key: SecretStr | None = None
    # Caller tokens (see quanyu.keys). The issuer's private keys, held by identity and the ops
    # command only; the issuer's public keys, which every service mounts; and the service keys,
    # which sign each service's own calls and are trusted for the `service` role only. A local
    # run keeps them under var/ (token-keys/, service-keys/) and creates a first key of each.
    token_key_dir: Path | None = None
    token_public_key_dir: Path | None = None
    service_key_dir: Path | None = None
    token_lifetime: TokenLifetimes = TokenLifetimes()
    # How often a service asks identity for new keys and revoked tokens: a revocation is refused
    # everywhere within about this long (and the call time to identity).
    token_trust_refresh_seconds: float = Field(default=2.0, gt=0)
    # Seconds that calls in flight get to finish after SIGTERM before the process exits.
    grace_seconds: float = Field(default=10.0, ge=0)
    # Default deadline of a service-to-service call.
    call_timeout_seconds: float = Field(default=5.0, gt=0)
    # How often a service re-resolves the name of each service it calls, so a replica that became
    # ready (a headless Service's new address) gets calls within seconds; 0: only when a
    # connection fails, as gRPC does by itself (see quanyu.resolving).
    resolve_seconds: float = Field(default=5.0, ge=0)
    # Worker threads per server: each serves one call at a time.
    server_workers: int = Field(default=16, ge=1)
    # Database connections per process (and half as many again at peaks); 0, the default, is one
    # per server worker. Calls beyond it wait for a connection; keep replicas × services × this
    # under the database's connection limit. A pool smaller than the workers closes each
    # connection it opened past its size as soon as it is given back, and on PostgreSQL every
    # one opened costs a backend process started, its caches filled and its statements prepared
    # afresh: under steady load that churn cost more CPU than the calls' own statements.
    database_pool_size: int = Field(default=0, ge=0)
    # Mutual TLS between services: PEM files of this process's certificate and key, and of the
    # authority that signs every service's certificate. With all three set, servers require a
    # client certificate from that authority and clients present theirs.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    # OpenTelemetry: the OTLP/gRPC collector spans go to (e.g. http://otel-collector:4317); empty
    # leaves tracing off.
    otlp_endpoint: str = ""
    # With TLS on, health is also answered in plain text on this port (0: not at all), because
    # Kubernetes' gRPC probes cannot present a client certificate.
    health_port: int = Field(default=0, ge=0, le=65535)

    # Per-caller quotas (see quanyu.quota): QUANYU_CALL_QUOTA__STORE__PER_SECOND=5 and so on.
    call_quota: RoleRates = DEFAULT_CALL_QUOTA
    phone_lookup_quota: RoleRates = DEFAULT_PHONE_LOOKUP_QUOTA

    identity: ServiceConfig = ServiceConfig(port=50051, metrics_port=9151)
    membership: ServiceConfig = ServiceConfig(port=50052, metrics_port=9152)
    orders: ServiceConfig = ServiceConfig(port=50053, metrics_port=9153)
    fulfilment: ServiceConfig = ServiceConfig(port=50054, metrics_port=9154)
    marketing: ServiceConfig = ServiceConfig(port=50055, metrics_port=9155)

    @model_validator(mode="after")
    def _pool_per_worker(self) -> Settings:
        if self.database_pool_size == 0:
            self.database_pool_size = self.server_workers
        return self

    def service(self, name: str) -> ServiceConfig:
        if name not in SERVICE_NAMES:
            raise ConfigurationError(f"unknown service {name!r}; expected one of {', '.join(SERVICE_NAMES)}")
        config: ServiceConfig = getattr(self, name)
        return config

    def database_url(self, name: str) -> str:
        url = self.service(name).database_url
        if url:
            return url
        return f"sqlite:///{(self.var_dir / f'{name}.db').resolve()}"

    def target(self, name: str) -> str:
        config = self.service(name)
        if config.target:
            return config.target
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"{host}:{config.port}"

    @property
    def mutual_tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key and self.tls_ca)

    def tls_files(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, authority) as PEM bytes."""
        if not (self.tls_cert and self.tls_key and self.tls_ca):
            raise ConfigurationError("QUANYU_TLS_CERT, QUANYU_TLS_KEY and QUANYU_TLS_CA go together")
        return self.tls_cert.read_bytes(), self.tls_key.read_bytes(), self.tls_ca.read_bytes()

    def check_startable(self) -> None:
        """Refuse to start a production process that lacks any of its keys, naming them all."""
        given = [f for f in (self.tls_cert, self.tls_key, self.tls_ca) if f]
        if given and len(given) != 3:
            raise ConfigurationError("QUANYU_TLS_CERT, QUANYU_TLS_KEY and QUANYU_TLS_CA go together")
        if self.env is not Environment.PRODUCTION:
            return
        missing = [
            f"QUANYU_{name.upper()}"
            for name in ("signing_key", "phone_hash_key")
            if not (getattr(self, name) and getattr(self, name).get_secret_value())
        ]
        missing += [
            variable
            for variable, given in (
                ("QUANYU_TOKEN_PUBLIC_KEY_DIR", self.token_public_key_dir or self.token_key_dir),
                ("QUANYU_SERVICE_KEY_DIR", self.service_key_dir),
            )
            if given is None
        ]
        if missing:
            raise ConfigurationError(
                f"{' and '.join(missing)} not set: in production keys come from the deployment's "
                "secret store and are never generated on a replica"
            )

    def issuer_key_dir(self) -> Path:
        """Where the keys that sign caller tokens are (identity and the ops command only)."""
        return self._key_dir(self.token_key_dir, "QUANYU_TOKEN_KEY_DIR", "token-keys", "k")

    def public_key_dir(self) -> Path:
        """Where the issuer's public keys are mounted (every service)."""
        given = self.token_public_key_dir or self.token_key_dir
        return self._key_dir(given, "QUANYU_TOKEN_PUBLIC_KEY_DIR", "token-keys", "k")

    def services_key_dir(self) -> Path:
        """Where the keys that sign service-to-service calls are (every service)."""
        return self._key_dir(self.service_key_dir, "QUANYU_SERVICE_KEY_DIR", "service-keys", "s")

    def _key_dir(self, given: Path | None, variable: str, local_name: str, prefix: str) -> Path:
        from quanyu.keys import ensure_local_keys

        if given is not None:
            if not given.is_dir():
                raise ConfigurationError(f"{variable}={given} is not a directory")
            return given
        if self.env is Environment.PRODUCTION:
            raise ConfigurationError(
                f"{variable} is not set: in production keys are mounted from the deployment's "
                "secret store, never generated on a replica"
            )
        directory = self.var_dir / local_name
        ensure_local_keys(directory, prefix)
        return directory

    def lifetimes(self) -> dict[Role, int]:
        from quanyu.auth import Role

        return {Role(role): seconds for role, seconds in self.token_lifetime.model_dump().items()}

    def signing_key_bytes(self) -> bytes:
        return self._secret("signing_key", "signing.key")

    def phone_hash_key_bytes(self) -> bytes:
        return self._secret("phone_hash_key", "phone-hash.key")

    def _secret(self, field: str, file_name: str) -> bytes:
        value: SecretStr | None = getattr(self, field)
        if value is not None and value.get_secret_value():
            return value.get_secret_value().encode()
        variable = f"QUANYU_{field.upper()}"
        if self.env is Environment.PRODUCTION:
            raise ConfigurationError(
                f"{variable} is not set: in production the key must come from the deployment's "
                "secret store, never be generated on a replica"
            )
        return _local_secret(self.var_dir / file_name)


def _local_secret(path: Path) -> bytes:
    """Read the key of a local deployment, creating it the first time.

    The services start at once and may all find it missing: the key is written to a temporary
    file and hard-linked into place, so exactly one wins and nobody reads half a key.
    """
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    temporary.write_text(secrets.token_hex(32) + "\n")
    temporary.chmod(0o600)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_bytes().strip()


@cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
