"""Several ``docdesk serve`` processes behind a load balancer, as in production.

:class:`Cluster` starts the simulated Document Server (DS) as its own
process (``docdesk simulator``), N ``docdesk serve`` processes on one
database and one blob store, and :class:`Balancer`, a round-robin HTTP proxy
in front of them whose URL is every instance's ``DOCDESK_PUBLIC_URL``. The DS
therefore reaches docdesk only through the balancer, and each callback lands
on whichever instance is next in turn.

The balancer streams bodies both ways and passes Host on, adding
``X-Forwarded-For``/``-Proto``/``-Host`` as a reverse proxy does (the
instances trust it through ``DOCDESK_TRUSTED_PROXIES``). Like nginx's
``proxy_next_upstream error``, a request that could not even connect goes to
the next instance; one that failed after it was sent is answered 502, which
the DS retries for status 2 and 3 only, as it does in production.

It notes every callback it passes on (instance, status, userdata, answer,
duration), so tests can count where callbacks went and benchmarks can time
them. Only an answer of HTTP 200 with ``{"error": 0}`` acknowledges one:
a 502 of the balancer's own, a 503 or an ``{"error": 1}`` is a failure the
DS hears.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from docdesk.testing import serve_in_thread
from seaweed import free_ports

__all__ = [
    "SERVED_BY",
    "Balancer",
    "Cluster",
    "Forwarded",
    "Instance",
    "Process",
    "read_json",
    "running_cluster",
]

SECRET = "scale-out-secret-shared-by-the-ds-and-every-instance"
START_LIMIT = 30.0
STOP_LIMIT = 5.0
KEEP_ALIVE = 75
# Connection, request and hop-by-hop headers a proxy must not pass on.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
SERVED_BY = "x-served-by"
# A callback body is a few KiB; more is not kept for the record.
PEEK_LIMIT = 65_536


@dataclass(frozen=True)
class Forwarded:
    """One callback the balancer passed on, and how it ended."""

    instance: int
    document_path: str
    status: int | None
    userdata: str | None
    http_status: int
    seconds: float
    finished: float
    # The start of docdesk's answer, as it was passed on.
    answer: bytes = b""

    @property
    def acknowledged(self) -> bool:
        """Whether docdesk answered as the DS hears success: 200, error 0."""
        return self.http_status == 200 and _parsed(self.answer) == {"error": 0}


@dataclass
class Balancer:
    """A round-robin reverse proxy in front of ``backends`` (an ASGI app)."""

    backends: Sequence[str]
    callbacks: list[Forwarded] = field(default_factory=list)
    # Callbacks answered, by path and status; ``changed`` wakes who waits on it.
    answered: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    changed: threading.Condition = field(default_factory=threading.Condition)
    # Per instance: the requests it holds now, callbacks or any other.
    in_flight: list[int] = field(default_factory=list)
    _held: dict[int, tuple[int, _Body]] = field(default_factory=dict)
    _turn: Iterator[int] = field(default_factory=itertools.count)
    _client: httpx.AsyncClient | None = None

    def __post_init__(self) -> None:
        self.in_flight = [0] * len(self.backends)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._proxy(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # No pool: a killed instance must not leave dead connections.
                self._client = httpx.AsyncClient(
                    timeout=httpx.Timeout(120.0),
                    trust_env=False,
                    limits=httpx.Limits(max_keepalive_connections=0),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._client is not None
        started = time.monotonic()
        path = scope["path"]
        is_callback = scope["method"] == "POST" and path.endswith("/callback")
        body = _Body(receive, keep=is_callback)
        headers = _forward_headers(scope)
        first = next(self._turn) % len(self.backends)

        http_status, answer, instance = 502, b"", first
        for offset in range(len(self.backends)):
            instance = (first + offset) % len(self.backends)
            url = self.backends[instance] + _target(scope)
            self.in_flight[instance] += 1
            if is_callback:
                self._held[id(body)] = (instance, body)
            try:
                http_status, answer = await self._pass(
                    instance, url, scope, headers, body, send, keep=is_callback
                )
                break
            except httpx.ConnectError:
                # Nothing reached that instance: the next one may take it.
                if body.started:
                    await _answer_502(send)
                    break
            except httpx.HTTPError:
                await _answer_502(send)
                break
            finally:
                self.in_flight[instance] -= 1
                self._held.pop(id(body), None)
        else:
            await _answer_502(send)

        if is_callback:
            self._note(instance, path, body.kept, http_status, answer, started)

    async def _pass(
        self,
        instance: int,
        url: str,
        scope: Scope,
        headers: list[tuple[str, str]],
        body: _Body,
        send: Send,
        *,
        keep: bool,
    ) -> tuple[int, bytes]:
        """Pass the request on; the status and, if ``keep``, the answer's start."""
        assert self._client is not None
        request = self._client.build_request(
            scope["method"], url, headers=headers, content=body.stream()
        )
        response = await self._client.send(request, stream=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        *(
                            (name.encode("latin-1"), value.encode("latin-1"))
                            for name, value in response.headers.multi_items()
                            if name.lower() not in HOP_BY_HOP
                        ),
                        # Which instance answered, for tests that count.
                        (SERVED_BY.encode(), str(instance).encode()),
                    ],
                }
            )
            kept = b""
            async for chunk in response.aiter_raw():
                if keep and len(kept) < PEEK_LIMIT:
                    kept += chunk[: PEEK_LIMIT - len(kept)]
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()
        return response.status_code, kept

    def _note(
        self,
        instance: int,
        path: str,
        kept: bytes,
        http_status: int,
        answer: bytes,
        started: float,
    ) -> None:
        try:
            fields = json.loads(kept)
        except ValueError:
            fields = {}
        if not isinstance(fields, dict):
            fields = {}
        now = time.monotonic()
        forwarded = Forwarded(
            instance=instance,
            document_path=path,
            status=fields.get("status"),
            userdata=fields.get("userdata"),
            http_status=http_status,
            seconds=now - started,
            finished=now,
            answer=answer,
        )
        with self.changed:
            self.callbacks.append(forwarded)
            self.answered[path, forwarded.status] += 1
            self.changed.notify_all()

    def holding(self, instance: int) -> list[int | None]:
        """The statuses of the callbacks ``instance`` holds now, sent whole."""
        statuses = []
        for held, body in list(self._held.values()):
            if held == instance and body.whole:
                statuses.append(_status(body.kept))
        return statuses

    def wait_answered(self, path: str, status: int, count: int, limit: float) -> bool:
        """Wait until ``count`` callbacks of ``status`` to ``path`` were answered."""
        with self.changed:
            return self.changed.wait_for(
                lambda: self.answered[path, status] >= count, timeout=limit
            )


