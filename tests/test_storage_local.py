"""LocalBlobStore: atomic, durable, create-only blobs in real files."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import random
import stat
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import docdesk.storage.local
from docdesk.errors import NotFound, StorageError
from docdesk.storage.base import TAIL_SIZE, BlobStore, BlobWriter
from docdesk.storage.local import LocalBlobStore

PROC_FD = Path("/proc/self/fd")
needs_proc_fd = pytest.mark.skipif(not PROC_FD.is_dir(), reason="no /proc/self/fd")
O_DIRECT = getattr(os, "O_DIRECT", 0)
MiB = 1024 * 1024
# Sizes that cross every boundary the writer has: small and large chunks,
# page-aligned and not, below, at and above its 1 MiB buffer.
MIXED_CHUNKS = [MiB, 300_000, 4096, 65_536, 2 * MiB + 1, 17, 131_072]

UNSAFE = "unsafe blob name"
OUTSIDE = "leads out of the store"
UNSAFE_NAMES = [
    "",
    "/absolute",
    "../escape",
    "a/../../escape",
    "a\\b",
    "a\0b",
    "a//b",
    "a/./b",
    ".staging/x",
    "a/.hidden",
]


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def payload(seed: int, size: int = 100_000) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


async def put(store: LocalBlobStore, name: str, data: bytes) -> None:
    async with store.create() as writer:
        await writer.write(data)
        await writer.commit(name)


async def read_all(store: LocalBlobStore, name: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(name)])


async def all_names(store: LocalBlobStore, prefix: str = "") -> list[str]:
    return [name async for name in store.names(prefix)]


def files_on_disk(root: Path) -> set[str]:
    """Every file under root, committed or not, staging included."""
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if not path.is_dir() or path.is_symlink()
    }


def open_fds() -> int:
    return len(os.listdir(PROC_FD))


async def settle() -> None:
    """Let asyncio finalize abandoned async generators (a couple of turns)."""
    for _ in range(5):
        await anyio.lowlevel.checkpoint()


def fail_once(
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    when: Callable[..., bool] = lambda *args: True,
    *,
    code: int = errno.EIO,
    seen: Callable[[], None] | None = None,
) -> None:
    """Make the first call of ``os.<function>`` for which ``when`` holds fail.

    ``seen`` runs at the instant of the failure, to look at the disk then.
    """
    real = getattr(os, function)
    failed = False

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal failed
        if not failed and when(*args):
            failed = True
            if seen is not None:
                seen()
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(f"docdesk.storage.local.os.{function}", failing)


def writing_threads() -> list[str]:
    """The blob writers' own threads; a catalog's live on in other fixtures."""
    return [
        t.name for t in threading.enumerate() if t.name.startswith("docdesk-blob-write")
    ]


def is_direct(fd: int, *rest: object) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT)


def direct_io_works(folder: Path) -> bool:
    """Whether the file system under ``folder`` takes O_DIRECT writes."""
    if not O_DIRECT:
        return False
    probe = folder / "direct-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


def slow_disk(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every large os.write take ``seconds`` longer."""
    real = os.write

    def slow(fd: int, data: Any) -> int:
        if len(data) >= 65_536:
            time.sleep(seconds)
        return real(fd, data)

    monkeypatch.setattr("docdesk.storage.local.os.write", slow)


async def write_in_chunks(writer: BlobWriter, data: bytes, sizes: list[int]) -> None:
    at, turn = 0, 0
    while at < len(data):
        size = sizes[turn % len(sizes)]
        await writer.write(data[at : at + size])
        at, turn = at + size, turn + 1


def is_file_fd(fd: int, *rest: object) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def is_folder_fd(fd: int, *rest: object) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


