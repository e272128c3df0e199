"""Fixtures for the scale-out suite: one database and one blob store, shared.

Every instance a test starts uses the session's PostgreSQL database,
emptied first, and one blob store: a folder on this machine or a prefix of
the SeaweedFS bucket no other test uses.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from catalogs import empty_catalog
from docdesk.errors import ConfigurationError
from docdesk.storage import open_store
from servers import unavailable


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, migrated and empty."""

    asyncio.run(empty_catalog(postgres_url))
    return postgres_url


@pytest.fixture(params=["files", "s3"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One blob store for every instance: a shared folder, or an S3 prefix."""
    if request.param == "files":
        return (tmp_path / "shared-blobs").resolve().as_uri()
    url: str = request.getfixturevalue("s3_storage_url")
    try:
        store = open_store(url)
    except ConfigurationError as exc:
        unavailable(f"the S3 blob store cannot be opened: {exc.message}")
    asyncio.run(store.close())
    return url
