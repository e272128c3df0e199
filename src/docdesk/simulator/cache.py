"""The Document Server's file cache and its signed ``/cache/files`` links.

The real server hands out links such as::

    {base}/cache/files/data/{key}_{n}/output.docx/output.docx
        ?md5=...&expires=...&filename=output.docx

and nginx checks them with ``secure_link``: the ``md5`` is the url-safe
base64 MD5 of ``expires + path + secret``. A bad signature answers 403 and
an expired link 410. Both are reproduced here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from starlette.requests import Request

__all__ = ["Cache", "CachedFile", "LinkError", "base_url_of"]

PREFIX = "/cache/files/"


def base_url_of(request: Request) -> str:
    """Where a request reached the simulator, mount prefix included.

    Links are built on it; Starlette's own ``base_url`` drops the prefix.
    """
    root = request.scope.get("root_path", "")
    return str(request.url.replace(path=root, query="", fragment="")).rstrip("/")


class LinkError(Exception):
    """A cache link that does not verify; ``status`` is what nginx answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CachedFile:
    data: bytes
    filename: str


class Cache:
    """Files under signed, expiring links, kept in memory."""

    def __init__(self, secret: str, *, lifetime: float) -> None:
        # nginx's secure_link secret is its own; derive one from the JWT's.
        self._secret = hashlib.sha256(b"cache " + secret.encode()).hexdigest()
        self.lifetime = lifetime
        self._files: dict[str, CachedFile] = {}

    def put(self, folder: str, filename: str, data: bytes) -> str:
        """Keep ``data`` and return its path, which stays valid until removed."""
        name = quote(filename, safe="")
        path = f"{PREFIX}data/{folder}_{secrets.randbelow(10_000)}/{name}/{name}"
        self._files[path] = CachedFile(data, filename)
        return path

    def link(self, base_url: str, path: str) -> str:
        """A freshly signed link to ``path``; each call gives a new expiry."""
        expires = int(time.time() + self.lifetime)
        query = urlencode(
            {
                "md5": self._signature(expires, path),
                "expires": expires,
                "filename": self._files[path].filename,
            }
        )
        return f"{base_url.rstrip('/')}{path}?{query}"

    def open(self, path: str, md5: str, expires: str) -> CachedFile:
        """The file behind a link, if the link holds; else LinkError."""
        try:
            when = int(expires)
        except ValueError:
            raise LinkError(403, "bad expiry") from None
        if not hmac.compare_digest(md5, self._signature(when, path)):
            raise LinkError(403, "bad signature")
        if when < time.time():
            raise LinkError(410, "the link has expired")
        try:
            return self._files[path]
        except KeyError:
            raise LinkError(404, "no such file") from None

    def remove(self, path: str) -> None:
        self._files.pop(path, None)

    def _signature(self, expires: int, path: str) -> str:
        # nginx secure_link's own scheme, not a choice of ours.
        digest = hashlib.md5(
            f"{expires}{path}{self._secret}".encode(), usedforsecurity=False
        ).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
