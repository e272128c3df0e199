"""Many editors on many documents at once, for a bounded time.

Each editor is a task that does what a person in the simulated Document
Server (DS) does: open the document with a fresh editor config, type a few
edits, sometimes press Save (a force save, status 6), leave (status 1 for
the others, status 4 or, after the save delay, status 2 when the last one
leaves), and come back. Every callback comes from the simulator over real
HTTP; the simulator's control API says what docdesk answered each one.

Afterwards every callback must have been acknowledged, and every edit the
simulator accepted must be in the document's versions, each editor's edits
in the order they were typed. The DS may keep a session going under an old
key while docdesk already handed out the new one (an editor who rejoins
while the final save is on its way); its save still lands, as a version of
its own, so an edit is looked for in every version, not only the newest.

``DOCDESK_LOAD_SECONDS`` sets how long the editors work (20 s by default).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import httpx
import pytest

from docdesk.settings import SIMULATOR_PATH
from integration.office import make_docx
from integration.simulated import Simulated
from tally import record

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

DOCUMENTS = 20
USERS = ("ann", "bob", "cyd")
LOAD_SECONDS = float(os.environ.get("DOCDESK_LOAD_SECONDS", "20"))
# The editors' pace, in seconds between two steps: people think between
# keystrokes, and a crowd with no pause at all only measures a full queue.
THINK = (1.0, 3.0)
# Editors come in over this many seconds, not all in the same instant.
ARRIVAL = 2.0
FORCE_SAVE_CHANCE = 0.3
# Far above the time the last saves take; reached only on a failure.
DRAIN_LIMIT = 30.0
# A rejoin is refused while the old key's final save is on its way; far
# above that, reached only when the key never settles.
REJOIN_LIMIT = 30.0
NO_SAVE = frozenset({1, 4})


@dataclass(frozen=True)
class Edit:
    """One edit the simulator accepted."""

    document_id: str
    user: str
    text: str


@dataclass
class Crowd:
    """What the editors did, for the checks afterwards."""

    edits: list[Edit] = field(default_factory=list)
    sessions: int = 0
    force_saves: int = 0
    rejoins_refused: int = 0


@dataclass
class Stopwatch:
    """How long each callback took, as the DS's HTTP client saw it."""

    seconds: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))

    async def heard(self, response: httpx.Response) -> None:
        if response.request.method != "POST":
            return
        # ``elapsed`` is known once the body is read.
        await response.aread()
        status = json.loads(response.request.content)["status"]
        self.seconds[status].append(response.elapsed.total_seconds())

    def percentiles(self, statuses: frozenset[int] | None = None) -> str:
        times = sorted(
            s
            for status, values in self.seconds.items()
            if statuses is None or status in statuses
            for s in values
        )
        if len(times) < 2:
            return "n/a"
        cuts = statistics.quantiles(times, n=100, method="inclusive")
        return f"p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms"


class EditorLoop:
    """One person on one document, through docdesk's API and the DS's."""

    def __init__(
        self, http: httpx.AsyncClient, document_id: str, user: str, crowd: Crowd
    ) -> None:
        self.http = http
        self.document_id = document_id
        self.user = user
        self.crowd = crowd
        self.random = random.Random(f"{document_id}-{user}")
        self.typed = 0

    async def run(self, deadline: float) -> None:
        await asyncio.sleep(self.random.uniform(0, ARRIVAL))
        while time.monotonic() < deadline:
            session = await self._join()
            self.crowd.sessions += 1
            try:
                await self._work(session, deadline)
            finally:
                await self._control("POST", f"/sessions/{session}/close")
            await self._pause()

    async def _join(self) -> str:
        """Open the editor; a key saved meanwhile is refused, so ask again."""
        limit = time.monotonic() + REJOIN_LIMIT
        while True:
            answer = await self.http.get(
                f"/api/documents/{self.document_id}/editor-config",
                params={"user_id": self.user, "user_name": self.user.title()},
            )
            answer.raise_for_status()
            opened = await self.http.post(
                f"{SIMULATOR_PATH}/simulator/sessions", json={"config": answer.json()}
            )
            if opened.status_code == 201:
                session: str = opened.json()["session"]
                return session
            assert opened.json()["error"] == "config_rejected", opened.text
            assert time.monotonic() < limit, "every rejoin refused"
            self.crowd.rejoins_refused += 1
            await self._pause()

    async def _work(self, session: str, deadline: float) -> None:
        # Some only look: a session nobody changed ends with status 4.
        for _ in range(self.random.choice((0, 1, 2, 3, 4))):
            if time.monotonic() >= deadline:
                return
            self.typed += 1
            text = f"{self.document_id} {self.user} edit {self.typed}"
            await self._control("POST", f"/sessions/{session}/edit", {"text": text})
            self.crowd.edits.append(Edit(self.document_id, self.user, text))
            await self._pause()

        if self.random.random() < FORCE_SAVE_CHANCE:
            answer = await self._control("POST", f"/sessions/{session}/save")
            self.crowd.force_saves += bool(answer["forcesave"])
            await self._pause()

    async def _control(
        self, method: str, path: str, body: dict[str, str] | None = None
    ) -> dict[str, object]:
        answer = await self.http.request(
            method, f"{SIMULATOR_PATH}/simulator{path}", json=body
        )
        assert answer.status_code == 200, answer.text
        result: dict[str, object] = answer.json()
        return result

    async def _pause(self) -> None:
        await asyncio.sleep(self.random.uniform(*THINK))


