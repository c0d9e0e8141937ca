"""Identity's rules, free of gRPC, the database and the clock: customers and their channel
accounts, who reaches which, phones by keyed hash, merges, and the checks of each request."""

from services.identity.domain.customers import (
    MARKETING_EVENT,
    MAX_MERGE_CHAIN,
    TILL_CHANNEL,
    AccountLinked,
    ChannelAccount,
    Customer,
    CustomersMerged,
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

__all__ = [
    "MARKETING_EVENT",
    "MAX_MERGE_CHAIN",
    "TILL_CHANNEL",
    "AccountLinked",
    "ChannelAccount",
    "Customer",
    "CustomersMerged",
    "PhoneHasher",
    "Reach",
    "ResolveRequest",
    "accounts_linked",
    "check_merge",
    "checked_account",
    "checked_customer_id",
    "checked_link",
    "checked_phone",
    "merge",
]
