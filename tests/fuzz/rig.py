"""The real service in-process, with everything a hostile example may touch watched.

One :class:`Rig` serves a test module: the docdesk app (real catalog on
SQLite, real local blob store, in a temporary folder) driven through
``httpx.ASGITransport`` on an event loop of its own, a stand-in Document
Server origin over real loopback HTTP, a trap listener on another port, a
guard on every outgoing connection and name lookup, and a log capture.

Between two examples the rig's state is whatever the examples before left;
:meth:`Rig.snapshot` reads it afresh, so each example is judged by what
it changed, not by where it started.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import anyio
import anyio.from_thread
import httpx
import jwt
import pytest

from docdesk.settings import Settings
from docdesk.web import create_app

__all__ = [
    "Origin",
    "Rig",
    "Snapshot",
    "Table",
    "Trap",
    "docx",
    "running_rig",
    "sign",
]

SECRET = "fuzz-secret-" + "k" * 52
PUBLIC_URL = "http://127.0.0.1:8000"
CACHE = "/cache/files/data/"
# Small, so that the oversized uploads and downloads stay quick.
CAP = 1_000_000
TOKEN_LIFETIME = 300
# Tokens, signatures and secrets shorter than this may occur in a log by
# chance (a garbage token "a"); longer ones only if something leaked them.
MIN_SECRET_TEXT = 16
# How SQLAlchemy writes a time into SQLite: UTC, naive, to the microsecond.
CATALOG_TIME = "%Y-%m-%d %H:%M:%S.%f"
# How many recent secrets each example's logs are searched for.
RECENT_SECRETS = 200
# A JWT (its header is base64 of '{"'), or the query of a signed link.
LEAK_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.|[?&](?:md5|sig|expires)=[^&\s#]+"
)


def sign(claims: Mapping[str, Any], secret: str = SECRET, **options: Any) -> str:
    """An HS256 JWT of ``claims`` with ``iat`` now and ``exp`` 5 minutes on."""
    now = int(time.time())
    return jwt.encode(
        {"iat": now, "exp": now + TOKEN_LIFETIME, **claims}, secret, **options
    )


def docx(text: str) -> bytes:
    """A small but well-formed OOXML word package holding ``text``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
            'package/2006/content-types"><Default Extension="xml" '
            'ContentType="application/xml"/></Types>',
        )
        package.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships/>')
        package.writestr(
            "word/document.xml", f'<?xml version="1.0"?><w:document>{text}</w:document>'
        )
    return out.getvalue()


# The Document Server's origin, and a trap beside it


class Origin:
    """The Document Server's origin: cache files, redirects, and a request list.

    ``requested`` holds the path of every request, in order, so an example
    proves it fetched nothing by its length.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requested: list[str] = []
        self._server = _OriginServer(self)
        host, port = self._server.server_address[:2]
        self.host, self.port = str(host), int(port)
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()

    def put(self, name: str, content: bytes) -> str:
        """Serve ``content``; returns a signed-looking link, fresh per call."""
        self.files[name] = content
        return self.link(name)

    def link(self, name: str) -> str:
        md5 = secrets.token_urlsafe(16)
        expires = int(time.time()) + 900
        return f"{self.url}{CACHE}{name}?md5={md5}&expires={expires}&filename=f.docx"

    def redirect(self, location: str) -> str:
        """A link on the origin that answers 302 towards ``location``."""
        name = secrets.token_hex(8)
        # A header cannot carry controls or non-ASCII: send them escaped.
        self.redirects[name] = quote(location, safe="/:?#[]@!$&'()*+,;=%~")
        return f"{self.url}/redirect/{name}?md5={secrets.token_urlsafe(16)}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _OriginServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, origin: Origin) -> None:
        super().__init__(("127.0.0.1", 0), _OriginHandler)
        self.origin = origin


class _OriginHandler(BaseHTTPRequestHandler):
    server: _OriginServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        origin = self.server.origin
        path = urlsplit(self.path).path
        origin.requested.append(path)
        self.close_connection = True

        location = origin.redirects.get(path.removeprefix("/redirect/"))
        content = origin.files.get(path.removeprefix(CACHE))
        if path.startswith("/redirect/") and location is not None:
            self._answer(302, b"", Location=location)
        elif path.startswith(CACHE) and content is not None:
            self._answer(200, content)
        else:
            self._answer(404, b"")

    def do_POST(self) -> None:
        self.server.origin.requested.append(urlsplit(self.path).path)
        self.close_connection = True
        self._answer(404, b"")

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        with suppress(OSError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the examples read ``requested``."""


