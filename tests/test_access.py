"""Access for people and programs: tokens, sign-in, sessions, and who edits.

The route sweeps run over real HTTP against docdesk with its embedded
simulator, every route of the app under four kinds of caller: none, a
wrong token, a right token and a signed-in person. A route the tests do not
know is expected to be closed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from docdesk.cli import main, uvicorn_options
from docdesk.editor import User
from docdesk.errors import ConfigurationError
from docdesk.formats import blank_document
from docdesk.settings import SIMULATOR_PATH, ApiToken, PasswordHash, Person, Settings
from docdesk.testing import ControlClient, fast_settings, serve_app_at, serve_in_thread
from docdesk.web import access, create_app
from docdesk.web.access import (
    SESSION_COOKIE,
    AccessControl,
    hash_password,
    safe_next,
    signed_in,
    verify_password,
)
from docdesk.web.pages import API_JS_PATH

PASSWORD = "correct horse battery staple"
TOKEN = "t0k3n-" + "x" * 40
OTHER_TOKEN = "t0k3n-" + "y" * 40
DOCX = blank_document("docx")
# A cheap hash keeps the tests quick: the default cost is tens of ms a try.
ANN_HASH = hash_password(PASSWORD, n=2**10)


def http(url: str, headers: dict[str, str] | None = None) -> httpx.Client:
    """A client for plain HTTP on loopback.

    ``verify=False`` only skips loading the CA bundle, tens of milliseconds
    per client: there is no TLS here to verify.
    """
    return httpx.Client(
        base_url=url,
        headers=headers,
        timeout=30,
        verify=False,  # noqa: S501 -- plain HTTP on loopback, nothing to verify
    )


@dataclass(frozen=True)
class Guarded:
    """docdesk serving with tokens and a users file, and a way to call it."""

    url: str
    app: Starlette
    cookie: str
    document_id: str

    def client(self, credential: str = "none") -> httpx.Client:
        """A client that sends ``credential`` with every request.

        A signed-in client also says its calls come from docdesk's pages,
        as docdesk.js does.
        """
        headers = {
            "none": {},
            "wrong token": {"Authorization": f"Bearer {OTHER_TOKEN}"},
            "token": {"Authorization": f"Bearer {TOKEN}"},
            "session": {
                "Cookie": f"{SESSION_COOKIE}={self.cookie}",
                "X-Requested-With": "docdesk",
            },
        }[credential]
        return http(self.url, headers)

    def upload(self) -> str:
        with self.client("token") as api:
            response = api.post("/api/documents", files={"file": ("A.docx", DOCX)})
        response.raise_for_status()
        document_id: str = response.json()["id"]
        return document_id


def sign_in(
    url: str, user_id: str, password: str, next_path: str = "/"
) -> httpx.Response:
    with http(url) as client:
        return client.post(
            "/login",
            data={"user_id": user_id, "password": password, "next": next_path},
        )


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    folder = tmp_path_factory.mktemp("guarded")
    users = folder / "users"
    users.write_text(f"# people\nann:Ann Example:{ANN_HASH}\n", encoding="utf-8")
    made: list[Starlette] = []

    def make_app(url: str) -> ASGIApp:
        settings = Settings.from_env(
            {
                "DOCDESK_DATA_DIR": str(folder / "data"),
                "DOCDESK_PUBLIC_URL": url,
                "DOCDESK_API_TOKENS": f"robot:{TOKEN}",
                "DOCDESK_USERS_FILE": str(users),
            }
        )
        app = create_app(
            settings, simulator_settings=fast_settings(secret=settings.jwt_secret)
        )
        made.append(app)
        return app

    with serve_app_at(make_app) as running:
        cookie = sign_in(running.url, "ann", PASSWORD).cookies[SESSION_COOKIE]
        unfilled = Guarded(running.url, made[0], cookie, document_id="")
        yield Guarded(running.url, made[0], cookie, document_id=unfilled.upload())


# The route sweep

PUBLIC = "public"
API = "api"
PAGE = "page"
# The routes anyone may call: the Document Server's, and signing in and out.
PUBLIC_ROUTES = {
    "/ds/documents/{id}/file",
    "/ds/documents/{id}/callback",
    "/ds/documents/{id}/versions/{number}/file",
    "/ds/documents/{id}/versions/{number}/changes",
    "/ds/probe",
    "/login",
    "/logout",
}
PAGES = {"/", "/status", "/documents/{id}", "/documents/{id}/edit"}


@dataclass(frozen=True)
class Swept:
    method: str
    path: str
    kind: str


# What is tried under each mount: a new mount must be added here.
MOUNTED = {
    "/static": [Swept("GET", "/static/docdesk.js", PUBLIC)],
    SIMULATOR_PATH: [
        Swept("GET", SIMULATOR_PATH + API_JS_PATH, PUBLIC),
        Swept("GET", SIMULATOR_PATH + "/healthcheck", PUBLIC),
        Swept("GET", SIMULATOR_PATH + "/simulator/callbacks", API),
    ],
}


def every_route(guarded: Guarded) -> list[Swept]:
    found = []
    for route in guarded.app.routes:
        if isinstance(route, Mount):
            found.extend(MOUNTED[route.path])
            continue
        assert isinstance(route, Route), route
        template = route.path_format
        kind = (
            PUBLIC if template in PUBLIC_ROUTES else PAGE if template in PAGES else API
        )
        path = template.format(id=guarded.document_id, number=1)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found.append(Swept(method, path, kind))
    return found


def call(guarded: Guarded, api: httpx.Client, swept: Swept) -> httpx.Response:
    path = swept.path
    if swept.method == "DELETE":
        path = path.replace(guarded.document_id, guarded.upload())
    body = {"title": "Swept.docx"} if swept.method == "POST" else None
    return api.request(swept.method, path, json=body)


def asked_to_sign_in(response: httpx.Response) -> bool:
    if response.status_code == 303:
        return response.headers["location"].startswith("/login?next=")
    # The sign-in form answers a wrong password with 401 too, in HTML.
    json = response.headers.get("content-type", "").startswith("application/json")
    return response.status_code == 401 and json


def refused(swept: Swept, response: httpx.Response) -> bool:
    """A refusal on a closed route; public ones refuse on grounds of their own."""
    return swept.kind != PUBLIC and response.status_code in (401, 403)


Answers = dict[Swept, httpx.Response]


@pytest.fixture(scope="module")
def sweeps(guarded: Guarded) -> dict[str, Answers]:
    """Every route's answer to each kind of caller."""
    answers = {}
    for credential in ("none", "wrong token", "token", "session"):
        with guarded.client(credential) as api:
            answers[credential] = {
                swept: call(guarded, api, swept) for swept in every_route(guarded)
            }
    return answers


