"""What a blob store promises.

docdesk keeps file bytes as immutable blobs named by the catalog. A blob is
written once, through a :class:`BlobWriter`, and then only read or deleted:
nothing is ever overwritten in place, so a crash at any instant leaves every
committed blob whole.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from docdesk.errors import StorageError

__all__ = [
    "OWN_NAME",
    "BlobStore",
    "BlobWriter",
    "Digest",
    "commit_new",
    "new_blob_stem",
    "validate_blob_name",
    "walk_names",
]

HEAD_SIZE = 4096
# A zip's end-of-central-directory record lies within the last 64 KiB + 22
# bytes, so keeping that much lets a format check run on a streamed file.
TAIL_SIZE = 65_557


# The names docdesk gives blobs: ``documents/`` for a document's versions
# and what came with them, ``recovery/`` for files kept aside, then the
# document's id, 64 random bits and the extensions. A sweep removes only
# names of this shape: anything else in a store is not docdesk's.
OWN_NAME = re.compile(r"(documents|recovery)/[0-9a-f]{16}/[0-9a-f]{16}(\.[a-z0-9]+)+")


def new_blob_stem(area: str, document_id: str) -> str:
    """A fresh name under ``area`` for a blob of the document, before the dot."""
    return f"{area}/{document_id}/{secrets.token_hex(8)}"


async def commit_new(writer: BlobWriter, name: str) -> None:
    """Commit ``writer`` under a name from new_blob_stem.

    Such a name is taken already only when the store met its own earlier try
    at this very commit (a request sent again after its answer was lost):
    that object is an orphan for the sweep, and the save fails with a
    transient StorageError, so that it is tried again under a new name.
    """
    try:
        await writer.commit(name)
    except FileExistsError:
        raise StorageError(f"the new blob's name was taken: {name}") from None


async def walk_names(
    list_folder: Callable[[str], Awaitable[list[tuple[str, bool]]]], prefix: str
) -> AsyncIterator[str]:
    """The names under the root that start with ``prefix``, in sorted order.

    ``list_folder`` gives a folder's entries, sorted, as ``(name, is_folder)``
    with names from the root; ``""`` is the root. Folders that cannot hold a
    match are skipped, and memory holds only the listings of the folders on
    the current path, not every name.
    """
    pending = [iter(await list_folder(""))]
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
            pending.append(iter(await list_folder(name)))


def validate_blob_name(name: str) -> str:
    """Return ``name`` if it is a safe relative blob name, else raise ValueError.

    Names are built by docdesk, never taken from a request; this is the last
    line of defence against one that would escape the store's root.
    """
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or any(part in ("", ".", "..") or part.startswith(".") for part in parts)
    ):
        raise ValueError(f"unsafe blob name: {name!r}")
    return name


class Digest:
    """Counts, hashes and remembers the ends of a byte stream as it passes.

    Memory stays bounded by HEAD_SIZE + 2 * TAIL_SIZE whatever the length.
    """

    def __init__(self) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()
        self.head = b""
        self._tail = bytearray()

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._sha256.update(chunk)
        if len(self.head) < HEAD_SIZE:
            self.head += chunk[: HEAD_SIZE - len(self.head)]
        if len(chunk) >= TAIL_SIZE:
            # The chunk holds the whole tail: copied once, not sliced, then
            # appended, then trimmed.
            self._tail[:] = memoryview(chunk)[-TAIL_SIZE:]
            return
        self._tail += chunk
        if len(self._tail) > 2 * TAIL_SIZE:
            del self._tail[:-TAIL_SIZE]

    @property
    def tail(self) -> bytes:
        return bytes(self._tail[-TAIL_SIZE:])

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


class BlobWriter(Protocol):
    """A blob being written: chunks go in, then one ``commit`` names it.

    Used as an async context manager; leaving the block without a commit
    discards everything written.
    """

    digest: Digest

    async def write(self, chunk: bytes) -> None:
        """Take the blob's next bytes; ``digest`` counts them on return.

        The bytes may still be on their way to storage when this returns;
        if storing them fails, a later ``write`` or the ``commit`` raises.
        """
        ...

    async def commit(self, name: str) -> None:
        """Make the blob durable under ``name``.

        Create-only: raises FileExistsError when ``name`` already exists.
        When this returns, the bytes survive a crash of the process or the
        machine.
        """
        ...

    async def abort(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BlobStore(Protocol):
    """Immutable named blobs: create-only writes, streamed reads."""

    def create(self) -> BlobWriter:
        """Start a new blob; nothing is visible until its ``commit``."""
        ...

    def read(self, name: str, *, chunk_size: int = 262_144) -> AsyncIterator[bytes]:
        """Stream a blob's bytes; raises NotFound if there is none."""
        ...

    async def size(self, name: str) -> int:
        """The blob's size in bytes; raises NotFound if there is none."""
        ...

    async def modified(self, name: str) -> datetime:
        """When the blob was last written or committed (aware, UTC).

        At most moments before its commit returned, never long before: a
        blob whose version is still being recorded looks young, which the
        orphan sweep relies on. Raises NotFound if there is none.
        """
        ...

    async def delete(self, name: str) -> None:
        """Remove a blob; removing one that is not there is not an error."""
        ...

    def names(self, prefix: str = "") -> AsyncIterator[str]:
        """Every committed blob name that starts with ``prefix``."""
        ...

    async def close(self) -> None: ...
