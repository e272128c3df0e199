"""What every blob store promises, held against each one docdesk ships.

Each test runs on the local store and on the S3 store (SeaweedFS on
loopback). Behaviour only one of them has is tested beside it, in
test_storage_local.py and test_storage_s3.py.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import obstore
import pytest

from docdesk.errors import NotFound, StorageError
from docdesk.storage import (
    BlobStore,
    commit_new,
    new_blob_stem,
    open_store,
    sweep_staging,
)
from docdesk.storage.base import TAIL_SIZE
from docdesk.storage.local import LocalBlobStore
from docdesk.storage.s3 import SMALL_BLOB_MAX, S3BlobStore
from tally import record

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
# Above the S3 store's threshold: staged as a multipart upload, then copied.
LARGE = SMALL_BLOB_MAX + MiB + 7
SIZES = [pytest.param(100_000, id="small"), pytest.param(LARGE, id="large")]
UNSAFE_NAMES = ["", "/absolute", "../escape", "a//b", ".staging/x", "a/.hidden"]


@dataclass
class Backend:
    """A store, and a look at everything it keeps, staging included."""

    kind: str
    store: BlobStore
    everything: Callable[[], Awaitable[set[str]]]
    leave_staging: Callable[[], Awaitable[None]]


@pytest.fixture(params=["local", "s3"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Backend]:
    if request.param == "local":
        local = LocalBlobStore(tmp_path / "blobs")
        yield Backend("local", local, _local_files(local), _local_leftover(local))
        return

    store = open_store(request.getfixturevalue("s3_storage_url"))
    assert isinstance(store, S3BlobStore)
    yield Backend("s3", store, _s3_objects(store), _s3_leftover(store))
    await store.close()


def _local_files(store: LocalBlobStore) -> Callable[[], Awaitable[set[str]]]:
    async def everything() -> set[str]:
        return {
            path.relative_to(store.root).as_posix()
            for path in store.root.rglob("*")
            if path.is_file()
        }

    return everything


def _local_leftover(store: LocalBlobStore) -> Callable[[], Awaitable[None]]:
    async def leave() -> None:
        (store.root / ".staging" / f"{secrets.token_hex(16)}.tmp").write_bytes(b"x")

    return leave


def _s3_objects(store: S3BlobStore) -> Callable[[], Awaitable[set[str]]]:
    async def everything() -> set[str]:
        pages = [page async for page in obstore.list(store._store)]
        return {str(meta["path"]) for page in pages for meta in page}

    return everything


def _s3_leftover(store: S3BlobStore) -> Callable[[], Awaitable[None]]:
    async def leave() -> None:
        # What a crash between a staged upload and its copy leaves.
        key = f".staging/{secrets.token_hex(16)}"
        await obstore.put_async(store._store, key, b"x" * 1000)

    return leave


def payload(seed: int, size: int = 100_000) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


async def put(store: BlobStore, name: str, data: bytes, chunk: int = MiB) -> None:
    async with store.create() as writer:
        for at in range(0, len(data), chunk):
            await writer.write(data[at : at + chunk])
        await writer.commit(name)


async def read_all(store: BlobStore, name: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(name)])


async def all_names(store: BlobStore, prefix: str = "") -> list[str]:
    return [name async for name in store.names(prefix)]


class TestCommit:
    @pytest.mark.parametrize("size", SIZES)
    async def test_committed_blob_reads_back_whole_with_its_digest(
        self, backend: Backend, size: int
    ) -> None:
        data = payload(1, size)

        await put(backend.store, "documents/1/v1.docx", data, chunk=300_001)

        assert await read_all(backend.store, "documents/1/v1.docx") == data
        assert await backend.store.size("documents/1/v1.docx") == size
        assert await backend.everything() == {"documents/1/v1.docx"}

    @pytest.mark.parametrize("size", SIZES)
    async def test_digest_counts_every_byte_and_keeps_both_ends(
        self, backend: Backend, size: int
    ) -> None:
        data = payload(2, size)

        async with backend.store.create() as writer:
            await writer.write(data[:30_000])
            await writer.write(data[30_000:])
            await writer.commit("a")

        assert writer.digest.size == size
        assert writer.digest.sha256 == hashlib.sha256(data).hexdigest()
        assert writer.digest.head == data[:4096]
        assert writer.digest.tail == data[-TAIL_SIZE:]

    async def test_nothing_is_visible_under_the_name_before_commit(
        self, backend: Backend
    ) -> None:
        async with backend.store.create() as writer:
            await writer.write(payload(3, LARGE))

            with pytest.raises(NotFound):
                await backend.store.size("a/b")
            assert await all_names(backend.store) == []

            await writer.commit("a/b")

        assert await all_names(backend.store) == ["a/b"]

    async def test_empty_blob_can_be_committed(self, backend: Backend) -> None:
        async with backend.store.create() as writer:
            await writer.commit("empty")

        assert await backend.store.size("empty") == 0
        assert await read_all(backend.store, "empty") == b""

    @pytest.mark.parametrize("size", SIZES)
    async def test_existing_name_is_refused_and_left_untouched(
        self, backend: Backend, size: int
    ) -> None:
        await put(backend.store, "a/b", b"first")

        with pytest.raises(FileExistsError):
            await put(backend.store, "a/b", payload(4, size))

        assert await read_all(backend.store, "a/b") == b"first"
        assert await backend.everything() == {"a/b"}

    async def test_a_fresh_name_found_taken_fails_as_a_retry_may_cure(
        self, backend: Backend
    ) -> None:
        name = f"{new_blob_stem('documents', '0123456789abcdef')}.docx"
        await put(backend.store, name, b"an earlier try")

        async with backend.store.create() as writer:
            await writer.write(b"this try")
            with pytest.raises(StorageError) as caught:
                await commit_new(writer, name)

        assert caught.value.transient
        assert await read_all(backend.store, name) == b"an earlier try"
        assert await backend.everything() == {name}

    @pytest.mark.parametrize("name", UNSAFE_NAMES)
    async def test_unsafe_name_is_refused_everywhere(
        self, backend: Backend, name: str
    ) -> None:
        await put(backend.store, "a/b", b"x")

        with pytest.raises(ValueError, match="unsafe blob name"):
            backend.store.read(name)
        with pytest.raises(ValueError, match="unsafe blob name"):
            await backend.store.size(name)
        with pytest.raises(ValueError, match="unsafe blob name"):
            await backend.store.delete(name)
        with pytest.raises(ValueError, match="unsafe blob name"):
            await put(backend.store, name, b"x")

        assert await backend.everything() == {"a/b"}


class TestWriterLifecycle:
    @pytest.mark.parametrize("size", SIZES)
    async def test_leaving_the_block_without_commit_leaves_nothing(
        self, backend: Backend, size: int
    ) -> None:
        async with backend.store.create() as writer:
            await writer.write(payload(5, size))

        assert await backend.everything() == set()

    @pytest.mark.parametrize("size", SIZES)
    async def test_an_exception_in_the_block_leaves_nothing(
        self, backend: Backend, size: int
    ) -> None:
        async def write_then_fail() -> None:
            async with backend.store.create() as writer:
                await writer.write(payload(6, size))
                raise LookupError("the caller gave up")

        with pytest.raises(LookupError, match="gave up"):
            await write_then_fail()

        assert await backend.everything() == set()

    async def test_cancelling_the_task_leaves_nothing(self, backend: Backend) -> None:
        with anyio.CancelScope() as scope:
            async with backend.store.create() as writer:
                await writer.write(payload(7, LARGE))
                scope.cancel()
                await anyio.sleep(1)

        assert scope.cancelled_caught
        assert await backend.everything() == set()

    async def test_abort_is_idempotent_and_closes_the_writer(
        self, backend: Backend
    ) -> None:
        writer = backend.store.create()
        await writer.write(payload(8, LARGE))

        await writer.abort()
        await writer.abort()

        assert await backend.everything() == set()
        with pytest.raises(ValueError, match="closed"):
            await writer.write(b"y")
        with pytest.raises(ValueError, match="closed"):
            await writer.commit("a")

    async def test_committed_writer_cannot_be_written_or_committed_again(
        self, backend: Backend
    ) -> None:
        async with backend.store.create() as writer:
            await writer.write(b"once")
            await writer.commit("a")

            with pytest.raises(ValueError, match="committed"):
                await writer.write(b"twice")
            with pytest.raises(ValueError, match="committed"):
                await writer.commit("b")
            await writer.abort()

        assert await read_all(backend.store, "a") == b"once"
        assert await all_names(backend.store) == ["a"]


class TestRead:
    async def test_read_streams_in_chunks_of_the_asked_size(
        self, backend: Backend
    ) -> None:
        await put(backend.store, "a", payload(9, 10_000))

        sizes = [len(chunk) async for chunk in backend.store.read("a", chunk_size=4096)]

        assert sizes == [4096, 4096, 1808]

    async def test_large_blob_streams_in_chunks_of_the_asked_size(
        self, backend: Backend
    ) -> None:
        data = payload(10, LARGE)
        await put(backend.store, "big", data)
        chunks: list[bytes] = []

        async for chunk in backend.store.read("big", chunk_size=MiB):
            chunks.append(chunk)

        assert {len(chunk) for chunk in chunks[:-1]} == {MiB}
        assert len(chunks[-1]) == LARGE % MiB
        assert b"".join(chunks) == data

    async def test_missing_blob_is_not_found(self, backend: Backend) -> None:
        await put(backend.store, "folder/blob", b"x")

        for name in ("missing", "folder", "folder/blob/deeper"):
            with pytest.raises(NotFound):
                await read_all(backend.store, name)
            with pytest.raises(NotFound):
                await backend.store.size(name)


class TestNamesAndDelete:
    async def test_names_are_sorted_and_filtered_by_prefix(
        self, backend: Backend
    ) -> None:
        for name in ("b", "a/b", "a-c", "a/a/z", "ab"):
            await put(backend.store, name, b"x")

        everything = await all_names(backend.store)
        under_a = await all_names(backend.store, "a/")
        starting_a = await all_names(backend.store, "a")
        starting_a_a = await all_names(backend.store, "a/a")

        assert everything == ["a-c", "a/a/z", "a/b", "ab", "b"]
        assert under_a == ["a/a/z", "a/b"]
        assert starting_a == ["a-c", "a/a/z", "a/b", "ab"]
        assert starting_a_a == ["a/a/z"]

    async def test_names_never_include_writers_in_progress(
        self, backend: Backend
    ) -> None:
        await put(backend.store, "kept", b"x")

        async with backend.store.create() as writer:
            await writer.write(payload(11, LARGE))
            listed = await all_names(backend.store)
            hidden = await all_names(backend.store, ".")

        assert listed == ["kept"]
        assert hidden == []

    async def test_a_folder_emptied_by_deletes_is_not_a_name(
        self, backend: Backend
    ) -> None:
        await put(backend.store, "a/b/c", b"x")
        await put(backend.store, "a/d", b"x")

        await backend.store.delete("a/b/c")

        assert await all_names(backend.store) == ["a/d"]
        assert await all_names(backend.store, "a/b") == []
        assert await all_names(backend.store, "a/b/") == []

    async def test_delete_removes_only_that_blob(self, backend: Backend) -> None:
        await put(backend.store, "a/1", b"one")
        await put(backend.store, "a/2", b"two")

        await backend.store.delete("a/1")

        assert await all_names(backend.store) == ["a/2"]
        with pytest.raises(NotFound):
            await backend.store.size("a/1")

    async def test_deleting_a_missing_blob_is_fine_and_repeatable(
        self, backend: Backend
    ) -> None:
        await put(backend.store, "a/1", b"one")

        await backend.store.delete("a/1")
        await backend.store.delete("a/1")
        await backend.store.delete("nowhere/missing")
        await backend.store.delete("a")

        assert await backend.everything() == set()


class TestSweep:
    async def test_a_staging_leftover_is_kept_while_fresh_then_swept(
        self, backend: Backend
    ) -> None:
        await put(backend.store, "kept", b"x")
        await backend.leave_staging()

        kept = await sweep_staging(backend.store)
        left = await backend.everything()
        listed = await all_names(backend.store)
        swept = await sweep_staging(backend.store, older_than=0)

        assert kept == 0
        assert len(left) == 2
        assert listed == ["kept"]
        assert swept == 1
        assert await backend.everything() == {"kept"}
        assert await read_all(backend.store, "kept") == b"x"

    async def test_a_sweep_spares_a_writer_in_progress(self, backend: Backend) -> None:
        async with backend.store.create() as writer:
            await writer.write(payload(12, LARGE))
            swept = await sweep_staging(backend.store)
            await writer.commit("survivor")

        assert swept == 0
        assert await read_all(backend.store, "survivor") == payload(12, LARGE)


class TestConcurrency:
    async def test_twenty_writers_commit_different_names_at_once(
        self, backend: Backend
    ) -> None:
        names = [f"documents/{i:02d}/v1" for i in range(20)]

        async with anyio.create_task_group() as group:
            for i, name in enumerate(names):
                group.start_soon(put, backend.store, name, payload(i))

        assert await all_names(backend.store) == names
        for i, name in enumerate(names):
            assert await read_all(backend.store, name) == payload(i)
        assert await backend.everything() == set(names)

    @pytest.mark.parametrize(
        "sizes",
        [
            pytest.param((100_000,) * 4, id="small"),
            pytest.param((LARGE,) * 3, id="large"),
            pytest.param((100_000, LARGE, 100_001, LARGE + 1), id="mixed"),
        ],
    )
    async def test_writers_racing_for_one_name_exactly_one_wins(
        self, backend: Backend, sizes: tuple[int, ...]
    ) -> None:
        # SeaweedFS let two racing conditional multipart copies both win in
        # about one race in four: several rounds make a regression show.
        rounds = 6
        contenders: list[list[bytes]] = []
        winners: list[list[int]] = []

        for round_ in range(rounds):
            sent = [payload(100 * round_ + i, size) for i, size in enumerate(sizes)]
            contenders.append(sent)
            winners.append(await race(backend.store, f"contested/{round_}", sent))
        held = sum(len(won) == 1 for won in winners)

        record(
            "storage",
            f"one winner among {len(sizes)} commits racing for a name",
            tried=rounds,
            held=held,
            unit="race",
            detail=f"backend={backend.kind} sizes={sizes}",
        )
        assert held == rounds
        for round_, (won,) in enumerate(winners):
            kept = await read_all(backend.store, f"contested/{round_}")
            assert kept == contenders[round_][won]
        assert await backend.everything() == {f"contested/{i}" for i in range(rounds)}


async def race(store: BlobStore, name: str, contenders: list[bytes]) -> list[int]:
    """Write each contender, then commit them all to ``name`` at once."""
    writers = [store.create() for _ in contenders]
    for writer, data in zip(writers, contenders, strict=True):
        await writer.write(data)
    outcomes: dict[int, str] = {}

    async def commit(index: int) -> None:
        try:
            await writers[index].commit(name)
            outcomes[index] = "won"
        except FileExistsError:
            outcomes[index] = "refused"
        finally:
            await writers[index].abort()

    async with anyio.create_task_group() as group:
        for index in range(len(writers)):
            group.start_soon(commit, index)

    assert len(outcomes) == len(contenders)
    return [index for index, outcome in outcomes.items() if outcome == "won"]
