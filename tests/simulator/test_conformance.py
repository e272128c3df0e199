"""Conformance of the simulated Document Server to the protocol notes.

Every test here follows ``onlyoffice-protocol.md``, not the simulator's code:
the field table (§1.3), the triggers and callback URLs (§1.4, §1.5), the
answers, retries and forgotten files (§2), the tokens (§3), the command
service (§4) and the numbered edge cases (§9). Where the simulator disagrees
with the notes, the test states the notes' behaviour and is marked
``xfail(strict=True)`` with what the simulator does instead.

The storage side is a recording integrator (:mod:`.integrator`) on its own
loopback port; the simulator runs on another. Everything goes over HTTP.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import secrets
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import docx
import httpx
import jwt
import openpyxl
import pptx
import pytest

from docdesk import tokens
from docdesk.formats import check_bytes, format_for
from docdesk.simulator import Simulator, SimulatorSettings, create_simulator_app
from docdesk.simulator.callbacks import SentCallback
from docdesk.testing import ControlClient, fast_settings, serve_in_thread

from .integrator import (
    OK,
    Callback,
    Download,
    FileReply,
    Integrator,
    Reply,
    reply_json,
)

SECRET = "conformance-secret-" + "c" * 32
OTHER_SECRET = "not-the-ds-secret-" + "x" * 32
NAMES = {"ann": "Ann Lee", "bob": "Bob Ortiz", "cyd": "Cyd Berg"}
DOCUMENT_TYPES = {"docx": "word", "xlsx": "cell", "pptx": "slide"}
PERMISSIONS = {
    "edit": True,
    "download": True,
    "print": True,
    "review": True,
    "comment": True,
    "fillForms": True,
    "modifyFilter": True,
    "modifyContentControl": True,
    "copy": True,
    "chat": True,
    "protect": True,
}

# §1.3: Date.toISOString(), and the DS's own UTC "created" stamp.
ISO_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
DS_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
# §2.4: storage.fs.urlExpires, and the query of a signed link.
LINK_LIFETIME = 900
LINK_PARAMS = {"md5", "expires", "filename"}
# §3.2: jsonwebtoken's expiresIn "5m".
TOKEN_LIFETIME = 300
MAX_HEADER_TOKEN = 7168

# §1.1: OutputSfcData's constructor order, formsdataurl and filetype last.
CONNECT = ["key", "status", "users", "actions", "token"]
INFO_EDITING = ["key", "status", "users", "userdata", "token"]
SAVED = [
    "key",
    "status",
    "url",
    "changesurl",
    "history",
    "users",
    "actions",
    "lastsave",
    "notmodified",
    "token",
    "filetype",
]
FAILED_SAVE = ["key", "status", "users", "actions", "lastsave", "notmodified", "token"]
CLOSED = ["key", "status", "actions", "token"]
INFO_CLOSED = ["key", "status", "userdata", "token"]
FORCESAVED_BY_COMMAND = [
    "key",
    "status",
    "url",
    "changesurl",
    "history",
    "users",
    "userdata",
    "lastsave",
    "forcesavetype",
    "token",
    "filetype",
]
FORCESAVED_BY_BUTTON = [
    "key",
    "status",
    "url",
    "changesurl",
    "history",
    "users",
    "actions",
    "lastsave",
    "forcesavetype",
    "token",
    "filetype",
]
FORCESAVED_BY_FORM = [*FORCESAVED_BY_BUTTON[:-1], "formsdataurl", "filetype"]
FORCESAVED_BY_TIMER = [f for f in FORCESAVED_BY_BUTTON if f != "actions"]
FAILED_FORCESAVE = ["key", "status", "users", "lastsave", "forcesavetype", "token"]

# The real delays shrunk: saving 0.05 s after the last editor leaves, retries
# 0.05, 0.1 and 0.2 s apart.
DEFAULTS = replace(fast_settings(SECRET), save_delay=0.05)
RETRY_DELAYS = DEFAULTS.retry_delays
# Longer than every retry delay together: no attempt can still be coming.
AFTER_RETRIES = sum(RETRY_DELAYS) + 0.15


# The bench: the simulated DS and the recording integrator side by side


@dataclass
class Bench:
    """A simulator and the integrator, with the tests' helpers."""

    running: Running
    integrator: Integrator
    http: httpx.Client
    documents: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def control(self) -> ControlClient:
        return self.running.control

    def config(
        self,
        key: str,
        user: str,
        *,
        mode: str = "edit",
        extension: str = "docx",
        forcesave: bool = False,
        callback: str | None = "",
    ) -> dict[str, Any]:
        """An editor config (§6) for ``user``, signed unwrapped (§3.5).

        ``callback`` "" is the user's own callback URL; None leaves it out.
        """
        url, _ = self.document(key, extension)
        editor_config: dict[str, Any] = {
            "callbackUrl": callback or self.integrator.callback_url(user),
            "mode": mode,
            "lang": "en",
            "user": {"id": user, "name": NAMES[user]},
            "customization": {"forcesave": forcesave, "autosave": True},
        }
        if callback is None:
            del editor_config["callbackUrl"]
        config = {
            "documentType": DOCUMENT_TYPES[extension],
            "document": {
                "fileType": extension,
                "key": key,
                "title": f"Example.{extension}",
                "url": url,
                "permissions": dict(PERMISSIONS),
            },
            "editorConfig": editor_config,
        }
        return with_token(config)

    def document(self, key: str, extension: str = "docx") -> tuple[str, bytes]:
        """The URL and bytes behind ``key``: one document per key."""
        if key not in self.documents:
            self.documents[key] = self.integrator.document(extension)
        return self.documents[key]

    def open(self, key: str, user: str, **options: Any) -> str:
        return self.control.open(self.config(key, user, **options))

    def downloads(self, key: str) -> list[Download]:
        """Every GET of ``key``'s document URL so far."""
        return self.integrator.downloads_of(self.document(key)[0])

    def try_open(self, config: dict[str, Any]) -> httpx.Response:
        """Open without raising: the control API's own answer."""
        return self.control.http.post("/sessions", json={"config": config})

    def command(
        self,
        c: str,
        *,
        path: str = "/command",
        secret: str = SECRET,
        **params: Any,
    ) -> dict[str, Any]:
        """A command (§4) as the official client sends it: plain fields and token."""
        body = {"c": c, **params}
        response = self.http.post(
            f"{self.url}{path}", json={**body, "token": tokens.sign(body, secret)}
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        answer: dict[str, Any] = response.json()
        return answer

    def forgotten_keys(self) -> list[str]:
        keys: list[str] = self.command("getForgottenList")["keys"]
        return keys

    def wait_until_forgotten(self, key: str) -> None:
        self.integrator.wait_until(lambda: key in self.forgotten_keys())

    def wait_logged(self, status: int, key: str, count: int = 1) -> None:
        """Wait until the DS has read the answer to ``count`` such callbacks.

        The simulator logs an attempt once it has judged the answer, and in
        the same step acts on it: marks the key saved or forgotten, the
        force-save done. The integrator's own record is earlier than that.
        """
        self.integrator.wait_until(
            lambda: len(attempts_logged(self, key, status)) >= count
        )
        # The log was read from another thread, maybe mid-step: a round trip
        # through the simulator's event loop lets that step finish.
        self.http.get(f"{self.url}/healthcheck")

    def messages(self, session: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.control.state(session)["messages"]
        return messages

    def fetch(self, url: str) -> bytes:
        """GET a DS link, which must answer 200 (§2.4: no header needed)."""
        response = self.http.get(url)
        assert response.status_code == 200, response.text
        return response.content


def new_key() -> str:
    return f"K{secrets.token_hex(6)}"


@dataclass
class Running:
    """A simulator serving on a loopback port."""

    url: str
    simulator: Simulator
    control: ControlClient
    server: Any


@contextmanager
def running_simulator(settings: SimulatorSettings) -> Iterator[Running]:
    simulator = Simulator(settings)
    app = create_simulator_app(settings, simulator=simulator)
    with serve_in_thread(app) as served:
        control = ControlClient(served.url)
        try:
            yield Running(served.url, simulator, control, served.server)
        finally:
            control.http.close()
            # A download stalled on purpose would hold a graceful shutdown
            # for an hour: end the requests still running first.
            for task in list(served.server.server_state.tasks):
                task.get_loop().call_soon_threadsafe(task.cancel)


@pytest.fixture(scope="module")
def integrator() -> Iterator[Integrator]:
    """One integrator for the module: its scripts and records are per key."""
    with Integrator(SECRET).serving() as integrator:
        yield integrator


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def shared_simulator() -> Iterator[Running]:
    """The simulator of every test content with the default settings."""
    with running_simulator(DEFAULTS) as running:
        yield running


@pytest.fixture
def bench(
    shared_simulator: Running, integrator: Integrator, http: httpx.Client
) -> Bench:
    # Faults are global: one a failed test left queued must not fire later.
    faults = shared_simulator.simulator.faults
    for queue in (faults.download, faults.assembly, faults.command):
        queue.clear()
    return Bench(shared_simulator, integrator, http)


@pytest.fixture
def make_bench(
    integrator: Integrator, http: httpx.Client
) -> Iterator[Callable[..., Bench]]:
    """A bench on a simulator of its own, with some settings changed."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> Bench:
            settings = replace(DEFAULTS, **overrides)
            running = stack.enter_context(running_simulator(settings))
            # Another token header needs an integrator that reads it.
            own = integrator
            if settings.jwt_header != DEFAULTS.jwt_header:
                header = settings.jwt_header.lower()
                own = stack.enter_context(Integrator(SECRET, header).serving())
            return Bench(running, own, http)

        yield make


# Checks shared by many tests


def plain_fields(callback: Callback) -> dict[str, Any]:
    return {k: v for k, v in callback.body.items() if k != "token"}


def without_times(claims: dict[str, Any] | None) -> dict[str, Any]:
    assert claims is not None
    return {k: v for k, v in claims.items() if k not in ("iat", "exp")}


def assert_signed_as_sent(callback: Callback) -> None:
    """§3.2: both tokens verify and hold exactly the plain fields."""
    assert callback.problems == []
    assert callback.header_claims is not None
    assert callback.body_claims is not None
    assert without_times(callback.header_claims) == {"payload": plain_fields(callback)}
    assert without_times(callback.body_claims) == plain_fields(callback)
    for claims in (callback.header_claims, callback.body_claims):
        assert claims["exp"] - claims["iat"] == TOKEN_LIFETIME


def assert_cache_link(bench: Bench, link: str, key: str, name: str) -> bytes:
    """§2.4: a signed /cache/files link on the DS's host that downloads."""
    parts = urlsplit(link)
    query = dict(parse_qsl(parts.query))

    assert f"{parts.scheme}://{parts.netloc}" == bench.url
    assert re.fullmatch(
        rf"/cache/files/data/{re.escape(key)}_\d+/{name}/{name}", parts.path
    )
    assert LINK_PARAMS <= set(query) <= {*LINK_PARAMS, "shardkey"}
    assert query["filename"] == name
    assert abs(int(query["expires"]) - (time.time() + LINK_LIFETIME)) < 10
    return bench.fetch(link)


def assert_lastsave(value: Any) -> datetime:
    assert isinstance(value, str)
    assert ISO_MS.fullmatch(value)
    moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 30
    return moment


def document_text(extension: str, data: bytes) -> str:
    """Every piece of visible text of an office file, read by its own library."""
    check_bytes(format_for(extension), data[:4096], data[-65557:], len(data))
    if extension == "docx":
        return "\n".join(p.text for p in docx.Document(io.BytesIO(data)).paragraphs)
    if extension == "xlsx":
        book = openpyxl.load_workbook(io.BytesIO(data))
        cells = (c.value for sheet in book for row in sheet.iter_rows() for c in row)
        return "\n".join(str(value) for value in cells if value is not None)
    deck = pptx.Presentation(io.BytesIO(data))
    shapes = (shape for slide in deck.slides for shape in slide.shapes)
    return "\n".join(shape.text_frame.text for shape in shapes if shape.has_text_frame)


def closed_port_url() -> str:
    """A loopback URL nobody listens on: the connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/callback?user=ann"


def edited_and_closed(bench: Bench, key: str, text: str = "Hello") -> str:
    """Ann opens ``key``, types ``text`` and leaves: a final save is on its way."""
    session = bench.open(key, "ann")
    bench.control.edit(session, text)
    bench.control.close(session)
    return session


def no_callback(
    bench: Bench, status: int, key: str, within: float = 0.5, *, count: int = 1
) -> bool:
    """True if no ``count``-th callback of ``status`` for ``key`` arrives in time."""
    try:
        bench.integrator.wait_for(
            status, key=key, count=count, answered=False, timeout=within
        )
    except TimeoutError:
        return True
    return False


def attempts_logged(bench: Bench, key: str, status: int) -> list[SentCallback]:
    """The simulator's own log of callback attempts for ``key``.

    Read in process: the control API's copy holds every body of the module.
    """
    sent = list(bench.running.simulator.sender.sent)
    return [c for c in sent if c.key == key and c.status == status]


# §1.3: the field table, one test per row


class TestFieldTable:
    def test_status_1_on_connect_lists_every_editor_and_the_joining_one(
        self, bench: Bench
    ) -> None:
        key = new_key()
        bench.open(key, "ann")
        bench.integrator.wait_for(1, key=key)

        bench.open(key, "bob")
        joined = bench.integrator.wait_for(1, key=key, count=2)

        assert list(joined.body) == CONNECT
        assert joined.body["key"] == key
        assert joined.body["status"] == 1
        assert sorted(joined.body["users"]) == ["ann", "bob"]
        assert joined.body["actions"] == [{"type": 1, "userid": "bob"}]
        assert_signed_as_sent(joined)

    def test_status_1_on_disconnect_lists_the_remaining_editors_and_the_leaver(
        self, bench: Bench
    ) -> None:
        key = new_key()
        bench.open(key, "ann")
        bob = bench.open(key, "bob")
        bench.integrator.wait_for(1, key=key, count=2)

        bench.control.close(bob)
        left = bench.integrator.wait_for(1, key=key, count=3)

        assert list(left.body) == CONNECT
        assert left.body["users"] == ["ann"]
        assert left.body["actions"] == [{"type": 0, "userid": "bob"}]
        assert_signed_as_sent(left)

    def test_status_1_from_info_has_no_actions_and_echoes_userdata(
        self, bench: Bench
    ) -> None:
        key = new_key()
        bench.open(key, "ann")
        bench.integrator.wait_for(1, key=key)

        answer = bench.command("info", key=key, userdata="sample userdata")
        info = bench.integrator.wait_for(1, key=key, count=2)

        assert answer == {"key": key, "error": 0, "users": ["ann"]}
        assert list(info.body) == INFO_EDITING
        assert info.body["users"] == ["ann"]
        assert info.body["userdata"] == "sample userdata"
        assert_signed_as_sent(info)

    def test_status_1_from_info_lists_no_users_when_only_unsaved_changes_remain(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        bench = make_bench(save_delay=0.5)
        key = new_key()
        edited_and_closed(bench, key)

        answer = bench.command("info", key=key)
        info = bench.integrator.wait_for(1, key=key, count=2)

        assert answer == {"key": key, "error": 0, "users": []}
        assert list(info.body) == ["key", "status", "users", "token"]
        assert info.body["users"] == []
        assert bench.integrator.wait_for(2, key=key).body["users"] == ["ann"]

    @pytest.mark.parametrize("extension", ["docx", "xlsx", "pptx"])
    def test_status_2_carries_the_file_changes_history_and_save_facts(
        self, bench: Bench, extension: str
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann", extension=extension)
        bob = bench.open(key, "bob", extension=extension)
        for session, text in [(ann, "A one"), (ann, "A two"), (bob, "B one")]:
            bench.control.edit(session, text)
        bench.control.edit(ann, "A three")
        bench.control.close(bob)
        bench.control.close(ann)

        saved = bench.integrator.wait_for(2, key=key)

        body = saved.body
        assert list(body) == SAVED
        assert body["users"] == ["ann"]
        assert body["actions"] == [{"type": 0, "userid": "ann"}]
        assert body["notmodified"] is False
        assert body["filetype"] == extension
        assert_lastsave(body["lastsave"])
        text = document_text(
            extension, assert_cache_link(bench, body["url"], key, f"output.{extension}")
        )
        assert all(line in text for line in ["A one", "A two", "B one", "A three"])
        changes = assert_cache_link(bench, body["changesurl"], key, "changes.zip")
        assert zipfile.is_zipfile(io.BytesIO(changes))
        assert_signed_as_sent(saved)

    def test_status_2_history_has_a_version_string_and_an_entry_per_author_run(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")
        for session in (ann, ann, bob, ann):
            bench.control.edit(session, "text")
        bench.control.close(bob)
        bench.control.close(ann)

        history = bench.integrator.wait_for(2, key=key).body["history"]

        _, original = bench.document(key)
        assert set(history) == {"serverVersion", "changes"}
        assert isinstance(history["serverVersion"], str)
        assert [entry["user"] for entry in history["changes"]] == [
            {"id": "ann", "name": NAMES["ann"]},
            {"id": "bob", "name": NAMES["bob"]},
            {"id": "ann", "name": NAMES["ann"]},
        ]
        for entry in history["changes"]:
            assert set(entry) == {"documentSha256", "created", "user"}
            assert entry["documentSha256"] == hashlib.sha256(original).hexdigest()
            assert DS_TIME.fullmatch(entry["created"])

    def test_status_3_from_a_failed_assembly_has_no_url_changes_or_history(
        self, bench: Bench
    ) -> None:
        key = new_key()
        bench.control.faults(assembly="fail")

        edited_and_closed(bench, key)
        failed = bench.integrator.wait_for(3, key=key)

        assert list(failed.body) == FAILED_SAVE
        assert failed.body["users"] == ["ann"]
        assert failed.body["actions"] == [{"type": 0, "userid": "ann"}]
        assert failed.body["notmodified"] is False
        assert_lastsave(failed.body["lastsave"])
        assert_signed_as_sent(failed)

    def test_status_3_from_a_corrupted_assembly_still_links_the_output(
        self, bench: Bench
    ) -> None:
        key = new_key()
        bench.control.faults(assembly="corrupt")

        edited_and_closed(bench, key, "Best effort")
        failed = bench.integrator.wait_for(3, key=key)

        assert list(failed.body) == SAVED
        assert failed.body["filetype"] == "docx"
        output = assert_cache_link(bench, failed.body["url"], key, "output.docx")
        assert "Best effort" in document_text("docx", output)
        assert_cache_link(bench, failed.body["changesurl"], key, "changes.zip")
        assert failed.body["history"]["changes"]
        assert_signed_as_sent(failed)

    def test_status_4_names_the_leaver_in_actions_and_has_no_users(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann")

        bench.control.close(ann)
        closed = bench.integrator.wait_for(4, key=key)

        assert list(closed.body) == CLOSED
        assert closed.body["actions"] == [{"type": 0, "userid": "ann"}]
        assert_signed_as_sent(closed)

    def test_status_4_from_info_has_neither_users_nor_actions(
        self, bench: Bench
    ) -> None:
        key = new_key()
        bench.open(key, "cyd", mode="view")

        answer = bench.command(
            "info",
            key=key,
            userdata="who is there",
            callback=bench.integrator.callback_url("cmd"),
        )
        info = bench.integrator.wait_for(4, key=key)

        assert answer == {"key": key, "error": 0, "users": []}
        assert list(info.body) == INFO_CLOSED
        assert info.body["userdata"] == "who is there"
        assert info.user == "cmd"
        assert_signed_as_sent(info)

    def test_status_6_from_the_command_echoes_userdata_and_has_no_actions(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Forced")

        answer = bench.command("forcesave", key=key, userdata="sample userdata")
        forced = bench.integrator.wait_for(6, key=key)

        assert answer == {"key": key, "error": 0}
        assert list(forced.body) == FORCESAVED_BY_COMMAND
        assert forced.body["forcesavetype"] == 0
        assert forced.body["users"] == ["ann"]
        assert forced.body["userdata"] == "sample userdata"
        assert forced.body["filetype"] == "docx"
        assert_lastsave(forced.body["lastsave"])
        output = assert_cache_link(bench, forced.body["url"], key, "output.docx")
        assert "Forced" in document_text("docx", output)
        assert_cache_link(bench, forced.body["changesurl"], key, "changes.zip")
        assert forced.body["history"]["changes"][0]["user"]["id"] == "ann"
        assert_signed_as_sent(forced)

    def test_status_6_from_the_save_button_names_the_clicker_in_actions(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann", forcesave=True)
        bob = bench.open(key, "bob", forcesave=True)
        bench.control.edit(ann, "Ann wrote this")

        started = bench.control.save(bob)
        forced = bench.integrator.wait_for(6, key=key)

        assert started is True
        assert list(forced.body) == FORCESAVED_BY_BUTTON
        assert forced.body["forcesavetype"] == 1
        assert forced.body["users"] == ["ann"]
        assert forced.body["actions"] == [{"type": 2, "userid": "bob"}]
        assert_cache_link(bench, forced.body["url"], key, "output.docx")
        assert_signed_as_sent(forced)

    def test_status_6_from_a_form_submit_links_the_submitted_form_data(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Filled in")
        fields = {"Name": "Ann Lee", "Agree": True}

        started = bench.control.submit(ann, fields)
        forced = bench.integrator.wait_for(6, key=key)

        assert started is True
        assert list(forced.body) == FORCESAVED_BY_FORM
        assert forced.body["forcesavetype"] == 3
        assert forced.body["actions"] == [{"type": 2, "userid": "ann"}]
        data = assert_cache_link(
            bench, forced.body["formsdataurl"], key, "formsdata.json"
        )
        assert json.loads(data) == fields
        assert_signed_as_sent(forced)

    def test_status_6_from_the_timer_has_type_2_and_no_actions(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        bench = make_bench(forcesave_interval=0.2)
        key = new_key()
        ann = bench.open(key, "ann")

        bench.control.edit(ann, "Autosaved")
        forced = bench.integrator.wait_for(6, key=key)

        assert list(forced.body) == FORCESAVED_BY_TIMER
        assert forced.body["forcesavetype"] == 2
        assert forced.body["users"] == ["ann"]
        assert forced.user == "ann"
        assert_signed_as_sent(forced)
        # §7: at most once per interval, and only after changes.
        assert no_callback(bench, 6, key, within=0.5, count=2)

    def test_status_7_from_a_failed_assembly_has_no_url(self, bench: Bench) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Doomed")
        bench.control.faults(assembly="fail")

        bench.command("forcesave", key=key)
        failed = bench.integrator.wait_for(7, key=key)

        assert list(failed.body) == FAILED_FORCESAVE
        assert failed.body["forcesavetype"] == 0
        assert failed.body["users"] == ["ann"]
        assert_lastsave(failed.body["lastsave"])
        assert_signed_as_sent(failed)

    def test_status_7_from_a_corrupted_assembly_links_the_output(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Half there")
        bench.control.faults(assembly="corrupt")

        bench.command("forcesave", key=key)
        failed = bench.integrator.wait_for(7, key=key)

        assert list(failed.body) == [
            f for f in FORCESAVED_BY_COMMAND if f != "userdata"
        ]
        assert_cache_link(bench, failed.body["url"], key, "output.docx")
        assert_signed_as_sent(failed)


# §1.1 and §3.2: how a callback travels


class TestCallbackTransport:
    def test_a_callback_is_a_json_post_to_the_exact_callback_url(
        self, bench: Bench
    ) -> None:
        key = new_key()
        callback = f"{bench.integrator.url}/callback?user=ann&fileId=42&t=a%2Fb"

        bench.open(key, "ann", callback=callback)
        connected = bench.integrator.wait_for(1, key=key)

        assert connected.path == "/callback"
        assert connected.query == {"user": "ann", "fileId": "42", "t": "a/b"}
        assert connected.headers["content-type"].startswith("application/json")
        assert json.loads(connected.raw.decode("utf-8")) == connected.body

    def test_a_callback_carries_the_ds_request_default_headers(
        self, bench: Bench
    ) -> None:
        """§1.1: requestDefaults: User-Agent Node.js/6.13, Connection Keep-Alive."""
        key = new_key()

        bench.open(key, "ann")
        connected = bench.integrator.wait_for(1, key=key)

        assert connected.headers["user-agent"] == "Node.js/6.13"
        assert connected.headers["connection"].lower() == "keep-alive"

    def test_the_header_token_wraps_the_fields_and_the_body_token_is_flat(
        self, bench: Bench
    ) -> None:
        key = new_key()

        edited_and_closed(bench, key)
        saved = bench.integrator.wait_for(2, key=key)

        assert saved.header_token is not None
        assert jwt.get_unverified_header(saved.header_token)["alg"] == "HS256"
        assert saved.header_claims is not None
        assert saved.header_claims["payload"]["key"] == key
        assert saved.body_claims is not None
        assert "payload" not in saved.body_claims
        assert saved.body_claims["url"] == saved.body["url"]
        assert_signed_as_sent(saved)


# §9.1-5: sessions and callback timing


class TestSessionTiming:
    def test_status_2_comes_only_after_the_save_delay(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        """§9.1: the last editor leaves, the DS waits, then posts status 2."""
        bench = make_bench(save_delay=0.4)
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Hello")

        left = time.monotonic()
        bench.control.close(ann)
        saved = bench.integrator.wait_for(2, key=key, answered=False)

        assert saved.received - left >= 0.4

    def test_an_editor_rejoining_during_the_save_delay_cancels_the_save(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        """§9.2: no status 2, and the session goes on with its changes."""
        bench = make_bench(save_delay=0.3)
        key = new_key()
        edited_and_closed(bench, key, "Kept")

        back = bench.open(key, "ann")

        assert no_callback(bench, 2, key, within=0.6)
        state = bench.control.state(back)
        assert state["state"] == "open"
        assert state["changes"] == 1
        bench.control.close(back)
        saved = bench.integrator.wait_for(2, key=key)
        assert "Kept" in document_text("docx", bench.fetch(saved.body["url"]))

    def test_a_viewer_joining_during_the_save_delay_does_not_cancel_the_save(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        """§9.2/§9.3: only editors count; a viewer cannot hold a save back."""
        bench = make_bench(save_delay=0.4)
        key = new_key()
        edited_and_closed(bench, key, "Saved anyway")

        bench.open(key, "cyd", mode="view")
        saved = bench.integrator.wait_for(2, key=key, timeout=1.0)

        assert saved.body["users"] == ["ann"]

    def test_viewers_cause_no_callbacks_and_never_appear_in_users(
        self, bench: Bench
    ) -> None:
        """§9.3."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.integrator.wait_for(1, key=key)

        viewer = bench.open(key, "cyd", mode="view")
        info = bench.command("info", key=key)
        bench.control.close(viewer)
        bench.control.close(ann)
        bench.integrator.wait_for(4, key=key)

        assert info["users"] == ["ann"]
        received = bench.integrator.received(key=key)
        assert [c.status for c in received] == [1, 1, 4]
        assert all(c.user == "ann" for c in received)
        assert "cyd" not in json.dumps([c.body for c in received])

    def test_a_page_config_in_view_mode_opens_a_viewer_when_the_token_omits_mode(
        self, bench: Bench
    ) -> None:
        """§3.5: the token overrides only what it holds; mode is not required."""
        key = new_key()
        page = unsigned_config(bench, key, "cyd", mode="view")
        claims = without(page, "editorConfig", "mode")

        viewer = bench.control.open(with_token(page, claims=claims))

        assert bench.control.state(viewer)["mode"] == "view"
        assert no_callback(bench, 1, key, within=0.3)

    def test_two_tabs_of_one_user_appear_once_in_users(self, bench: Bench) -> None:
        """§9.3: users is de-duplicated by user.id."""
        key = new_key()
        bench.open(key, "ann")
        bench.integrator.wait_for(1, key=key)

        second_tab = bench.open(key, "ann")
        joined = bench.integrator.wait_for(1, key=key, count=2)
        bench.control.close(second_tab)
        left = bench.integrator.wait_for(1, key=key, count=3)

        assert joined.body["users"] == ["ann"]
        assert left.body["users"] == ["ann"]
        assert left.body["actions"] == [{"type": 0, "userid": "ann"}]

    def test_the_editor_opens_without_waiting_for_the_connect_callback(
        self, bench: Bench
    ) -> None:
        """§9.4: status 1 on connect is fire-and-forget."""
        key = new_key()
        bench.integrator.reply(Reply(stall=1.0), key=key, status=1)

        ann = bench.open(key, "ann")
        opened = time.monotonic()
        bench.control.edit(ann, "Typing while the callback hangs")

        connected = bench.integrator.wait_for(1, key=key, answered=False)
        assert connected.answered is None or connected.answered > opened

    def test_a_refused_connect_callback_only_warns_the_editor(
        self, bench: Bench
    ) -> None:
        """§9.4 and §2.2: a non-zero reply to status 1 raises a warning."""
        key = new_key()
        bench.integrator.reply(reply_json({"error": 1}), key=key, status=1)

        ann = bench.open(key, "ann")
        bench.integrator.wait_until(lambda: bench.messages(ann) != [])

        assert {"warning": "Error on save server subscription!"} in bench.messages(ann)
        assert bench.control.state(ann)["state"] == "open"
        bench.control.edit(ann, "Still editing")

    def test_a_reconnecting_editor_gets_status_1_again(self, bench: Bench) -> None:
        """§9.5: after 1-out, a reconnect posts 1 with action type 1 again."""
        key = new_key()
        bench.open(key, "ann")
        bob = bench.open(key, "bob")
        bench.integrator.wait_for(1, key=key, count=2)
        bench.control.close(bob)
        bench.integrator.wait_for(1, key=key, count=3)

        bench.open(key, "bob")
        back = bench.integrator.wait_for(1, key=key, count=4)

        assert back.body["actions"] == [{"type": 1, "userid": "bob"}]
        assert sorted(back.body["users"]) == ["ann", "bob"]

    def test_a_lone_editor_reconnecting_after_status_4_gets_status_1(
        self, bench: Bench
    ) -> None:
        """§9.5: after a drop, 4, then 1 again on reconnect."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.close(ann)
        bench.integrator.wait_for(4, key=key)

        bench.open(key, "ann")
        back = bench.integrator.wait_for(1, key=key, count=2)

        assert back.body["actions"] == [{"type": 1, "userid": "ann"}]
        assert back.body["users"] == ["ann"]


# §9.6-8: field semantics


class TestFieldSemantics:
    def test_the_last_of_two_editors_leaving_unchanged_gets_status_4(
        self, bench: Bench
    ) -> None:
        """§9.6: actions names the last leaver; users is absent."""
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")
        bench.control.close(ann)

        bench.control.close(bob)
        closed = bench.integrator.wait_for(4, key=key)

        assert "users" not in closed.body
        assert closed.body["actions"] == [{"type": 0, "userid": "bob"}]

    def test_status_2_users_names_the_author_and_actions_the_last_leaver(
        self, bench: Bench
    ) -> None:
        """§9.7."""
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")
        bench.control.edit(ann, "Only Ann writes")
        bench.control.close(ann)

        bench.control.close(bob)
        saved = bench.integrator.wait_for(2, key=key)

        assert saved.body["users"] == ["ann"]
        assert saved.body["actions"] == [{"type": 0, "userid": "bob"}]

    def test_status_2_after_an_accepted_force_save_is_notmodified(
        self, bench: Bench
    ) -> None:
        """§9.8: the same state as the status 6 that was already stored."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Stored once")
        bench.command("forcesave", key=key)
        forced = bench.integrator.wait_for(6, key=key)
        bench.wait_logged(6, key)

        bench.control.close(ann)
        saved = bench.integrator.wait_for(2, key=key)

        assert saved.body["notmodified"] is True
        assert_lastsave(saved.body["lastsave"])
        assert bench.fetch(saved.body["url"]) == bench.fetch(forced.body["url"])

    def test_status_2_after_edits_past_a_force_save_is_modified(
        self, bench: Bench
    ) -> None:
        """§9.8."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Before")
        bench.command("forcesave", key=key)
        bench.integrator.wait_for(6, key=key)
        bench.control.edit(ann, "After")

        bench.control.close(ann)
        saved = bench.integrator.wait_for(2, key=key)

        assert saved.body["notmodified"] is False

    def test_status_2_after_a_refused_force_save_is_modified(
        self, bench: Bench
    ) -> None:
        """§2.2: a failed 6 is not marked ended, so the next 2 is not notmodified."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Refused")
        bench.integrator.reply(reply_json({"error": 1}), key=key, status=6)
        bench.command("forcesave", key=key)
        bench.integrator.wait_for(6, key=key)

        bench.control.close(ann)
        saved = bench.integrator.wait_for(2, key=key)

        assert saved.body["notmodified"] is False

    def test_a_force_save_after_a_refused_one_is_sent_again(self, bench: Bench) -> None:
        """§2.2: a later force-save re-sends the result the first one lost."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Second chance")
        bench.integrator.reply(reply_json({"error": 1}), key=key, status=6)
        bench.command("forcesave", key=key)
        first = bench.integrator.wait_for(6, key=key)
        bench.wait_logged(6, key)

        answer = bench.command("forcesave", key=key)
        again = bench.integrator.wait_for(6, key=key, count=2)

        assert answer == {"key": key, "error": 0}
        assert bench.fetch(again.body["url"]) == bench.fetch(first.body["url"])

    @pytest.mark.parametrize(
        "fault", [None, "drop", "reject"], ids=["refused", "dropped", "502"]
    )
    def test_the_resent_force_save_is_the_cached_result_with_its_userdata(
        self, bench: Bench, fault: str | None
    ) -> None:
        """§2.2: the cached result, so the first userdata and lastsave (§1.3).

        srv: applyForceSaveCache re-sends the cached command, whose userdata
        is the first one's, with fresh links and ``encrypted:false``.
        """
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Cached")
        if fault is None:
            bench.integrator.reply(reply_json({"error": 1}), key=key, status=6)
        else:
            bench.control.faults(callback=fault)
        bench.command("forcesave", key=key, userdata="first")
        bench.wait_logged(6, key)
        first = attempts_logged(bench, key, 6)[0]

        answer = bench.command("forcesave", key=key, userdata="second")
        # A lost callback never reached the integrator.
        again = bench.integrator.wait_for(6, key=key, count=1 if fault else 2)

        assert answer == {"key": key, "error": 0}
        assert first.success is False
        assert again.body["userdata"] == "first"
        assert again.body["lastsave"] == first.body["lastsave"]
        assert again.body["encrypted"] is False
        assert again.body["forcesavetype"] == 0
        assert again.body["url"] != first.body["url"]
        assert bench.fetch(again.body["url"]) == bench.fetch(first.body["url"])
        assert_signed_as_sent(again)

    def test_a_force_save_after_edits_past_a_refused_one_starts_afresh(
        self, bench: Bench
    ) -> None:
        """§2.2: a new change ends the cache; the new force save is its own."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Before")
        bench.integrator.reply(reply_json({"error": 1}), key=key, status=6)
        bench.command("forcesave", key=key, userdata="first")
        bench.wait_logged(6, key)
        bench.control.edit(ann, "After")

        answer = bench.command("forcesave", key=key, userdata="second")
        again = bench.integrator.wait_for(6, key=key, count=2)

        assert answer == {"key": key, "error": 0}
        assert again.body["userdata"] == "second"
        assert "encrypted" not in again.body
        assert "After" in document_text("docx", bench.fetch(again.body["url"]))

    def test_a_resent_force_save_once_accepted_ends_it(self, bench: Bench) -> None:
        """§2.2, §4: accepted at last, the force save is ended; §9.8 then holds."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "At last")
        bench.control.faults(callback="drop")
        bench.command("forcesave", key=key)
        bench.wait_logged(6, key)
        bench.command("forcesave", key=key)
        bench.wait_logged(6, key, count=2)

        answer = bench.command("forcesave", key=key)
        bench.control.close(ann)
        saved = bench.integrator.wait_for(2, key=key)

        assert answer == {"key": key, "error": 4}
        assert saved.body["notmodified"] is True

    def test_a_force_save_while_one_is_being_answered_answers_4(
        self, bench: Bench
    ) -> None:
        """§4 error 4, and no second callback for the same changes.

        The notes do not say it; srv: applyForceSaveCache finds the force
        save started, neither ended nor cached, and answers NotModified.
        """
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Running")
        bench.integrator.reply(Reply(stall=0.6), key=key, status=6)
        bench.command("forcesave", key=key)
        bench.integrator.wait_for(6, key=key, answered=False)

        answer = bench.command("forcesave", key=key)

        assert answer == {"key": key, "error": 4}
        bench.wait_logged(6, key)
        assert no_callback(bench, 6, key, within=0.3, count=2)


# §9.9-11: answers, retries, forgotten files


class TestResponseHandling:
    @pytest.mark.parametrize(
        "failure",
        [
            pytest.param(reply_json({"error": 1}, 500), id="http-500"),
            pytest.param(reply_json({"error": 1}, 503), id="http-503"),
            pytest.param(Reply(429, b"slow down", media_type="text/plain"), id="429"),
        ],
    )
    def test_status_2_is_retried_after_a_retryable_http_status(
        self, bench: Bench, failure: Reply
    ) -> None:
        """§9.9: 429 and 5xx are retried; the next success ends it."""
        key = new_key()
        bench.integrator.reply(failure, failure, OK, key=key, status=2)

        edited_and_closed(bench, key)
        bench.wait_logged(2, key, count=3)

        assert len(attempts_logged(bench, key, 2)) == 3
        assert key not in bench.forgotten_keys()

    def test_status_2_gets_four_attempts_spaced_by_the_retry_delays(
        self, bench: Bench
    ) -> None:
        """§2.2: at most 4 POSTs, after 1 s, 2 s, 4 s (shrunk here)."""
        key = new_key()
        bench.integrator.reply(*[reply_json({"error": 1}, 500)] * 5, key=key, status=2)

        edited_and_closed(bench, key)
        bench.wait_until_forgotten(key)

        attempts = bench.integrator.received(2, key=key)
        assert len(attempts) == 4
        # From the moment an answer left to the next attempt's arrival.
        gaps = [b.received - (a.answered or 0) for a, b in itertools.pairwise(attempts)]
        for gap, delay in zip(gaps, RETRY_DELAYS, strict=True):
            assert delay - 0.02 <= gap < delay + 1.0

    def test_every_attempt_has_fresh_links_and_tokens_but_the_same_key_and_status(
        self, bench: Bench
    ) -> None:
        """§2.2: each attempt regenerates url, changesurl and both JWTs."""
        key = new_key()
        bench.integrator.reply(*[reply_json({"error": 1}, 500)] * 2, key=key, status=2)

        edited_and_closed(bench, key)
        attempts = [bench.integrator.wait_for(2, key=key, count=n) for n in (1, 2, 3)]

        assert {(a.key, a.status) for a in attempts} == {(key, 2)}
        assert len({a.body["lastsave"] for a in attempts}) == 1
        for name in ("url", "changesurl", "token"):
            assert len({a.body[name] for a in attempts}) == 3
        assert len({a.header_token for a in attempts}) == 3
        md5s = {dict(parse_qsl(urlsplit(a.body["url"]).query))["md5"] for a in attempts}
        assert len(md5s) == 3
        files = {bench.fetch(a.body["url"]) for a in attempts}
        assert len(files) == 1
        for attempt in attempts:
            assert_signed_as_sent(attempt)

    def test_status_2_is_retried_after_a_refused_connection(self, bench: Bench) -> None:
        """§2.2: a network error is retried, 4 attempts in all."""
        key = new_key()

        edited_and_closed_with(bench, key, closed_port_url())
        bench.wait_logged(2, key, count=4)

        attempts = attempts_logged(bench, key, 2)
        assert [a.attempt for a in attempts] == [1, 2, 3, 4]
        assert {a.http_status for a in attempts} == {None}
        assert key in bench.forgotten_keys()

    def test_status_2_is_retried_after_the_callback_timeout(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        """§2.2: no answer within the timeout counts as a network error."""
        bench = make_bench(callback_timeout=0.3)
        key = new_key()
        bench.integrator.reply(Reply(stall=0.6), OK, key=key, status=2)

        edited_and_closed(bench, key)
        second = bench.integrator.wait_for(2, key=key, count=2)
        bench.wait_logged(2, key, count=2)

        assert second.reply == OK
        assert key not in bench.forgotten_keys()

    def test_status_3_is_retried_like_status_2(self, bench: Bench) -> None:
        """§2.2: retries apply to 2 and 3."""
        key = new_key()
        bench.control.faults(assembly="fail")
        bench.integrator.reply(reply_json({"error": 1}, 500), OK, key=key, status=3)

        edited_and_closed(bench, key)
        bench.wait_logged(3, key, count=2)

        assert len(attempts_logged(bench, key, 3)) == 2

    @pytest.mark.parametrize(
        "failure",
        [
            pytest.param(reply_json({"error": 1}), id="error-1"),
            pytest.param(reply_json({"error": "1"}), id="error-string-1"),
            pytest.param(reply_json({}), id="no-error-field"),
            pytest.param(reply_json({"error": None}), id="error-null"),
            pytest.param(Reply(200, b""), id="empty-body"),
            pytest.param(Reply(200, b"OK", media_type="text/plain"), id="not-json"),
            pytest.param(reply_json({"error": 0}, 201), id="http-201"),
            pytest.param(Reply(204, b""), id="http-204"),
            pytest.param(reply_json({"error": 0}, 404), id="http-404"),
            pytest.param(reply_json({"error": 0}, 403), id="http-403"),
        ],
    )
    def test_status_2_fails_without_retry_on_a_final_refusal(
        self, bench: Bench, failure: Reply
    ) -> None:
        """§9.9: these fail at once; the file becomes forgotten (§2.3)."""
        key = new_key()
        bench.integrator.reply(failure, OK, key=key, status=2)

        edited_and_closed(bench, key)
        bench.wait_until_forgotten(key)

        assert len(bench.integrator.received(2, key=key)) == 1
        assert [a.success for a in attempts_logged(bench, key, 2)] == [False]

    @pytest.mark.parametrize(
        "answer",
        [
            pytest.param(reply_json({"error": 0}), id="error-0"),
            pytest.param(reply_json({"error": "0"}), id="error-string-0"),
            pytest.param(
                Reply(200, b'{"error":0}', media_type="text/plain"), id="text-plain"
            ),
            pytest.param(
                reply_json({"error": 0, "extra": "ignored"}), id="extra-fields"
            ),
            pytest.param(Reply(200, b'{"error":0.0}'), id="zero-float"),
            pytest.param(Reply(200, b'{"error":false}'), id="false"),
            pytest.param(Reply(200, b'{"error":""}'), id="empty-string"),
        ],
    )
    def test_status_2_succeeds_on_http_200_with_error_loosely_0(
        self, bench: Bench, answer: Reply
    ) -> None:
        """§2.1: ``error`` == 0 as JavaScript compares, whatever the Content-Type.

        Success, so the key is saved: reopening it is refused (§9.12).
        """
        key = new_key()
        bench.integrator.reply(answer, key=key, status=2)

        edited_and_closed(bench, key)
        bench.wait_logged(2, key)

        assert [a.success for a in attempts_logged(bench, key, 2)] == [True]
        assert key not in bench.forgotten_keys()
        refused = bench.try_open(bench.config(key, "ann"))
        assert refused.json()["ds_code"] == 4008

    def test_status_1_is_not_retried(self, bench: Bench) -> None:
        """§9.9: no retries for 1/4/6/7; the editor is warned instead."""
        key = new_key()
        bench.integrator.reply(reply_json({"error": 1}, 500), key=key, status=1)

        ann = bench.open(key, "ann")
        bench.integrator.wait_until(lambda: bench.messages(ann) != [])

        assert len(bench.integrator.received(1, key=key)) == 1

    def test_status_4_is_not_retried(self, bench: Bench) -> None:
        """§9.9."""
        key = new_key()
        bench.integrator.reply(reply_json({"error": 1}, 500), key=key, status=4)
        ann = bench.open(key, "ann")

        bench.control.close(ann)
        bench.integrator.wait_until(lambda: bench.messages(ann) != [])

        assert len(bench.integrator.received(4, key=key)) == 1

    @pytest.mark.parametrize("fault", [None, "fail"], ids=["status-6", "status-7"])
    def test_force_save_results_are_not_retried(
        self, bench: Bench, fault: str | None
    ) -> None:
        """§9.9: a 6 or 7 answered 500 is posted once."""
        key = new_key()
        status = 7 if fault else 6
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Once")
        if fault:
            bench.control.faults(assembly=fault)
        bench.integrator.reply(
            reply_json({"error": 1}, 500), OK, key=key, status=status
        )

        bench.command("forcesave", key=key)
        bench.integrator.wait_for(status, key=key)

        assert no_callback_after_first(bench, status, key)

    def test_the_same_status_2_may_arrive_again_after_a_retry(
        self, bench: Bench
    ) -> None:
        """§9.11: an integrator must take the repeat as the same save."""
        key = new_key()
        bench.integrator.reply(reply_json({"error": 1}, 502), OK, key=key, status=2)

        edited_and_closed(bench, key, "Twice delivered")
        first = bench.integrator.wait_for(2, key=key)
        again = bench.integrator.wait_for(2, key=key, count=2)

        assert again.body["lastsave"] == first.body["lastsave"]
        assert again.body["history"] == first.body["history"]
        assert bench.fetch(again.body["url"]) == bench.fetch(first.body["url"])


def edited_and_closed_with(bench: Bench, key: str, callback: str) -> None:
    session = bench.open(key, "ann", callback=callback)
    bench.control.edit(session, "Hello")
    bench.control.close(session)


def no_callback_after_first(bench: Bench, status: int, key: str) -> bool:
    """Wait out every retry delay, then check that one attempt was all."""
    time.sleep(AFTER_RETRIES)
    return len(bench.integrator.received(status, key=key)) == 1


# §9.10 and §2.3: forgotten files


class TestForgottenFiles:
    def test_an_undelivered_save_becomes_forgotten_and_the_next_close_resends_it(
        self, bench: Bench
    ) -> None:
        """§9.10, step by step."""
        key = new_key()
        bench.integrator.reply(reply_json({"error": 1}), key=key, status=2)
        edited_and_closed(bench, key, "Lost line")
        bench.wait_until_forgotten(key)

        listing = bench.command("getForgottenList")
        link = bench.command("getForgotten", key=key)
        reopened = bench.open(key, "ann")
        state = bench.control.state(reopened)
        bench.control.close(reopened)
        resent = bench.integrator.wait_for(2, key=key, count=2)
        bench.wait_logged(2, key, count=2)

        assert set(listing) == {"error", "keys"}
        assert listing["error"] == 0
        assert key in listing["keys"]
        assert set(link) == {"key", "error", "url"}
        assert link["error"] == 0
        forgotten = assert_cache_link(bench, link["url"], key, "output.docx")
        assert "Lost line" in document_text("docx", forgotten)
        assert {"warning": -201} in state["messages"]
        assert len(bench.downloads(key)) == 1
        assert "changesurl" not in resent.body
        assert resent.body["history"] == {}
        assert resent.body["users"] == ["ann"]
        assert "Lost line" in document_text("docx", bench.fetch(resent.body["url"]))
        assert key not in bench.forgotten_keys()
        assert bench.command("getForgotten", key=key) == {"key": key, "error": 1}

    def test_a_save_whose_retries_run_out_becomes_forgotten(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        """§2.3.1: after the retries are used up."""
        bench = make_bench(retry_delays=(0.01, 0.01, 0.01))
        key = new_key()
        bench.integrator.reply(*[reply_json({"error": 1}, 500)] * 4, key=key, status=2)

        edited_and_closed(bench, key)
        bench.wait_until_forgotten(key)

        assert len(bench.integrator.received(2, key=key)) == 4

    def test_a_save_without_a_callback_url_becomes_forgotten(
        self, bench: Bench
    ) -> None:
        """§2.3.5."""
        key = new_key()

        edited_and_closed_with(bench, key, callback=None)  # type: ignore[arg-type]
        bench.wait_until_forgotten(key)

        assert bench.integrator.received(key=key) == []

    def test_a_session_from_a_forgotten_file_never_sends_changesurl(
        self, bench: Bench
    ) -> None:
        """§1.3 and §9.18: not even with new edits, in status 6 as in 2."""
        key = new_key()
        bench.integrator.reply(reply_json({"error": 1}), key=key, status=2)
        edited_and_closed(bench, key, "Lost line")
        bench.wait_until_forgotten(key)
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "New line")

        bench.command("forcesave", key=key)
        forced = bench.integrator.wait_for(6, key=key)
        bench.control.close(ann)
        saved = bench.integrator.wait_for(2, key=key, count=2)

        for callback in (forced, saved):
            assert "changesurl" not in callback.body
            assert callback.body["history"] == {}
        text = document_text("docx", bench.fetch(saved.body["url"]))
        assert "Lost line" in text
        assert "New line" in text

    def test_delete_forgotten_removes_the_file(self, bench: Bench) -> None:
        """§4 deleteForgotten; then the key opens document.url afresh."""
        key = new_key()
        bench.integrator.reply(reply_json({"error": 1}), key=key, status=2)
        edited_and_closed(bench, key, "Thrown away")
        bench.wait_until_forgotten(key)

        deleted = bench.command("deleteForgotten", key=key)
        again = bench.command("deleteForgotten", key=key)
        reopened = bench.open(key, "ann")

        assert deleted == {"key": key, "error": 0}
        assert again == {"key": key, "error": 1}
        assert key not in bench.forgotten_keys()
        assert bench.command("getForgotten", key=key) == {"key": key, "error": 1}
        assert len(bench.downloads(key)) == 2
        assert bench.messages(reopened) == []

    def test_a_forgotten_save_wipes_the_sessions_cache_files(
        self, bench: Bench
    ) -> None:
        """§2.3.2 and §9.10: the cache files of the key are deleted."""
        key = new_key()
        bench.integrator.reply(reply_json({"error": 1}), key=key, status=2)
        edited_and_closed(bench, key)
        failed = bench.integrator.wait_for(2, key=key)
        bench.wait_until_forgotten(key)

        response = bench.http.get(failed.body["url"])

        assert response.status_code == 404


# §9.12-14: keys and callback URLs


class TestKeys:
    def test_reopening_a_saved_key_within_the_window_is_refused_with_4008(
        self, bench: Bench
    ) -> None:
        """§9.12: the version has changed; the integrator must issue a new key."""
        key = new_key()
        edited_and_closed(bench, key)
        bench.wait_logged(2, key)

        refused = bench.try_open(bench.config(key, "bob"))

        assert refused.status_code == 403
        assert refused.json()["ds_code"] == 4008

    def test_reopening_a_saved_key_after_the_window_downloads_the_document_again(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        """§9.12: a new session under the old key, with new callbacks."""
        bench = make_bench(update_version_window=0.3)
        key = new_key()
        edited_and_closed(bench, key)
        bench.wait_logged(2, key)

        bench.integrator.wait_until(
            lambda: bench.try_open(bench.config(key, "ann")).status_code == 201
        )
        back = bench.integrator.wait_for(1, key=key, count=2)

        assert len(bench.downloads(key)) == 2
        assert back.body["actions"] == [{"type": 1, "userid": "ann"}]

    def test_reopening_a_key_closed_unchanged_serves_the_cached_copy(
        self, bench: Bench
    ) -> None:
        """§9.12: after status 4 the same key is not downloaded again."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.close(ann)
        bench.integrator.wait_for(4, key=key)

        bench.open(key, "ann")

        assert bench.integrator.wait_for(1, key=key, count=2).body["users"] == ["ann"]
        assert len(bench.downloads(key)) == 1

    def test_a_new_key_for_an_open_document_splits_the_sessions(
        self, bench: Bench
    ) -> None:
        """§9.13: the old key's callbacks, its status 2 too, still arrive."""
        old, new = new_key(), new_key()
        bench.documents[new] = bench.document(old)
        ann = bench.open(old, "ann")
        bench.control.edit(ann, "Under the old key")

        bob = bench.open(new, "bob")
        joined = bench.integrator.wait_for(1, key=new)
        bench.control.close(ann)
        old_saved = bench.integrator.wait_for(2, key=old)
        bench.control.close(bob)
        new_closed = bench.integrator.wait_for(4, key=new)

        assert joined.body["users"] == ["bob"]
        assert old_saved.body["users"] == ["ann"]
        saved_text = document_text("docx", bench.fetch(old_saved.body["url"]))
        assert "Under the old key" in saved_text
        assert new_closed.body["actions"] == [{"type": 0, "userid": "bob"}]


