"""Marketing's own figures for Prometheus."""

from prometheus_client import Counter

GRANT_DECISIONS = Counter(
    "quanyu_marketing_grant_decisions",
    "Decisions made for a member and an occurrence, by outcome (replays not counted)",
    ["outcome"],
)
EVENTS_INGESTED = Counter(
    "quanyu_marketing_events",
    "Events taken in, by whether they were new or delivered again",
    ["status"],
)
