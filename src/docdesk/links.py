"""The URLs the Document Server calls: one document's file and its callback.

Each link names its document and carries an HMAC of what it names, so a
link for one document cannot be bent into a link for another, and the file
link is refused without it even when the DS sends no JWT header. The HMAC
key is derived from the JWT secret and used for nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlencode

__all__ = ["Links"]

SIGNATURE_LENGTH = 32


class Links:
    """Builds and checks docdesk's DS-facing URLs under ``public_url``."""

    def __init__(self, public_url: str, secret: str) -> None:
        self.public_url = public_url.rstrip("/")
        self._key = hmac.new(
            secret.encode(), b"docdesk links v1", hashlib.sha256
        ).digest()

    def document_url(self, document_id: str, key: str) -> str:
        """Where the DS downloads the version that ``key`` was issued for."""
        query = urlencode({"key": key, "sig": self._sign("file", document_id, key)})
        return f"{self._base(document_id)}/file?{query}"

    def callback_url(self, document_id: str) -> str:
        query = urlencode({"sig": self._sign("callback", document_id)})
        return f"{self._base(document_id)}/callback?{query}"

    def version_url(self, document_id: str, number: int) -> str:
        """Where the DS fetches an old version to show it in the history."""
        query = urlencode({"sig": self._sign("version", document_id, str(number))})
        return f"{self._base(document_id)}/versions/{number}/file?{query}"

    def changes_url(self, document_id: str, number: int) -> str:
        """The changes archive that made a version, for history highlighting."""
        query = urlencode({"sig": self._sign("changes", document_id, str(number))})
        return f"{self._base(document_id)}/versions/{number}/changes?{query}"

    def check_version(self, document_id: str, number: int, signature: str) -> bool:
        return self._check(signature, "version", document_id, str(number))

    def check_changes(self, document_id: str, number: int, signature: str) -> bool:
        return self._check(signature, "changes", document_id, str(number))

    def check_document(self, document_id: str, key: str, signature: str) -> bool:
        return self._check(signature, "file", document_id, key)

    def check_callback(self, document_id: str, signature: str) -> bool:
        return self._check(signature, "callback", document_id)

    def _base(self, document_id: str) -> str:
        return f"{self.public_url}/ds/documents/{quote(document_id, safe='')}"

    def _sign(self, *parts: str) -> str:
        # Each part carries its length, so no two lists of parts sign alike.
        message = "".join(f"{len(part)}:{part}" for part in parts).encode()
        digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return digest[:SIGNATURE_LENGTH]

    def _check(self, signature: str, *parts: str) -> bool:
        return hmac.compare_digest(signature.encode(), self._sign(*parts).encode())
