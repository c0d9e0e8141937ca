"""Orders' own settings, read from QUANYU_ORDERS_*."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrdersSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANYU_ORDERS_", extra="ignore")

    # How long a store has to accept an order before it goes to the next store.
    accept_window_seconds: float = Field(default=120.0, gt=0)
    # How often unaccepted orders are looked for.
    accept_check_seconds: float = Field(default=5.0, gt=0)
    # AssignStore gets this long before the order waits as PENDING_ASSIGNMENT instead.
    assign_timeout_seconds: float = Field(default=2.0, gt=0)
