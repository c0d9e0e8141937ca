"""Identity's rules, free of gRPC and the database: phones, channel accounts, customers, merges."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime

import phonenumbers

from quanyu.errors import InvalidArgument, Violations

DEFAULT_REGION = "CN"
MAX_EXTERNAL_ID_LENGTH = 128
MAX_DISPLAY_NAME_LENGTH = 64
MAX_CUSTOMER_ID_LENGTH = 64
MAX_PHONE_INPUT_LENGTH = 32
# Merges form chains (A into B, B into C); a longer one than this means corrupt data.
MAX_MERGE_CHAIN = 64


@dataclass(frozen=True)
class ChannelAccount:
    """A customer's account on one channel: a WeChat openid, a Tmall buyer id, a till card."""

    channel: str  # a common.v1.Channel value name, e.g. CHANNEL_TMALL
    external_id: str


@dataclass(frozen=True)
class Phone:
    """A phone number in E.164 form, with the masked form that is all anyone is shown."""

    e164: str
    masked: str

    @classmethod
    def parse(cls, raw: str, *, field_name: str = "phone", region: str = DEFAULT_REGION) -> Phone:
        """ "+86 138-0013-8000", "13800138000" and "8613800138000" are one number."""
        if len(raw) > MAX_PHONE_INPUT_LENGTH:
            raise InvalidArgument(field_name, f"must be at most {MAX_PHONE_INPUT_LENGTH} characters")
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException as exc:
            raise InvalidArgument(field_name, "is not a phone number") from exc
        if not phonenumbers.is_valid_number(number):
            raise InvalidArgument(field_name, "is not a valid phone number")
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return cls(e164=e164, masked=mask_national(str(number.national_number), number.country_code or 0))


def mask_national(national: str, country_code: int) -> str:
    """138****8000 for a mainland number; other countries keep their calling code in front."""
    keep_head = 3 if len(national) >= 9 else 1
    masked = f"{national[:keep_head]}****{national[-4:]}"
    return masked if country_code == 86 else f"+{country_code} {masked}"


class PhoneHasher:
    """Phones are found by a keyed hash: a stolen table does not give the numbers back."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, phone: Phone) -> str:
        return hmac.new(self._key, phone.e164.encode(), hashlib.sha256).hexdigest()


@dataclass
class Customer:
    customer_id: str
    display_name: str
    phone_masked: str
    create_time: datetime
    accounts: list[ChannelAccount] = field(default_factory=list)


def validate_account(account: ChannelAccount | None, field_name: str, violations: Violations) -> None:
    if account is None:
        violations.add(field_name, "is required")
        return
    violations.check(bool(account.channel), f"{field_name}.channel", "must name a channel")
    violations.text(account.external_id, f"{field_name}.external_id", max_length=MAX_EXTERNAL_ID_LENGTH)


def validate_customer_id(customer_id: str, field_name: str, violations: Violations) -> None:
    violations.text(customer_id, field_name, max_length=MAX_CUSTOMER_ID_LENGTH)


@dataclass(frozen=True)
class ResolveRequest:
    """Find a customer by channel account, else by phone, else create one."""

    account: ChannelAccount | None
    phone: Phone | None
    display_name: str

    @classmethod
    def checked(cls, account: ChannelAccount | None, raw_phone: str, display_name: str) -> ResolveRequest:
        violations = Violations()
        if account is None and not raw_phone:
            violations.add("account", "give a channel account or a phone")
        if account is not None:
            validate_account(account, "account", violations)
        violations.text(display_name, "display_name", max_length=MAX_DISPLAY_NAME_LENGTH, required=False)
        phone: Phone | None = None
        if raw_phone:
            try:
                phone = Phone.parse(raw_phone)
            except InvalidArgument as error:
                violations.found.extend(error.violations)
        violations.raise_if_any()
        return cls(account=account, phone=phone, display_name=display_name)


def check_merge(survivor_customer_id: str, merged_customer_id: str) -> None:
    violations = Violations()
    validate_customer_id(survivor_customer_id, "survivor_customer_id", violations)
    validate_customer_id(merged_customer_id, "merged_customer_id", violations)
    if survivor_customer_id and survivor_customer_id == merged_customer_id:
        violations.add("merged_customer_id", "a customer cannot be merged into itself")
    violations.raise_if_any()
