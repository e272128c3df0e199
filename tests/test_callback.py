from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from docdesk import tokens
from docdesk.callback import (
    MAX_CALLBACK_BYTES,
    Action,
    CallbackPayload,
    CallbackStatus,
    ForceSaveType,
    SignedCallback,
    UserAction,
    read_callback,
)
from docdesk.errors import InvalidRequest, TokenError

SECRET = "a-test-secret-of-at-least-32-bytes!"
WRONG_SECRET = "not-the-document-servers-secret-at-all"
KEY = "Khirz6zTPdfd7"
DS = "https://ds.example.com/cache/files/data"
OUTPUT_URL = f"{DS}/{KEY}_4521/output.docx/output.docx?md5=Xb3&expires=1774780000"
CHANGES_URL = f"{DS}/{KEY}_4521/changes.zip/changes.zip?md5=Q1f&expires=1774780000"
FORMS_URL = f"{DS}/{KEY}_881/formsdata.json/formsdata.json?md5=aa&expires=1"
HISTORY = {
    "serverVersion": "9.3.0",
    "changes": [
        {
            "documentSha256": "9f2c",
            "created": "2026-03-29 10:15:02",
            "user": {"id": "78e1e841", "name": "John Smith"},
        }
    ],
}
NO_HEADERS = Headers({})


def _as_the_ds_sends(
    fields: dict[str, Any], *, secret: str = SECRET
) -> tuple[bytes, Headers]:
    """The body and headers the DS posts: plain fields, body token, header token."""
    body = {**fields, "token": tokens.sign(fields, secret, expires_in=300)}
    header = f"Bearer {tokens.sign_wrapped(fields, secret)}"
    return json.dumps(body).encode(), Headers({"Authorization": header})


def _read(fields: dict[str, Any]) -> CallbackPayload:
    body, headers = _as_the_ds_sends(fields)
    return read_callback(body, headers, secret=SECRET).payload


def _nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth


class TestOnlyTheTokenIsBelieved:
    def test_plain_fields_that_disagree_with_the_token_are_ignored(self) -> None:
        claims = {"key": KEY, "status": 2, "url": OUTPUT_URL, "filetype": "docx"}
        forged = {
            "key": "someone-elses-key",
            "status": 6,
            "url": "http://127.0.0.1:1/evil.docx",
            "filetype": "odt",
        }
        body = {**forged, "token": tokens.sign(claims, SECRET, expires_in=300)}

        payload = read_callback(
            json.dumps(body).encode(), NO_HEADERS, secret=SECRET
        ).payload

        assert payload.key == KEY
        assert payload.status is CallbackStatus.MUST_SAVE
        assert payload.url == OUTPUT_URL
        assert payload.filetype == "docx"

    def test_header_token_is_used_when_the_body_has_none(self) -> None:
        claims = {"key": KEY, "status": 4}
        headers = Headers(
            {"Authorization": f"Bearer {tokens.sign_wrapped(claims, SECRET)}"}
        )
        body = json.dumps({"key": "other", "status": 2}).encode()

        payload = read_callback(body, headers, secret=SECRET).payload

        assert (payload.key, payload.status) == (KEY, CallbackStatus.CLOSED)

    def test_configured_header_is_read(self) -> None:
        claims = {"key": KEY, "status": 4}
        token = tokens.sign_wrapped(claims, SECRET)
        headers = Headers({"authorizationjwt": f"Bearer {token}"})

        signed = read_callback(b"{}", headers, secret=SECRET, header="AuthorizationJwt")

        assert signed.payload.key == KEY

    def test_body_without_any_token_is_refused(self) -> None:
        body = json.dumps({"key": KEY, "status": 2, "url": OUTPUT_URL}).encode()

        with pytest.raises(TokenError, match="Authorization"):
            read_callback(body, NO_HEADERS, secret=SECRET)

    def test_token_signed_with_another_secret_is_refused(self) -> None:
        body, headers = _as_the_ds_sends({"key": KEY, "status": 4}, secret=WRONG_SECRET)

        with pytest.raises(TokenError):
            read_callback(body, headers, secret=SECRET)

    def test_token_without_exp_is_refused(self) -> None:
        body = json.dumps({"token": tokens.sign({"key": KEY, "status": 4}, SECRET)})

        with pytest.raises(TokenError, match="'exp'"):
            read_callback(body.encode(), NO_HEADERS, secret=SECRET)


