"""Blobs kept as read-only files under one root folder.

A blob's bytes go to a temporary file in the root's ``.staging`` folder and
are synced to disk before ``os.link`` gives them their name; a link is atomic
and refuses a name that exists, so at every instant a name leads to nothing or
to a whole, synced file. The folder that holds the new name is synced before
the commit returns, so a commit that returned survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

import anyio
import anyio.to_thread

from docdesk.errors import NotFound, StorageError
from docdesk.storage.base import Digest, validate_blob_name

if TYPE_CHECKING:
    from io import FileIO

    from docdesk.storage.base import BlobStore, BlobWriter

__all__ = ["LocalBlobStore", "LocalBlobWriter"]

logger = logging.getLogger(__name__)

# No blob name can reach it: validate_blob_name refuses parts starting with ".".
STAGING = ".staging"
# Read-only from birth, so nothing rewrites a blob in place.
BLOB_MODE = 0o440
MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP)


class LocalBlobStore:
    """Immutable blobs as files under ``root``; ``/`` in a name is a folder.

    Temporaries live in ``root/.staging``, on the same file system as the
    blobs so that a commit is a link. Blocking file work runs in worker
    threads, never on the event loop.
    """

    def __init__(self, root: Path) -> None:
        _make_folders(root.absolute())
        self.root = root.resolve()
        self._staging = self.root / STAGING
        self._staging.mkdir(exist_ok=True)

    def create(self) -> LocalBlobWriter:
        return LocalBlobWriter(self)

    def read(
        self, name: str, *, chunk_size: int = 262_144
    ) -> AsyncGenerator[bytes, None]:
        """Stream a blob in chunks of ``chunk_size`` bytes.

        The name is checked at once; NotFound comes with the first chunk, so
        a web handler that must answer 404 asks :meth:`size` first. Close the
        iterator (``contextlib.aclosing``) when stopping early to release the
        file at once rather than when the event loop finalizes it.
        """
        validate_blob_name(name)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        return self._chunks(name, chunk_size)

    async def size(self, name: str) -> int:
        validate_blob_name(name)
        _, status = await anyio.to_thread.run_sync(self._locate, name)
        return status.st_size

    async def delete(self, name: str) -> None:
        validate_blob_name(name)
        await anyio.to_thread.run_sync(self._delete, name)

    async def names(self, prefix: str = "") -> AsyncIterator[str]:
        """Committed names starting with ``prefix``, in sorted order.

        The tree is walked one folder at a time, skipping folders that cannot
        hold a match; memory holds only the listings of the folders on the
        current path, not every name.
        """
        pending = [iter(await anyio.to_thread.run_sync(self._list_folder, ""))]
        while pending:
            entry = next(pending[-1], None)
            if entry is None:
                pending.pop()
                continue

            name, is_folder = entry
            if not is_folder:
                if name.startswith(prefix):
                    yield name
            elif (name + "/").startswith(prefix) or prefix.startswith(name + "/"):
                listing = await anyio.to_thread.run_sync(self._list_folder, name)
                pending.append(iter(listing))

    async def close(self) -> None:
        """Nothing to release: files are opened per read and per writer."""

    def path_of(self, name: str) -> Path:
        """The resolved path of an existing blob, for a zero-copy file response.

        Raises NotFound if there is none, ValueError if the name is unsafe or
        leads out of the store. Costs a few metadata calls on the caller's
        thread.
        """
        validate_blob_name(name)
        return self._locate(name)[0]

    async def sweep_staging(self, older_than: float = 3600.0) -> int:
        """Remove temporaries untouched for ``older_than`` seconds; say how many.

        They are what a crash leaves behind. A writer's temporary is touched
        on each write, so keep ``older_than`` above the longest pause in a
        write: a swept writer fails its commit with StorageError.
        """
        cutoff = time.time() - older_than
        removed = await anyio.to_thread.run_sync(self._sweep, cutoff)
        if removed:
            logger.info("staging swept removed=%d", removed)
        return removed

    async def _chunks(self, name: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        file = await anyio.to_thread.run_sync(self._open_blob, name)
        try:
            while chunk := await anyio.to_thread.run_sync(
                _read_chunk, file, chunk_size, name
            ):
                yield chunk
        finally:
            file.close()

    def _locate(self, name: str) -> tuple[Path, os.stat_result]:
        """Resolve ``name`` to a regular file inside the root, or raise.

        The one place a name becomes a path to read: symlinks are followed
        and the result must still lie inside the root and outside staging.
        """
        try:
            path = (self.root / name).resolve(strict=True)
            self._check_inside(path, name)
            status = path.stat()
        except RuntimeError as exc:  # a symlink loop, before Python 3.13
            raise NotFound(f"no blob named {name!r}") from exc
        except OSError as exc:
            if exc.errno in MISSING:
                raise NotFound(f"no blob named {name!r}") from exc
            raise _storage_error("look up", name, exc) from exc

        if not stat.S_ISREG(status.st_mode):
            raise NotFound(f"no blob named {name!r}")
        return path, status

    def _folder_of(self, name: str) -> Path:
        """The resolved folder that holds (or will hold) ``name``."""
        try:
            folder = (self.root / name).parent.resolve()
        except OSError as exc:
            raise _storage_error("look up", name, exc) from exc
        if folder != self.root:
            self._check_inside(folder, name)
        return folder

    def _check_inside(self, path: Path, name: str) -> None:
        if not path.is_relative_to(self.root) or path.is_relative_to(self._staging):
            raise ValueError(f"blob name leads out of the store: {name!r}")

    def _open_blob(self, name: str) -> FileIO:
        path, _ = self._locate(name)
        try:
            return open(path, "rb", buffering=0)
        except OSError as exc:
            if exc.errno in MISSING:
                raise NotFound(f"no blob named {name!r}") from exc
            raise _storage_error("read", name, exc) from exc

    def _delete(self, name: str) -> None:
        folder = self._folder_of(name)
        try:
            os.unlink(folder / name.rpartition("/")[2])
        except OSError as exc:
            if exc.errno in MISSING:
                return
            raise _storage_error("delete", name, exc) from exc

        try:
            _sync_folder(folder)
        except OSError as exc:
            raise _storage_error("delete", name, exc) from exc

    def _list_folder(self, folder: str) -> list[tuple[str, bool]]:
        """Names of the blobs and sub-folders directly in ``folder``, sorted.

        Symlinks, dot entries (staging among them) and names a blob could not
        have are left out.
        """
        entries: list[tuple[str, bool]] = []
        try:
            with os.scandir(self.root / folder) as scan:
                for entry in scan:
                    name = f"{folder}/{entry.name}" if folder else entry.name
                    if entry.name.startswith(".") or not _is_valid(name):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        entries.append((name, True))
                    elif entry.is_file(follow_symlinks=False):
                        entries.append((name, False))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _storage_error("list", folder or "/", exc) from exc

        # Sorting a folder as "name/" makes the depth-first walk in names()
        # yield whole names in plain string order ("a-b" before "a/b").
        entries.sort(key=lambda entry: entry[0] + "/" if entry[1] else entry[0])
        return entries

    def _sweep(self, cutoff: float) -> int:
        removed = 0
        try:
            with os.scandir(self._staging) as scan:
                for entry in scan:
                    # A temporary may vanish meanwhile: its writer finished.
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed += 1
        except OSError as exc:
            raise _storage_error("sweep", STAGING, exc) from exc
        return removed


class LocalBlobWriter:
    """One blob being written to a temporary file until :meth:`commit`.

    Not for use by several tasks at once. Leaving the ``async with`` block
    without a commit, or on an exception, removes the temporary.
    """

    def __init__(self, store: LocalBlobStore) -> None:
        self.digest = Digest()
        self._store = store
        self._temporary: Path | None = None
        self._fd: int | None = None
        self._state: Literal["writing", "committed", "closed"] = "writing"

    async def __aenter__(self) -> Self:
        await self._ensure_temporary()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.abort()

    async def write(self, chunk: bytes) -> None:
        self._check_writing()
        fd = await self._ensure_temporary()

        # A write into the page cache is quick, so it runs inline; the slow
        # part, fsync, runs off the event loop in commit.
        # XXX: under dirty-page throttling os.write can block the event loop
        # for a while; a thread per chunk costs a hop each. The 1 GiB save
        # benchmark should decide.
        try:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            await self.abort()
            raise _storage_error("write", None, exc) from exc
        self.digest.update(chunk)

    async def commit(self, name: str) -> None:
        """Make the blob durable under ``name``, create-only.

        Raises FileExistsError if ``name`` exists (it is left untouched),
        StorageError if the disk fails us, ValueError for an unsafe name. Once
        commit has raised, the writer is closed and its temporary removed,
        and ``name`` is free again unless something else holds it.
        """
        self._check_writing()
        await self._ensure_temporary()

        # The worker thread runs to its end even if this task is cancelled,
        # so the writer's state always matches the disk.
        await anyio.to_thread.run_sync(self._commit, name)
        logger.debug("blob committed name=%s bytes=%d", name, self.digest.size)

    async def abort(self) -> None:
        """Discard what was written; safe to repeat, a no-op after commit."""
        if self._state != "writing":
            return

        self._state = "closed"
        # Shielded: a cancelled task must still remove its temporary.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._discard)

    def _check_writing(self) -> None:
        if self._state != "writing":
            raise ValueError(f"blob writer is {self._state}")

    async def _ensure_temporary(self) -> int:
        if self._fd is not None:
            return self._fd

        staging = self._store._staging
        temporary, fd = await anyio.to_thread.run_sync(_new_temporary, staging)
        self._temporary, self._fd = temporary, fd
        return fd

    def _commit(self, name: str) -> None:
        try:
            self._link(name)
        except BaseException:
            self._state = "closed"
            self._discard()
            raise
        self._state = "committed"

    def _link(self, name: str) -> None:
        """Sync the bytes, then give them ``name``; each step in its order."""
        assert self._fd is not None
        assert self._temporary is not None
        validate_blob_name(name)
        folder = self._store._folder_of(name)
        final = folder / name.rpartition("/")[2]

        fd, self._fd = self._fd, None
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _storage_error("commit", name, exc) from exc

        # NotADirectoryError: a blob sits where a folder of the name would go.
        try:
            _make_folders(folder)
            os.link(self._temporary, final)
        except (FileExistsError, NotADirectoryError) as exc:
            raise FileExistsError(errno.EEXIST, "blob name is taken", name) from exc
        except OSError as exc:
            raise _storage_error("commit", name, exc) from exc

        temporary, self._temporary = self._temporary, None
        try:
            os.unlink(temporary)
        except OSError as exc:
            # The blob is whole; the extra link only wastes a name until the
            # next sweep_staging.
            logger.warning("staging file kept name=%s error=%s", name, exc.strerror)

        try:
            _sync_folder(folder)
        except OSError as exc:
            # The new name may not survive a power cut: take it back, so that
            # nobody records it and a retry can use it.
            try:
                os.unlink(final)
            except OSError:
                logger.warning("failed commit left its blob name=%s", name)
            raise _storage_error("commit", name, exc) from exc

    def _discard(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

        if self._temporary is not None:
            temporary, self._temporary = self._temporary, None
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            except OSError as exc:
                # sweep_staging removes it later; the caller's error matters more.
                logger.warning("staging file kept error=%s", exc.strerror)


def _new_temporary(staging: Path) -> tuple[Path, int]:
    path = staging / f"{secrets.token_hex(16)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        # The open that creates a read-only file may still write to it.
        return path, os.open(path, flags, BLOB_MODE)
    except OSError as exc:
        raise _storage_error("start", None, exc) from exc


def _read_chunk(file: FileIO, size: int, name: str) -> bytes:
    try:
        return file.read(size) or b""
    except OSError as exc:
        raise _storage_error("read", name, exc) from exc


def _make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing ancestors, each new entry synced."""
    if folder.is_dir():
        # XXX: a folder that a concurrent commit has just made may not be
        # synced into its parent yet, so a commit into it can return a moment
        # before its name is durable. Harmless while the first commits into a
        # new folder do not race each other; no test.
        return

    _make_folders(folder.parent)
    # A concurrent commit may create it first; sync its parent anyway, as
    # that commit may not have yet.
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder)
    _sync_folder(folder.parent)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_valid(name: str) -> bool:
    try:
        validate_blob_name(name)
    except ValueError:
        return False
    return True


def _storage_error(action: str, name: str | None, exc: OSError) -> StorageError:
    """A StorageError naming the blob, never the machine's paths."""
    target = f"blob {name!r}" if name else "a new blob"
    reason = exc.strerror or type(exc).__name__
    error = StorageError(f"could not {action} {target}: {reason}")
    # errno lets a caller tell a full disk from a broken one; strerror is left
    # unset so that str() keeps the message above.
    error.errno = exc.errno
    return error


if TYPE_CHECKING:

    def _satisfies(
        store: LocalBlobStore, writer: LocalBlobWriter
    ) -> tuple[BlobStore, BlobWriter]:
        """Type-checked only: proves both classes satisfy their protocols."""
        return store, writer
