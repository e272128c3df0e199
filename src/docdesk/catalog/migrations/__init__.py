"""Alembic migrations of the catalog, run on a connection docdesk hands in.

``docdesk migrate`` and start-up call :func:`upgrade`; nothing here needs an
``alembic.ini``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

__all__ = ["pending", "upgrade"]

HERE = Path(__file__).parent


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection) -> None:
    command.upgrade(_config(connection), "head")


def pending(connection: Connection) -> list[str]:
    """Revisions between the database's and the code's head, oldest first."""
    script = ScriptDirectory.from_config(_config(connection))
    current = MigrationContext.configure(connection).get_current_revision()
    revisions = script.iterate_revisions("heads", current)
    return [revision.revision for revision in reversed(list(revisions))]
