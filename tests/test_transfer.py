"""docdesk transfer: an embedded install copied up to PostgreSQL and S3.

The source is a real install: docdesk served over HTTP with its simulator,
real Office files uploaded, edited, force-saved, captured, saved with their
changes, restored and kept aside from a corrupted save, then more versions
added through the library. Each test copies it and transfers the copy, then
opens the target with DocDesk and reads every version back.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from catalogs import empty_catalog
from docdesk.catalog import Catalog, RecoveryRecord
from docdesk.catalog.tables import metadata
from docdesk.cli import main
from docdesk.desk import DocDesk
from docdesk.errors import ConfigurationError, TransferConflict, TransferError
from docdesk.settings import SIMULATOR_PATH, Settings
from docdesk.storage import open_store
from docdesk.testing import ControlClient, fast_settings, serve_app_at
from docdesk.transfer import BlobOutcome, TransferReport, transfer
from docdesk.web import create_app
from integration.office import make_docx, make_xlsx, padded_docx
from tally import record

pytestmark = pytest.mark.anyio

# Over the S3 store's one-PUT limit, so the large path is copied too.
LARGE = 9 * 1024 * 1024


@dataclass(frozen=True)
class Install:
    """Where an install keeps its catalog and its blobs."""

    database: str
    storage: str
    # Set for the embedded defaults, which name the other two.
    data_dir: Path | None = None

    @classmethod
    def embedded(cls, data_dir: Path) -> Install:
        settings = Settings.from_env({"DOCDESK_DATA_DIR": str(data_dir)})
        return cls(
            settings.resolved_database_url, settings.resolved_storage_url, data_dir
        )

    def settings(self) -> Settings:
        if self.data_dir is not None:
            return Settings.from_env({"DOCDESK_DATA_DIR": str(self.data_dir)})
        return Settings.from_env(
            {"DOCDESK_DATABASE_URL": self.database, "DOCDESK_STORAGE_URL": self.storage}
        )


# The source install, made once


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded install's data dir, with a row in every table."""
    data_dir = tmp_path_factory.mktemp("source") / "data"
    _serve_and_edit(data_dir)
    anyio.run(_work_through_the_library, data_dir)
    return data_dir


def _serve_and_edit(data_dir: Path) -> None:
    """Uploads, edits, a force save, a capture, a save, a restore, a failed save."""

    def make_app(url: str) -> Any:
        settings = Settings.from_env(
            {"DOCDESK_DATA_DIR": str(data_dir), "DOCDESK_PUBLIC_URL": url}
        )
        simulator = fast_settings(secret=settings.jwt_secret)
        return create_app(settings, simulator_settings=simulator)

    with (
        serve_app_at(make_app) as running,
        httpx.Client(base_url=running.url, timeout=30) as api,
        ControlClient(running.url + SIMULATOR_PATH) as control,
    ):
        report = _upload(api, "Report.docx", make_docx("first draft"))
        sheet = _upload(api, "Budget.xlsx", make_xlsx("first figures"))

        editor = _open(api, control, report)
        control.edit(editor, "second draft")
        assert control.save(editor)
        control.wait_for_callback(6)
        control.edit(editor, "third draft")
        control.close(editor)
        control.wait_for_callback(2)

        editor = _open(api, control, sheet)
        control.edit(editor, "second figures")
        captured = api.post(f"/api/documents/{sheet}/capture")
        assert captured.status_code == 200, captured.text
        control.close(editor)

        restored = api.post(f"/api/documents/{report}/versions/1/restore")
        assert restored.status_code == 201, restored.text

        control.faults(assembly="corrupt")
        editor = _open(api, control, report)
        control.edit(editor, "best effort")
        control.close(editor)
        control.wait_for_callback(3)


def _upload(api: httpx.Client, name: str, content: bytes) -> str:
    response = api.post("/api/documents", files={"file": (name, content)})
    assert response.status_code == 201, response.text
    document_id: str = response.json()["id"]
    return document_id


def _open(api: httpx.Client, control: ControlClient, document_id: str) -> str:
    config = api.get(
        f"/api/documents/{document_id}/editor-config",
        params={"user_id": "ann", "user_name": "Ann"},
    ).json()
    return control.open(config)


async def _work_through_the_library(data_dir: Path) -> None:
    """A large version, a second document and a kept file, through DocDesk."""
    desk = await DocDesk.open(Settings.from_env({"DOCDESK_DATA_DIR": str(data_dir)}))
    try:
        documents = await desk.documents()
        report = next(d for d in documents if d.title == "Report.docx")
        await desk.add_version(report.id, _once(padded_docx("large", LARGE)))
        await desk.upload("Notes.docx", _once(make_docx("notes")))
    finally:
        await desk.close()


