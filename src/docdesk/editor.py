"""The editor config handed to ``new DocsAPI.DocEditor(placeholder, config)``.

The config names the document by ``document.key``: the Document Server (DS)
caches the file under that key, lets everyone who opens the same key edit
together, and refuses a key it has already saved ("the document version has
changed"). So a key is shared while an editing session is open and replaced
after every save and after any change made outside the editor.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, NewType

from docdesk import tokens
from docdesk.formats import Format

__all__ = [
    "DocumentKey",
    "EditorConfig",
    "EditorMode",
    "Permissions",
    "User",
    "is_document_key",
    "new_document_key",
]

DocumentKey = NewType("DocumentKey", str)

# The DS's DOC_ID_PATTERN, and the documented limit on a key's length.
KEY_PATTERN = re.compile(r"[0-9a-zA-Z._=-]{1,128}")
# 24 random bytes in url-safe base64: 32 characters, all inside KEY_PATTERN.
KEY_BYTES = 24


def new_document_key() -> DocumentKey:
    """A fresh, unguessable key in the DS's alphabet."""
    return DocumentKey(secrets.token_urlsafe(KEY_BYTES))


def is_document_key(value: str) -> bool:
    return KEY_PATTERN.fullmatch(value) is not None


class EditorMode(StrEnum):
    EDIT = "edit"
    VIEW = "view"


@dataclass(frozen=True)
class User:
    """``editorConfig.user``: who the DS will name in callbacks and history."""

    id: str
    name: str

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > 128:
            raise ValueError("a user id must have 1 to 128 characters")
        if len(self.name) > 128:
            raise ValueError("a user name must have at most 128 characters")


@dataclass(frozen=True)
class Permissions:
    """``document.permissions``; the DS insists the token holds the same."""

    edit: bool = True
    download: bool = True
    print: bool = True
    review: bool = True
    comment: bool = True
    fillForms: bool = True
    modifyFilter: bool = True
    modifyContentControl: bool = True
    copy: bool = True
    chat: bool = True
    protect: bool = True

    @classmethod
    def for_mode(cls, mode: EditorMode, fmt: Format) -> Permissions:
        editable = mode is EditorMode.EDIT and (fmt.editable or fmt.lossy_edit)
        return cls(edit=editable, review=editable, fillForms=editable)


@dataclass(frozen=True, kw_only=True)
class EditorConfig:
    """Everything the browser passes to DocsAPI.DocEditor, before signing."""

    format: Format
    key: DocumentKey
    title: str
    url: str
    callback_url: str
    user: User
    mode: EditorMode = EditorMode.EDIT
    lang: str = "en"
    # None: what the mode allows for this format (Permissions.for_mode).
    permissions: Permissions | None = None
    forcesave: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "documentType": str(self.format.document_type),
            "document": {
                "fileType": self.format.extension,
                "key": self.key,
                "title": self.title,
                "url": self.url,
                "permissions": asdict(
                    self.permissions or Permissions.for_mode(self.mode, self.format)
                ),
            },
            "editorConfig": {
                "callbackUrl": self.callback_url,
                "mode": str(self.mode),
                "lang": self.lang,
                "user": {"id": self.user.id, "name": self.user.name},
                "customization": {"forcesave": self.forcesave},
            },
        }

    def signed(self, secret: str) -> dict[str, Any]:
        """The config with its ``token``: the config itself, signed unwrapped.

        No expiry: the DS checks the token when an editor connects, and a
        page may stay open long before that.
        """
        config = self.to_dict()
        config["token"] = tokens.sign(config, secret)
        return config