class TestStatus:
    @pytest.mark.parametrize("status", list(CallbackStatus))
    def test_every_status_the_ds_defines_parses(self, status: CallbackStatus) -> None:
        payload = _read({"key": KEY, "status": int(status)})

        assert payload.status is status

    @pytest.mark.parametrize("status", [0, 8, -1, "2", True, 2.0, None])
    def test_unknown_or_mistyped_status_is_refused(self, status: Any) -> None:
        with pytest.raises(InvalidRequest):
            _read({"key": KEY, "status": status})

    def test_missing_key_is_refused(self) -> None:
        with pytest.raises(InvalidRequest, match="'key'"):
            _read({"status": 4})

    @pytest.mark.parametrize(
        ("status", "saves", "corrupted", "ends_session"),
        [
            (CallbackStatus.EDITING, False, False, False),
            (CallbackStatus.MUST_SAVE, True, False, True),
            (CallbackStatus.CORRUPTED, False, True, True),
            (CallbackStatus.CLOSED, False, False, True),
            (CallbackStatus.MAIL_MERGE, False, False, False),
            (CallbackStatus.MUST_FORCE_SAVE, True, False, False),
            (CallbackStatus.CORRUPTED_FORCE_SAVE, False, True, False),
        ],
    )
    def test_status_truth_table(
        self,
        status: CallbackStatus,
        saves: bool,
        corrupted: bool,
        ends_session: bool,
    ) -> None:
        assert (status.saves, status.corrupted, status.ends_session) == (
            saves,
            corrupted,
            ends_session,
        )

    def test_enum_values_are_the_numbers_the_ds_sends(self) -> None:
        assert [int(s) for s in CallbackStatus] == [1, 2, 3, 4, 5, 6, 7]
        assert [int(t) for t in ForceSaveType] == [0, 1, 2, 3, 4]
        assert [int(a) for a in UserAction] == [0, 1, 2]


class TestFieldTypes:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("key", 42),
            ("url", 42),
            ("url", ["http://127.0.0.1/"]),
            ("changesurl", {"href": "x"}),
            ("formsdataurl", False),
            ("history", ["not", "an", "object"]),
            ("users", "78e1e841"),
            ("users", ["78e1e841", 7]),
            ("users", [None]),
            ("actions", {"type": 1, "userid": "u"}),
            ("actions", ["u"]),
            ("actions", [{"userid": "u"}]),
            ("actions", [{"type": 1}]),
            ("actions", [{"type": 9, "userid": "u"}]),
            ("actions", [{"type": "1", "userid": "u"}]),
            ("actions", [{"type": True, "userid": "u"}]),
            ("actions", [{"type": 1, "userid": 78}]),
            ("actions", [{"type": 1, "userid": ["u"]}]),
            ("filetype", ".docx"),
            ("filetype", "docx/../x"),
            ("filetype", "x" * 17),
            ("filetype", ""),
            ("filetype", "d\u00f6cx"),
            ("filetype", 1),
            ("lastsave", "yesterday"),
            ("lastsave", "2026-13-01T00:00:00Z"),
            ("lastsave", 1774780000),
            ("notmodified", "false"),
            ("notmodified", 0),
            ("forcesavetype", 5),
            ("forcesavetype", -1),
            ("forcesavetype", True),
            ("forcesavetype", "1"),
            ("userdata", {"a": 1}),
        ],
    )
    def test_mistyped_field_is_refused(self, name: str, value: Any) -> None:
        with pytest.raises(InvalidRequest):
            _read({"key": KEY, "status": 6, name: value})

    def test_filetype_is_lowercased(self) -> None:
        assert _read({"key": KEY, "status": 2, "filetype": "DOCX"}).filetype == "docx"

    def test_absent_optional_fields_take_their_defaults(self) -> None:
        payload = _read({"key": KEY, "status": 4})

        assert payload == CallbackPayload(key=KEY, status=CallbackStatus.CLOSED)
        assert payload.author is None


