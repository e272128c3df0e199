"""``docdesk doctor``: check a setup end to end and say how to fix it.

Most failed saves come from a handful of setup mistakes, and each check
tries one the way the service meets it, in this order:

- ``document_server``: the DS answers its ``/healthcheck``;
- ``secret``: it accepts a signed ``version`` command (error 6 or 7 is a
  JWT secret that differs, or clocks that do), and refuses an unsigned one;
- ``clock``: its ``Date`` header is within its 60 s token leeway of ours;
- ``public_url``: it downloads a probe document from docdesk's public URL
  (error -4 is ``localhost`` inside a container, a firewall, TLS...);
- ``download``: docdesk downloads the converted probe from the DS's links,
  as it downloads every save;
- ``storage``, ``database``, ``disk``: a synced write reads back, the
  database answers and is migrated, and there is room for the next save.

:func:`run_checks` returns one :class:`Check` per line, with the fix when
it fails. Inside ``docdesk serve``, mount :func:`health_handler` at
``/api/health`` and :func:`probe_handler` at :data:`PROBE_PATH`: the
service serves the probe itself. The ``docdesk doctor`` command serves it
from a small server of its own on the public URL's port
(:func:`serve_probe`), unless the port is taken, by the running service
presumably, which then serves it.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import re
import secrets
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from urllib.request import url2pathname

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from docdesk import tokens
from docdesk.catalog import Catalog
from docdesk.commands import CommandError, CommandService, ConversionError
from docdesk.conversion import ConversionResult, ConversionService
from docdesk.desk import internal_url_map, resolves_privately
from docdesk.downloads import Fetcher
from docdesk.errors import (
    CatalogError,
    DocdeskError,
    DocumentServerError,
    DownloadError,
    DownloadRefused,
    TokenError,
    TooLarge,
)
from docdesk.settings import SIMULATOR_PATH, Settings
from docdesk.storage import open_store

__all__ = [
    "CHECK_TIMEOUT",
    "PROBE_PATH",
    "Check",
    "ProbeServer",
    "diagnose",
    "health_handler",
    "health_json",
    "probe_handler",
    "probe_url",
    "recent_checks",
    "run_checks",
    "serve_probe",
    "service_health",
]

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 15.0
PROBE_PATH = "/ds/probe"
# The DS accepts a token this far off its own clock (verifyOptions).
CLOCK_LEEWAY = tokens.LEEWAY
CLOCK_WARNING = 10.0
LOW_DISK = 1024**3
VOLATILE_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
MAX_PROBE_RESULT = 1024 * 1024
NONCE = re.compile(r"[0-9a-f]{16}")
SIGNATURE_LENGTH = 32
STARTUP_TIMEOUT = 10.0

PUBLIC_URL_CAUSES = (
    "the usual causes: localhost or 127.0.0.1 in DOCDESK_PUBLIC_URL while the "
    "Document Server runs in a container or on another machine (it then "
    "reaches itself); a firewall or a port not published between the two; "
    "TLS: an https URL whose certificate the Document Server does not trust, "
    "or http and https mixed up; a private address the Document Server "
    "refuses because its JWT is off"
)


@dataclass(frozen=True)
class Check:
    """One finding: ``ok``, what was seen, and the fix.

    A check that passed with a ``fix`` is a warning: nothing fails yet, but
    it will. A check that could not run because another failed does not
    pass; its ``detail`` starts with ``skipped:`` and names that cause, the
    fix is the other check's.
    """

    name: str
    ok: bool
    detail: str
    fix: str | None = None


# How long a round of checks answers /api/health and the status page.
HEALTH_MAX_AGE = 30.0


def health_json(checks: Sequence[Check]) -> dict[str, Any]:
    """``{"ok": ..., "checks": [...]}``, as ``GET /api/health`` answers."""
    return {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}


async def recent_checks(request: Request) -> list[Check] | None:
    """The service's checks, run at most once every HEALTH_MAX_AGE seconds.

    A round converts a probe on the DS and writes to storage: too much to
    do for every poll of a monitor or every look at the status page. None
    when the app has no Settings (an app built around a ready DocDesk).
    """
    settings = getattr(request.app.state, "settings", None)
    if not isinstance(settings, Settings):
        return None
    state = request.app.state
    now = time.monotonic()
    recent: tuple[float, list[Check]] | None = getattr(state, "health", None)
    if recent is None or now - recent[0] > HEALTH_MAX_AGE:
        recent = (now, await run_checks(settings))
        state.health = recent
    return recent[1]


async def health_handler(request: Request) -> Response:
    """``GET /api/health``: every check, HTTP 200 when all pass, else 503."""
    checks = await recent_checks(request)
    if checks is None:
        return JSONResponse(
            {"error": "not_found", "message": "no settings to check"}, 404
        )
    body = health_json(checks)
    return JSONResponse(body, status_code=200 if body["ok"] else 503)


# The probe document


def probe_url(settings: Settings, nonce: str) -> str:
    """The signed link under the public URL where the DS fetches the probe."""
    query = urlencode({"nonce": nonce, "sig": _probe_signature(settings, nonce)})
    return f"{settings.public_url.rstrip('/')}{PROBE_PATH}?{query}"


def _probe_signature(settings: Settings, nonce: str) -> str:
    # A key of its own, derived from the JWT secret as the links' key is.
    key = hmac.new(
        settings.jwt_secret.encode(), b"docdesk probe v1", hashlib.sha256
    ).digest()
    digest = hmac.new(key, nonce.encode(), hashlib.sha256).hexdigest()
    return digest[:SIGNATURE_LENGTH]


def _probe_document(nonce: str) -> bytes:
    return f"docdesk probe {nonce}\n".encode()


async def probe_handler(request: Request) -> Response:
    """``GET /ds/probe?nonce=&sig=``: the probe document the DS converts.

    Checked like the file links the DS downloads: the signature first, then
    the DS's JWT header when it sends one. Reads the service's Settings
    from ``request.app.state.settings``.
    """
    settings = getattr(request.app.state, "settings", None)
    if not isinstance(settings, Settings):
        return PlainTextResponse("no probe here", status_code=404)

    nonce = request.query_params.get("nonce", "")
    signature = request.query_params.get("sig", "")
    expected = _probe_signature(settings, nonce)
    if not NONCE.fullmatch(nonce) or not hmac.compare_digest(
        signature.encode(), expected.encode()
    ):
        return PlainTextResponse("the probe link's signature does not match", 403)
    if settings.jwt_header in request.headers:
        try:
            tokens.read_request_token(
                {},
                request.headers,
                secret=settings.jwt_secret,
                header=settings.jwt_header,
            )
        except TokenError as exc:
            return PlainTextResponse(exc.message, status_code=403)

    logger.info("probe served nonce=%s", nonce)
    return Response(_probe_document(nonce), media_type="text/plain; charset=utf-8")


@dataclass(frozen=True)
class ProbeServer:
    """Who serves the probe on the public URL's address while doctor runs.

    ``served`` is True when doctor serves it itself; otherwise ``reason``
    says why it could not, and a running service is counted on instead.
    """

    address: str
    served: bool
    reason: str | None = None

    def describe(self) -> str:
        if self.served:
            return f"doctor served it on {self.address} for this check"
        return (
            f"doctor could not serve it on {self.address} ({self.reason}), so a "
            "running docdesk had to"
        )


@contextmanager
def serve_probe(
    settings: Settings, *, host: str | None = None, port: int | None = None
) -> Iterator[ProbeServer]:
    """Serve the probe on ``host:port`` until the block ends, if free.

    They default to the public URL's host and port; pass the ones
    ``docdesk serve`` listens on when a proxy stands in front of it. With
    the built-in simulator, it is mounted beside the probe as the service
    mounts it. When the address cannot be bound, the block still runs, with
    a ProbeServer that says why.
    """
    parts = urlsplit(settings.public_url)
    host = host or parts.hostname or "127.0.0.1"
    port = port or parts.port or (443 if parts.scheme == "https" else 80)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock, reason = _bind(host, port)
    if sock is None:
        logger.info("probe not served address=%s reason=%s", address, reason)
        yield ProbeServer(address, served=False, reason=reason)
        return

    import uvicorn

    config = uvicorn.Config(
        _probe_app(settings),
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the probe server did not start")
            time.sleep(0.01)
        yield ProbeServer(address, served=True)
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT)
        sock.close()


def _bind(host: str, port: int) -> tuple[socket.socket | None, str]:
    """A socket bound to ``host:port``, or None and the reason it is not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        return None, _os_reason(exc)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None, "the port is in use"
        return None, _os_reason(exc)
    return sock, ""


