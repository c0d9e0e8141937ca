"""`quanyu stores import` and `quanyu stock import`: stores from CSV or GeoJSON and stock levels
from CSV, loaded through FulfilmentService.

The importer is a client of the fulfilment contract like any other caller: it turns the rows of a
file into ImportStores and SetStock calls, and the service checks every store and refreshes its
index, so a file loads exactly as the same stores sent one by one would. It never opens the
database.

Every rejected row is reported with where it sits in the file (CSV: the physical line its record
starts on, the header being line 1; GeoJSON: its index in `features`), the field and the reason;
the good rows load regardless. Exit codes: 0 when every row loaded, 1 when some were rejected, 2
when the file cannot be read or the service cannot be reached.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from quanyu.auth import Principal, Role
from quanyu.config import ConfigurationError
from quanyu_ops.deployment import Deployment
from quanyu_ops.importer.client import FulfilmentClient, fulfilment_channel
from quanyu_ops.importer.formats import ImportFailed
from quanyu_ops.importer.loading import import_stock, import_stores
from quanyu_ops.importer.progress import EXIT_FAILED, Report, progress_bar

# Who the ops token the importer signs for itself names, as the service logs show.
OPS_SUBJECT = "quanyu-import"


def caller_token(explicit: str | None, deployment: Deployment) -> str:
    """--token, else $QUANYU_TOKEN, else an ops token signed with this deployment's own key."""
    if explicit:
        return explicit.strip()
    from_environment = os.environ.get("QUANYU_TOKEN", "").strip()
    if from_environment:
        return from_environment
    try:
        return deployment.issue(Principal(Role.OPS, OPS_SUBJECT)).token
    except ConfigurationError as error:
        raise ImportFailed(f"{error}; or pass --token, or set QUANYU_TOKEN") from None


def main(what: str, path: Path, *, token: str | None, deployment: Deployment) -> int:
    """Load the file, report, give the exit code."""
    target = deployment.settings.target("fulfilment")
    out, err = sys.stdout, sys.stderr
    noun = "stores" if what == "stores" else "stock levels"
    report = Report(out)
    load = import_stores if what == "stores" else import_stock
    try:
        bearer = caller_token(token, deployment)
        with fulfilment_channel(deployment.settings) as channel:
            load(path, FulfilmentClient(channel, target, bearer), report, progress_bar(err))
    except (ImportFailed, KeyboardInterrupt) as error:
        if report.started:
            print(f"{report.summary(noun)}; stopped before the end of the file", file=out)
        why = str(error) if isinstance(error, ImportFailed) else "interrupted"
        print(f"quanyu {what} import: {why}", file=err)
        return EXIT_FAILED
    print(report.summary(noun), file=out)
    return report.exit_code
