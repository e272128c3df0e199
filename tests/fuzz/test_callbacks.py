"""Hostile callbacks against the real service: none may write or fetch.

Every example is a callback built from independent choices: the link it is
posted to, the token (honest or forged one of many ways), where the token
sits, and the claims inside. When every choice is the honest one the
example is a genuine save, and the service must write it: that proves the
no-write check can fail. Otherwise nothing may be written, nothing fetched
(not even from the Document Server), no answer may be a 5xx, and no log
may hold the secret, a token or a whole signed link.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from docdesk.callback import MAX_CALLBACK_BYTES

from .callbacks import (
    EDITOR,
    Request,
    check_genuine,
    check_hostile,
    save_fields,
    send,
    signed,
)
from .conftest import Counts, examples
from .forgery import Forgery, forgeries
from .rig import Rig, sign
from .urls import hostile_urls

HONEST = "honest"

OWN_LINK = "the other document's own link"
ADDRESSES = (
    "the other document's signature",
    "this signature on the other document's path",
    OWN_LINK,
    "no signature",
    "an empty signature",
    "a garbage signature",
    "one character of the signature changed",
    "the signature in capitals",
    "the signature with more after it",
    "a bad document id",
)
PLACEMENTS = (
    "a forged body token over a valid header",
    "a valid status 1 body token over a save in the header",
    "another header name",
    "no Bearer prefix",
    "a payload that is not an object",
    "a payload that says status 1 beside save claims",
    "no token at all",
)
HONEST_PLACEMENTS = ("body and header", "body", "header", "header unwrapped")
CLAIMS = (
    "a status 1 token with save fields beside it",
    "a status 4 token with save fields beside it",
    "the other document's key",
    "a key never issued",
    "no key",
    "a key that is not a string",
    "an unknown status",
    "the status as text",
    "the status as a boolean",
    "no url",
    "a url that is not a string",
    "a filetype with a path",
    "malformed actions",
    "users that are not a list",
    "a lastsave that is not a time",
    "an unknown forcesavetype",
    "a history that is not an object",
)


def _dimension(hostile: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Honest half the time, so every example has one to four lies in it."""
    return st.one_of(st.just(HONEST), st.sampled_from(hostile))


@dataclass(frozen=True)
class Plan:
    address: str
    placement: str
    honest_placement: str
    forgery: Forgery | None
    claims: str
    status: int
    text: str
    number: int

    @property
    def saves(self) -> str | None:
        """Which document a genuine save this plan makes is for, if it is one.

        Two lies can cancel out: the other document's own link with the
        other document's key, under an honest token, is a genuine save of
        the other document (the suite found it).
        """
        if self.placement != HONEST or self.forgery is not None:
            return None
        if (self.address, self.claims) == (HONEST, HONEST):
            return "target"
        if (self.address, self.claims) == (OWN_LINK, "the other document's key"):
            return "other"
        return None

    @property
    def genuine(self) -> bool:
        return self.saves is not None


def plans(rig: Rig) -> st.SearchStrategy[Plan]:
    trap = f"http://127.0.0.1:{rig.trap.port}/jwks.json"
    return st.builds(
        Plan,
        address=_dimension(ADDRESSES),
        placement=_dimension(PLACEMENTS),
        honest_placement=st.sampled_from(HONEST_PLACEMENTS),
        forgery=st.one_of(st.none(), forgeries(trap)),
        claims=_dimension(CLAIMS),
        status=st.sampled_from([2, 6]),
        text=st.text(max_size=40),
        number=st.integers(0, 2**31),
    )


def _address(rig: Rig, plan: Plan) -> str:
    target, other = rig.target, rig.other
    base = "http://127.0.0.1:8000/ds/documents"
    signature = target.signature
    path, sig = target.id, signature
    match plan.address:
        case "the other document's signature":
            sig = other.signature
        case "this signature on the other document's path":
            path = other.id
        case "the other document's own link":
            path, sig = other.id, other.signature
        case "no signature":
            return f"{base}/{path}/callback"
        case "an empty signature":
            sig = ""
        case "a garbage signature":
            sig = plan.text
        case "one character of the signature changed":
            at = plan.number % len(signature)
            changed = "0" if signature[at] != "0" else "1"
            sig = signature[:at] + changed + signature[at + 1 :]
        case "the signature in capitals":
            sig = signature.upper()
            if sig == signature:
                sig = signature + "0"
        case "the signature with more after it":
            sig = signature + (plan.text or "0")
        case "a bad document id":
            path = quote(plan.text, safe="") or "%20"
            if path == target.id:
                path = target.id + "0"
    return f"{base}/{path}/callback?sig={quote(sig, safe='')}"