def _probe_app(settings: Settings) -> Starlette:
    """The probe route, and the simulator where ``docdesk serve`` mounts it."""
    from docdesk.simulator import Simulator, SimulatorSettings, create_simulator_app

    routes: list[BaseRoute] = [Route(PROBE_PATH, probe_handler, methods=["GET"])]
    simulator_app = None
    if settings.uses_simulator:
        simulator = Simulator(
            SimulatorSettings(
                secret=settings.jwt_secret, jwt_header=settings.jwt_header
            )
        )
        simulator_app = create_simulator_app(simulator.settings, simulator=simulator)
        routes.append(Mount(SIMULATOR_PATH, app=simulator_app))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # A mounted app's own lifespan never runs: close it here.
        if simulator_app is not None:
            await simulator_app.state.conversion.aclose()
            await simulator_app.state.simulator.aclose()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    return app


# Running the checks


async def diagnose(
    settings: Settings, probe: ProbeServer, *, secret_shared: bool = True
) -> list[Check]:
    """What ``docdesk doctor`` runs, beside the probe server it started.

    With the built-in simulator and no DOCDESK_JWT_SECRET, a running
    service's simulator has a random secret of its own, which no other
    process can know (``secret_shared`` false): the service is asked for
    its own health instead.
    """
    if settings.uses_simulator and not probe.served and not secret_shared:
        return await service_health(settings)
    return await run_checks(settings, probe=probe)