def test_the_sweep_covers_the_api_the_pages_the_metrics_and_the_ds_routes(
    guarded: Guarded,
) -> None:
    paths = {swept.path for swept in every_route(guarded)}

    assert "/metrics" in paths
    assert "/" in paths
    assert f"/documents/{guarded.document_id}/edit" in paths
    assert f"/api/documents/{guarded.document_id}/editor-config" in paths
    assert f"/ds/documents/{guarded.document_id}/callback" in paths


@pytest.mark.parametrize("credential", ["none", "wrong token"])
def test_without_a_valid_credential_only_the_public_routes_answer(
    sweeps: dict[str, Answers], credential: str
) -> None:
    answers = sweeps[credential]

    wrong = {
        f"{s.method} {s.path}": r.status_code
        for s, r in answers.items()
        if asked_to_sign_in(r) is (s.kind == PUBLIC)
    }
    assert wrong == {}
    pages = [r for s, r in answers.items() if s.kind == PAGE]
    assert all(r.status_code == 303 for r in pages)


def test_a_right_token_opens_the_api_but_not_the_pages(
    sweeps: dict[str, Answers],
) -> None:
    answers = sweeps["token"]

    wrong = {
        f"{s.method} {s.path}": r.status_code
        for s, r in answers.items()
        if refused(s, r) or asked_to_sign_in(r) is not (s.kind == PAGE)
    }
    assert wrong == {}


def test_a_session_opens_the_api_and_the_pages(sweeps: dict[str, Answers]) -> None:
    answers = sweeps["session"]

    wrong = {
        f"{s.method} {s.path}": r.status_code
        for s, r in answers.items()
        if refused(s, r) or asked_to_sign_in(r)
    }
    assert wrong == {}
    pages = [r for s, r in answers.items() if s.kind == PAGE]
    assert [r.status_code for r in pages] == [200] * len(PAGES)


