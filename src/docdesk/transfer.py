"""Transfer: copy a docdesk install into another catalog and blob store.

The usual move is from the embedded defaults (SQLite and files in the data
dir) up to PostgreSQL and S3, once one machine is not enough. Every table of
the catalog and every blob it names is copied, with primary keys kept, and
the copy is checked before the transfer says it is done:

1. Check: the source must be a current docdesk catalog with no table
   unknown here; a target catalog that is behind is migrated, so that it
   is compared in today's shape.
2. Plan, reading only: every row of the source is looked up in the target by
   its primary key, every blob the source names is looked up in the target
   store and, if there, read back and hashed. A row or blob that differs
   refuses the whole transfer before anything is written.
3. Migrate the target database, if it is new.
4. Copy the blobs the target lacks, each read back and hashed after its
   commit. Blobs go first, so no row in the target ever names a blob that
   is not there.
5. Copy the rows the target lacks, every table in one transaction, and
   advance PostgreSQL's sequences past the copied ids.
6. Verify: row counts and row contents of every table, source against target.

Running it again is safe: what the target holds already is checked and
skipped, so a second run copies nothing, and a run that was interrupted
finishes the work. The source is opened read-only and never written.

Tables are taken from the catalog's metadata; each needs an entry in
:data:`docdesk.catalog.tables.BLOB_COLUMNS` saying which of its columns name
blobs, so a table added later stops the transfer instead of being skipped or
copied without its blobs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit
from urllib.request import url2pathname

from alembic.script.revision import RevisionError
from sqlalchemy import (
    MetaData,
    Table,
    create_engine,
    func,
    insert,
    inspect,
    select,
    tuple_,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from docdesk.catalog import Catalog, migrations
from docdesk.catalog.tables import BLOB_COLUMNS, BlobColumn
from docdesk.catalog.tables import metadata as catalog_metadata
from docdesk.errors import (
    ConfigurationError,
    DocdeskError,
    NotFound,
    StorageError,
    TransferConflict,
    TransferError,
)
from docdesk.storage import BlobStore, open_store

__all__ = [
    "BLOB_COLUMNS",
    "BlobColumn",
    "BlobOutcome",
    "TableCount",
    "TransferReport",
    "transfer",
]

logger = logging.getLogger(__name__)

# Rows read, compared and inserted at a time: well under SQLite's limit on
# bound parameters, and few round trips to PostgreSQL.
BATCH = 500
READ_CHUNK = 1_048_576
# Tables the catalog's database holds beside the metadata's.
BOOKKEEPING = frozenset({"alembic_version"})
NOT_A_COPY = "it is not a copy of this install. Refused; nothing was written"


@dataclass
class TableCount:
    """Rows of one table: in the source, already in the target, copied.

    In a dry run ``copied`` counts the rows that would be.
    """

    name: str
    source: int = 0
    present: int = 0
    copied: int = 0


@dataclass(frozen=True)
class BlobOutcome:
    """One blob settled: copied by this run, or found whole in the target."""

    name: str
    size: int
    copied: bool


@dataclass
class TransferReport:
    """What a transfer found, copied and verified.

    In a dry run the ``copied`` counts are what would be copied.
    """

    dry_run: bool
    tables: list[TableCount] = field(default_factory=list)
    blobs: int = 0
    blobs_copied: int = 0
    blobs_present: int = 0
    bytes_total: int = 0
    bytes_copied: int = 0
    migrated: list[str] = field(default_factory=list)

    @property
    def rows_copied(self) -> int:
        return sum(table.copied for table in self.tables)

    @property
    def copied_nothing(self) -> bool:
        """Whether the target held everything already."""
        return self.rows_copied == 0 and self.blobs_copied == 0


@dataclass(frozen=True)
class _BlobRef:
    """A blob the source names, with what the first row naming it records."""

    name: str
    sha256: str | None
    size: int | None
    named_by: str


@dataclass
class _Plan:
    # The catalog's tables, each after those its rows refer to.
    order: list[Table]
    tables: dict[str, TableCount]
    blobs: dict[str, _BlobRef]
    # Each blob's size in the source store.
    sizes: dict[str, int]
    # Blobs read back from the target store this run and found whole.
    verified: set[str]
    # Blobs the target store lacks, to copy.
    missing: list[_BlobRef]


BlobHook = Callable[[BlobOutcome], None]
StepHook = Callable[[str], None]


async def transfer(
    *,
    from_database: str,
    from_storage: str,
    to_database: str,
    to_storage: str,
    dry_run: bool = False,
    on_blob: BlobHook | None = None,
    on_step: StepHook | None = None,
    metadata: MetaData = catalog_metadata,
) -> TransferReport:
    """Copy the catalog at ``from_database`` and the blobs at ``from_storage``.

    The targets are a SQLAlchemy async URL and a ``DOCDESK_STORAGE_URL``.
    ``on_blob`` hears of each blob once it is settled, copied or found whole
    in the target; an exception it raises stops the transfer there, as an
    interruption would, and the next run carries on. ``on_step`` hears the
    name of each step as it starts. ``dry_run`` only plans, reporting what
    would be copied and writing nothing anywhere. ``metadata`` is the
    catalog's tables; each must have its entry in BLOB_COLUMNS.

    Raises TransferConflict, having written nothing, when the target holds
    other rows or blobs under the source's ids; TransferError when source
    and target are the same, the source is incomplete, it changed during
    the transfer or the copy does not verify; ConfigurationError for a URL
    docdesk cannot open.
    """
    _check_tables(metadata)
    _check_distinct(from_database, to_database, from_storage, to_storage)
    step = on_step or _ignore
    report = TransferReport(dry_run=dry_run)

    try:
        async with AsyncExitStack() as stack:
            source, target = (from_database, from_storage), (to_database, to_storage)
            ends = _Ends.open(stack, source, target)
            step("checking the source and the target")
            await _check_source(ends.source, metadata)
            pending = await _check_target(ends, report, step)

            step("comparing the source with the target")
            plan = await _plan(ends, metadata, on_blob)
            _report_plan(report, plan)
            if dry_run:
                return report

            await _copy(stack, ends, plan, report, pending, step, on_blob)
            step("verifying rows")
            await _verify_rows(ends, metadata)
    except SQLAlchemyError as exc:
        # The driver's message may quote rows: name the kind of failure only.
        raise TransferError(
            f"a database failed ({type(exc).__name__}): check that both are "
            "reachable and the target exists"
        ) from exc

    logger.info(
        "transfer done rows=%d blobs_copied=%d blobs_present=%d bytes=%d",
        report.rows_copied,
        report.blobs_copied,
        report.blobs_present,
        report.bytes_copied,
    )
    return report


@dataclass
class _Ends:
    """Both ends of a transfer, opened: the source read-only.

    ``target_store`` stays None until the copy goes ahead when its folder is
    not there yet: opening a local store makes its folder, which neither a
    dry run nor a refused transfer may do.
    """

    source: AsyncEngine
    source_store: BlobStore
    target: Catalog
    target_url: str
    target_store: BlobStore | None
    target_storage: str

    @classmethod
    def open(
        cls, stack: AsyncExitStack, source: tuple[str, str], target: tuple[str, str]
    ) -> _Ends:
        """Open both (database, storage) pairs, closed when ``stack`` closes."""
        engine = _read_only_engine(source[0])
        stack.push_async_callback(engine.dispose)
        source_store = _open_source_store(source[1])
        stack.push_async_callback(source_store.close)
        catalog = _open_target(target[0])
        stack.push_async_callback(catalog.close)
        target_store = _existing_target_store(target[1])
        if target_store is not None:
            stack.push_async_callback(target_store.close)
        return cls(engine, source_store, catalog, target[0], target_store, target[1])


async def _check_target(
    ends: _Ends, report: TransferReport, step: StepHook
) -> list[str]:
    """Note the migrations the target lacks; returns those still to apply.

    An older docdesk catalog is migrated at once, so that it is compared in
    today's shape; an empty database only once the copy goes ahead.
    """
    tables = await _target_tables(ends)
    report.migrated = await _pending(ends.target, tables)
    if not report.migrated or not tables & BOOKKEEPING:
        return list(report.migrated)

    if report.dry_run:
        raise TransferError(
            f"the target catalog is behind by {len(report.migrated)} "
            "migration(s), which a dry run does not apply: run `docdesk "
            "migrate` for it first"
        )
    step("migrating the target database")
    await _migrate(ends.target)
    return []


async def _copy(
    stack: AsyncExitStack,
    ends: _Ends,
    plan: _Plan,
    report: TransferReport,
    pending: list[str],
    step: StepHook,
    on_blob: BlobHook | None,
) -> None:
    """Migrate the target, then copy blobs, then the rows that name them."""
    if ends.target_store is None:
        ends.target_store = _open_target_store(ends.target_storage)
        stack.push_async_callback(ends.target_store.close)
    if pending:
        step("migrating the target database")
        _make_sqlite_folder(ends.target_url)
        await _migrate(ends.target)

    step("copying blobs")
    await _copy_blobs(ends.source_store, ends.target_store, plan, report, on_blob)
    step("copying rows")
    await _copy_rows(ends, plan, report)


# Refusals before anything is opened


def _check_tables(metadata: MetaData) -> None:
    """Every table must have a plan, a primary key and its blob columns."""
    for table in metadata.sorted_tables:
        plan = BLOB_COLUMNS.get(table.name)
        if plan is None:
            raise TransferError(
                f"the catalog has a table {table.name!r} the transfer does not "
                "know how to copy: list its blob columns in "
                "docdesk.catalog.tables.BLOB_COLUMNS"
            )
        if not table.primary_key.columns:
            raise TransferError(
                f"table {table.name!r} has no primary key: the transfer could "
                "not tell copied rows from new ones"
            )
        for blob in plan:
            for column in (blob.name, blob.sha256, blob.size):
                if column is not None and column not in table.columns:
                    raise TransferError(
                        f"docdesk.catalog.tables.BLOB_COLUMNS names a column "
                        f"{table.name}.{column} that the catalog does not have"
                    )


def _check_distinct(
    from_database: str, to_database: str, from_storage: str, to_storage: str
) -> None:
    if _same_database(from_database, to_database):
        raise TransferError(
            "the target database is the source database: give --to-database another one"
        )
    if _same_storage(from_storage, to_storage):
        raise TransferError(
            "the target storage is, or overlaps, the source storage: give "
            "--to-storage another place"
        )


def _same_database(first: str, second: str) -> bool:
    a, b = _database_identity(first), _database_identity(second)
    return a is not None and a == b


def _database_identity(url: str) -> tuple[str, ...] | None:
    """What names one database whatever the driver: a file, or host and name."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise TransferError("a database URL is not one docdesk can read") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(url)
        return None if path is None else (backend, str(path.resolve()))
    default_port = {"postgresql": 5432, "mysql": 3306}.get(backend, 0)
    return (
        backend,
        (parsed.host or "localhost").lower(),
        str(parsed.port or default_port),
        parsed.database or "",
    )


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database.removeprefix("file:"))