class Trap:
    """A loopback port nothing should ever connect to; counts who does."""

    def __init__(self) -> None:
        self.connections = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self._socket.settimeout(0.05)
        self.port = int(self._socket.getsockname()[1])
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._socket.close()


class Guard:
    """Watches every connection and name lookup anyio makes in this process.

    A connection to anything but loopback is refused before a packet
    leaves, and every name resolves to 127.0.0.1 without asking a DNS
    server, so a URL that slipped past the fetcher lands in the trap, not
    on the network. ``off_origin`` lists what went anywhere but the origin.
    """

    def __init__(self, origin: tuple[str, int]) -> None:
        self.origin = origin
        self.off_origin: list[str] = []
        self.lookups: list[str] = []
        self._connect_tcp = anyio.connect_tcp

    async def connect_tcp(
        self, remote_host: Any, remote_port: int, **options: Any
    ) -> Any:
        host, port = remote_host, remote_port
        if (str(host), port) != self.origin:
            self.off_origin.append(f"connect {host}:{port}")
        try:
            loopback = ipaddress.ip_address(str(host)).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConnectionRefusedError(f"the fuzz guard refused {host}")
        return await self._connect_tcp(host, port, **options)

    async def getaddrinfo(self, host: Any, port: Any, **options: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append(name)
        if name != self.origin[0]:
            self.off_origin.append(f"lookup {name}")
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))
        ]


class LogCapture(logging.Handler):
    """Keeps every record that reaches the root logger, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        # The test's own client logs each request it sends, link and all.
        if record.name.startswith("httpx"):
            return
        text = f"{record.name} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self._formatter.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + record.stack_info
        self.lines.append(text)


# What an example may change


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Snapshot:
    """Every catalog table but the callback log, and every file.

    ``taken`` is when, in the catalog's own spelling of a UTC time.
    """

    tables: dict[str, Table]
    files: tuple[tuple[str, int, int], ...]
    callbacks: int
    taken: str

    @property
    def rows(self) -> tuple[tuple[Any, ...], ...]:
        return self.live(self.taken)

    def live(self, at: str) -> tuple[tuple[Any, ...], ...]:
        """Every row, each with its table's name, but deliveries expired ``at``.

        Forgetting a delivery once its token has expired is the service's
        housekeeping, which any callback may do, not a write it made.
        """
        rows: list[tuple[Any, ...]] = []
        for name, table in self.tables.items():
            for row in table.dicts():
                if name == "deliveries" and row["expires"] < at:
                    continue
                rows.append((name, *row.values()))
        return tuple(rows)

    def same_as(self, later: Snapshot) -> bool:
        return (
            self.live(later.taken) == later.live(later.taken)
            and self.files == later.files
        )


@dataclass
class Seen:
    """What one example did, filled in when its ``watch`` block ends."""

    before: Snapshot | None = None
    after: Snapshot | None = None
    origin_requests: list[str] = field(default_factory=list)
    off_origin: list[str] = field(default_factory=list)
    trapped: int = 0
    leaks: list[str] = field(default_factory=list)

    @property
    def wrote(self) -> bool:
        assert self.before is not None
        assert self.after is not None
        return not self.before.same_as(self.after)

    def changes(self) -> str:
        """What differs between the snapshots, for an assertion's message."""
        assert self.before is not None
        assert self.after is not None
        taken = self.after.taken
        before = set(self.before.live(taken)) | set(self.before.files)
        after = set(self.after.live(taken)) | set(self.after.files)
        return f"gone: {sorted(before - after)} new: {sorted(after - before)}"

    @property
    def fetched_off_origin(self) -> int:
        return len(self.off_origin) + self.trapped


