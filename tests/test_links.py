from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from docdesk.links import Links

SECRET = "a-test-secret-of-at-least-32-bytes!"
OTHER_SECRET = "another-secret-of-at-least-32-bytes"
PUBLIC_URL = "http://127.0.0.1:8000/desk"


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def links() -> Links:
    return Links(PUBLIC_URL, SECRET)


class TestUrls:
    def test_document_url_is_absolute_under_the_public_url(self, links: Links) -> None:
        url = links.document_url("42", "Khirz6zTPdfd7")

        assert url.startswith(f"{PUBLIC_URL}/ds/documents/42/file?")
        assert _query(url)["key"] == "Khirz6zTPdfd7"
        assert _query(url)["sig"]

    def test_callback_url_is_absolute_under_the_public_url(self, links: Links) -> None:
        url = links.callback_url("42")

        assert url.startswith(f"{PUBLIC_URL}/ds/documents/42/callback?")
        assert set(_query(url)) == {"sig"}

    @pytest.mark.parametrize("public_url", [PUBLIC_URL, f"{PUBLIC_URL}/"])
    def test_trailing_slash_of_the_public_url_is_not_doubled(
        self, public_url: str
    ) -> None:
        links = Links(public_url, SECRET)

        document_url = links.document_url("42", "k")
        callback_url = links.callback_url("42")

        assert document_url.startswith(f"{PUBLIC_URL}/ds/")
        assert callback_url.startswith(f"{PUBLIC_URL}/ds/")
        assert "//ds/" not in document_url + callback_url

    def test_document_id_stays_one_path_segment(self, links: Links) -> None:
        url = links.callback_url("../a/b c?x")

        path = urlsplit(url).path

        assert path == "/desk/ds/documents/..%2Fa%2Fb%20c%3Fx/callback"

    def test_urls_are_stable_for_the_same_inputs(self, links: Links) -> None:
        again = Links(PUBLIC_URL, SECRET)

        assert links.document_url("42", "k") == again.document_url("42", "k")
        assert links.callback_url("42") == again.callback_url("42")

    def test_key_is_quoted_in_the_query(self, links: Links) -> None:
        url = links.document_url("42", "a=b.c_d-")

        assert _query(url)["key"] == "a=b.c_d-"


class TestDocumentSignature:
    def test_signature_checks_for_its_own_document_and_key(self, links: Links) -> None:
        signature = _query(links.document_url("42", "k1"))["sig"]

        assert links.check_document("42", "k1", signature)

    def test_signature_fails_for_another_document(self, links: Links) -> None:
        signature = _query(links.document_url("42", "k1"))["sig"]

        assert not links.check_document("43", "k1", signature)

    def test_signature_fails_for_another_key(self, links: Links) -> None:
        signature = _query(links.document_url("42", "k1"))["sig"]

        assert not links.check_document("42", "k2", signature)

    def test_truncated_signature_fails(self, links: Links) -> None:
        signature = _query(links.document_url("42", "k1"))["sig"]

        assert not links.check_document("42", "k1", signature[:-1])
        assert not links.check_document("42", "k1", "")

    def test_altered_signature_fails(self, links: Links) -> None:
        signature = _query(links.document_url("42", "k1"))["sig"]
        flipped = "0" if signature[-1] != "0" else "1"

        assert not links.check_document("42", "k1", signature[:-1] + flipped)
        assert not links.check_document("42", "k1", signature.upper())
        assert not links.check_document("42", "k1", signature + "0")

    def test_signature_from_another_secret_fails(self, links: Links) -> None:
        other = Links(PUBLIC_URL, OTHER_SECRET)
        signature = _query(other.document_url("42", "k1"))["sig"]

        assert not links.check_document("42", "k1", signature)

    def test_public_url_is_not_part_of_the_signature(self, links: Links) -> None:
        # The DS may reach docdesk under another name than the browser does.
        other = Links("http://127.0.0.2:9000", SECRET)
        signature = _query(other.document_url("42", "k1"))["sig"]

        assert links.check_document("42", "k1", signature)

    def test_non_ascii_signature_fails_without_raising(self, links: Links) -> None:
        assert not links.check_document("42", "k1", "\u00e9" * 32)


class TestCallbackSignature:
    def test_signature_checks_for_its_own_document(self, links: Links) -> None:
        signature = _query(links.callback_url("42"))["sig"]

        assert links.check_callback("42", signature)
        assert not links.check_callback("43", signature)

    def test_signature_from_another_secret_fails(self, links: Links) -> None:
        signature = _query(Links(PUBLIC_URL, OTHER_SECRET).callback_url("42"))["sig"]

        assert not links.check_callback("42", signature)

    def test_callback_signature_is_not_a_file_signature(self, links: Links) -> None:
        signature = _query(links.callback_url("42"))["sig"]

        assert not links.check_document("42", "", signature)
        assert not links.check_document("42", "callback", signature)

    def test_file_signature_is_not_a_callback_signature(self, links: Links) -> None:
        signature = _query(links.document_url("42", "k1"))["sig"]

        assert not links.check_callback("42", signature)


class TestSignatureBoundaries:
    def test_moving_the_boundary_between_document_and_key_breaks_the_signature(
        self, links: Links
    ) -> None:
        url = links.document_url("ab", "c")
        signature = _query(url)["sig"]

        assert links.check_document("ab", "c", signature)
        assert not links.check_document("a", "bc", signature)
