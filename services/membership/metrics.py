"""Membership's own figures for Prometheus."""

from prometheus_client import Counter

POINTS_EARNED = Counter("quanyu_points_earned", "Points credited for spend (retries not counted)")
POINTS_REDEEMED = Counter("quanyu_points_redeemed", "Points spent (retries not counted)")
POINTS_GRANTED = Counter("quanyu_points_granted", "Points granted, e.g. by campaigns (retries not counted)")
POINTS_EXPIRED = Counter("quanyu_points_expired", "Points written off at expiry")
