"""Blob stores: where docdesk keeps file bytes."""

from docdesk.storage.base import BlobStore, BlobWriter, Digest

__all__ = ["BlobStore", "BlobWriter", "Digest"]
