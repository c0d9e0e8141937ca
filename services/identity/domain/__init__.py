"""Identity's rules, free of gRPC, the database and the clock: customers and their channel
accounts, who reaches which, phones by keyed hash, merges, and the checks of each request."""

from quanyu.audit_record import Actor, AuditRecord
from services.identity.domain.customers import (
    MARKETING_EVENT,
    MAX_MERGE_CHAIN,
    ORDERS_EVENT,
    TILL_CHANNEL,
    AccountLinked,
    ChannelAccount,
    Customer,
    CustomersMerged,
    CustomerState,
    PhoneHasher,
    Reach,
    accounts_linked,
    merge,
)
from services.identity.domain.requests import (
    ResolveRequest,
    check_merge,
    checked_account,
    checked_customer_id,
    checked_link,
    checked_phone,
)
from services.identity.domain.tokens import (
    CUSTOMERS_MERGED,
    MAX_TARGET_LENGTH,
    TOKEN_ISSUED,
    TOKEN_REVOKED,
    Revocation,
)

__all__ = [
    "CUSTOMERS_MERGED",
    "MARKETING_EVENT",
    "MAX_MERGE_CHAIN",
    "MAX_TARGET_LENGTH",
    "ORDERS_EVENT",
    "TILL_CHANNEL",
    "TOKEN_ISSUED",
    "TOKEN_REVOKED",
    "AccountLinked",
    "Actor",
    "AuditRecord",
    "ChannelAccount",
    "Customer",
    "CustomerState",
    "CustomersMerged",
    "PhoneHasher",
    "Reach",
    "ResolveRequest",
    "Revocation",
    "accounts_linked",
    "check_merge",
    "checked_account",
    "checked_customer_id",
    "checked_link",
    "checked_phone",
    "merge",
]
