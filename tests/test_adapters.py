"""docdesk inside a Flask and a Django application, over real HTTP.

Each application is a small one of the kind an integrator writes: its own
views upload a file and hand out the editor config through the adapter's
helpers, and the adapter serves what the Document Server calls. The
simulator is the Document Server, on its own port: it downloads the
document from the application, posts its callbacks there and serves the
edited file, as ONLYOFFICE Docs would. Flask runs on werkzeug's server;
Django on uvicorn as ASGI and on werkzeug's server as WSGI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.to_thread
import httpx
import jwt
import pytest
from starlette.types import Receive, Scope, Send
from werkzeug.serving import BaseWSGIServer, make_server

from docdesk.adapters.endpoints import (
    DSRequest,
    Route,
    answer,
    headers_from,
    settings_from,
)
from docdesk.adapters.runner import DeskRunner
from docdesk.desk import DocDesk
from docdesk.editor import User
from docdesk.errors import ConfigurationError
from docdesk.formats import blank_document
from docdesk.settings import Settings
from docdesk.shapes import version_json
from docdesk.simulator.edits import read_text
from docdesk.testing import RunningSimulator, fast_settings, run_simulator, serve_app_at
from integration.office import padded_docx

PREFIX = "/docdesk"
FRAMEWORKS = ["flask", "django-asgi", "django-wsgi"]
# A documentation range: no test client ever calls from there.
ELSEWHERE = "192.0.2.0/24"


@dataclass
class Embedding:
    """An application with docdesk inside, and the Document Server it uses."""

    url: str
    ds: RunningSimulator
    data_dir: Path
    http: httpx.Client

    def upload(self, filename: str, content: bytes) -> str:
        response = self.http.post(
            f"{self.url}/upload", files={"file": (filename, content)}
        )
        assert response.status_code == 201, response.text
        document_id: str = response.json()["id"]
        return document_id

    def editor_config(self, document_id: str, user: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/edit/{document_id}?user={user}")
        assert response.status_code == 200, response.text
        config: dict[str, Any] = response.json()
        return config

    def versions(self, document_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.url}/versions/{document_id}")
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["versions"]
        return found

    def history_data(self, document_id: str, number: int) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/history/{document_id}/{number}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def blobs(self) -> dict[str, bytes]:
        root = self.data_dir / "blobs"
        return {
            str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }


# The applications


def flask_application(config: dict[str, str]) -> Any:
    """A Flask app whose views use FlaskDocDesk's helpers."""
    import flask

    from docdesk.adapters.flask import FlaskDocDesk

    app = flask.Flask("embedding")
    app.config.update(config)
    docdesk = FlaskDocDesk(app, url_prefix=PREFIX)

    @app.post("/upload")
    def upload() -> tuple[dict[str, str], int]:
        document = docdesk.upload(flask.request.files["file"])
        return {"id": document.id}, 201

    @app.get("/edit/<document_id>")
    def edit(document_id: str) -> dict[str, Any]:
        user = flask.request.args["user"]
        return docdesk.editor_config(document_id, User(user, user.title()))

    @app.get("/versions/<document_id>")
    def versions(document_id: str) -> dict[str, Any]:
        found = docdesk.versions(document_id)
        return {"versions": [version_json(v) for v in found]}

    @app.get("/history/<document_id>/<int:number>")
    def history(document_id: str, number: int) -> dict[str, Any]:
        return docdesk.call(lambda desk: desk.history_data(document_id, number))

    app.extensions["docdesk-test"] = docdesk
    return app


class DjangoUrls:
    """The Django project's URLconf: docdesk's, and the project's own views."""

    urlpatterns: ClassVar[list[Any]] = []


