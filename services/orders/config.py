"""Orders' own settings, read from QUANYU_ORDERS_*."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.orders.domain import Limits


class OrdersSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANYU_ORDERS_", extra="ignore")

    # How long a store has to accept an order before it goes to the next store.
    accept_window_seconds: float = Field(default=120.0, gt=0)
    # How often unaccepted orders are looked for.
    accept_check_seconds: float = Field(default=5.0, gt=0)
    # AssignStore gets this long before the order waits as PENDING_ASSIGNMENT instead.
    assign_timeout_seconds: float = Field(default=2.0, gt=0)
    # What one order may amount to, in fen (¥100,000 by default): above it an order is refused.
    max_unit_price_cents: int = Field(default=10_000_000, ge=1, le=10**12)
    max_quantity: int = Field(default=9_999, ge=1, le=2**31 - 1)
    max_line_cents: int = Field(default=10_000_000, ge=1, le=10**12)
    max_order_cents: int = Field(default=10_000_000, ge=1, le=10**12)

    def limits(self) -> Limits:
        return Limits(
            max_unit_price_cents=self.max_unit_price_cents,
            max_quantity=self.max_quantity,
            max_line_cents=self.max_line_cents,
            max_order_cents=self.max_order_cents,
        )
