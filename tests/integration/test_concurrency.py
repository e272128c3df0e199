"""Callbacks for one document that arrive at the same moment.

The simulator sends them as the DS does: several editors pressing Save one
after the other, a status 2 tried again after the DS's callback timeout
while docdesk still works on the first attempt. A :class:`Gate` in front of
docdesk holds the first arrivals until the last is in, so that they meet
inside docdesk on every run, not only on a lucky one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from docdesk.desk import CallbackReply

from .harness import sha256
from .office import make_docx
from .simulated import Simulated

T = TypeVar("T")

USERS = ("ann", "bob", "cyd", "dee", "eve")
# Far above the time the callbacks take to meet; reached only on a failure.
GATE_LIMIT = 10.0
# The DS gives up on the first attempt after this and tries again.
DS_TIMEOUT = 0.3


class Gate:
    """Holds the calls it wraps until ``count`` of them have arrived."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = 0
        self._open = asyncio.Event()

    @property
    def met(self) -> bool:
        """Whether all ``count`` calls were held at once."""
        return self._open.is_set()

    def hold(self, method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def held(*args: Any, **kwargs: Any) -> T:
            self.arrived += 1
            if self.arrived >= self.count:
                self._open.set()
            # Past the limit the call goes on, and the test fails on ``met``.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._open.wait(), GATE_LIMIT)
            return await method(*args, **kwargs)

        return held


@pytest.mark.parametrize("count", [2, 5])
def test_simultaneous_force_saves_each_become_a_version_in_order(
    sim: Simulated, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    document_id = sim.service.upload(f"Busy {count}.docx", make_docx("before"))["id"]
    editors = [sim.open(document_id, user) for user in USERS[:count]]
    key = editors[0].key
    desk = sim.service.desk
    gate = Gate(count)
    monkeypatch.setattr(desk, "handle_callback", gate.hold(desk.handle_callback))

    for n, editor in enumerate(editors):
        sim.control.edit(editor.id, f"force save {n} of {count}")
        assert sim.control.save(editor.id)
    forced = [sim.delivered(6, key, count=n)["body"] for n in range(1, count + 1)]

    assert gate.met
    versions = sim.service.versions(document_id)
    assert [v["version"] for v in versions] == list(range(1, count + 2))
    contents = [sim.fetch(body["url"]) for body in forced]
    assert {v["sha256"] for v in versions[1:]} == {sha256(c) for c in contents}
    for version in versions[1:]:
        kept = sim.service.content(document_id, version["version"])
        assert sha256(kept) == version["sha256"]


def test_a_status_2_the_ds_retries_while_docdesk_still_saves_it_makes_one_version(
    sim: Simulated, monkeypatch: pytest.MonkeyPatch
) -> None:
    document_id = sim.service.upload("Raced.docx", make_docx("before"))["id"]
    ann = sim.open(document_id)
    sim.control.edit(ann.id, "the one save")
    client = sim.simulator.client
    patient = client.timeout
    monkeypatch.setattr(client, "timeout", httpx.Timeout(DS_TIMEOUT))
    # The first attempt waits in docdesk until the DS, tired of it, sends again.
    gate = Gate(2)
    held = gate.hold(sim.service.desk.handle_callback)

    async def patient_again(*args: Any, **kwargs: Any) -> CallbackReply:
        # The first attempt is on its way: only it gives up so soon.
        client.timeout = patient
        return await held(*args, **kwargs)

    monkeypatch.setattr(sim.service.desk, "handle_callback", patient_again)

    sim.control.close(ann.id)
    saved = sim.delivered(2, ann.key)["body"]

    assert gate.met
    attempts = [(a["http_status"], a["answer"]) for a in sim.attempts(2, ann.key)]
    assert attempts == [(None, "ReadTimeout"), (200, '{"error":0}')]
    assert [v["version"] for v in sim.service.versions(document_id)] == [1, 2]
    assert sim.service.content(document_id) == sim.fetch(saved["url"])


def test_a_force_save_and_an_upload_at_once_are_both_kept(
    sim: Simulated, monkeypatch: pytest.MonkeyPatch
) -> None:
    document_id = sim.service.upload("Both.docx", make_docx("before"))["id"]
    ann = sim.open(document_id)
    sim.control.edit(ann.id, "from the editor")
    uploaded = make_docx("from the browser")
    desk = sim.service.desk
    gate = Gate(2)
    monkeypatch.setattr(desk, "handle_callback", gate.hold(desk.handle_callback))
    monkeypatch.setattr(desk, "add_version", gate.hold(desk.add_version))

    assert sim.control.save(ann.id)
    upload = sim.service.client.post(
        f"/api/documents/{document_id}/versions",
        files={"file": ("Both.docx", uploaded)},
    )
    forced = sim.delivered(6, ann.key)["body"]

    assert gate.met
    assert upload.status_code == 201
    versions = sim.service.versions(document_id)
    assert [v["version"] for v in versions] == [1, 2, 3]
    saved = sim.fetch(forced["url"])
    assert {v["sha256"] for v in versions[1:]} == {sha256(saved), sha256(uploaded)}
