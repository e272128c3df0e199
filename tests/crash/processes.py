"""docdesk and the simulator as real processes, and a throttle between them.

``docdesk serve`` is started the way a user starts it, except that the next
process is always waiting, its modules already imported: a restart after a
kill then costs the service's own start-up, a few hundred milliseconds,
instead of a second of imports, and lands before the simulator's first
retry. The simulator runs as ``docdesk simulator`` for the whole test, so its
retries outlive every kill. docdesk downloads the simulator's files through
:class:`Throttle`, which paces them so that a kill can land inside the
download, and which notes when each download starts.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from docdesk.testing import ControlClient

SECRET = "a-crash-test-secret-of-at-least-32-bytes"
STARTUP_TIMEOUT = 30.0
# The service's modules, imported before the process is needed.
WARM_UP = """
import logging, sys
import docdesk.cli, docdesk.web, docdesk.storage.local, uvicorn, aiosqlite
import sqlalchemy.dialects.sqlite.aiosqlite, anyio._backends._asyncio
import prometheus_client, uvicorn.lifespan.on, uvicorn.loops.auto
import uvicorn.protocols.http.auto, uvicorn.protocols.websockets.auto
# docdesk's own debug lines tell the phases apart; the drivers' would drown them.
for name in ("aiosqlite", "httpcore"):
    logging.getLogger(name).setLevel(logging.INFO)
print("ready", flush=True)
if sys.stdin.readline().strip() == "go":
    docdesk.cli.main(sys.argv[1:], prog_name="docdesk")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            assert process.poll() is None, f"the process ended: {process.returncode}"
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.005)


