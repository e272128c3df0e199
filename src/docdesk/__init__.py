"""docdesk: edit documents in ONLYOFFICE Docs and never lose a save.

The core works without any web framework: build an editor config, verify and
handle a Document Server callback, and keep versions through a blob store and
a catalog that the caller chooses. ``docdesk.web`` serves it all over HTTP.
"""

from docdesk.callback import (
    Action,
    CallbackPayload,
    CallbackStatus,
    ForceSaveType,
    SignedCallback,
    UserAction,
    read_callback,
)
from docdesk.catalog import Catalog, DocumentRecord, VersionRecord, VersionSource
from docdesk.desk import CallbackReply, DocDesk
from docdesk.downloads import Fetcher
from docdesk.editor import (
    DocumentKey,
    EditorConfig,
    EditorMode,
    Permissions,
    User,
    new_document_key,
)
from docdesk.errors import DocdeskError
from docdesk.formats import DocumentType, Format, format_for
from docdesk.links import Links
from docdesk.settings import Settings
from docdesk.storage import BlobStore, open_store

__all__ = [
    "Action",
    "BlobStore",
    "CallbackPayload",
    "CallbackReply",
    "CallbackStatus",
    "Catalog",
    "DocDesk",
    "DocdeskError",
    "DocumentKey",
    "DocumentRecord",
    "DocumentType",
    "EditorConfig",
    "EditorMode",
    "Fetcher",
    "ForceSaveType",
    "Format",
    "Links",
    "Permissions",
    "Settings",
    "SignedCallback",
    "User",
    "UserAction",
    "VersionRecord",
    "VersionSource",
    "format_for",
    "new_document_key",
    "open_store",
    "read_callback",
]