class _Body:
    """The request body, streamed once; a callback's is also kept to read."""

    def __init__(self, receive: Receive, *, keep: bool) -> None:
        self._receive = receive
        self._keep = keep
        self.kept = b""
        self.started = False
        self.whole = False

    async def stream(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self._receive()
            chunk = message.get("body", b"")
            if self._keep and len(self.kept) < PEEK_LIMIT:
                self.kept += chunk[: PEEK_LIMIT - len(self.kept)]
            if chunk:
                yield chunk
            if not message.get("more_body"):
                self.whole = True
                return


def _parsed(data: bytes) -> Any:
    """The JSON ``data`` holds, or None if it holds none (a cut answer)."""
    try:
        return json.loads(data)
    except ValueError:
        return None


def _status(kept: bytes) -> int | None:
    try:
        fields = json.loads(kept)
    except ValueError:
        return None
    status = fields.get("status") if isinstance(fields, dict) else None
    return status if isinstance(status, int) else None


def _target(scope: Scope) -> str:
    path: str = scope["path"]
    query = scope["query_string"].decode("latin-1")
    return path + (f"?{query}" if query else "")


def _forward_headers(scope: Scope) -> list[tuple[str, str]]:
    """The client's headers, Host kept, with the proxy's X-Forwarded-* added."""
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope["headers"]
        if name.decode("latin-1").lower() not in HOP_BY_HOP
    ]
    client = scope.get("client") or ("127.0.0.1", 0)
    forwarded = [value for name, value in headers if name.lower() == "x-forwarded-for"]
    chain = ", ".join([*forwarded, client[0]])
    host = next((value for name, value in headers if name.lower() == "host"), "")
    headers = [(n, v) for n, v in headers if n.lower() != "x-forwarded-for"]
    headers += [
        ("X-Forwarded-For", chain),
        ("X-Forwarded-Proto", scope.get("scheme", "http")),
        ("X-Forwarded-Host", host),
    ]
    return headers


async def _answer_502(send: Send) -> None:
    body = b'{"error":"bad_gateway","message":"the instance did not answer"}'
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 502,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
    except RuntimeError:
        # The answer had begun: the client sees the connection cut instead.
        pass


# Processes


