from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docdesk._redact import fingerprint, redact_url

SIGNED = (
    "https://user:pass@ds.example.com:8443/cache/files/data/K_1/output.docx"
    "?md5=Xb3secret&expires=1774780000&filename=output.docx#fragment"
)


class TestFingerprint:
    def test_fingerprint_is_twelve_hex_digits(self) -> None:
        assert re.fullmatch(r"[0-9a-f]{12}", fingerprint("token"))

    def test_text_and_its_utf8_bytes_have_one_fingerprint(self) -> None:
        assert fingerprint("t\u00f6ken") == fingerprint("t\u00f6ken".encode())

    def test_different_inputs_have_different_fingerprints(self) -> None:
        assert fingerprint("token-a") != fingerprint("token-b")


class TestRedactUrl:
    def test_query_fragment_and_user_info_are_dropped(self) -> None:
        shown = redact_url(SIGNED)

        assert shown.startswith(
            "https://ds.example.com:8443/cache/files/data/K_1/output.docx #"
        )
        for secret_part in ("user", "pass", "md5", "Xb3secret", "expires", "fragment"):
            assert secret_part not in shown

    def test_default_port_is_not_invented(self) -> None:
        shown = redact_url("https://ds.example.com/a/b?sig=1")

        assert shown.startswith("https://ds.example.com/a/b #")

    def test_urls_differing_only_in_query_have_different_fingerprints(self) -> None:
        one = redact_url("https://ds.example.com/a?md5=1")
        two = redact_url("https://ds.example.com/a?md5=2")

        assert one.split(" #")[0] == two.split(" #")[0]
        assert one != two

    def test_same_url_redacts_the_same_way(self) -> None:
        assert redact_url(SIGNED) == redact_url(SIGNED)

    @pytest.mark.parametrize(
        "junk",
        [
            "",
            "not a url",
            "http://[::1",
            "http://127.0.0.1:99999/x?sig=1",
            "http://127.0.0.1:port/x?sig=1",
            "\x00\x01",
            "\ud800",
            "http://\ud800/?sig=\udfff",
            "http://\uff0f@example.com/",
        ],
    )
    def test_junk_never_raises(self, junk: str) -> None:
        shown = redact_url(junk)

        assert isinstance(shown, str)
        assert "sig=" not in shown

    @pytest.mark.parametrize(
        "text",
        [
            ":// http://user:pass@127.0.0.1:1/x",
            "user:pass@example.com/x",
            "//user:pass@/x",
            "http://user:pass@/x",
        ],
    )
    def test_text_without_a_scheme_or_host_shows_no_user_info(self, text: str) -> None:
        shown = redact_url(text)

        assert shown.startswith("<unparsable url #")
        assert "pass" not in shown

    def test_unparsable_url_shows_only_a_fingerprint(self) -> None:
        shown = redact_url("http://127.0.0.1:99999/x?sig=secret")

        assert shown.startswith("<unparsable url #")
        assert "secret" not in shown


# Lone surrogates included: a JSON escape can put one in any string we log.
@settings(max_examples=200, deadline=None)
@given(
    url=st.lists(
        st.characters(exclude_categories=()) | st.characters(categories=["Cs"]),
        max_size=40,
    ).map("".join)
)
def test_any_text_redacts_without_raising(url: str) -> None:
    shown = redact_url(url)

    assert re.search(r"#[0-9a-f]{12}>?$", shown)
