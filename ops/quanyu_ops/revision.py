"""Write a service's next migration from the difference between its tables and its migrations.

    python -m quanyu_ops.revision SERVICE "what changed"

The new revision is rendered for review into services/SERVICE/migrations/versions/; it is the
same operations alembic's autogenerate would emit, against a scratch SQLite database.
"""

from __future__ import annotations

import importlib
import re
import sys
import tempfile
from pathlib import Path

from alembic.autogenerate import produce_migrations, render_python_code
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from quanyu.db import Database, migrate

TEMPLATE = '''"""{message}

Revision ID: {revision}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

from quanyu.db import UtcDateTime

revision = "{revision}"
down_revision = {down_literal}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def _body(code: str) -> str:
    lines = [line for line in code.splitlines() if "###" not in line]
    text = "\n".join(lines).replace("quanyu.db.UtcDateTime()", "UtcDateTime()")
    return text if text.strip() else "    pass"


def migrations_of(service: str) -> Path:
    """A service's migrations folder, beside its storage (a service being built has no bootstrap
    to name it yet)."""
    package = importlib.import_module(f"services.{service}")
    return Path(str(package.__file__)).parent / "migrations"


def write_revision(service: str, message: str) -> Path | None:
    storage = importlib.import_module(f"services.{service}.storage")
    migrations = migrations_of(service)
    config = Config()
    config.set_main_option("script_location", str(migrations))
    head = ScriptDirectory.from_config(config).get_current_head()
    with tempfile.TemporaryDirectory() as scratch:
        database = Database(f"sqlite:///{scratch}/scratch.db", pool_size=1)
        migrate(database, migrations)
        with database.engine.connect() as connection:
            operations = produce_migrations(MigrationContext.configure(connection), storage.metadata)
        database.dispose()
    upgrade, downgrade = operations.upgrade_ops, operations.downgrade_ops
    if upgrade is None or downgrade is None or upgrade.is_empty():
        return None
    number = int(head or 0) + 1
    revision = f"{number:04d}"
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
    path = migrations / "versions" / f"{revision}_{slug}.py"
    path.write_text(
        TEMPLATE.format(
            message=message,
            revision=revision,
            down=head or "",
            down_literal=f'"{head}"' if head else "None",
            upgrade=_body(render_python_code(upgrade)),
            downgrade=_body(render_python_code(downgrade)),
        )
    )
    return path


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path = write_revision(sys.argv[1], sys.argv[2])
    print(f"wrote {path}" if path else "no change: the migrations already build these tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