# The rig


@dataclass
class Document:
    id: str
    callback_url: str

    @property
    def signature(self) -> str:
        return dict(parse_qsl(urlsplit(self.callback_url).query))["sig"]


@dataclass
class Rig:
    """The service, the origin it trusts, and what watches them."""

    settings: Settings
    portal: anyio.from_thread.BlockingPortal
    client: httpx.AsyncClient
    origin: Origin
    trap: Trap
    guard: Guard
    logs: LogCapture
    target: Document
    other: Document
    app: Any
    # The tokens, links and secrets the latest examples sent, oldest first,
    # to look for in logs; older ones are still caught by their shape.
    sent_secrets: dict[str, None] = field(default_factory=dict)

    # Requests

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        return self.portal.call(lambda: self.client.request(method, url, **options))

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        sent = {"Content-Type": "application/json", **(headers or {})}
        # Bytes, so that a forged token may hold any character at all.
        raw = {name: value.encode() for name, value in sent.items()}
        return self.request("POST", url, content=body, headers=raw)

    def upload(self, name: str, content: bytes) -> httpx.Response:
        return self.request("POST", "/api/documents", files={"file": (name, content)})

    # State

    @property
    def database(self) -> Path:
        return self.settings.data_dir / "docdesk.sqlite3"

    def snapshot(self) -> Snapshot:
        """Every row of every table but the callback log, and every file.

        Every callback adds a line to the log, the hostile ones too: the log
        is judged by :meth:`leaks`, not by whether it changed.
        """
        taken = datetime.now(UTC).strftime(CATALOG_TIME)
        tables: dict[str, Table] = {}
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            names = db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            ).fetchall()
            for (name,) in names:
                if name == "callbacks":
                    continue
                # The name comes from the catalog's own list of its tables.
                cursor = db.execute(f'SELECT * FROM "{name}"')  # noqa: S608
                columns = tuple(column[0] for column in cursor.description)
                rows = tuple(sorted(cursor.fetchall(), key=repr))
                tables[name] = Table(columns, rows)
            (callbacks,) = db.execute("SELECT count(*) FROM callbacks").fetchone()
        db.close()
        return Snapshot(tables, self._files(), int(callbacks), taken)

    def _files(self) -> tuple[tuple[str, int, int], ...]:
        """Every file but the catalog's own (and its locks'), with size and mtime."""
        found: list[tuple[str, int, int]] = []
        # scandir, not rglob: thousands of saved versions pile up in a run,
        # and the walk happens twice an example.
        folders = [str(self.settings.data_dir)]
        while folders:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.name.startswith("docdesk.sqlite3"):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    else:
                        stat = entry.stat(follow_symlinks=False)
                        found.append((entry.path, stat.st_size, stat.st_mtime_ns))
        return tuple(sorted(found))

    def current_key(self, document: Document) -> str:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            (key,) = db.execute(
                "SELECT key FROM documents WHERE id = ?", (document.id,)
            ).fetchone()
        db.close()
        return str(key)

    def versions(self, document: Document) -> int:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM versions WHERE document_id = ?", (document.id,)
            ).fetchone()
        db.close()
        return int(count)

    def callback_details(self, since: int) -> list[str]:
        """The callback log's text written since ``since`` records existed."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT coalesce(detail, ''), coalesce(key, ''), coalesce(source, '') "
                "FROM callbacks ORDER BY id LIMIT -1 OFFSET ?",
                (since,),
            ).fetchall()
        db.close()
        return [" ".join(row) for row in rows]

    @contextmanager
    def watch(self) -> Iterator[Seen]:
        """Observe one example: writes, fetches, connections and log leaks."""
        before = self.snapshot()
        seen = Seen(before=before)
        requests, trapped = len(self.origin.requested), self.trap.connections
        off_origin, log_mark = len(self.guard.off_origin), len(self.logs.lines)
        yield seen
        seen.after = self.snapshot()
        seen.origin_requests = self.origin.requested[requests:]
        seen.off_origin = self.guard.off_origin[off_origin:]
        seen.trapped = self.trap.connections - trapped
        seen.leaks = self.leaks(log_mark, before.callbacks)

    # Leaks

    def remember(self, *texts: str | None) -> None:
        """Note tokens, links or signatures sent, to be looked for in logs."""
        for text in texts:
            if text and len(text) >= MIN_SECRET_TEXT:
                self.sent_secrets.pop(text, None)
                self.sent_secrets[text] = None
        while len(self.sent_secrets) > RECENT_SECRETS:
            del self.sent_secrets[next(iter(self.sent_secrets))]

    def remember_link(self, url: Any) -> None:
        """Note a link that is signed (it has a query) or carries user info."""
        if not isinstance(url, str):
            return
        if "?" in url:
            self.remember(url)
        # Split by hand: urlsplit refuses some of the malformed hosts sent.
        after_scheme = url.partition("://")[2] or url
        netloc = re.split(r"[/?#]", after_scheme, maxsplit=1)[0]
        self.remember(netloc.rpartition("@")[0])

    def leaks(self, log_mark: int, callbacks_mark: int) -> list[str]:
        """What a log written since the marks holds that it never should.

        The secret and any recent token or signed link, found whole; and
        anything shaped like a JWT or a signed link's query, whoever sent it.
        """
        written = self.logs.lines[log_mark:] + self.callback_details(callbacks_mark)
        wanted = [self.settings.jwt_secret, *self.sent_secrets]
        found = [
            f"{secret[:24]}... in {line[:200]!r}"
            for line in written
            for secret in wanted
            if secret in line
        ]
        found += [
            f"{match.group()[:24]}... in {line[:200]!r}"
            for line in written
            for match in LEAK_SHAPES.finditer(line)
        ]
        return found


@contextmanager
def running_rig(data_dir: Path) -> Iterator[Rig]:
    """Start the service with its origin, trap, guard and log capture."""
    origin, trap = Origin(), Trap()
    guard = Guard((origin.host, origin.port))
    logs = LogCapture()
    root, docdesk_logger = logging.getLogger(), logging.getLogger("docdesk")
    level = docdesk_logger.level
    settings = Settings(
        jwt_secret=SECRET,
        data_dir=data_dir,
        public_url=PUBLIC_URL,
        document_server_url=origin.url,
        max_download_bytes=CAP,
        max_upload_bytes=CAP,
        recovery_interval=0,
    )
    with (
        pytest.MonkeyPatch.context() as patch,
        anyio.from_thread.start_blocking_portal("asyncio") as portal,
    ):
        patch.setattr(anyio, "connect_tcp", guard.connect_tcp)
        patch.setattr(anyio, "getaddrinfo", guard.getaddrinfo)
        root.addHandler(logs)
        docdesk_logger.setLevel(logging.DEBUG)
        app = create_app(settings)
        try:
            with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
                client = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL
                )
                try:
                    rig = _rig(settings, portal, client, origin, trap, guard, logs, app)
                    yield rig
                finally:
                    portal.call(client.aclose)
        finally:
            root.removeHandler(logs)
            docdesk_logger.setLevel(level)
            origin.close()
            trap.close()


async def _upload(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/api/documents", files={"file": (name, docx(name))})


def _rig(
    settings: Settings,
    portal: anyio.from_thread.BlockingPortal,
    client: httpx.AsyncClient,
    origin: Origin,
    trap: Trap,
    guard: Guard,
    logs: LogCapture,
    app: Any,
) -> Rig:
    documents = []
    for name in ("Target.docx", "Other.docx"):
        response = portal.call(_upload, client, name)
        assert response.status_code == 201, response.text
        document_id = response.json()["id"]
        callback_url = app.state.desk.links.callback_url(document_id)
        documents.append(Document(document_id, callback_url))
    target, other = documents
    return Rig(
        settings=settings,
        portal=portal,
        client=client,
        origin=origin,
        trap=trap,
        guard=guard,
        logs=logs,
        target=target,
        other=other,
        app=app,
    )
