"""Locks that every process on one catalog takes turns at.

Two docdesk instances on one PostgreSQL, or the worker processes of a Django
or Flask application on one SQLite file, share each document. A save is a
download and then a commit: two saves of one document that overlapped could
commit in the other order than they came, the older content last. So a save
holds its document's lock from its first read to its commit, and background
work that must run once at a time (recovery, the orphan sweep) holds one too.

On PostgreSQL a lock is a session advisory lock (``pg_locks`` shows it), on
a connection of its own in autocommit, so that no transaction stays open
while a file downloads. On a SQLite file it is flock(2) on one of a fixed
set of files in a folder beside the database: two names may share a file,
which only makes them take turns. Either way a process that dies lets go
at once. Inside one process the holders of a name also queue on an asyncio
lock, first come, first served, and only the first of them asks the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from docdesk.errors import CatalogError

__all__ = ["LOCK_FILES", "Locks", "advisory_key"]

logger = logging.getLogger(__name__)

# Files a SQLite catalog's locks are spread over.
LOCK_FILES = 64
# How often a lock held elsewhere is asked for again, at first and at most.
FIRST_POLL = 0.005
LAST_POLL = 0.1

_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")


def advisory_key(name: str) -> int:
    """The PostgreSQL advisory lock of ``name``: 8 bytes of its sha256."""
    digest = hashlib.sha256(f"docdesk {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Locks:
    """Named locks across the processes of one catalog.

    ``engine`` is a PostgreSQL engine of the locks' own: each lock held
    keeps one of its connections, which must not starve the catalog's work
    (a save holds its lock while it reads and commits). ``folder`` holds the
    lock files of a SQLite file. With neither (a database in memory, which
    one process alone can see) the locks hold within this process.
    """

    def __init__(
        self, *, engine: AsyncEngine | None = None, folder: Path | None = None
    ) -> None:
        self._engine = engine
        self._folder = folder
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    @asynccontextmanager
    async def hold(self, name: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """Hold ``name`` while the block runs; yields whether it is held.

        With ``wait`` the block waits for its turn and always holds the lock;
        without, it runs at once, told False when someone else holds it.
        """
        turn = self._turns.get(name)
        if turn is None:
            turn = self._turns[name] = asyncio.Lock()
        if not wait and turn.locked():
            yield False
            return

        async with turn:
            if self._engine is not None:
                across = self._advisory(name, wait=wait)
            elif self._folder is not None:
                across = self._flock(name, wait=wait)
            else:
                across = _held()
            async with across as held:
                yield held

    @asynccontextmanager
    async def _advisory(self, name: str, *, wait: bool) -> AsyncIterator[bool]:
        assert self._engine is not None
        key = advisory_key(name)
        try:
            conn = await self._engine.connect()
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            raise CatalogError.of(exc) from exc

        held = False
        try:
            held = await _poll(lambda: _try_advisory(conn, key), wait=wait)
            yield held
        finally:
            with anyio.CancelScope(shield=True):
                await _release_advisory(conn, key, held)

    @asynccontextmanager
    async def _flock(self, name: str, *, wait: bool) -> AsyncIterator[bool]:
        assert self._folder is not None
        self._folder.mkdir(exist_ok=True)
        digest = hashlib.sha256(name.encode()).digest()
        path = self._folder / f"{digest[0] % LOCK_FILES:02x}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            held = await _poll(lambda: _try_flock(fd), wait=wait)
            yield held
        finally:
            # Closing the file lets go of the lock with it.
            os.close(fd)


@asynccontextmanager
async def _held() -> AsyncIterator[bool]:
    yield True


async def _poll(attempt: Callable[[], Awaitable[bool]], *, wait: bool) -> bool:
    """Try ``attempt`` until it holds, backing off; once, without ``wait``."""
    pause = FIRST_POLL
    while not await attempt():
        if not wait:
            return False
        await anyio.sleep(pause)
        pause = min(pause * 2, LAST_POLL)
    return True


async def _try_advisory(conn: AsyncConnection, key: int) -> bool:
    try:
        return bool(await conn.scalar(_TRY_LOCK, {"key": key}))
    except SQLAlchemyError as exc:
        raise CatalogError.of(exc) from exc


async def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _release_advisory(conn: AsyncConnection, key: int, held: bool) -> None:
    """Unlock, and hand the connection back to the pool.

    A connection whose unlock failed is thrown away instead: closing its
    session is what frees the lock, where a pooled one would keep it held.
    """
    try:
        if held:
            await conn.execute(_UNLOCK, {"key": key})
    except SQLAlchemyError:
        logger.warning("catalog lock not released; connection dropped")
        await conn.invalidate()
    finally:
        with contextlib.suppress(SQLAlchemyError):
            await conn.close()
