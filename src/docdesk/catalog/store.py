"""The catalog: documents, versions, keys, the callback log and recoveries.

One code path serves SQLite and PostgreSQL. Every change that must hold
together is one transaction; a version becomes current in the same
transaction that records it, so a crash leaves the previous version current.
Commits for one document are serialized: SQLite by taking its write lock at
``BEGIN``, PostgreSQL by locking the document's row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from docdesk.catalog import migrations
from docdesk.catalog.records import (
    CallbackRecord,
    CaptureRecord,
    DocumentRecord,
    KeyRecord,
    NewVersion,
    RecoveryRecord,
    VersionRecord,
    VersionSource,
)
from docdesk.catalog.tables import (
    BLOB_COLUMNS,
    callbacks,
    captures,
    deliveries,
    documents,
    keys,
    metadata,
    recoveries,
    versions,
)
from docdesk.errors import CatalogError, ConfigurationError, NotFound

__all__ = ["Catalog"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Connections kept open to an SQLite file (and as many more at a peak).
SQLITE_POOL_SIZE = 32
# The execution option that marks a transaction that writes.
WRITES = "docdesk_writes"
# One small write in a transaction it may share: see Catalog._write. It is
# synchronous so that a whole batch runs in one hop to the database's thread.
Write = Callable[[Connection], T]


def _now() -> datetime:
    return datetime.now(UTC)


class Catalog:
    """Metadata for docdesk, on any SQLAlchemy async URL."""

    def __init__(
        self, engine: AsyncEngine, *, sync_engine: Engine | None = None
    ) -> None:
        self.engine = engine
        # On a SQLite file, the hot small reads and the batches of small
        # writes run on a synchronous engine in a thread: one hop there and
        # back each, where the async driver takes three or four a statement.
        self._sync_engine = sync_engine
        self._batch_engine = (
            None
            if sync_engine is None
            else sync_engine.execution_options(**{WRITES: True})
        )
        self._batch_thread = (
            None
            if sync_engine is None
            else ThreadPoolExecutor(1, thread_name_prefix="docdesk-catalog-writes")
        )
        self._writes = engine.execution_options(**{WRITES: True})
        # SQLite lets one writer in at a time and makes the others poll with
        # sleeps of up to 100 ms (busy_timeout): under load, callbacks wait
        # far longer than their writes take. Queueing this process's writers
        # here hands the write lock on at once; other processes still poll.
        self._writer = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._queued: list[tuple[Write[Any], asyncio.Future[Any]]] = []
        self._committing: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> Catalog:
        try:
            engine = create_async_engine(url, **_pool_options(url))
        except (ArgumentError, ImportError) as exc:
            raise ConfigurationError(
                "DOCDESK_DATABASE_URL is not a usable database URL: "
                f"{type(exc).__name__}"
            ) from None
        if engine.dialect.name != "sqlite":
            return cls(engine)
        _tune_sqlite(engine.sync_engine)
        sync_engine = _sync_engine(url)
        if sync_engine is not None:
            _tune_sqlite(sync_engine)
        return cls(engine, sync_engine=sync_engine)

    async def close(self) -> None:
        await self.engine.dispose()
        if self._batch_thread is not None:
            self._batch_thread.shutdown()
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    async def migrate(self) -> None:
        """Bring the schema up to date."""
        async with self._begin() as conn:
            await conn.run_sync(migrations.upgrade)

    async def pending_migrations(self) -> list[str]:
        """Revisions the database still lacks; empty when it is current."""
        async with self._begin() as conn:
            return await conn.run_sync(migrations.pending)

    # Documents

    async def add_document(
        self, *, document_id: str, title: str, key: str, version: NewVersion
    ) -> DocumentRecord:
        """Record a new document with its first version and key."""
        now = _now()
        async with self._begin() as conn:
            await conn.execute(
                insert(documents).values(
                    id=document_id,
                    title=title,
                    file_type=version.file_type,
                    current_version=1,
                    key=key,
                    created=now,
                    updated=now,
                )
            )
            await _insert_version(conn, document_id, 1, version, now)
            await _insert_key(conn, key, document_id, 1, now)
            return await _document(conn, document_id)

    async def document(self, document_id: str) -> DocumentRecord:
        async with self._connect() as conn:
            return await _document(conn, document_id)

    async def documents(self) -> list[DocumentRecord]:
        async with self._connect() as conn:
            rows = await conn.execute(_document_query().order_by(documents.c.updated))
            return [_document_record(row) for row in rows]

    async def delete_document(self, document_id: str) -> list[str]:
        """Forget a document; returns the blob names it leaves behind."""
        async with self._begin() as conn:
            await _lock_document(conn, document_id)
            blobs = await conn.execute(
                select(
                    versions.c.blob, versions.c.changes_blob, versions.c.forms_blob
                ).where(versions.c.document_id == document_id)
            )
            names = [name for row in blobs for name in row if name]
            kept_aside = await conn.execute(
                select(recoveries.c.blob).where(recoveries.c.document_id == document_id)
            )
            names += [name for (name,) in kept_aside]
            await conn.execute(
                delete(recoveries).where(recoveries.c.document_id == document_id)
            )
            await conn.execute(
                delete(captures).where(captures.c.document_id == document_id)
            )
            await conn.execute(delete(keys).where(keys.c.document_id == document_id))
            await conn.execute(
                delete(versions).where(versions.c.document_id == document_id)
            )
            await conn.execute(delete(documents).where(documents.c.id == document_id))
            return names

    # Versions

    async def versions(self, document_id: str) -> list[VersionRecord]:
        async with self._connect() as conn:
            await _document(conn, document_id)
            rows = await conn.execute(
                select(versions)
                .where(versions.c.document_id == document_id)
                .order_by(versions.c.number)
            )
            return [_version_record(row) for row in rows]

    async def version(self, document_id: str, number: int) -> VersionRecord:
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(versions).where(
                        versions.c.document_id == document_id,
                        versions.c.number == number,
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"document {document_id} has no version {number}")
        return _version_record(row)

    async def commit_version(
        self,
        document_id: str,
        version: NewVersion,
        *,
        new_key: str,
        ends_session: bool = False,
    ) -> VersionRecord:
        """Make ``version`` the newest and current version, in one transaction.

        The document gets ``new_key`` for the new version unless the version
        is a force save under the document's own key, which goes on editing
        under it: any other new content must reach new editors under a key
        the Document Server has not cached. A version the DS made under a key
        that lives on is what that key serves from now on; ``ends_session``
        retires the key, as a final save does. A change of format renames
        the document to the new extension.
        """
        now = _now()
        async with self._begin() as conn:
            current = await _lock_document(conn, document_id)
            number = await _last_number(conn, document_id) + 1
            await _insert_version(conn, document_id, number, version, now)

            values: dict[str, Any] = {
                "current_version": number,
                "file_type": version.file_type,
                "updated": now,
            }
            if version.file_type != current.file_type:
                stem = current.title.rpartition(".")[0] or current.title
                values["title"] = f"{stem}.{version.file_type}"
            if version.key is not None:
                await conn.execute(
                    update(keys).where(keys.c.key == version.key).values(version=number)
                )
                if ends_session:
                    await _retire_key(conn, version.key, now)
            if ends_session or version.key != current.key:
                await _insert_key(conn, new_key, document_id, number, now)
                values["key"] = new_key
            await conn.execute(
                update(documents).where(documents.c.id == document_id).values(**values)
            )
            row = await conn.execute(
                select(versions).where(
                    versions.c.document_id == document_id,
                    versions.c.number == number,
                )
            )
            return _version_record(row.one())

    # Keys

    async def key(self, key: str) -> KeyRecord | None:
        def read(conn: Connection) -> Row[Any] | None:
            return conn.execute(_KEY, {"b_key": key}).first()

        row = await self._read(read)
        return None if row is None else _key_record(row)

    async def rotate_key(self, document_id: str, old_key: str, new_key: str) -> bool:
        """Replace the document's key if it is still ``old_key``.

        Returns False, changing nothing, when the key has moved on already:
        a replayed or late callback must not rotate it again.
        """
        now = _now()
        async with self._begin() as conn:
            current = await _lock_document(conn, document_id)
            await _retire_key(conn, old_key, now)
            if current.key != old_key:
                return False
            await _insert_key(conn, new_key, document_id, current.current_version, now)
            await conn.execute(
                update(documents)
                .where(documents.c.id == document_id)
                .values(key=new_key, updated=now)
            )
            return True

    async def set_editors(
        self,
        key: str,
        editors: Sequence[str],
        *,
        document_id: str,
        status: int,
        signed: int | None = None,
        delivery: str | None = None,
        keep: float = 0.0,
        log: Callable[[bool], CallbackRecord] | None = None,
    ) -> bool:
        """Record who edits under ``key``, unless this callback is stale.

        Stale is a replay (``delivery`` already recorded, kept ``keep``
        seconds) or a callback signed before the one that last set the
        editors (``signed`` is its ``iat``): the DS does not wait for status
        1 before going on, so it may arrive late. Returns whether the
        editors were set. ``log`` gives, from that, the callback log line to
        write in the same transaction. One transaction, whose sync to disk it
        may share with other small writes (:meth:`_write`).
        """
        now = _now()

        def write(conn: Connection) -> bool:
            done = set_editors(conn)
            if log is not None:
                conn.execute(_LOG_CALLBACK, _log_values(log(done)))
            return done

        def set_editors(conn: Connection) -> bool:
            if delivery is not None and not _first_delivery(
                conn, delivery, document_id, status, now + timedelta(seconds=keep)
            ):
                return False
            query = _SET_EDITORS if signed is not None else _SET_EDITORS_UNSIGNED
            result = conn.execute(
                query,
                {"b_key": key, "b_editors": list(editors), "b_signed": signed},
            )
            return bool(result.rowcount)

        return await self._write(write)

    # Deliveries

    async def delivered(self, fingerprint: str) -> bool:
        async with self._connect() as conn:
            row = await conn.execute(
                select(deliveries.c.fingerprint).where(
                    deliveries.c.fingerprint == fingerprint
                )
            )
            return row.first() is not None

    async def record_delivery(
        self, fingerprint: str, document_id: str, status: int, *, keep: float
    ) -> bool:
        """Remember a callback for ``keep`` seconds; False if it already was."""
        expires = _now() + timedelta(seconds=keep)

        def write(conn: Connection) -> bool:
            return _first_delivery(conn, fingerprint, document_id, status, expires)

        return await self._write(write)

    # The callback log

    async def log_callback(self, record: CallbackRecord) -> None:
        values = _log_values(record)

        def write(conn: Connection) -> None:
            conn.execute(_LOG_CALLBACK, values)

        await self._write(write)

    async def callback_log(
        self, document_id: str | None = None, *, limit: int = 100
    ) -> list[CallbackRecord]:
        query = select(callbacks).order_by(callbacks.c.id.desc()).limit(limit)
        if document_id is not None:
            query = query.where(callbacks.c.document_id == document_id)
        async with self._connect() as conn:
            rows = await conn.execute(query)
            return [CallbackRecord(**_aware(row._asdict())) for row in rows]

    async def prune_callback_log(self, older_than: datetime) -> int:
        """Delete the records received before ``older_than``; returns how many.

        A naive ``older_than`` is taken as UTC, as every stored time is.
        """
        if older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=UTC)
        # SQLite compares the stored UTC wall times as text.
        cutoff = older_than.astimezone(UTC)

        async with self._begin() as conn:
            result = await conn.execute(
                delete(callbacks).where(callbacks.c.received < cutoff)
            )
            return int(result.rowcount)

    # Captures

    async def add_capture(self, token: str, document_id: str, key: str) -> None:
        async with self._begin() as conn:
            await conn.execute(
                insert(captures).values(
                    token=token, document_id=document_id, key=key, created=_now()
                )
            )

    async def resolve_capture(
        self, token: str, outcome: str, version: int | None = None
    ) -> bool:
        """Record what became of a capture, once; False if it was resolved."""
        async with self._begin() as conn:
            result = await conn.execute(
                update(captures)
                .where(captures.c.token == token, captures.c.resolved.is_(None))
                .values(resolved=_now(), outcome=outcome, version=version)
            )
            return bool(result.rowcount)

    async def capture(self, token: str) -> CaptureRecord | None:
        async with self._connect() as conn:
            row = (
                await conn.execute(select(captures).where(captures.c.token == token))
            ).first()
        return None if row is None else CaptureRecord(**_aware(row._asdict()))

    async def rename(self, document_id: str, title: str) -> DocumentRecord:
        async with self._begin() as conn:
            await _lock_document(conn, document_id)
            await conn.execute(
                update(documents)
                .where(documents.c.id == document_id)
                .values(title=title, updated=_now())
            )
            return await _document(conn, document_id)

    # Recoveries

    async def add_recovery(self, record: RecoveryRecord) -> RecoveryRecord:
        values = asdict(record)
        values.pop("id")
        async with self._begin() as conn:
            result = await conn.execute(insert(recoveries).values(**values))
            (identity,) = result.inserted_primary_key or (None,)
        return RecoveryRecord(**{**values, "id": identity})

    async def recoveries(self, document_id: str | None = None) -> list[RecoveryRecord]:
        query = select(recoveries).order_by(recoveries.c.id)
        if document_id is not None:
            query = query.where(recoveries.c.document_id == document_id)
        async with self._connect() as conn:
            rows = await conn.execute(query)
            return [RecoveryRecord(**_aware(row._asdict())) for row in rows]

    async def recovery(self, recovery_id: int) -> RecoveryRecord:
        async with self._connect() as conn:
            return await _recovery(conn, recovery_id)

    async def mark_recovery_restored(
        self, recovery_id: int, version: int
    ) -> RecoveryRecord:
        """Record that a kept file became ``version`` of its document."""
        async with self._begin() as conn:
            await conn.execute(
                update(recoveries)
                .where(recoveries.c.id == recovery_id)
                .values(restored_version=version)
            )
            return await _recovery(conn, recovery_id)

    # Blobs

    async def blob_names(self) -> AsyncGenerator[str, None]:
        """Every blob name a row of the catalog refers to; a name may repeat.

        The columns read are those BLOB_COLUMNS lists: versions, their changes
        and form data, files kept aside for recovery. Rows are streamed, so
        memory does not grow with the catalog. A table without an entry there
        raises CatalogError before anything is read: its blobs could not be
        told apart from orphans.
        """
        columns: list[Column[Any]] = []
        for table in metadata.sorted_tables:
            listed = BLOB_COLUMNS.get(table.name)
            if listed is None:
                raise CatalogError(
                    f"the catalog's table {table.name!r} has no entry in "
                    "docdesk.catalog.tables.BLOB_COLUMNS"
                )
            columns += [table.c[column.name] for column in listed]

        async with self._connect() as conn:
            for column in columns:
                rows = await conn.stream(select(column).where(column.is_not(None)))
                async for (name,) in rows:
                    yield name

    # Connections

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer or contextlib.nullcontext():
            try:
                async with self._writes.begin() as conn:
                    yield conn
            except SQLAlchemyError as exc:
                raise CatalogError(f"the catalog failed: {type(exc).__name__}") from exc

    async def _write(self, write: Write[T]) -> T:
        """Run ``write`` in a transaction; on SQLite, commit it with others.

        Every SQLite commit is a sync to disk, and one small write (who
        edits, a line of the callback log) costs far less than its sync. The
        writes that queue while a commit is under way go together in the next
        transaction, in the order they came, so one sync serves them all; each
        caller still returns only once its own write is durable. A batch that
        fails is run again one write per transaction, so that each caller
        gets its own outcome. Only SQLite batches: it locks the whole
        database anyway, whereas PostgreSQL's row locks could deadlock.
        """
        if self._writer is None:
            async with self._begin() as conn:
                return await conn.run_sync(write)

        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queued.append((write, future))
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_queued())
        return await future

    async def _commit_queued(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    results = await self._commit_batch([write for write, _ in batch])
                except Exception:
                    logger.debug(
                        "batched writes failed, one at a time now n=%d", len(batch)
                    )
                    await self._commit_each(batch)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._committing = None

    async def _commit_each(
        self, batch: list[tuple[Write[Any], asyncio.Future[Any]]]
    ) -> None:
        for write, future in batch:
            try:
                (result,) = await self._commit_batch([write])
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    async def _commit_batch(self, writes: list[Write[Any]]) -> list[Any]:
        """Run ``writes`` in one transaction; on the batch engine if any."""

        def run(conn: Connection) -> list[Any]:
            return [write(conn) for write in writes]

        if self._batch_engine is None or self._batch_thread is None:
            async with self._begin() as conn:
                return await conn.run_sync(run)

        engine = self._batch_engine

        def commit() -> list[Any]:
            with engine.begin() as conn:
                return run(conn)

        loop = asyncio.get_running_loop()
        async with self._writer or contextlib.nullcontext():
            try:
                return await loop.run_in_executor(self._batch_thread, commit)
            except SQLAlchemyError as exc:
                raise CatalogError(f"the catalog failed: {type(exc).__name__}") from exc

    async def _read(self, read: Callable[[Connection], T]) -> T:
        """Run ``read`` in a transaction of its own; in a thread on SQLite."""
        engine = self._sync_engine
        if engine is None:
            async with self._connect() as conn:
                return await conn.run_sync(read)

        def run() -> T:
            with engine.connect() as conn:
                return read(conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(None, run)
        except SQLAlchemyError as exc:
            raise CatalogError(f"the catalog failed: {type(exc).__name__}") from exc

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise CatalogError(f"the catalog failed: {type(exc).__name__}") from exc


def _pool_options(url: str) -> dict[str, Any]:
    """How to pool connections: a server's may drop, a local file's may not.

    Each SQLite connection is a thread of aiosqlite's: opening one per
    request beyond the pool costs more than the request, so the pool keeps
    enough for every request a busy service runs at once, and pings none.
    """
    parsed = make_url(url)
    # An in-memory database lives in one connection, which SQLAlchemy keeps.
    in_memory = parsed.database in (None, "", ":memory:") or (
        parsed.query.get("mode") == "memory"
    )
    if parsed.get_backend_name() == "sqlite" and not in_memory:
        return {"pool_size": SQLITE_POOL_SIZE, "max_overflow": SQLITE_POOL_SIZE}
    return {"pool_pre_ping": True}


def _sync_engine(url: str) -> Engine | None:
    """A synchronous engine on the same SQLite file; None for one in memory."""
    parsed = make_url(url)
    if (
        parsed.database in (None, "", ":memory:")
        or parsed.query.get("mode") == "memory"
    ):
        return None
    # The batches take one connection, the reads one per executor thread.
    return create_engine(
        parsed.set(drivername="sqlite+pysqlite"),
        pool_size=SQLITE_POOL_SIZE // 4,
        max_overflow=SQLITE_POOL_SIZE,
    )


def _tune_sqlite(engine: Engine) -> None:
    """Durable commits, and one writer at a time from the first statement.

    pysqlite would open transactions lazily and let two writers read the
    same "last version number"; BEGIN IMMEDIATE takes the write lock at once.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A read needs no lock in WAL mode; taking the write lock for it, too,
        # made every read wait behind every commit.
        writes = conn.get_execution_options().get(WRITES, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN DEFERRED")


def _document_query() -> Any:
    current = versions.alias("current")
    editors = (
        select(keys.c.editors)
        .where(keys.c.key == documents.c.key)
        .scalar_subquery()
        .label("editors")
    )
    return select(documents, current.c.size, current.c.sha256, editors).join(
        current,
        (current.c.document_id == documents.c.id)
        & (current.c.number == documents.c.current_version),
    )


async def _document(conn: AsyncConnection, document_id: str) -> DocumentRecord:
    row = (
        await conn.execute(_document_query().where(documents.c.id == document_id))
    ).first()
    if row is None:
        raise NotFound(f"no document {document_id}")
    return _document_record(row)


async def _lock_document(conn: AsyncConnection, document_id: str) -> DocumentRecord:
    row = (
        await conn.execute(
            select(documents.c.id)
            .where(documents.c.id == document_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound(f"no document {document_id}")
    return await _document(conn, document_id)


async def _last_number(conn: AsyncConnection, document_id: str) -> int:
    number = await conn.scalar(
        select(func.max(versions.c.number)).where(versions.c.document_id == document_id)
    )
    return int(number or 0)


async def _insert_version(
    conn: AsyncConnection,
    document_id: str,
    number: int,
    version: NewVersion,
    now: datetime,
) -> None:
    values = asdict(version)
    values["history"] = dict(version.history) if version.history else None
    await conn.execute(
        insert(versions).values(
            document_id=document_id, number=number, created=now, **values
        )
    )


async def _insert_key(
    conn: AsyncConnection, key: str, document_id: str, version: int, now: datetime
) -> None:
    await conn.execute(
        insert(keys).values(
            key=key, document_id=document_id, version=version, created=now, editors=[]
        )
    )


async def _retire_key(conn: AsyncConnection, key: str, now: datetime) -> None:
    await conn.execute(
        update(keys)
        .where(keys.c.key == key, keys.c.retired.is_(None))
        .values(retired=now, editors=[])
    )


def _first_delivery(
    conn: Connection,
    fingerprint: str,
    document_id: str,
    status: int,
    expires: datetime,
) -> bool:
    """Record a delivery; False when it was recorded before. Forgets old ones."""
    conn.execute(_FORGET_DELIVERIES, {"now": _now()})
    values = {
        "fingerprint": fingerprint,
        "document_id": document_id,
        "status": status,
        "expires": expires,
    }
    statement = _FIRST_DELIVERY[conn.dialect.name == "sqlite"]
    return conn.execute(statement, values).first() is not None


# Built once: building a statement per call cost more than running it.
_KEY = select(keys).where(keys.c.key == bindparam("b_key"))
_SET_EDITORS_UNSIGNED = (
    update(keys)
    .where(keys.c.key == bindparam("b_key"))
    .values(
        editors=bindparam("b_editors", type_=keys.c.editors.type),
        editors_signed=bindparam("b_signed", type_=keys.c.editors_signed.type),
    )
)
_SET_EDITORS = _SET_EDITORS_UNSIGNED.where(
    keys.c.editors_signed.is_(None) | (keys.c.editors_signed <= bindparam("b_signed"))
)
_LOG_CALLBACK = insert(callbacks)
_FORGET_DELIVERIES = delete(deliveries).where(
    deliveries.c.expires < bindparam("now", type_=deliveries.c.expires.type)
)
# Indexed by "is SQLite": each dialect spells ON CONFLICT with its own insert.
_FIRST_DELIVERY = {
    is_sqlite: dialect.insert(deliveries)
    .on_conflict_do_nothing()
    .returning(deliveries.c.fingerprint)
    for is_sqlite, dialect in ((True, sqlite), (False, postgresql))
}


def _log_values(record: CallbackRecord) -> dict[str, Any]:
    """A log line's columns; asdict's deep copy cost more than the insert."""
    return {
        field.name: getattr(record, field.name)
        for field in fields(record)
        if field.name != "id"
    }


def _aware(values: dict[str, Any]) -> dict[str, Any]:
    """SQLite hands back naive datetimes; every time docdesk stores is UTC."""
    return {
        name: value.replace(tzinfo=UTC)
        if isinstance(value, datetime) and value.tzinfo is None
        else value
        for name, value in values.items()
    }


async def _recovery(conn: AsyncConnection, recovery_id: int) -> RecoveryRecord:
    row = (
        await conn.execute(select(recoveries).where(recoveries.c.id == recovery_id))
    ).first()
    if row is None:
        raise NotFound(f"no kept file {recovery_id} in the recovery area")
    return RecoveryRecord(**_aware(row._asdict()))


def _document_record(row: Row[Any]) -> DocumentRecord:
    values = _aware(row._asdict())
    values["editors"] = tuple(values.get("editors") or ())
    return DocumentRecord(**values)


def _version_record(row: Row[Any]) -> VersionRecord:
    values = _aware(row._asdict())
    values.pop("id")
    values["source"] = VersionSource(values["source"])
    return VersionRecord(**values)


def _key_record(row: Row[Any]) -> KeyRecord:
    values = _aware(row._asdict())
    values["editors"] = tuple(values.get("editors") or ())
    values.pop("editors_signed", None)
    return KeyRecord(**values)
