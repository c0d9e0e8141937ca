"""Membership: members, tiers, the points ledger, coupons, referrals, tags, AIPL stages, segments."""
