"""What the catalog hands out: frozen records, never live rows."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any

__all__ = [
    "DOCUMENT_ID",
    "CallbackRecord",
    "CaptureRecord",
    "DocumentRecord",
    "EditorsSet",
    "KeyRecord",
    "NewVersion",
    "RecoveryRecord",
    "VersionRecord",
    "VersionSource",
    "is_document_id",
]


# The ids docdesk gives documents: 64 random bits in hex.
DOCUMENT_ID = re.compile(r"[0-9a-f]{16}")


def is_document_id(value: str) -> bool:
    return DOCUMENT_ID.fullmatch(value) is not None


class VersionSource(StrEnum):
    """What made a version."""

    UPLOAD = "upload"
    NEW = "new"
    SAVE = "save"
    FORCESAVE = "forcesave"
    RESTORE = "restore"
    RECOVERY = "recovery"


@dataclass(frozen=True, kw_only=True)
class DocumentRecord:
    id: str
    title: str
    file_type: str
    current_version: int
    key: str
    created: datetime
    updated: datetime
    size: int
    sha256: str
    editors: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class NewVersion:
    """A version about to be committed; its blob is already durable."""

    blob: str
    file_type: str
    size: int
    sha256: str
    source: VersionSource
    author_id: str | None = None
    author_name: str | None = None
    status: int | None = None
    forcesave_type: int | None = None
    key: str | None = None
    history: Mapping[str, Any] | None = None
    changes_blob: str | None = None
    forms_blob: str | None = None
    restored_from: int | None = None
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class VersionRecord(NewVersion):
    document_id: str
    number: int
    created: datetime


class EditorsSet(Enum):
    """What became of a list of editors sent under a key (status 1 or 4)."""

    SET = "set"
    STALE = "stale"
    """A replay, or signed before the list already recorded."""
    UNKNOWN_KEY = "unknown key"
    """No document was ever given the key."""
    FOREIGN_KEY = "foreign key"
    """The key is another document's."""


@dataclass(frozen=True, kw_only=True)
class KeyRecord:
    key: str
    document_id: str
    version: int
    created: datetime
    retired: datetime | None
    editors: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CallbackRecord:
    """One line of the callback log. Holds no token and no signed URL."""

    received: datetime
    outcome: str
    http_status: int
    duration_ms: float
    document_id: str | None = None
    key: str | None = None
    status: int | None = None
    detail: str | None = None
    version: int | None = None
    source: str | None = None
    id: int | None = field(default=None, compare=False)


@dataclass(frozen=True, kw_only=True)
class RecoveryRecord:
    """A file the DS handed over as corrupted (status 3 or 7), kept aside."""

    document_id: str
    key: str
    status: int
    blob: str
    file_type: str
    size: int
    sha256: str
    created: datetime
    reason: str
    restored_version: int | None = None
    id: int | None = field(default=None, compare=False)


@dataclass(frozen=True, kw_only=True)
class CaptureRecord:
    """A force save docdesk asked for, and what became of it."""

    token: str
    document_id: str
    key: str
    created: datetime
    resolved: datetime | None = None
    outcome: str | None = None
    version: int | None = None
