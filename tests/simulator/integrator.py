"""A recording integrator: the storage side of the protocol, for conformance tests.

It plays the web app a Document Server (DS) talks to. It serves documents at
``/files/{name}`` and refuses a download whose header token does not hold
the exact URL fetched. It takes callbacks at ``/callback`` (any query string,
e.g. ``?user=ann``), verifies both tokens the DS sends, records the raw body,
the headers and the decoded claims of every request, and answers what the
test scripted for that document key: ``{"error":0}`` unless told otherwise.
Scripts, records and waits are all per key (downloads per URL), so one
integrator can serve many tests, each with keys of its own.

Requests arrive on the server's thread while the test reads the records on
its own, so every record list is guarded by one condition variable.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from docdesk.formats import blank_document
from docdesk.testing import serve_in_thread

__all__ = [
    "OK",
    "Callback",
    "Download",
    "FileReply",
    "Integrator",
    "Reply",
    "reply_json",
]

BEARER = "Bearer "
WAIT_LIMIT = 5.0


@dataclass(frozen=True)
class Reply:
    """How the integrator answers one callback."""

    status_code: int = 200
    body: bytes = b'{"error":0}'
    stall: float = 0.0
    media_type: str = "application/json"


OK = Reply()


def reply_json(value: Any, status_code: int = 200) -> Reply:
    """A callback answer whose body is ``value`` as JSON."""
    return Reply(status_code, json.dumps(value).encode())


@dataclass(frozen=True)
class FileReply:
    """How the integrator answers one download; ``data`` None sends the file."""

    status_code: int = 200
    stall: float = 0.0
    data: bytes | None = None


@dataclass
class Callback:
    """One callback POST as it arrived, and what the integrator made of it."""

    path: str
    query: dict[str, str]
    raw: bytes
    body: dict[str, Any]
    headers: dict[str, str]
    header_token: str | None
    header_claims: dict[str, Any] | None
    body_claims: dict[str, Any] | None
    problems: list[str]
    reply: Reply
    received: float
    answered: float | None = None

    @property
    def status(self) -> Any:
        return self.body.get("status")

    @property
    def key(self) -> Any:
        return self.body.get("key")

    @property
    def user(self) -> str | None:
        """The ``user`` of the callback URL's query: whose URL it came to."""
        return self.query.get("user")


@dataclass(frozen=True)
class Download:
    """One GET of a document URL."""

    url: str
    headers: dict[str, str]
    claims: dict[str, Any] | None
    problems: list[str]
    status_code: int
    received: float