def test_the_ds_routes_answer_the_same_whatever_people_send(
    guarded: Guarded, sweeps: dict[str, Answers]
) -> None:
    answers = {c: sweeps[c] for c in ("none", "token", "session")}

    public = [s for s in answers["none"] if s.kind == PUBLIC]
    statuses = {
        f"{s.method} {s.path}": {c: answers[c][s].status_code for c in answers}
        for s in public
    }
    assert all(len(set(by.values())) == 1 for by in statuses.values()), statuses
    # An unsigned callback is refused whoever asks: signatures govern these.
    callback = f"POST /ds/documents/{guarded.document_id}/callback"
    assert statuses[callback]["session"] == 403


def test_an_edit_is_saved_by_the_document_server_with_no_person_credential(
    guarded: Guarded,
) -> None:
    document_id = guarded.upload()

    with (
        guarded.client("token") as api,
        ControlClient(guarded.url + SIMULATOR_PATH) as control,
    ):
        control.http.headers["Authorization"] = f"Bearer {TOKEN}"
        config = api.get(f"/api/documents/{document_id}/editor-config").json()
        editor = control.open(config)
        control.edit(editor, "saved through /ds/")
        control.close(editor)
        control.wait_for_callback(2, key=config["document"]["key"])
        versions = api.get(f"/api/documents/{document_id}/versions").json()

    assert [v["version"] for v in versions["versions"]] == [1, 2]


# The JSON API's refusals


def test_a_refused_api_call_answers_401_json_with_a_bearer_challenge(
    guarded: Guarded,
) -> None:
    with guarded.client() as api:
        response = api.get("/api/documents")

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "Bearer" in response.json()["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_basic_credential_is_no_token(guarded: Guarded) -> None:
    with guarded.client() as api:
        response = api.get("/api/documents", auth=("robot", TOKEN))

    assert response.status_code == 401


def test_a_wrong_token_is_refused_even_beside_a_valid_session(
    guarded: Guarded,
) -> None:
    with guarded.client("session") as api:
        response = api.get(
            "/api/documents", headers={"Authorization": f"Bearer {OTHER_TOKEN}"}
        )

    assert response.status_code == 401


# Cross-site requests


def test_a_cookie_change_without_origin_or_header_is_refused(
    guarded: Guarded,
) -> None:
    cookie = {"Cookie": f"{SESSION_COOKIE}={guarded.cookie}"}
    with http(guarded.url, cookie) as api:
        before = len(api.get("/api/documents").json()["documents"])

        response = api.post("/api/documents/new", json={"title": "Forged"})

        after = len(api.get("/api/documents").json()["documents"])
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert after == before


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Requested-With": "docdesk"},
        {"Origin": "{url}"},
        {"Referer": "{url}/documents/x"},
    ],
    ids=["header", "origin", "referer"],
)
def test_a_cookie_change_from_the_own_pages_is_accepted(
    guarded: Guarded, headers: dict[str, str]
) -> None:
    sent = {name: value.format(url=guarded.url) for name, value in headers.items()}
    sent["Cookie"] = f"{SESSION_COOKIE}={guarded.cookie}"

    with http(guarded.url, sent) as api:
        response = api.post("/api/documents/new", json={"title": "Mine"})

    assert response.status_code == 201


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example"]
)
def test_a_cookie_change_from_another_origin_is_refused(
    guarded: Guarded, origin: str
) -> None:
    sent = {"Cookie": f"{SESSION_COOKIE}={guarded.cookie}", "Origin": origin}

    with http(guarded.url, sent) as api:
        response = api.post("/api/documents/new", json={"title": "Forged"})

    assert response.status_code == 403


def test_a_token_change_needs_no_origin(guarded: Guarded) -> None:
    with guarded.client("token") as api:
        response = api.post("/api/documents/new", json={"title": "From a program"})

    assert response.status_code == 201


# Signing in and out


def test_signing_in_sets_a_guarded_cookie_and_goes_on_to_next(
    guarded: Guarded,
) -> None:
    wanted = f"/documents/{guarded.document_id}/edit?mode=view"

    response = sign_in(guarded.url, "ann", PASSWORD, wanted)

    assert response.status_code == 303
    assert response.headers["location"] == wanted
    set_cookie = response.headers["set-cookie"].lower()
    assert set_cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in set_cookie
    assert "samesite=lax" in set_cookie
    assert "max-age=43200" in set_cookie
    assert PASSWORD.lower() not in set_cookie


