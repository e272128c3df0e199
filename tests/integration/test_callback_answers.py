"""What the Document Server hears back, and what is stored meanwhile.

Only HTTP 200 with ``{"error": 0}`` is success, and only once the version
is durable. A failure a retry may cure answers 503, since the DS retries a
status 2 only on a 5xx, 429 or network error; a permanent one answers
``{"error": 1}`` in a way the DS does not retry.

Answers to real saves run on the simulator, whose wire shows the answer the
DS heard and docdesk's state at that instant, before any retry. Links off
the DS's origin, redirects, lying lengths and bytes that are not the format
are hostile input and stay on the stand-in, with the link failures the
simulator has no fault for (below).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from docdesk.downloads import Fetcher
from tally import record

from .conftest import CAP, SECRET
from .harness import Service, Session, sha256
from .office import PDF, make_docx
from .simulated import Simulated, Snapshot
from .standin import StandIn, Trouble

OK = {"error": 0}
FAILED = {"error": 1}
# What makes the Document Server try a status 2 again (callbackBackoffOptions).
RETRIED = {429, *range(500, 600)}
# A deadline well past a loopback download and well under a stall.
SHORT_DEADLINE = 0.5
OFF = "/cache/files/data/off/output.docx"
# The download faults, as the reliability report names them beside the
# crash suite's faults (tests/crash/test_faults.py).
FAULTS = "faults"
DOWNLOAD_FAULTS = {
    "fail": "a download the DS's cache answers with a 500",
    "stall": "a download that stalls past the deadline",
    "truncate": "a download cut short of its Content-Length",
}
ORIGIN = "not a Document Server origin"
SCHEME = "the scheme is not http or https"


@pytest.fixture(scope="module")
def trap() -> Iterator[StandIn]:
    """A loopback server that is no Document Server origin of the service."""
    trap = StandIn(SECRET)
    trap.start()
    yield trap
    trap.close()


def _open(service: Service, title: str) -> tuple[str, Session, bytes]:
    original = make_docx(f"the original of {title}")
    document = service.upload(title, original)
    return document["id"], service.session(document["id"]), original


def _assert_nothing_stored(
    service: Service, document_id: str, original: bytes, blobs: dict[str, bytes]
) -> None:
    assert [v["version"] for v in service.versions(document_id)] == [1]
    assert service.content(document_id) == original
    assert service.blob_files() == blobs
    assert service.staging() == []
    assert service.call(service.desk.catalog.recoveries(document_id)) == []


class _Tallied:
    """One fault for the reliability report: held when the block raised nothing."""

    def __init__(self, check: str) -> None:
        self.check = check
        self.detail = ""

    def __enter__(self) -> _Tallied:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        held = int(kind is None)
        record(FAULTS, self.check, tried=1, held=held, unit="fault", detail=self.detail)


def _assert_nothing_seen(
    seen: object, original: bytes, blobs: dict[str, bytes]
) -> None:
    """docdesk's state, as the DS heard a failure: as if nothing came."""
    assert isinstance(seen, Snapshot), seen
    assert (seen.version, seen.sha256) == (1, sha256(original))
    assert seen.blobs == blobs
    assert seen.staging == []
    assert seen.recoveries == 0


class TestSuccess:
    def test_success_is_exactly_http_200_error_0(self, sim: Simulated) -> None:
        document_id = sim.service.upload("Exact.docx", make_docx("exact"))["id"]
        ann = sim.open(document_id)
        sim.control.edit(ann.id, "edited")

        sim.control.close(ann.id)
        sim.delivered(2, ann.key)

        [answer] = sim.wire.answers(2)
        assert answer.http_status == 200
        assert answer.body == b'{"error":0}'
        assert answer.content_type == "application/json"

    def test_the_version_is_durable_when_the_answer_arrives(
        self, sim: Simulated
    ) -> None:
        document_id = sim.service.upload("Durable.docx", make_docx("durable"))["id"]
        ann = sim.open(document_id)
        sim.control.edit(ann.id, "durable edit")
        sim.watch(document_id)

        sim.control.close(ann.id)
        edited = sim.fetch(sim.delivered(2, ann.key)["body"]["url"])

        [answer] = sim.wire.answers(2)
        assert answer.json == OK
        assert isinstance(answer.seen, Snapshot), answer.seen
        assert (answer.seen.version, answer.seen.sha256) == (2, sha256(edited))
        assert sim.service.content(document_id, 2) == edited


