"""Callbacks no honest Document Server sends: none of them may write anything.

Each test offers the service a real file it would keep if it believed the
request, then checks that nothing was fetched and nothing was written.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
import pytest

from .conftest import SECRET
from .harness import Service, Session
from .office import make_docx
from .standin import StandIn, sign

FAILED = {"error": 1}
OTHER_SECRET = "another-secret-entirely-" + "q" * 32
EVIL = "evil/output.docx"


@dataclass(frozen=True)
class Target:
    """A document with an open session and a file the attacker wants kept."""

    document_id: str
    session: Session
    fields: dict[str, Any]
    blobs: dict[str, bytes]


@pytest.fixture
def target(service: Service, standin: StandIn) -> Target:
    document = service.upload("Target.docx", make_docx("the honest version"))
    session = service.session(document["id"])
    standin.put(EVIL, make_docx("the attacker's version"))
    return Target(
        document_id=document["id"],
        session=session,
        fields=standin.save_fields(session.key, 2, EVIL),
        blobs=service.blob_files(),
    )


def _assert_untouched(service: Service, standin: StandIn, target: Target) -> None:
    assert [v["version"] for v in service.versions(target.document_id)] == [1]
    assert service.blob_files() == target.blobs
    assert service.staging() == []
    assert not standin.was_requested(EVIL)
    assert service.session(target.document_id).key == target.session.key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned_token(claims: dict[str, Any]) -> str:
    """A JWT with ``alg: none`` and no signature."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _body(fields: dict[str, Any], token: str | None) -> bytes:
    body = dict(fields)
    if token is not None:
        body["token"] = token
    return json.dumps(body).encode()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestTokens:
    def test_a_callback_without_any_token_is_refused(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        response = standin.post(target.session.callback_url, _body(target.fields, None))

        assert response.status_code == 401
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    def test_tokens_signed_with_another_secret_are_refused(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        body_token = sign(target.fields, OTHER_SECRET)
        header_token = sign({"payload": target.fields}, OTHER_SECRET)

        response = standin.post(
            target.session.callback_url,
            _body(target.fields, body_token),
            _bearer(header_token),
        )

        assert response.status_code == 401
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    def test_a_token_that_expired_ten_minutes_ago_is_refused(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        # exp = iat + 5 min, so 15 minutes ago it expired 10 minutes ago.
        issued = int(time.time()) - 15 * 60
        token = sign(target.fields, SECRET, issued=issued)

        response = standin.post(
            target.session.callback_url, _body(target.fields, token)
        )

        assert response.status_code == 401
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    def test_a_token_without_exp_is_refused(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        token = jwt.encode(target.fields, SECRET, algorithm="HS256")

        response = standin.post(
            target.session.callback_url, _body(target.fields, token)
        )

        assert response.status_code == 401
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    def test_an_unsigned_alg_none_token_is_refused(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        now = int(time.time())
        token = _unsigned_token({**target.fields, "iat": now, "exp": now + 300})

        response = standin.post(
            target.session.callback_url, _body(target.fields, token)
        )

        assert response.status_code == 401
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    def test_an_hs512_token_with_the_right_secret_is_refused(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        token = sign(target.fields, SECRET, algorithm="HS512")

        response = standin.post(
            target.session.callback_url, _body(target.fields, token)
        )

        assert response.status_code == 401
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    def test_the_body_token_wins_over_the_plain_fields(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        honest = {"key": target.session.key, "status": 1, "users": ["ann"]}
        lying_fields = {**target.fields, "users": ["mallory"]}

        response = standin.post(
            target.session.callback_url,
            _body(lying_fields, sign(honest, SECRET)),
        )

        assert response.status_code == 200
        assert response.json() == {"error": 0}
        assert service.document(target.document_id)["editors"] == ["ann"]
        _assert_untouched(service, standin, target)

    def test_the_header_token_wins_over_the_plain_fields(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        honest = {"key": target.session.key, "status": 1, "users": ["bob"]}

        response = standin.post(
            target.session.callback_url,
            _body(target.fields, None),
            _bearer(sign({"payload": honest}, SECRET)),
        )

        assert response.json() == {"error": 0}
        assert service.document(target.document_id)["editors"] == ["bob"]
        _assert_untouched(service, standin, target)


class TestCallbackLink:
    def _with_sig(self, url: str, signature: str | None) -> str:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query.pop("sig")
        if signature is not None:
            query["sig"] = signature
        return parts._replace(query=urlencode(query)).geturl()

    @pytest.mark.parametrize(
        "signature",
        [None, "", "0" * 32, "not-hex"],
        ids=["missing", "empty", "zeros", "garbage"],
    )
    def test_a_callback_link_with_a_bad_signature_is_refused(
        self,
        service: Service,
        standin: StandIn,
        target: Target,
        signature: str | None,
    ) -> None:
        url = self._with_sig(target.session.callback_url, signature)

        response = standin.callback(url, target.fields)

        assert response.status_code == 403
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    def test_the_callback_link_of_another_document_is_refused(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        other = service.upload("Other.docx", make_docx("other"))
        other_signature = dict(
            parse_qsl(urlsplit(service.session(other["id"]).callback_url).query)
        )["sig"]
        url = self._with_sig(target.session.callback_url, other_signature)
        target = replace(target, blobs=service.blob_files())

        response = standin.callback(url, target.fields)

        assert response.status_code == 403
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)


class TestBodies:
    @pytest.mark.parametrize(
        "body",
        [
            b'{"key": "k", "status": 2,',
            b"\xff\xfe not even text",
            b"",
            b'[{"key": "k", "status": 2}]',
            b'"a string"',
            b"null",
        ],
        ids=["cut-short", "binary", "empty", "array", "string", "null"],
    )
    def test_a_body_that_is_not_a_json_object_is_400(
        self, service: Service, standin: StandIn, target: Target, body: bytes
    ) -> None:
        response = standin.post(
            target.session.callback_url,
            body,
            _bearer(sign({"payload": target.fields}, SECRET)),
        )

        assert response.status_code == 400
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    def test_a_body_over_4_mib_is_400_even_when_well_signed(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        # The body token alone: a header that size never reaches the app.
        fields = {**target.fields, "userdata": "x" * (4 * 1024 * 1024)}
        body = _body(fields, sign(fields, SECRET))

        response = standin.post(target.session.callback_url, body)

        assert response.status_code == 400
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    @pytest.mark.parametrize("depth", [64, 100_000])
    def test_deeply_nested_json_is_400_even_when_well_signed(
        self, service: Service, standin: StandIn, target: Target, depth: int
    ) -> None:
        token = sign(target.fields, SECRET)
        head = json.dumps({**target.fields, "token": token})[:-1]
        body = (head + ', "userdata": ' + "[" * depth + "]" * depth + "}").encode()

        response = standin.post(target.session.callback_url, body)

        assert response.status_code == 400
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    @pytest.mark.parametrize(
        "changes",
        [
            {"status": 9},
            {"status": "2"},
            {"key": None},
            {"forcesavetype": 42},
            {"url": ["http://127.0.0.1/"]},
            {"filetype": "../docx"},
        ],
        ids=[
            "unknown-status",
            "status-as-text",
            "no-key",
            "bad-type",
            "url-list",
            "path-filetype",
        ],
    )
    def test_a_signed_token_with_malformed_claims_is_400(
        self,
        service: Service,
        standin: StandIn,
        target: Target,
        changes: dict[str, Any],
    ) -> None:
        fields = {**target.fields, **changes}
        fields = {name: value for name, value in fields.items() if value is not None}

        response = standin.callback(target.session.callback_url, fields)

        assert response.status_code == 400
        assert response.json() == FAILED
        _assert_untouched(service, standin, target)

    def test_a_get_on_the_callback_link_changes_nothing(
        self, service: Service, standin: StandIn, target: Target
    ) -> None:
        response = service.client.get(target.session.callback_url)

        assert response.status_code == 405
        _assert_untouched(service, standin, target)