class TestCallbackUrls:
    """§9.14 and §1.5: each user's own callbackUrl, chosen per status."""

    def test_connect_goes_to_the_connecting_users_url(self, bench: Bench) -> None:
        key = new_key()
        bench.open(key, "ann")
        bench.integrator.wait_for(1, key=key)

        bench.open(key, "bob")

        assert bench.integrator.wait_for(1, key=key, count=2).user == "bob"

    def test_disconnect_goes_to_the_leavers_url(self, bench: Bench) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bench.open(key, "bob")
        bench.integrator.wait_for(1, key=key, count=2)

        bench.control.close(ann)

        assert bench.integrator.wait_for(1, key=key, count=3).user == "ann"

    def test_status_4_goes_to_the_leavers_url_not_the_last_stored_one(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")
        bench.control.close(bob)

        bench.control.close(ann)

        assert bench.integrator.wait_for(4, key=key).user == "ann"

    def test_status_2_goes_to_the_last_authors_url_not_the_leavers(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")
        bench.control.edit(bob, "Bob first")
        bench.control.edit(ann, "Ann last")
        bench.control.close(ann)

        bench.control.close(bob)

        assert bench.integrator.wait_for(2, key=key).user == "ann"

    def test_button_force_save_goes_to_the_clickers_url(self, bench: Bench) -> None:
        key = new_key()
        ann = bench.open(key, "ann", forcesave=True)
        bob = bench.open(key, "bob", forcesave=True)
        bench.control.edit(ann, "Ann writes")

        bench.control.save(bob)

        assert bench.integrator.wait_for(6, key=key).user == "bob"

    def test_command_force_save_goes_to_the_last_authors_url(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")
        bench.control.edit(ann, "Ann first")
        bench.control.edit(bob, "Bob last")

        bench.command("forcesave", key=key)

        assert bench.integrator.wait_for(6, key=key).user == "bob"

    def test_info_goes_to_the_callback_it_names(self, bench: Bench) -> None:
        key = new_key()
        bench.open(key, "ann")
        bench.integrator.wait_for(1, key=key)

        bench.command("info", key=key, callback=bench.integrator.callback_url("cmd"))

        assert bench.integrator.wait_for(1, key=key, count=2).user == "cmd"

    def test_info_without_a_callback_goes_to_the_last_stored_url(
        self, bench: Bench
    ) -> None:
        key = new_key()
        bench.open(key, "ann")
        bench.open(key, "bob")
        bench.integrator.wait_for(1, key=key, count=2)

        bench.command("info", key=key)

        assert bench.integrator.wait_for(1, key=key, count=3).user == "bob"

    def test_form_submit_goes_to_the_submitters_url(self, bench: Bench) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")
        bench.control.edit(ann, "Ann writes")

        bench.control.submit(bob, {"Name": "Bob"})

        assert bench.integrator.wait_for(6, key=key).user == "bob"

    def test_timer_force_save_goes_to_the_last_authors_url(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        bench = make_bench(forcesave_interval=0.3)
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")

        bench.control.edit(ann, "Ann first")
        bench.control.edit(bob, "Bob last")

        forced = bench.integrator.wait_for(6, key=key)
        assert forced.body["forcesavetype"] == 2
        assert forced.user == "bob"


# §9.15-16: command timing and force-save refusals


class TestCommandTiming:
    def test_info_answers_only_after_its_callback_was_answered(
        self, bench: Bench
    ) -> None:
        """§9.15."""
        key = new_key()
        bench.open(key, "ann")
        bench.integrator.wait_for(1, key=key)
        bench.integrator.reply(Reply(stall=0.5), key=key, status=1)

        asked = time.monotonic()
        bench.command("info", key=key)
        answered = time.monotonic()

        info = bench.integrator.wait_for(1, key=key, count=2)
        assert info.answered is not None
        assert asked < info.received < info.answered <= answered
        assert answered - asked >= 0.5

    def test_forcesave_answers_before_its_callback_is_answered(
        self, bench: Bench
    ) -> None:
        """§9.15: the answer comes once the job is queued."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Queued")
        bench.integrator.reply(Reply(stall=1.0), key=key, status=6)

        answer = bench.command("forcesave", key=key)
        answered = time.monotonic()

        assert answer == {"key": key, "error": 0}
        forced = bench.integrator.wait_for(6, key=key, answered=False)
        assert forced.answered is None or forced.answered > answered

    def test_forcesave_without_changes_answers_4_and_posts_nothing(
        self, bench: Bench
    ) -> None:
        """§9.16."""
        key = new_key()
        bench.open(key, "ann")

        answer = bench.command("forcesave", key=key)

        assert answer == {"key": key, "error": 4}
        assert no_callback(bench, 6, key, within=0.3)

    def test_forcesave_with_nothing_new_since_the_last_one_answers_4(
        self, bench: Bench
    ) -> None:
        """§4: no changes since the last successful force-save."""
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Once")
        bench.command("forcesave", key=key)
        bench.wait_logged(6, key)

        answer = bench.command("forcesave", key=key)

        assert answer == {"key": key, "error": 4}
        assert no_callback(bench, 6, key, within=0.3, count=2)

    def test_the_save_button_without_changes_starts_no_force_save(
        self, bench: Bench
    ) -> None:
        """§7: the button only triggers when there are changes."""
        key = new_key()
        ann = bench.open(key, "ann", forcesave=True)

        started = bench.control.save(ann)

        assert started is False
        assert no_callback(bench, 6, key, within=0.3)

    def test_the_save_button_without_customization_forcesave_does_nothing(
        self, bench: Bench
    ) -> None:
        """§7: type 1 needs editorConfig.customization.forcesave."""
        key = new_key()
        ann = bench.open(key, "ann", forcesave=False)
        bench.control.edit(ann, "Unsaved")

        started = bench.control.save(ann)

        assert started is False
        assert no_callback(bench, 6, key, within=0.3)

    def test_forcesave_during_the_final_save_is_refused_and_posts_nothing(
        self, bench: Bench
    ) -> None:
        """§9.16 and §7: no 6 once the final save has started."""
        key = new_key()
        bench.integrator.reply(Reply(stall=0.6), key=key, status=2)
        edited_and_closed(bench, key)
        bench.integrator.wait_for(2, key=key, answered=False)

        answer = bench.command("forcesave", key=key)

        assert answer == {"key": key, "error": 3}
        assert no_callback(bench, 6, key, within=0.8)


# §9.18: the 7168-character header


class TestHeaderSize:
    def test_a_huge_history_leaves_the_plain_body_and_header_but_not_the_body_token(
        self, bench: Bench
    ) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")
        for n in range(200):
            bench.control.edit(ann if n % 2 == 0 else bob, f"Edit {n}")
        bench.control.close(bob)

        bench.control.close(ann)
        saved = bench.integrator.wait_for(2, key=key)

        assert saved.problems == []
        assert list(saved.body) == [f for f in SAVED if f != "changesurl"]
        assert saved.body["history"] == {}
        assert saved.body_claims is not None
        assert len(saved.body_claims["history"]["changes"]) == 200
        assert "changesurl" in saved.body_claims
        assert_cache_link(bench, saved.body_claims["changesurl"], key, "changes.zip")
        assert saved.header_token is not None
        assert len(saved.header_token) < MAX_HEADER_TOKEN
        assert len(saved.header_token) < len(saved.body["token"])
        assert saved.header_claims is not None
        assert saved.header_claims["payload"] == plain_fields(saved)


# §9.19: link lifetime


class TestLinks:
    def test_a_link_with_a_tampered_md5_is_forbidden(self, bench: Bench) -> None:
        key = new_key()
        edited_and_closed(bench, key)
        url = bench.integrator.wait_for(2, key=key).body["url"]
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query["md5"] = query["md5"][::-1]

        response = bench.http.get(parts._replace(query=urlencode(query)).geturl())

        assert response.status_code == 403

    def test_a_link_with_a_pushed_back_expiry_is_forbidden(self, bench: Bench) -> None:
        key = new_key()
        edited_and_closed(bench, key)
        url = bench.integrator.wait_for(2, key=key).body["url"]
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query["expires"] = str(int(query["expires"]) + 3600)

        response = bench.http.get(parts._replace(query=urlencode(query)).geturl())

        assert response.status_code == 403

    def test_an_expired_link_is_gone(self, make_bench: Callable[..., Bench]) -> None:
        bench = make_bench(link_lifetime=0.2)
        key = new_key()
        edited_and_closed(bench, key)
        url = bench.integrator.wait_for(2, key=key).body["url"]
        expires = int(dict(parse_qsl(urlsplit(url).query))["expires"])
        bench.integrator.wait_until(lambda: time.time() > expires + 0.05)

        response = bench.http.get(url)

        assert response.status_code == 410


# §9.20 and §3.5: tokens


class TestTokens:
    def test_both_callback_tokens_expire_five_minutes_after_issue(
        self, bench: Bench
    ) -> None:
        key = new_key()
        before = int(time.time())

        bench.open(key, "ann")
        connected = bench.integrator.wait_for(1, key=key)

        for claims in (connected.header_claims, connected.body_claims):
            assert claims is not None
            assert before <= claims["iat"] <= time.time()
            assert claims["exp"] == claims["iat"] + TOKEN_LIFETIME

    @pytest.mark.parametrize(
        ("tamper", "ds_code"),
        [
            pytest.param(lambda c: c, 4006, id="missing-token"),
            pytest.param(
                lambda c: with_token(c, secret=OTHER_SECRET), 4006, id="wrong-secret"
            ),
            pytest.param(
                lambda c: with_token(c, claims={**c, "url": c["document"]["url"]}),
                4004,
                id="top-level-url",
            ),
            pytest.param(
                lambda c: with_token(c, claims={**c, "key": c["document"]["key"]}),
                4004,
                id="top-level-key",
            ),
            pytest.param(
                lambda c: with_token(c, claims={"payload": c}), 4004, id="wrapped"
            ),
            pytest.param(
                lambda c: with_token(c, claims=with_permissions(c, {"edit": False})),
                4004,
                id="other-permissions",
            ),
            pytest.param(
                lambda c: with_token(c, claims=without(c, "document", "key")),
                4006,
                id="no-document-key",
            ),
            pytest.param(
                lambda c: with_token(c, claims=without(c, "document", "url")),
                4006,
                id="no-document-url",
            ),
            pytest.param(
                lambda c: with_token(c, claims=without(c, "document", "permissions")),
                4006,
                id="no-permissions",
            ),
            pytest.param(
                lambda c: with_token(
                    c, claims=without(c, "editorConfig", "callbackUrl")
                ),
                4006,
                id="no-callback-url",
            ),
            pytest.param(
                lambda c: with_token(c, claims=without(c, "editorConfig", "mode")),
                4006,
                id="no-mode",
            ),
        ],
    )
    def test_the_config_token_check_refuses_the_editor(
        self,
        bench: Bench,
        tamper: Callable[[dict[str, Any]], dict[str, Any]],
        ds_code: int,
    ) -> None:
        """§3.5: 4004 access denied, 4006 token error; the editor never opens."""
        key = new_key()
        unsigned = unsigned_config(bench, key, "ann")

        refused = bench.try_open(tamper(unsigned))

        assert refused.status_code == 403
        assert refused.json()["ds_code"] == ds_code
        assert bench.command("info", key=key) == {"key": key, "error": 1}

    def test_a_configured_token_header_carries_every_token(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        """§3.1: JWT_HEADER names the header of callbacks, downloads, commands."""
        bench = make_bench(jwt_header="AuthorizationJwt")
        key = new_key()
        body = {"c": "version"}
        bearer = f"Bearer {tokens.sign_wrapped(body, SECRET)}"

        edited_and_closed(bench, key)
        saved = bench.integrator.wait_for(2, key=key)
        in_own = bench.http.post(
            f"{bench.url}/command", json=body, headers={"AuthorizationJwt": bearer}
        )
        in_default = bench.http.post(
            f"{bench.url}/command", json=body, headers={"Authorization": bearer}
        )

        assert saved.problems == []
        assert "authorization" not in saved.headers
        assert [d.problems for d in bench.downloads(key)] == [[]]
        assert in_own.json()["error"] == 0
        assert in_default.json() == {"error": 6}

    def test_a_config_token_expired_within_the_leeway_is_accepted(
        self, bench: Bench
    ) -> None:
        """§9.20: incoming tokens are verified with 60 s of leeway."""
        key = new_key()
        unsigned = unsigned_config(bench, key, "ann")
        now = int(time.time())
        claims = {**unsigned, "iat": now - 330, "exp": now - 30}

        opened = bench.try_open(with_token(unsigned, claims=claims))

        assert opened.status_code == 201

    def test_a_config_token_expired_beyond_the_leeway_is_refused(
        self, bench: Bench
    ) -> None:
        key = new_key()
        unsigned = unsigned_config(bench, key, "ann")
        now = int(time.time())
        claims = {**unsigned, "iat": now - 400, "exp": now - 100}

        refused = bench.try_open(with_token(unsigned, claims=claims))

        assert refused.status_code == 403

    def test_the_tokens_callback_url_overrides_the_page_configs(
        self, bench: Bench
    ) -> None:
        """§3.5: values from the token override the page config."""
        key = new_key()
        claims = unsigned_config(bench, key, "ann")
        page = json.loads(json.dumps(claims))
        page["editorConfig"]["callbackUrl"] = bench.integrator.callback_url("page")

        bench.control.open(with_token(page, claims=claims))

        assert bench.integrator.wait_for(1, key=key).user == "ann"

    def test_the_page_configs_user_stands_when_the_token_has_none(
        self, bench: Bench
    ) -> None:
        """§3.5: the token overrides only the values it carries."""
        key = new_key()
        page = unsigned_config(bench, key, "ann")
        claims = without(page, "editorConfig", "user")

        ann = bench.control.open(with_token(page, claims=claims))

        assert bench.control.state(ann)["user"]["id"] == "ann"


def unsigned_config(bench: Bench, key: str, user: str, **options: Any) -> Any:
    """A deep copy of the config without its token, to tamper with."""
    config = bench.config(key, user, **options)
    return json.loads(json.dumps({k: v for k, v in config.items() if k != "token"}))


def with_token(
    config: dict[str, Any],
    *,
    claims: dict[str, Any] | None = None,
    secret: str = SECRET,
) -> dict[str, Any]:
    """``config`` with a token of ``claims`` (default: itself) and ``secret``."""
    return {**config, "token": tokens.sign(claims or config, secret)}


def with_permissions(config: dict[str, Any], permissions: dict[str, Any]) -> Any:
    copy = json.loads(json.dumps(config))
    copy["document"]["permissions"] = permissions
    return copy


def without(config: dict[str, Any], part: str, name: str) -> Any:
    copy = json.loads(json.dumps(config))
    del copy[part][name]
    return copy


# §9.22 and §3.3: downloading document.url


class TestDocumentDownload:
    def test_the_download_carries_a_header_token_naming_the_exact_url(
        self, bench: Bench
    ) -> None:
        key = new_key()
        url, _ = bench.document(key)

        bench.open(key, "ann")

        [download] = bench.downloads(key)
        assert download.url == url
        assert download.problems == []
        assert without_times(download.claims) == {"payload": {"url": url}}
        assert download.claims is not None
        assert download.claims["exp"] - download.claims["iat"] == TOKEN_LIFETIME

    def test_a_failed_download_is_tried_again_after_the_attempt_delay(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        bench = make_bench(download_attempt_delay=0.2)
        key = new_key()
        bench.integrator.reply_to_downloads(
            bench.document(key)[0], FileReply(500), FileReply(503)
        )

        ann = bench.open(key, "ann")

        downloads = bench.downloads(key)
        assert [d.status_code for d in downloads] == [500, 503, 200]
        gaps = [b.received - a.received for a, b in itertools.pairwise(downloads)]
        assert all(0.2 <= gap < 1.5 for gap in gaps)
        assert bench.control.state(ann)["state"] == "open"

    def test_editors_opening_a_key_together_share_one_download_and_session(
        self, bench: Bench
    ) -> None:
        key = new_key()
        # The first download stalls, so the other editors arrive meanwhile.
        bench.integrator.reply_to_downloads(
            bench.document(key)[0], FileReply(stall=0.5)
        )

        with ThreadPoolExecutor(3) as pool:
            opened = list(pool.map(lambda user: bench.open(key, user), NAMES))
        bench.control.edit(opened[0], "First line")
        states = [bench.control.state(editor) for editor in opened]

        assert len(bench.downloads(key)) == 1
        assert [state["state"] for state in states] == ["open"] * 3
        assert all(sorted(state["editors"]) == sorted(NAMES) for state in states)
        assert all(state["changes"] == 1 for state in states)

    def test_partial_content_is_accepted(self, bench: Bench) -> None:
        key = new_key()
        bench.integrator.reply_to_downloads(bench.document(key)[0], FileReply(206))

        ann = bench.open(key, "ann")

        assert [d.status_code for d in bench.downloads(key)] == [206]
        assert bench.control.state(ann)["state"] == "open"

    @pytest.mark.parametrize("status", [404, 500, 201, 302])
    def test_three_failed_downloads_refuse_the_editor_with_download_failed(
        self, bench: Bench, status: int
    ) -> None:
        key = new_key()
        bench.integrator.reply_to_downloads(
            bench.document(key)[0], *[FileReply(status)] * 3
        )

        refused = bench.try_open(bench.config(key, "ann"))

        assert refused.status_code == 403
        assert refused.json()["ds_code"] == -4
        assert refused.json()["message"] == "Download failed"
        assert len(bench.downloads(key)) == 3
        assert bench.command("info", key=key) == {"key": key, "error": 1}

    def test_a_download_that_times_out_is_not_tried_again(
        self, make_bench: Callable[..., Bench]
    ) -> None:
        bench = make_bench(download_timeout=0.3)
        key = new_key()
        bench.integrator.reply_to_downloads(
            bench.document(key)[0], FileReply(stall=1.0)
        )

        refused = bench.try_open(bench.config(key, "ann"))

        assert refused.json()["ds_code"] == -4
        assert len(bench.downloads(key)) == 1


# §4: the command service


COMMAND_PATHS = ["/command", "/coauthoring/CommandService.ashx"]
KEYED_COMMANDS = [
    "info",
    "forcesave",
    "drop",
    "meta",
    "getForgotten",
    "deleteForgotten",
]


class TestCommandService:
    @pytest.mark.parametrize("path", COMMAND_PATHS)
    def test_version_answers_the_build_and_no_key(
        self, bench: Bench, path: str
    ) -> None:
        answer = bench.command("version", path=path)

        assert set(answer) == {"error", "version"}
        assert answer["error"] == 0
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", answer["version"])

    def test_license_answers_license_server_and_quota(self, bench: Bench) -> None:
        key = new_key()
        bench.open(key, "ann")
        bench.open(key, "cyd", mode="view")

        answer = bench.command("license")

        assert set(answer) == {"error", "license", "server", "quota"}
        assert answer["error"] == 0
        assert "ann" in json.dumps(answer["quota"]["users"])
        assert "cyd" in json.dumps(answer["quota"]["users_view"])

    def test_get_forgotten_list_needs_no_key(self, bench: Bench) -> None:
        answer = bench.command("getForgottenList")

        assert set(answer) == {"error", "keys"}
        assert answer["error"] == 0
        assert isinstance(answer["keys"], list)

    @pytest.mark.parametrize("c", KEYED_COMMANDS)
    def test_a_command_that_needs_a_key_answers_1_without_one(
        self, bench: Bench, c: str
    ) -> None:
        assert bench.command(c) == {"error": 1}

    @pytest.mark.parametrize("c", ["info", "forcesave", "getForgotten"])
    def test_a_command_for_an_unknown_key_answers_1(self, bench: Bench, c: str) -> None:
        key = new_key()

        assert bench.command(c, key=key) == {"key": key, "error": 1}

    def test_drop_of_an_unknown_key_still_answers_0(self, bench: Bench) -> None:
        key = new_key()

        assert bench.command("drop", key=key, users=["ann"]) == {"key": key, "error": 0}

    def test_info_after_everyone_left_unchanged_posts_status_4(
        self, bench: Bench
    ) -> None:
        """§1.4: info sends 4 when nobody is editing and nothing changed.

        The DS keeps the closed key's record (§9.12 serves its cached copy),
        and with it the stored callback URL.
        """
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.close(ann)
        bench.integrator.wait_for(4, key=key)

        answer = bench.command("info", key=key, userdata="still there?")

        assert answer == {"key": key, "error": 0, "users": []}
        # info answers only once its callback was answered (§9.15).
        [_, info] = bench.integrator.received(4, key=key)
        assert list(info.body) == INFO_CLOSED
        assert info.user == "ann"

    def test_info_without_a_usable_callback_answers_2(self, bench: Bench) -> None:
        key = new_key()
        bench.open(key, "cyd", mode="view")

        assert bench.command("info", key=key) == {"key": key, "error": 2}

    def test_an_unknown_command_answers_5(self, bench: Bench) -> None:
        key = new_key()
        bench.open(key, "ann")

        assert bench.command("rename", key=key) == {"key": key, "error": 5}

    def test_meta_without_meta_answers_5(self, bench: Bench) -> None:
        key = new_key()
        bench.open(key, "ann")

        assert bench.command("meta", key=key) == {"key": key, "error": 5}

    def test_meta_pushes_the_new_title_to_the_editors(self, bench: Bench) -> None:
        key = new_key()
        ann = bench.open(key, "ann")

        answer = bench.command("meta", key=key, meta={"title": "New.docx"})

        assert answer == {"key": key, "error": 0}
        event = {"event": "onMetaChange", "data": {"title": "New.docx"}}
        assert event in bench.messages(ann)

    def test_drop_closes_only_the_named_users_editor(self, bench: Bench) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")
        bench.integrator.wait_for(1, key=key, count=2)

        answer = bench.command("drop", key=key, users=["bob"])
        left = bench.integrator.wait_for(1, key=key, count=3)

        assert answer == {"key": key, "error": 0}
        assert bench.control.state(bob)["state"] == "closed"
        assert bench.control.state(ann)["state"] == "open"
        assert left.body["actions"] == [{"type": 0, "userid": "bob"}]

    def test_drop_without_users_drops_everyone(self, bench: Bench) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bob = bench.open(key, "bob")

        answer = bench.command("drop", key=key)
        bench.integrator.wait_for(4, key=key)

        assert answer == {"key": key, "error": 0}
        assert {bench.control.state(s)["state"] for s in (ann, bob)} == {"closed"}

    def test_a_token_signed_with_another_secret_answers_6(self, bench: Bench) -> None:
        key = new_key()

        answer = bench.command("info", key=key, secret=OTHER_SECRET)

        assert answer == {"key": key, "error": 6}

    def test_a_command_without_a_token_answers_6(self, bench: Bench) -> None:
        key = new_key()

        response = bench.http.post(
            f"{bench.url}/command", json={"c": "info", "key": key}
        )

        assert response.status_code == 200
        assert response.json() == {"key": key, "error": 6}

    def test_an_expired_token_answers_7(self, bench: Bench) -> None:
        key = new_key()
        now = int(time.time())
        body = {"c": "info", "key": key}
        token = tokens.sign({**body, "iat": now - 400, "exp": now - 100}, SECRET)

        response = bench.http.post(
            f"{bench.url}/command", json={**body, "token": token}
        )

        assert response.status_code == 200
        assert response.json() == {"key": key, "error": 7}

    def test_a_token_expired_within_the_leeway_is_accepted(self, bench: Bench) -> None:
        now = int(time.time())
        body = {"c": "version"}
        token = tokens.sign({**body, "iat": now - 330, "exp": now - 30}, SECRET)

        response = bench.http.post(
            f"{bench.url}/command", json={**body, "token": token}
        )

        assert response.json()["error"] == 0

    def test_a_header_token_wrapped_in_payload_is_accepted(self, bench: Bench) -> None:
        """§3.4: the token may come from the header, claims under payload."""
        key = new_key()
        bench.open(key, "ann")
        body = {"c": "info", "key": key}
        header = f"Bearer {tokens.sign_wrapped(body, SECRET)}"

        response = bench.http.post(
            f"{bench.url}/command", json=body, headers={"Authorization": header}
        )

        assert response.json() == {"key": key, "error": 0, "users": ["ann"]}

    def test_the_tokens_claims_replace_the_plain_fields(self, bench: Bench) -> None:
        """§3.4: only the decoded claims are believed."""
        key = new_key()
        bench.open(key, "ann")
        token = tokens.sign({"c": "info", "key": key}, SECRET)

        response = bench.http.post(
            f"{bench.url}/command",
            json={"c": "forcesave", "key": "forged", "token": token},
        )

        assert response.json() == {"key": key, "error": 0, "users": ["ann"]}

    def test_the_body_token_wins_over_the_header_token(self, bench: Bench) -> None:
        """§3.4: the token comes from the body if present, else the header."""
        body = {"c": "version"}
        bearer = f"Bearer {tokens.sign_wrapped(body, SECRET)}"
        forged_token = tokens.sign(body, OTHER_SECRET)

        response = bench.http.post(
            f"{bench.url}/command",
            json={**body, "token": forged_token},
            headers={"Authorization": bearer},
        )

        assert response.json() == {"error": 6}

    def test_a_shardkey_in_the_query_is_accepted(self, bench: Bench) -> None:
        """§4: ``POST {DS}/command?shardkey={key}``."""
        key = new_key()
        bench.open(key, "ann")
        body = {"c": "info", "key": key}

        response = bench.http.post(
            f"{bench.url}/command",
            params={"shardkey": key},
            json={**body, "token": tokens.sign(body, SECRET)},
        )

        assert response.json() == {"key": key, "error": 0, "users": ["ann"]}

    def test_saved_0_during_a_status_2_makes_the_save_forgotten(
        self, bench: Bench
    ) -> None:
        """§4: the legacy ``saved`` command, sent while answering a status 2."""
        key = new_key()
        bench.integrator.reply(Reply(stall=0.4), key=key, status=2)
        edited_and_closed(bench, key)
        bench.integrator.wait_for(2, key=key, answered=False)

        answer = bench.command("saved", key=key, status="0")
        bench.wait_logged(2, key)

        assert answer == {"key": key, "error": 0}
        assert key in bench.forgotten_keys()

    def test_saved_1_during_a_status_2_keeps_the_save(self, bench: Bench) -> None:
        """§4: ``"1"`` confirms the save the callback delivers."""
        key = new_key()
        bench.integrator.reply(Reply(stall=0.4), key=key, status=2)
        edited_and_closed(bench, key)
        bench.integrator.wait_for(2, key=key, answered=False)

        answer = bench.command("saved", key=key, status="1")
        bench.wait_logged(2, key)

        assert answer == {"key": key, "error": 0}
        assert key not in bench.forgotten_keys()

    def test_the_legacy_endpoint_takes_a_get_with_a_query_string(
        self, bench: Bench
    ) -> None:
        key = new_key()
        bench.open(key, "ann")
        params = {"c": "info", "key": key}
        header = f"Bearer {tokens.sign_wrapped(params, SECRET)}"

        response = bench.http.get(
            f"{bench.url}/coauthoring/CommandService.ashx",
            params=params,
            headers={"Authorization": header},
        )

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"key": key, "error": 0, "users": ["ann"]}


# The control API's faults


class TestFaults:
    def test_a_download_fault_fails_the_next_cache_link_once(
        self, bench: Bench
    ) -> None:
        key = new_key()
        edited_and_closed(bench, key)
        url = bench.integrator.wait_for(2, key=key).body["url"]
        bench.control.faults(download="fail")

        first = bench.http.get(url)
        second = bench.http.get(url)

        assert first.status_code == 500
        assert second.status_code == 200

    def test_a_fault_given_times_fires_that_many_times(self, bench: Bench) -> None:
        key = new_key()
        edited_and_closed(bench, key)
        url = bench.integrator.wait_for(2, key=key).body["url"]
        bench.control.faults(download="fail", times=2)

        statuses = [bench.http.get(url).status_code for _ in range(3)]

        assert statuses == [500, 500, 200]

    def test_a_truncate_fault_cuts_the_next_download_short(self, bench: Bench) -> None:
        key = new_key()
        edited_and_closed(bench, key)
        url = bench.integrator.wait_for(2, key=key).body["url"]
        bench.control.faults(download="truncate")

        with pytest.raises(httpx.RemoteProtocolError):
            bench.http.get(url)

    def test_a_stall_fault_hangs_the_next_download(self, bench: Bench) -> None:
        key = new_key()
        edited_and_closed(bench, key)
        url = bench.integrator.wait_for(2, key=key).body["url"]
        bench.control.faults(download="stall")

        with pytest.raises(httpx.ReadTimeout):
            bench.http.get(url, timeout=0.3)

    def test_an_assembly_fault_fails_only_the_next_assembly(self, bench: Bench) -> None:
        key = new_key()
        ann = bench.open(key, "ann")
        bench.control.edit(ann, "Try twice")
        bench.control.faults(assembly="fail")

        bench.command("forcesave", key=key)
        failed = bench.integrator.wait_for(7, key=key)
        # Until the DS has read that answer, a force save is still under way.
        bench.wait_logged(7, key)
        bench.command("forcesave", key=key)
        forced = bench.integrator.wait_for(6, key=key)

        assert "url" not in failed.body
        assert "Try twice" in document_text("docx", bench.fetch(forced.body["url"]))

    @pytest.mark.parametrize("error", [1, 3, 4, 6, 7])
    def test_a_command_fault_answers_the_given_error_once(
        self, bench: Bench, error: int
    ) -> None:
        key = new_key()
        bench.open(key, "ann")
        bench.control.faults(command=error)

        faulted = bench.command("info", key=key)
        normal = bench.command("info", key=key)

        assert faulted == {"key": key, "error": error}
        assert normal == {"key": key, "error": 0, "users": ["ann"]}

    def test_an_unknown_fault_is_refused(self, bench: Bench) -> None:
        response = bench.control.http.post("/faults", json={"assembly": "explode"})

        assert response.status_code == 400