def _same_storage(first: str, second: str) -> bool:
    a, b = urlsplit(first), urlsplit(second)
    if a.scheme != b.scheme:
        return False
    if a.scheme == "file":
        one, other = _file_root(first).resolve(), _file_root(second).resolve()
        return one == other or one in other.parents or other in one.parents
    if a.scheme == "s3":
        return _s3_place(a) == _s3_place(b) and _overlap(
            a.path.strip("/"), b.path.strip("/")
        )
    return first == second


def _s3_place(parts: SplitResult) -> tuple[str, str]:
    endpoint = dict(parse_qsl(parts.query)).get("endpoint", "")
    return parts.netloc, endpoint.rstrip("/")


def _overlap(prefix: str, other: str) -> bool:
    """Whether one prefix holds the other, "" holding everything."""
    one, two = prefix + "/", other + "/"
    return not prefix or not other or one.startswith(two) or two.startswith(one)


def _file_root(url: str) -> Path:
    return Path(url2pathname(urlsplit(url).path))


# Opening the four ends


def _read_only_engine(url: str) -> AsyncEngine:
    """The source's engine, unable to write: SQLite opened read-only.

    A missing SQLite file is refused rather than created.
    """
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(url)
        if path is None or not path.is_file():
            raise TransferError(
                f"no catalog at {path}: set DOCDESK_DATA_DIR or "
                "DOCDESK_DATABASE_URL to the install to copy"
            )
        location = quote(str(path.resolve()))
        return create_async_engine(
            f"sqlite+aiosqlite:///file:{location}?mode=ro&uri=true"
        )
    try:
        engine = create_async_engine(url)
    except (ArgumentError, ImportError):
        raise ConfigurationError(
            "the source database URL is not one docdesk can open"
        ) from None
    if backend == "postgresql":
        return engine.execution_options(postgresql_readonly=True)
    return engine