class TestRealisticPayloads:
    """The examples of onlyoffice-protocol.md §1.6."""

    def test_status_1_second_user_joins(self) -> None:
        payload = _read(
            {
                "key": KEY,
                "status": 1,
                "users": ["78e1e841", "6d5a81d0"],
                "actions": [{"type": 1, "userid": "6d5a81d0"}],
            }
        )

        assert payload.status is CallbackStatus.EDITING
        assert payload.users == ("78e1e841", "6d5a81d0")
        assert payload.actions == (Action(UserAction.IN, "6d5a81d0"),)
        assert payload.url is None

    def test_status_1_one_of_two_leaves(self) -> None:
        payload = _read(
            {
                "key": KEY,
                "status": 1,
                "users": ["78e1e841"],
                "actions": [{"type": 0, "userid": "6d5a81d0"}],
            }
        )

        assert payload.users == ("78e1e841",)
        assert payload.actions == (Action(UserAction.OUT, "6d5a81d0"),)

    def test_status_4_closed_without_users(self) -> None:
        payload = _read(
            {"key": KEY, "status": 4, "actions": [{"type": 0, "userid": "78e1e841"}]}
        )

        assert payload.status is CallbackStatus.CLOSED
        assert payload.users == ()
        assert payload.author is None
        assert payload.actions == (Action(UserAction.OUT, "78e1e841"),)

    def test_status_2_with_history(self) -> None:
        payload = _read(
            {
                "key": KEY,
                "status": 2,
                "url": OUTPUT_URL,
                "changesurl": CHANGES_URL,
                "history": HISTORY,
                "users": ["78e1e841"],
                "actions": [{"type": 0, "userid": "78e1e841"}],
                "lastsave": "2026-03-29T10:15:02.000Z",
                "notmodified": False,
                "filetype": "docx",
            }
        )

        assert payload.status is CallbackStatus.MUST_SAVE
        assert payload.url == OUTPUT_URL
        assert payload.changesurl == CHANGES_URL
        assert payload.history == HISTORY
        assert payload.author == "78e1e841"
        assert payload.lastsave == datetime(2026, 3, 29, 10, 15, 2, tzinfo=UTC)
        assert payload.notmodified is False
        assert payload.filetype == "docx"
        assert payload.forcesavetype is None

    def test_status_2_not_modified_after_a_force_save(self) -> None:
        payload = _read(
            {"key": KEY, "status": 2, "url": OUTPUT_URL, "notmodified": True}
        )

        assert payload.notmodified is True

    def test_status_3_without_url(self) -> None:
        payload = _read(
            {
                "key": KEY,
                "status": 3,
                "users": ["78e1e841"],
                "actions": [{"type": 0, "userid": "78e1e841"}],
                "lastsave": "2026-03-29T10:15:02.000Z",
                "notmodified": False,
            }
        )

        assert payload.status is CallbackStatus.CORRUPTED
        assert payload.url is None
        assert payload.filetype is None
        assert payload.author == "78e1e841"

    def test_status_6_from_the_command_service_with_userdata(self) -> None:
        payload = _read(
            {
                "key": KEY,
                "status": 6,
                "url": OUTPUT_URL,
                "changesurl": CHANGES_URL,
                "history": HISTORY,
                "users": ["78e1e841"],
                "userdata": "sample userdata",
                "lastsave": "2026-03-29T10:12:44.000Z",
                "forcesavetype": 0,
                "filetype": "docx",
            }
        )

        assert payload.status is CallbackStatus.MUST_FORCE_SAVE
        assert payload.forcesavetype is ForceSaveType.COMMAND
        assert payload.userdata == "sample userdata"
        assert payload.actions == ()
        assert payload.author == "78e1e841"

    def test_status_6_from_the_save_button(self) -> None:
        payload = _read(
            {
                "key": KEY,
                "status": 6,
                "url": OUTPUT_URL,
                "users": ["78e1e841"],
                "actions": [{"type": 2, "userid": "78e1e841"}],
                "lastsave": "2026-03-29T10:12:44.000Z",
                "forcesavetype": 1,
                "filetype": "docx",
            }
        )

        assert payload.forcesavetype is ForceSaveType.BUTTON
        assert payload.actions == (Action(UserAction.FORCE_SAVE, "78e1e841"),)
        assert payload.userdata is None

    def test_status_6_form_submit_with_forms_data(self) -> None:
        payload = _read(
            {
                "key": KEY,
                "status": 6,
                "url": OUTPUT_URL,
                "users": ["78e1e841"],
                "actions": [{"type": 2, "userid": "78e1e841"}],
                "forcesavetype": 3,
                "formsdataurl": FORMS_URL,
                "filetype": "docx",
            }
        )

        assert payload.forcesavetype is ForceSaveType.FORM
        assert payload.formsdataurl == FORMS_URL

    def test_status_7_without_url(self) -> None:
        payload = _read(
            {
                "key": KEY,
                "status": 7,
                "users": ["78e1e841"],
                "lastsave": "2026-03-29T10:12:44.000Z",
                "forcesavetype": 0,
            }
        )

        assert payload.status is CallbackStatus.CORRUPTED_FORCE_SAVE
        assert payload.url is None
        assert payload.forcesavetype is ForceSaveType.COMMAND

    def test_fields_the_ds_adds_and_docdesk_ignores_are_accepted(self) -> None:
        payload = _read(
            {"key": KEY, "status": 6, "encrypted": False, "mailMerge": {"a": 1}}
        )

        assert payload.status is CallbackStatus.MUST_FORCE_SAVE