class TestTransientFailures:
    @pytest.mark.parametrize("fault", ["fail", "stall", "truncate"])
    def test_a_failed_download_answers_503_stores_nothing_and_the_retry_saves_once(
        self, sim: Simulated, monkeypatch: pytest.MonkeyPatch, fault: str
    ) -> None:
        origins = sim.service.settings.document_server_origins
        impatient = Fetcher(
            origins, max_bytes=CAP, timeout=SHORT_DEADLINE, allow_private=True
        )
        monkeypatch.setattr(sim.service.desk, "fetcher", impatient)
        original = make_docx(f"the original before a {fault}")
        document_id = sim.service.upload(f"{fault}.docx", original)["id"]
        ann = sim.open(document_id)
        sim.control.edit(ann.id, f"edited despite a {fault}")
        blobs = sim.service.blob_files()

        async def seen_then_patient() -> Snapshot:
            # The short deadline is for the faulty download alone.
            seen = await sim.snapshot(document_id)
            monkeypatch.undo()
            return seen

        sim.wire.probe = seen_then_patient
        sim.control.faults(download=fault)

        with _Tallied(DOWNLOAD_FAULTS[fault]) as tally:
            sim.control.close(ann.id)
            saved = sim.delivered(2, ann.key)["body"]

            failed, retried = sim.wire.answers(2)
            tally.detail = (
                f"first answer: HTTP {failed.http_status} {failed.body.decode()};"
                " held: the DS heard a failure it retries, nothing was stored"
                " meanwhile, the retry stored the edit once"
            )
            assert (failed.http_status, failed.json) == (503, FAILED)
            _assert_nothing_seen(failed.seen, original, blobs)
            assert retried.json == OK
            versions = sim.service.versions(document_id)
            assert [v["version"] for v in versions] == [1, 2]
            assert sim.service.content(document_id) == sim.fetch(saved["url"])

    @pytest.mark.parametrize(
        "trouble", [Trouble.FORBIDDEN, Trouble.GONE], ids=["forbidden", "gone"]
    )
    def test_a_refused_link_answers_503_stores_nothing_and_a_retry_saves_once(
        self,
        service: Service,
        standin: StandIn,
        monkeypatch: pytest.MonkeyPatch,
        trouble: Trouble,
    ) -> None:
        """On the stand-in: nginx answers 403 to a link signed with another
        secret and 410 to one past its life; the simulator signs with its own
        secret, gives links 15 minutes, and has no fault for either.
        """
        monkeypatch.setattr(
            service.desk,
            "fetcher",
            Fetcher(
                [standin.url], max_bytes=CAP, timeout=SHORT_DEADLINE, allow_private=True
            ),
        )
        document_id, session, original = _open(service, f"{trouble.name}.docx")
        name = f"transient-{trouble.name}/output.docx"
        edited = make_docx(f"edited despite {trouble.name}")
        standin.put(name, edited, trouble)
        blobs = service.blob_files()

        response = standin.callback(
            session.callback_url, standin.save_fields(session.key, 2, name)
        )

        assert response.status_code == 503
        assert response.json() == FAILED
        _assert_nothing_stored(service, document_id, original, blobs)
        monkeypatch.undo()
        standin.put(name, edited)
        retried = standin.callback(
            session.callback_url, standin.save_fields(session.key, 2, name)
        )
        assert retried.json() == OK
        assert [v["version"] for v in service.versions(document_id)] == [1, 2]
        assert service.content(document_id) == edited