def _claims(rig: Rig, plan: Plan, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The claims the token states and the plain fields beside them."""
    fields = save_fields(rig, key, plan.status)
    lie: dict[str, Any] = {}
    match plan.claims:
        case "honest":
            return fields, fields
        case "a status 1 token with save fields beside it":
            return {"key": key, "status": 1, "users": [EDITOR]}, fields
        case "a status 4 token with save fields beside it":
            actions = [{"type": 0, "userid": EDITOR}]
            return {"key": key, "status": 4, "actions": actions}, fields
        case "the other document's key":
            lie = {"key": rig.current_key(rig.other)}
        case "a key never issued":
            lie = {"key": plan.text or "never-issued"}
        case "no key":
            lie = {"key": None}
        case "a key that is not a string":
            lie = {"key": [key]}
        case "an unknown status":
            lie = {"status": [0, 8, 9, -1, 2**40][plan.number % 5]}
        case "the status as text":
            lie = {"status": str(plan.status)}
        case "the status as a boolean":
            lie = {"status": True}
        case "no url":
            lie = {"url": None}
        case "a url that is not a string":
            lie = {"url": [fields["url"]]}
        case "a filetype with a path":
            lie = {"filetype": f"../{plan.text}docx"}
        case "malformed actions":
            lie = {"actions": [{"type": 9, "userid": EDITOR}, "x"][plan.number % 2 :]}
        case "users that are not a list":
            lie = {"users": EDITOR}
        case "a lastsave that is not a time":
            lie = {"lastsave": plan.text + "not a time"}
        case "an unknown forcesavetype":
            lie = {"forcesavetype": 5 + plan.number % 100}
        case "a history that is not an object":
            lie = {"history": [plan.text]}
    claims = {**fields, **lie}
    claims = {name: value for name, value in claims.items() if value is not None}
    return claims, claims


def _token(plan: Plan, claims: dict[str, Any]) -> Any:
    return plan.forgery.apply(claims) if plan.forgery else sign(claims)


def build(rig: Rig, plan: Plan) -> Request:
    """The request ``plan`` describes, for the document's current key."""
    url = _address(rig, plan)
    claims, fields = _claims(rig, plan, rig.current_key(rig.target))
    body: dict[str, Any] = dict(fields)
    headers: dict[str, str] = {}
    wrapped = {"payload": claims}

    match plan.placement:
        case "honest":
            where = plan.honest_placement
            if where in ("body and header", "body"):
                body["token"] = _token(plan, claims)
            if where in ("body and header", "header"):
                headers["Authorization"] = f"Bearer {_token(plan, wrapped)}"
            if where == "header unwrapped":
                headers["Authorization"] = f"Bearer {_token(plan, claims)}"
        case "a forged body token over a valid header":
            forgery = plan.forgery or Forgery("wrong secret")
            body["token"] = forgery.apply(claims)
            headers["Authorization"] = f"Bearer {sign(wrapped)}"
        case "a valid status 1 body token over a save in the header":
            status_1 = {"key": claims.get("key"), "status": 1, "users": [EDITOR]}
            body["token"] = _token(plan, status_1)
            headers["Authorization"] = f"Bearer {_token(plan, wrapped)}"
        case "another header name":
            name = ["X-Authorization", "AuthorizationJwt", "Authorisation"]
            headers[name[plan.number % 3]] = f"Bearer {_token(plan, wrapped)}"
        case "no Bearer prefix":
            prefix = ["Token ", "JWT ", "Bearer", "Basic ", "Bearer:"][plan.number % 5]
            headers["Authorization"] = f"{prefix}{_token(plan, wrapped)}"
        case "a payload that is not an object":
            payload = [json.dumps(claims), [claims], 1][plan.number % 3]
            headers["Authorization"] = f"Bearer {_token(plan, {'payload': payload})}"
        case "a payload that says status 1 beside save claims":
            status_1 = {"key": claims.get("key"), "status": 1, "users": [EDITOR]}
            token = _token(plan, {**claims, "payload": status_1})
            headers["Authorization"] = f"Bearer {token}"
        case "no token at all":
            pass

    rig.remember(url, url.rpartition("sig=")[2])
    rig.remember_link(fields.get("url"))
    rig.remember_link(claims.get("url"))
    rig.remember(body.get("token") if isinstance(body.get("token"), str) else None)
    rig.remember(*(value.partition(" ")[2] for value in headers.values()))
    return Request(url, json.dumps(body).encode(), headers)


def test_hostile_callbacks_write_nothing_and_fetch_nothing(rig: Rig) -> None:
    counts = Counts(
        "hostile callbacks (forged tokens, links, keys, claims)", "callback"
    )

    @given(plan=plans(rig))
    @examples(share=3.5)
    def run(plan: Plan) -> None:
        request = build(rig, plan)
        saved = rig.other if plan.saves == "other" else rig.target
        versions = rig.versions(saved)

        with rig.watch() as seen:
            response = send(rig, request)

        counts.observe(seen, genuine=plan.genuine)
        if plan.genuine:
            check_genuine(seen, response, rig.versions(saved) - versions)
        else:
            check_hostile(seen, response)
        counts.hold(genuine=plan.genuine)

    try:
        run()
    finally:
        counts.record()
    assert counts.writes == 0
    assert counts.off_origin == 0


def test_signed_callbacks_with_links_off_the_origin_fetch_nothing(rig: Rig) -> None:
    counts = Counts("signed callbacks whose links leave the origin", "callback")
    urls = hostile_urls(rig.origin.url, rig.trap.port)

    @given(
        url=urls,
        redirected=st.booleans(),
        field=st.sampled_from(["url", "url", "url+changesurl"]),
        status=st.sampled_from([2, 6]),
    )
    @examples(share=2)
    def run(url: str, redirected: bool, field: str, status: int) -> None:
        fields = save_fields(rig, rig.current_key(rig.target), status)
        link = rig.origin.redirect(url) if redirected else url
        fields["url"] = link
        if field == "url+changesurl":
            fields["changesurl"] = url
        request = signed(rig, rig.target.callback_url, fields)

        with rig.watch() as seen:
            response = send(rig, request)

        counts.observe(seen)
        assert response.status_code < 500, response.text
        assert response.json() == {"error": 1}
        assert not seen.wrote, seen.changes()
        assert all(path.startswith("/redirect/") for path in seen.origin_requests)
        assert seen.off_origin == []
        assert seen.trapped == 0
        assert seen.leaks == []
        counts.hold()

    try:
        run()
    finally:
        counts.record()
    assert counts.writes == 0
    assert counts.off_origin == 0


@pytest.mark.parametrize("status", [2, 6])
def test_the_genuine_save_is_written_so_the_check_can_fail(
    rig: Rig, status: int
) -> None:
    fields = save_fields(rig, rig.current_key(rig.target), status)
    request = signed(rig, rig.target.callback_url, fields)

    with rig.watch() as seen:
        response = send(rig, request)

    assert response.json() == {"error": 0}
    assert seen.wrote
    assert seen.leaks == []


BODIES = (
    "nested past the depth limit",
    "over 4 MiB",
    "not JSON",
    "cut short",
    "not an object",
    "a lone surrogate in the token",
    "a forged token repeated last",
    "a number too long to parse",
    "NaN and Infinity",
)


def _body(kind: str, fields: dict[str, Any], depth: int, cut: int, text: str) -> bytes:
    """A body the service must refuse, beside a valid header token."""
    plain = json.dumps(fields)
    match kind:
        case "nested past the depth limit":
            nest = "[" * depth + "]" * depth
            return f'{plain[:-1]}, "userdata": {nest}}}'.encode()
        case "over 4 MiB":
            padding = "x" * (MAX_CALLBACK_BYTES + cut)
            return f'{plain[:-1]}, "userdata": "{padding}"}}'.encode()
        case "not JSON":
            return text.encode("utf-8", "surrogatepass") + b"\xff{"
        case "cut short":
            return plain.encode()[: cut % len(plain)]
        case "not an object":
            return json.dumps([fields, text]).encode()
        case "a lone surrogate in the token":
            return f'{plain[:-1]}, "token": "\\ud800{text}"}}'.encode()
        case "a forged token repeated last":
            valid = sign(fields)
            return f'{plain[:-1]}, "token": "{valid}", "token": "x{cut}"}}'.encode()
        case "a number too long to parse":
            return f'{plain[:-1]}, "status": 1{"0" * (4300 + cut)}}}'.encode()
        case "NaN and Infinity":
            # Python reads them; as the body token they must not pass for one.
            return f'{plain[:-1]}, "token": NaN, "forcesavetype": Infinity}}'.encode()
    raise AssertionError(kind)


def test_malformed_callback_bodies_write_nothing(rig: Rig) -> None:
    counts = Counts("oversized, nested and malformed callback bodies", "callback")

    @given(
        kind=st.sampled_from(BODIES),
        depth=st.integers(33, 200_000),
        cut=st.integers(0, 100_000),
        text=st.text(max_size=40),
    )
    @examples(share=0.5)
    def run(kind: str, depth: int, cut: int, text: str) -> None:
        fields = save_fields(rig, rig.current_key(rig.target), 2)
        header = sign({"payload": fields})
        rig.remember(header)
        rig.remember_link(fields["url"])
        body = _body(kind, fields, depth, cut, text)

        with rig.watch() as seen:
            response = rig.post(
                rig.target.callback_url, body, {"Authorization": f"Bearer {header}"}
            )

        counts.observe(seen)
        assert response.status_code in (400, 401), response.text
        check_hostile(seen, response)
        counts.hold()

    try:
        run()
    finally:
        counts.record()
    assert counts.writes == 0