@pytest.mark.parametrize(
    ("user_id", "password"),
    [("ann", "wrong password"), ("nobody", PASSWORD), ("ann", "")],
)
def test_a_wrong_id_or_password_signs_nobody_in(
    guarded: Guarded, user_id: str, password: str
) -> None:
    response = sign_in(guarded.url, user_id, password)

    assert response.status_code == 401
    assert SESSION_COOKIE not in response.cookies
    assert "wrong" in response.text


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords the sign-in has hashed, in order."""
    hashed: list[str] = []

    def counting(password: str, stored: PasswordHash) -> bool:
        hashed.append(password)
        return verify_password(password, stored)

    monkeypatch.setattr(access, "verify_password", counting)
    return hashed


@contextmanager
def ann_may_sign_in(folder: Path) -> Iterator[str]:
    """docdesk with Ann in its users file; its URL."""
    users = folder / "users"
    users.write_text(f"ann:Ann Example:{ANN_HASH}\n", encoding="utf-8")

    def make_app(url: str) -> ASGIApp:
        settings = Settings.from_env(
            {
                "DOCDESK_DATA_DIR": str(folder / "data"),
                "DOCDESK_PUBLIC_URL": url,
                "DOCDESK_USERS_FILE": str(users),
            }
        )
        return create_app(
            settings, simulator_settings=fast_settings(secret=settings.jwt_secret)
        )

    with serve_app_at(make_app) as running:
        yield running.url


def test_an_id_that_failed_too_often_is_refused_before_any_hash(
    tmp_path: Path, hashed: list[str]
) -> None:
    with ann_may_sign_in(tmp_path) as url:
        wrong = [sign_in(url, "ann", f"guess {n}") for n in range(5)]
        right = sign_in(url, "ann", PASSWORD)
        other = sign_in(url, "bob", "guess")

    assert [r.status_code for r in wrong] == [401] * 5
    assert right.status_code == 429
    assert 0 < int(right.headers["retry-after"]) <= 900
    assert "Too many failed sign-ins" in right.text
    assert SESSION_COOKIE not in right.cookies
    # Another id from the same address is still heard, and hashed.
    assert other.status_code == 401
    assert hashed == [*(f"guess {n}" for n in range(5)), "guess"]


def test_guesses_sent_at_once_are_hashed_no_more_than_one_at_a_time(
    tmp_path: Path, hashed: list[str]
) -> None:
    guesses = [f"guess {n}" for n in range(12)]

    with ann_may_sign_in(tmp_path) as url, ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda guess: sign_in(url, "ann", guess), guesses))

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * 5 + [429] * 7
    assert len(hashed) == 5


def test_an_anonymous_page_visit_is_sent_to_sign_in_and_back(
    guarded: Guarded,
) -> None:
    wanted = f"/documents/{guarded.document_id}/edit?mode=view"

    with guarded.client() as browser:
        first = browser.get(wanted)
        form = browser.get(first.headers["location"])
    next_field = re.search(r'name="next" value="([^"]*)"', form.text)
    back = sign_in(guarded.url, "ann", PASSWORD, next_field[1] if next_field else "")

    assert first.status_code == 303
    assert form.status_code == 200
    assert back.headers["location"] == wanted


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "",
    ],
)
def test_a_next_that_leaves_the_site_is_replaced_by_the_list(
    guarded: Guarded, next_path: str
) -> None:
    response = sign_in(guarded.url, "ann", PASSWORD, next_path)

    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_a_path_on_this_site_is_a_safe_next() -> None:
    wanted = "/documents/abc/edit?mode=view&user_id=x"

    assert safe_next(wanted) == wanted


def test_signing_out_clears_the_cookie(guarded: Guarded) -> None:
    with guarded.client("session") as browser:
        response = browser.post("/logout")

    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert re.search(r"max-age=0", response.headers["set-cookie"], re.IGNORECASE)


def test_an_expired_session_is_refused(
    guarded: Guarded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access, "SESSION_LIFETIME", -1)
    signed = sign_in(guarded.url, "ann", PASSWORD)
    # Sent as a browser with a wrong clock would, past its Max-Age.
    cookie = {"Cookie": signed.headers["set-cookie"].split(";")[0]}

    with http(guarded.url, cookie) as api:
        response = api.get("/api/documents")

    assert response.status_code == 401


def test_a_cookie_altered_to_another_expiry_is_refused(guarded: Guarded) -> None:
    subject, expiry, mac = guarded.cookie.split("|")
    altered = f"{subject}|{int(expiry) + 3600}|{mac}"
    cookie = {"Cookie": f"{SESSION_COOKIE}={altered}"}

    with http(guarded.url, cookie) as api:
        response = api.get("/api/documents")

    assert response.status_code == 401


# Who edits


def test_the_editor_config_names_the_signed_in_person_not_the_query(
    guarded: Guarded,
) -> None:
    with guarded.client("session") as api:
        config = api.get(
            f"/api/documents/{guarded.document_id}/editor-config",
            params={"user_id": "mallory", "user_name": "Mallory"},
        ).json()

    assert config["editorConfig"]["user"] == {"id": "ann", "name": "Ann Example"}


def test_the_editor_page_edits_as_the_signed_in_person(guarded: Guarded) -> None:
    with guarded.client("session") as browser:
        page = browser.get(
            f"/documents/{guarded.document_id}/edit",
            params={"user_id": "mallory", "user_name": "Mallory"},
        )

    assert page.status_code == 200
    assert 'data-user-id="ann"' in page.text
    assert "Mallory" not in page.text


def test_a_program_with_a_token_names_the_user_it_acts_for(guarded: Guarded) -> None:
    with guarded.client("token") as api:
        config = api.get(
            f"/api/documents/{guarded.document_id}/editor-config",
            params={"user_id": "bob", "user_name": "Bob"},
        ).json()

    assert config["editorConfig"]["user"] == {"id": "bob", "name": "Bob"}


# Open access, the default on loopback


@pytest.fixture(scope="module")
def open_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("open")

    def make_app(url: str) -> ASGIApp:
        settings = Settings.from_env(
            {"DOCDESK_DATA_DIR": str(folder), "DOCDESK_PUBLIC_URL": url}
        )
        fast = fast_settings(secret=settings.jwt_secret)
        return create_app(settings, simulator_settings=fast)

    with serve_app_at(make_app) as running:
        yield running.url


def test_with_nothing_configured_everyone_may_call_as_today(open_service: str) -> None:
    with http(open_service) as api:
        listed = api.get("/api/documents")
        created = api.post("/api/documents/new", json={"title": "Open"})
        page = api.get("/")
        config = api.get(
            f"/api/documents/{created.json()['id']}/editor-config",
            params={"user_id": "bob", "user_name": "Bob"},
        ).json()

    assert listed.status_code == 200
    assert created.status_code == 201
    assert page.status_code == 200
    assert config["editorConfig"]["user"] == {"id": "bob", "name": "Bob"}


def test_with_nothing_configured_there_is_no_sign_in_page(open_service: str) -> None:
    with http(open_service) as browser:
        response = browser.get("/login")

    assert response.status_code == 404


# The gate on its own: passwords, decoys and a host's own identity


ANN = Person(id="ann", name="Ann", password=ANN_HASH)
HTTP_SCOPE = {"type": "http", "scheme": "http"}


async def whoami(request: Request) -> Response:
    user = signed_in(request.scope)
    return JSONResponse({"id": user.id if user else None})


def gate(*users: Person, open_access: bool = False) -> AccessControl:
    """The middleware alone, in front of a route that says who called."""
    app = Starlette(routes=[Route("/api/whoami", whoami)])
    return AccessControl(
        app, tokens=(), users=users, session_secret="s" * 32, open_access=open_access
    )


def session_cookie(gate: AccessControl, user: Person) -> str:
    response = Response()
    gate.start_session(response, user, HTTP_SCOPE)
    return response.headers["set-cookie"].split(";")[0]


@pytest.mark.parametrize(
    ("peer", "proto", "secure"),
    [
        ("10.0.0.2", "https", True),
        ("10.0.0.2", "http", False),
        # Only the trusted proxy's word is taken.
        ("203.0.113.9", "https", False),
    ],
)
def test_the_cookie_is_secure_when_a_trusted_proxy_ended_tls(
    peer: str, proto: str, secure: bool
) -> None:
    behind_proxy = AccessControl(
        Starlette(),
        tokens=(),
        users=(ANN,),
        session_secret="s" * 32,
        open_access=False,
        public_url="http://docdesk.internal:8000",
        trusted_proxies=[ipaddress.ip_network("10.0.0.0/8")],
    )
    scope = {
        **HTTP_SCOPE,
        "client": (peer, 40000),
        "headers": [(b"x-forwarded-proto", proto.encode())],
    }
    response = Response()

    behind_proxy.start_session(response, ANN, scope)

    flags = response.headers["set-cookie"].lower().split("; ")
    assert ("secure" in flags) is secure


def test_a_new_password_ends_the_sessions_made_with_the_old_one() -> None:
    renewed = Person(id="ann", name="Ann", password=hash_password("another one"))
    cookie = session_cookie(gate(ANN), ANN)

    answers = []
    for user in (ANN, renewed):
        with (
            serve_in_thread(gate(user)) as running,
            http(running.url, {"Cookie": cookie}) as api,
        ):
            answers.append(api.get("/api/whoami"))

    assert answers[0].json() == {"id": "ann"}
    assert answers[1].status_code == 401


def test_a_password_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    matches = verify_password("wrong password", ANN_HASH)

    assert not matches
    assert compared
    assert compared[-1][1] == ANN_HASH.digest


def test_an_unknown_id_costs_a_password_hash_as_a_known_one_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed: list[int] = []
    real = hashlib.scrypt

    def spy(password: bytes, *, n: int, **kwargs: Any) -> bytes:
        hashed.append(n)
        return real(password, n=n, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", spy)
    guard = gate(ANN)

    async def attempts() -> list[Person | None]:
        return [
            await guard.sign_in("nobody", PASSWORD),
            await guard.sign_in("ann", "wrong password"),
        ]

    refused = anyio.run(attempts)

    assert refused == [None, None]
    assert hashed == [ANN_HASH.n, ANN_HASH.n]


def test_a_host_application_supplies_the_user_when_access_is_open() -> None:
    inner = gate(open_access=True)

    async def host(scope: Any, receive: Any, send: Any) -> None:
        # The host's own sign-in has found who this is.
        scope.setdefault("state", {})["docdesk_user"] = User("clerk", "Clerk")
        await inner(scope, receive, send)

    with serve_in_thread(host) as running, http(running.url) as api:
        answer = api.get("/api/whoami").json()

    assert answer == {"id": "clerk"}


# Settings


def test_a_short_api_token_is_refused_naming_the_variable_not_the_token() -> None:
    short = "short-token-123"

    with pytest.raises(ConfigurationError, match="DOCDESK_API_TOKENS") as raised:
        Settings.from_env({"DOCDESK_API_TOKENS": f"robot:{short}"})

    assert short not in raised.value.message


def test_an_entry_without_a_name_is_refused_without_quoting_it() -> None:
    with pytest.raises(ConfigurationError, match="entry 2") as raised:
        Settings.from_env({"DOCDESK_API_TOKENS": f"robot:{TOKEN},{OTHER_TOKEN}"})

    assert OTHER_TOKEN not in raised.value.message


def test_tokens_are_read_from_the_tokens_file(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# programs\nrobot:{TOKEN}\n\nbatch:{OTHER_TOKEN}\n")

    settings = Settings.from_env({"DOCDESK_API_TOKENS_FILE": str(file)})

    assert settings.api_tokens == (
        ApiToken("robot", TOKEN),
        ApiToken("batch", OTHER_TOKEN),
    )
    assert TOKEN not in repr(settings)


def test_tokens_in_both_the_variable_and_a_file_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"robot:{TOKEN}\n")

    with pytest.raises(ConfigurationError, match="not both"):
        Settings.from_env(
            {"DOCDESK_API_TOKENS": f"a:{TOKEN}", "DOCDESK_API_TOKENS_FILE": str(file)}
        )


def test_a_bad_users_file_line_is_named(tmp_path: Path) -> None:
    file = tmp_path / "users"
    file.write_text(f"ann:Ann:{ANN_HASH}\nbob:Bob:plaintext-password\n")

    with pytest.raises(ConfigurationError, match="DOCDESK_USERS_FILE line 2") as raised:
        Settings.from_env({"DOCDESK_USERS_FILE": str(file)})

    assert "plaintext-password" not in raised.value.message


def test_a_missing_users_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="DOCDESK_USERS_FILE"):
        Settings.from_env({"DOCDESK_USERS_FILE": str(tmp_path / "absent")})


def test_a_display_name_may_hold_colons(tmp_path: Path) -> None:
    file = tmp_path / "users"
    file.write_text(f"ann:Ann: the editor:{ANN_HASH}\n")

    [user] = Settings.from_env({"DOCDESK_USERS_FILE": str(file)}).users

    assert (user.id, user.name, user.password) == ("ann", "Ann: the editor", ANN_HASH)


def test_a_short_session_secret_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="DOCDESK_SESSION_SECRET"):
        Settings.from_env({"DOCDESK_SESSION_SECRET": "short"})


# The command line


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in list(os.environ):
        if name.startswith("DOCDESK_"):
            monkeypatch.delenv(name)
    return CliRunner(env={"DOCDESK_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The arguments ``uvicorn.run`` was called with; nothing is bound.

    ``serve`` configures logging as the CLI does; the root logger is put
    back afterwards so later tests do not print every request.
    """
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield calls
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "docs.example"])
def test_serve_beyond_loopback_without_access_control_refuses_to_start(
    shell: CliRunner, bound: list[dict[str, Any]], host: str
) -> None:
    result = shell.invoke(main, ["serve", "--host", host])

    assert result.exit_code == 2
    assert "DOCDESK_API_TOKENS" in result.stderr
    assert "DOCDESK_USERS_FILE" in result.stderr
    assert bound == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_serve_on_loopback_starts_open_as_before(
    shell: CliRunner, bound: list[dict[str, Any]], host: str
) -> None:
    result = shell.invoke(main, ["serve", "--host", host])

    assert result.exit_code == 0, result.stderr
    assert [call["host"] for call in bound] == [host]


