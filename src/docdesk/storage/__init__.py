"""Blob stores: where docdesk keeps file bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit
from urllib.request import url2pathname

from docdesk.errors import ConfigurationError
from docdesk.storage.base import (
    OWN_NAME,
    BlobStore,
    BlobWriter,
    Digest,
    commit_new,
    new_blob_stem,
)

__all__ = [
    "OWN_NAME",
    "BlobStore",
    "BlobWriter",
    "Digest",
    "commit_new",
    "new_blob_stem",
    "open_store",
    "sweep_staging",
]

# What a writer left in staging is swept once it is this old (seconds): well
# above the longest write or commit, so a live writer is never swept.
STAGING_MAX_AGE = 3600.0


@runtime_checkable
class _Sweeps(Protocol):
    async def sweep_staging(self, older_than: float = ...) -> int: ...


def open_store(url: str) -> BlobStore:
    """The blob store a ``DOCDESK_STORAGE_URL`` names.

    ``file:///path`` is a folder; ``s3://bucket/prefix?endpoint=...&region=...``
    a prefix in an S3-compatible bucket, its credentials taken from the
    ``AWS_*`` variables. A bad URL raises ConfigurationError.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        from docdesk.storage.local import LocalBlobStore

        return LocalBlobStore(Path(url2pathname(parts.path)))
    if parts.scheme == "s3":
        return _open_s3(url)
    raise ConfigurationError(
        f"DOCDESK_STORAGE_URL has an unsupported scheme {parts.scheme!r}: "
        "use file:///path or s3://bucket/prefix?endpoint=https://host"
    )


def _open_s3(url: str) -> BlobStore:
    # Imported here: obstore is an optional dependency (the extra ``s3``).
    try:
        from docdesk.storage.s3 import S3BlobStore
    except ImportError as exc:
        raise ConfigurationError(
            "DOCDESK_STORAGE_URL names S3 storage, which needs obstore: "
            "pip install 'docdesk[s3]'"
        ) from exc
    return S3BlobStore.from_url(url)


async def sweep_staging(store: BlobStore, older_than: float = STAGING_MAX_AGE) -> int:
    """Remove what crashed writers left in ``store``'s staging area; say how many.

    Both stores docdesk ships keep unfinished blobs apart from committed
    ones (local temporaries, S3 staging objects and claims); a crash leaves
    them there. Safe to run on every instance at any time: only what is
    older than ``older_than`` seconds goes. A store without staging sweeps
    nothing.
    """
    if isinstance(store, _Sweeps):
        return await store.sweep_staging(older_than)
    return 0
