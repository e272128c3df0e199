"""Recovery: kept status-3 files and the Document Server's forgotten files.

Over real HTTP, against docdesk with its embedded simulator, and with a
standalone simulator where the command line needs a DS of its own.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from urllib.request import url2pathname

import anyio
import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import text
from starlette.types import ASGIApp

from docdesk import tokens
from docdesk.catalog import Catalog, RecoveryRecord
from docdesk.cli import main
from docdesk.commands import CommandService
from docdesk.desk import DocDesk
from docdesk.errors import ConfigurationError, DocumentServerError
from docdesk.formats import blank_document
from docdesk.recovery import (
    FORGOTTEN_NOTE,
    RECOVERY_LOCK,
    Recovered,
    RecoveryOutcome,
    recover_forgotten,
    run_recovery_job,
)
from docdesk.settings import Settings
from docdesk.simulator import SimulatorSettings
from docdesk.simulator.edits import Change, apply_changes, read_text
from docdesk.simulator.sessions import Forgotten
from docdesk.testing import ControlClient, fast_settings, run_simulator, serve_app_at
from docdesk.web import create_app

T = TypeVar("T")
DOCX = blank_document("docx")
# The simulator's tries at a status-2 callback: the first and three retries.
CALLBACK_ATTEMPTS = 4


@dataclass(frozen=True)
class Service:
    """docdesk serving over HTTP, and the DS it talks to."""

    url: str
    settings: Settings
    api: httpx.Client
    control: ControlClient


@contextmanager
def serving(env: dict[str, str]) -> Iterator[Service]:
    """docdesk on ``env``; with no DS URL in it, on its embedded simulator."""
    built: list[Settings] = []

    def make_app(url: str) -> ASGIApp:
        settings = Settings.from_env({**env, "DOCDESK_PUBLIC_URL": url})
        built.append(settings)
        return create_app(settings, simulator_settings=quick(settings.jwt_secret))

    with (
        serve_app_at(make_app) as running,
        httpx.Client(base_url=running.url, timeout=30) as api,
    ):
        settings = built[0]
        with ControlClient(settings.effective_document_server_url) as control:
            yield Service(running.url, settings, api, control)


def quick(secret: str | None = None) -> SimulatorSettings:
    """The simulator fixture's settings, with its save and retries sooner still."""
    return replace(
        fast_settings(secret), save_delay=0.05, retry_delays=(0.01, 0.02, 0.04)
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """docdesk with its embedded simulator, the recovery job off."""
    env = {"DOCDESK_DATA_DIR": str(tmp_path), "DOCDESK_RECOVERY_INTERVAL": "0"}
    with serving(env) as running:
        yield running


def with_desk(settings: Settings, work: Callable[[DocDesk], Awaitable[T]]) -> T:
    """Run ``work`` on a DocDesk of the service's data, as the CLI opens one."""

    async def opened() -> T:
        desk = await DocDesk.open(settings)
        try:
            return await work(desk)
        finally:
            await desk.close()

    return anyio.run(opened)


def upload(api: httpx.Client) -> str:
    response = api.post("/api/documents", files={"file": ("Notes.docx", DOCX)})
    document_id: str = response.json()["id"]
    return document_id


def editor_config(api: httpx.Client, document_id: str) -> dict[str, Any]:
    config: dict[str, Any] = api.get(
        f"/api/documents/{document_id}/editor-config",
        params={"user_id": "ann", "user_name": "Ann"},
    ).json()
    return config


def edit_and_close(control: ControlClient, config: dict[str, Any], text: str) -> str:
    """Open an editor, type ``text``, leave; returns the key it edited under."""
    editor = control.open(config)
    control.edit(editor, text)
    control.close(editor)
    key: str = config["document"]["key"]
    return key


def forget_a_save(service: Service, document_id: str, text: str) -> str:
    """An edit whose final save docdesk cannot download, however often tried.

    docdesk answers 503 to each try; once the DS's retries are used up the
    file becomes forgotten. Returns its key.
    """
    service.control.faults(download="fail", times=CALLBACK_ATTEMPTS)
    config = editor_config(service.api, document_id)
    key = edit_and_close(service.control, config, text)
    wait_until_forgotten(service.settings, key)
    return key


def forget_a_foreign_save(service: Service, document_id: str) -> str:
    """A forgotten file of another integration sharing the DS.

    Its editor runs under a key docdesk never issued, and its callback URL
    refuses the save, so the DS keeps the file as forgotten.
    """
    config = editor_config(service.api, document_id)
    config.pop("token")
    key = f"elsewhere-{secrets.token_hex(6)}"
    config["document"]["key"] = key
    refusing = f"{service.url}/ds/documents/{'0' * 16}/callback?sig=none"
    config["editorConfig"]["callbackUrl"] = refusing
    config["token"] = tokens.sign(config, service.settings.jwt_secret)

    edit_and_close(service.control, config, "not docdesk's")
    wait_until_forgotten(service.settings, key)
    return key


def wait_until_forgotten(settings: Settings, key: str) -> None:
    async def listed(desk: DocDesk) -> bool:
        assert desk.commands is not None
        return key in await desk.commands.forgotten_keys()

    with_desk(settings, partial(eventually, listed))


async def eventually(
    check: Callable[[DocDesk], Awaitable[bool]], desk: DocDesk
) -> None:
    """Wait until ``check`` holds, for 10 s at most."""
    with anyio.fail_after(10):
        while True:
            if await check(desk):
                return
            await anyio.sleep(0.05)


async def has_two_versions(document_id: str, desk: DocDesk) -> bool:
    return len(await desk.versions(document_id)) == 2


def forgotten_keys(settings: Settings) -> list[str]:
    async def listed(desk: DocDesk) -> list[str]:
        assert desk.commands is not None
        return await desk.commands.forgotten_keys()

    return with_desk(settings, listed)


def versions(api: httpx.Client, document_id: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = api.get(
        f"/api/documents/{document_id}/versions"
    ).json()["versions"]
    return listed


def content(api: httpx.Client, document_id: str, number: int) -> list[str]:
    path = f"/api/documents/{document_id}/versions/{number}/content"
    return read_text("docx", api.get(path).content)


def corrupted_close(service: Service, document_id: str, text: str) -> None:
    """An edit the DS cannot assemble cleanly: status 3, docdesk keeps it aside."""
    service.control.faults(assembly="corrupt")
    config = editor_config(service.api, document_id)
    key = edit_and_close(service.control, config, text)
    service.control.wait_for_callback(3, key=key)


def recoveries(api: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = api.get("/api/recovery", params=params)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()["recoveries"]
    return listed


# The Document Server's forgotten files


def test_a_save_docdesk_could_not_take_is_recovered_from_the_forgotten_files(
    service: Service,
) -> None:
    document_id = upload(service.api)
    key = forget_a_save(service, document_id, "kept after all")

    done = with_desk(service.settings, recover_forgotten)

    assert done == [
        Recovered(key, RecoveryOutcome.RECOVERED, document_id, 2, deleted=True)
    ]
    recovered = versions(service.api, document_id)[-1]
    assert (recovered["version"], recovered["source"]) == (2, "recovery")
    assert recovered["note"] == FORGOTTEN_NOTE
    assert content(service.api, document_id, 2) == ["kept after all"]
    assert key not in forgotten_keys(service.settings)


def test_a_second_recovery_run_finds_nothing_to_do(service: Service) -> None:
    document_id = upload(service.api)
    forget_a_save(service, document_id, "once")
    with_desk(service.settings, recover_forgotten)

    again = with_desk(service.settings, recover_forgotten)

    assert again == []
    assert len(versions(service.api, document_id)) == 2


def test_a_forgotten_file_of_another_integration_is_left_at_the_ds(
    service: Service,
) -> None:
    document_id = upload(service.api)
    foreign = forget_a_foreign_save(service, document_id)

    done = with_desk(service.settings, recover_forgotten)

    assert done == [Recovered(foreign, RecoveryOutcome.NOT_OURS)]
    assert foreign in forgotten_keys(service.settings)
    assert len(versions(service.api, document_id)) == 1


def test_the_new_editing_key_differs_from_the_forgotten_one(service: Service) -> None:
    document_id = upload(service.api)
    key = forget_a_save(service, document_id, "edit")

    with_desk(service.settings, recover_forgotten)

    assert editor_config(service.api, document_id)["document"]["key"] != key


class DeleteFailsOnce(CommandService):
    """The DS's command service, except that the first delete goes unanswered."""

    failed = False

    async def delete_forgotten(self, key: str) -> Any:
        if not self.failed:
            self.failed = True
            raise DocumentServerError("the command service did not answer")
        return await super().delete_forgotten(key)


def test_a_file_kept_but_not_deleted_at_the_ds_is_deleted_next_time_not_kept_twice(
    service: Service,
) -> None:
    document_id = upload(service.api)
    key = forget_a_save(service, document_id, "kept once")

    async def two_runs(desk: DocDesk) -> list[list[Recovered]]:
        assert desk.commands is not None
        await desk.commands.aclose()
        desk.commands = DeleteFailsOnce(
            service.settings.effective_document_server_url,
            service.settings.jwt_secret,
        )
        return [await recover_forgotten(desk), await recover_forgotten(desk)]

    first, second = with_desk(service.settings, two_runs)

    assert [(r.outcome, r.version, r.deleted) for r in first] == [
        (RecoveryOutcome.RECOVERED, 2, False)
    ]
    assert "not deleted" in (first[0].detail or "")
    assert second == [
        Recovered(key, RecoveryOutcome.ALREADY_KEPT, document_id, 2, deleted=True)
    ]
    assert len(versions(service.api, document_id)) == 2
    assert key not in forgotten_keys(service.settings)


def test_a_forgotten_file_that_cannot_be_downloaded_stays_at_the_ds(
    service: Service,
) -> None:
    document_id = upload(service.api)
    key = forget_a_save(service, document_id, "later")
    service.control.faults(download="fail")

    done = with_desk(service.settings, recover_forgotten)

    assert [(r.key, r.outcome, r.deleted) for r in done] == [
        (key, RecoveryOutcome.FAILED, False)
    ]
    assert key in forgotten_keys(service.settings)
    assert len(versions(service.api, document_id)) == 1


def test_the_recovery_job_recovers_a_forgotten_file_on_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="docdesk.recovery")
    env = {"DOCDESK_DATA_DIR": str(tmp_path), "DOCDESK_RECOVERY_INTERVAL": "0.2"}

    with serving(env) as service:
        document_id = upload(service.api)
        key = forget_a_save(service, document_id, "found by the job")
        wait_for_versions(service.api, document_id, 2)

        recovered = versions(service.api, document_id)[-1]
        assert (recovered["source"], recovered["note"]) == ("recovery", FORGOTTEN_NOTE)
        assert key not in forgotten_keys(service.settings)
    assert any(
        "forgotten file recovered" in r.getMessage() and key in r.getMessage()
        for r in caplog.records
    )


def test_the_recovery_job_sweeps_what_a_crashed_writer_left(tmp_path: Path) -> None:
    env = {"DOCDESK_DATA_DIR": str(tmp_path), "DOCDESK_RECOVERY_INTERVAL": "0.2"}

    with serving(env) as service:
        staging = Path(
            url2pathname(urlsplit(service.settings.resolved_storage_url).path)
        )
        staging = staging / ".staging"
        left, fresh = staging / "left-by-a-crash", staging / "being-written"
        left.write_bytes(b"half a file")
        fresh.write_bytes(b"a write in progress")
        long_ago = time.time() - 2 * 3600
        os.utime(left, (long_ago, long_ago))

        deadline = time.monotonic() + 10
        while left.exists():
            assert time.monotonic() < deadline, "the stale temporary was not swept"
            time.sleep(0.05)

        assert fresh.exists()


def test_the_recovery_job_sweeps_blobs_no_version_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every round sweeps, not only the first of each hour.
    monkeypatch.setattr("docdesk.recovery.ORPHAN_SWEEP_INTERVAL", 0.0)
    env = {"DOCDESK_DATA_DIR": str(tmp_path), "DOCDESK_RECOVERY_INTERVAL": "0.2"}

    with serving(env) as service:
        document_id = upload(service.api)
        root = Path(url2pathname(urlsplit(service.settings.resolved_storage_url).path))
        folder = root / "documents" / document_id
        # What a kill between a save's blob and its catalog row leaves.
        orphan = folder / "0123456789abcdef.docx"
        young = folder / "fedcba9876543210.docx"
        orphan.write_bytes(DOCX)
        young.write_bytes(DOCX)
        long_ago = time.time() - 2 * 3600
        os.utime(orphan, (long_ago, long_ago))

        deadline = time.monotonic() + 10
        while orphan.exists():
            assert time.monotonic() < deadline, "the orphaned blob was not swept"
            time.sleep(0.05)
        content = service.api.get(f"/api/documents/{document_id}/content")

        assert young.exists()
        assert content.status_code == 200
        assert content.content == DOCX


def wait_for_versions(api: httpx.Client, document_id: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(versions(api, document_id)) < count:
        assert time.monotonic() < deadline, f"no version {count} in 10 s"
        time.sleep(0.05)


def test_only_the_instance_holding_the_lock_runs_a_round_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    anyio.run(migrate, postgres_url)
    with run_simulator(quick()) as ds:
        settings = Settings.from_env(
            {
                "DOCDESK_DATA_DIR": str(tmp_path),
                "DOCDESK_DATABASE_URL": postgres_url,
                "DOCDESK_DOCUMENT_SERVER_URL": ds.url,
                "DOCDESK_JWT_SECRET": ds.secret,
            }
        )

        async def scenario(desk: DocDesk) -> tuple[int, int]:
            document = await desk.upload("Shared.docx", _once(DOCX))
            edited = apply_changes("docx", DOCX, [_change("while locked")])
            path = ds.simulator.cache.put(document.key, "output.docx", edited)
            forgotten = Forgotten(document.key, edited, "docx", path)
            ds.simulator.forgotten[document.key] = forgotten
            lock = {"lock": RECOVERY_LOCK}

            # Another instance holds the lock while this one's job runs.
            async with desk.catalog.engine.connect() as other_instance:
                await other_instance.execution_options(isolation_level="AUTOCOMMIT")
                locking = text("SELECT pg_try_advisory_lock(:lock)")
                assert await other_instance.scalar(locking, lock)
                stop = anyio.Event()
                async with anyio.create_task_group() as jobs:
                    job = partial(run_recovery_job, desk, every=0.05, stop=stop)
                    jobs.start_soon(job)
                    await anyio.sleep(0.4)
                    while_locked = len(await desk.versions(document.id))
                    unlocking = text("SELECT pg_advisory_unlock(:lock)")
                    await other_instance.execute(unlocking, lock)
                    await eventually(partial(has_two_versions, document.id), desk)
                    stop.set()
            return while_locked, len(await desk.versions(document.id))

        while_locked, after = with_desk(settings, scenario)

    assert (while_locked, after) == (1, 2)


async def migrate(url: str) -> None:
    catalog = Catalog.from_url(url)
    try:
        await catalog.migrate()
    finally:
        await catalog.close()


def _change(text: str) -> Change:
    return Change(user_id="ann", user_name="Ann", text=text, created=datetime.now(UTC))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


# Files kept aside from status 3


def test_a_status_3_file_is_listed_and_restored_as_a_version(
    service: Service,
) -> None:
    document_id = upload(service.api)
    corrupted_close(service, document_id, "nearly lost")
    [kept] = recoveries(service.api)

    restored = service.api.post(f"/api/recovery/{kept['id']}/restore")

    assert (kept["document_id"], kept["status"]) == (document_id, 3)
    assert kept["restored_version"] is None
    assert restored.status_code == 201
    version = restored.json()
    assert (version["version"], version["source"], version["status"]) == (
        2,
        "recovery",
        3,
    )
    assert f"status 3 for key {kept['key']}" in version["note"]
    assert content(service.api, document_id, 2) == ["nearly lost"]
    assert recoveries(service.api)[0]["restored_version"] == 2


def test_the_recovery_list_is_filtered_by_document(service: Service) -> None:
    first, second = upload(service.api), upload(service.api)
    corrupted_close(service, first, "first's")

    of_first = recoveries(service.api, document_id=first)
    of_second = recoveries(service.api, document_id=second)
    unknown = service.api.get("/api/recovery", params={"document_id": "f" * 16})

    assert [r["document_id"] for r in of_first] == [first]
    assert of_second == []
    assert unknown.status_code == 404


def test_a_kept_file_that_fails_the_format_check_is_refused_and_stays(
    service: Service,
) -> None:
    document_id = upload(service.api)
    recovery_id = with_desk(
        service.settings, partial(keep_a_broken_file, document_id=document_id)
    )

    refused = service.api.post(f"/api/recovery/{recovery_id}/restore")

    assert refused.status_code == 422
    assert refused.json()["error"] == "format_mismatch"
    assert "stays in the recovery area" in refused.json()["message"]
    [still] = recoveries(service.api)
    assert (still["id"], still["restored_version"]) == (recovery_id, None)
    assert len(versions(service.api, document_id)) == 1


async def keep_a_broken_file(desk: DocDesk, *, document_id: str) -> int:
    """A status-3 file that is no docx, kept as docdesk keeps one."""
    data = b"the converter gave up half way"
    name = f"recovery/{document_id}/broken.docx"
    async with desk.store.create() as blob:
        await blob.write(data)
        await blob.commit(name)
        digest = blob.digest
    record = await desk.catalog.add_recovery(
        RecoveryRecord(
            document_id=document_id,
            key="broken-key",
            status=3,
            blob=name,
            file_type="docx",
            size=digest.size,
            sha256=digest.sha256,
            created=datetime.now(UTC),
            reason="the Document Server could not assemble the file",
        )
    )
    assert record.id is not None
    return record.id


def test_restoring_an_unknown_kept_file_is_not_found(service: Service) -> None:
    response = service.api.post("/api/recovery/999/restore")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


# The command line


@pytest.fixture
def standalone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Service, dict[str, str]]]:
    """docdesk on a standalone simulator, and the CLI's environment for both."""
    for name in list(os.environ):
        if name.startswith("DOCDESK_"):
            monkeypatch.delenv(name)
    with run_simulator(quick()) as ds:
        env = {
            "DOCDESK_DATA_DIR": str(tmp_path),
            "DOCDESK_DOCUMENT_SERVER_URL": ds.url,
            "DOCDESK_JWT_SECRET": ds.secret,
            "DOCDESK_RECOVERY_INTERVAL": "0",
        }
        with serving(env) as service:
            yield service, env


def test_the_command_line_lists_recovers_and_restores(
    standalone: tuple[Service, dict[str, str]],
) -> None:
    service, env = standalone
    document_id = upload(service.api)
    corrupted_close(service, document_id, "from status 3")
    key = forget_a_save(service, document_id, "from the forgotten files")
    shell = CliRunner(env=env)

    listed = shell.invoke(main, ["recovery", "--json"], catch_exceptions=False)
    recovered = shell.invoke(main, ["recover"], catch_exceptions=False)
    [kept] = json.loads(listed.stdout)["recoveries"]
    restored = shell.invoke(
        main, ["recovery-restore", str(kept["id"])], catch_exceptions=False
    )
    table = shell.invoke(main, ["recovery", document_id], catch_exceptions=False)
    nothing = shell.invoke(main, ["recover"], catch_exceptions=False)

    assert listed.exit_code == 0, listed.stderr
    assert (kept["document_id"], kept["status"]) == (document_id, 3)
    assert recovered.exit_code == 0, recovered.stderr
    assert recovered.stdout == f"recovered\t{key}\t{document_id}\t2\n"
    assert restored.exit_code == 0, restored.stderr
    assert restored.stdout == f"{document_id}\t3\n"
    assert "v3" in table.stdout
    assert (nothing.exit_code, nothing.stdout) == (0, "")
    assert "no forgotten files" in nothing.stderr
    sources = [v["source"] for v in versions(service.api, document_id)]
    assert sources == ["upload", "recovery", "recovery"]


def test_recover_fails_loudly_when_the_ds_refuses_the_command(
    standalone: tuple[Service, dict[str, str]],
) -> None:
    _, env = standalone
    wrong_secret = {**env, "DOCDESK_JWT_SECRET": secrets.token_urlsafe(32)}

    result = CliRunner(env=wrong_secret).invoke(
        main, ["recover"], catch_exceptions=False
    )

    assert result.exit_code == 1
    assert "refused getForgottenList: error 6" in result.stderr


# The setting


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_recovery_interval_stops_start_up_naming_the_variable(
    value: str,
) -> None:
    with pytest.raises(ConfigurationError, match="DOCDESK_RECOVERY_INTERVAL"):
        Settings.from_env({"DOCDESK_RECOVERY_INTERVAL": value})


def test_the_recovery_interval_defaults_to_five_minutes_and_0_turns_it_off() -> None:
    default = Settings.from_env({})
    off = Settings.from_env({"DOCDESK_RECOVERY_INTERVAL": "0"})

    assert (default.recovery_interval, off.recovery_interval) == (300.0, 0.0)