async def test_every_callback_is_answered_and_every_edit_kept_under_load(
    sim: Simulated,
) -> None:
    documents = [
        sim.service.upload(f"Load {n}.docx", make_docx(f"load {n}"))["id"]
        for n in range(DOCUMENTS)
    ]
    stopwatch = Stopwatch()
    hooks = sim.simulator.client.event_hooks["response"]
    hooks.append(stopwatch.heard)
    crowd = Crowd()

    try:
        started = time.monotonic()
        await _work_together(sim, documents, crowd, started + LOAD_SECONDS)
        worked = time.monotonic() - started
        await _settled(sim)
    finally:
        hooks.remove(stopwatch.heard)

    attempts = sim.control.callbacks()
    refused = [a for a in attempts if not a["success"]]
    by_status = Counter(a["status"] for a in attempts)
    kept, disordered = _kept_in_order(sim, documents, crowd.edits)
    report = (
        f"{DOCUMENTS} documents x {len(USERS)} editors for {worked:.1f} s: "
        f"{crowd.sessions} sessions, {len(crowd.edits)} edits, "
        f"{crowd.force_saves} force saves, {crowd.rejoins_refused} rejoins refused "
        f"(key saved meanwhile); callbacks by status {dict(sorted(by_status.items()))}"
        "; "
        f"latency as the DS saw it: no-save (1, 4) {stopwatch.percentiles(NO_SAVE)}, "
        f"saves (2, 6) {stopwatch.percentiles(frozenset({2, 6}))}, "
        f"all {stopwatch.percentiles()}"
    )
    print(f"\nload: {report}")
    record(
        "load",
        "every callback acknowledged",
        tried=len(attempts),
        held=len(attempts) - len(refused),
        unit="callback",
        detail=report,
    )
    record(
        "load",
        "every edit kept, each editor's in order",
        tried=len(crowd.edits),
        held=len(kept),
        unit="edit",
        detail=f"{len(disordered)} versions with an editor's edits out of order",
    )

    assert all(by_status[status] for status in (1, 2, 4, 6)), by_status
    assert refused == [], Counter(
        (a["status"], a["http_status"], a["answer"][:80]) for a in refused
    )
    assert len(kept) == len(crowd.edits)
    assert disordered == []


async def _work_together(
    sim: Simulated, documents: list[str], crowd: Crowd, deadline: float
) -> None:
    # Idle connections are dropped before uvicorn's keep-alive timeout (5 s)
    # would close them under a request on its way.
    limits = httpx.Limits(
        max_connections=len(documents) * len(USERS), keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(
        base_url=sim.service.url, timeout=30, trust_env=False, limits=limits
    ) as http:
        editors = [
            EditorLoop(http, document_id, user, crowd)
            for document_id in documents
            for user in USERS
        ]
        await asyncio.gather(*(editor.run(deadline) for editor in editors))


async def _settled(sim: Simulated) -> None:
    """Wait for the last final saves: no session open, no callback on its way."""
    limit = time.monotonic() + DRAIN_LIMIT
    simulator = sim.simulator
    while simulator.sessions or simulator._tasks:
        assert time.monotonic() < limit, f"{len(simulator.sessions)} sessions left"
        await asyncio.sleep(0.05)


def _kept_in_order(
    sim: Simulated, documents: list[str], edits: list[Edit]
) -> tuple[set[str], list[tuple[str, int]]]:
    """The edits found in some version, and the versions that misorder any."""
    typed: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for edit in edits:
        typed[edit.document_id][edit.user].append(edit.text)

    kept: set[str] = set()
    disordered: list[tuple[str, int]] = []
    for document_id in documents:
        for version in sim.service.versions(document_id):
            paragraphs = sim.text(document_id, version["version"])
            kept.update(paragraphs)
            for texts in typed[document_id].values():
                # Typed order, each edit once: no edit lost, moved or doubled.
                theirs = [p for p in paragraphs if p in set(texts)]
                if theirs != [t for t in texts if t in theirs]:
                    disordered.append((document_id, version["version"]))
    return kept & {edit.text for edit in edits}, disordered
