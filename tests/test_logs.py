"""Request ids on every log line, the two log formats, the callback log.

Formatters and the middleware are tried on their own; the rest over real
HTTP, against docdesk with its embedded simulator, and through the real
``docdesk`` command on the same data dir.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docdesk import desk as desk_module
from docdesk import logs
from docdesk.catalog import CallbackRecord, Catalog
from docdesk.cli import main
from docdesk.desk import DocDesk
from docdesk.errors import CatalogError, ConfigurationError
from docdesk.formats import blank_document
from docdesk.settings import SIMULATOR_PATH, Settings
from docdesk.testing import ControlClient, fast_settings, serve_app_at
from docdesk.web import create_app

UNKNOWN_ID = "0123456789abcdef"
NEW_ID = re.compile(r"[0-9a-f]{16}")
UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# python-docx takes a while to make one; every upload may share it.
DOCX = blank_document("docx")


class Collect(logging.Handler):
    """Keeps every record, stamped with its request id as it is logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(logs.RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, request_id: str) -> list[str]:
        return [
            r.getMessage()
            for r in list(self.records)
            if getattr(r, "request_id", None) == request_id
        ]


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """The CLI configures the root logger; every test starts from the same."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def collected() -> Iterator[Collect]:
    """Every record docdesk logs during the test, DEBUG and up."""
    handler = Collect()
    docdesk_logger = logging.getLogger("docdesk")
    level = docdesk_logger.level
    docdesk_logger.addHandler(handler)
    docdesk_logger.setLevel(logging.DEBUG)
    yield handler
    docdesk_logger.removeHandler(handler)
    docdesk_logger.setLevel(level)


def record(msg: Any, *args: Any, exc_info: Any = None) -> logging.LogRecord:
    made = logging.LogRecord(
        "docdesk.tests", logging.WARNING, __file__, 1, msg, args, exc_info
    )
    made.created = 1_700_000_000.123456
    return made


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# The formats


class TestJsonFormatter:
    def test_a_line_is_one_json_object_with_the_fields(self) -> None:
        line = logs.JsonFormatter().format(record("saved key=%s bytes=%d", "k1", 42))

        entry = json.loads(line)

        assert "\n" not in line
        assert entry == {
            "time": "2023-11-14T22:13:20.123Z",
            "level": "WARNING",
            "logger": "docdesk.tests",
            "request_id": "-",
            "message": "saved key=k1 bytes=42",
        }

    def test_the_time_is_utc_with_milliseconds(self) -> None:
        fresh = logging.LogRecord("x", logging.INFO, __file__, 1, "now", (), None)

        entry = json.loads(logs.JsonFormatter().format(fresh))

        assert UTC_MS.fullmatch(entry["time"])
        moment = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
        assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)

    def test_an_exception_has_a_field_of_its_own(self) -> None:
        try:
            raise ValueError("the disk said no")
        except ValueError:
            failed = record("commit failed", exc_info=sys.exc_info())

        entry = json.loads(logs.JsonFormatter().format(failed))

        assert entry["message"] == "commit failed"
        assert entry["exception"].startswith("Traceback")
        assert "ValueError: the disk said no" in entry["exception"]

    def test_odd_arguments_still_give_a_line(self) -> None:
        class Odd:
            def __str__(self) -> str:
                raise RuntimeError("no str")

            def __repr__(self) -> str:
                raise RuntimeError("no repr")

        odd_lines = [
            record("value=%s", Odd()),
            record("two=%s %s", "only one"),
            record(Odd()),
            record("bytes=%s lone=%s", b"\xff", "\udcff"),
        ]

        entries = [json.loads(logs.JsonFormatter().format(r)) for r in odd_lines]

        assert entries[0]["message"] == "value=%s (unformatted args: <Odd object>)"
        assert entries[1]["message"] == "two=%s %s (unformatted args: 'only one')"
        assert entries[2]["message"] == "<Odd object>"
        assert entries[3]["message"] == "bytes=b'\\xff' lone=\udcff"


def test_text_lines_show_the_request_id_or_a_dash_outside_requests() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.TextFormatter())
    inner_logger = logging.getLogger("docdesk.tests.text")
    inner_logger.addHandler(handler)
    try:
        app = logs.RequestIdMiddleware(_app_that_logs(inner_logger, []))

        _call(app, [(b"x-request-id", b"req-7.a_B")])
        inner_logger.warning("after the request")
    finally:
        inner_logger.removeHandler(handler)

    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith(" WARNING docdesk.tests.text [req-7.a_B] handling")
    assert outside.endswith(" WARNING docdesk.tests.text [-] after the request")


def test_configure_installs_one_stderr_handler_however_often_it_is_called(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("info", "text")
    logs.configure("warning", "json")

    logging.getLogger("docdesk.tests.configured").warning("in %s", "json")
    logging.getLogger("docdesk.tests.configured").info("filtered out")

    formats = [type(h.formatter) for h in logging.getLogger().handlers]
    assert formats.count(logs.JsonFormatter) == 1
    assert logs.TextFormatter not in formats
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["message"] == "in json"


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        logs.configure("info", "xml")


def test_an_unknown_log_format_in_the_environment_stops_the_command() -> None:
    result = CliRunner(env={"DOCDESK_LOG_FORMAT": "xml"}).invoke(main, ["serve"])

    assert result.exit_code == 2
    assert "xml" in result.stderr


# The middleware, called as an ASGI server would


def _app_that_logs(target: logging.Logger, seen: list[str | None]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        target.warning("handling")
        seen.append(logs.request_id())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-request-id", b"from-the-app")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _call(app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": headers,
    }
    anyio.run(app, scope, _no_body, send)
    return sent


def _answered_ids(sent: list[Message]) -> list[bytes]:
    return [value for name, value in sent[0]["headers"] if name == b"x-request-id"]


@pytest.mark.parametrize(
    "hostile",
    [
        b"a\nforged line",
        b"a\r\nX-Injected: 1",
        b"has space",
        b"x" * 1024,
        b"a" * 65,
        b"",
        "caf\u00e9".encode(),
        b'quote"d',
    ],
)
def test_a_hostile_incoming_request_id_is_replaced_by_a_new_one(hostile: bytes) -> None:
    seen: list[str | None] = []
    app = logs.RequestIdMiddleware(
        _app_that_logs(logging.getLogger("docdesk.tests.asgi"), seen)
    )

    sent = _call(app, [(b"x-request-id", hostile)])

    (used,) = seen
    assert used is not None
    assert NEW_ID.fullmatch(used)
    assert _answered_ids(sent) == [used.encode()]


def test_a_sane_incoming_request_id_is_kept_and_answered_once() -> None:
    seen: list[str | None] = []
    app = logs.RequestIdMiddleware(
        _app_that_logs(logging.getLogger("docdesk.tests.asgi"), seen)
    )
    sane = b"Proxy-1.trace_" + b"9" * 50

    sent = _call(app, [(b"x-request-id", sane)])

    assert seen == [sane.decode()]
    assert _answered_ids(sent) == [sane]
    assert logs.request_id() is None


def test_the_id_outlives_a_crash_for_the_servers_traceback_line() -> None:
    async def crashing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("the handler crashed")

    async def serve_once() -> str | None:
        app = logs.RequestIdMiddleware(crashing)
        scope = {"type": "http", "headers": [(b"x-request-id", b"crash-1")]}
        with pytest.raises(RuntimeError):
            await app(scope, _no_body, _discard)
        return logs.request_id()

    after = anyio.run(serve_once)

    assert after == "crash-1"


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Message) -> None:
    pass


# Over real HTTP


@dataclass
class Service:
    api: httpx.Client
    control: ControlClient
    data_dir: Path
    settings: list[Settings]

    def upload(self, **headers: str) -> httpx.Response:
        return self.api.post(
            "/api/documents",
            files={"file": ("Logged.docx", DOCX)},
            headers=headers,
        )

    def config(self, document_id: str) -> dict[str, Any]:
        config: dict[str, Any] = self.api.get(
            f"/api/documents/{document_id}/editor-config",
            params={"user_id": "ann", "user_name": "Ann"},
        ).json()
        return config

    def save_session(self, document_id: str) -> dict[str, Any]:
        """Open, edit, leave; returns the config once the status 2 is answered."""
        config = self.config(document_id)
        editor = self.control.open(config)
        self.control.edit(editor, "a line to keep")
        self.control.close(editor)
        self.control.wait_for_callback(2, key=config["document"]["key"])
        return config


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the module's HTTP tests: each asks of it only its own."""
    data_dir = tmp_path_factory.mktemp("service") / "data"
    made: list[Settings] = []

    def make_app(url: str) -> ASGIApp:
        settings = Settings.from_env(
            {"DOCDESK_DATA_DIR": str(data_dir), "DOCDESK_PUBLIC_URL": url}
        )
        made.append(settings)
        fast = fast_settings(secret=settings.jwt_secret)
        return create_app(settings, simulator_settings=fast)

    with (
        serve_app_at(make_app) as running,
        httpx.Client(base_url=running.url, timeout=30) as api,
        ControlClient(running.url + SIMULATOR_PATH) as control,
    ):
        yield Service(api, control, data_dir, made)


