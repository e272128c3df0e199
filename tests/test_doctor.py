"""``docdesk doctor`` against the real simulator over HTTP, and the service.

Each misconfiguration is made for real: a secret the simulator does not
know, a Document Server port nobody listens on, a public URL nobody serves,
a database never migrated, a data dir that cannot be a folder. Only the
clock is bent, by handing doctor a clock ten minutes slow.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from docdesk import doctor as doctor_module
from docdesk import tokens
from docdesk.catalog import Catalog
from docdesk.cli import main
from docdesk.commands import ConversionError
from docdesk.conversion import ConversionService
from docdesk.doctor import (
    Check,
    _file_system_type,
    probe_url,
    run_checks,
    serve_probe,
)
from docdesk.errors import DocumentServerError
from docdesk.settings import Settings
from docdesk.simulator.edits import read_text
from docdesk.testing import (
    RunningServer,
    RunningSimulator,
    fast_settings,
    run_simulator,
    serve_app_at,
    serve_in_thread,
)
from docdesk.web import create_app

SECRET = "the-document-servers-secret-of-32-bytes"
OTHER_SECRET = "a-secret-the-document-server-never-saw"
NAMES = [
    "document_server",
    "secret",
    "clock",
    "public_url",
    "download",
    "storage",
    "database",
    "disk",
]
DS_CHECKS = ("secret", "clock", "public_url", "download")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def closed_url() -> str:
    """A loopback URL nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


def settings_for(
    tmp_path: Path, ds_url: str, *, secret: str = SECRET, **env: str
) -> Settings:
    variables = {
        "DOCDESK_DATA_DIR": str(tmp_path / "data"),
        "DOCDESK_DOCUMENT_SERVER_URL": ds_url,
        "DOCDESK_JWT_SECRET": secret,
        "DOCDESK_PUBLIC_URL": closed_url(),
    }
    return Settings.from_env({**variables, **env})


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def failures(checks: list[Check]) -> list[Check]:
    return [check for check in checks if not check.ok]


