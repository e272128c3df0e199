"""docdesk with its embedded simulator: the Document Server's behaviour.

The simulator is the protocol-faithful Document Server (DS). Every callback
a test sees here comes from a session event (an editor joins, edits, presses
Save, submits a form, leaves) or from a fault queued through its control
API, and the DS signs, times and retries it as it would in production.

The DS retries a failed status 2 within a fraction of a second here, before
a test thread could look. :class:`Wire` listens on the simulator's own HTTP
client instead, so a test reads the exact answer the DS heard and, through a
probe, docdesk's state at the instant it heard it: the DS awaits the probe
before it decides anything, so no retry can come in between.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from docdesk.settings import SIMULATOR_PATH
from docdesk.simulator.edits import read_text
from docdesk.testing import ControlClient

from .harness import Service

__all__ = ["Editor", "Heard", "Simulated", "Snapshot", "Wire"]

# Far above any save path here; a missed callback fails instead of hanging.
CALLBACK_LIMIT = 10.0
POLL = 0.02

Probe = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Heard:
    """One answer the DS got from docdesk, as the DS got it."""

    method: str
    url: str
    status: int | None
    """The callback's status; None for a download of ``document.url``."""
    http_status: int
    body: bytes
    content_type: str | None
    seen: object
    """What the wire's probe returned the instant the answer arrived."""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Wire:
    """Every request the DS sends and every answer it hears, in order."""

    sent: list[httpx.Request] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    probe: Probe | None = None

    def listen(self, client: httpx.AsyncClient) -> None:
        client.event_hooks = {"request": [self._sent], "response": [self._heard]}

    def clear(self) -> None:
        self.sent.clear()
        self.heard.clear()
        self.probe = None

    def answers(self, status: int) -> list[Heard]:
        """The answers to callbacks of ``status``, oldest first."""
        return [heard for heard in self.heard if heard.status == status]

    def bearer_tokens(self) -> list[str]:
        """The header JWT of every request the DS sent."""
        headers = (request.headers.get("authorization", "") for request in self.sent)
        return [value.removeprefix("Bearer ") for value in headers if value]

    async def _sent(self, request: httpx.Request) -> None:
        self.sent.append(request)

    async def _heard(self, response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        status = None
        seen: object = None
        if request.method == "POST":
            status = json.loads(request.content)["status"]
            # An error in the probe must reach the test, not end the DS's task.
            try:
                seen = await self.probe() if self.probe else None
            except Exception as exc:
                seen = exc
        self.heard.append(
            Heard(
                method=request.method,
                url=str(request.url),
                status=status,
                http_status=response.status_code,
                body=response.content,
                content_type=response.headers.get("content-type"),
                seen=seen,
            )
        )


@dataclass(frozen=True)
class Snapshot:
    """docdesk's state for one document at one instant."""

    version: int
    key: str
    sha256: str
    """Of the current version's bytes as they lie in the blob store."""
    blobs: dict[str, bytes]
    staging: list[Path]
    recoveries: int


@dataclass(frozen=True)
class Editor:
    """An editor the simulator opened, and the config it opened with."""

    id: str
    key: str
    config: dict[str, Any]

    @property
    def callback_url(self) -> str:
        url: str = self.config["editorConfig"]["callbackUrl"]
        return url


class Simulated:
    """docdesk and the simulator it mounts, driven as a browser would."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.simulator = service.simulator
        self.control = ControlClient(service.url + SIMULATOR_PATH)
        self.wire = Wire()
        self.wire.listen(self.simulator.client)

    def close(self) -> None:
        self.control.close_client()

    def reset(self) -> None:
        """Forget the last test's faults, answers and probe; let its work end.

        A force save the auto-save timer started may still be on its way to
        docdesk: the next test must not meet it in the blob store's staging.
        """

        async def clear() -> None:
            faults = self.simulator.faults
            for queue in (faults.download, faults.assembly, faults.callback):
                queue.clear()
            faults.command.clear()
            self.wire.clear()
            for session in self.simulator.sessions.values():
                if session.timer_task is not None:
                    session.timer_task.cancel()

        self.service.call(clear())
        # The simulator's own record of the work it spawned: sends and timers.
        self._wait("the simulator to settle", lambda: not self.simulator._tasks)

    # Editors

    def open(self, document_id: str, user: str = "ann") -> Editor:
        """Open the editor as ``user``, once the DS has heard the join answered."""
        config = self.service.config(document_id, user_id=user, user_name=user.title())
        key = config["document"]["key"]
        joined = len(self.attempts(1, key))

        editor = self.control.open(config)

        self._wait(f"{user} joining {key}", lambda: len(self.attempts(1, key)) > joined)
        return Editor(editor, key, config)

    # The DS's callback log

    def attempts(self, status: int, key: str) -> list[dict[str, Any]]:
        """Every attempt the DS made to post ``status`` for ``key``."""
        return [c for c in self.control.callbacks(key) if c["status"] == status]

    def delivered(self, status: int, key: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th callback of ``status`` that docdesk acknowledged."""
        return self._nth(status, key, count, success=True)

    def failed(self, status: int, key: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th attempt of ``status`` that docdesk refused."""
        return self._nth(status, key, count, success=False)

    def given_up(self, key: str) -> None:
        """Wait until the DS stops trying and keeps the save as a forgotten file."""
        self._wait(f"the DS giving {key} up", lambda: key in self.simulator.forgotten)

    def _nth(
        self, status: int, key: str, count: int, *, success: bool
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            found[:] = [
                c for c in self.attempts(status, key) if c["success"] is success
            ]
            return len(found) >= count

        self._wait(f"status {status} for {key} with success={success}", arrived)
        return found[count - 1]

    @staticmethod
    def _wait(what: str, arrived: Callable[[], bool]) -> None:
        deadline = time.monotonic() + CALLBACK_LIMIT
        while not arrived():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {CALLBACK_LIMIT} s for {what}")
            time.sleep(POLL)

    # Files

    def fetch(self, url: str) -> bytes:
        """The bytes behind a link the DS handed over."""
        response = self.service.client.get(url)
        assert response.status_code == 200, response.text
        return response.content

    def text(self, document_id: str, version: int | None = None) -> list[str]:
        """What the document says, read as the simulator's editor reads it."""
        file_type = self.service.document(document_id)["file_type"]
        return read_text(file_type, self.service.content(document_id, version))

    def watch(self, document_id: str) -> None:
        """Take a :class:`Snapshot` of the document at every answer the DS hears."""
        self.wire.probe = lambda: self.snapshot(document_id)

    async def snapshot(self, document_id: str) -> Snapshot:
        catalog = self.service.desk.catalog
        document = await catalog.document(document_id)
        current = await catalog.version(document_id, document.current_version)
        recoveries = await catalog.recoveries(document_id)
        blobs = self.service.blob_files()
        return Snapshot(
            version=document.current_version,
            key=document.key,
            sha256=hashlib.sha256(blobs[current.blob]).hexdigest(),
            blobs=blobs,
            staging=self.service.staging(),
            recoveries=len(recoveries),
        )
