"""Every callback status, as the Document Server's own sessions produce them.

Each callback here comes from the simulator: an editor joining, editing,
pressing Save, submitting a form or leaving, docdesk's forcesave command, the
auto-save timer, and the faults of the control API. What no DS sends, exact
replays and keys the service never issued for the document, is hostile input
and stays on the stand-in (:class:`TestHostileDeliveries`).
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from docdesk.testing import fast_settings, run_simulator

from .conftest import SECRET
from .harness import Service, Session, sha256
from .office import make_docx
from .simulated import Editor, Simulated
from .standin import CACHE_PATH, StandIn, sign

OK = {"error": 0}
# The auto-save timer's interval: it fires well within a test.
TIMER = 0.1


def _upload(sim: Simulated, title: str, text: str) -> str:
    document_id: str = sim.service.upload(title, make_docx(text))["id"]
    return document_id


def _force_save(
    sim: Simulated, document_id: str, editor: Editor, forcesavetype: int
) -> None:
    """Start a force save of ``forcesavetype`` the way the DS's users do."""
    if forcesavetype == 0:
        # docdesk's capture sends the DS the forcesave command.
        captured = sim.service.client.post(f"/api/documents/{document_id}/capture")
        assert captured.status_code == 200, captured.text
    elif forcesavetype == 1:
        assert sim.control.save(editor.id)
    # Type 2: the auto-save timer, started by the edit, needs no one.


class TestSessionEvents:
    def test_status_1_records_who_joins_and_who_leaves(self, sim: Simulated) -> None:
        document_id = _upload(sim, "Editing.docx", "editing")
        ann = sim.open(document_id, "ann")
        bob = sim.open(document_id, "bob")
        joined = sim.service.document(document_id)["editors"]

        sim.control.close(bob.id)
        left = sim.delivered(1, ann.key, count=3)

        assert joined == ["ann", "bob"]
        assert left["body"]["users"] == ["ann"]
        assert sim.service.document(document_id)["editors"] == ["ann"]
        assert all(attempt["success"] for attempt in sim.attempts(1, ann.key))

    def test_status_4_clears_the_editors_and_saves_nothing(
        self, sim: Simulated
    ) -> None:
        document_id = _upload(sim, "Closed.docx", "closed")
        ann = sim.open(document_id)
        editing = sim.service.document(document_id)["editors"]

        sim.control.close(ann.id)
        closed = sim.delivered(4, ann.key)

        assert closed["answer"] == '{"error":0}'
        assert (editing, sim.service.document(document_id)["editors"]) == (
            ["ann"],
            [],
        )
        assert len(sim.service.versions(document_id)) == 1