class TestCommit:
    @pytest.mark.anyio
    async def test_committed_blob_reads_back_whole_with_its_digest(
        self, store: LocalBlobStore
    ) -> None:
        data = payload(1)

        async with store.create() as writer:
            await writer.write(data[:30_000])
            await writer.write(data[30_000:])
            await writer.commit("documents/1/v1.docx")

        assert await read_all(store, "documents/1/v1.docx") == data
        assert await store.size("documents/1/v1.docx") == len(data)
        assert writer.digest.size == len(data)
        assert writer.digest.sha256 == hashlib.sha256(data).hexdigest()
        assert writer.digest.head == data[:4096]

    @pytest.mark.anyio
    async def test_nothing_is_visible_under_the_name_before_commit(
        self, store: LocalBlobStore
    ) -> None:
        async with store.create() as writer:
            await writer.write(b"half a file")

            with pytest.raises(NotFound):
                await store.size("a/b")
            assert await all_names(store) == []

            await writer.commit("a/b")

        assert await all_names(store) == ["a/b"]

    @pytest.mark.anyio
    async def test_committed_blob_is_read_only(self, store: LocalBlobStore) -> None:
        await put(store, "a/b", b"bytes")

        mode = store.path_of("a/b").stat().st_mode

        assert mode & 0o222 == 0
        assert mode & 0o400

    @pytest.mark.anyio
    async def test_commit_leaves_no_temporary_behind(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "a/b", b"bytes")

        assert files_on_disk(store.root) == {"a/b"}

    @pytest.mark.anyio
    async def test_empty_blob_can_be_committed(self, store: LocalBlobStore) -> None:
        async with store.create() as writer:
            await writer.commit("empty")

        assert await store.size("empty") == 0
        assert await read_all(store, "empty") == b""

    @pytest.mark.anyio
    async def test_existing_name_is_refused_and_left_untouched(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "a/b", b"first")

        with pytest.raises(FileExistsError):
            await put(store, "a/b", b"second")

        assert await read_all(store, "a/b") == b"first"
        assert files_on_disk(store.root) == {"a/b"}

    @pytest.mark.anyio
    async def test_name_under_an_existing_blob_is_refused_as_taken(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "a", b"a blob, not a folder")

        with pytest.raises(FileExistsError):
            await put(store, "a/b", b"x")

        assert await read_all(store, "a") == b"a blob, not a folder"
        assert files_on_disk(store.root) == {"a"}

    @pytest.mark.anyio
    async def test_the_store_satisfies_the_blob_store_protocols(
        self, store: LocalBlobStore
    ) -> None:
        typed_store: BlobStore = store

        writer: BlobWriter = typed_store.create()
        async with writer:
            await writer.write(b"via the protocol")
            await writer.commit("p")

        assert await read_all(store, "p") == b"via the protocol"