@dataclass
class Integrator:
    """The storage service, recording everything the DS sends it."""

    secret: str
    jwt_header: str = "authorization"
    url: str = ""
    callbacks: list[Callback] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    server: Any = None
    _files: dict[str, bytes] = field(default_factory=dict)
    _replies: dict[tuple[Any, Any], deque[Reply]] = field(default_factory=dict)
    _file_replies: dict[str, deque[FileReply]] = field(default_factory=dict)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @contextmanager
    def serving(self) -> Iterator[Integrator]:
        """Serve on a free loopback port until the block ends."""
        app = Starlette(
            routes=[
                Route("/files/{name}", self._serve_file, methods=["GET"]),
                Route("/callback", self._take_callback, methods=["POST"]),
            ]
        )
        with serve_in_thread(app) as running:
            self.url, self.server = running.url, running.server
            yield self

    # Arranging

    def document(self, extension: str = "docx") -> tuple[str, bytes]:
        """A new blank document of ``extension``: its URL and its bytes."""
        with self._changed:
            number = len(self._files) + 1
            name = f"doc{number}.{extension}"
            self._files[name] = _blank(extension)
        # A query string too: the DS must fetch, and sign, the exact URL.
        return f"{self.url}/files/{name}?fileId={number}", self._files[name]

    def callback_url(self, user: str) -> str:
        return f"{self.url}/callback?user={user}"

    def reply(self, *replies: Reply, key: str, status: int | None = None) -> None:
        """Answer the next callbacks for ``key`` (of ``status``) with these."""
        with self._changed:
            self._replies.setdefault((key, status), deque()).extend(replies)

    def reply_to_downloads(self, url: str, *replies: FileReply) -> None:
        """Answer the next downloads of ``url`` with these."""
        with self._changed:
            self._file_replies.setdefault(url, deque()).extend(replies)

    # Reading what arrived

    def received(self, status: int | None = None, *, key: str) -> list[Callback]:
        """The callbacks for ``key`` so far, oldest first, of ``status``."""
        with self._changed:
            return [c for c in self.callbacks if _matches(c, status, key)]

    def downloads_of(self, url: str) -> list[Download]:
        with self._changed:
            return [d for d in self.downloads if d.url == url]

    def wait_for(
        self,
        status: int | None = None,
        *,
        key: str,
        count: int = 1,
        answered: bool = True,
        timeout: float = WAIT_LIMIT,
    ) -> Callback:
        """The ``count``-th callback for ``key`` of ``status``, once answered.

        "Answered" is the integrator's side: the DS may not have read the
        answer yet.
        """

        def arrived() -> list[Callback]:
            seen = [
                c
                for c in self.callbacks
                if _matches(c, status, key) and (c.answered is not None or not answered)
            ]
            return seen if len(seen) >= count else []

        with self._changed:
            if not self._changed.wait_for(arrived, timeout):
                raise TimeoutError(f"no callback {status} #{count} in {timeout} s")
            return arrived()[count - 1]

    def wait_until(
        self, check: Callable[[], bool], timeout: float = WAIT_LIMIT
    ) -> None:
        """Poll ``check`` until it holds; for state outside the integrator."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError("the condition did not hold in time")
            time.sleep(0.02)

    # The routes

    async def _serve_file(self, request: Request) -> Response:
        url = str(request.url)
        headers = {k.lower(): v for k, v in request.headers.items()}
        claims, problems = _verify_header(
            headers.get(self.jwt_header), self.secret, wrapped=True
        )
        if claims is not None and claims.get("payload", {}).get("url") != url:
            problems.append("the header token names another url")

        with self._changed:
            queue = self._file_replies.get(url)
            reply = queue.popleft() if queue else FileReply()
        status_code = 403 if problems else reply.status_code
        self._record_download(
            Download(url, headers, claims, problems, status_code, _now())
        )

        if reply.stall:
            await asyncio.sleep(reply.stall)
        if problems:
            return PlainTextResponse("; ".join(problems), status_code=403)
        data = (
            reply.data
            if reply.data is not None
            else self._files.get(request.path_params["name"], b"")
        )
        return Response(
            data, status_code=status_code, media_type="application/octet-stream"
        )

    async def _take_callback(self, request: Request) -> Response:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        problems: list[str] = []
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body, problems = {}, ["the body is not a JSON object"]

        header_token = _bearer(headers.get(self.jwt_header))
        header_claims, found = _verify_header(
            headers.get(self.jwt_header), self.secret, wrapped=True
        )
        problems += found
        body_claims, found = _verify(body.get("token"), self.secret, wrapped=False)
        problems += [f"body {p}" for p in found]

        with self._changed:
            key, status = body.get("key"), body.get("status")
            queue = self._replies.get((key, status)) or self._replies.get((key, None))
            reply = queue.popleft() if queue else OK
            record = Callback(
                path=request.url.path,
                query=dict(request.query_params),
                raw=raw,
                body=body,
                headers=headers,
                header_token=header_token,
                header_claims=header_claims,
                body_claims=body_claims,
                problems=problems,
                reply=reply,
                received=_now(),
            )
            self.callbacks.append(record)
            self._changed.notify_all()

        if reply.stall:
            await asyncio.sleep(reply.stall)
        response = Response(
            reply.body, status_code=reply.status_code, media_type=reply.media_type
        )
        # Recorded before the answer leaves, so "answered" never lags the DS.
        with self._changed:
            record.answered = _now()
            self._changed.notify_all()
        return response

    def _record_download(self, download: Download) -> None:
        with self._changed:
            self.downloads.append(download)
            self._changed.notify_all()


def _matches(callback: Callback, status: int | None, key: str) -> bool:
    return callback.key == key and (status is None or callback.status == status)


@functools.cache
def _blank(extension: str) -> bytes:
    # The office libraries take tens of milliseconds a file; one will do.
    return blank_document(extension)


def _now() -> float:
    return time.monotonic()


def _bearer(value: str | None) -> str | None:
    if value is None or not value.startswith(BEARER):
        return None
    return value[len(BEARER) :]


def _verify_header(
    value: str | None, secret: str, *, wrapped: bool
) -> tuple[dict[str, Any] | None, list[str]]:
    token = _bearer(value)
    if token is None:
        return None, ["no 'Bearer' header token"]
    claims, problems = _verify(token, secret, wrapped=wrapped)
    return claims, [f"header {p}" for p in problems]


def _verify(
    token: Any, secret: str, *, wrapped: bool
) -> tuple[dict[str, Any] | None, list[str]]:
    """The claims of an HS256 token with ``iat`` and ``exp``, and what is wrong."""
    if not isinstance(token, str):
        return None, ["token is missing"]
    try:
        if jwt.get_unverified_header(token) != {"alg": "HS256", "typ": "JWT"}:
            return None, ["token has an unexpected JOSE header"]
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["iat", "exp"]}
        )
    except jwt.InvalidTokenError as exc:
        return None, [f"token does not verify: {exc}"]
    if ("payload" in claims) is not wrapped:
        return claims, ["token is wrapped" if not wrapped else "token lacks payload"]
    return claims, []
