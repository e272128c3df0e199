"""A document's versions inside the editor: its history and restore.

The editor asks for the history with ``onRequestHistory`` and for one
version with ``onRequestHistoryData``; docdesk answers with what
``refreshHistory`` and ``setHistoryData`` take, the latter signed, and serves
each version and its changes at links only the editor can name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from docdesk import tokens
from docdesk.catalog import DocumentRecord, VersionRecord, is_document_id
from docdesk.errors import Forbidden, NotFound

if TYPE_CHECKING:
    from docdesk.desk import DocDesk

__all__ = ["history", "history_data", "open_version"]


async def history(desk: DocDesk, document_id: str) -> dict[str, Any]:
    """What ``docEditor.refreshHistory`` takes, for ``onRequestHistory``."""
    document = await desk.document(document_id)
    entries = []
    for version in await desk.versions(document.id):
        entry: dict[str, Any] = {
            "version": version.number,
            "key": _history_key(document, version),
            "created": version.created.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if version.author_id:
            entry["user"] = {
                "id": version.author_id,
                "name": version.author_name or version.author_id,
            }
        history = version.history or {}
        if history.get("changes"):
            entry["changes"] = history["changes"]
            entry["serverVersion"] = history.get("serverVersion")
        entries.append(entry)
    return {"currentVersion": document.current_version, "history": entries}


async def history_data(desk: DocDesk, document_id: str, number: int) -> dict[str, Any]:
    """The signed object for ``docEditor.setHistoryData``."""
    document = await desk.document(document_id)
    version = await desk.version(document.id, number)
    data: dict[str, Any] = {
        "version": number,
        "key": _history_key(document, version),
        "fileType": version.file_type,
        "url": desk.links.version_url(document.id, number),
    }
    if version.changes_blob and number > 1:
        previous = await desk.version(document.id, number - 1)
        data["changesUrl"] = desk.links.changes_url(document.id, number)
        data["previous"] = {
            "key": _history_key(document, previous),
            "fileType": previous.file_type,
            "url": desk.links.version_url(document.id, number - 1),
        }
    data["token"] = tokens.sign(data, desk.jwt_secret)
    return data


async def open_version(
    desk: DocDesk,
    document_id: str,
    number: int,
    signature: str,
    *,
    changes: bool = False,
) -> tuple[VersionRecord, AsyncIterator[bytes]]:
    """A version's file, or the changes that made it, for the DS's history."""
    check = desk.links.check_changes if changes else desk.links.check_version
    if not (is_document_id(document_id) and check(document_id, number, signature)):
        raise Forbidden("the history link's signature does not match")
    version = await desk.catalog.version(document_id, number)
    blob = version.changes_blob if changes else version.blob
    if blob is None:
        raise NotFound(f"version {number} kept no changes")
    return version, desk.store.read(blob)


# The editor


def _history_key(document: DocumentRecord, version: VersionRecord) -> str:
    """A key for one version in the editor's history, never an editing key.

    The current version is the document as it opens, under its own key;
    every older one gets a key of its own, stable and in the DS's alphabet.
    """
    if version.number == document.current_version:
        return document.key
    return f"{document.id}-v{version.number}-{version.sha256[:16]}"
