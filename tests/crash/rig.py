"""One docdesk, one simulator and the throttle between them, for a crash test.

The rig opens a document in the simulator, edits it, closes the editor and
follows the status-2 save it causes: which download docdesk started, what
docdesk logged, what the simulator heard back. Checks read the document
through docdesk's API and the catalog and the blob folder from the disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import docx
import httpx

from docdesk.catalog import Catalog
from docdesk.orphans import sweep_orphans
from docdesk.storage.local import STAGING, LocalBlobStore
from docdesk.testing import ControlClient

from .processes import (
    SECRET,
    Service,
    Throttle,
    clean_environment,
    free_port,
    simulator_process,
)

MUST_SAVE = 2
# The simulator's retries after 1, 2 and 4 s, then the forgotten file.
ATTEMPTS = 4
# The answers the DS tries again: no answer at all, 429 and 5xx.
RETRIED = {429, *range(500, 600)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def noise_png(side: int) -> bytes:
    """A square PNG of random pixels: it does not compress, in a zip or not."""
    rows = b"".join(b"\0" + os.urandom(side * 3) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


def large_docx(text: str, side: int = 600) -> bytes:
    """A real docx holding ``text`` and a picture of ``3 * side**2`` bytes.

    The picture is a related part, so it survives every save the simulator
    makes (python-docx drops parts nothing refers to).
    """
    document = docx.Document()
    document.add_paragraph(text)
    document.add_picture(io.BytesIO(noise_png(side)))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@dataclass
class Edit:
    """One save under way: the key it came under and the state before it."""

    key: str
    before: dict[str, Any]
    downloads_mark: int
    lines_mark: int


class Rig:
    """docdesk (killable), the simulator (kept up) and the throttle."""

    def __init__(
        self, service: Service, control: ControlClient, sim_url: str, data: Path
    ) -> None:
        self.service = service
        self.control = control
        self.sim_url = sim_url
        self.data = data
        self.blobs = data / "blobs"
        self.throttle: Throttle | None = None

    # Driving a save

    def begin_save(
        self,
        document_id: str,
        text: str,
        before_close: Callable[[], object] | None = None,
    ) -> Edit:
        """Open, edit and close an editor: the simulator's save is on its way.

        ``before_close`` runs once the editor holds the edit: a fault set
        there is in place before the save starts.
        """
        config = self.service.editor_config(document_id, "ann")
        session = self.control.open(config)
        self.control.edit(session, text)
        if before_close is not None:
            before_close()
        before = self.service.document(document_id)
        output = self.service.current
        assert output is not None
        assert self.throttle is not None
        edit = Edit(
            key=config["document"]["key"],
            before=before,
            downloads_mark=len(self.throttle.downloads),
            lines_mark=len(output.lines),
        )
        self.control.close(session)
        return edit

    def download_started(self, edit: Edit) -> float:
        """When docdesk asked the simulator for the edited file."""
        assert self.throttle is not None
        return self.throttle.wait_for_download(edit.downloads_mark, "output.docx").at

    def attempts(self, key: str) -> list[dict[str, Any]]:
        return [c for c in self.control.callbacks(key) if c["status"] == MUST_SAVE]

    def first_answer(self, key: str, timeout: float = 60.0) -> dict[str, Any]:
        """The save's first attempt, once the simulator heard its answer."""
        deadline = time.monotonic() + timeout
        while not (attempts := self.attempts(key)):
            assert time.monotonic() < deadline, f"no save of {key} was answered"
            time.sleep(0.02)
        return attempts[0]

    def settled(self, key: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The save's attempts, once one succeeded or the DS gave up."""
        deadline = time.monotonic() + timeout
        while True:
            attempts = self.attempts(key)
            if attempts and _final(attempts[-1], len(attempts)):
                return attempts
            assert time.monotonic() < deadline, f"the save of {key} never settled"
            time.sleep(0.02)

    def edited_file(self, attempt: dict[str, Any]) -> bytes:
        """The file the simulator offered in a callback, fetched from it."""
        response = httpx.get(attempt["body"]["url"], timeout=30)
        response.raise_for_status()
        return response.content

    # What is on the disk

    def catalog_blobs(self) -> set[str]:
        """Every blob name the catalog refers to, read from the database file."""
        path = self.data / "docdesk.sqlite3"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT blob, changes_blob, forms_blob FROM versions"
                " UNION ALL SELECT blob, NULL, NULL FROM recoveries"
            ).fetchall()
        db.close()
        return {name for row in rows for name in row if name}

    def blob_files(self) -> set[str]:
        return {
            path.relative_to(self.blobs).as_posix()
            for path in self.blobs.rglob("*")
            if path.is_file() and STAGING not in path.relative_to(self.blobs).parts
        }

    def staging(self) -> list[Path]:
        return sorted((self.blobs / STAGING).iterdir())

    def sweep_staging(self) -> int:
        """What the store's own recovery removes: every temporary left."""
        store = LocalBlobStore(self.blobs)
        removed: int = anyio.run(lambda: store.sweep_staging(older_than=0))
        return removed

    def sweep_orphans(self) -> int:
        """What the recovery job removes: every blob no version names.

        Only once every save has settled: with nothing in flight, no blob
        is young enough to need the job's age limit.
        """

        async def sweep() -> int:
            catalog = Catalog.from_url(
                f"sqlite+aiosqlite:///{self.data / 'docdesk.sqlite3'}"
            )
            try:
                return await sweep_orphans(
                    catalog, LocalBlobStore(self.blobs), older_than=0
                )
            finally:
                await catalog.close()

        return anyio.run(sweep)


def _final(attempt: dict[str, Any], count: int) -> bool:
    """Whether the DS tries no more after ``attempt``, the ``count``-th."""
    retried = attempt["http_status"] is None or attempt["http_status"] in RETRIED
    return attempt["success"] or count >= ATTEMPTS or not retried


@contextmanager
def running_rig(
    folder: Path,
    *,
    rate: float,
    data: Path | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Rig]:
    """The simulator, the throttle and a started docdesk, all under ``folder``.

    ``data`` is docdesk's data dir (``folder/data`` by default);
    ``settings`` adds DOCDESK_* variables.
    """
    data = data or folder / "data"
    with ExitStack() as stack:
        sim_url, control = stack.enter_context(
            simulator_process(folder / "simulator.log")
        )
        throttle = Throttle(int(sim_url.rsplit(":", 1)[1]), rate)
        throttle.start()
        stack.callback(throttle.close)
        env = clean_environment(
            **{
                "DOCDESK_DATA_DIR": str(data),
                "DOCDESK_DOCUMENT_SERVER_URL": sim_url,
                "DOCDESK_DOCUMENT_SERVER_INTERNAL_URL": throttle.url,
                "DOCDESK_JWT_SECRET": SECRET,
                # Should the DS ever give up, the service's recovery brings
                # the forgotten file back, as it would in production.
                "DOCDESK_RECOVERY_INTERVAL": "1",
                **(settings or {}),
            }
        )
        service = Service(free_port(), env, folder / "docdesk.log")
        stack.callback(service.stop)
        service.start()
        rig = Rig(service, control, sim_url, data)
        rig.throttle = throttle
        yield rig
