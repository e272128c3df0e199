"""The catalog's locks, on a SQLite file and on PostgreSQL.

Each test opens two catalogs on one database, as two instances (or two
worker processes) do; one test holds a lock from another process and kills
it with SIGKILL while it does.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from docdesk.catalog import Catalog

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'catalog.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def instances(database_url: str) -> AsyncIterator[tuple[Catalog, Catalog]]:
    first, second = Catalog.from_url(database_url), Catalog.from_url(database_url)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_a_lock_held_by_one_instance_is_refused_to_another(
    instances: tuple[Catalog, Catalog],
) -> None:
    first, second = instances

    async with first.locks.hold("document a") as held:
        async with second.locks.hold("document a", wait=False) as refused:
            assert (held, refused) == (True, False)
        async with second.locks.hold("document b", wait=False) as other:
            assert other

    async with second.locks.hold("document a", wait=False) as later:
        assert later


async def test_a_waiting_instance_gets_the_lock_once_it_is_let_go(
    instances: tuple[Catalog, Catalog],
) -> None:
    first, second = instances
    steps: list[str] = []

    async def wait_for_it() -> None:
        async with second.locks.hold("document a"):
            steps.append("second holds")

    async with anyio.create_task_group() as tasks, first.locks.hold("document a"):
        tasks.start_soon(wait_for_it)
        await anyio.sleep(0.3)
        steps.append("first lets go")

    assert steps == ["first lets go", "second holds"]


async def test_within_one_instance_holders_take_turns_in_order(
    instances: tuple[Catalog, Catalog],
) -> None:
    catalog, _ = instances
    order: list[int] = []

    async def take(n: int) -> None:
        async with catalog.locks.hold("document a"):
            order.append(n)
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tasks, catalog.locks.hold("document a"):
        for n in range(5):
            tasks.start_soon(take, n)
            await anyio.sleep(0.01)
        async with catalog.locks.hold("document a", wait=False) as busy:
            assert not busy

    assert order == [0, 1, 2, 3, 4]


HOLDER = """
import sys, anyio
from docdesk.catalog import Catalog

async def main():
    catalog = Catalog.from_url(sys.argv[1])
    async with catalog.locks.hold("document a"):
        print("held", flush=True)
        await anyio.sleep(3600)

anyio.run(main)
"""


@contextmanager
def holder_elsewhere(database_url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process, holding "document a" until it is killed."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, database_url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 30)
            assert ready, "the other process never held the lock"
            assert process.stdout.readline() == "held\n"
            yield process
        finally:
            process.kill()


async def test_a_holder_killed_with_sigkill_lets_go_at_once(
    instances: tuple[Catalog, Catalog], database_url: str
) -> None:
    _, catalog = instances

    with holder_elsewhere(database_url) as process:
        async with catalog.locks.hold("document a", wait=False) as while_alive:
            pass
        process.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(process.wait)
        with anyio.fail_after(10):
            async with catalog.locks.hold("document a") as after:
                pass

    assert (while_alive, after) == (False, True)


async def test_a_sqlite_catalog_keeps_its_lock_files_beside_the_database(
    tmp_path: Path,
) -> None:
    catalog = Catalog.from_url(f"sqlite+aiosqlite:///{tmp_path / 'docdesk.sqlite3'}")
    try:
        async with catalog.locks.hold("document a"):
            pass
    finally:
        await catalog.close()

    assert folders(tmp_path) == {"docdesk.sqlite3.locks": 1}


def folders(parent: Path) -> dict[str, int]:
    """The folders in ``parent``, with how many entries each holds."""
    return {
        path.name: len(list(path.iterdir()))
        for path in parent.iterdir()
        if path.is_dir()
    }
