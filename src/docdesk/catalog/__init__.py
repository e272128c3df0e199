"""The catalog: what docdesk knows about its documents, on SQLAlchemy."""

from docdesk.catalog.records import (
    CallbackRecord,
    DocumentRecord,
    KeyRecord,
    NewVersion,
    RecoveryRecord,
    VersionRecord,
    VersionSource,
)
from docdesk.catalog.store import Catalog

__all__ = [
    "CallbackRecord",
    "Catalog",
    "DocumentRecord",
    "KeyRecord",
    "NewVersion",
    "RecoveryRecord",
    "VersionRecord",
    "VersionSource",
]