async def _once(content: bytes) -> AsyncIterator[bytes]:
    yield content


@pytest.fixture
def source(built: Path, tmp_path: Path) -> Install:
    """A copy of the built install, this test's own."""
    data_dir = tmp_path / "source"
    shutil.copytree(built, data_dir)
    return Install.embedded(data_dir)


async def another_install(data_dir: Path) -> Install:
    """An embedded install with one document of its own."""
    other = Install.embedded(data_dir)
    desk = await DocDesk.open(other.settings())
    try:
        await desk.upload("Theirs.docx", _once(make_docx("theirs")))
    finally:
        await desk.close()
    return other


async def all_revisions() -> list[str]:
    """What an empty database lacks: every migration docdesk has."""
    catalog = Catalog.from_url("sqlite+aiosqlite://")
    try:
        return await catalog.pending_migrations()
    finally:
        await catalog.close()


# Targets


@pytest.fixture
async def postgres_target(postgres_url: str) -> AsyncIterator[str]:
    """The session's PostgreSQL database with no docdesk tables at all.

    Left migrated and empty after, as the other suites expect it.
    """
    await _drop_catalog(postgres_url)
    yield postgres_url
    await empty_catalog(postgres_url)


async def _drop_catalog(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for name in [t.name for t in metadata.sorted_tables] + ["alembic_version"]:
                await conn.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    finally:
        await engine.dispose()


@pytest.fixture(params=["files", "s3"])
def target_storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh blob store: a folder, or a prefix in SeaweedFS's bucket."""
    if request.param == "files":
        return (tmp_path / "target-blobs").as_uri()
    url: str = request.getfixturevalue("s3_storage_url")
    try:
        open_store(url)
    except ConfigurationError as exc:
        pytest.skip(f"the S3 blob store is not there yet: {exc.message}")
    return url


@pytest.fixture
def sqlite_target(tmp_path: Path) -> Install:
    """A target on the embedded kind of storage, for the quick tests."""
    return Install(
        f"sqlite+aiosqlite:///{tmp_path / 'target.sqlite3'}",
        (tmp_path / "target-blobs").as_uri(),
    )


async def run(source: Install, target: Install, **options: Any) -> TransferReport:
    return await transfer(
        from_database=source.database,
        from_storage=source.storage,
        to_database=target.database,
        to_storage=target.storage,
        **options,
    )


# What an install holds, read independently of the transfer


async def rows(database: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, in key order, times in UTC."""
    engine = create_async_engine(database)
    try:
        async with engine.connect() as conn:
            held = {}
            for table in metadata.sorted_tables:
                query = select(table).order_by(*table.primary_key.columns)
                result = await conn.execute(query)
                held[table.name] = [_utc(dict(row)) for row in result.mappings()]
            return held
    finally:
        await engine.dispose()


def _utc(row: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value.replace(tzinfo=UTC)
        if isinstance(value, datetime) and value.tzinfo is None
        else value
        for name, value in row.items()
    }


async def contents(install: Install) -> dict[tuple[str, int], bytes]:
    """Every version's bytes, read through DocDesk, each checked by sha256."""
    desk = await DocDesk.open(install.settings())
    try:
        found = {}
        for document in await desk.documents():
            for version in await desk.versions(document.id):
                data = b"".join([chunk async for chunk in desk.read(version)])
                assert hashlib.sha256(data).hexdigest() == version.sha256
                found[document.id, version.number] = data
        for kept in await desk.catalog.recoveries():
            data = b"".join([chunk async for chunk in desk.store.read(kept.blob)])
            assert hashlib.sha256(data).hexdigest() == kept.sha256
        return found
    finally:
        await desk.close()


async def blob_names(storage: str) -> list[str]:
    store = open_store(storage)
    try:
        return [name async for name in store.names()]
    finally:
        await store.close()


def fingerprint(data_dir: Path) -> dict[str, str]:
    """The sha256 of the catalog file and of every blob file."""
    files = [data_dir / "docdesk.sqlite3", *sorted((data_dir / "blobs").rglob("*"))]
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in files
        if path.is_file()
    }


# The source itself


async def test_the_source_install_has_a_row_in_every_table(source: Install) -> None:
    held = await rows(source.database)

    assert {name for name, listed in held.items() if not listed} == set()
    changes = [v for v in held["versions"] if v["changes_blob"] is not None]
    assert changes, "a final save brings its changes archive"
    restored = [v for v in held["versions"] if v["restored_from"] is not None]
    assert restored
    assert restored[0]["blob"] in {v["blob"] for v in held["versions"]}


# A full copy


async def test_a_full_copy_to_postgresql_reads_back_every_version(
    source: Install, postgres_target: str, target_storage: str, tmp_path: Path
) -> None:
    target = Install(postgres_target, target_storage)
    before = fingerprint(tmp_path / "source")

    report = await run(source, target)

    assert await rows(target.database) == await rows(source.database)
    assert await contents(target) == await contents(source)
    assert report.migrated == await all_revisions()
    assert report.blobs_copied == report.blobs == len(await blob_names(source.storage))
    assert report.bytes_copied == report.bytes_total > LARGE
    assert all(t.copied == t.source > 0 for t in report.tables)
    assert fingerprint(tmp_path / "source") == before


async def test_the_copy_takes_new_work_without_an_id_colliding(
    source: Install, postgres_target: str, tmp_path: Path
) -> None:
    target = Install(postgres_target, (tmp_path / "target-blobs").as_uri())
    await run(source, target)
    copied = await rows(target.database)

    desk = await DocDesk.open(target.settings())
    try:
        document = await desk.upload("Later.docx", _once(make_docx("later")))
        await desk.add_version(document.id, _once(make_docx("later still")))
        kept = await desk.catalog.add_recovery(
            RecoveryRecord(
                document_id=document.id,
                key=document.key,
                status=3,
                blob=copied["recoveries"][0]["blob"],
                file_type="docx",
                size=copied["recoveries"][0]["size"],
                sha256=copied["recoveries"][0]["sha256"],
                created=datetime.now(UTC),
                reason="a later failed save",
            )
        )
    finally:
        await desk.close()

    highest = max(row["id"] for row in copied["recoveries"])
    assert kept.id == highest + 1
    after = await rows(target.database)
    assert len(after["versions"]) == len(copied["versions"]) + 2


async def test_a_postgresql_install_transfers_back_down_unchanged(
    source: Install, postgres_target: str, tmp_path: Path
) -> None:
    up = Install(postgres_target, (tmp_path / "up-blobs").as_uri())
    down = Install.embedded(tmp_path / "down")
    await run(source, up)

    report = await run(up, down)

    assert report.rows_copied == sum(t.source for t in report.tables)
    assert await rows(down.database) == await rows(source.database)
    assert await contents(down) == await contents(source)


# Running again


async def test_a_second_run_copies_nothing_and_says_so(
    source: Install, sqlite_target: Install
) -> None:
    first = await run(source, sqlite_target)
    held = await rows(sqlite_target.database)

    second = await run(source, sqlite_target)

    assert not first.copied_nothing
    assert second.copied_nothing
    assert second.blobs_present == second.blobs == first.blobs_copied
    assert second.migrated == []
    assert [t.present for t in second.tables] == [t.source for t in first.tables]
    assert await rows(sqlite_target.database) == held


async def test_a_later_run_copies_only_the_new_work(
    source: Install, postgres_target: str, target_storage: str
) -> None:
    target = Install(postgres_target, target_storage)
    await run(source, target)
    desk = await DocDesk.open(source.settings())
    try:
        document = await desk.upload("Added.xlsx", _once(make_xlsx("added")))
    finally:
        await desk.close()

    again = await run(source, target)

    counts = {t.name: t.copied for t in again.tables if t.copied}
    assert counts == {"documents": 1, "versions": 1, "keys": 1}
    assert again.blobs_copied == 1
    assert (document.id, 1) in await contents(target)


class Interrupted(Exception):
    """What the hook raises to stop a transfer, as a kill would."""


def interrupt_after(copies: int) -> Any:
    seen: list[BlobOutcome] = []

    def hook(outcome: BlobOutcome) -> None:
        seen.append(outcome)
        if sum(o.copied for o in seen) >= copies:
            raise Interrupted

    return hook


async def test_a_run_interrupted_after_each_blob_completes_on_the_next(
    source: Install, tmp_path: Path
) -> None:
    expected = await rows(source.database)
    total = len(await blob_names(source.storage))
    held = 0

    for copies in range(1, total + 1):
        target = Install(
            f"sqlite+aiosqlite:///{tmp_path / f'target-{copies}.sqlite3'}",
            (tmp_path / f"blobs-{copies}").as_uri(),
        )
        with pytest.raises(Interrupted):
            await run(source, target, on_blob=interrupt_after(copies))
        halfway = await rows(target.database)
        rerun = await run(source, target)
        if (
            not any(halfway.values())
            and rerun.blobs_present == copies
            and rerun.blobs_copied == total - copies
            and await rows(target.database) == expected
        ):
            held += 1

    record(
        "transfer",
        "a transfer interrupted after any blob completes on the next run",
        tried=total,
        held=held,
        unit="interruption",
        detail="no row was copied before the interruption, every one after",
    )
    assert held == total


async def test_an_interrupted_run_to_postgresql_and_s3_completes(
    source: Install, postgres_target: str, target_storage: str
) -> None:
    target = Install(postgres_target, target_storage)
    with pytest.raises(Interrupted):
        await run(source, target, on_blob=interrupt_after(2))

    rerun = await run(source, target)

    assert (rerun.blobs_present, rerun.blobs_copied) == (2, rerun.blobs - 2)
    assert await contents(target) == await contents(source)


async def test_rows_missing_from_the_target_are_copied_again(
    source: Install, sqlite_target: Install
) -> None:
    await run(source, sqlite_target)
    engine = create_async_engine(sqlite_target.database)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM callbacks WHERE id % 2 = 0"))
        await conn.execute(text("DELETE FROM captures"))
    await engine.dispose()

    rerun = await run(source, sqlite_target)

    counts = {t.name: t.copied for t in rerun.tables if t.copied}
    assert set(counts) == {"callbacks", "captures"}
    assert rerun.blobs_copied == 0
    assert await rows(sqlite_target.database) == await rows(source.database)


# Refusals


async def test_a_target_with_other_data_under_the_same_id_is_refused(
    source: Install, postgres_target: str, tmp_path: Path
) -> None:
    target = Install(postgres_target, (tmp_path / "target-blobs").as_uri())
    await run(source, target)
    engine = create_async_engine(postgres_target)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE documents SET title = 'Mine.docx'"))
    await engine.dispose()
    desk = await DocDesk.open(source.settings())
    try:
        await desk.upload("Unsent.docx", _once(make_docx("unsent")))
    finally:
        await desk.close()
    held, stored = await rows(target.database), await blob_names(target.storage)

    with pytest.raises(TransferConflict, match=r"documents id=\w+ .*\(title\)"):
        await run(source, target)

    assert await rows(target.database) == held
    assert await blob_names(target.storage) == stored


async def test_a_target_from_another_install_is_refused(
    source: Install, tmp_path: Path, sqlite_target: Install
) -> None:
    await run(await another_install(tmp_path / "other"), sqlite_target)
    held = await rows(sqlite_target.database)
    new_folder = tmp_path / "new-blobs"

    with pytest.raises(TransferConflict, match="not have: it is not a copy"):
        await run(source, sqlite_target)
    with pytest.raises(TransferConflict, match="not have: it is not a copy"):
        await run(source, Install(sqlite_target.database, new_folder.as_uri()))

    assert await rows(sqlite_target.database) == held
    assert len(await blob_names(sqlite_target.storage)) == 1
    assert not await anyio.Path(new_folder).exists()


async def test_a_different_blob_under_a_source_name_is_refused_not_overwritten(
    source: Install, postgres_target: str, target_storage: str
) -> None:
    target = Install(postgres_target, target_storage)
    name = (await rows(source.database))["versions"][0]["blob"]
    store = open_store(target.storage)
    async with store.create() as writer:
        await writer.write(make_docx("someone else's"))
        await writer.commit(name)
    await store.close()

    with pytest.raises(TransferConflict, match="a different blob under"):
        await run(source, target)

    assert await blob_names(target.storage) == [name]
    engine = create_async_engine(postgres_target)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    await engine.dispose()
    assert tables == []


async def test_a_damaged_source_blob_stops_the_copy_before_its_rows(
    source: Install, sqlite_target: Install, tmp_path: Path
) -> None:
    version = (await rows(source.database))["versions"][0]
    path = tmp_path / "source" / "blobs" / version["blob"]
    path.chmod(0o640)
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 0xFF
    path.write_bytes(bytes(damaged))

    with pytest.raises(TransferError, match="damaged"):
        await run(source, sqlite_target)

    assert not any((await rows(sqlite_target.database)).values())
    assert version["blob"] not in await blob_names(sqlite_target.storage)


async def test_the_same_place_as_source_and_target_is_refused(
    source: Install, tmp_path: Path
) -> None:
    inside = (tmp_path / "source" / "blobs" / "copy").as_uri()
    elsewhere = (tmp_path / "elsewhere").as_uri()
    other_database = f"sqlite+aiosqlite:///{tmp_path / 'other.sqlite3'}"

    with pytest.raises(TransferError, match="target database is the source"):
        await run(source, Install(source.database, elsewhere))
    with pytest.raises(TransferError, match="overlaps, the source storage"):
        await run(source, Install(other_database, inside))

    assert not (tmp_path / "other.sqlite3").exists()
    assert not (tmp_path / "elsewhere").exists()


async def test_a_catalog_table_with_no_transfer_plan_stops_it(
    source: Install, sqlite_target: Install
) -> None:
    extended = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(extended)
    Table("bookmarks", extended, Column("id", Integer, primary_key=True))

    with pytest.raises(TransferError, match="'bookmarks' the transfer does not"):
        await run(source, sqlite_target, metadata=extended)

    assert not await anyio.Path(sqlite_target.database.split("///")[1]).exists()


async def test_a_source_table_unknown_here_stops_it(
    source: Install, sqlite_target: Install
) -> None:
    engine = create_async_engine(source.database)
    async with engine.begin() as conn:
        await conn.run_sync(
            lambda c: Table(
                "bookmarks", MetaData(), Column("name", String, primary_key=True)
            ).create(c)
        )
    await engine.dispose()

    with pytest.raises(TransferError, match="table 'bookmarks' the transfer"):
        await run(source, sqlite_target)

    assert not await anyio.Path(sqlite_target.database.split("///")[1]).exists()


# Dry runs


async def test_a_dry_run_says_what_would_be_copied_and_writes_nothing(
    source: Install, postgres_target: str, tmp_path: Path
) -> None:
    target = Install(postgres_target, (tmp_path / "target-blobs").as_uri())
    held = await rows(source.database)

    report = await run(source, target, dry_run=True)

    assert report.dry_run
    assert {t.name: t.copied for t in report.tables} == {
        name: len(listed) for name, listed in held.items()
    }
    assert report.blobs_copied == len(await blob_names(source.storage))
    assert report.migrated == await all_revisions()
    assert not (tmp_path / "target-blobs").exists()
    engine = create_async_engine(postgres_target)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    await engine.dispose()
    assert tables == []


async def test_a_dry_run_after_a_copy_would_copy_nothing(
    source: Install, sqlite_target: Install
) -> None:
    await run(source, sqlite_target)

    report = await run(source, sqlite_target, dry_run=True)

    assert report.copied_nothing
    assert report.blobs_present == report.blobs


# The command


@pytest.fixture
def shell(source: Install, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """``docdesk`` with only the source's settings in its environment."""
    import os

    for name in list(os.environ):
        if name.startswith("DOCDESK_"):
            monkeypatch.delenv(name)
    return CliRunner(env={"DOCDESK_DATA_DIR": str(source.data_dir)})


async def test_the_command_transfers_checks_and_then_has_nothing_new(
    shell: CliRunner, source: Install, postgres_target: str, tmp_path: Path
) -> None:
    storage = (tmp_path / "target-blobs").as_uri()
    args = ["transfer", "--to-database", postgres_target, "--to-storage", storage]

    dry = await anyio.to_thread.run_sync(shell.invoke, main, [*args, "--dry-run"])
    first = await anyio.to_thread.run_sync(shell.invoke, main, args)
    second = await anyio.to_thread.run_sync(shell.invoke, main, args)

    assert dry.exit_code == 0, dry.output
    assert "would copy" in dry.stdout
    assert "nothing was written" in dry.stdout
    assert first.exit_code == 0, first.output
    assert "verified: every blob by sha256" in first.stdout
    assert "migrated the target database: 0001, " in first.stdout
    assert second.exit_code == 0, second.output
    assert "nothing new to copy" in second.stdout
    assert await contents(Install(postgres_target, storage)) == await contents(source)


async def test_the_command_refuses_a_conflict_in_one_line(
    shell: CliRunner, tmp_path: Path, sqlite_target: Install
) -> None:
    await run(await another_install(tmp_path / "other"), sqlite_target)
    args = [
        "transfer",
        "--to-database",
        sqlite_target.database,
        "--to-storage",
        sqlite_target.storage,
    ]

    result = await anyio.to_thread.run_sync(shell.invoke, main, args)

    assert result.exit_code == 1
    assert "docdesk: the target's table documents holds 1 row(s)" in result.stderr
