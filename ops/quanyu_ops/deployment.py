"""The deployment the `quanyu` command acts on: its settings, where its keys are, and tokens signed
with its key — the one place ops tools mint a token.

A local deployment keeps its keys in its var directory (`QUANYU_VAR_DIR`, else `var/`), which the
services create when they first start. The command finds that directory wherever it is run from:
`QUANYU_VAR_DIR` when set; otherwise the nearest `var/` holding a signing key in the working
directory or above it, then the `var/` of the checkout the command is installed from. A token
signed with a key no service holds is refused by all of them, so a key is never made up in a
directory the command merely happens to run in: when none is found it says where it looked and how
to point it elsewhere. Only the var directory named outright, or the checkout's own (where
`make run` keeps it), gets its key created as its services would on their first start, and the
command says so.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from quanyu.auth import IssuedToken, Principal, TokenCodec
from quanyu.config import ConfigurationError, Environment, Settings, get_settings

VAR_DIR_VARIABLE = "QUANYU_VAR_DIR"
SIGNING_KEY_VARIABLE = "QUANYU_SIGNING_KEY"
SIGNING_KEY_FILE = "signing.key"
Metadata = tuple[tuple[str, str], ...]


def checkout_root() -> Path | None:
    """The source checkout this package runs from (an editable install, `make setup`), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "services").is_dir() else None


def var_dir_candidates(start: Path, checkout: Path | None) -> list[Path]:
    """Where a deployment's var directory is looked for, nearest first."""
    places = [directory / "var" for directory in (start, *start.parents)]
    if checkout is not None:
        places.append(checkout / "var")
    return list(dict.fromkeys(places))


def find_var_dir(places: list[Path]) -> Path | None:
    """The first of `places` that holds a signing key: a deployment that has run."""
    return next((place for place in places if (place / SIGNING_KEY_FILE).is_file()), None)


@dataclass(frozen=True)
class Deployment:
    """A deployment's settings and the places its var directory was looked for."""

    settings: Settings
    looked: tuple[Path, ...]
    # Whether a missing key may be created in the var directory: it was named outright
    # (QUANYU_VAR_DIR), or it is the checkout's own, where `make run` starts the services.
    creates_key: bool = False

    def signing_key(self) -> bytes:
        """The deployment's signing key; ConfigurationError, saying where it looked, when there is none."""
        given = self.settings.signing_key
        if (given is not None and given.get_secret_value()) or self.settings.env is Environment.PRODUCTION:
            # Given outright, or production's rule (only ever given) says what is missing.
            return self.settings.signing_key_bytes()
        path = self.settings.var_dir / SIGNING_KEY_FILE
        if not path.is_file() and self.creates_key:
            key = self.settings.signing_key_bytes()
            print(
                f"quanyu: {path} did not exist; created it, and this deployment's services will use it",
                file=sys.stderr,
            )
            return key
        if not path.is_file():
            places = ", ".join(str(p) for p in self.looked)
            raise ConfigurationError(
                f"no deployment's signing key found (looked for {SIGNING_KEY_FILE} in {places}); "
                f"its services create it when they first start (make run). Run this where the "
                f"deployment is, or set {VAR_DIR_VARIABLE} to its var directory, or "
                f"{SIGNING_KEY_VARIABLE} to its key"
            )
        return self.settings.signing_key_bytes()

    def issue(self, principal: Principal, ttl_seconds: int = 0) -> IssuedToken:
        """A token signed with the deployment's issuer key (QUANYU_TOKEN_KEY_DIR, or var/token-keys
        of a local deployment); ttl 0 is the role's default."""
        if self.settings.token_key_dir is None:
            self.signing_key()  # a local deployment that has run, or the reason none was found
        codec = TokenCodec.local(self.settings.issuer_key_dir(), lifetimes=self.settings.lifetimes())
        return codec.issue(principal, ttl_seconds or None)

    def bearer(self, principal: Principal, ttl_seconds: int = 0) -> Metadata:
        """Call metadata carrying a token for `principal`."""
        return bearer_metadata(self.issue(principal, ttl_seconds).token)

    def child_environment(self) -> dict[str, str]:
        """The environment for a process this command starts: the same deployment, by name."""
        return {**os.environ, VAR_DIR_VARIABLE: str(self.settings.var_dir.resolve())}


def bearer_metadata(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def local_deployment() -> Deployment:
    """The deployment this command acts on, found as the module's docstring says."""
    return find_deployment(os.environ, Path.cwd(), checkout_root())


def find_deployment(environ: Mapping[str, str], start: Path, checkout: Path | None) -> Deployment:
    """The deployment for a command run in `start`, from the checkout `checkout` (None: installed
    from a package).

    With no deployment found, the checkout's `var/` is where one is made (`make run`); without a
    checkout the working directory's `var/` is where `quanyu up` would make one, and signing_key()
    refuses until it has.
    """
    settings = get_settings()
    if VAR_DIR_VARIABLE in environ:
        return Deployment(settings, (settings.var_dir.resolve(),), creates_key=True)
    places = var_dir_candidates(start.resolve(), checkout)
    found = find_var_dir(places)
    if found is not None:
        return Deployment(settings.model_copy(update={"var_dir": found}), tuple(places))
    home = (checkout if checkout is not None else start.resolve()) / "var"
    return Deployment(
        settings.model_copy(update={"var_dir": home}), tuple(places), creates_key=checkout is not None
    )