class TestPermanentFailures:
    """A file over the cap comes from a real session. The rest are on the
    stand-in: links no DS hands over, bytes no DS serves, and a changes
    archive that fails apart from its file (the simulator's download fault
    takes the next request, which is always the file's).
    """

    def test_a_saved_file_over_the_cap_is_refused_for_good(
        self, sim: Simulated
    ) -> None:
        original = make_docx("the original, small")
        document_id = sim.service.upload("Grown.docx", original)["id"]
        ann = sim.open(document_id)
        # Random hex packs to about half its length: the file outgrows the cap.
        sim.control.edit(ann.id, secrets.token_hex(CAP))
        blobs = sim.service.blob_files()

        sim.control.close(ann.id)
        refused = sim.failed(2, ann.key)
        sim.given_up(ann.key)

        assert json.loads(refused["answer"]) == FAILED
        assert refused["http_status"] not in RETRIED
        assert len(sim.attempts(2, ann.key)) == 1
        _assert_nothing_stored(sim.service, document_id, original, blobs)

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            (f"http://localhost:{{port}}{OFF}", ORIGIN),
            (f"https://127.0.0.1:{{port}}{OFF}", ORIGIN),
            (f"http://127.0.0.1:1{OFF}", ORIGIN),
            (f"http://evil@127.0.0.1:{{port}}{OFF}", "user info"),
            ("http://169.254.169.254/latest/meta-data/iam/", ORIGIN),
            ("http://[fd00:ec2::254]/latest/meta-data/", ORIGIN),
            (f"http://10.0.0.1{OFF}", ORIGIN),
            (f"http://192.168.1.1:{{port}}{OFF}", ORIGIN),
            (f"http://2130706433:{{port}}{OFF}", "canonical IPv4"),
            ("file:///etc/passwd", SCHEME),
            (f"ftp://127.0.0.1:{{port}}{OFF}", SCHEME),
            ("gopher://127.0.0.1:70/_x", SCHEME),
        ],
        ids=[
            "another-host-name",
            "another-scheme",
            "another-port",
            "user-info",
            "cloud-metadata",
            "cloud-metadata-ipv6",
            "private-10",
            "private-192-168",
            "loopback-as-a-number",
            "file",
            "ftp",
            "gopher",
        ],
    )
    def test_a_url_off_the_ds_origin_is_refused_before_any_lookup_or_connection(
        self, service: Service, standin: StandIn, url: str, reason: str
    ) -> None:
        document_id, session, original = _open(service, "Off origin.docx")
        standin.put("off/output.docx", make_docx("never fetched"))
        blobs = service.blob_files()
        fields = standin.save_fields(session.key, 2, "off/output.docx")
        fields["url"] = url.format(port=standin.url.rpartition(":")[2])

        response = standin.callback(session.callback_url, fields)

        assert response.status_code == 200
        assert response.json() == FAILED
        assert not standin.was_requested("off/output.docx")
        _assert_nothing_stored(service, document_id, original, blobs)
        # The URL's own words refused it: no name was resolved, no socket opened.
        assert reason in service.callbacks(document_id)[-1]["detail"]

    def test_another_loopback_server_is_not_the_ds(
        self, service: Service, standin: StandIn, trap: StandIn
    ) -> None:
        document_id, session, original = _open(service, "Trap.docx")
        trap.put("trap/output.docx", make_docx("bait"))
        blobs = service.blob_files()
        fields = standin.save_fields(session.key, 2, "trap/output.docx")
        fields["url"] = trap.link("trap/output.docx")

        response = standin.callback(session.callback_url, fields)

        assert response.json() == FAILED
        assert trap.requested == []
        _assert_nothing_stored(service, document_id, original, blobs)

    def test_a_redirect_is_refused_without_following_it(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session, original = _open(service, "Redirect.docx")
        standin.put("redirect/output.docx", make_docx("moved"), Trouble.REDIRECT)
        standin.put("moved/output.docx", make_docx("the redirect target"))
        blobs = service.blob_files()

        response = standin.callback(
            session.callback_url,
            standin.save_fields(session.key, 2, "redirect/output.docx"),
        )

        assert response.status_code == 200
        assert response.json() == FAILED
        assert standin.was_requested("redirect/output.docx")
        assert not standin.was_requested("moved/output.docx")
        _assert_nothing_stored(service, document_id, original, blobs)

    @pytest.mark.parametrize(
        ("served", "trouble"),
        [
            (PDF, None),
            (make_docx("small, but says 1 GiB"), Trouble.OVERSTATED_LENGTH),
            (make_docx("cut short, no length"), Trouble.UNFRAMED_TRUNCATE),
        ],
        ids=["pdf-as-docx", "overstated-length", "unframed-cut"],
    )
    def test_a_file_docdesk_cannot_keep_is_refused_for_good(
        self,
        service: Service,
        standin: StandIn,
        served: bytes,
        trouble: Trouble | None,
    ) -> None:
        document_id, session, original = _open(service, "Refused.docx")
        name = f"refused-{sha256(served)[:8]}/output.docx"
        standin.put(name, served, trouble)
        blobs = service.blob_files()

        response = standin.callback(
            session.callback_url, standin.save_fields(session.key, 2, name)
        )

        assert response.json() == FAILED
        assert response.status_code not in RETRIED
        _assert_nothing_stored(service, document_id, original, blobs)

    def test_a_failed_changes_download_does_not_cost_the_save(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session, _ = _open(service, "No changes.docx")
        edited = make_docx("saved without its changes")
        standin.put("nochanges/output.docx", edited)
        standin.put("nochanges/changes.zip", b"PK", Trouble.SERVER_ERROR)
        fields: dict[str, Any] = standin.save_fields(
            session.key,
            2,
            "nochanges/output.docx",
            changesurl=standin.link("nochanges/changes.zip"),
        )

        response = standin.callback(session.callback_url, fields)

        assert response.json() == OK
        version = service.versions(document_id)[-1]
        assert version["sha256"] == sha256(edited)
        assert version["has_changes"] is False
        assert "changes not kept" in version["note"]

    def test_a_changes_archive_over_the_cap_does_not_cost_the_save(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session, _ = _open(service, "Huge changes.docx")
        edited = make_docx("saved without its huge changes")
        standin.put("hugechanges/output.docx", edited)
        standin.put("hugechanges/changes.zip", b"\0" * (CAP + 1))
        fields = standin.save_fields(
            session.key,
            2,
            "hugechanges/output.docx",
            changesurl=standin.link("hugechanges/changes.zip"),
        )

        response = standin.callback(session.callback_url, fields)

        assert response.json() == OK
        assert service.versions(document_id)[-1]["sha256"] == sha256(edited)
