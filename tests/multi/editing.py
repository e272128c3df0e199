"""People editing documents through the cluster, as the DS would see them.

Each document follows its own script in its own thread: editors open it
through the balancer's editor config, type, press Save, capture, and all
leave (a status 2), then open it again under the new key. One document's
steps run one after the other, and each save waits until its callback was
answered, so the order of the edits is known; the documents run side by
side, so callbacks of several documents meet in both instances.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from docdesk.capture import CAPTURE
from docdesk.testing import ControlClient
from integration.office import make_docx

from .cluster import SERVED_BY, Cluster, Forwarded, read_json

__all__ = ["FIRST_LINE", "Script", "Typist", "play"]

FIRST_LINE = "before"
# Far above any save here; reached only when a callback is lost.
CALLBACK_LIMIT = 20.0
# The DS's own retries of a status 2 take 1 + 2 + 4 s.
FINAL_SAVE_LIMIT = 30.0
# docdesk's own wait for a capture's callback, before it answers 504.
CAPTURE_WAIT = 30.0
# A GET the balancer answered 502 (its instance was killed) is tried again.
GET_ATTEMPTS = 5


@dataclass
class Script:
    """What was done to one document, in order."""

    document_id: str
    edits: list[str] = field(default_factory=list)
    # Force saves docdesk acknowledged, and those it answered with a failure.
    saves: int = 0
    failed_saves: int = 0
    # Each capture's answer, with how many edits were made before it.
    captures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    failed_captures: int = 0
    closes: int = 0


class Typist:
    """One thread's hands: the docdesk API through the balancer, the DS's controls."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.api = httpx.Client(base_url=cluster.url, timeout=60, trust_env=False)
        self.control = ControlClient(cluster.ds_url)

    def close(self) -> None:
        self.api.close()
        self.control.close_client()

    def __enter__(self) -> Typist:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Arranging

    def upload(self, name: str) -> str:
        files = {"file": (name, make_docx(FIRST_LINE))}
        document: dict[str, Any] = read_json(
            self.api.post("/api/documents", files=files)
        )
        return str(document["id"])

    def open(self, document_id: str, user: str) -> tuple[str, str]:
        """Open the editor as ``user``; the session id and the key."""
        config = read_json(
            self.get(
                f"/api/documents/{document_id}/editor-config",
                params={"user_id": user, "user_name": user.title()},
            )
        )
        return self.control.open(config), config["document"]["key"]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET through the balancer, again after a 502, as a browser reloads."""
        for _ in range(GET_ATTEMPTS - 1):
            response = self.api.get(path, **kwargs)
            if response.status_code != 502:
                return response
            time.sleep(0.2)
        return self.api.get(path, **kwargs)

    # Saving, each step waiting for its callback's answer

    def save(self, document_id: str, editor: str) -> bool | None:
        """Press Save; None if no force save went out, else whether it was saved.

        An answer is not a save: the balancer's 502 from an instance that
        died, a 503 or an ``{"error": 1}`` tell the DS the save failed, and
        it never sends that status 6 again. Only ``{"error": 0}`` is saved.
        """
        balancer = self.cluster.balancer
        before, seen = self.answered(document_id, 6), len(balancer.callbacks)
        if not self.control.save(editor):
            return None
        self.wait_answered(document_id, 6, before + 1)
        path = f"/ds/documents/{document_id}/callback"
        with balancer.changed:
            answers = balancer.callbacks[seen:]
        return any(
            c.acknowledged
            for c in answers
            if c.document_path == path
            and c.status == 6
            and not (c.userdata or "").startswith(CAPTURE)
        )

    def capture(self, document_id: str) -> dict[str, Any] | None:
        """Capture through the balancer; None when a killed instance lost it.

        The DS never retries a status 6: when the capture's callback met a
        killed instance, docdesk waits its full 30 s and answers 504. The
        test stops waiting as soon as it sees that callback cut, and leaves
        the request to end on its own.
        """
        balancer = self.cluster.balancer
        before, seen = self.answered(document_id, 6), len(balancer.callbacks)
        request = _Capture(self.cluster, document_id)
        with balancer.changed:
            balancer.changed.wait_for(
                lambda: request.done.is_set() or self._capture_lost(document_id, seen),
                timeout=CALLBACK_LIMIT + CAPTURE_WAIT,
            )
        if not request.done.is_set():
            assert self._capture_lost(document_id, seen), "a capture hung"
            return None
        response = request.response()
        if response.status_code == 502 or (
            response.status_code == 504 and self._capture_lost(document_id, seen)
        ):
            # The instance died holding it: a force save may be on its way.
            self.wait_answered(document_id, 6, before + 1, limit=2.0, must=False)
            return None

        captured: dict[str, Any] = read_json(response)
        captured["served_by"] = int(response.headers[SERVED_BY])
        if captured["capture"]["outcome"] == "saved":
            self.wait_answered(document_id, 6, before + 1)
            captured["saved_by"] = self.last_answer(document_id, 6).instance
        return captured

    def _capture_lost(self, document_id: str, seen: int) -> bool:
        """Whether a capture's status 6 met a dead instance since ``seen``."""
        path = f"/ds/documents/{document_id}/callback"
        return any(
            c.document_path == path
            and c.status == 6
            and (c.userdata or "").startswith(CAPTURE)
            and c.http_status == 502
            for c in self.cluster.balancer.callbacks[seen:]
        )

    def leave(self, key: str, editors: list[str]) -> dict[str, Any]:
        """Everyone leaves; the status 2 the DS then sent, once it landed."""
        for editor in editors:
            self.control.close(editor)
        deadline = time.monotonic() + FINAL_SAVE_LIMIT
        while time.monotonic() < deadline:
            finals = [c for c in self.control.callbacks(key) if c["status"] == 2]
            if any(c["success"] for c in finals):
                return finals[-1]
            time.sleep(0.05)
        raise TimeoutError(f"the status 2 for {key} never landed")

    # The balancer's record

    def answered(self, document_id: str, status: int) -> int:
        path = f"/ds/documents/{document_id}/callback"
        with self.cluster.balancer.changed:
            return self.cluster.balancer.answered[path, status]

    def last_answer(self, document_id: str, status: int) -> Forwarded:
        path = f"/ds/documents/{document_id}/callback"
        with self.cluster.balancer.changed:
            return [
                c
                for c in self.cluster.balancer.callbacks
                if c.document_path == path and c.status == status
            ][-1]

    def wait_answered(
        self,
        document_id: str,
        status: int,
        count: int,
        *,
        limit: float = CALLBACK_LIMIT,
        must: bool = True,
    ) -> None:
        path = f"/ds/documents/{document_id}/callback"
        arrived = self.cluster.balancer.wait_answered(path, status, count, limit)
        if must and not arrived:
            raise TimeoutError(f"no status {status} answered for {document_id}")


