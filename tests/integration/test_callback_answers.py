"""What the Document Server hears back, and what is stored meanwhile.

Only HTTP 200 with ``{"error": 0}`` is success, and only once the version
is durable. A failure a retry may cure answers 503, since the DS retries a
status 2 only on a 5xx, 429 or network error; a permanent one answers
``{"error": 1}`` in a way the DS does not retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from docdesk.downloads import Fetcher

from .conftest import CAP, SECRET
from .harness import Service, Session, sha256
from .office import PDF, make_docx, padded_docx
from .standin import StandIn, Trouble

OK = {"error": 0}
FAILED = {"error": 1}
# What makes the Document Server try a status 2 again (callbackBackoffOptions).
RETRIED = {429, *range(500, 600)}
# A deadline well past a loopback download and well under a stall.
SHORT_DEADLINE = 0.5
OFF = "/cache/files/data/off/output.docx"
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


class TestSuccess:
    def test_success_is_exactly_http_200_error_0(
        self, service: Service, standin: StandIn
    ) -> None:
        _, session, _ = _open(service, "Exact.docx")
        standin.put("exact/output.docx", make_docx("edited"))

        response = standin.callback(
            session.callback_url,
            standin.save_fields(session.key, 2, "exact/output.docx"),
        )

        assert response.status_code == 200
        assert response.content == b'{"error":0}'
        assert response.headers["content-type"] == "application/json"

    def test_the_version_is_durable_when_the_answer_arrives(
        self, service: Service, standin: StandIn
    ) -> None:
        document_id, session, _ = _open(service, "Durable.docx")
        edited = make_docx("durable edit")
        standin.put("durable/output.docx", edited)

        response = standin.callback(
            session.callback_url,
            standin.save_fields(session.key, 2, "durable/output.docx"),
        )
        versions = service.versions(document_id)

        assert response.json() == OK
        assert versions[-1]["version"] == 2
        assert versions[-1]["sha256"] == sha256(edited)
        assert sha256(edited) in {sha256(b) for b in service.blob_files().values()}
        assert service.content(document_id, 2) == edited


class TestTransientFailures:
    @pytest.mark.parametrize(
        "trouble",
        [
            Trouble.SERVER_ERROR,
            Trouble.STALL,
            Trouble.TRUNCATE,
            Trouble.FORBIDDEN,
            Trouble.GONE,
        ],
        ids=lambda trouble: trouble.name.lower(),
    )
    def test_a_failed_download_answers_503_stores_nothing_and_a_retry_saves_once(
        self,
        service: Service,
        standin: StandIn,
        monkeypatch: pytest.MonkeyPatch,
        trouble: Trouble,
    ) -> None:
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
            (padded_docx("too big", CAP), None),
            (make_docx("small, but says 1 GiB"), Trouble.OVERSTATED_LENGTH),
            (make_docx("cut short, no length"), Trouble.UNFRAMED_TRUNCATE),
        ],
        ids=["pdf-as-docx", "over-the-cap", "overstated-length", "unframed-cut"],
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