def _open_target(url: str) -> Catalog:
    try:
        return Catalog.from_url(url)
    except ConfigurationError:
        raise ConfigurationError(
            "the target database URL is not one docdesk can open: give a "
            "SQLAlchemy URL such as postgresql+psycopg://host/docdesk"
        ) from None


def _open_source_store(url: str) -> BlobStore:
    if urlsplit(url).scheme == "file" and not _file_root(url).is_dir():
        raise TransferError(
            f"no blob store at {_file_root(url)}: set DOCDESK_DATA_DIR or "
            "DOCDESK_STORAGE_URL to the install to copy"
        )
    return open_store(url)


def _existing_target_store(url: str) -> BlobStore | None:
    """The target store, or None for a folder that is not there yet.

    Opening a local store makes its folder: only a copy that goes ahead may
    do that, not a dry run nor one that is about to be refused.
    """
    if urlsplit(url).scheme == "file" and not _file_root(url).exists():
        return None
    return _open_target_store(url)


def _open_target_store(url: str) -> BlobStore:
    try:
        return open_store(url)
    except ConfigurationError as exc:
        # The message names the setting; here the URL came from --to-storage.
        message = exc.message.replace("DOCDESK_STORAGE_URL", "the target storage URL")
        raise ConfigurationError(message) from None