def clean_environment(**settings: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCDESK_")}
    return {**clean, **settings}


@dataclass
class Line:
    """One line a process wrote, and when the test read it."""

    at: float
    text: str


@dataclass
class Output:
    """What one process writes, read as it comes by a thread of its own."""

    process: subprocess.Popen[bytes]
    log: IO[str]
    lines: list[Line] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    ended: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def wait_for(self, pattern: str, *, since: int = 0, timeout: float = 30.0) -> Line:
        """The first line from index ``since`` on that matches ``pattern``."""
        found = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[since:]:
                    if found.search(line.text):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"no line matched {pattern!r}"
                self.changed.wait(left)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            text = raw.decode(errors="replace").rstrip()
            self.log.write(text + "\n")
            with self.changed:
                self.lines.append(Line(time.monotonic(), text))
                self.changed.notify_all()
        self.ended.set()


class Service:
    """``docdesk serve`` on one port and data dir, killed and restarted at will."""

    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.log = log.open("a", encoding="utf-8")
        self.api = httpx.Client(base_url=self.url, timeout=30.0)
        self.current: Output | None = None
        self._spare: subprocess.Popen[bytes] | None = None
        self._spare_ready = False
        self.starts = 0

    def prepare(self) -> None:
        """Wait until the next process has its modules imported."""
        if self._spare is None:
            self._spare = self._spawn()
        if not self._spare_ready:
            assert self._spare.stdout is not None
            assert _read_line(self._spare.stdout, STARTUP_TIMEOUT) == b"ready\n"
            self._spare_ready = True

    def start(self) -> Output:
        """Set the waiting process going and wait until it answers."""
        self.prepare()
        process, self._spare = self._spare, None
        assert process is not None
        self._spare_ready = False
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()
        output = Output(process, self.log)
        output.start()
        wait_until_serving(self.url + "/api/documents", process)
        self.current = output
        self.starts += 1
        # The next one imports while this one serves.
        self._spare = self._spawn()
        return output

    def kill(self) -> Output:
        """SIGKILL the serving process; its output is whole on return."""
        output = self.current
        assert output is not None
        output.process.send_signal(signal.SIGKILL)
        output.process.wait()
        output.ended.wait(10)
        _close_pipes(output.process)
        self.current = None
        return output

    def stop(self) -> None:
        for process in (self.current.process if self.current else None, self._spare):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        if self.current is not None:
            self.current.ended.wait(10)
        for process in (self.current.process if self.current else None, self._spare):
            if process is not None:
                _close_pipes(process)
        self.current = self._spare = None
        self.api.close()
        self.log.close()

    def _spawn(self) -> subprocess.Popen[bytes]:
        args = ["serve", "--port", str(self.port), "--log-level", "debug"]
        return subprocess.Popen(
            [sys.executable, "-c", WARM_UP, *args],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A one-off docdesk command on the service's settings."""
        return subprocess.run(
            [sys.executable, "-m", "docdesk", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # The JSON API

    def upload(self, title: str, data: bytes) -> dict[str, Any]:
        response = self.api.post("/api/documents", files={"file": (title, data)})
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def document(self, document_id: str) -> dict[str, Any]:
        return self._json(f"/api/documents/{document_id}")

    def versions(self, document_id: str) -> list[dict[str, Any]]:
        versions: list[dict[str, Any]] = self._json(
            f"/api/documents/{document_id}/versions"
        )["versions"]
        return versions

    def content(self, document_id: str, version: int) -> bytes:
        response = self.api.get(
            f"/api/documents/{document_id}/versions/{version}/content"
        )
        response.raise_for_status()
        return response.content

    def editor_config(self, document_id: str, user: str) -> dict[str, Any]:
        return self._json(
            f"/api/documents/{document_id}/editor-config",
            params={"user_id": user, "user_name": user.title()},
        )

    def _json(self, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.api.get(path, **kwargs)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


def _read_line(pipe: IO[bytes], timeout: float) -> bytes:
    """The next line from ``pipe``, whatever came of it at end of file.

    A byte at a time, straight from the descriptor: the pipe's own buffer
    must not take what comes after the line from the thread that reads it
    next (:class:`Output`).
    """
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no whole line in {timeout:g} s, only {line!r}"
        readable, _, _ = select.select([pipe], [], [], left)
        if not readable:
            continue
        byte = os.read(pipe.fileno(), 1)
        if not byte:
            break
        line += byte
    return line


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


@dataclass
class Download:
    """A request docdesk made through the throttle."""

    at: float
    request_line: str


@dataclass
class _Exchange:
    """One connection through the throttle: the lie its answer is to tell."""

    lie: int | None = None


class Throttle:
    """A TCP relay that paces what the simulator sends to ``rate`` bytes/s.

    It runs its own event loop in a thread. ``downloads`` lists each
    request docdesk sent through it, with the instant it arrived. A lie
    queued with :meth:`lie` makes the answer to the next matching request
    declare a Content-Length off by some bytes: the whole body follows all
    the same, then the connection closes.
    """

    CHUNK = 65_536
    # Far above the simulator's answer on loopback; reached only if it hangs.
    LIE_LIMIT = 30.0

    def __init__(self, upstream_port: int, rate: float) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.downloads: list[Download] = []
        self.arrived = threading.Condition()
        self._lies: list[tuple[str, int]] = []
        # The bodies behind the lies, whole, as the simulator sent them.
        self.lied_about: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the throttle did not start"

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def lie(self, path_part: str, by: int) -> None:
        """Declare ``by`` bytes more (or fewer) in answers to ``path_part``.

        Every answer lies until :meth:`tell_the_truth`.
        """
        with self.arrived:
            self._lies.append((path_part, by))

    def tell_the_truth(self) -> None:
        with self.arrived:
            self._lies.clear()

    def wait_for_download(
        self, since: int, path_part: str, timeout: float = 30.0
    ) -> Download:
        """The first request from index ``since`` whose line holds ``path_part``."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for download in self.downloads[since:]:
                    if path_part in download.request_line:
                        return download
                left = deadline - time.monotonic()
                assert left > 0, f"no download of {path_part!r} came"
                self.arrived.wait(left)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _relay(
        self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter
    ) -> None:
        try:
            upstream, to_upstream = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            to_client.close()
            return
        exchange = _Exchange()
        tasks = [
            asyncio.ensure_future(self._requests(client, to_upstream, exchange)),
            asyncio.ensure_future(self._paced(upstream, to_client, exchange)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (to_client, to_upstream):
            writer.close()

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
    ) -> None:
        """Pass docdesk's bytes on, noting each request line as it arrives."""
        while data := await reader.read(self.CHUNK):
            if data[:4] in (b"GET ", b"POST"):
                line = data.split(b"\r\n", 1)[0].decode(errors="replace")
                with self.arrived:
                    self.downloads.append(Download(time.monotonic(), line))
                    self.arrived.notify_all()
                    for path_part, by in self._lies:
                        if path_part in line:
                            exchange.lie = by
                            break
            writer.write(data)
            await writer.drain()

    async def _paced(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
    ) -> None:
        # The answer comes after the request, so its lie is known by now.
        data = await reader.read(self.CHUNK)
        if exchange.lie is not None:
            await self._lying(data, reader, writer, exchange.lie)
            return
        started, sent = time.monotonic(), 0
        while data:
            writer.write(data)
            await writer.drain()
            sent += len(data)
            ahead = sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            data = await reader.read(self.CHUNK)

    async def _lying(
        self,
        data: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        by: int,
    ) -> None:
        """The upstream's answer, its Content-Length off by ``by``, then EOF.

        An upstream that closes or hangs before its answer is whole gets
        the connection closed instead, with no lie told: the test that
        queued one then finds none in ``lied_about``.
        """
        try:
            async with asyncio.timeout(self.LIE_LIMIT):
                while b"\r\n\r\n" not in data:
                    more = await reader.read(self.CHUNK)
                    if not more:
                        return
                    data += more
                head, _, body = data.partition(b"\r\n\r\n")
                found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                assert found is not None, head
                length = int(found[1])
                body += await reader.readexactly(length - len(body))
        except (TimeoutError, asyncio.IncompleteReadError):
            return
        declared = f"\r\nContent-Length: {length + by}".encode()
        writer.write(head[: found.start()] + declared + head[found.end() :])
        self.lied_about.append(body)
        writer.write(b"\r\n\r\n" + body)
        await writer.drain()


@contextmanager
def simulator_process(log: Path) -> Iterator[tuple[str, ControlClient]]:
    """``docdesk simulator`` on a free port, with a short save delay."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["simulator", "--port", str(port), "--secret", SECRET]
    with log.open("a", encoding="utf-8") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "docdesk", *args, "--save-delay", "0.05"],
            env=clean_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_serving(url + "/healthcheck", process)
            with ControlClient(url) as control:
                yield url, control
        finally:
            process.terminate()
            process.wait(30)
