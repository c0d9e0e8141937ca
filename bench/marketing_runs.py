"""A scheduled run at scale: how fast marketing grants a ONCE campaign over its whole audience.

It migrates a fresh SQLite file in a temporary directory (or a fresh schema of the PostgreSQL
database given with --postgres), seeds --members member profiles straight into marketing's table,
starts a ONCE campaign with one coupon action through the use cases, and times one scheduler pass
(RunCases.run_due) granting it page by page: the grant rows and the outbox rows toward membership,
each page in one transaction. Membership's coupon inserts are the outbox relay's part, not timed.

    .venv/bin/python -m bench.marketing_runs [--members 100000] [--page-size 2000]
        [--holdout 0] [--postgres postgresql://user@127.0.0.1:5432/db]

It prints members, seconds, decisions and grants per second, the outbox rows written, and what a
million members would take at that rate. It touches only its temporary directory (or schema),
which it removes when it ends.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from quanyu.db import Database, migrate, normalise_url
from quanyu.unit_of_work import SqlUnitOfWork
from services.marketing.domain import (
    Action,
    Campaign,
    CouponAction,
    Schedule,
    ScheduleKind,
    Trigger,
)
from services.marketing.handlers import CampaignCases, RunCases
from services.marketing.ports import Outcome
from services.marketing.storage import MIGRATIONS, SqlStores
from services.marketing.storage.tables import grants, member_profiles, outbox

START = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
SEED_BATCH = 20_000


@contextmanager
def database_url(postgres: str) -> Iterator[str]:
    if not postgres:
        where = Path(tempfile.mkdtemp(prefix="bench-marketing-"))
        try:
            yield f"sqlite:///{where / 'marketing.db'}"
        finally:
            shutil.rmtree(where, ignore_errors=True)
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(postgres), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(normalise_url(postgres)).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def seed(database: Database, members: int) -> None:
    now = START - timedelta(days=1)
    for first in range(0, members, SEED_BATCH):
        rows = [
            {
                "member_id": f"mem_{n:08d}",
                "customer_id": f"cus_{n:08d}",
                "tier": "GOLD",
                "stage": "PURCHASE",
                "tags": "",
                "home_store_id": "sto_1",
                "guide_id": "",
                "display_name": "",
                "points_balance": 0,
                "time_zone": "",
                "birthday": "",
                "accounts": "{}",
                "survivor_id": "",
                "last_order_time": None,
                "first_purchase_time": None,
                "create_time": now,
                "update_time": now,
            }
            for n in range(first, min(first + SEED_BATCH, members))
        ]
        with database.transaction() as connection:
            connection.execute(member_profiles.insert(), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=2000)
    parser.add_argument("--holdout", type=int, default=0)
    parser.add_argument("--postgres", default="")
    args = parser.parse_args()

    with database_url(args.postgres) as url:
        database = Database(url)
        try:
            migrate(database, MIGRATIONS)
            uow = SqlUnitOfWork(database, SqlStores)
            seed(database, args.members)
            clock = {"now": START - timedelta(hours=1)}
            cases = CampaignCases(uow, ("GOLD",), clock=lambda: clock["now"])
            made = cases.create_campaign(
                Campaign(
                    campaign_id="",
                    name="Spring coupon",
                    trigger=Trigger(schedule=Schedule(ScheduleKind.ONCE, "10:00")),
                    actions=(Action(issue_coupon=CouponAction(1000, 5000, 30)),),
                    holdout_percent=args.holdout,
                    start_time=START,
                )
            )
            cases.start_campaign(made.campaign_id)
            clock["now"] = START
            runs = RunCases(uow, clock=lambda: clock["now"], runner="bench", page_size=args.page_size)

            began = time.perf_counter()
            decisions = runs.run_due()
            seconds = time.perf_counter() - began

            with database.snapshot() as connection:
                granted = connection.execute(
                    select(func.count()).where(grants.c.outcome == Outcome.GRANTED.value)
                ).scalar_one()
                effects = connection.execute(select(func.count()).select_from(outbox)).scalar_one()
        finally:
            database.dispose()

    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"scheduled ONCE run, one coupon action, {backend}, page size {args.page_size}")
    print(f"  members              {args.members:>12,}")
    print(f"  decisions            {decisions:>12,}")
    print(f"  granted              {granted:>12,}")
    print(f"  outbox rows          {effects:>12,}")
    print(f"  seconds              {seconds:>12.1f}")
    print(f"  decisions/s          {decisions / seconds:>12,.0f}")
    print(f"  grants/s             {granted / seconds:>12,.0f}")
    print(f"  1,000,000 members in {1_000_000 / (decisions / seconds) / 60:>12.1f} min (at this rate)")


if __name__ == "__main__":
    main()