async def service_health(
    settings: Settings, *, wait: float = 4 * CHECK_TIMEOUT
) -> list[Check]:
    """The checks a running service reports at ``GET /api/health``."""
    url = f"{settings.public_url.rstrip('/')}/api/health"
    # Under access control the route wants a program's token.
    headers = {}
    if settings.api_tokens:
        headers["Authorization"] = f"Bearer {settings.api_tokens[0].token}"
    try:
        async with httpx.AsyncClient(timeout=wait, trust_env=False) as client:
            answer = (await client.get(url, headers=headers)).json()
        return [Check(**_check_fields(item)) for item in answer["checks"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        logger.info("service health unavailable reason=%s", type(exc).__name__)
    return [
        Check(
            "document_server",
            False,
            f"the built-in simulator runs inside the service at "
            f"{settings.public_url} under a random secret of its own, and the "
            f"service gave no health report at {url}",
            "set the same DOCDESK_JWT_SECRET for the service and for doctor, "
            "or stop the service and run doctor alone",
        )
    ]


def _check_fields(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise TypeError("a check is not an object")
    fix = item.get("fix")
    return {
        "name": str(item["name"]),
        "ok": item["ok"] is True,
        "detail": str(item["detail"]),
        "fix": str(fix) if fix is not None else None,
    }


async def run_checks(
    settings: Settings,
    *,
    probe: ProbeServer | None = None,
    check_timeout: float = CHECK_TIMEOUT,
    clock: Callable[[], float] = time.time,
) -> list[Check]:
    """Run every check in order, each bounded by ``check_timeout`` seconds.

    One failing does not stop the others, but a check that needs the DS,
    docdesk's token or the probe's conversion is skipped when that failed.
    ``probe`` is what :func:`serve_probe` started; None means this process
    is the service and serves the probe itself. ``clock`` reads the local
    time in seconds since the epoch.
    """
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(check_timeout, connect=min(5.0, check_timeout)),
        trust_env=False,
    ) as http:
        examination = _Examination(settings, probe, http, check_timeout, clock)
        found: dict[str, Check] = {}
        # A check skipped for another's failure passes that cause on.
        cause: dict[str, str] = {}
        for name, needs, run in examination.plan():
            failed = next((n for n in needs if not found[n].ok), None)
            if failed is None:
                found[name] = await _bounded(name, run, check_timeout)
                continue
            cause[name] = cause.get(failed, failed)
            reason = SKIPPED_BECAUSE[cause[name]]
            found[name] = Check(name, False, f"skipped: {reason}")
    return list(found.values())


SKIPPED_BECAUSE = {
    "document_server": "the Document Server did not answer",
    "secret": "the Document Server did not accept docdesk's token",
    "public_url": "the Document Server did not convert the probe",
}


async def _bounded(
    name: str, run: Callable[[], Awaitable[Check]], limit: float
) -> Check:
    """Run one check; running past ``limit`` or crashing fails it."""
    try:
        with anyio.fail_after(limit):
            check = await run()
    except TimeoutError:
        return Check(name, False, f"no result within {limit:g} s", None)
    except Exception as exc:
        logger.exception("check crashed name=%s", name)
        return Check(name, False, f"the check itself failed: {exc!r}", None)
    logger.debug("check done name=%s ok=%s", name, check.ok)
    return check


_Plan = list[tuple[str, tuple[str, ...], Callable[[], Awaitable[Check]]]]


class _Examination:
    """The checks of one run, sharing its HTTP client and findings."""

    def __init__(
        self,
        settings: Settings,
        probe: ProbeServer | None,
        http: httpx.AsyncClient,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.probe = probe
        self.http = http
        self.timeout = timeout
        self.clock = clock
        # Inner waits end before the check's own timeout, to say more.
        self.wait = timeout * 0.8
        self.ds_url = (
            settings.document_server_internal_url
            or settings.effective_document_server_url
        ).rstrip("/")
        self.probe_nonce = secrets.token_hex(8)
        self.converted: ConversionResult | None = None

    def plan(self) -> _Plan:
        return [
            ("document_server", (), self.document_server),
            ("secret", ("document_server",), self.secret),
            ("clock", ("document_server",), self.clock_skew),
            ("public_url", ("secret",), self.public_url),
            ("download", ("public_url",), self.download),
            ("storage", (), self.storage),
            ("database", (), self.database),
            ("disk", (), self.disk),
        ]

    # The Document Server

    async def document_server(self) -> Check:
        name, url = "document_server", self.ds_url
        try:
            response = await self.http.get(f"{url}/healthcheck")
        except httpx.HTTPError as exc:
            detail = f"cannot reach the Document Server at {url}: {_http_reason(exc)}"
            return Check(name, False, detail, self._reach_fix())

        if response.status_code != 200:
            return Check(
                name,
                False,
                f"{url}/healthcheck answered HTTP {response.status_code}: "
                "this is not the Document Server's address",
                f"set {self._ds_variable()} to the Document Server's base URL, "
                "without a path such as /web-apps",
            )
        if response.text.strip() != "true":
            return Check(
                name,
                False,
                f"the Document Server at {url} answers, but its healthcheck "
                f"says {response.text.strip()[:40]!r}",
                "see the Document Server's logs: its database, message queue "
                "or converter is down",
            )
        what = "the Document Server"
        if self.settings.uses_simulator:
            what = "the built-in simulator"
        detail = f"{what} answers at {url}"
        if self.settings.uses_simulator and self.probe and self.probe.served:
            detail += " (served by doctor for this run)"
        return Check(name, True, detail)

    async def secret(self) -> Check:
        name = "secret"
        commands = CommandService(
            self.ds_url,
            self.settings.jwt_secret,
            header=self.settings.jwt_header,
            client=self.http,
        )
        try:
            answer = await commands.command("version")
            error = CommandError(int(answer["error"]))
        except DocumentServerError as exc:
            return Check(name, False, exc.message, self._reach_fix())
        except (TypeError, ValueError):
            detail = "the version command answered an unknown error code"
            return Check(name, False, detail, None)

        if error is CommandError.TOKEN:
            return Check(
                name,
                False,
                "the Document Server refused docdesk's signed command (error 6): "
                "the JWT secret does not match its own, or the clocks differ",
                MISMATCH_FIX,
            )
        if error is CommandError.TOKEN_EXPIRED:
            return Check(
                name,
                False,
                "the Document Server found docdesk's token expired (error 7): "
                "the clocks differ by more than a minute, or the JWT secret "
                "does not match",
                "set both clocks by NTP; " + MISMATCH_FIX,
            )
        if error is not CommandError.NO_ERROR:
            detail = f"the version command failed with error {int(error)}"
            return Check(name, False, detail, None)

        if await self._accepts_unsigned():
            return Check(
                name,
                False,
                "the Document Server accepts unsigned commands: its JWT is off, "
                "so its callbacks come unsigned and docdesk refuses them",
                "turn JWT on in the Document Server (JWT_ENABLED=true and "
                "JWT_SECRET in its container), with docdesk's DOCDESK_JWT_SECRET",
            )
        version = answer.get("version") or "of unknown version"
        detail = f"the Document Server {version} accepts docdesk's signed commands"
        return Check(name, True, detail)

    async def _accepts_unsigned(self) -> bool:
        try:
            response = await self.http.post(
                f"{self.ds_url}/command", json={"c": "version"}
            )
            return bool(response.json().get("error") == 0)
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    async def clock_skew(self) -> Check:
        name = "clock"
        started = self.clock()
        try:
            response = await self.http.get(f"{self.ds_url}/healthcheck")
        except httpx.HTTPError as exc:
            detail = f"cannot reach the Document Server at {self.ds_url}: "
            return Check(name, False, detail + _http_reason(exc), self._reach_fix())
        local = (started + self.clock()) / 2

        date = response.headers.get("date")
        try:
            remote = parsedate_to_datetime(date).timestamp() if date else None
        except (TypeError, ValueError):
            remote = None
        if remote is None:
            detail = "not compared: the Document Server sent no usable Date header"
            return Check(name, True, detail)

        # Date drops the fraction of its second: half a second on average.
        skew = remote + 0.5 - local
        way = "ahead of" if skew > 0 else "behind"
        detail = f"the Document Server's clock is {abs(skew):.0f} s {way} docdesk's"
        if abs(skew) <= 2:
            detail = "the Document Server's clock agrees with docdesk's within 2 s"
        if abs(skew) > CLOCK_LEEWAY + 1:
            return Check(
                name,
                False,
                f"{detail}: past the {CLOCK_LEEWAY} s it allows a token, so "
                "tokens are refused as expired or not yet valid",
                "set both machines' clocks by NTP (timedatectl set-ntp true)",
            )
        if abs(skew) > CLOCK_WARNING:
            fix = "set both machines' clocks by NTP before it passes 60 s"
            return Check(name, True, detail, fix)
        return Check(name, True, detail)

    async def public_url(self) -> Check:
        name, public = "public_url", self.settings.public_url
        conversions = ConversionService(
            self.ds_url,
            self.settings.jwt_secret,
            header=self.settings.jwt_header,
            client=self.http,
        )
        nonce = self.probe_nonce
        try:
            result = await conversions.convert(
                probe_url(self.settings, nonce),
                filetype="txt",
                outputtype="docx",
                key=f"docdesk-probe-{nonce}",
                title="docdesk-probe.txt",
                async_=True,
                wait=self.wait,
            )
        except DocumentServerError as exc:
            return Check(name, False, exc.message, self._reach_fix())
        served = f" ({self.probe.describe()})" if self.probe else ""

        if result.converted:
            self.converted = result
            detail = f"the Document Server fetched a probe from {public}{served}"
            return Check(name, True, detail)
        if result.error is ConversionError.DOWNLOAD:
            causes = PUBLIC_URL_CAUSES
            if self.settings.callback_allow:
                causes += "; its address outside DOCDESK_CALLBACK_ALLOW"
            return Check(
                name,
                False,
                f"the Document Server could not download from the public URL "
                f"{public} (conversion error -4){served}; {causes}",
                "set DOCDESK_PUBLIC_URL to docdesk's address as the Document "
                "Server reaches it: from inside its container, try "
                f"curl {public.rstrip('/')}/",
            )
        if result.error is ConversionError.TOKEN:
            return Check(
                name,
                False,
                "the conversion service refused docdesk's token (error -8): the "
                "JWT secret does not match, or the clocks differ",
                MISMATCH_FIX,
            )
        if result.error is None:
            return Check(
                name,
                False,
                f"the Document Server had not fetched the probe from {public} "
                f"after {self.wait:g} s{served}: a firewall that drops packets "
                "looks like this",
                "open the way from the Document Server to DOCDESK_PUBLIC_URL",
            )
        detail = (
            f"the conversion of the probe from {public} failed with error "
            f"{int(result.error)} ({result.error.name.lower()})"
        )
        return Check(name, False, detail, "see the Document Server's logs")

    async def download(self) -> Check:
        name = "download"
        assert self.converted is not None
        assert self.converted.file_url is not None
        url = self.converted.file_url
        for public, internal in internal_url_map(self.settings).items():
            if url.startswith(public):
                url = internal + url[len(public) :]
        origins = self.settings.document_server_origins
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.netloc}"

        sink = _Buffer(MAX_PROBE_RESULT)
        fetcher = Fetcher(
            origins,
            max_bytes=MAX_PROBE_RESULT,
            timeout=self.wait,
            allow_private=await resolves_privately(origins),
        )
        try:
            await fetcher.fetch(url, sink)
        except DownloadRefused as exc:
            return Check(
                name,
                False,
                f"docdesk refuses the Document Server's file link to {where}: "
                f"{exc.message}",
                "the DS builds its links on the address docdesk calls it by: "
                "list that address in DOCDESK_DOCUMENT_SERVER_URL or "
                "DOCDESK_DOCUMENT_SERVER_INTERNAL_URL",
            )
        except (DownloadError, TooLarge) as exc:
            return Check(
                name,
                False,
                f"docdesk could not download the Document Server's file from "
                f"{where}: {exc.message}",
                "docdesk must reach the Document Server's /cache/files links: "
                f"check {self._ds_variable()}, the firewall and TLS trust",
            )
        finally:
            await fetcher.aclose()

        if self.probe_nonce not in _docx_text(bytes(sink.data)):
            return Check(
                name,
                False,
                f"the file the Document Server converted from {where} is not "
                "the probe docdesk served: another server answers at "
                f"{self.settings.public_url}",
                "point DOCDESK_PUBLIC_URL at this docdesk",
            )
        detail = f"docdesk downloads the Document Server's files from {where}"
        return Check(name, True, detail)

    def _ds_variable(self) -> str:
        if self.settings.document_server_internal_url:
            return "DOCDESK_DOCUMENT_SERVER_INTERNAL_URL"
        if self.settings.document_server_url:
            return "DOCDESK_DOCUMENT_SERVER_URL"
        return "DOCDESK_PUBLIC_URL"

    def _reach_fix(self) -> str:
        if self.settings.uses_simulator:
            return (
                "the built-in simulator runs inside `docdesk serve`: start it, or "
                "set DOCDESK_DOCUMENT_SERVER_URL to a Document Server"
            )
        return (
            f"start the Document Server, or correct {self._ds_variable()}: the "
            "Document Server as docdesk reaches it (not localhost from inside a "
            "container); for https, docdesk must trust its certificate"
        )

    # This machine

    async def storage(self) -> Check:
        name = "storage"
        url = self.settings.resolved_storage_url
        shown = _shown_storage(url)
        fix = (
            f"make {shown} a folder the user docdesk runs as can write, or set "
            "DOCDESK_DATA_DIR or DOCDESK_STORAGE_URL elsewhere"
        )
        if url.startswith("s3:"):
            fix = (
                f"check that {shown} exists and answers, and that AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY may write to it, or correct "
                "DOCDESK_STORAGE_URL"
            )
        blob = f"doctor-probe-{secrets.token_hex(8)}"
        data = f"docdesk doctor {blob}\n".encode()
        try:
            store = open_store(url)
        except (DocdeskError, OSError) as exc:
            return Check(name, False, f"cannot open {shown}: {_os_reason(exc)}", fix)

        try:
            # A commit returns once the bytes and their name are synced.
            async with store.create() as writer:
                await writer.write(data)
                await writer.commit(blob)
            read = b"".join([chunk async for chunk in store.read(blob)])
        except (DocdeskError, OSError) as exc:
            return Check(
                name, False, f"cannot write to {shown}: {_os_reason(exc)}", fix
            )
        finally:
            with suppress(DocdeskError, OSError):
                await store.delete(blob)
            await store.close()
        if read != data:
            return Check(
                name, False, f"{shown} gave back other bytes than written", fix
            )

        kind = _file_system_type(Path(shown)) if url.startswith("file:") else None
        if kind in VOLATILE_FILE_SYSTEMS:
            return Check(
                name,
                True,
                f"{shown} takes synced writes, but lives on {kind}: everything "
                "in it is lost at the next reboot",
                "set DOCDESK_DATA_DIR or DOCDESK_STORAGE_URL to a folder on a disk",
            )
        return Check(name, True, f"{shown} takes synced writes and reads them back")

    async def database(self) -> Check:
        from sqlalchemy.engine import make_url

        name = "database"
        url = self.settings.resolved_database_url
        embedded = self.settings.database_url is None
        shown = make_url(url).render_as_string(hide_password=True)
        sqlite_file = self.settings.data_dir.absolute() / "docdesk.sqlite3"
        if embedded and not sqlite_file.exists():
            detail = f"{sqlite_file} does not exist yet: docdesk serve creates it"
            return Check(name, True, detail)

        try:
            catalog = Catalog.from_url(url)
        except DocdeskError as exc:
            return Check(name, False, exc.message, "correct DOCDESK_DATABASE_URL")
        try:
            pending = await catalog.pending_migrations()
        except CatalogError as exc:
            detail = f"cannot reach the database {shown}: {_database_reason(exc)}"
            fix = "start the database, or correct DOCDESK_DATABASE_URL"
            return Check(name, False, detail, fix)
        finally:
            await catalog.close()

        if pending and embedded:
            detail = (
                f"{shown} is behind by {len(pending)} migration(s): docdesk serve "
                "applies them when it starts"
            )
            return Check(name, True, detail)
        if pending:
            return Check(
                name,
                False,
                f"{shown} is behind by {len(pending)} migration(s) "
                f"({', '.join(pending)}): docdesk serve refuses to start",
                "run docdesk migrate",
            )
        return Check(name, True, f"{shown} is reachable and migrated")

    async def disk(self) -> Check:
        name = "disk"
        places = [self.settings.data_dir]
        if self.settings.resolved_storage_url.startswith("file:"):
            places.append(Path(_shown_storage(self.settings.resolved_storage_url)))
        free, where = min(
            (shutil.disk_usage(_existing(place)).free, place) for place in places
        )

        detail = f"{_gib(free)} free at {where}"
        fix = f"free space on the disk that holds {where}, or move docdesk's data"
        if free < self.settings.max_download_bytes:
            largest = _gib(self.settings.max_download_bytes)
            detail += f": less than one file of DOCDESK_MAX_DOWNLOAD_BYTES ({largest})"
            return Check(name, False, detail, fix)
        if free < LOW_DISK:
            return Check(name, True, f"{detail}: under 1 GiB", fix)
        return Check(name, True, detail)


MISMATCH_FIX = (
    "set DOCDESK_JWT_SECRET to the Document Server's secret (JWT_SECRET of its "
    "container, services.CoAuthoring.secret.inbox in its local.json) and "
    "DOCDESK_JWT_HEADER to its JWT_HEADER (Authorization by default)"
)


class _Buffer:
    """A sink that keeps a small download in memory."""

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit

    async def write(self, chunk: bytes) -> None:
        self.data += chunk[: self.limit - len(self.data)]


def _docx_text(data: bytes) -> str:
    """The text of a docx's body, its markup dropped; empty if unreadable."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            xml = archive.read("word/document.xml").decode("utf-8", "replace")
    except (zipfile.BadZipFile, KeyError, OSError):
        return ""
    return re.sub(r"<[^>]*>", "", xml)


def _http_reason(exc: httpx.HTTPError) -> str:
    reason = str(exc).strip() or type(exc).__name__
    return reason[:200]


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, DocdeskError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _database_reason(exc: CatalogError) -> str:
    # The driver's own words say why; they never hold the password.
    cause = getattr(exc.__cause__, "orig", None) or exc.__cause__ or exc
    lines = str(cause).strip().splitlines()
    return (lines[0] if lines else type(cause).__name__)[:200]


def _shown_storage(url: str) -> str:
    """A storage URL without credentials: a file store is its folder.

    An S3 store shows its bucket, prefix and the endpoint's host, never the
    URL's user info or the rest of its query.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        return url2pathname(parts.path)
    shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    endpoint = dict(parse_qsl(parts.query)).get("endpoint")
    if endpoint:
        try:
            where = urlsplit(endpoint)
            port = f":{where.port}" if where.port else ""
        except ValueError:
            return shown
        shown += f" at {where.scheme}://{where.hostname or ''}{port}"
    return shown


def _existing(path: Path) -> Path:
    """``path``, or its nearest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


def _file_system_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the file system holding ``path``, where Linux says it.

    ``mountinfo`` is the text of ``/proc/self/mountinfo``, read if not given.
    """
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = str(_existing(path).resolve())

    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        parts, kinds = fields.split(), tail.split()
        if len(parts) < 5 or not kinds:
            continue
        point = parts[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), kinds[0])
    return best[1] if best else None
