"""Identity's own settings, read from QUANYU_IDENTITY_* beside the shared ones."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IdentitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANYU_IDENTITY_", extra="ignore")

    # How often the outbox relay looks for merges another replica recorded (this replica's own
    # wake it at once).
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
