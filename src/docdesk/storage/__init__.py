"""Blob stores: where docdesk keeps file bytes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from docdesk.errors import ConfigurationError
from docdesk.storage.base import BlobStore, BlobWriter, Digest

__all__ = ["BlobStore", "BlobWriter", "Digest", "open_store"]


def open_store(url: str) -> BlobStore:
    """The blob store a ``DOCDESK_STORAGE_URL`` names."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        from docdesk.storage.local import LocalBlobStore

        return LocalBlobStore(Path(url2pathname(parts.path)))
    raise ConfigurationError(
        f"DOCDESK_STORAGE_URL has an unsupported scheme {parts.scheme!r}: "
        "use file:///path"
    )