def test_every_line_of_a_request_carries_its_id_and_the_answer_names_it(
    service: Service, collected: Collect
) -> None:
    response = service.upload(**{"X-Request-ID": "upload-0001"})

    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == "upload-0001"
    wait_until(lambda: _request_line(collected, "upload-0001"), "the request line")
    document_id = response.json()["id"]
    about = [r for r in collected.records if document_id in r.getMessage()]
    assert any(r.getMessage().startswith("document added ") for r in about)
    assert {getattr(r, "request_id", None) for r in about} == {"upload-0001"}


def _request_line(collected: Collect, request_id: str) -> bool:
    return any(m.startswith("request ") for m in collected.messages(request_id))


def test_each_callback_line_shares_its_id_with_that_callback_request_alone(
    service: Service, collected: Collect
) -> None:
    document_id = service.upload().json()["id"]

    service.save_session(document_id)

    callback_path = f"path=/ds/documents/{document_id}/callback "
    wait_until(
        lambda: sum(callback_path in r.getMessage() for r in collected.records) >= 2,
        "the callback request lines",
    )
    callback_lines = [
        r for r in collected.records if r.getMessage().startswith("callback document=")
    ]
    ids = [getattr(r, "request_id", None) for r in callback_lines]
    assert len(callback_lines) >= 2
    assert len(set(ids)) == len(ids)
    for request_id in ids:
        assert NEW_ID.fullmatch(request_id)
        shared = collected.messages(request_id)
        assert [m for m in shared if m.startswith("request ")] == [
            next(m for m in shared if callback_path in m)
        ]


