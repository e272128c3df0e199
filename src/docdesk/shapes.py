"""The JSON shapes of documents, versions and callbacks, the same everywhere."""

from __future__ import annotations

from typing import Any

from docdesk.catalog import CallbackRecord, DocumentRecord, VersionRecord
from docdesk.formats import format_for

__all__ = ["callback_json", "document_json", "version_json"]


def document_json(document: DocumentRecord) -> dict[str, Any]:
    """A document as the JSON API and ``docdesk list --json`` show it."""
    return {
        "id": document.id,
        "title": document.title,
        "file_type": document.file_type,
        "document_type": str(format_for(document.file_type).document_type),
        "version": document.current_version,
        "size": document.size,
        "sha256": document.sha256,
        "created": document.created.isoformat(),
        "updated": document.updated.isoformat(),
        "editors": list(document.editors),
    }


def version_json(version: VersionRecord) -> dict[str, Any]:
    """A version as the JSON API and ``docdesk versions --json`` show it."""
    author = None
    if version.author_id is not None:
        author = {"id": version.author_id, "name": version.author_name}
    return {
        "version": version.number,
        "file_type": version.file_type,
        "size": version.size,
        "sha256": version.sha256,
        "created": version.created.isoformat(),
        "author": author,
        "source": str(version.source),
        "status": version.status,
        "forcesave_type": version.forcesave_type,
        "restored_from": version.restored_from,
        "has_changes": version.changes_blob is not None,
        "note": version.note,
    }


def callback_json(record: CallbackRecord) -> dict[str, Any]:
    """A callback log record as the JSON API and ``docdesk callbacks`` show it."""
    return {
        "received": record.received.isoformat(),
        "document_id": record.document_id,
        "key": record.key,
        "status": record.status,
        "outcome": record.outcome,
        "detail": record.detail,
        "version": record.version,
        "http_status": record.http_status,
        "duration_ms": round(record.duration_ms, 1),
        "source": record.source,
    }
