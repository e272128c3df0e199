from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from starlette.datastructures import Headers

from docdesk import tokens
from docdesk.errors import TokenError

SECRET = "a-test-secret-of-at-least-32-bytes!"
OTHER_SECRET = "another-secret-of-at-least-32-bytes"


def _segment(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _hand_made(
    header: dict[str, Any], claims: Any, secret: str, digest: str = "sha256"
) -> str:
    """A token built without PyJWT, signed with HMAC whatever its header says."""
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), digest)
    return f"{signing_input}.{_segment(mac.digest())}"


class TestSignAndVerify:
    def test_signed_claims_come_back_unchanged(self) -> None:
        claims = {"key": "Khirz6zTPdfd7", "status": 2, "users": ["78e1e841"]}

        token = tokens.sign(claims, SECRET)

        assert tokens.verify(token, SECRET) == claims

    def test_sign_uses_hs256_and_no_expiry_unless_asked(self) -> None:
        token = tokens.sign({"a": 1}, SECRET)

        assert jwt.get_unverified_header(token)["alg"] == "HS256"
        assert "exp" not in tokens.verify(token, SECRET)

    def test_expires_in_adds_iat_and_exp(self) -> None:
        before = int(time.time())

        claims = tokens.verify(tokens.sign({"a": 1}, SECRET, expires_in=120), SECRET)

        assert before <= claims["iat"] <= int(time.time())
        assert claims["exp"] == claims["iat"] + 120

    def test_sign_wrapped_puts_claims_in_payload_for_five_minutes(self) -> None:
        token = tokens.sign_wrapped({"url": "http://127.0.0.1/file"}, SECRET)

        claims = tokens.verify(token, SECRET)

        assert set(claims) == {"payload", "iat", "exp"}
        assert claims["payload"] == {"url": "http://127.0.0.1/file"}
        assert claims["exp"] == claims["iat"] + 300


class TestRefusedTokens:
    def test_alg_none_is_refused(self) -> None:
        header = _segment({"alg": "none", "typ": "JWT"})
        token = f"{header}.{_segment({'key': 'k', 'status': 2})}."

        with pytest.raises(TokenError):
            tokens.verify(token, SECRET)

    @pytest.mark.parametrize(
        ("algorithm", "digest"), [("HS384", "sha384"), ("HS512", "sha512")]
    )
    def test_other_hmac_algorithms_are_refused(
        self, algorithm: str, digest: str
    ) -> None:
        # Made by hand: PyJWT warns about a 35-byte key for these algorithms.
        header = {"alg": algorithm, "typ": "JWT"}
        token = _hand_made(header, {"key": "k"}, SECRET, digest)

        with pytest.raises(TokenError):
            tokens.verify(token, SECRET)

    def test_rs256_header_over_an_hmac_signature_is_refused(self) -> None:
        # The classic confusion attack: an HMAC made with a key the verifier
        # might treat as public, under a header that names RS256.
        token = _hand_made({"alg": "RS256", "typ": "JWT"}, {"key": "k"}, SECRET)

        with pytest.raises(TokenError):
            tokens.verify(token, SECRET)

    def test_hs256_header_made_by_hand_is_accepted(self) -> None:
        # The control for the test above: the same construction is valid.
        token = _hand_made({"alg": "HS256", "typ": "JWT"}, {"key": "k"}, SECRET)

        assert tokens.verify(token, SECRET) == {"key": "k"}

    def test_wrong_secret_is_refused(self) -> None:
        token = tokens.sign({"key": "k"}, OTHER_SECRET)

        with pytest.raises(TokenError, match="another secret"):
            tokens.verify(token, SECRET)

    def test_tampered_payload_is_refused(self) -> None:
        header, _, signature = tokens.sign({"status": 1}, SECRET).split(".")
        forged = f"{header}.{_segment({'status': 2})}.{signature}"

        with pytest.raises(TokenError):
            tokens.verify(forged, SECRET)

    @pytest.mark.parametrize(
        "garbage",
        [
            "",
            "not a token",
            "a.b.c",
            "...",
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJhbGciOiJIUzI1NiJ9..",
            "\u00e9\u00e9.\u00e9\u00e9.\u00e9",
            "\ud800.\udfff.x",
            "x" * 10_000,
        ],
    )
    def test_garbage_is_refused(self, garbage: str) -> None:
        with pytest.raises(TokenError):
            tokens.verify(garbage, SECRET)

    def test_claims_that_are_not_an_object_are_refused(self) -> None:
        token = _hand_made({"alg": "HS256", "typ": "JWT"}, [1, 2], SECRET)

        with pytest.raises(TokenError):
            tokens.verify(token, SECRET)


class TestExpiry:
    def test_token_expired_30_seconds_ago_passes_within_the_leeway(self) -> None:
        now = int(time.time())
        token = tokens.sign({"iat": now - 330, "exp": now - 30}, SECRET)

        assert tokens.verify(token, SECRET)["exp"] == now - 30

    def test_token_expired_90_seconds_ago_is_refused(self) -> None:
        now = int(time.time())
        token = tokens.sign({"iat": now - 390, "exp": now - 90}, SECRET)

        with pytest.raises(TokenError, match="expired"):
            tokens.verify(token, SECRET)

    def test_token_not_valid_for_another_90_seconds_is_refused(self) -> None:
        token = tokens.sign({"nbf": int(time.time()) + 90}, SECRET)

        with pytest.raises(TokenError, match="not valid yet"):
            tokens.verify(token, SECRET)

    def test_require_exp_refuses_a_token_without_exp(self) -> None:
        token = tokens.sign({"key": "k"}, SECRET)

        with pytest.raises(TokenError, match="'exp'"):
            tokens.verify(token, SECRET, require_exp=True)

    def test_require_exp_accepts_a_token_with_exp(self) -> None:
        token = tokens.sign({"key": "k"}, SECRET, expires_in=60)

        assert tokens.verify(token, SECRET, require_exp=True)["key"] == "k"