# Checking the two catalogs


async def _check_source(engine: AsyncEngine, metadata: MetaData) -> None:
    """The source must be a current docdesk catalog with no table unknown here."""
    try:
        async with engine.connect() as conn:
            columns, pending = await conn.run_sync(_describe)
    except RevisionError:
        raise TransferError(
            "the source catalog was migrated by a newer docdesk: transfer it "
            "with that version"
        ) from None

    known = {table.name for table in metadata.sorted_tables}
    if not known & set(columns):
        raise TransferError("the source database holds no docdesk catalog")
    if pending:
        raise TransferError(
            f"the source catalog is behind by {len(pending)} migration(s): start "
            "docdesk on it once, or run `docdesk migrate` with its settings"
        )
    for name, names in columns.items():
        if name in BOOKKEEPING or name.startswith("sqlite_"):
            continue
        table = metadata.tables.get(name)
        if table is None:
            raise TransferError(
                f"the source catalog has a table {name!r} the transfer does not "
                "know how to copy: is it from a newer docdesk?"
            )
        if set(names) != set(table.columns.keys()):
            raise TransferError(
                f"the source table {name!r} has other columns than this docdesk "
                "knows: is it from another docdesk version?"
            )


def _describe(connection: Connection) -> tuple[dict[str, list[str]], list[str]]:
    inspector = inspect(connection)
    columns = {
        name: [column["name"] for column in inspector.get_columns(name)]
        for name in inspector.get_table_names()
    }
    return columns, migrations.pending(connection)


async def _target_tables(ends: _Ends) -> frozenset[str]:
    """The target's table names; a SQLite file not there yet is not made."""
    if ends.target.engine.dialect.name == "sqlite":
        path = _sqlite_path(ends.target_url)
        if path is None or not path.exists():
            return frozenset()
    async with ends.target.engine.connect() as conn:
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    return frozenset(names)


async def _pending(target: Catalog, tables: frozenset[str]) -> list[str]:
    """The revisions the target lacks; all of them for an empty database."""
    if not tables & BOOKKEEPING:
        return _all_revisions()
    try:
        return await target.pending_migrations()
    except (DocdeskError, RevisionError) as exc:
        raise TransferError(
            "cannot read the target's migrations: was it migrated by a newer "
            "docdesk, or does it belong to another application?"
        ) from exc


def _all_revisions() -> list[str]:
    """Every revision, as an empty database lacks them all."""
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            return migrations.pending(conn)
    finally:
        engine.dispose()


def _make_sqlite_folder(url: str) -> None:
    """A new SQLite target's folder, as ``docdesk migrate`` makes the data dir."""
    path = _sqlite_path(url)
    if make_url(url).get_backend_name() == "sqlite" and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


async def _migrate(target: Catalog) -> None:
    try:
        await target.migrate()
    except DocdeskError as exc:
        raise TransferError(
            f"cannot migrate the target database ({exc.message}): does it "
            "belong to another application?"
        ) from exc


# The plan: what the target lacks, checked before anything is written


