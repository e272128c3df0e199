"""A save whose ``filetype`` is not the document's own format.

The DS may hand back an .odt document as docx. docdesk keeps it as docx on
purpose, says so in the version's note, and never writes docx bytes under
an .odt name.

These stay on the stand-in: the simulator edits docx, xlsx, pptx and plain
text only and converts nothing on save, so no session of its ever hands back
another format than the one it opened.
"""

from __future__ import annotations

import pytest

from .harness import Service, Session, sha256
from .office import make_docx, make_odt
from .standin import StandIn


def _open_odt(service: Service, title: str) -> tuple[str, Session, bytes]:
    original = make_odt(f"the odt original of {title}")
    document = service.upload(title, original)
    assert document["file_type"] == "odt"
    return document["id"], service.session(document["id"]), original


@pytest.mark.parametrize("status", [2, 6])
def test_an_odt_saved_back_as_docx_is_kept_as_docx(
    service: Service, standin: StandIn, status: int
) -> None:
    document_id, session, _ = _open_odt(service, f"Notes {status}.odt")
    saved = make_docx("came back as docx")
    standin.put(f"odt-{status}/output.docx", saved)

    response = standin.callback(
        session.callback_url,
        standin.save_fields(session.key, status, f"odt-{status}/output.docx"),
    )

    assert response.json() == {"error": 0}
    version = service.versions(document_id)[-1]
    assert (version["version"], version["file_type"]) == (2, "docx")
    assert "odt" in version["note"]
    assert "docx" in version["note"]
    document = service.document(document_id)
    assert (document["file_type"], document["title"]) == (
        "docx",
        f"Notes {status}.docx",
    )
    assert service.content(document_id) == saved


def test_the_docx_bytes_never_sit_under_an_odt_name(
    service: Service, standin: StandIn
) -> None:
    document_id, session, original = _open_odt(service, "Never odt.odt")
    saved = make_docx("docx bytes")
    standin.put("never-odt/output.docx", saved)

    standin.callback(
        session.callback_url,
        standin.save_fields(session.key, 2, "never-odt/output.docx"),
    )

    blobs = {
        name: content
        for name, content in service.blob_files().items()
        if name.startswith(f"documents/{document_id}/")
    }
    by_extension = {
        extension: {sha256(c) for n, c in blobs.items() if n.endswith(extension)}
        for extension in (".odt", ".docx")
    }
    assert by_extension == {".odt": {sha256(original)}, ".docx": {sha256(saved)}}


def test_the_editor_opens_the_saved_docx_as_docx(
    service: Service, standin: StandIn
) -> None:
    document_id, session, _ = _open_odt(service, "Reopen.odt")
    saved = make_docx("reopened")
    standin.put("reopen-odt/output.docx", saved)
    standin.callback(
        session.callback_url,
        standin.save_fields(session.key, 2, "reopen-odt/output.docx"),
    )

    config = service.config(document_id)
    opened = standin.download(config["document"]["url"])

    assert config["document"]["fileType"] == "docx"
    assert config["document"]["title"] == "Reopen.docx"
    assert opened.content == saved


def test_bytes_that_are_not_the_named_filetype_are_refused(
    service: Service, standin: StandIn
) -> None:
    document_id, session, original = _open_odt(service, "Mislabelled.odt")
    standin.put("mislabelled/output.docx", make_odt("odt bytes called docx"))
    blobs = service.blob_files()

    response = standin.callback(
        session.callback_url,
        standin.save_fields(session.key, 2, "mislabelled/output.docx"),
    )

    assert response.json() == {"error": 1}
    assert [v["version"] for v in service.versions(document_id)] == [1]
    assert service.document(document_id)["file_type"] == "odt"
    assert service.content(document_id) == original
    assert service.blob_files() == blobs


def test_restoring_the_odt_version_gives_the_title_back_its_extension(
    service: Service, standin: StandIn
) -> None:
    document_id, session, original = _open_odt(service, "Round trip.odt")
    standin.put("round-trip/output.docx", make_docx("as docx"))
    standin.callback(
        session.callback_url,
        standin.save_fields(session.key, 2, "round-trip/output.docx"),
    )

    service.client.post(f"/api/documents/{document_id}/versions/1/restore")

    document = service.document(document_id)
    assert service.content(document_id) == original
    assert document["file_type"] == "odt"
    assert document["title"] == "Round trip.odt"
