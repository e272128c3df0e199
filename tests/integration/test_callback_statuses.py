"""Every callback status, posted by the stand-in Document Server."""

from __future__ import annotations

import json
import time
import zipfile
from io import BytesIO

import pytest

from .conftest import SECRET
from .harness import Service, Session, sha256
from .office import make_docx
from .standin import CACHE_PATH, EDITOR, StandIn, sign

OK = {"error": 0}
HISTORY = {
    "serverVersion": "9.3.0",
    "changes": [
        {
            "documentSha256": "9f2c" * 16,
            "created": "2026-03-29 10:15:02",
            "user": {"id": EDITOR, "name": "John Smith"},
        }
    ],
}


def _changes_zip() -> bytes:
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("changes0.json", '[{"change": "typed a word"}]')
    return out.getvalue()


def _open(service: Service, title: str, text: str) -> tuple[str, Session]:
    document = service.upload(title, make_docx(text))
    return document["id"], service.session(document["id"])


class TestSessionEvents:
    def test_status_1_records_who_edits(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Editing.docx", "editing")

        response = standin.callback(
            session.callback_url,
            {
                "key": session.key,
                "status": 1,
                "users": ["ann", "bob"],
                "actions": [{"type": 1, "userid": "bob"}],
            },
        )

        assert response.status_code == 200
        assert response.json() == OK
        assert service.document(document_id)["editors"] == ["ann", "bob"]

    def test_status_4_clears_the_editors_and_saves_nothing(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Closed.docx", "closed")
        standin.callback(
            session.callback_url, {"key": session.key, "status": 1, "users": ["ann"]}
        )
        editing = service.document(document_id)["editors"]

        response = standin.callback(
            session.callback_url,
            {
                "key": session.key,
                "status": 4,
                "actions": [{"type": 0, "userid": "ann"}],
            },
        )

        assert response.json() == OK
        assert (editing, service.document(document_id)["editors"]) == (["ann"], [])
        assert len(service.versions(document_id)) == 1

    def test_a_replayed_status_1_does_not_bring_back_editors_who_left(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Left.docx", "left")
        joined = {"key": session.key, "status": 1, "users": ["ann"]}
        body, headers = standin.signed(joined)
        standin.post(session.callback_url, body, headers)
        standin.callback(session.callback_url, {"key": session.key, "status": 4})

        replayed = standin.post(session.callback_url, body, headers)

        assert replayed.json() == OK
        assert service.document(document_id)["editors"] == []


class TestSaves:
    def test_status_2_stores_a_version_with_its_changes_and_rotates_the_key(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Final.docx", "before")
        edited, changes = make_docx("after the session"), _changes_zip()
        standin.put("final/output.docx", edited)
        standin.put("final/changes.zip", changes)
        fields = standin.save_fields(
            session.key,
            2,
            "final/output.docx",
            changesurl=standin.link("final/changes.zip"),
            history=HISTORY,
        )

        response = standin.callback(session.callback_url, fields)

        assert response.json() == OK
        version = service.versions(document_id)[-1]
        assert version["version"] == 2
        assert version["source"] == "save"
        assert version["has_changes"] is True
        assert version["author"] == {"id": EDITOR, "name": "John Smith"}
        assert service.content(document_id) == edited
        assert service.session(document_id).key != session.key
        record = service.call(service.desk.catalog.version(document_id, 2))
        assert record.history == HISTORY
        assert record.changes_blob is not None
        assert service.blob_files()[record.changes_blob] == changes

    @pytest.mark.parametrize("forcesavetype", [0, 1, 2])
    def test_status_6_stores_a_version_and_keeps_the_key(
        self, service: Service, standin: StandIn, forcesavetype: int
    ) -> None:
        document_id, session = _open(service, "Forced.docx", "before")
        edited = make_docx(f"force saved by type {forcesavetype}")
        standin.put(f"forced-{forcesavetype}/output.docx", edited)
        fields = standin.save_fields(
            session.key,
            6,
            f"forced-{forcesavetype}/output.docx",
            forcesavetype=forcesavetype,
            actions=[{"type": 2, "userid": EDITOR}] if forcesavetype == 1 else None,
        )

        response = standin.callback(session.callback_url, fields)

        assert response.json() == OK
        version = service.versions(document_id)[-1]
        assert (version["version"], version["source"]) == (2, "forcesave")
        assert version["forcesave_type"] == forcesavetype
        assert service.content(document_id) == edited
        assert service.session(document_id).key == session.key

    def test_the_key_kept_by_a_force_save_serves_the_force_saved_bytes(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Reopen.docx", "before")
        edited = make_docx("what a late joiner must see")
        standin.put("reopen/output.docx", edited)
        standin.callback(
            session.callback_url,
            standin.save_fields(session.key, 6, "reopen/output.docx"),
        )

        response = standin.download(service.session(document_id).document_url)

        assert response.content == edited

    def test_a_form_submit_keeps_the_form_data(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Form.docx", "a form")
        form_data = json.dumps({"name": "Ann", "agree": True}).encode()
        standin.put("form/output.docx", make_docx("a filled form"))
        standin.put("form/formsdata.json", form_data)
        fields = standin.save_fields(
            session.key,
            6,
            "form/output.docx",
            forcesavetype=3,
            formsdataurl=standin.link("form/formsdata.json"),
        )

        response = standin.callback(session.callback_url, fields)

        assert response.json() == OK
        record = service.call(service.desk.catalog.version(document_id, 2))
        assert record.forcesave_type == 3
        assert record.forms_blob is not None
        assert service.blob_files()[record.forms_blob] == form_data

    def test_status_2_marked_notmodified_after_a_kept_force_save_adds_nothing(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Not modified.docx", "before")
        standin.put("nm/forced.docx", make_docx("force saved"))
        standin.callback(
            session.callback_url, standin.save_fields(session.key, 6, "nm/forced.docx")
        )
        standin.put("nm/final.docx", make_docx("force saved"))

        response = standin.callback(
            session.callback_url,
            standin.save_fields(session.key, 2, "nm/final.docx", notmodified=True),
        )

        assert response.json() == OK
        assert [v["version"] for v in service.versions(document_id)] == [1, 2]
        assert service.session(document_id).key != session.key
        assert not standin.was_requested("nm/final.docx")

    def test_the_same_status_2_delivered_twice_makes_one_version(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Twice.docx", "before")
        standin.put("twice/output.docx", make_docx("saved once"))

        answers = [
            standin.callback(
                session.callback_url,
                standin.save_fields(session.key, 2, "twice/output.docx"),
            ).json()
            for _ in range(2)
        ]

        assert answers == [OK, OK]
        assert [v["version"] for v in service.versions(document_id)] == [1, 2]

    @pytest.mark.parametrize("status", [2, 6])
    def test_an_exact_replay_is_answered_without_acting_again(
        self, service: Service, standin: StandIn, status: int
    ) -> None:
        document_id, session = _open(service, "Replay.docx", "before")
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
        document_id, session = _open(service, "Rollback.docx", "before")
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


class TestCorruptedFiles:
    @pytest.mark.parametrize("status", [3, 7])
    def test_a_corrupted_file_is_kept_aside_and_never_made_current(
        self, service: Service, standin: StandIn, status: int
    ) -> None:
        original = make_docx("the good version")
        document = service.upload("Corrupt.docx", original)
        session = service.session(document["id"])
        damaged = make_docx(f"best effort after status {status}")
        standin.put(f"corrupt-{status}/output.docx", damaged)

        response = standin.callback(
            session.callback_url,
            standin.save_fields(session.key, status, f"corrupt-{status}/output.docx"),
        )

        assert response.json() == OK
        recoveries = service.call(service.desk.catalog.recoveries(document["id"]))
        assert [(r.status, r.sha256) for r in recoveries] == [(status, sha256(damaged))]
        assert service.blob_files()[recoveries[0].blob] == damaged
        assert service.document(document["id"])["version"] == 1
        assert service.content(document["id"]) == original

    def test_status_3_without_a_url_is_acknowledged_and_saves_nothing(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Failed.docx", "unharmed")
        fields = standin.save_fields(session.key, 3, "unused.docx")
        del fields["url"], fields["filetype"]

        response = standin.callback(session.callback_url, fields)

        assert response.json() == OK
        assert len(service.versions(document_id)) == 1
        assert service.call(service.desk.catalog.recoveries(document_id)) == []

    def test_delete_also_removes_the_recovery_files(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session = _open(service, "Recovered.docx", "v1")
        standin.put("recovered/output.docx", make_docx("best effort"))
        standin.callback(
            session.callback_url,
            standin.save_fields(session.key, 3, "recovered/output.docx"),
        )

        service.client.delete(f"/api/documents/{document_id}")

        assert not [n for n in service.blob_files() if document_id in n]
        assert service.call(service.desk.catalog.recoveries(document_id)) == []


class TestKeys:
    def test_a_status_2_for_an_older_key_of_the_document_still_saves(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, old = _open(service, "Split.docx", "v1")
        service.client.post(
            f"/api/documents/{document_id}/versions",
            files={"file": ("Split.docx", make_docx("uploaded meanwhile"))},
        )
        edited = make_docx("the old session's edits")
        standin.put("split/output.docx", edited)

        response = standin.callback(
            old.callback_url, standin.save_fields(old.key, 2, "split/output.docx")
        )

        assert response.json() == OK
        assert [v["version"] for v in service.versions(document_id)] == [1, 2, 3]
        assert service.content(document_id) == edited

    def test_after_a_save_under_an_older_key_new_editors_open_the_saved_bytes(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, old = _open(service, "Split again.docx", "v1")
        service.client.post(
            f"/api/documents/{document_id}/versions",
            files={"file": ("Split again.docx", make_docx("uploaded meanwhile"))},
        )
        edited = make_docx("the old session's edits")
        standin.put("split-again/output.docx", edited)
        standin.callback(
            old.callback_url, standin.save_fields(old.key, 2, "split-again/output.docx")
        )

        opened = standin.download(service.session(document_id).document_url)

        assert service.content(document_id) == edited
        assert opened.content == edited

    def test_a_key_of_another_document_is_refused_and_changes_nothing(
        self, service: Service, standin: StandIn
    ) -> None:
        target_id, target = _open(service, "Target.docx", "target")
        _, other = _open(service, "Other.docx", "other")
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
        document_id, session = _open(service, "Unknown key.docx", "v1")
        standin.put("unknown/output.docx", make_docx("from nowhere"))

        response = standin.callback(
            session.callback_url,
            standin.save_fields("NeverIssued_key-123", 2, "unknown/output.docx"),
        )

        assert response.status_code == 403
        assert response.json() == {"error": 1}
        assert len(service.versions(document_id)) == 1
        assert not standin.was_requested("unknown/output.docx")