async def _plan(ends: _Ends, metadata: MetaData, on_blob: BlobHook | None) -> _Plan:
    """Compare every table and blob; refuse what the target holds otherwise."""
    plan = _Plan(metadata.sorted_tables, {}, {}, {}, set(), [])
    target_tables = await _target_tables(ends)
    async with AsyncExitStack() as stack:
        source = await stack.enter_async_context(ends.source.connect())
        target = None
        if target_tables:
            target = await stack.enter_async_context(ends.target.engine.connect())
        for table in plan.order:
            there = target if table.name in target_tables else None
            plan.tables[table.name] = await _plan_table(source, there, table, plan)
    # Reported in the order the catalog defines its tables, documents first.
    plan.tables = {name: plan.tables[name] for name in metadata.tables}

    for ref in sorted(plan.blobs.values(), key=lambda ref: ref.name):
        await _plan_blob(ends.source_store, ends.target_store, ref, plan, on_blob)
    return plan


async def _plan_table(
    source: AsyncConnection,
    target: AsyncConnection | None,
    table: Table,
    plan: _Plan,
) -> TableCount:
    """Count what the target lacks of ``table``; refuse what it holds otherwise."""
    count = TableCount(table.name)
    async for rows in _batches(source, table):
        count.source += len(rows)
        _collect_blobs(table, rows, plan.blobs)
        try:
            missing = rows if target is None else await _missing(target, table, rows)
        except TransferConflict as exc:
            raise TransferConflict(f"{exc.message}: {NOT_A_COPY}") from None
        count.copied += len(missing)
    count.present = count.source - count.copied

    held = 0 if target is None else await _count(target, table)
    if held > count.present:
        raise TransferConflict(
            f"the target's table {table.name} holds {held - count.present} "
            f"row(s) the source does not have: {NOT_A_COPY}"
        )
    return count


def _collect_blobs(
    table: Table, rows: list[dict[str, Any]], blobs: dict[str, _BlobRef]
) -> None:
    for row in rows:
        for column in BLOB_COLUMNS[table.name]:
            name = row[column.name]
            if name is None:
                continue
            ref = _BlobRef(
                name=name,
                sha256=None if column.sha256 is None else row[column.sha256],
                size=None if column.size is None else row[column.size],
                named_by=f"{table.name} {_shown_key(table, row)}",
            )
            known = blobs.setdefault(name, ref)
            # Restored versions share a blob: their records must agree.
            if ref.sha256 is not None and known.sha256 is None:
                blobs[name] = ref
            elif ref.sha256 not in (None, known.sha256):
                raise TransferError(
                    f"the source catalog records two checksums for blob {name} "
                    f"({known.named_by} and {ref.named_by}): fix the source first"
                )


async def _plan_blob(
    source_store: BlobStore,
    target_store: BlobStore | None,
    ref: _BlobRef,
    plan: _Plan,
    on_blob: BlobHook | None,
) -> None:
    """Size the source blob; hash the target's, if it has one, and compare."""
    size = await _source_size(source_store, ref)
    plan.sizes[ref.name] = size
    if target_store is None or not await _exists(target_store, ref.name):
        plan.missing.append(ref)
        return

    await _check_target_blob(source_store, target_store, ref, size)
    plan.verified.add(ref.name)
    if on_blob is not None:
        on_blob(BlobOutcome(ref.name, size, copied=False))


async def _source_size(store: BlobStore, ref: _BlobRef) -> int:
    try:
        size = await store.size(ref.name)
    except NotFound:
        raise TransferError(
            f"the source store has no blob {ref.name}, which {ref.named_by} "
            "names: the source is incomplete; nothing was written"
        ) from None
    if ref.size is not None and size != ref.size:
        raise TransferError(
            f"the source blob {ref.name} has {size} bytes where {ref.named_by} "
            f"records {ref.size}: it is damaged; nothing was written"
        )
    return size


async def _exists(store: BlobStore, name: str) -> bool:
    try:
        await store.size(name)
    except NotFound:
        return False
    return True