def test_serve_runs_uvicorn_with_the_options_the_benchmarks_take_from_it(
    shell: CliRunner, bound: list[dict[str, Any]]
) -> None:
    result = shell.invoke(main, ["serve"])

    assert result.exit_code == 0, result.stderr
    [options] = bound
    assert (options.pop("host"), options.pop("port")) == ("127.0.0.1", 8000)
    assert options == uvicorn_options()


def test_serve_beyond_loopback_starts_with_tokens(
    shell: CliRunner, bound: list[dict[str, Any]]
) -> None:
    result = shell.invoke(
        main, ["serve", "--host", "0.0.0.0"], env={"DOCDESK_API_TOKENS": f"r:{TOKEN}"}
    )

    assert result.exit_code == 0, result.stderr
    assert [call["host"] for call in bound] == ["0.0.0.0"]


def test_user_hash_makes_a_hash_its_password_verifies(shell: CliRunner) -> None:
    result = shell.invoke(main, ["user", "hash"], input=f"{PASSWORD}\n")

    stored = PasswordHash.parse(result.stdout.strip())
    assert result.exit_code == 0
    assert (stored.n, stored.r, stored.p) == (2**14, 8, 1)
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + "!", stored)


def test_user_hash_with_an_id_prints_a_users_file_line(
    shell: CliRunner, tmp_path: Path
) -> None:
    result = shell.invoke(
        main, ["user", "hash", "--id", "ann", "--name", "Ann"], input=PASSWORD
    )
    file = tmp_path / "users"
    file.write_text(result.stdout)

    [user] = Settings.from_env({"DOCDESK_USERS_FILE": str(file)}).users

    assert (user.id, user.name) == ("ann", "Ann")
    assert verify_password(PASSWORD, user.password)


def test_user_hash_refuses_a_short_password(shell: CliRunner) -> None:
    result = shell.invoke(main, ["user", "hash"], input="short\n")

    assert result.exit_code == 2
    assert result.stdout == ""


def test_token_new_prints_a_line_the_settings_accept(shell: CliRunner) -> None:
    first = shell.invoke(main, ["token", "new", "robot"]).stdout.strip()
    second = shell.invoke(main, ["token", "new", "robot"]).stdout.strip()

    settings = Settings.from_env({"DOCDESK_API_TOKENS": first})

    [token] = settings.api_tokens
    assert token.name == "robot"
    assert len(token.token) >= 43
    assert first != second


def test_a_session_lasts_twelve_hours() -> None:
    cookie = session_cookie(gate(ANN), ANN)

    expiry = int(cookie.split("|")[1])

    assert abs(expiry - (time.time() + 12 * 3600)) < 60
