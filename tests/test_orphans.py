"""The orphan sweep, on each pair of backends: SQLite + files, PostgreSQL + S3.

A blob no catalog row names goes once it is older than the limit; a young
one, every referenced one, staging and anything outside docdesk's own names
stay, and so does a blob whose version is recorded while the sweep runs.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import obstore
import pytest
from click.testing import CliRunner

from docdesk.catalog import NewVersion, RecoveryRecord, VersionSource
from docdesk.catalog.tables import BLOB_COLUMNS, metadata
from docdesk.cli import main
from docdesk.desk import DocDesk
from docdesk.orphans import sweep_orphans
from docdesk.settings import Settings
from docdesk.storage import BlobStore
from docdesk.storage.local import LocalBlobStore
from docdesk.storage.s3 import S3BlobStore
from integration.office import make_docx

pytestmark = pytest.mark.anyio

DOCX = make_docx("kept")


@asynccontextmanager
async def opened(pair: tuple[str, str], data_dir: Path) -> AsyncIterator[DocDesk]:
    database_url, storage_url = pair
    settings = Settings.from_env(
        {
            "DOCDESK_DATA_DIR": str(data_dir),
            "DOCDESK_DATABASE_URL": database_url,
            "DOCDESK_STORAGE_URL": storage_url,
            "DOCDESK_PUBLIC_URL": "http://127.0.0.1:8000",
        }
    )
    desk = await DocDesk.open(settings)
    try:
        yield desk
    finally:
        await desk.close()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def put(store: BlobStore, name: str, data: bytes = DOCX) -> str:
    async with store.create() as writer:
        await writer.write(data)
        await writer.commit(name)
    return name


async def names(store: BlobStore) -> set[str]:
    return {name async for name in store.names()}


async def sweep(desk: DocDesk, **limit: float) -> int:
    return await sweep_orphans(desk.catalog, desk.store, **limit)


def orphan_name(document_id: str) -> str:
    return f"documents/{document_id}/{secrets.token_hex(8)}.docx"


async def test_an_old_blob_no_row_names_is_removed(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        document = await desk.upload("kept.docx", _once(DOCX))
        first = await desk.version(document.id, 1)
        orphan = await put(desk.store, orphan_name(document.id))

        removed = await sweep(desk, older_than=0)
        left = await names(desk.store)

    assert removed == 1
    assert orphan not in left
    assert left == {first.blob}


async def test_a_fresh_blob_no_row_names_stays(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        document = await desk.upload("kept.docx", _once(DOCX))
        # Its version may still be on its way into the catalog.
        young = await put(desk.store, orphan_name(document.id))

        removed = await sweep(desk)
        left = await names(desk.store)

    assert removed == 0
    assert young in left


async def test_every_kind_of_referenced_blob_stays(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        document = await desk.upload("kept.docx", _once(DOCX))
        saved = await _save_with_extras(desk, document.id)
        restored = await desk.restore(document.id, 1)
        kept_aside = await _keep_aside(desk, document.id)
        orphan = await put(desk.store, orphan_name(document.id))
        referenced = {name async for name in desk.catalog.blob_names()}
        before = await names(desk.store)

        removed = await sweep(desk, older_than=0)
        left = await names(desk.store)

    assert saved.changes_blob is not None
    assert saved.forms_blob is not None
    assert {saved.blob, saved.changes_blob, saved.forms_blob} <= referenced
    assert {restored.blob, kept_aside.blob} <= referenced
    assert removed == 1
    assert left == before - {orphan}
    assert left == referenced


async def test_staging_and_names_docdesk_does_not_give_are_left_alone(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        await desk.upload("kept.docx", _once(DOCX))
        staged = await _leave_in_staging(desk.store)
        foreign = [
            await put(desk.store, name, b"someone's notes")
            for name in (
                "notes/not-docdesk.txt",
                "documents/report.docx",
                "documents/0123456789abcdef/draft.docx",
                "recovery/0123456789ABCDEF/0123456789abcdef.docx",
            )
        ]

        removed = await sweep(desk, older_than=0)
        staging_left = await _staging(desk.store)
        left = await names(desk.store)

    assert removed == 0
    assert staged in staging_left
    assert set(foreign) <= left


async def test_a_version_recorded_after_the_listing_keeps_its_blob(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        document = await desk.upload("kept.docx", _once(DOCX))
        late = await put(desk.store, orphan_name(document.id))

        async def record_late_version() -> None:
            await desk.commit(document.id, _new_version(late))

        store = RecordingAfterListing(desk.store, record_late_version)
        removed = await sweep_orphans(desk.catalog, store, older_than=0)
        left = await names(desk.store)
        current = await desk.document(document.id)

    assert store.recorded
    assert removed == 0
    assert late in left
    assert current.current_version == 2


async def test_a_blob_deleted_during_the_sweep_is_not_an_error(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        document = await desk.upload("kept.docx", _once(DOCX))
        gone = await put(desk.store, orphan_name(document.id))

        async def delete_it() -> None:
            await desk.store.delete(gone)

        store = RecordingAfterListing(desk.store, delete_it)
        removed = await sweep_orphans(desk.catalog, store, older_than=0)

    assert store.recorded
    assert removed == 0


async def test_a_deleted_documents_leftover_blobs_are_swept(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        document = await desk.upload("gone.docx", _once(DOCX))
        await desk.add_version(document.id, _once(make_docx("second")))
        # A kill after the catalog forgot the document, before its blobs went.
        await desk.catalog.delete_document(document.id)
        before = await names(desk.store)

        removed = await sweep(desk, older_than=0)
        left = await names(desk.store)

    assert len(before) == 2
    assert removed == 2
    assert left == set()


async def test_a_negative_limit_is_refused_and_nothing_goes(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        document = await desk.upload("kept.docx", _once(DOCX))
        orphan = await put(desk.store, orphan_name(document.id))

        with pytest.raises(ValueError, match="older_than"):
            await sweep(desk, older_than=-1)
        left = await names(desk.store)

    assert orphan in left


async def test_a_store_tells_when_a_blob_was_committed(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        before = datetime.now(UTC)
        name = await put(desk.store, "documents/0123456789abcdef/when.docx")
        modified = await desk.store.modified(name)

    # S3 keeps whole seconds.
    assert before - timedelta(seconds=1) <= modified <= datetime.now(UTC)
    assert modified.tzinfo is not None


def test_every_table_says_which_of_its_columns_name_blobs() -> None:
    assert set(BLOB_COLUMNS) == set(metadata.tables)
    for table_name, columns in BLOB_COLUMNS.items():
        table = metadata.tables[table_name]
        for column in columns:
            named = (column.name, column.sha256, column.size)
            assert all(c is None or c in table.columns for c in named), column


def test_docdesk_sweep_removes_old_orphans_from_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("DOCDESK_"):
            monkeypatch.delenv(name)
    env = {"DOCDESK_DATA_DIR": str(tmp_path)}
    shell = CliRunner(env=env)
    uploaded = tmp_path / "kept.docx"
    uploaded.write_bytes(DOCX)
    assert shell.invoke(main, ["upload", str(uploaded)]).exit_code == 0
    blobs = LocalBlobStore(tmp_path / "blobs")
    orphan = (
        tmp_path / "blobs" / "documents" / "0123456789abcdef" / "fedcba9876543210.docx"
    )
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(DOCX)
    long_ago = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    os.utime(orphan, (long_ago, long_ago))

    young = shell.invoke(main, ["sweep", "--older-than", "10800"])
    old = shell.invoke(main, ["sweep"])

    assert blobs.root == (tmp_path / "blobs").resolve(), "not the embedded store"
    assert (young.exit_code, young.stdout) == (0, "0 orphaned blob(s) removed\n")
    assert (old.exit_code, old.stdout) == (0, "1 orphaned blob(s) removed\n")
    assert not orphan.exists()
    assert len(list((tmp_path / "blobs" / "documents").rglob("*.docx"))) == 1


# Helpers


class RecordingAfterListing:
    """A store that runs ``then`` once its first listing is done.

    Stands for another instance acting between the sweep's listing of the
    store and its reading of the catalog.
    """

    def __init__(
        self, store: BlobStore, then: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        self._store = store
        self._then = then
        self.recorded = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def names(self, prefix: str = "") -> AsyncIterator[str]:
        async for name in self._store.names(prefix):
            yield name
        if not self.recorded:
            self.recorded = True
            await self._then()


def _new_version(blob: str, **extras: str) -> NewVersion:
    return NewVersion(
        blob=blob,
        file_type="docx",
        size=len(DOCX),
        sha256="0" * 64,
        source=VersionSource.SAVE,
        **extras,
    )


async def _save_with_extras(desk: DocDesk, document_id: str) -> Any:
    stem = f"documents/{document_id}/{secrets.token_hex(8)}"
    blob = await put(desk.store, f"{stem}.docx")
    changes = await put(desk.store, f"{stem}.changes.zip", b"PK changes")
    forms = await put(desk.store, f"{stem}.formsdata.json", b"{}")
    extras = {"changes_blob": changes, "forms_blob": forms}
    return await desk.commit(document_id, _new_version(blob, **extras))


async def _keep_aside(desk: DocDesk, document_id: str) -> RecoveryRecord:
    name = f"recovery/{document_id}/{secrets.token_hex(8)}.docx"
    await put(desk.store, name)
    return await desk.catalog.add_recovery(
        RecoveryRecord(
            document_id=document_id,
            key=secrets.token_hex(8),
            status=3,
            blob=name,
            file_type="docx",
            size=len(DOCX),
            sha256="0" * 64,
            created=datetime.now(UTC),
            reason="corrupted, kept aside",
        )
    )


async def _leave_in_staging(store: BlobStore) -> str:
    """An old staging leftover, as a crash mid-commit leaves one."""
    name = f".staging/{secrets.token_hex(16)}"
    if isinstance(store, LocalBlobStore):
        path = store.root / name
        path.write_bytes(b"half a file")
        long_ago = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
        os.utime(path, (long_ago, long_ago))
        return name
    assert isinstance(store, S3BlobStore)
    await obstore.put_async(store._store, name, b"half a file")
    return name


async def _staging(store: BlobStore) -> set[str]:
    if isinstance(store, LocalBlobStore):
        return {
            path.relative_to(store.root).as_posix()
            for path in (store.root / ".staging").iterdir()
        }
    assert isinstance(store, S3BlobStore)
    listed = obstore.list(store._store, prefix=".staging")
    return {str(meta["path"]) async for page in listed for meta in page}
