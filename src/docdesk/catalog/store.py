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
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from docdesk.catalog import migrations
from docdesk.catalog.locks import Locks
from docdesk.catalog.records import (
    CallbackRecord,
    CaptureRecord,
    DocumentRecord,
    EditorsSet,
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
# Connections kept open to a SQLite file, a quarter of them, and as many
# more at a peak: one per executor thread that reads.
SQLITE_POOL_SIZE = 32
# The pool of the connections that hold PostgreSQL's advisory locks: one a
# document being saved, beside the catalog's own pool.
LOCK_POOL = {"pool_size": 5, "max_overflow": 20, "pool_pre_ping": True}
# The execution option that marks a transaction that writes.
WRITES = "docdesk_writes"
# One read or write of the catalog, as a function of a connection: see
# Catalog._read and Catalog._write.
Operation = Callable[[Connection], T]
# A write waiting for the writer's thread, and where its outcome goes.
Queued = tuple[Operation[Any], "asyncio.Future[Any]"]


def _now() -> datetime:
    return datetime.now(UTC)


class Catalog:
    """Metadata for docdesk, on any SQLAlchemy async URL.

    Each operation is one synchronous function of a connection, run in one
    hop: on a SQLite file, in a thread on a synchronous engine (the async
    driver takes three or four hops a statement); on any other database,
    through the async engine's ``run_sync``.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sync_engine: Engine | None = None,
        locks: Locks | None = None,
    ) -> None:
        self.engine = engine
        self.locks = locks or Locks()
        """Locks every process on this catalog respects (docdesk.catalog.locks)."""
        self._async_writes = engine.execution_options(**{WRITES: True})
        # An in-memory SQLite database is one connection: its transactions
        # must take turns.
        self._async_turns = asyncio.Lock() if engine.dialect.name == "sqlite" else None

        # A SQLite file: reads in the loop's executor, writes on one thread
        # of their own, where they queue to share commits (_write).
        self._sync_engine = sync_engine
        self._sync_writes = (
            None
            if sync_engine is None
            else sync_engine.execution_options(**{WRITES: True})
        )
        self._writer = (
            None
            if sync_engine is None
            else ThreadPoolExecutor(1, thread_name_prefix="docdesk-catalog-writes")
        )
        self._queued: list[Queued] = []
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
        if engine.dialect.name == "postgresql":
            locking = create_async_engine(url, **LOCK_POOL)
            return cls(engine, locks=Locks(engine=locking))
        if engine.dialect.name != "sqlite":
            return cls(engine)
        _tune_sqlite(engine.sync_engine)
        database = _sqlite_file(url)
        if database is None:
            return cls(engine)
        sync_engine = _sync_engine(url)
        _tune_sqlite(sync_engine)
        folder = database.with_name(f"{database.name}.locks")
        return cls(engine, sync_engine=sync_engine, locks=Locks(folder=folder))

    async def close(self) -> None:
        await self.locks.close()
        await self.engine.dispose()
        if self._writer is not None:
            self._writer.shutdown()
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    async def migrate(self) -> None:
        """Bring the schema up to date."""
        await self._alone(migrations.upgrade)

    async def pending_migrations(self) -> list[str]:
        """Revisions the database still lacks; empty when it is current."""
        return await self._alone(migrations.pending)

    # Documents

    async def add_document(
        self, *, document_id: str, title: str, key: str, version: NewVersion
    ) -> DocumentRecord:
        """Record a new document with its first version and key."""
        now = _now()

        def add(conn: Connection) -> DocumentRecord:
            conn.execute(
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
            _insert_version(conn, document_id, 1, version, now)
            _insert_key(conn, key, document_id, 1, now)
            return _document(conn, document_id)

        return await self._write(add)

    async def document(self, document_id: str) -> DocumentRecord:
        return await self._read(lambda conn: _document(conn, document_id))

    async def documents(self) -> list[DocumentRecord]:
        def read(conn: Connection) -> list[DocumentRecord]:
            rows = conn.execute(_DOCUMENTS)
            return [_document_record(row) for row in rows]

        return await self._read(read)

    async def delete_document(self, document_id: str) -> list[str]:
        """Forget a document; returns the blob names it leaves behind."""

        def forget(conn: Connection) -> list[str]:
            _lock_document(conn, document_id)
            blobs = conn.execute(
                select(
                    versions.c.blob, versions.c.changes_blob, versions.c.forms_blob
                ).where(versions.c.document_id == document_id)
            )
            names = [name for row in blobs for name in row if name]
            kept_aside = conn.execute(
                select(recoveries.c.blob).where(recoveries.c.document_id == document_id)
            )
            names += [name for (name,) in kept_aside]
            for table in (recoveries, captures, keys, versions):
                conn.execute(delete(table).where(table.c.document_id == document_id))
            conn.execute(delete(documents).where(documents.c.id == document_id))
            return names

        return await self._write(forget)

    # Versions

    async def versions(self, document_id: str) -> list[VersionRecord]:
        def read(conn: Connection) -> list[VersionRecord]:
            _document(conn, document_id)
            rows = conn.execute(
                select(versions)
                .where(versions.c.document_id == document_id)
                .order_by(versions.c.number)
            )
            return [_version_record(row) for row in rows]

        return await self._read(read)

    async def version(self, document_id: str, number: int) -> VersionRecord:
        def read(conn: Connection) -> Row[Any] | None:
            return conn.execute(
                _VERSION, {"b_document": document_id, "b_number": number}
            ).first()

        row = await self._read(read)
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
        delivery: str | None = None,
        keep: float = 0.0,
        recovery: int | None = None,
    ) -> VersionRecord | None:
        """Make ``version`` the newest and current version, in one transaction.

        The document gets ``new_key`` for the new version unless the version
        is a force save under the document's own key, which goes on editing
        under it: any other new content must reach new editors under a key
        the Document Server has not cached. A version the DS made under a key
        that lives on is what that key serves from now on; ``ends_session``
        retires the key, as a final save does. A change of format renames
        the document to the new extension.

        A version saved from a callback names its ``delivery``, remembered
        ``keep`` seconds in the same transaction: one delivered twice is
        refused by the deliveries' key, and None comes back, nothing changed.
        A version restored from the recovery area names the kept file's
        ``recovery`` id, which the same transaction marks restored.
        """
        if delivery is not None and version.status is None:
            raise ValueError("a version from a callback needs the callback's status")
        now = _now()
        expires = now + timedelta(seconds=keep)

        def commit(conn: Connection) -> VersionRecord | None:
            if delivery is not None and not _first_delivery(
                conn, delivery, document_id, version.status or 0, expires
            ):
                return None
            current = _lock_document(conn, document_id)
            number = _last_number(conn, document_id) + 1
            _insert_version(conn, document_id, number, version, now)

            values: dict[str, Any] = {
                "current_version": number,
                "file_type": version.file_type,
                "updated": now,
            }
            if version.file_type != current.file_type:
                stem = current.title.rpartition(".")[0] or current.title
                values["title"] = f"{stem}.{version.file_type}"
            if version.key is not None:
                conn.execute(_KEY_VERSION, {"b_key": version.key, "version": number})
                if ends_session:
                    _retire_key(conn, version.key, now)
            if ends_session or version.key != current.key:
                _insert_key(conn, new_key, document_id, number, now)
                values["key"] = new_key
            conn.execute(_UPDATE_DOCUMENT, {"b_document": document_id, **values})
            if recovery is not None:
                _mark_restored(conn, recovery, number)
            row = conn.execute(
                _VERSION, {"b_document": document_id, "b_number": number}
            )
            return _version_record(row.one())

        return await self._write(commit)

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

        def rotate(conn: Connection) -> bool:
            current = _lock_document(conn, document_id)
            _retire_key(conn, old_key, now)
            if current.key != old_key:
                return False
            _insert_key(conn, new_key, document_id, current.current_version, now)
            conn.execute(
                update(documents)
                .where(documents.c.id == document_id)
                .values(key=new_key, updated=now)
            )
            return True

        return await self._write(rotate)

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
        log: Callable[[EditorsSet], CallbackRecord] | None = None,
    ) -> EditorsSet:
        """Record who edits ``document_id`` under ``key``, unless it is stale.

        Nothing is set under a key that is not the document's. Stale is a
        replay (``delivery`` already recorded, kept ``keep`` seconds) or a
        callback signed before the one that last set the editors (``signed``
        is its ``iat``): the DS does not wait for status 1 before going on,
        so it may arrive late. ``log`` gives, from the outcome, the callback
        log line to write in the same transaction. One transaction, whose
        sync to disk it may share with other writes (:meth:`_write`).
        """
        now = _now()

        def write(conn: Connection) -> EditorsSet:
            outcome = set_editors(conn)
            if log is not None:
                conn.execute(_LOG_CALLBACK, _log_values(log(outcome)))
            return outcome

        def set_editors(conn: Connection) -> EditorsSet:
            owner = conn.execute(_KEY_OWNER, {"b_key": key}).scalar()
            if owner != document_id:
                return (
                    EditorsSet.UNKNOWN_KEY if owner is None else EditorsSet.FOREIGN_KEY
                )
            if delivery is not None and not _first_delivery(
                conn, delivery, document_id, status, now + timedelta(seconds=keep)
            ):
                return EditorsSet.STALE
            query = _SET_EDITORS if signed is not None else _SET_EDITORS_UNSIGNED
            result = conn.execute(
                query,
                {"b_key": key, "b_editors": list(editors), "b_signed": signed},
            )
            return EditorsSet.SET if result.rowcount else EditorsSet.STALE

        return await self._write(write)

    # Deliveries

    async def delivered(self, fingerprint: str) -> bool:
        def read(conn: Connection) -> bool:
            row = conn.execute(
                _DELIVERED, {"b_fingerprint": fingerprint, "now": _now()}
            )
            return row.first() is not None

        return await self._read(read)

    async def record_delivery(
        self, fingerprint: str, document_id: str, status: int, *, keep: float
    ) -> bool:
        """Remember a callback for ``keep`` seconds; False if it already was."""
        expires = _now() + timedelta(seconds=keep)

        def write(conn: Connection) -> bool:
            return _first_delivery(conn, fingerprint, document_id, status, expires)

        return await self._write(write)

    async def forget_deliveries(self) -> int:
        """Delete the deliveries remembered past their time; returns how many."""

        def forget(conn: Connection) -> int:
            return int(conn.execute(_FORGET_DELIVERIES, {"now": _now()}).rowcount)

        return await self._write(forget)

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

        def read(conn: Connection) -> list[CallbackRecord]:
            rows = conn.execute(query)
            return [CallbackRecord(**_aware(row._asdict())) for row in rows]

        return await self._read(read)

    async def prune_callback_log(self, older_than: datetime) -> int:
        """Delete the records received before ``older_than``; returns how many.

        A naive ``older_than`` is taken as UTC, as every stored time is.
        """
        if older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=UTC)
        # SQLite compares the stored UTC wall times as text.
        cutoff = older_than.astimezone(UTC)

        def prune(conn: Connection) -> int:
            result = conn.execute(
                delete(callbacks).where(callbacks.c.received < cutoff)
            )
            return int(result.rowcount)

        return await self._write(prune)

    # Captures

    async def add_capture(self, token: str, document_id: str, key: str) -> None:
        values = {"token": token, "document_id": document_id, "key": key}
        created = _now()

        def add(conn: Connection) -> None:
            conn.execute(insert(captures).values(**values, created=created))

        await self._write(add)

    async def resolve_capture(
        self, token: str, outcome: str, version: int | None = None
    ) -> bool:
        """Record what became of a capture, once; False if it was resolved."""
        resolved = _now()

        def resolve(conn: Connection) -> bool:
            result = conn.execute(
                update(captures)
                .where(captures.c.token == token, captures.c.resolved.is_(None))
                .values(resolved=resolved, outcome=outcome, version=version)
            )
            return bool(result.rowcount)

        return await self._write(resolve)

    async def capture(self, token: str) -> CaptureRecord | None:
        def read(conn: Connection) -> Row[Any] | None:
            return conn.execute(
                select(captures).where(captures.c.token == token)
            ).first()

        row = await self._read(read)
        return None if row is None else CaptureRecord(**_aware(row._asdict()))

    async def rename(self, document_id: str, title: str) -> DocumentRecord:
        updated = _now()

        def rename(conn: Connection) -> DocumentRecord:
            _lock_document(conn, document_id)
            conn.execute(
                update(documents)
                .where(documents.c.id == document_id)
                .values(title=title, updated=updated)
            )
            return _document(conn, document_id)

        return await self._write(rename)

    # Recoveries

    async def add_recovery(self, record: RecoveryRecord) -> RecoveryRecord:
        values = asdict(record)
        values.pop("id")

        def add(conn: Connection) -> Any:
            result = conn.execute(insert(recoveries).values(**values))
            (identity,) = result.inserted_primary_key or (None,)
            return identity

        identity = await self._write(add)
        return RecoveryRecord(**{**values, "id": identity})

    async def recoveries(self, document_id: str | None = None) -> list[RecoveryRecord]:
        query = select(recoveries).order_by(recoveries.c.id)
        if document_id is not None:
            query = query.where(recoveries.c.document_id == document_id)

        def read(conn: Connection) -> list[RecoveryRecord]:
            rows = conn.execute(query)
            return [RecoveryRecord(**_aware(row._asdict())) for row in rows]

        return await self._read(read)

    async def recovery(self, recovery_id: int) -> RecoveryRecord:
        return await self._read(lambda conn: _recovery(conn, recovery_id))

    # Blobs

    async def blob_names(self) -> AsyncGenerator[str, None]:
        """Every blob name a row of the catalog refers to; a name may repeat.

        The columns read are those BLOB_COLUMNS lists: versions, their changes
        and form data, files kept aside for recovery. Rows are streamed, so
        memory does not grow with the catalog. A table without an entry there
        raises CatalogError before anything is read: its blobs could not be
        told apart from orphans.
        """
        columns = _blob_columns()
        try:
            async with self.engine.connect() as conn:
                for column in columns:
                    rows = await conn.stream(select(column).where(column.is_not(None)))
                    async for (name,) in rows:
                        yield name
        except SQLAlchemyError as exc:
            raise CatalogError.of(exc) from exc

    async def names(self, blob: str) -> bool:
        """Whether a row of the catalog refers to ``blob``, as blob_names says."""
        columns = _blob_columns()

        def read(conn: Connection) -> bool:
            return any(
                conn.execute(select(column).where(column == blob).limit(1)).first()
                for column in columns
            )

        return await self._read(read)

    # Running operations

    async def _read(self, read: Operation[T]) -> T:
        """Run ``read`` in a transaction of its own, which takes no lock."""
        engine = self._sync_engine
        if engine is None:
            try:
                async with self._async_turn(), self.engine.connect() as conn:
                    return await conn.run_sync(read)
            except SQLAlchemyError as exc:
                raise CatalogError.of(exc) from exc

        def run() -> T:
            with engine.connect() as conn:
                return read(conn)

        loop = asyncio.get_running_loop()
        return await _translated(loop.run_in_executor(None, run))

    async def _write(self, write: Operation[T]) -> T:
        """Run ``write`` in a transaction; on a SQLite file, commit it with others.

        Every SQLite commit is a sync to disk, which costs far more than one
        small write (who edits, a line of the callback log, a new version).
        The writes that queue while a commit is under way go together in the
        next transaction, in the order they came, so one sync serves them
        all; each caller still returns only once its own write is durable. A
        batch that fails is run again one write per transaction, so that each
        caller gets its own outcome. Only a SQLite file batches: it locks the
        whole database anyway, whereas PostgreSQL's row locks could deadlock
        a batch.
        """
        if self._writer is None:
            return await self._alone(write)

        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queued = (write, future)
        self._queued.append(queued)
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_queued())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # A write not yet taken into a batch never runs. One in a batch
            # under way may still commit: the caller must not take it for
            # undone (a version's blob removed under its row, say).
            if queued in self._queued:
                self._queued.remove(queued)
            raise

    async def _alone(self, write: Operation[T]) -> T:
        """Run ``write`` in a transaction of its own on the async engine."""
        try:
            async with self._async_turn(), self._async_writes.begin() as conn:
                return await conn.run_sync(write)
        except SQLAlchemyError as exc:
            raise CatalogError.of(exc) from exc

    def _async_turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._async_turns or contextlib.nullcontext()

    async def _commit_queued(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    results = await self._commit_batch([write for write, _ in batch])
                except Exception as exc:
                    # The database failing the transaction itself (locked
                    # past the busy timeout, full, gone) fails each write too;
                    # one write's own error must not cost the others theirs.
                    if len(batch) == 1 or isinstance(exc, OperationalError):
                        for entry in batch:
                            _settle([entry], error=_translate(exc))
                        continue
                    logger.debug(
                        "batched writes failed, one at a time now n=%d", len(batch)
                    )
                    await self._commit_each(batch)
                    continue
                for entry, result in zip(batch, results, strict=True):
                    _settle([entry], result=result)
        finally:
            self._committing = None

    async def _commit_each(self, batch: list[Queued]) -> None:
        for entry in batch:
            try:
                (result,) = await _translated(self._commit_batch([entry[0]]))
            except Exception as exc:
                _settle([entry], error=exc)
            else:
                _settle([entry], result=result)

    async def _commit_batch(self, writes: list[Operation[Any]]) -> list[Any]:
        """Run ``writes`` in one transaction, on the writer's thread."""
        engine, writer = self._sync_writes, self._writer
        assert engine is not None
        assert writer is not None

        def commit() -> list[Any]:
            with engine.begin() as conn:
                return [write(conn) for write in writes]

        return await asyncio.get_running_loop().run_in_executor(writer, commit)


def _settle(
    batch: list[Queued], *, result: Any = None, error: Exception | None = None
) -> None:
    """Hand each waiting caller of ``batch`` its result, or ``error``."""
    for _, future in batch:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _pool_options(url: str) -> dict[str, Any]:
    """A server's connections may drop: each is pinged before use."""
    if make_url(url).get_backend_name() == "sqlite":
        return {}
    return {"pool_pre_ping": True}


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for a database in memory."""
    parsed = make_url(url)
    if (
        parsed.database in (None, "", ":memory:")
        or parsed.query.get("mode") == "memory"
    ):
        return None
    return Path(parsed.database)


def _sync_engine(url: str) -> Engine:
    """A synchronous engine on the same SQLite file as ``url``.

    The writes take one connection, the reads one per executor thread.
    """
    return create_engine(
        make_url(url).set(drivername="sqlite+pysqlite"),
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


def _blob_columns() -> list[Column[Any]]:
    """The columns BLOB_COLUMNS lists; CatalogError for a table it misses."""
    columns: list[Column[Any]] = []
    for table in metadata.sorted_tables:
        listed = BLOB_COLUMNS.get(table.name)
        if listed is None:
            raise CatalogError(
                f"the catalog's table {table.name!r} has no entry in "
                "docdesk.catalog.tables.BLOB_COLUMNS"
            )
        columns += [table.c[column.name] for column in listed]
    return columns


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


def _document(conn: Connection, document_id: str) -> DocumentRecord:
    row = conn.execute(_DOCUMENT, {"b_document": document_id}).first()
    if row is None:
        raise NotFound(f"no document {document_id}")
    return _document_record(row)


def _lock_document(conn: Connection, document_id: str) -> DocumentRecord:
    row = conn.execute(_LOCK_DOCUMENT, {"b_document": document_id}).first()
    if row is None:
        raise NotFound(f"no document {document_id}")
    return _document(conn, document_id)


def _last_number(conn: Connection, document_id: str) -> int:
    number = conn.scalar(_LAST_NUMBER, {"b_document": document_id})
    return int(number or 0)


def _insert_version(
    conn: Connection,
    document_id: str,
    number: int,
    version: NewVersion,
    now: datetime,
) -> None:
    values = asdict(version)
    values["history"] = dict(version.history) if version.history else None
    conn.execute(
        _INSERT_VERSION,
        {"document_id": document_id, "number": number, "created": now, **values},
    )


def _insert_key(
    conn: Connection, key: str, document_id: str, version: int, now: datetime
) -> None:
    conn.execute(
        _INSERT_KEY,
        {
            "key": key,
            "document_id": document_id,
            "version": version,
            "created": now,
            "editors": [],
        },
    )


def _retire_key(conn: Connection, key: str, now: datetime) -> None:
    conn.execute(_RETIRE_KEY, {"b_key": key, "b_now": now})


def _first_delivery(
    conn: Connection,
    fingerprint: str,
    document_id: str,
    status: int,
    expires: datetime,
) -> bool:
    """Record a delivery; False when it was recorded before. Forgets old ones."""
    values = {
        "fingerprint": fingerprint,
        "document_id": document_id,
        "status": status,
        "expires": expires,
        "now": _now(),
    }
    statement = _FIRST_DELIVERY[conn.dialect.name == "sqlite"]
    return conn.execute(statement, values).first() is not None


# Built once: building a statement per call cost more than running it.
_KEY = select(keys).where(keys.c.key == bindparam("b_key"))
_KEY_OWNER = select(keys.c.document_id).where(keys.c.key == bindparam("b_key"))
_VERSION = select(versions).where(
    versions.c.document_id == bindparam("b_document"),
    versions.c.number == bindparam("b_number"),
)
_DELIVERED = select(deliveries.c.fingerprint).where(
    deliveries.c.fingerprint == bindparam("b_fingerprint"),
    deliveries.c.expires >= bindparam("now", type_=deliveries.c.expires.type),
)
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
_LOCK_DOCUMENT = (
    select(documents.c.id)
    .where(documents.c.id == bindparam("b_document"))
    .with_for_update()
)
_UPDATE_DOCUMENT = update(documents).where(documents.c.id == bindparam("b_document"))
_LAST_NUMBER = select(func.max(versions.c.number)).where(
    versions.c.document_id == bindparam("b_document")
)
_INSERT_VERSION = insert(versions)
_INSERT_KEY = insert(keys)
_KEY_VERSION = update(keys).where(keys.c.key == bindparam("b_key"))
_RETIRE_KEY = (
    update(keys)
    .where(keys.c.key == bindparam("b_key"), keys.c.retired.is_(None))
    .values(retired=bindparam("b_now", type_=keys.c.retired.type), editors=[])
)
_DOCUMENTS = _document_query().order_by(documents.c.updated)
_DOCUMENT = _document_query().where(documents.c.id == bindparam("b_document"))
_FORGET_DELIVERIES = delete(deliveries).where(
    deliveries.c.expires < bindparam("now", type_=deliveries.c.expires.type)
)


def _first_delivery_statement(dialect: Any) -> Any:
    """Insert a delivery, or take the place of one whose time is up.

    RETURNING gives a row either way, and none when the delivery is still
    remembered; the expired ones are deleted now and then, not each time.
    """
    new = dialect.insert(deliveries)
    return new.on_conflict_do_update(
        index_elements=[deliveries.c.fingerprint],
        set_={
            "document_id": new.excluded.document_id,
            "status": new.excluded.status,
            "expires": new.excluded.expires,
        },
        where=deliveries.c.expires < bindparam("now", type_=deliveries.c.expires.type),
    ).returning(deliveries.c.fingerprint)


# Indexed by "is SQLite": each dialect spells ON CONFLICT with its own insert.
_FIRST_DELIVERY = {
    is_sqlite: _first_delivery_statement(dialect)
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


def _mark_restored(conn: Connection, recovery_id: int, version: int) -> None:
    marked = conn.execute(
        update(recoveries)
        .where(recoveries.c.id == recovery_id)
        .values(restored_version=version)
    )
    if marked.rowcount == 0:
        raise NotFound(f"no kept file {recovery_id} in the recovery area")


def _recovery(conn: Connection, recovery_id: int) -> RecoveryRecord:
    row = conn.execute(select(recoveries).where(recoveries.c.id == recovery_id)).first()
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


async def _translated(pending: Awaitable[T]) -> T:
    try:
        return await pending
    except SQLAlchemyError as exc:
        raise CatalogError.of(exc) from exc


def _translate(exc: Exception) -> Exception:
    """What a caller hears of a failure: a driver's becomes CatalogError."""
    if isinstance(exc, SQLAlchemyError):
        error = CatalogError.of(exc)
        error.__cause__ = exc
        return error
    return exc