class TestSaves:
    def test_status_2_stores_a_version_with_its_changes_and_rotates_the_key(
        self, sim: Simulated
    ) -> None:
        document_id = _upload(sim, "Final.docx", "before")
        ann = sim.open(document_id)
        sim.control.edit(ann.id, "after the session")

        sim.control.close(ann.id)
        saved = sim.delivered(2, ann.key)["body"]

        version = sim.service.versions(document_id)[-1]
        assert (version["version"], version["source"]) == (2, "save")
        assert version["has_changes"] is True
        assert version["author"] == {"id": "ann", "name": "Ann"}
        assert sim.service.content(document_id) == sim.fetch(saved["url"])
        assert sim.text(document_id) == ["before", "after the session"]
        assert sim.service.session(document_id).key != ann.key
        record = sim.service.call(sim.service.desk.catalog.version(document_id, 2))
        assert record.history == saved["history"]
        assert record.changes_blob is not None
        changes = sim.service.blob_files()[record.changes_blob]
        assert changes == sim.fetch(saved["changesurl"])

    @pytest.mark.parametrize(
        "forcesavetype", [0, 1, 2], ids=["command", "save-button", "timer"]
    )
    def test_status_6_stores_a_version_and_keeps_the_key(
        self, sim: Simulated, monkeypatch: pytest.MonkeyPatch, forcesavetype: int
    ) -> None:
        document_id = _upload(sim, "Forced.docx", "before")
        ann = sim.open(document_id)
        if forcesavetype == 2:
            timed = dataclasses.replace(
                sim.simulator.settings, forcesave_interval=TIMER
            )
            monkeypatch.setattr(sim.simulator, "settings", timed)
        sim.control.edit(ann.id, f"force saved by type {forcesavetype}")

        _force_save(sim, document_id, ann, forcesavetype)
        forced = sim.delivered(6, ann.key)["body"]

        assert forced["forcesavetype"] == forcesavetype
        version = sim.service.versions(document_id)[-1]
        assert (version["version"], version["source"]) == (2, "forcesave")
        assert version["forcesave_type"] == forcesavetype
        assert sim.service.content(document_id, 2) == sim.fetch(forced["url"])
        assert sim.service.session(document_id).key == ann.key

    def test_a_ds_that_lost_its_cache_reopens_the_kept_key_with_the_saved_bytes(
        self, sim: Simulated
    ) -> None:
        document_id = _upload(sim, "Reopen.docx", "before")
        ann = sim.open(document_id)
        sim.control.edit(ann.id, "what a late joiner must see")
        assert sim.control.save(ann.id)
        sim.delivered(6, ann.key)
        config = sim.service.config(document_id, user_id="bob", user_name="Bob")

        # A DS restarted with an empty cache downloads document.url again.
        with run_simulator(fast_settings(secret=SECRET)) as restarted:
            bob = restarted.control.open(config)
            restarted.control.wait_for_callback(1, key=ann.key)
            opened = restarted.control.state(bob)

        assert config["document"]["key"] == ann.key
        assert opened["text"] == ["before", "what a late joiner must see"]

    def test_a_form_submit_keeps_the_form_data(self, sim: Simulated) -> None:
        document_id = _upload(sim, "Form.docx", "a form")
        ann = sim.open(document_id)
        sim.control.edit(ann.id, "a filled form")
        form = {"name": "Ann", "agree": True}

        assert sim.control.submit(ann.id, form)
        submitted = sim.delivered(6, ann.key)["body"]

        assert submitted["forcesavetype"] == 3
        record = sim.service.call(sim.service.desk.catalog.version(document_id, 2))
        assert record.forcesave_type == 3
        assert record.forms_blob is not None
        kept = sim.service.blob_files()[record.forms_blob]
        assert kept == sim.fetch(submitted["formsdataurl"])
        assert json.loads(kept) == form

    def test_status_2_marked_notmodified_after_a_kept_force_save_adds_nothing(
        self, sim: Simulated
    ) -> None:
        document_id = _upload(sim, "Not modified.docx", "before")
        ann = sim.open(document_id)
        sim.control.edit(ann.id, "force saved")
        assert sim.control.save(ann.id)
        sim.delivered(6, ann.key)
        # Were the file fetched again, every attempt of the DS would fail.
        attempts = 1 + len(sim.simulator.settings.retry_delays)
        sim.control.faults(download="fail", times=attempts)

        sim.control.close(ann.id)
        final = sim.delivered(2, ann.key)

        assert final["body"]["notmodified"] is True
        assert final["attempt"] == 1
        assert [v["version"] for v in sim.service.versions(document_id)] == [1, 2]
        assert sim.service.session(document_id).key != ann.key
        assert sim.control.faults()["download"] == ["fail"] * attempts

    def test_a_status_2_the_ds_retries_after_a_503_makes_one_version(
        self, sim: Simulated
    ) -> None:
        document_id = _upload(sim, "Twice.docx", "before")
        ann = sim.open(document_id)
        sim.control.edit(ann.id, "saved once")
        sim.control.faults(download="fail")

        sim.control.close(ann.id)
        sim.delivered(2, ann.key)

        tries = [(a["attempt"], a["http_status"]) for a in sim.attempts(2, ann.key)]
        assert tries == [(1, 503), (2, 200)]
        assert [v["version"] for v in sim.service.versions(document_id)] == [1, 2]
        assert sim.text(document_id) == ["before", "saved once"]


