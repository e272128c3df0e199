from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from docdesk.catalog import (
    CallbackRecord,
    Catalog,
    EditorsSet,
    NewVersion,
    RecoveryRecord,
    VersionSource,
)
from docdesk.catalog import store as catalog_store
from docdesk.errors import CatalogError, NotFound

pytestmark = pytest.mark.anyio


def version(n: int = 1, **changes: object) -> NewVersion:
    values: dict[str, object] = {
        "blob": f"documents/d/{n}.docx",
        "file_type": "docx",
        "size": 100 + n,
        "sha256": f"{n:064x}",
        "source": VersionSource.UPLOAD,
    }
    values.update(changes)
    return NewVersion(**values)  # type: ignore[arg-type]


async def add(catalog: Catalog, document_id: str = "d1", key: str = "k1") -> None:
    await catalog.add_document(
        document_id=document_id, title="Report.docx", key=key, version=version()
    )


class TestDocuments:
    async def test_a_new_document_has_its_first_version_current(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)

        document = await catalog.document("d1")

        assert document.current_version == 1
        assert document.key == "k1"
        assert document.size == 101
        assert document.sha256 == f"{1:064x}"
        assert (await catalog.key("k1")).version == 1  # type: ignore[union-attr]

    async def test_unknown_documents_and_versions_are_not_found(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)

        with pytest.raises(NotFound):
            await catalog.document("nope")
        with pytest.raises(NotFound):
            await catalog.version("d1", 2)
        with pytest.raises(NotFound):
            await catalog.versions("nope")

    async def test_delete_returns_every_blob_and_forgets_the_document(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)
        await catalog.commit_version(
            "d1", version(2, changes_blob="documents/d/2.changes.zip"), new_key="k2"
        )

        blobs = await catalog.delete_document("d1")

        assert sorted(blobs) == [
            "documents/d/1.docx",
            "documents/d/2.changes.zip",
            "documents/d/2.docx",
        ]
        with pytest.raises(NotFound):
            await catalog.document("d1")
        assert await catalog.key("k1") is None


