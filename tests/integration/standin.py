"""A stand-in Document Server for hostile input, on a real loopback port.

The Document Server's behaviour is tested against ``docdesk.simulator``,
the protocol-faithful DS. This stand-in is not a second DS: it posts
whatever a test asks, signed or not, for what a real DS never does but an
attacker or a broken network might: forged, expired, unsigned and HS512
tokens, exact replays, keys of other documents, malformed and oversized
bodies, links off the DS's origin (other hosts, ports and schemes, cloud
metadata and private addresses), redirects, lying or missing lengths, and
bytes that are not the file they claim to be. It also serves what the
simulator cannot produce: an .odt saved back as docx, a 403 or 410 from the
DS's nginx, and a changes archive that fails apart from its file.

It does what it needs of the DS's side:

- it serves files under ``/cache/files/...`` behind links that look signed,
  fresh ones on each call as the DS makes on each attempt, and can
  misbehave on demand (:class:`Trouble`);
- it posts callbacks signed as the DS signs them: the plain fields plus
  ``token``, a flat JWT of the fields, in the body, and ``Authorization:
  Bearer`` with the fields wrapped in ``payload``; HS256, 5 minutes, a fresh
  token per attempt;
- it downloads ``document.url`` with the header JWT ``{"payload": {"url"}}``.

It signs with PyJWT directly, not with docdesk's own token code, so a test
never checks docdesk against itself.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

__all__ = ["CACHE_PATH", "EDITOR", "StandIn", "Trouble", "sign"]

CACHE_PATH = "/cache/files/data/"
TOKEN_LIFETIME = 300
LINK_LIFETIME = 900
EDITOR = "78e1e841"
# Long enough for any deadline a test sets; the stand-in's close ends it early.
STALL_LIMIT = 30.0


def sign(
    claims: Mapping[str, Any],
    secret: str,
    *,
    algorithm: str = "HS256",
    issued: int | None = None,
) -> str:
    """A JWT of ``claims`` with ``iat`` and ``exp`` 5 minutes on, as the DS signs."""
    now = int(time.time()) if issued is None else issued
    body = {**claims, "iat": now, "exp": now + TOKEN_LIFETIME}
    return jwt.encode(body, secret, algorithm=algorithm)


class Trouble(Enum):
    """Ways a cache file is served badly."""

    REDIRECT = "a 302 to another cache file"
    STALL = "half the bytes, then silence"
    TRUNCATE = "half the bytes of a declared length, then a closed connection"
    UNFRAMED_TRUNCATE = "half the bytes, no length, then a closed connection"
    OVERSTATED_LENGTH = "a Content-Length of 1 GiB over a small body"
    FORBIDDEN = "403, as nginx answers a bad link signature"
    GONE = "410, as nginx answers an expired link"
    SERVER_ERROR = "500"


_STATUS = {Trouble.FORBIDDEN: 403, Trouble.GONE: 410, Trouble.SERVER_ERROR: 500}


@dataclass(frozen=True)
class _CacheFile:
    content: bytes
    trouble: Trouble | None


class StandIn:
    """The Document Server's side of the protocol, for one test module.

    ``requested`` lists the path of every request the cache received, in
    order, so a test can prove a URL was never fetched; ``tokens`` every
    JWT the stand-in sent, so a test can look for them where they must not be.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.requested: list[str] = []
        self.tokens: list[str] = []
        self._files: dict[str, _CacheFile] = {}
        self._closing = threading.Event()
        self._server = _CacheServer(self)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="standin",
            daemon=True,
        )
        # trust_env=False: no proxy from the environment ever sees a request.
        self._client = httpx.Client(trust_env=False, timeout=30)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._client.close()
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # The cache

    def put(self, name: str, content: bytes, trouble: Trouble | None = None) -> str:
        """Serve ``content`` as cache file ``name``; returns a fresh link to it."""
        self._files[name] = _CacheFile(content, trouble)
        return self.link(name)

    def link(self, name: str) -> str:
        """A new signed-looking link to ``name``, as the DS makes per attempt."""
        expires = int(time.time()) + LINK_LIFETIME
        md5 = secrets.token_urlsafe(16)
        filename = name.rpartition("/")[2]
        return (
            f"{self.url}{CACHE_PATH}{name}"
            f"?md5={md5}&expires={expires}&filename={filename}"
        )

    def was_requested(self, name: str) -> bool:
        return CACHE_PATH + name in self.requested

    # Callbacks

    def save_fields(
        self, key: str, status: int, name: str, **extra: Any
    ) -> dict[str, Any]:
        """The fields of a status 2, 3, 6 or 7 callback that hands over ``name``.

        Links are fresh on every call. ``extra`` adds or replaces fields; a
        value of None leaves that field out.
        """
        fields: dict[str, Any] = {
            "key": key,
            "status": status,
            "url": self.link(name),
            "users": [EDITOR],
            "lastsave": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        if status in (2, 3):
            fields["actions"] = [{"type": 0, "userid": EDITOR}]
            fields["notmodified"] = False
        else:
            fields["actions"] = [{"type": 2, "userid": EDITOR}]
            fields["forcesavetype"] = 1
        fields["filetype"] = name.rpartition(".")[2]
        fields.update(extra)
        return {field: value for field, value in fields.items() if value is not None}

    def callback(self, callback_url: str, fields: Mapping[str, Any]) -> httpx.Response:
        """POST ``fields`` to ``callback_url`` signed as the DS signs them."""
        body, headers = self.signed(fields)
        return self.post(callback_url, body, headers)

    def signed(self, fields: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a callback carrying ``fields``."""
        # One signing time for both tokens, as the DS signs them together.
        now = int(time.time())
        body = {**fields, "token": sign(fields, self.secret, issued=now)}
        bearer = sign({"payload": dict(fields)}, self.secret, issued=now)
        self.tokens += [body["token"], bearer]
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {bearer}",
        }
        return json.dumps(body).encode(), headers

    def post(
        self, callback_url: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """POST raw ``body``: for callbacks no honest DS would send."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        return self._client.post(callback_url, content=body, headers=sent)

    # Opening a document

    def download(
        self, document_url: str, *, secret: str | None = None
    ) -> httpx.Response:
        """GET ``document_url`` with the DS's header JWT; ``secret`` forges it."""
        bearer = sign({"payload": {"url": document_url}}, secret or self.secret)
        self.tokens.append(bearer)
        return self._client.get(
            document_url, headers={"Authorization": f"Bearer {bearer}"}
        )

    def _stall(self) -> None:
        self._closing.wait(STALL_LIMIT)


class _CacheServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, standin: StandIn) -> None:
        super().__init__(("127.0.0.1", 0), _CacheHandler)
        self.standin = standin


class _CacheHandler(BaseHTTPRequestHandler):
    server: _CacheServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; Nagle would hold the second.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        standin = self.server.standin
        path = urlsplit(self.path).path
        standin.requested.append(path)
        self.close_connection = True

        found = standin._files.get(path.removeprefix(CACHE_PATH))
        if found is None or not path.startswith(CACHE_PATH):
            self._head(404, 0)
            return
        trouble, content = found.trouble, found.content
        half = content[: len(content) // 2]

        if trouble is Trouble.REDIRECT:
            self._head(
                302, 0, Location=standin.link("moved/" + path.rpartition("/")[2])
            )
        elif trouble in _STATUS:
            self._head(_STATUS[trouble], 0)
        elif trouble is Trouble.STALL:
            self._head(200, len(content))
            self._send(half)
            standin._stall()
        elif trouble is Trouble.TRUNCATE:
            self._head(200, len(content))
            self._send(half)
        elif trouble is Trouble.UNFRAMED_TRUNCATE:
            self._head(200, None)
            self._send(half)
        elif trouble is Trouble.OVERSTATED_LENGTH:
            self._head(200, 1 << 30)
            self._send(content)
        else:
            self._head(200, len(content))
            self._send(content)

    def _head(self, status: int, length: int | None, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            # docdesk hung up first, as it should on a refused download.
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``requested`` instead."""