class TestCorruptedFiles:
    @pytest.mark.parametrize("status", [3, 7])
    def test_a_corrupted_file_is_kept_aside_and_never_made_current(
        self, sim: Simulated, status: int
    ) -> None:
        original = make_docx("the good version")
        document_id = sim.service.upload("Corrupt.docx", original)["id"]
        ann = sim.open(document_id)
        sim.control.edit(ann.id, f"best effort after status {status}")
        sim.control.faults(assembly="corrupt")

        if status == 7:
            assert sim.control.save(ann.id)
        else:
            sim.control.close(ann.id)
        damaged = sim.fetch(sim.delivered(status, ann.key)["body"]["url"])

        catalog = sim.service.desk.catalog
        recoveries = sim.service.call(catalog.recoveries(document_id))
        assert [(r.status, r.sha256) for r in recoveries] == [(status, sha256(damaged))]
        assert sim.service.blob_files()[recoveries[0].blob] == damaged
        assert sim.service.document(document_id)["version"] == 1
        assert sim.service.content(document_id) == original

    @pytest.mark.parametrize("status", [3, 7])
    def test_a_failed_assembly_without_a_url_is_acknowledged_and_saves_nothing(
        self, sim: Simulated, status: int
    ) -> None:
        document_id = _upload(sim, "Failed.docx", "unharmed")
        ann = sim.open(document_id)
        sim.control.edit(ann.id, "lost by the DS")
        sim.control.faults(assembly="fail")

        if status == 7:
            assert sim.control.save(ann.id)
        else:
            sim.control.close(ann.id)
        failed = sim.delivered(status, ann.key)

        assert "url" not in failed["body"]
        assert failed["answer"] == '{"error":0}'
        assert len(sim.service.versions(document_id)) == 1
        catalog = sim.service.desk.catalog
        assert sim.service.call(catalog.recoveries(document_id)) == []
        # The session ends with a status 3 alone: only then is the key spent.
        rotated = sim.service.session(document_id).key != ann.key
        assert rotated is (status == 3)

    def test_delete_also_removes_the_recovery_files(self, sim: Simulated) -> None:
        document_id = _upload(sim, "Recovered.docx", "v1")
        ann = sim.open(document_id)
        sim.control.edit(ann.id, "best effort")
        sim.control.faults(assembly="corrupt")
        sim.control.close(ann.id)
        sim.delivered(3, ann.key)
        catalog = sim.service.desk.catalog
        assert len(sim.service.call(catalog.recoveries(document_id))) == 1

        sim.service.client.delete(f"/api/documents/{document_id}")

        assert not [n for n in sim.service.blob_files() if document_id in n]
        assert sim.service.call(catalog.recoveries(document_id)) == []


class TestKeys:
    def _split(self, sim: Simulated, title: str) -> tuple[str, Editor]:
        """An editor open on v1 while someone uploads v2 beside it."""
        document_id = _upload(sim, title, "v1")
        old = sim.open(document_id)
        sim.control.edit(old.id, "the old session's edits")
        added = sim.service.client.post(
            f"/api/documents/{document_id}/versions",
            files={"file": (title, make_docx("uploaded meanwhile"))},
        )
        assert added.status_code == 201
        assert sim.service.session(document_id).key != old.key
        return document_id, old

    def test_a_status_2_for_an_older_key_of_the_document_still_saves(
        self, sim: Simulated
    ) -> None:
        document_id, old = self._split(sim, "Split.docx")

        sim.control.close(old.id)
        saved = sim.delivered(2, old.key)

        assert saved["body"]["key"] == old.key
        assert [v["version"] for v in sim.service.versions(document_id)] == [1, 2, 3]
        assert sim.text(document_id) == ["v1", "the old session's edits"]

    def test_after_a_save_under_an_older_key_new_editors_open_the_saved_bytes(
        self, sim: Simulated
    ) -> None:
        document_id, old = self._split(sim, "Split again.docx")
        sim.control.close(old.id)
        sim.delivered(2, old.key)

        bob = sim.open(document_id, "bob")

        assert bob.key != old.key
        assert sim.control.state(bob.id)["text"] == ["v1", "the old session's edits"]


