"""The docdesk service on a real loopback port, run by uvicorn in a thread.

Tests talk to it over HTTP like any client would. The service's event loop
is reachable through :meth:`Service.call`, for the few facts the HTTP API
does not show (recoveries, a version's history) and for failure injection.
With no Document Server in its settings, the service mounts the simulator
at ``SIMULATOR_PATH``, as ``docdesk serve`` does; :attr:`Service.simulator`
reaches it.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.routing import Mount

from docdesk.desk import DocDesk
from docdesk.settings import SIMULATOR_PATH, Settings
from docdesk.simulator import Simulator, SimulatorSettings
from docdesk.web import create_app

__all__ = ["Service", "Session", "bound_listener", "sha256"]

T = TypeVar("T")
STARTUP_LIMIT = 15.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Session:
    """What an editor config hands the Document Server."""

    key: str
    callback_url: str
    document_url: str


class Service:
    """docdesk serving ``settings`` on the already bound ``listener``.

    ``simulator_settings`` shapes the embedded simulator, when the settings
    name no Document Server.
    """

    def __init__(
        self,
        settings: Settings,
        listener: socket.socket,
        *,
        simulator_settings: SimulatorSettings | None = None,
    ) -> None:
        self.settings = settings
        self.url = settings.public_url
        self.blob_root = settings.data_dir / "blobs"
        self.app = create_app(settings, simulator_settings=simulator_settings)
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._listener = listener
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="docdesk", daemon=True)
        self.client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_LIMIT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("docdesk did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.client.close()
        self._server.should_exit = True
        # A download the simulator stalls on purpose would hold a graceful
        # shutdown for an hour: end the requests still running.
        for task in list(self._server.server_state.tasks):
            self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout=STARTUP_LIMIT)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._server.serve([self._listener]))
        finally:
            self._loop.close()

    @property
    def desk(self) -> DocDesk:
        desk: DocDesk = self.app.state.desk
        return desk

    @property
    def simulator(self) -> Simulator:
        """The embedded simulator, the Document Server of this service."""
        for route in self.app.routes:
            if isinstance(route, Mount) and route.path == SIMULATOR_PATH:
                simulator: Simulator = route.app.state.simulator  # type: ignore[attr-defined]
                return simulator
        raise LookupError("this service has a Document Server of its own")

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the service's own event loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    # The JSON API, for arranging and checking

    def upload(self, name: str, content: bytes) -> dict[str, Any]:
        response = self.client.post("/api/documents", files={"file": (name, content)})
        assert response.status_code == 201, response.text
        document: dict[str, Any] = response.json()
        return document

    def document(self, document_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/documents/{document_id}")
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    def versions(self, document_id: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/api/documents/{document_id}/versions")
        assert response.status_code == 200, response.text
        versions: list[dict[str, Any]] = response.json()["versions"]
        return versions

    def content(self, document_id: str, version: int | None = None) -> bytes:
        path = f"/api/documents/{document_id}/content"
        if version is not None:
            path = f"/api/documents/{document_id}/versions/{version}/content"
        response = self.client.get(path)
        assert response.status_code == 200, response.text
        return response.content

    def config(self, document_id: str, **params: str) -> dict[str, Any]:
        response = self.client.get(
            f"/api/documents/{document_id}/editor-config", params=params
        )
        assert response.status_code == 200, response.text
        config: dict[str, Any] = response.json()
        return config

    def session(self, document_id: str, user_id: str = "u1") -> Session:
        """Open the editor as ``user_id`` would: the config's key and links."""
        config = self.config(document_id, user_id=user_id, user_name=user_id)
        return Session(
            key=config["document"]["key"],
            callback_url=config["editorConfig"]["callbackUrl"],
            document_url=config["document"]["url"],
        )

    def callbacks(self, document_id: str) -> list[dict[str, Any]]:
        """The callback log, oldest first."""
        response = self.client.get(f"/api/documents/{document_id}/callbacks")
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()["callbacks"]
        return records[::-1]

    # The data dir

    def blob_files(self) -> dict[str, bytes]:
        """Every committed blob file under the data dir, by relative name."""
        return {
            path.relative_to(self.blob_root).as_posix(): path.read_bytes()
            for path in self.blob_root.rglob("*")
            if path.is_file() and ".staging" not in path.parts
        }

    def staging(self) -> list[Path]:
        """Temporaries left in the blob store's staging folder."""
        return list((self.blob_root / ".staging").iterdir())


def bound_listener() -> socket.socket:
    """A socket on a free loopback port, bound now so no one else takes it."""
    # IPPROTO_TCP spelled out: asyncio turns Nagle off only on sockets that
    # say so, and with Nagle every keep-alive answer waits 40 ms for an ACK.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    return listener