def configure_django() -> None:
    """Django's settings, once per process: Django allows no second time."""
    import django
    from django.conf import settings
    from django.http import HttpRequest, JsonResponse
    from django.urls import include, path

    from docdesk.adapters import django as docdesk

    if settings.configured:
        return

    async def upload(request: HttpRequest) -> JsonResponse:
        document = await docdesk.upload(request.FILES["file"])
        return JsonResponse({"id": document.id}, status=201)

    async def edit(request: HttpRequest, document_id: str) -> JsonResponse:
        user = request.GET["user"]
        config = await docdesk.editor_config(document_id, User(user, user.title()))
        return JsonResponse(config)

    async def versions(request: HttpRequest, document_id: str) -> JsonResponse:
        found = await docdesk.versions(document_id)
        return JsonResponse({"versions": [version_json(v) for v in found]})

    async def history(
        request: HttpRequest, document_id: str, number: int
    ) -> JsonResponse:
        data = await docdesk.call(lambda desk: desk.history_data(document_id, number))
        return JsonResponse(data)

    # The test's own upload skips CSRF; docdesk's callback must not need to.
    upload.csrf_exempt = True  # type: ignore[attr-defined]
    DjangoUrls.urlpatterns = [
        path(f"{PREFIX.strip('/')}/", include("docdesk.adapters.django")),
        path("upload", upload),
        path("edit/<str:document_id>", edit),
        path("versions/<str:document_id>", versions),
        path("history/<str:document_id>/<int:number>", history),
    ]
    settings.configure(
        DEBUG=False,
        SECRET_KEY="a test key that is long enough for Django's own checks",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=DjangoUrls,
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()


def with_lifespan(app: Any) -> Any:
    """Django's ASGI app, answering the lifespan messages it refuses."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            if message["type"] == "lifespan.shutdown":
                return

    return wrapped


# Serving them


@contextmanager
def served_wsgi(app: Any) -> Iterator[str]:
    """Serve a WSGI app with werkzeug's threaded server on a free port."""
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def serve_flask(config: dict[str, str]) -> Iterator[str]:
    app = flask_application(config)
    with served_wsgi(app) as url:
        # Read when the desk opens, at the first request.
        app.config["DOCDESK_PUBLIC_URL"] = url + PREFIX
        try:
            yield url
        finally:
            app.extensions["docdesk-test"].close()


@contextmanager
def django_settings(config: dict[str, str]) -> Iterator[Any]:
    """docdesk's Django settings for one test; the desk closed after it."""
    configure_django()
    from django.conf import settings

    from docdesk.adapters import django as docdesk

    for name, value in config.items():
        setattr(settings, name, value)
    try:
        yield settings
    finally:
        docdesk.close()
        for name in dir(settings):
            if name.startswith("DOCDESK_"):
                delattr(settings, name)


@contextmanager
def serve_django_asgi(config: dict[str, str]) -> Iterator[str]:
    from django.core.asgi import get_asgi_application

    with (
        django_settings(config) as settings,
        serve_app_at(lambda url: with_lifespan(get_asgi_application())) as running,
    ):
        settings.DOCDESK_PUBLIC_URL = running.url + PREFIX
        yield running.url


@contextmanager
def serve_django_wsgi(config: dict[str, str]) -> Iterator[str]:
    from django.core.wsgi import get_wsgi_application

    with (
        django_settings(config) as settings,
        served_wsgi(get_wsgi_application()) as url,
    ):
        settings.DOCDESK_PUBLIC_URL = url + PREFIX
        yield url


SERVERS: dict[str, Callable[[dict[str, str]], AbstractContextManager[str]]] = {
    "flask": serve_flask,
    "django-asgi": serve_django_asgi,
    "django-wsgi": serve_django_wsgi,
}


@pytest.fixture(params=FRAMEWORKS)
def embed(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Embedding]]:
    """Starts the application and its Document Server, with extra settings."""
    with ExitStack() as stack:

        def start(**extra: str) -> Embedding:
            ds = stack.enter_context(run_simulator(fast_settings()))
            config = {
                "DOCDESK_DATA_DIR": str(tmp_path / "data"),
                "DOCDESK_DOCUMENT_SERVER_URL": ds.url,
                "DOCDESK_JWT_SECRET": ds.secret,
                "DOCDESK_RECOVERY_INTERVAL": "0",
                **extra,
            }
            url = stack.enter_context(SERVERS[request.param](config))
            http = stack.enter_context(httpx.Client(timeout=30))
            return Embedding(url, ds, tmp_path / "data", http)

        yield start


