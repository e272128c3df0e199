"""Hostile callbacks against the real service: none may write or fetch.

Every example is a callback built from independent choices: the link it is
posted to, the token (honest or forged one of many ways), where the token
sits, the claims inside, and the plain fields beside it. When the link, the
token, its place and its claims are the honest ones the example is a
genuine save, and the service must write it: that proves the no-write check
can fail. Otherwise nothing may be written, nothing fetched (not even from
the Document Server), no answer may be a 5xx, and no log may hold the
secret, a token or a whole signed link.

Only the signed claims may be believed, so the plain fields beside the
token (url, key, status, users) contradict it in many examples: a genuine
save must still fetch and keep the token's file, not the body's, and a
signed status 1 or 4 (some lies leave one standing, such as a status 1 body
token over a save in the header) may record the editors its token names and
nothing else: no version, no fetch, not the body's users.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from docdesk.callback import MAX_CALLBACK_BYTES

from .callbacks import (
    EDITOR,
    Request,
    check_genuine,
    check_hostile,
    check_quiet,
    save_fields,
    send,
    signed,
)
from .conftest import Counts, examples
from .forgery import Forgery, forgeries
from .rig import CACHE, Document, Rig, Seen, Snapshot, docx, sign
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
# Placements whose one valid token is a status 1: it is believed, and the
# save claims beside it are not.
STATUS_1_PLACEMENTS = (
    "a valid status 1 body token over a save in the header",
    "a payload that says status 1 beside save claims",
)
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
OTHER_KEY = "the other document's key"
KEY_LIES = (OTHER_KEY, "a key never issued", "no key", "a key that is not a string")
STATUS_1_CLAIMS = "a status 1 token with save fields beside it"
STATUS_4_CLAIMS = "a status 4 token with save fields beside it"
# Plain body fields that contradict the signed claims.
PLAIN = (
    "a url off the origin",
    "another file on the origin",
    OTHER_KEY,
    "another status",
    "other users",
)
INTRUDER = "not-an-editor"


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
    plain: tuple[str, ...]
    status: int
    text: str
    number: int

    @property
    def acts_on(self) -> str | None:
        """The document whose valid signed claims the service must act on.

        Two lies can cancel out: the other document's own link with the
        other document's key, under an honest token, is a callback for the
        other document (the suite found it).
        """
        if self.forgery is not None:
            return None
        if self.placement != HONEST and self.placement not in STATUS_1_PLACEMENTS:
            return None
        link = {HONEST: "target", OWN_LINK: "other"}.get(self.address)
        key = None if self.claims in KEY_LIES else "target"
        if self.claims == OTHER_KEY:
            key = "other"
        return link if link == key else None

    @property
    def saves(self) -> str | None:
        """Which document a genuine save this plan makes is for, if it is one."""
        if self.placement == HONEST and self.claims in (HONEST, OTHER_KEY):
            return self.acts_on
        return None

    @property
    def records(self) -> int | None:
        """The status, 1 or 4, of a valid signed no-save callback in the plan."""
        if self.acts_on is None:
            return None
        if self.placement in STATUS_1_PLACEMENTS:
            return 1
        return {STATUS_1_CLAIMS: 1, STATUS_4_CLAIMS: 4}.get(self.claims)

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
        plain=st.one_of(
            st.just(()),
            st.lists(st.sampled_from(PLAIN), min_size=1, unique=True).map(tuple),
        ),
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


def _plain(
    rig: Rig, plan: Plan, claims: dict[str, Any], fields: dict[str, Any]
) -> dict[str, Any]:
    """The body's plain fields, with the plan's contradictions of the token."""
    lie: dict[str, Any] = {}
    for kind in plan.plain:
        match kind:
            case "a url off the origin":
                port = rig.trap.port
                lie["url"] = f"http://127.0.0.1:{port}{CACHE}plain/output.docx"
            case "another file on the origin":
                name = f"{secrets.token_hex(6)}/plain.docx"
                lie["url"] = rig.origin.put(name, docx("the body's own file"))
            case "the other document's key":
                lie["key"] = rig.current_key(rig.other)
            case "another status":
                saves = claims.get("status") not in (1, 4)
                lie["status"] = [1, 4][plan.number % 2] if saves else 2
            case "other users":
                lie["users"] = [INTRUDER]
    return {**fields, **lie}


def _token(plan: Plan, claims: dict[str, Any]) -> Any:
    return plan.forgery.apply(claims) if plan.forgery else sign(claims)


def build(rig: Rig, plan: Plan) -> tuple[Request, dict[str, Any]]:
    """The request ``plan`` describes, for the document's current key.

    Also returns the claims the token states, whatever the body says.
    """
    url = _address(rig, plan)
    claims, fields = _claims(rig, plan, rig.current_key(rig.target))
    fields = _plain(rig, plan, claims, fields)
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
    return Request(url, json.dumps(body).encode(), headers), claims


def _new_rows(seen: Seen, table: str) -> list[dict[str, Any]]:
    assert seen.before is not None
    assert seen.after is not None
    before = seen.before.tables[table].dicts()
    return [row for row in seen.after.tables[table].dicts() if row not in before]


def saved_otherwise(rig: Rig, seen: Seen, claims: dict[str, Any]) -> list[str]:
    """How a save strayed from fetching and keeping its token's file, if it did."""
    path = urlsplit(claims["url"]).path
    content = rig.origin.files[path.removeprefix(CACHE)]
    kept = [row["sha256"] for row in _new_rows(seen, "versions")]

    wrong = []
    if seen.origin_requests != [path]:
        wrong.append(f"fetched {seen.origin_requests}, not the token's {path}")
    if kept != [hashlib.sha256(content).hexdigest()]:
        wrong.append("kept other bytes than the token's file")
    return wrong