class TestFolders:
    """A commit returns once every folder on its blob's path is durable."""

    @pytest.fixture
    def synced(self, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
        synced: list[Path] = []
        real = docdesk.storage.local._sync_folder

        def recording(folder: Path) -> None:
            synced.append(folder)
            real(folder)

        monkeypatch.setattr(docdesk.storage.local, "_sync_folder", recording)
        return synced

    @pytest.mark.anyio
    async def test_a_folder_someone_else_made_has_its_parent_synced_first(
        self, store: LocalBlobStore, synced: list[Path]
    ) -> None:
        # As a concurrent commit, here or in another process, leaves it
        # before it syncs the parent.
        (store.root / "documents" / "1").mkdir(parents=True)

        await put(store, "documents/1/v1.docx", payload(1))

        assert store.root in synced
        assert store.root / "documents" in synced
        assert synced[-1] == store.root / "documents" / "1"

    @pytest.mark.anyio
    async def test_a_folder_is_synced_into_its_parent_once(
        self, store: LocalBlobStore, synced: list[Path]
    ) -> None:
        await put(store, "documents/1/v1.docx", payload(1))
        first = list(synced)
        synced.clear()
        await put(store, "documents/1/v2.docx", payload(2))
        await put(store, "documents/2/v1.docx", payload(3))

        assert first == [
            store.root,
            store.root / "documents",
            store.root / "documents" / "1",
        ]
        # After that only the blob's own folder, and the new folder's parent.
        assert synced == [
            store.root / "documents" / "1",
            store.root / "documents",
            store.root / "documents" / "2",
        ]


class TestWriterLifecycle:
    @pytest.mark.anyio
    async def test_leaving_the_block_without_commit_removes_the_temporary(
        self, store: LocalBlobStore
    ) -> None:
        async with store.create() as writer:
            await writer.write(b"never committed")
            assert len(files_on_disk(store.root)) == 1

        assert files_on_disk(store.root) == set()

    @pytest.mark.anyio
    async def test_an_exception_in_the_block_removes_the_temporary(
        self, store: LocalBlobStore
    ) -> None:
        async def write_then_fail() -> None:
            async with store.create() as writer:
                await writer.write(b"doomed")
                raise LookupError("the caller gave up")

        with pytest.raises(LookupError, match="gave up"):
            await write_then_fail()

        assert files_on_disk(store.root) == set()

    @pytest.mark.anyio
    async def test_cancelling_the_task_removes_the_temporary(
        self, store: LocalBlobStore
    ) -> None:
        with anyio.CancelScope() as scope:
            async with store.create() as writer:
                await writer.write(b"cancelled")
                scope.cancel()
                await anyio.sleep(1)

        assert scope.cancelled_caught
        assert files_on_disk(store.root) == set()

    @pytest.mark.anyio
    async def test_abort_is_idempotent_and_closes_the_writer(
        self, store: LocalBlobStore
    ) -> None:
        writer = store.create()
        await writer.write(b"x")

        await writer.abort()
        await writer.abort()

        assert files_on_disk(store.root) == set()
        with pytest.raises(ValueError, match="closed"):
            await writer.write(b"y")
        with pytest.raises(ValueError, match="closed"):
            await writer.commit("a")

    @pytest.mark.anyio
    async def test_committed_writer_cannot_be_written_or_committed_again(
        self, store: LocalBlobStore
    ) -> None:
        async with store.create() as writer:
            await writer.write(b"once")
            await writer.commit("a")

            with pytest.raises(ValueError, match="committed"):
                await writer.write(b"twice")
            with pytest.raises(ValueError, match="committed"):
                await writer.commit("b")
            await writer.abort()

        assert await read_all(store, "a") == b"once"
        assert await all_names(store) == ["a"]

    @needs_proc_fd
    @pytest.mark.anyio
    async def test_writers_release_their_file_descriptors(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "warm-up", b"x")
        before = open_fds()

        await put(store, "committed", b"x")
        async with store.create() as writer:
            await writer.write(b"aborted")

        assert open_fds() == before


class TestNames:
    @pytest.mark.parametrize("name", UNSAFE_NAMES)
    @pytest.mark.anyio
    async def test_unsafe_name_is_refused_everywhere(
        self, store: LocalBlobStore, name: str
    ) -> None:
        await put(store, "a/b", b"x")

        with pytest.raises(ValueError, match=UNSAFE):
            store.read(name)
        with pytest.raises(ValueError, match=UNSAFE):
            await store.size(name)
        with pytest.raises(ValueError, match=UNSAFE):
            await store.delete(name)
        with pytest.raises(ValueError, match=UNSAFE):
            store.path_of(name)
        with pytest.raises(ValueError, match=UNSAFE):
            await put(store, name, b"x")

        assert files_on_disk(store.root) == {"a/b"}

    @pytest.mark.anyio
    async def test_symlink_out_of_the_root_is_refused_and_nothing_outside_is_read(
        self, store: LocalBlobStore, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret").write_bytes(b"secret")
        (store.root / "escape").symlink_to(outside / "secret")
        (store.root / "away").symlink_to(outside, target_is_directory=True)
        chunks: list[bytes] = []

        for name in ("escape", "away/secret"):
            with pytest.raises(ValueError, match=OUTSIDE):
                chunks.extend([chunk async for chunk in store.read(name)])
            with pytest.raises(ValueError, match=OUTSIDE):
                await store.size(name)
            with pytest.raises(ValueError, match=OUTSIDE):
                store.path_of(name)

        assert chunks == []

    @pytest.mark.anyio
    async def test_symlinked_folder_out_of_the_root_cannot_be_written_or_deleted(
        self, store: LocalBlobStore, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret").write_bytes(b"secret")
        (store.root / "away").symlink_to(outside, target_is_directory=True)

        with pytest.raises(ValueError, match=OUTSIDE):
            await put(store, "away/new", b"x")
        with pytest.raises(ValueError, match=OUTSIDE):
            await put(store, "away/deeper/new", b"x")
        with pytest.raises(ValueError, match=OUTSIDE):
            await store.delete("away/secret")

        assert sorted(os.listdir(outside)) == ["secret"]
        assert (outside / "secret").read_bytes() == b"secret"
        assert files_on_disk(store.root) == {"away"}

    @pytest.mark.anyio
    async def test_symlink_into_staging_is_refused(self, store: LocalBlobStore) -> None:
        (store.root / "peek").symlink_to(store.root / ".staging")
        async with store.create() as writer:
            await writer.write(b"in progress")
            (temporary,) = [
                path.rpartition("/")[2]
                for path in files_on_disk(store.root)
                if path.startswith(".staging/")
            ]

            with pytest.raises(ValueError, match=OUTSIDE):
                store.path_of(f"peek/{temporary}")

    @pytest.mark.anyio
    async def test_names_are_sorted_and_filtered_by_prefix(
        self, store: LocalBlobStore
    ) -> None:
        for name in ("b", "a/b", "a-c", "a/a/z", "ab"):
            await put(store, name, b"x")

        everything = await all_names(store)
        under_a = await all_names(store, "a/")
        starting_a = await all_names(store, "a")

        assert everything == ["a-c", "a/a/z", "a/b", "ab", "b"]
        assert under_a == ["a/a/z", "a/b"]
        assert starting_a == ["a-c", "a/a/z", "a/b", "ab"]

    @pytest.mark.anyio
    async def test_names_never_include_temporaries_or_symlinks(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "kept", b"x")
        (store.root / "link").symlink_to(store.root / "kept")

        async with store.create() as writer:
            await writer.write(b"in progress")
            listed = await all_names(store)

        assert listed == ["kept"]


class TestRead:
    @pytest.mark.anyio
    async def test_read_streams_in_chunks_of_the_asked_size(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "a", payload(2, 10_000))

        sizes = [len(chunk) async for chunk in store.read("a", chunk_size=4096)]

        assert sizes == [4096, 4096, 1808]

    @pytest.mark.anyio
    async def test_missing_blob_is_not_found(self, store: LocalBlobStore) -> None:
        await put(store, "folder/blob", b"x")

        for name in ("missing", "folder", "folder/blob/deeper"):
            with pytest.raises(NotFound):
                await read_all(store, name)
            with pytest.raises(NotFound):
                await store.size(name)
            with pytest.raises(NotFound):
                store.path_of(name)

    @pytest.mark.anyio
    async def test_path_of_gives_the_file_inside_the_root(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "a/b", b"content")

        path = store.path_of("a/b")

        assert path.is_relative_to(store.root)
        assert path.read_bytes() == b"content"

    @needs_proc_fd
    @pytest.mark.anyio
    async def test_stopping_a_read_early_releases_the_file(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "a", payload(3))
        await read_all(store, "a")
        before = open_fds()

        async for _ in store.read("a", chunk_size=1024):
            break
        await settle()

        assert open_fds() == before

    @needs_proc_fd
    @pytest.mark.anyio
    async def test_closing_a_read_releases_the_file_at_once(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "a", payload(3))
        await read_all(store, "a")
        before = open_fds()

        chunks = store.read("a", chunk_size=1024)
        async with contextlib.aclosing(chunks):
            async for _ in chunks:
                assert open_fds() == before + 1
                break

        assert open_fds() == before


class TestDeleteAndSweep:
    @pytest.mark.anyio
    async def test_delete_removes_only_that_blob(self, store: LocalBlobStore) -> None:
        await put(store, "a/1", b"one")
        await put(store, "a/2", b"two")

        await store.delete("a/1")

        assert await all_names(store) == ["a/2"]
        with pytest.raises(NotFound):
            await store.size("a/1")

    @pytest.mark.anyio
    async def test_deleting_a_missing_blob_is_fine(self, store: LocalBlobStore) -> None:
        await put(store, "a/1", b"one")

        await store.delete("missing")
        await store.delete("a/missing")
        await store.delete("nowhere/missing")
        await store.delete("a")

        assert await all_names(store) == ["a/1"]

    @pytest.mark.anyio
    async def test_sweep_removes_old_temporaries_and_keeps_fresh_ones(
        self, store: LocalBlobStore
    ) -> None:
        stale = store.create()
        await stale.write(b"abandoned")
        (stale_file,) = files_on_disk(store.root)
        old = time.time() - 7200
        os.utime(store.root / stale_file, (old, old))

        async with store.create() as fresh:
            await fresh.write(b"live")
            removed = await store.sweep_staging(older_than=3600)
            await fresh.commit("fresh")

        assert removed == 1
        assert files_on_disk(store.root) == {"fresh"}
        with pytest.raises(StorageError):
            await stale.commit("stale")
        assert files_on_disk(store.root) == {"fresh"}

    @pytest.mark.anyio
    async def test_killed_writers_leave_whole_blobs_and_sweepable_temporaries(
        self, store: LocalBlobStore
    ) -> None:
        # Real processes sharing the store, each killed at its own random
        # instant while it writes and commits: every name must hold whole
        # bytes; only temporaries may be left half-written.
        script = textwrap.dedent(
            """
            import hashlib, sys, anyio
            from pathlib import Path
            from docdesk.storage.local import LocalBlobStore

            async def main(root, writer_id):
                store = LocalBlobStore(Path(root))
                print("ready", flush=True)
                for i in range(100_000):
                    block = hashlib.sha256(str(i).encode()).digest()
                    data = (block * 3126)[:100_000]
                    async with store.create() as writer:
                        for at in range(0, len(data), 8192):
                            await writer.write(data[at : at + 8192])
                        await writer.commit(f"kill/{writer_id}/{i:05d}")

            anyio.run(main, sys.argv[1], sys.argv[2])
            """
        )
        writer_ids = ["a", "b"]

        async def run_and_kill(writer_id: str) -> None:
            command = [sys.executable, "-c", script, str(store.root), writer_id]
            async with await anyio.open_process(command) as child:
                assert child.stdout is not None
                output = BufferedByteReceiveStream(child.stdout)
                assert await output.receive_until(b"\n", 64) == b"ready"
                await anyio.sleep(random.uniform(0.01, 0.2))
                child.kill()
                await child.wait()

        async with anyio.create_task_group() as group:
            for writer_id in writer_ids:
                group.start_soon(run_and_kill, writer_id)

        names = await all_names(store)
        for writer_id in writer_ids:
            written = await all_names(store, f"kill/{writer_id}/")
            assert written == [f"kill/{writer_id}/{i:05d}" for i in range(len(written))]
            for i, name in enumerate(written):
                assert await read_all(store, name) == payload(i)
        leftovers = files_on_disk(store.root) - set(names)
        assert await store.sweep_staging(older_than=0) == len(leftovers)
        assert files_on_disk(store.root) == set(names)


class TestDiskFailures:
    @pytest.mark.anyio
    async def test_full_disk_while_writing_leaves_nothing_behind(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        writer = store.create()
        await writer.write(b"fits")
        fail_once(monkeypatch, "write", code=errno.ENOSPC)

        with pytest.raises(StorageError) as caught:
            await writer.write(b"does not fit")

        assert caught.value.errno == errno.ENOSPC
        assert caught.value.transient
        assert files_on_disk(store.root) == set()
        with pytest.raises(ValueError, match="closed"):
            await writer.commit("a/b")

    @pytest.mark.anyio
    async def test_full_disk_at_commit_names_the_blob_but_no_path(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        fail_once(monkeypatch, "fsync", is_file_fd, code=errno.ENOSPC)

        with pytest.raises(StorageError) as caught:
            await put(store, "documents/7/v2.docx", b"delayed allocation")

        assert "'documents/7/v2.docx'" in str(caught.value)
        assert "No space left on device" in str(caught.value)
        assert str(tmp_path) not in str(caught.value)
        assert caught.value.errno == errno.ENOSPC
        assert files_on_disk(store.root) == set()

    @pytest.mark.parametrize(
        ("function", "when"),
        [
            pytest.param("fsync", is_file_fd, id="fsync of the file"),
            pytest.param("mkdir", lambda *args: True, id="mkdir"),
            pytest.param("fsync", is_folder_fd, id="fsync of a new folder's parent"),
            pytest.param("link", lambda *args: True, id="link"),
        ],
    )
    @pytest.mark.anyio
    async def test_failure_before_the_link_leaves_no_blob_and_the_name_free(
        self,
        store: LocalBlobStore,
        monkeypatch: pytest.MonkeyPatch,
        function: str,
        when: Callable[..., bool],
    ) -> None:
        fail_once(monkeypatch, function, when)
        data = payload(4)

        with pytest.raises(StorageError):
            await put(store, "new/folder/blob", data)

        assert files_on_disk(store.root) == set()
        await put(store, "new/folder/blob", data)
        assert await read_all(store, "new/folder/blob") == data

    @pytest.mark.anyio
    async def test_failed_fsync_of_the_folder_takes_the_new_name_back(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await put(store, "folder/sibling", b"makes the folder exist")
        data = payload(5)
        final = store.root / "folder" / "blob"
        seen: list[bytes] = []
        fail_once(
            monkeypatch,
            "fsync",
            is_folder_fd,
            seen=lambda: seen.append(final.read_bytes()),
        )

        with pytest.raises(StorageError):
            await put(store, "folder/blob", data)

        assert seen == [data]
        assert files_on_disk(store.root) == {"folder/sibling"}
        await put(store, "folder/blob", data)
        assert await read_all(store, "folder/blob") == data

    @pytest.mark.anyio
    async def test_when_even_the_take_back_fails_the_blob_left_is_whole(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await put(store, "folder/sibling", b"makes the folder exist")
        data = payload(6)
        fail_once(monkeypatch, "fsync", is_folder_fd)
        fail_once(monkeypatch, "unlink", lambda path: Path(path).name == "blob")

        with pytest.raises(StorageError):
            await put(store, "folder/blob", data)

        assert await read_all(store, "folder/blob") == data
        assert files_on_disk(store.root) == {"folder/sibling", "folder/blob"}
        with pytest.raises(FileExistsError):
            await put(store, "folder/blob", b"other bytes")

    @pytest.mark.anyio
    async def test_temporary_that_cannot_be_unlinked_leaves_a_whole_blob(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = payload(7)
        fail_once(monkeypatch, "unlink")

        async with store.create() as writer:
            await writer.write(data)
            await writer.commit("a/b")

        assert await read_all(store, "a/b") == data
        assert writer.digest.sha256 == hashlib.sha256(data).hexdigest()
        assert await store.sweep_staging(older_than=0) == 1
        assert files_on_disk(store.root) == {"a/b"}
        assert await read_all(store, "a/b") == data
        await put(store, "a/c", data)
        assert await all_names(store) == ["a/b", "a/c"]


class TestLargeWrites:
    @pytest.mark.anyio
    async def test_chunks_of_every_size_read_back_whole_with_their_digest(
        self, store: LocalBlobStore
    ) -> None:
        data = random.Random(10).randbytes(7 * MiB + 12_345)
        digests: list[tuple[int, str]] = []
        expected: list[tuple[int, str]] = []

        async with store.create() as writer:
            at, turn = 0, 0
            while at < len(data):
                size = MIXED_CHUNKS[turn % len(MIXED_CHUNKS)]
                await writer.write(data[at : at + size])
                at, turn = min(at + size, len(data)), turn + 1
                # The digest counts each chunk when its write returns, even
                # while the disk still has it.
                digests.append((writer.digest.size, writer.digest.sha256))
                expected.append((at, hashlib.sha256(data[:at]).hexdigest()))
            await writer.commit("big")

        assert await read_all(store, "big") == data
        assert digests == expected
        assert writer.digest.head == data[:4096]
        assert writer.digest.tail == data[-TAIL_SIZE:]

    @pytest.mark.anyio
    async def test_a_slow_disk_does_not_hold_the_writer(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        slow_disk(monkeypatch, 0.5)
        data = payload(11, MiB)

        async with store.create() as writer:
            started = time.monotonic()
            await writer.write(data)
            returned = time.monotonic() - started
            await writer.commit("slow")
            committed = time.monotonic() - started

        assert returned < 0.25
        assert committed >= 0.5
        assert await read_all(store, "slow") == data

    @pytest.mark.anyio
    async def test_a_file_system_without_direct_io_gets_the_same_bytes(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = fcntl.fcntl
        refused: list[int] = []

        def no_direct_io(fd: int, command: int, arg: int = 0) -> Any:
            if command == fcntl.F_SETFL and arg & O_DIRECT:
                refused.append(fd)
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return real(fd, command, arg)

        monkeypatch.setattr(fcntl, "fcntl", no_direct_io)
        data = random.Random(12).randbytes(3 * MiB + 5)

        async with store.create() as writer:
            await write_in_chunks(writer, data, MIXED_CHUNKS)
            await writer.commit("cached")

        assert len(refused) == (1 if O_DIRECT else 0)
        assert await read_all(store, "cached") == data

    @pytest.mark.anyio
    async def test_a_direct_write_refused_by_the_disk_goes_through_the_cache(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if not direct_io_works(store.root):
            pytest.skip("no direct I/O here")
        refused: list[None] = []
        fail_once(
            monkeypatch,
            "write",
            is_direct,
            code=errno.EINVAL,
            seen=lambda: refused.append(None),
        )
        data = random.Random(13).randbytes(3 * MiB + 5)

        async with store.create() as writer:
            await write_in_chunks(writer, data, [MiB])
            await writer.commit("fallback")

        assert refused == [None]
        assert await read_all(store, "fallback") == data

    @pytest.mark.parametrize(
        ("chunks", "surfaces"),
        [(1, "commit"), (8, "write")],
        ids=["at commit", "at a write"],
    )
    @pytest.mark.anyio
    async def test_full_disk_behind_the_writer_fails_it_and_leaves_nothing(
        self,
        store: LocalBlobStore,
        monkeypatch: pytest.MonkeyPatch,
        chunks: int,
        surfaces: str,
    ) -> None:
        # The write fails in the writer's thread: the next write raises once
        # the failure is in, or else the commit.
        fail_once(monkeypatch, "write", lambda *args: len(args[1]) >= 65_536)
        writer = store.create()
        steps: list[str] = []

        async def write_then_commit() -> None:
            async with writer:
                for _ in range(chunks):
                    steps.append("write")
                    await writer.write(payload(14, MiB))
                    await anyio.sleep(0.05)
                steps.append("commit")
                await writer.commit("never")

        with pytest.raises(StorageError) as caught:
            await write_then_commit()

        assert steps[-1] == surfaces
        assert caught.value.errno == errno.EIO
        assert caught.value.transient
        assert files_on_disk(store.root) == set()
        assert writing_threads() == []
        with pytest.raises(ValueError, match="closed"):
            await writer.write(b"more")

    @pytest.mark.anyio
    async def test_abort_with_writes_queued_removes_the_temporary_and_thread(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        slow_disk(monkeypatch, 0.05)
        writer = store.create()
        for seed in range(4):
            await writer.write(payload(seed, MiB))

        await writer.abort()

        assert files_on_disk(store.root) == set()
        assert writing_threads() == []

    @pytest.mark.anyio
    async def test_cancelling_a_write_that_waits_for_the_disk_cleans_up(
        self, store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        slow_disk(monkeypatch, 0.1)
        data = payload(15, MiB)

        with anyio.move_on_after(0.3) as scope:
            async with store.create() as writer:
                # Bounded, so that a writer which never waits fails the test
                # rather than filling memory.
                for _ in range(64):
                    await writer.write(data)

        assert scope.cancelled_caught
        assert files_on_disk(store.root) == set()
        assert writing_threads() == []

    @needs_proc_fd
    @pytest.mark.anyio
    async def test_large_writers_release_their_file_descriptors_and_threads(
        self, store: LocalBlobStore
    ) -> None:
        await put(store, "warm-up", b"x")
        before = open_fds()
        data = payload(16, 3 * MiB + 7)

        await put(store, "committed", data)
        async with store.create() as writer:
            await writer.write(data)

        assert open_fds() == before
        assert writing_threads() == []


class TestConcurrency:
    @pytest.mark.anyio
    async def test_twenty_writers_commit_different_names_at_once(
        self, store: LocalBlobStore
    ) -> None:
        names = [f"documents/{i:02d}/v1" for i in range(20)]

        async with anyio.create_task_group() as group:
            for i, name in enumerate(names):
                group.start_soon(put, store, name, payload(i))

        assert await all_names(store) == names
        for i, name in enumerate(names):
            assert await read_all(store, name) == payload(i)
        assert files_on_disk(store.root) == set(names)

    @pytest.mark.anyio
    async def test_two_writers_racing_for_one_name_exactly_one_wins(
        self, store: LocalBlobStore
    ) -> None:
        contenders = {"first": payload(8), "second": payload(9)}
        writers = {label: store.create() for label in contenders}
        for label, writer in writers.items():
            await writer.write(contenders[label])
        outcomes: dict[str, str] = {}

        async def commit(label: str) -> None:
            try:
                await writers[label].commit("contested")
                outcomes[label] = "won"
            except FileExistsError:
                outcomes[label] = "refused"
            finally:
                await writers[label].abort()

        async with anyio.create_task_group() as group:
            for label in contenders:
                group.start_soon(commit, label)

        assert sorted(outcomes.values()) == ["refused", "won"]
        (winner,) = [label for label, outcome in outcomes.items() if outcome == "won"]
        assert await read_all(store, "contested") == contenders[winner]
        assert files_on_disk(store.root) == {"contested"}