async def _check_target_blob(
    source_store: BlobStore, target_store: BlobStore, ref: _BlobRef, size: int
) -> None:
    """A blob already in the target must be the source's, byte for byte.

    It is read back whole and hashed against the recorded checksum, or
    against the source's bytes where the catalog records none.
    """
    expected = ref.sha256
    if expected is None:
        expected = (await _sha256(source_store, ref.name))[1]
    found = await _sha256(target_store, ref.name)
    if found != (size, expected):
        raise TransferConflict(
            f"the target store holds a different blob under {ref.name} "
            f"({found[0]} bytes, sha256 {found[1][:12]}... where the source's "
            f"has {size} bytes, sha256 {expected[:12]}...): {NOT_A_COPY}"
        )


def _report_plan(report: TransferReport, plan: _Plan) -> None:
    report.tables = list(plan.tables.values())
    report.blobs = len(plan.blobs)
    report.blobs_present = len(plan.verified)
    report.bytes_total = sum(plan.sizes.values())
    # A dry run reports what would be copied; a real run counts as it goes.
    if report.dry_run:
        report.blobs_copied = len(plan.missing)
        report.bytes_copied = sum(plan.sizes[ref.name] for ref in plan.missing)


# Copying


async def _copy_blobs(
    source_store: BlobStore,
    target_store: BlobStore,
    plan: _Plan,
    report: TransferReport,
    on_blob: BlobHook | None,
) -> None:
    """Copy each blob the target lacks, then read it back and hash it."""
    for ref in plan.missing:
        size = plan.sizes[ref.name]
        copied = await _copy_blob(source_store, target_store, ref, size)
        plan.verified.add(ref.name)
        if copied:
            report.blobs_copied += 1
            report.bytes_copied += size
        else:
            report.blobs_present += 1
        logger.debug("blob settled name=%s bytes=%d copied=%s", ref.name, size, copied)
        if on_blob is not None:
            on_blob(BlobOutcome(ref.name, size, copied=copied))


async def _copy_blob(
    source_store: BlobStore, target_store: BlobStore, ref: _BlobRef, size: int
) -> bool:
    """Stream one blob across; False if it appeared in the target meanwhile."""
    async with target_store.create() as writer:
        chunks = source_store.read(ref.name, chunk_size=READ_CHUNK)
        try:
            async for chunk in chunks:
                await writer.write(chunk)
        finally:
            await _close(chunks)
        digest = writer.digest
        if ref.sha256 not in (None, digest.sha256) or digest.size != size:
            raise TransferError(
                f"the source blob {ref.name} does not match what {ref.named_by} "
                "records: it is damaged, and was not copied"
            )
        try:
            await writer.commit(ref.name)
        except FileExistsError:
            # Another run got there first: it must have written the same.
            try:
                await _check_target_blob(source_store, target_store, ref, size)
            except TransferConflict:
                raise TransferError(
                    f"something else wrote a different blob under {ref.name} "
                    "during the transfer: stop it and run again"
                ) from None
            return False

    found = await _sha256(target_store, ref.name)
    if found != (digest.size, digest.sha256):
        # The store kept something other than what it was given.
        await target_store.delete(ref.name)
        raise StorageError(
            f"the target store gave back other bytes for blob {ref.name} than "
            "were written: removed it; check the store and run again"
        )
    return True


async def _copy_rows(ends: _Ends, plan: _Plan, report: TransferReport) -> None:
    """Insert the rows the target lacks, every table in one transaction.

    The target either gets every row or none: an interrupted run leaves it
    as it was, and the next run copies them all.
    """
    tables = ends.target.engine.begin()
    async with ends.source.connect() as source, tables as conn:
        for table in plan.order:
            count = plan.tables[table.name]
            count.copied = 0
            async for rows in _batches(source, table):
                try:
                    missing = await _missing(conn, table, rows)
                except TransferConflict as exc:
                    raise TransferError(
                        f"the target changed during the transfer: {exc.message}; "
                        "no row was written"
                    ) from None
                _check_blobs_copied(table, missing, plan.verified)
                if missing:
                    await conn.execute(insert(table), missing)
                count.copied += len(missing)
        if conn.dialect.name == "postgresql":
            await _advance_sequences(conn, plan.order)
    report.tables = list(plan.tables.values())


def _check_blobs_copied(
    table: Table, rows: list[dict[str, Any]], verified: set[str]
) -> None:
    """A row may go in only once every blob it names is in the target."""
    for row in rows:
        for column in BLOB_COLUMNS[table.name]:
            name = row[column.name]
            if name is not None and name not in verified:
                raise TransferError(
                    f"the source changed during the transfer: {table.name} "
                    f"{_shown_key(table, row)} names blob {name}, which was not "
                    "there when the transfer began. Stop docdesk on the source "
                    "and run the transfer again"
                )


