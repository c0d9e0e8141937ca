"""Fulfilment's own figures for Prometheus."""

from prometheus_client import Counter

ASSIGNMENTS = Counter(
    "quanyu_assignments",
    "Fresh assignment decisions, by outcome (ASSIGNED or the reason none was)",
    ["outcome"],
)
