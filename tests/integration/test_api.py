"""The JSON API over real HTTP: documents, versions, restore, delete, errors."""

from __future__ import annotations

import io
import socket
from urllib.parse import urlsplit

import docx
import openpyxl
import pptx
import pytest

from .conftest import CAP
from .harness import Service, sha256
from .office import PDF, make_docx, padded_docx


def _error(response_json: object) -> tuple[str, str]:
    assert isinstance(response_json, dict)
    assert set(response_json) == {"error", "message"}
    return response_json["error"], response_json["message"]


def _raw_get(service: Service, target: str) -> bytes:
    """GET ``target`` exactly as written: no client normalizes its dots."""
    parts = urlsplit(service.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


class TestDocuments:
    def test_upload_answers_201_with_version_1_titled_by_the_file_name(
        self, service: Service
    ) -> None:
        content = make_docx("quarterly report")

        response = service.client.post(
            "/api/documents", files={"file": ("Q3 Report.docx", content)}
        )

        assert response.status_code == 201
        document = response.json()
        assert document["version"] == 1
        assert document["title"] == "Q3 Report.docx"
        assert document["file_type"] == "docx"
        assert document["document_type"] == "word"
        assert document["size"] == len(content)
        assert document["sha256"] == sha256(content)

    def test_a_file_name_loses_its_folders_and_is_cut_to_128_characters(
        self, service: Service
    ) -> None:
        name = "folder\\../" + "a" * 300 + ".docx"

        response = service.client.post(
            "/api/documents", files={"file": (name, make_docx("long name"))}
        )

        assert response.status_code == 201
        assert response.json()["title"] == "a" * 123 + ".docx"

    @pytest.mark.parametrize(
        ("extension", "document_type"),
        [("docx", "word"), ("xlsx", "cell"), ("pptx", "slide")],
    )
    def test_a_new_blank_document_is_a_real_office_file(
        self, service: Service, extension: str, document_type: str
    ) -> None:
        opener = {"docx": docx.Document, "xlsx": openpyxl.load_workbook}
        opener["pptx"] = pptx.Presentation

        response = service.client.post(
            "/api/documents/new", json={"title": "Plan", "format": extension}
        )

        assert response.status_code == 201
        document = response.json()
        assert document["title"] == f"Plan.{extension}"
        assert document["document_type"] == document_type
        assert document["version"] == 1
        content = service.content(document["id"])
        opener[extension](io.BytesIO(content))

    def test_the_list_holds_every_uploaded_document(self, service: Service) -> None:
        first = service.upload("One.docx", make_docx("one"))
        second = service.upload("Two.docx", make_docx("two"))

        response = service.client.get("/api/documents")

        assert response.status_code == 200
        listed = {d["id"]: d for d in response.json()["documents"]}
        assert listed[first["id"]]["title"] == "One.docx"
        assert listed[second["id"]]["title"] == "Two.docx"

    def test_get_returns_the_document_as_uploaded(self, service: Service) -> None:
        uploaded = service.upload("Memo.docx", make_docx("memo"))

        response = service.client.get(f"/api/documents/{uploaded['id']}")

        assert response.status_code == 200
        assert response.json() == uploaded

    def test_content_is_the_uploaded_bytes(self, service: Service) -> None:
        content = make_docx("exact bytes")
        document = service.upload("Bytes.docx", content)

        response = service.client.get(f"/api/documents/{document['id']}/content")

        assert response.status_code == 200
        assert response.content == content
        assert response.headers["content-type"].startswith(
            "application/vnd.openxmlformats-officedocument.wordprocessingml"
        )

    def test_versions_list_each_version_with_its_size_and_sha256(
        self, service: Service
    ) -> None:
        first, second = make_docx("first"), make_docx("second, longer")
        document = service.upload("Draft.docx", first)
        service.client.post(
            f"/api/documents/{document['id']}/versions",
            files={"file": ("Draft.docx", second)},
        )

        versions = service.versions(document["id"])

        assert [v["version"] for v in versions] == [1, 2]
        assert [(v["size"], v["sha256"]) for v in versions] == [
            (len(first), sha256(first)),
            (len(second), sha256(second)),
        ]

    def test_version_content_is_the_bytes_of_that_version(
        self, service: Service
    ) -> None:
        first, second = make_docx("old words"), make_docx("new words")
        document = service.upload("Words.docx", first)
        service.client.post(
            f"/api/documents/{document['id']}/versions",
            files={"file": ("Words.docx", second)},
        )

        old = service.client.get(f"/api/documents/{document['id']}/versions/1/content")

        assert old.status_code == 200
        assert old.content == first
        assert service.content(document["id"]) == second


class TestChangesOutsideTheEditor:
    def test_restore_makes_a_copy_of_the_version_the_newest_and_rotates_the_key(
        self, service: Service
    ) -> None:
        first, second = make_docx("keep me"), make_docx("regret me")
        document = service.upload("Contract.docx", first)
        service.client.post(
            f"/api/documents/{document['id']}/versions",
            files={"file": ("Contract.docx", second)},
        )
        key_before = service.session(document["id"]).key

        response = service.client.post(
            f"/api/documents/{document['id']}/versions/1/restore"
        )

        assert response.status_code == 201
        restored = response.json()
        assert restored["version"] == 3
        assert restored["restored_from"] == 1
        assert restored["sha256"] == sha256(first)
        assert service.document(document["id"])["version"] == 3
        assert service.content(document["id"]) == first
        assert [v["version"] for v in service.versions(document["id"])] == [1, 2, 3]
        assert service.session(document["id"]).key != key_before

    def test_adding_a_version_by_upload_makes_it_current_and_rotates_the_key(
        self, service: Service
    ) -> None:
        document = service.upload("Budget.docx", make_docx("draft budget"))
        key_before = service.session(document["id"]).key
        newer = make_docx("final budget")

        response = service.client.post(
            f"/api/documents/{document['id']}/versions",
            files={"file": ("whatever-name.docx", newer)},
        )

        assert response.status_code == 201
        assert response.json()["version"] == 2
        assert service.content(document["id"]) == newer
        assert service.session(document["id"]).key != key_before

    def test_a_version_whose_bytes_are_not_the_format_is_422_and_not_kept(
        self, service: Service
    ) -> None:
        document = service.upload("Kept.docx", make_docx("kept"))
        blobs_before = service.blob_files()

        response = service.client.post(
            f"/api/documents/{document['id']}/versions",
            files={"file": ("Kept.docx", PDF)},
        )

        assert response.status_code == 422
        assert _error(response.json())[0] == "format_mismatch"
        assert len(service.versions(document["id"])) == 1
        assert service.blob_files() == blobs_before

    def test_delete_forgets_the_document_and_removes_its_blob_files(
        self, service: Service
    ) -> None:
        document = service.upload("Doomed.docx", make_docx("v1"))
        service.client.post(
            f"/api/documents/{document['id']}/versions",
            files={"file": ("Doomed.docx", make_docx("v2"))},
        )
        folder = f"documents/{document['id']}/"
        assert len([n for n in service.blob_files() if n.startswith(folder)]) == 2

        response = service.client.delete(f"/api/documents/{document['id']}")

        assert response.status_code == 204
        gone = service.client.get(f"/api/documents/{document['id']}")
        assert gone.status_code == 404
        assert _error(gone.json())[0] == "not_found"
        assert not [n for n in service.blob_files() if n.startswith(folder)]


class TestErrors:
    @pytest.mark.parametrize(
        "path",
        [
            "/api/documents/{id}",
            "/api/documents/{id}/content",
            "/api/documents/{id}/versions",
            "/api/documents/{id}/versions/1/content",
            "/api/documents/{id}/editor-config",
            "/api/documents/{id}/callbacks",
        ],
    )
    def test_an_unknown_document_is_a_json_404(
        self, service: Service, path: str
    ) -> None:
        response = service.client.get(path.format(id="0123456789abcdef"))

        assert response.status_code == 404
        assert _error(response.json())[0] == "not_found"

    def test_an_unknown_version_is_a_json_404(self, service: Service) -> None:
        document = service.upload("Single.docx", make_docx("only one"))

        content = service.client.get(
            f"/api/documents/{document['id']}/versions/7/content"
        )
        restore = service.client.post(
            f"/api/documents/{document['id']}/versions/7/restore"
        )

        assert (content.status_code, restore.status_code) == (404, 404)
        assert _error(content.json())[0] == "not_found"
        assert _error(restore.json())[0] == "not_found"
        assert len(service.versions(document["id"])) == 1

    def test_deleting_an_unknown_document_is_a_json_404(self, service: Service) -> None:
        response = service.client.delete("/api/documents/0123456789abcdef")

        assert response.status_code == 404
        assert _error(response.json())[0] == "not_found"

    @pytest.mark.parametrize(
        "document_id",
        [
            "..%2F..%2Fcanary.docx",
            "..%2F..%2F..%2Fcanary.docx",
            "%2e%2e%2f%2e%2e%2fcanary.docx",
            "..%5C..%5Ccanary.docx",
            "..",
            "%00",
            "a" * 5000,
            "0123456789abcdef0",
            "0123456789ABCDEF",
            "%D0%B4%D0%BE%D0%BA%D1%83%D0%BC%D0%B5%D0%BD%D1%82",
            "caf%C3%A9caf%C3%A9caf%C3%A9ca",
        ],
        ids=[
            "encoded-slashes",
            "encoded-slashes-deeper",
            "encoded-dots",
            "backslashes",
            "dot-dot",
            "nul",
            "very-long",
            "one-hex-digit-too-many",
            "upper-case-hex",
            "cyrillic",
            "accents",
        ],
    )
    def test_malformed_ids_are_404_and_nothing_outside_the_data_dir_is_read(
        self, service: Service, document_id: str
    ) -> None:
        canary = b"CANARY-OUTSIDE-THE-DATA-DIR"
        (service.settings.data_dir.parent / "canary.docx").write_bytes(canary)
        not_found, refused = {404}, {403, 404}
        paths = {
            "/api/documents/{id}": not_found,
            "/api/documents/{id}/content": not_found,
            "/api/documents/{id}/versions/1/content": not_found,
            "/ds/documents/{id}/file?key=k&sig=s": not_found,
            # A history link may be refused for its signature before its id.
            "/ds/documents/{id}/versions/1/file?sig=s": refused,
        }

        responses = [service.client.get(p.format(id=document_id)) for p in paths]

        wrong = {
            path: response.status_code
            for (path, allowed), response in zip(paths.items(), responses, strict=True)
            if response.status_code not in allowed
        }
        assert wrong == {}
        assert all(_error(r.json())[0] in ("not_found", "forbidden") for r in responses)
        assert not [r for r in responses if canary in r.content]

    @pytest.mark.parametrize(
        "target",
        [
            "/api/documents/../../canary.docx",
            "/api/documents/../../../canary.docx/content",
            "/ds/documents/../../canary.docx/file?key=k&sig=s",
        ],
    )
    def test_raw_dot_segments_are_404_and_read_nothing_outside_the_data_dir(
        self, service: Service, target: str
    ) -> None:
        canary = b"CANARY-BEHIND-DOT-SEGMENTS"
        (service.settings.data_dir.parent / "canary.docx").write_bytes(canary)

        answer = _raw_get(service, target)

        assert answer.startswith(b"HTTP/1.1 404 ")
        assert canary not in answer

    def test_an_upload_without_a_file_field_is_400(self, service: Service) -> None:
        before = service.client.get("/api/documents").json()["documents"]

        response = service.client.post(
            "/api/documents", files={"attachment": ("Report.docx", make_docx("x"))}
        )

        assert response.status_code == 400
        assert _error(response.json())[0] == "invalid_request"
        assert service.client.get("/api/documents").json()["documents"] == before

    @pytest.mark.parametrize("size", [CAP + 1, 4 * CAP], ids=["just-over", "far-over"])
    def test_an_upload_over_the_cap_is_413_and_nothing_is_stored(
        self, service: Service, size: int
    ) -> None:
        content = padded_docx("too big", size)
        documents_before = service.client.get("/api/documents").json()["documents"]
        blobs_before = service.blob_files()

        response = service.client.post(
            "/api/documents", files={"file": ("Huge.docx", content)}
        )

        assert response.status_code == 413
        assert _error(response.json())[0] == "too_large"
        documents_after = service.client.get("/api/documents").json()["documents"]
        assert documents_after == documents_before
        assert service.blob_files() == blobs_before
        assert service.staging() == []

    def test_an_unsupported_extension_is_415(self, service: Service) -> None:
        blobs_before = service.blob_files()

        response = service.client.post(
            "/api/documents", files={"file": ("setup.exe", b"MZ\x90\x00")}
        )

        assert response.status_code == 415
        assert _error(response.json())[0] == "unsupported_format"
        assert service.blob_files() == blobs_before

    def test_a_blank_document_in_an_unsupported_format_is_415(
        self, service: Service
    ) -> None:
        response = service.client.post(
            "/api/documents/new", json={"title": "Nope", "format": "exe"}
        )

        assert response.status_code == 415
        assert _error(response.json())[0] == "unsupported_format"

    @pytest.mark.parametrize(
        "body",
        [b"not json", b'["docx"]', b'{"title": 7, "format": "docx"}'],
        ids=["not-json", "not-an-object", "title-not-text"],
    )
    def test_a_malformed_new_document_request_is_400(
        self, service: Service, body: bytes
    ) -> None:
        response = service.client.post(
            "/api/documents/new",
            content=body,
            headers={"Content-Type": "application/json"},
        )

        assert response.status_code == 400
        assert _error(response.json())[0] == "invalid_request"

    def test_pdf_bytes_named_docx_are_422_and_nothing_is_stored(
        self, service: Service
    ) -> None:
        documents_before = service.client.get("/api/documents").json()["documents"]
        blobs_before = service.blob_files()

        response = service.client.post(
            "/api/documents", files={"file": ("Disguised.docx", PDF)}
        )

        assert response.status_code == 422
        assert _error(response.json())[0] == "format_mismatch"
        documents_after = service.client.get("/api/documents").json()["documents"]
        assert documents_after == documents_before
        assert service.blob_files() == blobs_before
        assert service.staging() == []