class Process:
    """A docdesk command run as a user runs it, its output in a log file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, ready_url: str
    ) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.ready_url = ready_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the command and wait until it answers."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCDESK_")}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "docdesk", *self.args],
                env={**clean, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_LIMIT
        while True:
            try:
                httpx.get(self.ready_url, timeout=1, trust_env=False)
                return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    output = self.log.read_text()
                    raise RuntimeError(f"{self.args[0]} ended: {output}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.args[0]} never answered") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no answer to what is in flight."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            # A capture a killed peer lost may hold a request for 30 s more.
            self.process.wait(timeout=STOP_LIMIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Instance(Process):
    """One ``docdesk serve``."""

    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        url = f"http://127.0.0.1:{port}"
        super().__init__(
            ["serve", "--port", str(port)], env, log, url + "/api/documents"
        )
        self.url = url

    def callbacks_served(self) -> int:
        """Callbacks this instance answered, over all its runs, from its log."""
        return self.output().count(" callback document=")


@dataclass(frozen=True)
class Cluster:
    """Everything :func:`running_cluster` started."""

    url: str
    """The balancer: the public URL of every instance."""
    ds_url: str
    balancer: Balancer
    instances: list[Instance]
    simulator: Process
    database_url: str | None
    storage_url: str


@contextmanager
def running_cluster(
    folder: Path,
    *,
    instances: int,
    database_url: str | None,
    storage_url: str | None,
    save_delay: float = 0.3,
) -> Iterator[Cluster]:
    """Start the DS, ``instances`` of docdesk and the balancer; stop them after.

    With ``database_url`` and ``storage_url`` None, the one instance runs on
    the embedded defaults (SQLite and files in its data dir).
    """
    folder.mkdir(parents=True, exist_ok=True)
    ds_port, *ports = free_ports(1 + instances)
    ds_url = f"http://127.0.0.1:{ds_port}"
    simulator = Process(
        ["simulator", "--port", str(ds_port), "--save-delay", str(save_delay)],
        {"DOCDESK_JWT_SECRET": SECRET, "DOCDESK_LOG_FORMAT": "text"},
        folder / "simulator.log",
        ds_url + "/healthcheck",
    )
    balancer = Balancer([f"http://127.0.0.1:{port}" for port in ports])

    # The instances stop before the balancer, which may hold their requests.
    with serve_in_thread(balancer) as front, ExitStack() as stack:
        # uvicorn drops an idle connection after 5 s, when the DS's client
        # may just reuse it: the request then fails unanswered. nginx keeps
        # them 75 s, longer than its clients, so they close first; so here.
        front.server.config.timeout_keep_alive = KEEP_ALIVE
        env = _instance_env(folder, front.url, ds_url, database_url, storage_url)
        # Python's start-up is most of the wait: every process starts at once.
        stack.callback(simulator.stop)
        simulator.launch()
        if database_url is not None:
            _migrate(env, folder / "migrate.log")
        started = [
            Instance(port, env, folder / f"instance-{number}.log")
            for number, port in enumerate(ports)
        ]
        for instance in started:
            stack.callback(instance.stop)
            instance.launch()
        for process in (simulator, *started):
            process.wait_ready()
        yield Cluster(
            url=front.url,
            ds_url=ds_url,
            balancer=balancer,
            instances=started,
            simulator=simulator,
            database_url=database_url,
            storage_url=storage_url or (folder / "data" / "blobs").resolve().as_uri(),
        )


def _instance_env(
    folder: Path,
    public_url: str,
    ds_url: str,
    database_url: str | None,
    storage_url: str | None,
) -> dict[str, str]:
    env = {
        "DOCDESK_DATA_DIR": str(folder / "data"),
        "DOCDESK_PUBLIC_URL": public_url,
        "DOCDESK_DOCUMENT_SERVER_URL": ds_url,
        "DOCDESK_JWT_SECRET": SECRET,
        "DOCDESK_TRUSTED_PROXIES": "127.0.0.1/32",
        # The test decides when files are recovered, not a timer.
        "DOCDESK_RECOVERY_INTERVAL": "0",
    }
    if database_url is not None:
        env["DOCDESK_DATABASE_URL"] = database_url
    if storage_url is not None:
        env["DOCDESK_STORAGE_URL"] = storage_url
    return env


def _migrate(env: dict[str, str], log: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCDESK_")}
    with log.open("ab") as out:
        subprocess.run(
            [sys.executable, "-m", "docdesk", "migrate"],
            env={**clean, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=60,
        )


def read_json(response: httpx.Response) -> Any:
    """The JSON of a response that must have succeeded."""
    assert response.is_success, (response.status_code, response.text)
    return response.json()
