from __future__ import annotations

import os
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType

import httpx
import pytest
from starlette.types import ASGIApp

from catalogs import empty_catalog
from docdesk.catalog import Catalog
from docdesk.catalog.tables import metadata
from docdesk.settings import SIMULATOR_PATH, Settings
from docdesk.testing import ControlClient, fast_settings, serve_app_at
from docdesk.web import create_app
from seaweed import SeaweedFS, Unavailable, running_seaweedfs
from servers import unavailable

# Where the PostgreSQL tests create their throwaway database. CI starts a
# server there (.ci/run); elsewhere the tests say how to get one and skip.
POSTGRES_ADMIN_URL = os.environ.get(
    "DOCDESK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped with SIGTERM (kill, a CI timeout) stops as Ctrl-C does:
    # the fixtures then stop the servers and processes they started.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped after."""
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed: pip install 'docdesk[postgresql]'")
    name = f"docdesk_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(
            f"no PostgreSQL at {POSTGRES_ADMIN_URL} ({exc.__class__.__name__}); "
            "start one or set DOCDESK_TEST_POSTGRES"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """SeaweedFS's S3 service on loopback, for this test session."""
    try:
        with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
            yield server
    except Unavailable as exc:
        unavailable(f"no S3-compatible server: {exc}")


@pytest.fixture
def s3_storage_url(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``DOCDESK_STORAGE_URL`` on a prefix no other test uses.

    The credentials are set in the environment, as a user would set them.
    """
    for name, value in seaweedfs.environ.items():
        monkeypatch.setenv(name, value)
    return seaweedfs.storage_url(f"test-{secrets.token_hex(6)}")


@pytest.fixture(params=["sqlite", "postgresql"])
async def catalog(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Catalog]:
    """A migrated, empty catalog on each backend docdesk supports."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'catalog.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    catalog = Catalog.from_url(url)
    await catalog.migrate()
    if request.param == "postgresql":
        async with catalog.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(table.delete())
    yield catalog
    await catalog.close()


@pytest.fixture(params=["sqlite+local", "postgresql+s3"])
async def backend_pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, str]:
    """``(DOCDESK_DATABASE_URL, DOCDESK_STORAGE_URL)`` of each pair docdesk runs on.

    The catalog is migrated and empty; the blob store is fresh (files in
    tmp_path, or a new prefix on SeaweedFS with its credentials set).
    """
    if request.param == "sqlite+local":
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'pair.sqlite3'}"
        storage_url = (tmp_path / "pair-blobs").resolve().as_uri()
    else:
        database_url = request.getfixturevalue("postgres_url")
        storage_url = request.getfixturevalue("s3_storage_url")
    await empty_catalog(database_url)
    return database_url, storage_url


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[httpx.Client, ControlClient]]:
    """docdesk on its embedded defaults, over HTTP: files, SQLite, simulator.

    Gives a client for docdesk's API and one for the simulator's controls.
    """

    def make_app(url: str) -> ASGIApp:
        settings = Settings.from_env(
            {"DOCDESK_DATA_DIR": str(tmp_path / "data"), "DOCDESK_PUBLIC_URL": url}
        )
        fast = fast_settings(secret=settings.jwt_secret)
        return create_app(settings, simulator_settings=fast)

    with (
        serve_app_at(make_app) as running,
        httpx.Client(base_url=running.url, timeout=30) as api,
        ControlClient(running.url + SIMULATOR_PATH) as control,
    ):
        yield api, control
