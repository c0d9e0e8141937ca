"""Fulfilment's own settings, read from QUANYU_FULFILMENT_* beside the shared ones."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FulfilmentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANYU_FULFILMENT_", extra="ignore")

    # How far a click-and-collect customer is offered stores; beyond it: NO_STORE_IN_RANGE.
    pickup_radius_m: float = Field(default=50_000.0, gt=0)
    # How often a replica looks for store changes written by the others.
    catalogue_refresh_seconds: float = Field(default=0.5, gt=0)