# Helpers


async def once(content: bytes) -> AsyncIterator[bytes]:
    yield content


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed_callback(secret: str, fields: dict[str, Any]) -> bytes:
    now = int(time.time())
    token = jwt.encode(
        {**fields, "iat": now, "exp": now + 300}, secret, algorithm="HS256"
    )
    return json.dumps({**fields, "token": token}).encode()


def with_query(url: str, **changes: str | None) -> str:
    """``url`` with query parameters replaced, or dropped when None."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def save_an_edit(app: Embedding, document_id: str, text: str) -> dict[str, Any]:
    """Edit in the simulator and leave; the status-2 callback once answered."""
    config = app.editor_config(document_id, "ann")
    editor = app.ds.control.open(config)
    app.ds.control.edit(editor, text)
    app.ds.control.close(editor)
    return app.ds.control.wait_for_callback(2, key=config["document"]["key"])


# The tests


def test_an_edit_saved_in_the_editor_becomes_the_new_version(
    embed: Callable[..., Embedding],
) -> None:
    app = embed(DOCDESK_CALLBACK_ALLOW="127.0.0.1/32")
    document_id = app.upload("report.docx", blank_document("docx"))
    config = app.editor_config(document_id, "ann")

    saved = save_an_edit(app, document_id, "Written through the adapter")

    links = f"{app.url}{PREFIX}/ds/documents/{document_id}/"
    assert config["document"]["url"].startswith(links)
    assert config["editorConfig"]["callbackUrl"].startswith(links)
    assert saved["success"] is True
    assert json.loads(saved["answer"]) == {"error": 0}
    edited = app.http.get(saved["body"]["url"]).content
    versions = app.versions(document_id)
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["sha256"] == sha256(edited)
    assert versions[1]["size"] == len(edited)

    # The next editor downloads the saved bytes under a new key.
    again = app.editor_config(document_id, "bob")
    assert again["document"]["key"] != config["document"]["key"]
    served = app.http.get(again["document"]["url"])
    assert served.status_code == 200
    assert sha256(served.content) == versions[1]["sha256"]
    assert "Written through the adapter" in read_text("docx", served.content)


def test_a_failed_download_answers_503_and_the_retry_saves(
    embed: Callable[..., Embedding],
) -> None:
    app = embed()
    document_id = app.upload("retry.docx", blank_document("docx"))
    key = app.editor_config(document_id, "ann")["document"]["key"]
    app.ds.control.faults(download="fail")

    save_an_edit(app, document_id, "Saved on the second try")
    app.ds.control.wait_for_callback(2, key=key, count=2)

    attempts = [c for c in app.ds.control.callbacks(key) if c["status"] == 2]
    assert [c["http_status"] for c in attempts] == [503, 200]
    assert json.loads(attempts[1]["answer"]) == {"error": 0}
    assert [v["version"] for v in app.versions(document_id)] == [1, 2]


def test_the_history_links_serve_an_old_version_and_its_changes(
    embed: Callable[..., Embedding],
) -> None:
    app = embed()
    original = blank_document("docx")
    document_id = app.upload("notes.docx", original)
    save_an_edit(app, document_id, "A second version")

    history = app.history_data(document_id, 2)
    previous = app.http.get(history["previous"]["url"])
    changes = app.http.get(history["changesUrl"])

    assert previous.status_code == 200
    assert sha256(previous.content) == sha256(original)
    assert changes.status_code == 200
    assert changes.headers["content-type"] == "application/zip"
    assert changes.headers["access-control-allow-origin"] == "*"
    assert changes.content.startswith(b"PK")


def test_a_forged_callback_is_refused_and_writes_nothing(
    embed: Callable[..., Embedding],
) -> None:
    app = embed()
    document_id = app.upload("plan.docx", blank_document("docx"))
    config = app.editor_config(document_id, "ann")
    callback_url = config["editorConfig"]["callbackUrl"]
    fields = {
        "key": config["document"]["key"],
        "status": 2,
        "url": f"{app.ds.url}/cache/files/forged/output.docx",
        "users": ["ann"],
    }
    before = app.blobs()

    forged_token = app.http.post(
        callback_url, content=signed_callback("another secret " * 4, fields)
    )
    forged_link = app.http.post(
        with_query(callback_url, sig="0" * 32),
        content=signed_callback(app.ds.secret, fields),
    )

    assert forged_token.status_code == 401
    assert forged_token.json() == {"error": 1}
    assert forged_link.status_code == 403
    assert forged_link.json() == {"error": 1}
    assert [v["version"] for v in app.versions(document_id)] == [1]
    assert app.blobs() == before


def test_a_download_link_with_a_bad_signature_is_refused(
    embed: Callable[..., Embedding],
) -> None:
    app = embed()
    content = blank_document("docx")
    document_id = app.upload("memo.docx", content)
    url = app.editor_config(document_id, "ann")["document"]["url"]

    good = app.http.get(url)
    bad = app.http.get(with_query(url, sig="f" * 32))
    unsigned = app.http.get(with_query(url, sig=None))
    other_key = app.http.get(with_query(url, key="another-key"))

    assert good.status_code == 200
    assert good.content == content
    assert good.headers["content-length"] == str(len(content))
    assert bad.status_code == 403
    assert bad.json()["error"] == "forbidden"
    assert unsigned.status_code == 404
    assert other_key.status_code == 403
    assert bad.content != content


def test_the_callback_allow_list_refuses_other_addresses(
    embed: Callable[..., Embedding],
) -> None:
    app = embed(DOCDESK_CALLBACK_ALLOW=ELSEWHERE)
    document_id = app.upload("budget.docx", blank_document("docx"))
    config = app.editor_config(document_id, "ann")
    fields = {"key": config["document"]["key"], "status": 1, "users": ["ann"]}
    before = app.blobs()

    file = app.http.get(config["document"]["url"])
    callback = app.http.post(
        config["editorConfig"]["callbackUrl"],
        content=signed_callback(app.ds.secret, fields),
    )
    old_version = app.http.get(app.history_data(document_id, 1)["url"])

    assert file.status_code == 403
    assert "may not call" in file.json()["message"]
    assert callback.status_code == 403
    assert callback.json() == {"error": 1}
    assert old_version.status_code == 403
    assert app.blobs() == before


def test_behind_a_proxy_the_allow_list_spares_only_the_changes_archive(
    embed: Callable[..., Embedding],
) -> None:
    app = embed(
        DOCDESK_CALLBACK_ALLOW="127.0.0.1/32",
        DOCDESK_TRUSTED_PROXIES="127.0.0.1/32",
    )
    document_id = app.upload("draft.docx", blank_document("docx"))
    save_an_edit(app, document_id, "Changes to show")
    history = app.history_data(document_id, 2)
    # A browser out there, through the proxy; the DS calls from the proxy's side.
    browser = {"X-Forwarded-For": "198.51.100.7"}

    changes = app.http.get(history["changesUrl"], headers=browser)
    version = app.http.get(history["url"], headers=browser)

    assert changes.status_code == 200
    assert changes.content.startswith(b"PK")
    assert version.status_code == 403
    assert "may not call" in version.json()["message"]


# The desk's own loop, and the settings the adapters read


def desk_settings(tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": "a secret of at least thirty-two characters",
        "data_dir": tmp_path / "data",
        "public_url": "http://127.0.0.1:8000/docdesk",
        # Never called here: the desk only resolves its origin.
        "document_server_url": "http://127.0.0.1:9",
        "recovery_interval": 0.0,
    }
    return Settings(**{**values, **changes})


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[DeskRunner]:
    runner = DeskRunner(lambda: desk_settings(tmp_path))
    yield runner
    runner.close()


def test_a_stream_left_early_is_closed_on_the_desk_loop(runner: DeskRunner) -> None:
    closed = threading.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            for _ in range(100):
                yield b"chunk"
        finally:
            closed.set()

    stream = runner.iterate(chunks())
    first = next(stream)
    stream.close()

    assert first == b"chunk"
    assert closed.wait(timeout=5)


@pytest.mark.anyio
async def test_work_handed_to_the_desk_outlives_a_caller_that_gives_up(
    runner: DeskRunner,
) -> None:
    finished = threading.Event()

    async def slow_save(desk: DocDesk) -> None:
        await asyncio.sleep(0.3)
        finished.set()

    await runner.asettings()  # opened: the work reaches the desk at once
    with anyio.move_on_after(0.05) as waited:
        await runner.acall(slow_save)

    assert waited.cancelled_caught
    assert await anyio.to_thread.run_sync(finished.wait, 5)


def test_a_closed_desk_opens_again_on_the_next_call(runner: DeskRunner) -> None:
    async def count(desk: DocDesk) -> int:
        return len(await desk.documents())

    before = runner.call(count)
    runner.close()
    after = runner.call(count)

    assert before == after == 0


def test_a_download_leaves_the_desk_a_chunk_at_a_time(runner: DeskRunner) -> None:
    content = padded_docx("Large", 3 * 1024 * 1024)
    document = runner.call(lambda desk: desk.upload("large.docx", once(content)))
    user = User("ann", "Ann")
    config = runner.call(lambda desk: desk.editor_config(document.id, user))
    query = dict(parse_qsl(urlsplit(config["document"]["url"]).query))
    request = DSRequest(
        route=Route.FILE,
        document_id=document.id,
        path="/docdesk/ds/documents/file",
        signature=query["sig"],
        key=query["key"],
        headers=headers_from([]),
        peer="127.0.0.1",
    )

    answered = runner.call(lambda desk: answer(desk, request, runner.settings))
    assert answered.chunks is not None
    chunks = list(runner.iterate(answered.chunks))

    assert b"".join(chunks) == content
    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) <= 262_144
    assert answered.headers["Content-Length"] == str(len(content))


def test_without_a_document_server_the_desk_does_not_open(tmp_path: Path) -> None:
    runner = DeskRunner(lambda: desk_settings(tmp_path, document_server_url=None))

    with pytest.raises(ConfigurationError, match="DOCDESK_DOCUMENT_SERVER_URL"):
        runner.call(lambda desk: desk.documents())

    assert not (tmp_path / "data").exists()


def test_the_application_config_wins_over_the_environment() -> None:
    environ = {
        "DOCDESK_PUBLIC_URL": "http://127.0.0.1:1/env",
        "DOCDESK_JWT_SECRET": "a secret of at least thirty-two characters",
        "DOCDESK_DOCUMENT_SERVER_URL": "http://127.0.0.1:9",
    }
    config = {"DOCDESK_PUBLIC_URL": "http://127.0.0.1:2/app", "SECRET_KEY": "x"}

    settings = settings_from(config, environ)

    assert settings.public_url == "http://127.0.0.1:2/app"
    assert settings.document_server_url == "http://127.0.0.1:9"


def test_the_public_url_is_required_of_an_embedding_application() -> None:
    with pytest.raises(ConfigurationError, match="DOCDESK_PUBLIC_URL is required"):
        settings_from({}, {"DOCDESK_DOCUMENT_SERVER_URL": "http://127.0.0.1:9"})
