"""DocDesk on each pair of backends: SQLite + files, PostgreSQL + S3.

The same library calls run on both pairs (fixture ``backend_pair``), with
real servers: what a user saves must come back byte for byte, and what is
deleted must be gone from the blob store.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from docdesk.desk import DocDesk
from docdesk.settings import Settings
from docdesk.storage.s3 import SMALL_BLOB_MAX
from integration.office import make_docx, padded_docx
from tally import record

pytestmark = pytest.mark.anyio

CHUNK = 1024 * 1024


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


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    for at in range(0, len(data), CHUNK):
        yield data[at : at + CHUNK]


async def content(desk: DocDesk, document_id: str, number: int) -> bytes:
    version = await desk.version(document_id, number)
    return b"".join([chunk async for chunk in desk.read(version)])


async def blobs_of(desk: DocDesk, document_id: str) -> list[str]:
    return [name async for name in desk.store.names(f"documents/{document_id}/")]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_versions_round_trip_by_checksum(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    first = make_docx("first")
    # Above the S3 store's threshold: staged, then copied under its name.
    second = padded_docx("second", SMALL_BLOB_MAX + 1)

    async with opened(backend_pair, tmp_path / "data") as desk:
        document = await desk.upload("report.docx", chunked(first))
        added = await desk.add_version(document.id, chunked(second))
        restored = await desk.restore(document.id, 1)
        current = await desk.document(document.id)

        assert added.number == 2
        assert added.sha256 == sha256(second)
        assert restored.number == 3
        assert restored.blob == (await desk.version(document.id, 1)).blob
        assert current.current_version == 3
        assert current.sha256 == sha256(first)
        for number, data in ((1, first), (2, second), (3, first)):
            kept = await content(desk, document.id, number)
            assert sha256(kept) == (await desk.version(document.id, number)).sha256
            assert kept == data
        assert len(await blobs_of(desk, document.id)) == 2


async def test_a_copy_is_a_new_document_with_the_same_bytes(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    data = make_docx("copied")

    async with opened(backend_pair, tmp_path / "data") as desk:
        original = await desk.upload("original.docx", chunked(data))
        copy = await desk.copy(original.id)

        assert copy.id != original.id
        assert copy.title == "original (copy).docx"
        assert copy.sha256 == original.sha256 == sha256(data)
        assert await content(desk, copy.id, 1) == data
        assert len(await blobs_of(desk, copy.id)) == 1


async def test_deleting_a_document_removes_its_blobs_from_the_store(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    async with opened(backend_pair, tmp_path / "data") as desk:
        doomed = await desk.upload("doomed.docx", chunked(make_docx("a")))
        await desk.add_version(doomed.id, chunked(make_docx("b")))
        await desk.restore(doomed.id, 1)
        kept = await desk.upload("kept.docx", chunked(make_docx("c")))
        before = await blobs_of(desk, doomed.id)

        await desk.delete(doomed.id)

        assert len(before) == 2
        assert await blobs_of(desk, doomed.id) == []
        assert await blobs_of(desk, kept.id) != []
        assert [name async for name in desk.store.names()] == await blobs_of(
            desk, kept.id
        )


async def test_concurrent_commits_from_two_instances_keep_every_version(
    backend_pair: tuple[str, str], tmp_path: Path
) -> None:
    per_instance = 5
    sent = {
        (instance, i): make_docx(f"instance {instance} edit {i}")
        for instance in range(2)
        for i in range(per_instance)
    }

    async with (
        opened(backend_pair, tmp_path / "one") as one,
        opened(backend_pair, tmp_path / "two") as two,
    ):
        document = await one.upload("shared.docx", chunked(make_docx("start")))

        async def add(desk: DocDesk, key: tuple[int, int]) -> None:
            await desk.add_version(document.id, chunked(sent[key]))

        async with anyio.create_task_group() as group:
            for instance, i in sent:
                group.start_soon(add, (one, two)[instance], (instance, i))

        versions = await two.versions(document.id)
        blobs = await blobs_of(two, document.id)
        kept = {version.sha256 for version in versions}

    numbers = sorted(version.number for version in versions)
    expected = {sha256(data) for data in sent.values()}
    held = len(expected & kept)
    record(
        "backends",
        "concurrent commits from two instances each keep a version",
        tried=len(sent),
        held=held,
        unit="commit",
        detail=(
            f"database={backend_pair[0].split(':')[0]} "
            f"storage={backend_pair[1].split(':')[0]}"
        ),
    )
    assert numbers == list(range(1, len(sent) + 2))
    assert held == len(sent)
    assert sorted(blobs) == sorted(version.blob for version in versions)