def _keys(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    rows = snapshot.tables["keys"].dicts()
    return {row["key"]: {**row, "editors": json.loads(row["editors"])} for row in rows}


def unexpected_writes(
    seen: Seen, document: Document, key: str, status: int
) -> list[str]:
    """What changed beyond what a signed status 1 or 4 records, if anything.

    It may set the editors of its key to those its token names (none for a
    status 4) and remember its delivery, or, as a replay, do nothing.
    """
    assert seen.before is not None
    assert seen.after is not None
    before, after = seen.before, seen.after
    untouched = set(before.tables) - {"keys", "deliveries"}
    wrong = [
        f"the {name} table"
        for name in sorted(untouched)
        if before.tables[name] != after.tables[name]
    ]
    if before.files != after.files:
        wrong.append("the files")

    # A callback with the same claims as one before is a replay, which
    # changes nothing: the DS may send a status 1 twice.
    keys_before, keys_after = _keys(before), _keys(after)
    editors = [EDITOR] if status == 1 else []
    recorded = {**keys_before[key], "editors": editors}
    recorded["editors_signed"] = keys_after[key]["editors_signed"]
    if keys_after not in (keys_before, {**keys_before, key: recorded}):
        wrong.append(f"the keys, beyond editors {editors} on the signed key")

    remembered = [
        (row["document_id"], row["status"]) for row in _new_rows(seen, "deliveries")
    ]
    if remembered not in ([], [(document.id, status)]):
        wrong.append(f"deliveries remembered: {remembered}")
    deliveries = after.tables["deliveries"].dicts()
    forgotten = [
        row
        for row in before.tables["deliveries"].dicts()
        if row["expires"] >= after.taken and row not in deliveries
    ]
    if forgotten:
        wrong.append(f"deliveries forgotten before they expired: {forgotten}")
    return wrong


def _try(rig: Rig, plan: Plan, counts: Counts, *, genuine_apart: bool) -> None:
    """Send the plan's callback; only what its valid signed claims say may happen.

    ``genuine_apart`` counts genuine saves apart from the hostile examples.
    """
    request, claims = build(rig, plan)
    acted = rig.other if plan.acts_on == "other" else rig.target
    key, versions = rig.current_key(acted), rig.versions(acted)

    with rig.watch() as seen:
        response = send(rig, request)

    genuine = plan.genuine and genuine_apart
    if plan.genuine:
        wrong = saved_otherwise(rig, seen, claims)
        counts.observe(seen, genuine=genuine, wrote=bool(wrong))
        check_genuine(seen, response, rig.versions(acted) - versions)
        assert wrong == [], seen.changes()
    elif plan.records is not None:
        wrong = unexpected_writes(seen, acted, key, plan.records)
        counts.observe(seen, wrote=bool(wrong))
        assert response.json() == {"error": 0}, response.text
        assert wrong == [], seen.changes()
        check_quiet(seen)
        counts.editors_recorded += 1
    else:
        counts.observe(seen)
        check_hostile(seen, response)
    counts.hold(genuine=genuine)


def test_hostile_callbacks_write_nothing_and_fetch_nothing(rig: Rig) -> None:
    counts = Counts(
        "hostile callbacks (forged tokens, links, keys, claims, plain fields)",
        "callback",
    )

    @given(plan=plans(rig))
    @examples(share=3)
    def run(plan: Plan) -> None:
        _try(rig, plan, counts, genuine_apart=True)

    try:
        run()
    finally:
        counts.record(_recorded(counts))
    assert counts.writes == 0
    assert counts.off_origin == 0


def test_only_the_token_is_believed_when_the_plain_fields_contradict_it(
    rig: Rig,
) -> None:
    """Valid signed saves and no-save callbacks, each body lying beside its token.

    Few examples of the property above have both: here every one does.
    """
    counts = Counts(
        "valid signed callbacks whose plain fields contradict the token",
        "signed callback",
    )

    @given(
        claims=st.sampled_from([HONEST, HONEST, STATUS_1_CLAIMS, STATUS_4_CLAIMS]),
        honest_placement=st.sampled_from(HONEST_PLACEMENTS),
        plain=st.lists(st.sampled_from(PLAIN), min_size=1, unique=True).map(tuple),
        status=st.sampled_from([2, 6]),
        number=st.integers(0, 2**31),
    )
    @examples(share=0.5)
    def run(
        claims: str,
        honest_placement: str,
        plain: tuple[str, ...],
        status: int,
        number: int,
    ) -> None:
        plan = Plan(
            HONEST, HONEST, honest_placement, None, claims, plain, status, "", number
        )
        _try(rig, plan, counts, genuine_apart=False)

    try:
        run()
    finally:
        counts.record(
            f"; {counts.tried - counts.editors_recorded} saves kept the token's"
            f" file{_recorded(counts)}"
        )
    assert counts.writes == 0
    assert counts.off_origin == 0


def _recorded(counts: Counts) -> str:
    return (
        f"; {counts.editors_recorded} valid signed status 1 or 4 recorded only"
        " the editors their token names"
    )


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