class TestHostileBodies:
    def test_body_over_the_cap_is_refused_before_parsing(self) -> None:
        body = b"{" + b" " * MAX_CALLBACK_BYTES + b"}"

        with pytest.raises(InvalidRequest, match="too large"):
            read_callback(body, NO_HEADERS, secret=SECRET)

    def test_body_at_the_cap_is_read(self) -> None:
        body, headers = _as_the_ds_sends({"key": KEY, "status": 4})
        padded = body + b" " * (MAX_CALLBACK_BYTES - len(body))

        signed = read_callback(padded, headers, secret=SECRET)

        assert signed.payload.key == KEY

    @pytest.mark.parametrize(
        "body",
        [
            _nested_lists(10_000).encode(),
            ('{"a":' + _nested_lists(10_000) + "}").encode(),
            ('{"a":' * 40 + "1" + "}" * 40).encode(),
        ],
        ids=["10000-lists", "10000-lists-in-an-object", "40-objects"],
    )
    def test_deeply_nested_json_is_refused(self, body: bytes) -> None:
        with pytest.raises(InvalidRequest):
            read_callback(body, NO_HEADERS, secret=SECRET)

    def test_deep_nesting_is_refused_even_beside_a_valid_token(self) -> None:
        claims = {"key": KEY, "status": 4}
        token = tokens.sign(claims, SECRET, expires_in=300)
        deep = '{"a":' * 40 + "1" + "}" * 40
        body = f'{{"token": "{token}", "a": {deep}}}'

        with pytest.raises(InvalidRequest, match="nested"):
            read_callback(body.encode(), NO_HEADERS, secret=SECRET)

    def test_moderate_nesting_in_an_ignored_field_is_read(self) -> None:
        body, headers = _as_the_ds_sends({"key": KEY, "status": 4})
        document = json.loads(body)
        document["extra"] = json.loads(_nested_lists(20))

        signed = read_callback(json.dumps(document).encode(), headers, secret=SECRET)

        assert signed.payload.key == KEY

    @pytest.mark.parametrize(
        "body", [b"[]", b'"token"', b"42", b"null", b"true", b'[{"token": "x"}]']
    )
    def test_json_that_is_not_an_object_is_refused(self, body: bytes) -> None:
        with pytest.raises(InvalidRequest, match="object"):
            read_callback(body, NO_HEADERS, secret=SECRET)

    @pytest.mark.parametrize(
        "body",
        [b"", b"{", b'{"token": "\xff\xfe"}', b"\xc3\x28", b"{'a': 1}", b"\x00"],
    )
    def test_bytes_that_are_not_json_are_refused(self, body: bytes) -> None:
        with pytest.raises(InvalidRequest, match="not JSON"):
            read_callback(body, NO_HEADERS, secret=SECRET)

    def test_lone_surrogate_in_the_body_token_is_a_token_error(self) -> None:
        # A JSON escape yields a str that no UTF-8 codec accepts.
        body = b'{"token": "\\ud800.\\udc00.x"}'

        with pytest.raises(TokenError):
            read_callback(body, NO_HEADERS, secret=SECRET)