class TestReadRequestToken:
    def test_body_token_wins_over_a_valid_header_token(self) -> None:
        body = {"token": tokens.sign({"from": "body"}, SECRET, expires_in=300)}
        header_token = tokens.sign_wrapped({"from": "header"}, SECRET)
        headers = Headers({"Authorization": f"Bearer {header_token}"})

        claims = tokens.read_request_token(body, headers, secret=SECRET)

        assert claims["from"] == "body"

    def test_a_bad_body_token_is_not_rescued_by_a_good_header(self) -> None:
        body = {"token": tokens.sign({"from": "body"}, OTHER_SECRET, expires_in=300)}
        header_token = tokens.sign_wrapped({"from": "header"}, SECRET)
        headers = Headers({"Authorization": f"Bearer {header_token}"})

        with pytest.raises(TokenError):
            tokens.read_request_token(body, headers, secret=SECRET)

    def test_header_is_used_when_the_body_has_no_token(self) -> None:
        header_token = tokens.sign_wrapped({"key": "k", "status": 2}, SECRET)
        headers = Headers({"Authorization": f"Bearer {header_token}"})

        claims = tokens.read_request_token({"status": 4}, headers, secret=SECRET)

        assert {k: v for k, v in claims.items() if k not in ("iat", "exp")} == {
            "key": "k",
            "status": 2,
        }
        assert claims["exp"] - claims["iat"] == 300

    def test_configured_header_name_is_looked_up_case_insensitively(self) -> None:
        header_token = tokens.sign_wrapped({"key": "k"}, SECRET)
        headers = httpx.Headers({"authorizationjwt": f"Bearer {header_token}"})

        claims = tokens.read_request_token(
            {}, headers, secret=SECRET, header="AuthorizationJwt"
        )

        assert {k: v for k, v in claims.items() if k not in ("iat", "exp")} == {
            "key": "k"
        }
        assert claims["exp"] - claims["iat"] == 300

    def test_default_header_is_ignored_when_another_is_configured(self) -> None:
        header_token = tokens.sign_wrapped({"key": "k"}, SECRET)
        headers = Headers({"Authorization": f"Bearer {header_token}"})

        with pytest.raises(TokenError, match="AuthorizationJwt"):
            tokens.read_request_token(
                {}, headers, secret=SECRET, header="AuthorizationJwt"
            )

    @pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "BEARER ", ""])
    def test_bearer_prefix_is_optional_and_case_insensitive(self, prefix: str) -> None:
        header_token = tokens.sign_wrapped({"key": "k"}, SECRET)
        headers = Headers({"Authorization": f"{prefix}{header_token}"})

        claims = tokens.read_request_token({}, headers, secret=SECRET)

        assert {k: v for k, v in claims.items() if k not in ("iat", "exp")} == {
            "key": "k"
        }
        assert claims["exp"] - claims["iat"] == 300

    def test_flat_body_token_is_returned_with_its_own_claims(self) -> None:
        body = {"token": tokens.sign({"key": "k"}, SECRET, expires_in=300)}

        claims = tokens.read_request_token(body, Headers({}), secret=SECRET)

        assert claims["key"] == "k"
        assert "payload" not in claims

    def test_payload_that_is_not_an_object_is_refused(self) -> None:
        body = {"token": tokens.sign({"payload": ["k"]}, SECRET, expires_in=300)}

        with pytest.raises(TokenError, match="payload"):
            tokens.read_request_token(body, Headers({}), secret=SECRET)

    def test_no_token_anywhere_names_the_header(self) -> None:
        with pytest.raises(TokenError, match="AuthorizationJwt"):
            tokens.read_request_token(
                {"key": "k"}, Headers({}), secret=SECRET, header="AuthorizationJwt"
            )

    @pytest.mark.parametrize("value", ["", 42, ["x"], {"a": 1}, True])
    def test_body_token_that_is_not_a_string_is_refused(self, value: Any) -> None:
        header_token = tokens.sign_wrapped({"key": "k"}, SECRET)
        headers = Headers({"Authorization": f"Bearer {header_token}"})

        with pytest.raises(TokenError):
            tokens.read_request_token({"token": value}, headers, secret=SECRET)

    def test_bare_bearer_prefix_counts_as_no_token(self) -> None:
        headers = Headers({"Authorization": "Bearer "})

        with pytest.raises(TokenError, match="no token"):
            tokens.read_request_token({}, headers, secret=SECRET)

    def test_exp_is_required_by_default(self) -> None:
        body = {"token": tokens.sign({"key": "k"}, SECRET)}

        with pytest.raises(TokenError, match="'exp'"):
            tokens.read_request_token(body, Headers({}), secret=SECRET)

    def test_exp_may_be_waived(self) -> None:
        body = {"token": tokens.sign({"key": "k"}, SECRET)}

        claims = tokens.read_request_token(
            body, Headers({}), secret=SECRET, require_exp=False
        )

        assert claims == {"key": "k"}