async def _advance_sequences(conn: AsyncConnection, tables: list[Table]) -> None:
    """Move each id sequence past the copied ids, so new rows don't collide."""
    for table in tables:
        column = table.autoincrement_column
        if column is None:
            continue
        sequence = await conn.scalar(
            select(func.pg_get_serial_sequence(table.name, column.name))
        )
        if sequence is None:
            continue
        # setval is strict: on an empty table the NULL maximum does nothing.
        highest = select(func.max(column)).scalar_subquery()
        await conn.execute(select(func.setval(sequence, highest)))


# Verifying


async def _verify_rows(ends: _Ends, metadata: MetaData) -> None:
    """Every table: the same count, and every source row in the target, equal."""
    tables = ends.target.engine.connect()
    async with ends.source.connect() as source, tables as conn:
        for table in metadata.sorted_tables:
            counted = 0
            async for rows in _batches(source, table):
                try:
                    missing = await _missing(conn, table, rows)
                except TransferConflict as exc:
                    raise TransferError(
                        f"the copy does not verify: {exc.message}"
                    ) from None
                if missing:
                    raise TransferError(
                        f"the copy does not verify: {len(missing)} row(s) of "
                        f"{table.name} are not in the target"
                    )
                counted += len(rows)
            held = await _count(conn, table)
            if held != counted:
                raise TransferError(
                    f"the copy does not verify: the target's {table.name} has "
                    f"{held} row(s), the source's {counted}"
                )


# Rows


async def _batches(
    conn: AsyncConnection, table: Table
) -> AsyncIterator[list[dict[str, Any]]]:
    """The table's rows in primary-key order, BATCH at a time, as plain values.

    Paged by key rather than by offset, so each page is one index lookup.
    """
    key = list(table.primary_key.columns)
    last: tuple[Any, ...] | None = None
    while True:
        query = select(table).order_by(*key).limit(BATCH)
        if last is not None:
            query = query.where(tuple_(*key) > tuple_(*last))
        result = await conn.execute(query)
        rows = [_plain(row) for row in result.mappings()]
        if not rows:
            return
        yield rows
        last = _key(table, rows[-1])


async def _missing(
    conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rows the target lacks.

    Raises TransferConflict, saying which columns differ but not their
    values, for a row the target holds with other values.
    """
    key = list(table.primary_key.columns)
    wanted = [_key(table, row) for row in rows]
    query = select(table).where(tuple_(*key).in_(wanted))
    found = {
        _key(table, row): row
        for row in (
            _plain(mapping) for mapping in (await conn.execute(query)).mappings()
        )
    }

    missing = []
    for row in rows:
        there = found.get(_key(table, row))
        if there is None:
            missing.append(row)
            continue
        differing = [name for name, value in row.items() if there[name] != value]
        if differing:
            raise TransferConflict(
                f"the target's {table.name} {_shown_key(table, row)} holds "
                f"different data ({', '.join(differing)})"
            )
    return missing


async def _count(conn: AsyncConnection, table: Table) -> int:
    return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row's values as both databases agree on them.

    SQLite hands back naive times; every time docdesk stores is UTC, and
    PostgreSQL must be given them with their zone.
    """
    return {str(name): _utc(value) for name, value in row.items()}


def _utc(value: Any) -> Any:
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _key(table: Table, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[column.name] for column in table.primary_key.columns)


def _shown_key(table: Table, row: Mapping[str, Any]) -> str:
    """``id=...`` for messages; long values (tokens, fingerprints) shortened."""
    shown = []
    for column in table.primary_key.columns:
        value = str(row[column.name])
        if len(value) > 16:
            value = value[:8] + "..."
        shown.append(f"{column.name}={value}")
    return " ".join(shown)


# Blobs


async def _sha256(store: BlobStore, name: str) -> tuple[int, str]:
    """Read a blob whole: its size and sha256."""
    digest, size = hashlib.sha256(), 0
    chunks = store.read(name, chunk_size=READ_CHUNK)
    try:
        async for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
    finally:
        await _close(chunks)
    return size, digest.hexdigest()


async def _close(chunks: AsyncIterator[bytes]) -> None:
    """Release a blob's stream at once, if it can be closed."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


def _ignore(_: str) -> None:
    pass