def test_an_answer_without_an_incoming_id_gets_a_fresh_one_each_time(
    service: Service,
) -> None:
    first = service.api.get(f"/api/documents/{UNKNOWN_ID}")
    second = service.api.get(f"/api/documents/{UNKNOWN_ID}")

    assert first.status_code == second.status_code == 404
    assert NEW_ID.fullmatch(first.headers["X-Request-ID"])
    assert NEW_ID.fullmatch(second.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_a_one_kilobyte_request_id_never_reaches_a_line(
    service: Service, collected: Collect
) -> None:
    flood = "f" * 1024

    response = service.upload(**{"X-Request-ID": flood})

    used = response.headers["X-Request-ID"]
    assert NEW_ID.fullmatch(used)
    wait_until(lambda: _request_line(collected, used), "the request line")
    assert [getattr(r, "request_id", None) for r in collected.records].count(flood) == 0
    assert not [r for r in collected.records if flood in r.getMessage()]


def test_a_full_save_logs_no_token_secret_or_signature_in_either_format(
    service: Service, collected: Collect
) -> None:
    document_id = service.upload().json()["id"]

    config = service.save_session(document_id)

    sent = service.control.callbacks(config["document"]["key"])
    secrets = [
        service.settings[0].jwt_secret,
        config["token"],
        config["document"]["url"],
        config["editorConfig"]["callbackUrl"],
        *(c["body"]["token"] for c in sent if "token" in (c["body"] or {})),
        *re.findall(r"sig=([^&]+)", json.dumps(config)),
    ]
    assert len(secrets) > 5
    wait_until(
        lambda: (
            sum(m.startswith("callback document=") for m in _messages(collected)) >= 2
        ),
        "the callback lines",
    )
    lines = [
        formatter.format(r)
        for r in list(collected.records)
        for formatter in (logs.TextFormatter(), logs.JsonFormatter())
    ]
    assert any("outcome=saved" in line for line in lines)
    assert [s for s in secrets if any(s in line for line in lines)] == []
    assert [line for line in lines if "sig=" in line or "eyJ" in line] == []


def _messages(collected: Collect) -> list[str]:
    return [r.getMessage() for r in list(collected.records)]


# The callback log from the shell


def _shell(data_dir: Path, *args: str) -> Any:
    env = {name: None for name in os.environ if name.startswith("DOCDESK_")}
    runner = CliRunner(env={**env, "DOCDESK_DATA_DIR": str(data_dir)})
    return runner.invoke(main, list(args), catch_exceptions=False)


def test_docdesk_callbacks_json_is_what_the_api_answers(service: Service) -> None:
    document_id = service.upload().json()["id"]
    service.save_session(document_id)
    from_api = service.api.get(f"/api/documents/{document_id}/callbacks").json()

    result = _shell(service.data_dir, "callbacks", document_id, "--json")

    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed == from_api
    assert listed["callbacks"][0]["status"] == 2
    assert listed["callbacks"][0]["outcome"] == "saved"
    assert listed["callbacks"][0]["document_id"] == document_id
    assert {c["status"] for c in listed["callbacks"]} >= {1, 2}


def test_docdesk_callbacks_lists_every_document_newest_first_up_to_the_limit(
    service: Service,
) -> None:
    first = service.upload().json()["id"]
    second = service.upload().json()["id"]
    service.save_session(first)
    service.save_session(second)

    table = _shell(service.data_dir, "callbacks")
    newest = _shell(service.data_dir, "callbacks", "--limit", "1", "--json")

    assert table.exit_code == 0, table.stderr
    rows = table.stdout.splitlines()
    header = rows[0].split()
    assert header == [
        "time",
        "document",
        "key",
        "status",
        "outcome",
        "version",
        "http",
        "ms",
        "source",
    ]
    assert second in rows[2]
    assert " saved " in rows[2]
    assert any(first in row for row in rows[3:])
    (only,) = json.loads(newest.stdout)["callbacks"]
    assert (only["document_id"], only["status"]) == (second, 2)


def test_docdesk_callbacks_refuses_what_is_no_document_id(tmp_path: Path) -> None:
    result = _shell(tmp_path, "callbacks", "../etc")

    assert result.exit_code == 1
    assert result.stderr == "docdesk: no document '../etc'\n"


def test_docdesk_callbacks_says_so_when_the_log_is_empty(tmp_path: Path) -> None:
    result = _shell(tmp_path, "callbacks", UNKNOWN_ID)

    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "no callbacks\n"


# Retention


def _logged(days_ago: float, outcome: str) -> CallbackRecord:
    return CallbackRecord(
        received=datetime.now(UTC) - timedelta(days=days_ago),
        document_id=UNKNOWN_ID,
        outcome=outcome,
        http_status=200,
        duration_ms=1.0,
    )


async def _outcomes(catalog: Catalog) -> list[str]:
    return [r.outcome for r in await catalog.callback_log(limit=1000)]


@pytest.mark.anyio
async def test_pruning_forgets_old_records_and_keeps_recent_ones(
    catalog: Catalog,
) -> None:
    for days_ago, outcome in [(90, "old"), (31, "older"), (29, "recent"), (0, "new")]:
        await catalog.log_callback(_logged(days_ago, outcome))

    pruned = await catalog.prune_callback_log(datetime.now(UTC) - timedelta(days=30))

    assert pruned == 2
    assert await _outcomes(catalog) == ["new", "recent"]


def _settings(data_dir: Path, days: str | None = None) -> Settings:
    env = {"DOCDESK_DATA_DIR": str(data_dir)}
    if days is not None:
        env["DOCDESK_CALLBACK_LOG_DAYS"] = days
    return Settings.from_env(env)


async def _seeded(settings: Settings) -> None:
    """A migrated catalog holding one old record and one recent one."""
    await (await DocDesk.open(settings)).close()
    catalog = Catalog.from_url(settings.resolved_database_url)
    try:
        await catalog.log_callback(_logged(45, "old"))
        await catalog.log_callback(_logged(1, "recent"))
    finally:
        await catalog.close()


@pytest.mark.anyio
async def test_opening_the_desk_prunes_past_the_retention(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    await _seeded(settings)

    desk = await DocDesk.open(settings)
    try:
        kept = await _outcomes(desk.catalog)
    finally:
        await desk.close()

    assert kept == ["recent"]


@pytest.mark.anyio
async def test_zero_days_keeps_the_callback_log_forever(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "0")
    await _seeded(settings)

    desk = await DocDesk.open(settings)
    try:
        await desk.handle_callback(UNKNOWN_ID, "forged", b"{}", {})
        kept = await _outcomes(desk.catalog)
    finally:
        await desk.close()

    assert kept == ["forbidden", "recent", "old"]


@pytest.mark.anyio
async def test_callbacks_prune_again_only_once_the_interval_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, "30")
    desk = await DocDesk.open(settings)
    try:
        await desk.catalog.log_callback(_logged(45, "old"))
        await desk.handle_callback(UNKNOWN_ID, "forged", b"{}", {})
        within_the_hour = await _outcomes(desk.catalog)

        monkeypatch.setattr(desk_module, "PRUNE_INTERVAL", 0.0)
        await desk.handle_callback(UNKNOWN_ID, "forged", b"{}", {})
        after_it = await _outcomes(desk.catalog)
    finally:
        await desk.close()

    assert within_the_hour == ["forbidden", "old"]
    assert after_it == ["forbidden", "forbidden"]


@pytest.mark.anyio
async def test_a_failed_prune_is_a_warning_and_the_callback_is_still_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    desk = await DocDesk.open(_settings(tmp_path))
    monkeypatch.setattr(desk_module, "PRUNE_INTERVAL", 0.0)

    async def broken(older_than: datetime) -> int:
        raise CatalogError("the catalog failed: OperationalError")

    monkeypatch.setattr(desk.catalog, "prune_callback_log", broken)
    try:
        reply = await desk.handle_callback(UNKNOWN_ID, "forged", b"{}", {})
    finally:
        await desk.close()

    assert (reply.http_status, reply.outcome) == (403, "forbidden")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "callback log not pruned reason=the catalog failed: OperationalError"
    ]


class TestRetentionSetting:
    def test_thirty_days_unless_set(self) -> None:
        assert Settings.from_env({}).callback_log_days == 30
        assert (
            Settings.from_env({"DOCDESK_CALLBACK_LOG_DAYS": "0"}).callback_log_days == 0
        )
        assert (
            Settings.from_env({"DOCDESK_CALLBACK_LOG_DAYS": "7"}).callback_log_days == 7
        )

    @pytest.mark.parametrize("value", ["-1", "x", "1.5", "30d"])
    def test_anything_but_a_whole_number_of_days_is_refused_by_name(
        self, value: str
    ) -> None:
        with pytest.raises(ConfigurationError, match="DOCDESK_CALLBACK_LOG_DAYS"):
            Settings.from_env({"DOCDESK_CALLBACK_LOG_DAYS": value})