class TestHostileDeliveries:
    """What no DS sends: it signs every attempt afresh, and only keys it got.

    An exact replay is an attacker's or a duplicating proxy's; a key of
    another document, or one never issued, is a forgery. The stand-in posts
    them.
    """

    @staticmethod
    def _open(service: Service, title: str, text: str) -> tuple[str, Session]:
        document = service.upload(title, make_docx(text))
        return document["id"], service.session(document["id"])

    def test_a_replayed_status_1_does_not_bring_back_editors_who_left(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = self._open(service, "Left.docx", "left")
        joined = {"key": session.key, "status": 1, "users": ["ann"]}
        body, headers = standin.signed(joined)
        standin.post(session.callback_url, body, headers)
        standin.callback(session.callback_url, {"key": session.key, "status": 4})

        replayed = standin.post(session.callback_url, body, headers)

        assert replayed.json() == OK
        assert service.document(document_id)["editors"] == []

    @pytest.mark.parametrize("status", [2, 6])
    def test_an_exact_replay_is_answered_without_acting_again(
        self, service: Service, standin: StandIn, status: int
    ) -> None:
        document_id, session = self._open(service, "Replay.docx", "before")
        name = f"replay-{status}/output.docx"
        standin.put(name, make_docx("the real save"))
        body, headers = standin.signed(standin.save_fields(session.key, status, name))
        first = standin.post(session.callback_url, body, headers)
        # Were the replay acted on, it would fetch and keep these bytes.
        standin.put(name, make_docx("what a replay would smuggle in"))

        replayed = standin.post(session.callback_url, body, headers)

        assert (first.json(), replayed.json()) == (OK, OK)
        assert [v["version"] for v in service.versions(document_id)] == [1, 2]
        assert standin.requested.count(CACHE_PATH + name) == 1
        assert service.callbacks(document_id)[-1]["outcome"] == "replayed"

    @pytest.mark.parametrize(
        "skew",
        [0, 1],
        ids=["tokens-signed-in-one-second", "tokens-a-second-apart"],
    )
    def test_a_replay_stripped_of_its_body_token_is_not_acted_on_again(
        self, service: Service, standin: StandIn, skew: int
    ) -> None:
        document_id, session = self._open(service, "Rollback.docx", "before")
        first, later = make_docx("first force save"), make_docx("later force save")
        standin.put(f"rollback-{skew}/first.docx", first)
        standin.put(f"rollback-{skew}/later.docx", later)
        captured = standin.save_fields(session.key, 6, f"rollback-{skew}/first.docx")
        now = int(time.time())
        body = {**captured, "token": sign(captured, SECRET, issued=now)}
        header = sign({"payload": captured}, SECRET, issued=now + skew)
        headers = {"Authorization": f"Bearer {header}"}
        standin.post(session.callback_url, json.dumps(body).encode(), headers)
        standin.callback(
            session.callback_url,
            standin.save_fields(session.key, 6, f"rollback-{skew}/later.docx"),
        )
        stripped = json.dumps(captured).encode()

        replayed = standin.post(session.callback_url, stripped, headers)

        assert replayed.json() == OK
        assert [v["version"] for v in service.versions(document_id)] == [1, 2, 3]
        assert service.content(document_id) == later

    def test_a_key_of_another_document_is_refused_and_changes_nothing(
        self, service: Service, standin: StandIn
    ) -> None:
        target_id, target = self._open(service, "Target.docx", "target")
        _, other = self._open(service, "Other.docx", "other")
        standin.put("cross/output.docx", make_docx("cross-document write"))

        response = standin.callback(
            target.callback_url, standin.save_fields(other.key, 2, "cross/output.docx")
        )

        assert response.status_code == 403
        assert response.json() == {"error": 1}
        assert len(service.versions(target_id)) == 1
        assert service.session(target_id).key == target.key
        assert not standin.was_requested("cross/output.docx")

    def test_a_key_never_issued_is_refused(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = self._open(service, "Unknown key.docx", "v1")
        standin.put("unknown/output.docx", make_docx("from nowhere"))

        response = standin.callback(
            session.callback_url,
            standin.save_fields("NeverIssued_key-123", 2, "unknown/output.docx"),
        )

        assert response.status_code == 403
        assert response.json() == {"error": 1}
        assert len(service.versions(document_id)) == 1
        assert not standin.was_requested("unknown/output.docx")