class _Capture:
    """One capture request, in a thread of its own, so it can be left behind."""

    def __init__(self, cluster: Cluster, document_id: str) -> None:
        self.done = threading.Event()
        self._url = f"{cluster.url}/api/documents/{document_id}/capture"
        self._changed = cluster.balancer.changed
        self._outcome: httpx.Response | Exception | None = None
        threading.Thread(target=self._post, daemon=True).start()

    def response(self) -> httpx.Response:
        if isinstance(self._outcome, Exception):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome

    def _post(self) -> None:
        try:
            with httpx.Client(timeout=60, trust_env=False) as client:
                self._outcome = client.post(self._url)
        except Exception as exc:
            # Raised in the test's thread, if the test still waits.
            self._outcome = exc
        finally:
            self.done.set()
            with self._changed:
                self._changed.notify_all()


def play(
    typist: Typist,
    script: Script,
    users: list[str],
    *,
    sessions: int,
    steps: int,
    rng: random.Random,
) -> Script:
    """Edit ``script``'s document in ``sessions`` sessions of ``steps`` edits."""
    for session in range(sessions):
        editors: dict[str, str] = {}
        key = ""
        for user in users:
            editors[user], key = typist.open(script.document_id, user)

        for step in range(steps):
            user = rng.choice(users)
            text = f"{script.document_id} session {session} edit {step} by {user}"
            typist.control.edit(editors[user], text)
            script.edits.append(text)
            action = rng.choice(("save", "save", "capture", "type on"))
            if action == "save":
                saved = typist.save(script.document_id, editors[user])
                if saved is not None:
                    script.saves += saved
                    script.failed_saves += not saved
            elif action == "capture":
                captured = typist.capture(script.document_id)
                if captured is None:
                    script.failed_captures += 1
                else:
                    script.captures.append((len(script.edits), captured))

        typist.leave(key, list(editors.values()))
        script.closes += 1
    return script
