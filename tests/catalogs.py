"""Catalogs for the tests: one PostgreSQL database serves a whole session."""

from __future__ import annotations

from docdesk.catalog import Catalog
from docdesk.catalog.tables import metadata


async def empty_catalog(url: str) -> None:
    """Migrate the catalog at ``url`` and delete every row in it."""
    catalog = Catalog.from_url(url)
    try:
        await catalog.migrate()
        async with catalog.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(table.delete())
    finally:
        await catalog.close()
