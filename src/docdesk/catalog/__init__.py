"""The catalog: what docdesk knows about its documents, on SQLAlchemy."""

from docdesk.catalog.records import (
    CallbackRecord,
    CaptureRecord,
    DocumentRecord,
    EditorsSet,
    KeyRecord,
    NewVersion,
    RecoveryRecord,
    VersionRecord,
    VersionSource,
    is_document_id,
)
from docdesk.catalog.store import Catalog

__all__ = [
    "CallbackRecord",
    "CaptureRecord",
    "Catalog",
    "DocumentRecord",
    "EditorsSet",
    "KeyRecord",
    "NewVersion",
    "RecoveryRecord",
    "VersionRecord",
    "VersionSource",
    "is_document_id",
]