class TestCommits:
    async def test_a_commit_makes_the_next_number_current(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)

        saved = await catalog.commit_version(
            "d1", version(2, source=VersionSource.SAVE), new_key="k2"
        )

        assert saved.number == 2
        assert saved.source is VersionSource.SAVE
        assert (await catalog.document("d1")).current_version == 2
        assert [v.number for v in await catalog.versions("d1")] == [1, 2]

    async def test_a_final_save_retires_its_key_and_issues_a_new_one(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)

        await catalog.commit_version(
            "d1", version(2, key="k1"), new_key="k2", ends_session=True
        )

        assert (await catalog.document("d1")).key == "k2"
        assert (await catalog.key("k1")).retired is not None  # type: ignore[union-attr]
        assert (await catalog.key("k2")).version == 2  # type: ignore[union-attr]

    async def test_a_save_under_an_older_key_gives_the_document_a_new_key(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)
        await catalog.commit_version("d1", version(2), new_key="k2")

        await catalog.commit_version(
            "d1", version(3, key="k1"), new_key="k3", ends_session=True
        )

        document = await catalog.document("d1")
        assert document.key == "k3"
        assert document.current_version == 3
        assert (await catalog.key("k3")).version == 3  # type: ignore[union-attr]
        assert (await catalog.key("k2")).retired is None  # type: ignore[union-attr]
        assert (await catalog.key("k1")).retired is not None  # type: ignore[union-attr]

    async def test_a_force_save_moves_what_its_key_serves(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)

        await catalog.commit_version(
            "d1", version(2, key="k1", source=VersionSource.FORCESAVE), new_key="k9"
        )

        issued = await catalog.key("k1")
        assert issued is not None
        assert issued.version == 2
        assert issued.retired is None
        assert (await catalog.document("d1")).key == "k1"
        assert await catalog.key("k9") is None

    async def test_concurrent_commits_get_consecutive_numbers(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)

        saved = await asyncio.gather(
            *(
                catalog.commit_version("d1", version(n), new_key=f"k{n}")
                for n in range(2, 12)
            )
        )

        assert sorted(v.number for v in saved) == list(range(2, 12))
        document = await catalog.document("d1")
        assert document.current_version == 11
        newest = max(saved, key=lambda v: v.number)
        assert document.sha256 == newest.sha256

    async def test_a_failure_inside_the_commit_leaves_the_previous_version_current(
        self, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await add(catalog)

        def broken(*args: object) -> None:
            raise RuntimeError("injected")

        monkeypatch.setattr(catalog_store, "_insert_key", broken)
        with pytest.raises(RuntimeError):
            await catalog.commit_version("d1", version(2), new_key="k2")

        document = await catalog.document("d1")
        assert document.current_version == 1
        assert document.key == "k1"
        assert [v.number for v in await catalog.versions("d1")] == [1]

    async def test_a_commit_for_a_missing_document_writes_nothing(
        self, catalog: Catalog
    ) -> None:
        with pytest.raises(NotFound):
            await catalog.commit_version("ghost", version(2), new_key="k2")

        assert await catalog.documents() == []

    async def test_a_change_of_format_renames_the_document(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)

        await catalog.commit_version("d1", version(2, file_type="odt"), new_key="k2")

        document = await catalog.document("d1")
        assert (document.title, document.file_type) == ("Report.odt", "odt")


class TestKeys:
    async def test_rotation_happens_once_for_the_current_key(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)

        first = await catalog.rotate_key("d1", "k1", "k2")
        again = await catalog.rotate_key("d1", "k1", "k3")

        assert (first, again) == (True, False)
        assert (await catalog.document("d1")).key == "k2"
        assert await catalog.key("k3") is None

    async def test_editors_follow_the_current_key_and_clear_when_it_retires(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)
        await catalog.set_editors("k1", ["u1", "u2"], document_id="d1", status=1)
        assert (await catalog.document("d1")).editors == ("u1", "u2")

        await catalog.rotate_key("d1", "k1", "k2")

        assert (await catalog.document("d1")).editors == ()
        assert (await catalog.key("k1")).editors == ()  # type: ignore[union-attr]

    async def test_a_status_1_signed_before_the_last_one_changes_nothing(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)
        await catalog.set_editors("k1", [], document_id="d1", status=4, signed=20)

        late = await catalog.set_editors(
            "k1", ["u1"], document_id="d1", status=1, signed=19
        )

        assert late is EditorsSet.STALE
        assert (await catalog.document("d1")).editors == ()

    async def test_the_same_status_1_delivered_twice_is_taken_once(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)
        first = dict(document_id="d1", status=1, signed=5, delivery="x" * 64, keep=60)
        await catalog.set_editors("k1", ["u1"], **first)  # type: ignore[arg-type]
        await catalog.set_editors(
            "k1", [], document_id="d1", status=4, signed=5, delivery="y" * 64, keep=60
        )

        again = await catalog.set_editors("k1", ["u1"], **first)  # type: ignore[arg-type]

        assert again is EditorsSet.STALE
        assert (await catalog.document("d1")).editors == ()


class TestRecords:
    async def test_deliveries_are_remembered_until_they_expire(
        self, catalog: Catalog
    ) -> None:
        await catalog.record_delivery("a" * 64, "d1", 2, keep=-1)
        first = await catalog.record_delivery("b" * 64, "d1", 2, keep=300)
        second = await catalog.record_delivery("b" * 64, "d1", 2, keep=300)

        assert (first, second) == (True, False)
        assert not await catalog.delivered("a" * 64)
        assert await catalog.delivered("b" * 64)

    async def test_an_expired_delivery_is_new_again_until_it_is_forgotten(
        self, catalog: Catalog
    ) -> None:
        await catalog.record_delivery("a" * 64, "d1", 2, keep=-1)

        again = await catalog.record_delivery("a" * 64, "d1", 2, keep=300)
        forgotten_while_kept = await catalog.forget_deliveries()
        await catalog.record_delivery("b" * 64, "d1", 2, keep=-1)
        forgotten = await catalog.forget_deliveries()

        assert again
        assert await catalog.delivered("a" * 64)
        assert (forgotten_while_kept, forgotten) == (0, 1)
        assert not await catalog.delivered("b" * 64)

    async def test_the_callback_log_is_newest_first_and_per_document(
        self, catalog: Catalog
    ) -> None:
        now = datetime.now(UTC)
        for document_id, outcome in (("d1", "saved"), ("d2", "editing"), ("d1", "x")):
            await catalog.log_callback(
                CallbackRecord(
                    received=now,
                    document_id=document_id,
                    outcome=outcome,
                    http_status=200,
                    duration_ms=1.0,
                )
            )

        log = await catalog.callback_log("d1")

        assert [r.outcome for r in log] == ["x", "saved"]
        assert len(await catalog.callback_log()) == 3

    async def test_recoveries_are_listed_per_document(self, catalog: Catalog) -> None:
        record = kept_file()

        added = await catalog.add_recovery(record)

        assert added.id is not None
        assert await catalog.recoveries("d1") == [record]
        assert await catalog.recoveries("d2") == []

    async def test_a_restored_kept_file_is_marked_by_its_versions_commit(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)
        kept = await catalog.add_recovery(kept_file())
        assert kept.id is not None

        made = await catalog.commit_version(
            "d1",
            version(2, source=VersionSource.RECOVERY),
            new_key="k2",
            recovery=kept.id,
        )

        [listed] = await catalog.recoveries("d1")
        assert made is not None
        assert listed.restored_version == made.number == 2

    async def test_a_restore_of_a_kept_file_that_is_gone_makes_no_version(
        self, catalog: Catalog
    ) -> None:
        await add(catalog)

        with pytest.raises(NotFound):
            await catalog.commit_version(
                "d1",
                version(2, source=VersionSource.RECOVERY),
                new_key="k2",
                recovery=404,
            )

        assert (await catalog.document("d1")).current_version == 1
        assert [v.number for v in await catalog.versions("d1")] == [1]


def kept_file() -> RecoveryRecord:
    return RecoveryRecord(
        document_id="d1",
        key="k1",
        status=3,
        blob="recovery/d1/x.docx",
        file_type="docx",
        size=5,
        sha256="0" * 64,
        created=datetime.now(UTC),
        reason="test",
    )


class TestMigrations:
    async def test_a_new_database_is_behind_until_migrated(
        self, tmp_path: Path
    ) -> None:
        catalog = Catalog.from_url(f"sqlite+aiosqlite:///{tmp_path / 'new.sqlite3'}")
        try:
            assert await catalog.pending_migrations() == ["0001", "0002"]
            await catalog.migrate()
            await catalog.migrate()
            assert await catalog.pending_migrations() == []
        finally:
            await catalog.close()

    async def test_an_unreachable_database_is_a_catalog_error(self) -> None:
        # Port 1 on loopback: nothing listens, so the connection is refused.
        # XXX: not a missing SQLite file: a failed aiosqlite connect leaves its
        # worker thread to report into a closed event loop after the test.
        catalog = Catalog.from_url("postgresql+psycopg://nobody@127.0.0.1:1/none")
        try:
            with pytest.raises(CatalogError):
                await catalog.document("d1")
        finally:
            await catalog.close()