class TestDelivery:
    def test_the_same_request_twice_is_one_delivery(self) -> None:
        body, headers = _as_the_ds_sends({"key": KEY, "status": 4})

        first = read_callback(body, headers, secret=SECRET)
        second = read_callback(body, headers, secret=SECRET)

        assert first.delivery == second.delivery

    def test_two_callbacks_are_two_deliveries(self) -> None:
        one, headers = _as_the_ds_sends({"key": KEY, "status": 1})
        two, _ = _as_the_ds_sends({"key": KEY, "status": 4})

        first = read_callback(one, headers, secret=SECRET)
        second = read_callback(two, headers, secret=SECRET)

        assert first.delivery != second.delivery

    def test_the_request_stripped_of_its_body_token_is_the_same_delivery(
        self,
    ) -> None:
        body, headers = _as_the_ds_sends({"key": KEY, "status": 2, "url": "u"})
        stripped = {k: v for k, v in json.loads(body).items() if k != "token"}

        whole = read_callback(body, headers, secret=SECRET)
        header_only = read_callback(
            json.dumps(stripped).encode(), headers, secret=SECRET
        )

        assert whole.delivery == header_only.delivery

    def test_tokens_signed_a_second_apart_carry_the_same_delivery(self) -> None:
        fields = {"key": KEY, "status": 2, "iat": 1, "exp": 4_000_000_000}
        later = {**fields, "iat": 2}

        first = read_callback(_body(fields), NO_HEADERS, secret=SECRET)
        second = read_callback(_body(later), NO_HEADERS, secret=SECRET)

        assert first.delivery == second.delivery
        assert (first.signed, second.signed) == (1, 2)


def _body(claims: dict[str, object]) -> bytes:
    return json.dumps({"token": jwt.encode(claims, SECRET, algorithm="HS256")}).encode()


# Any JSON value. Some strings hold lone surrogates: a JSON escape can write
# one, a Python str can hold it, and no UTF-8 encoder accepts it.
_ANY_TEXT = st.text(max_size=8) | st.lists(
    st.characters(categories=["Cs"]) | st.characters(max_codepoint=127),
    max_size=6,
).map("".join)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 9)
    | st.integers()
    | st.sampled_from([2.0, 0.5, -1e308, float("inf")])
    | _ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(_ANY_TEXT, children, max_size=3)
    ),
    max_leaves=6,
)
_FIELDS = st.sampled_from(
    [
        "key",
        "status",
        "url",
        "changesurl",
        "formsdataurl",
        "filetype",
        "history",
        "users",
        "actions",
        "lastsave",
        "notmodified",
        "forcesavetype",
        "userdata",
        "payload",
        "exp",
        "iat",
        "nbf",
    ]
)
_CLAIMS = st.dictionaries(_FIELDS | _ANY_TEXT, _JSON, max_size=6)
# A wrong signature is refused whatever the claims: these may stay simple.
_FLAT_CLAIMS = st.dictionaries(_FIELDS, _ANY_TEXT | st.integers(), max_size=4)
_FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def _hostile_requests(draw: st.DrawFn) -> tuple[bytes, Headers]:
    body = draw(_CLAIMS)
    token = draw(st.sampled_from(["none", "text", "json", "signed"]))
    if token == "text":
        body["token"] = draw(_ANY_TEXT)
    elif token == "json":
        body["token"] = draw(_JSON)
    elif token == "signed":
        body["token"] = tokens.sign(draw(_FLAT_CLAIMS), WRONG_SECRET)

    header: dict[str, str] = {}
    if draw(st.booleans()):
        wrapped = tokens.sign_wrapped(draw(_FLAT_CLAIMS), WRONG_SECRET)
        header["Authorization"] = f"Bearer {wrapped}"
    return json.dumps(body).encode(), Headers(header)


@_FUZZ
@given(request=_hostile_requests())
def test_random_bodies_raise_only_token_or_request_errors(
    request: tuple[bytes, Headers],
) -> None:
    body, headers = request

    with pytest.raises((TokenError, InvalidRequest)):
        read_callback(body, headers, secret=SECRET)


@_FUZZ
@given(
    drawn=_CLAIMS,
    base=st.sampled_from([{}, {"key": KEY, "status": 2}, {"key": KEY, "status": 6}]),
)
def test_random_claims_with_a_valid_token_parse_or_raise_invalid_request(
    drawn: dict[str, Any], base: dict[str, Any]
) -> None:
    # exp/iat/nbf drawn at random would make PyJWT refuse the token instead.
    claims = {k: v for k, v in drawn.items() if k not in ("exp", "iat", "nbf")}
    claims.update(base)
    body, headers = _as_the_ds_sends(claims)

    try:
        signed = read_callback(body, headers, secret=SECRET)
    except InvalidRequest:
        return
    except TokenError:
        # Only a "payload" claim that is not an object may make a good token bad.
        assert not isinstance(claims.get("payload", {}), dict)
        return

    assert isinstance(signed, SignedCallback)
    assert isinstance(signed.payload.status, CallbackStatus)