@pytest.fixture(scope="module")
def simulator() -> Iterator[RunningSimulator]:
    """One simulator for the module: each conversion has a key of its own."""
    with run_simulator(fast_settings(secret=SECRET)) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_docdesk_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own DOCDESK_* settings must not reach these checks."""
    for name in list(os.environ):
        if name.startswith("DOCDESK_"):
            monkeypatch.delenv(name)


# A good setup


@pytest.mark.anyio
async def test_a_good_setup_passes_every_check_in_order(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, simulator.url)

    with serve_probe(settings) as probe:
        checks = await run_checks(settings, probe=probe)

    assert [check.name for check in checks] == NAMES
    assert failures(checks) == []
    found = by_name(checks)
    assert "9.3.0" in found["secret"].detail
    assert settings.public_url in found["public_url"].detail
    assert "doctor served it" in found["public_url"].detail


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[RunningServer, Settings]]:
    """docdesk with its embedded simulator, and the routes doctor brings."""
    made: list[Settings] = []

    def make_app(url: str) -> ASGIApp:
        settings = Settings.from_env(
            {"DOCDESK_DATA_DIR": str(tmp_path / "data"), "DOCDESK_PUBLIC_URL": url}
        )
        made.append(settings)
        return create_app(
            settings, simulator_settings=fast_settings(secret=settings.jwt_secret)
        )

    with serve_app_at(make_app) as running:
        yield running, made[0]


def test_the_service_with_its_embedded_simulator_reports_good_health(
    service: tuple[RunningServer, Settings],
) -> None:
    running, _ = service

    response = httpx.get(f"{running.url}/api/health", timeout=30)

    assert failures([Check(**c) for c in response.json()["checks"]]) == []
    assert response.status_code == 200


def test_the_service_health_route_runs_every_check_with_its_own_probe(
    service: tuple[RunningServer, Settings],
) -> None:
    running, settings = service

    response = httpx.get(f"{running.url}/api/health", timeout=30)

    body = response.json()
    found = {check["name"]: check for check in body["checks"]}
    assert list(found) == NAMES
    assert response.status_code == (200 if body["ok"] else 503)
    for name in ("document_server", "secret", "clock", "public_url", "storage"):
        assert found[name]["ok"], found[name]
    assert "migrated" in found["database"]["detail"]
    assert settings.public_url in found["public_url"]["detail"]


# Each misconfiguration


@pytest.mark.anyio
async def test_a_wrong_secret_is_named_a_secret_mismatch(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, simulator.url, secret=OTHER_SECRET)

    with serve_probe(settings) as probe:
        found = by_name(await run_checks(settings, probe=probe))

    assert not found["secret"].ok
    assert "error 6" in found["secret"].detail
    assert "secret" in found["secret"].detail
    assert "DOCDESK_JWT_SECRET" in (found["secret"].fix or "")
    assert found["document_server"].ok
    assert found["clock"].ok
    for name in ("public_url", "download"):
        assert not found[name].ok
        assert found[name].detail.startswith("skipped")


@pytest.mark.anyio
async def test_a_document_server_that_is_down_is_named_with_its_url(
    tmp_path: Path,
) -> None:
    down = closed_url()
    settings = settings_for(tmp_path, down)

    found = by_name(await run_checks(settings))

    assert not found["document_server"].ok
    assert found["document_server"].detail.startswith(
        f"cannot reach the Document Server at {down}"
    )
    assert "DOCDESK_DOCUMENT_SERVER_URL" in (found["document_server"].fix or "")
    for name in DS_CHECKS:
        assert not found[name].ok
        assert found[name].detail == "skipped: the Document Server did not answer"
    for name in ("storage", "database", "disk"):
        assert found[name].ok, found[name]


@pytest.mark.anyio
async def test_an_unreachable_public_url_is_named_with_the_usual_causes(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, simulator.url)

    found = by_name(await run_checks(settings))

    check = found["public_url"]
    assert not check.ok
    assert settings.public_url in check.detail
    assert "error -4" in check.detail
    for cause in ("localhost", "firewall", "TLS"):
        assert cause in check.detail
    assert "DOCDESK_PUBLIC_URL" in (check.fix or "")
    assert found["secret"].ok
    assert found["download"].detail.startswith("skipped")


@pytest.mark.anyio
async def test_a_clock_ten_minutes_off_fails_the_clock_check(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, simulator.url)

    with serve_probe(settings) as probe:
        found = by_name(
            await run_checks(settings, probe=probe, clock=lambda: time.time() - 600)
        )

    assert not found["clock"].ok
    assert re.search(r"clock is (599|600|601) s ahead", found["clock"].detail)
    assert "NTP" in (found["clock"].fix or "")
    assert found["secret"].ok


@pytest.mark.anyio
async def test_a_document_server_with_jwt_off_fails_the_secret_check(
    tmp_path: Path,
) -> None:
    async def healthcheck(request: Request) -> Response:
        return PlainTextResponse("true")

    async def command(request: Request) -> Response:
        return JSONResponse({"error": 0, "version": "9.3.0.1"})

    careless = Starlette(
        routes=[
            Route("/healthcheck", healthcheck),
            Route("/command", command, methods=["POST"]),
        ]
    )

    with serve_in_thread(careless) as running:
        found = by_name(await run_checks(settings_for(tmp_path, running.url)))

    assert not found["secret"].ok
    assert "JWT is off" in found["secret"].detail
    assert "JWT_ENABLED" in (found["secret"].fix or "")


@pytest.mark.anyio
async def test_a_database_never_migrated_says_run_docdesk_migrate(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"
    settings = settings_for(tmp_path, closed_url(), DOCDESK_DATABASE_URL=url)

    found = by_name(await run_checks(settings))

    assert not found["database"].ok
    assert "behind by" in found["database"].detail
    assert found["database"].fix == "run docdesk migrate"


@pytest.mark.anyio
async def test_a_migrated_database_passes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'current.sqlite3'}"
    catalog = Catalog.from_url(url)
    await catalog.migrate()
    await catalog.close()
    settings = settings_for(tmp_path, closed_url(), DOCDESK_DATABASE_URL=url)

    found = by_name(await run_checks(settings))

    assert found["database"].ok
    assert found["database"].detail.endswith("is reachable and migrated")


@pytest.mark.anyio
async def test_an_unreachable_database_is_named_without_its_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql+psycopg://docdesk:hunter2@127.0.0.1:{free_port()}/docdesk"
    settings = settings_for(tmp_path, closed_url(), DOCDESK_DATABASE_URL=url)

    found = by_name(await run_checks(settings))

    assert not found["database"].ok
    assert found["database"].detail.startswith("cannot reach the database")
    assert "hunter2" not in found["database"].detail


@pytest.mark.anyio
async def test_storage_that_cannot_be_a_folder_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = settings_for(
        tmp_path, closed_url(), DOCDESK_DATA_DIR=str(blocker / "data")
    )

    found = by_name(await run_checks(settings))

    assert not found["storage"].ok
    assert str(blocker) in found["storage"].detail
    assert "DOCDESK_DATA_DIR" in (found["storage"].fix or "")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="permissions do not bind root",
)
@pytest.mark.anyio
async def test_a_read_only_data_dir_fails_the_storage_check(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "blobs").mkdir(parents=True)
    (data / "blobs").chmod(0o500)
    settings = settings_for(tmp_path, closed_url())

    try:
        found = by_name(await run_checks(settings))
    finally:
        (data / "blobs").chmod(0o700)

    assert not found["storage"].ok
    assert "Permission denied" in found["storage"].detail


@pytest.mark.anyio
async def test_a_disk_without_room_for_one_file_fails_and_says_the_figure(
    tmp_path: Path,
) -> None:
    settings = settings_for(
        tmp_path, closed_url(), DOCDESK_MAX_DOWNLOAD_BYTES=str(2**60)
    )

    found = by_name(await run_checks(settings))

    assert not found["disk"].ok
    assert " GiB free at " in found["disk"].detail
    assert "DOCDESK_MAX_DOWNLOAD_BYTES" in found["disk"].detail


def test_storage_on_tmpfs_is_recognised_from_the_mount_table(tmp_path: Path) -> None:
    mountinfo = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        f"40 22 0:41 / {tmp_path} rw,nosuid - tmpfs tmpfs rw,size=10g\n"
    )

    inside = _file_system_type(tmp_path / "data" / "blobs", mountinfo)
    beside = _file_system_type(tmp_path.parent, mountinfo)

    assert inside == "tmpfs"
    assert beside == "ext4"


# The probe


def test_the_probe_is_served_only_on_a_signed_link(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, closed_url(), DOCDESK_PUBLIC_URL=f"http://127.0.0.1:{free_port()}"
    )
    signed = probe_url(settings, "0123456789abcdef")
    forged = signed.replace("0123456789abcdef", "fedcba9876543210")

    with serve_probe(settings) as probe:
        good = httpx.get(signed)
        bad = httpx.get(forged)

    assert probe.served
    assert good.status_code == 200
    assert good.content == b"docdesk probe 0123456789abcdef\n"
    assert bad.status_code == 403


def test_the_probe_refuses_a_jwt_header_signed_with_another_secret(
    tmp_path: Path,
) -> None:
    settings = settings_for(
        tmp_path, closed_url(), DOCDESK_PUBLIC_URL=f"http://127.0.0.1:{free_port()}"
    )
    url = probe_url(settings, "0123456789abcdef")
    forged = tokens.sign_wrapped({"url": url}, OTHER_SECRET)

    with serve_probe(settings):
        response = httpx.get(url, headers={"Authorization": f"Bearer {forged}"})

    assert response.status_code == 403


def test_the_probe_is_left_to_the_running_service_when_the_port_is_taken(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(
            tmp_path, closed_url(), DOCDESK_PUBLIC_URL=f"http://127.0.0.1:{port}"
        )

        with serve_probe(settings) as probe:
            served, reason = probe.served, probe.reason

    assert not served
    assert reason == "the port is in use"


# The command


def doctor(env: dict[str, str], *args: str) -> Result:
    return CliRunner(env=env).invoke(main, ["doctor", *args], catch_exceptions=False)


def doctor_env(tmp_path: Path, **env: str) -> dict[str, str]:
    return {
        "DOCDESK_DATA_DIR": str(tmp_path / "data"),
        "DOCDESK_PUBLIC_URL": f"http://127.0.0.1:{free_port()}",
        **env,
    }


def test_doctor_prints_one_line_per_check_and_exits_0_on_a_good_setup(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = doctor_env(
        tmp_path,
        DOCDESK_DOCUMENT_SERVER_URL=simulator.url,
        DOCDESK_JWT_SECRET=SECRET,
    )

    result = doctor(env)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", name] for name in NAMES]


def test_doctor_prints_the_fix_under_a_failure_and_exits_1(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = doctor_env(
        tmp_path,
        DOCDESK_DOCUMENT_SERVER_URL=simulator.url,
        DOCDESK_JWT_SECRET=OTHER_SECRET,
    )

    result = doctor(env)

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("FAIL secret"))
    assert lines[failed + 1].lstrip().startswith("fix: set DOCDESK_JWT_SECRET")


def test_doctor_json_has_ok_and_every_check(tmp_path: Path) -> None:
    env = doctor_env(
        tmp_path,
        DOCDESK_DOCUMENT_SERVER_URL=closed_url(),
        DOCDESK_JWT_SECRET=SECRET,
    )

    result = doctor(env, "--json")

    assert result.exit_code == 1
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["ok"] is False
    assert [check["name"] for check in report["checks"]] == NAMES
    assert set(report["checks"][0]) == {"name", "ok", "detail", "fix"}


def test_doctor_alone_serves_the_built_in_simulator_on_the_public_url(
    tmp_path: Path,
) -> None:
    env = doctor_env(tmp_path)

    result = doctor(env, "--json")

    found = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert found["document_server"]["ok"]
    assert "served by doctor" in found["document_server"]["detail"]
    assert found["secret"]["ok"]
    assert found["public_url"]["ok"]


def test_doctor_beside_a_service_on_its_simulator_reports_the_services_health(
    service: tuple[RunningServer, Settings], tmp_path: Path
) -> None:
    running, settings = service
    env = doctor_env(
        tmp_path,
        DOCDESK_DATA_DIR=str(settings.data_dir),
        DOCDESK_PUBLIC_URL=running.url,
    )

    result = doctor(env, "--json")

    found = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert list(found) == NAMES
    assert found["secret"]["ok"]
    assert "migrated" in found["database"]["detail"]


# The conversion service client


@pytest.fixture(scope="module")
def source() -> Iterator[str]:
    """A plain text file served on loopback, as a storage serves documents."""

    async def plan(request: Request) -> Response:
        return PlainTextResponse("line one\nline two\n")

    with serve_in_thread(Starlette(routes=[Route("/plan.txt", plan)])) as running:
        yield f"{running.url}/plan.txt"


class TestConversionService:
    @pytest.mark.anyio
    async def test_a_sync_conversion_answers_a_link_to_the_result(
        self, simulator: RunningSimulator, source: str
    ) -> None:
        service = ConversionService(simulator.url, SECRET)

        try:
            result = await service.convert(
                source, filetype="txt", outputtype="docx", key="plan-1"
            )
        finally:
            await service.aclose()

        assert result.converted
        assert result.file_type == "docx"
        assert result.file_url is not None
        async with httpx.AsyncClient() as client:
            converted = (await client.get(result.file_url)).content
        assert read_text("docx", converted) == ["line one", "line two"]

    @pytest.mark.anyio
    async def test_an_async_conversion_is_polled_until_it_ends(
        self, simulator: RunningSimulator, source: str
    ) -> None:
        service = ConversionService(simulator.url, SECRET)

        try:
            result = await service.convert(
                source,
                filetype="txt",
                outputtype="docx",
                key="plan-2",
                title="Plan.txt",
                async_=True,
            )
        finally:
            await service.aclose()

        assert result.converted
        assert result.file_url is not None
        assert "/Plan.docx?" in result.file_url

    @pytest.mark.anyio
    async def test_an_async_conversion_left_no_time_is_unfinished(
        self, simulator: RunningSimulator, source: str
    ) -> None:
        service = ConversionService(simulator.url, SECRET)

        try:
            result = await service.convert(
                source,
                filetype="txt",
                outputtype="docx",
                key="plan-3",
                async_=True,
                wait=0,
            )
        finally:
            await service.aclose()

        assert not result.end_convert
        assert not result.converted
        assert result.error is None

    @pytest.mark.anyio
    async def test_a_source_the_server_cannot_download_answers_error_minus_4(
        self, simulator: RunningSimulator
    ) -> None:
        service = ConversionService(simulator.url, SECRET)

        try:
            result = await service.convert(
                f"{closed_url()}/plan.txt",
                filetype="txt",
                outputtype="docx",
                key="plan-4",
            )
        finally:
            await service.aclose()

        assert result.error is ConversionError.DOWNLOAD
        assert not result.converted

    @pytest.mark.anyio
    async def test_a_wrong_secret_answers_the_token_error(
        self, simulator: RunningSimulator, source: str
    ) -> None:
        service = ConversionService(simulator.url, OTHER_SECRET)

        try:
            result = await service.convert(
                source, filetype="txt", outputtype="docx", key="plan-5"
            )
        finally:
            await service.aclose()

        assert result.error is ConversionError.TOKEN

    @pytest.mark.anyio
    async def test_a_server_that_is_down_raises(self, source: str) -> None:
        service = ConversionService(closed_url(), SECRET)

        try:
            with pytest.raises(DocumentServerError, match="did not answer"):
                await service.convert(
                    source, filetype="txt", outputtype="docx", key="plan-6"
                )
        finally:
            await service.aclose()


def test_the_status_page_shows_every_check_of_a_good_setup(
    service: tuple[RunningServer, Settings],
) -> None:
    running, _ = service

    page = httpx.get(f"{running.url}/status", timeout=30)

    assert page.status_code == 200
    assert 'data-status="ok"' in page.text
    for name in ("document_server", "secret", "public_url", "storage", "database"):
        assert f'data-check="{name}"' in page.text


def test_health_polled_twice_runs_the_checks_once(
    service: tuple[RunningServer, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, _ = service
    rounds: list[Settings] = []
    real = doctor_module.run_checks

    async def counted(settings: Settings, **kwargs: Any) -> list[Check]:
        rounds.append(settings)
        return await real(settings, **kwargs)

    monkeypatch.setattr(doctor_module, "run_checks", counted)

    first = httpx.get(f"{running.url}/api/health", timeout=30)
    second = httpx.get(f"{running.url}/api/health", timeout=30)

    assert first.json() == second.json()
    assert len(rounds) == 1
