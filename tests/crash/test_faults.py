"""Faults a real ``docdesk serve`` meets mid-save, with the DS retrying.

A full disk, a catalog locked or gone, and a download whose Content-Length
lies. For each: the DS hears a failure while the fault lasts, nothing
already saved changes, nothing half-written is left in sight, and once the
fault clears the DS's retry, or the service's recovery of the file the DS
kept, stores the edit exactly once.

tests/integration/test_failure_injection.py injects faults in-process at
each step of a commit (fsync, link, folder sync, catalog commit), and
tests/integration/test_callback_answers.py covers downloads the simulator
stalls or truncates; these faults come from outside instead.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from docdesk.catalog import Catalog
from tally import record

from .rig import Edit, Rig, large_docx, running_rig, sha256

# Each starts the simulator and docdesk as processes, and waits for retries.
pytestmark = pytest.mark.slow

# Fast enough not to matter, slow enough to cut the catalog mid-download.
FAST = 256 * 1024 * 1024
SLOW = 1024 * 1024
SUITE = "faults"
# No recovery in the background: a file it fetched mid-check would show as a
# temporary. The tests run `docdesk recover` when the DS has given up.
NO_RECOVERY = {"DOCDESK_RECOVERY_INTERVAL": "0"}


def _checked(check: str, held: dict[str, bool], failed: dict[str, Any]) -> None:
    """Count the fault for the report, then fail on any check that did not hold.

    ``failed`` is the first attempt, whose answer the report quotes.
    """
    missed = ", ".join(name for name, ok in held.items() if not ok)
    record(
        SUITE,
        check,
        tried=1,
        held=int(all(held.values())),
        unit="fault",
        detail=f"first answer: HTTP {failed['http_status']} {failed['answer']}; "
        + (f"missed: {missed}" if missed else f"held: {', '.join(held)}"),
    )
    assert held == dict.fromkeys(held, True)


def _unchanged(rig: Rig, document_id: str, before: dict[str, Any]) -> bool:
    """The document still opens at the version it had, whole."""
    now = rig.service.document(document_id)
    data = rig.service.content(document_id, now["version"])
    return (now["version"], now["sha256"], sha256(data)) == (
        before["version"],
        before["sha256"],
        before["sha256"],
    )


def _stored_once(rig: Rig, document_id: str, edit: Edit, edited: bytes) -> bool:
    """One new version holding the edit, and the one before it as it was.

    Judged once the DS is done with the save. It gives a save up after its
    last retry, or at once on ``{"error": 1}``, and keeps the file;
    ``docdesk recover`` then fetches it, as the periodic recovery would.
    """
    attempts = rig.settled(edit.key)
    if not any(a["success"] for a in attempts):
        recovered = rig.service.run("recover")
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    before = edit.before
    versions = rig.service.versions(document_id)
    previous = rig.service.content(document_id, before["version"])
    newest = rig.service.content(document_id, versions[-1]["version"])
    return (
        [v["version"] for v in versions] == list(range(1, before["version"] + 2))
        and [v["sha256"] for v in versions].count(sha256(edited)) == 1
        and newest == edited
        and sha256(previous) == before["sha256"]
    )


def _untouched_disk(rig: Rig, blobs: set[str]) -> bool:
    """No temporary in staging and no blob beyond those there before."""
    return rig.staging() == [] and rig.blob_files() == blobs


# A full disk


# No injected ENOSPC reaches a real docdesk process; these inject it in one.
IN_PROCESS_ENOSPC = (
    "tests/test_storage_local.py and tests/integration/test_failure_injection.py "
    "inject ENOSPC in-process instead"
)


@contextmanager
def _small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``; skips where root may not mount.

    Root in a container often lacks the capability to mount anything.
    """
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip(f"no mount command to make a small tmpfs; {IN_PROCESS_ENOSPC}")
    where.mkdir()
    mounted = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"root cannot mount a tmpfs here ({' '.join(mounted.stderr.split())});"
            f" {IN_PROCESS_ENOSPC}"
        )
    try:
        yield where
    finally:
        subprocess.run([umount, str(where)], check=True)


def _fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; return it."""
    filler = disk / "filler"
    chunk = 1024 * 1024
    with filler.open("wb", buffering=0) as out:
        while chunk:
            try:
                out.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    return filler


@pytest.mark.skipif(
    os.geteuid() != 0, reason=f"mounting a small tmpfs needs root; {IN_PROCESS_ENOSPC}"
)
def test_a_full_disk_fails_the_save_until_space_returns_then_it_is_stored_once(
    tmp_path: Path,
) -> None:
    with (
        _small_disk(tmp_path / "disk", "24m") as disk,
        running_rig(
            tmp_path, rate=FAST, data=disk / "data", settings=NO_RECOVERY
        ) as rig,
    ):
        document_id = rig.service.upload("Full.docx", large_docx("v1"))["id"]
        blobs = rig.blob_files()
        fillers: list[Path] = []
        edit = rig.begin_save(
            document_id, "no room", before_close=lambda: fillers.append(_fill(disk))
        )

        failed = rig.first_answer(edit.key)
        held = {
            "the DS heard a failure": not failed["success"],
            "the saved version is unchanged": _unchanged(rig, document_id, edit.before),
            "nothing half-written is left": _untouched_disk(rig, blobs),
        }
        fillers[0].unlink()
        edited = rig.edited_file(failed)
        held["stored once when space returned"] = _stored_once(
            rig, document_id, edit, edited
        )
        held["answered 503, so the DS retried"] = failed["http_status"] == 503

    _checked("a full disk mid-save", held, failed)


# The catalog locked or gone


def test_a_locked_sqlite_catalog_fails_the_save_then_the_retry_stores_it_once(
    tmp_path: Path,
) -> None:
    """Another program holds the write lock past docdesk's 30 s busy timeout."""
    with running_rig(tmp_path, rate=SLOW, settings=NO_RECOVERY) as rig:
        document_id = rig.service.upload("Locked.docx", large_docx("v1"))["id"]
        blobs = rig.blob_files()
        edit = rig.begin_save(document_id, "waits for the lock")
        rig.download_started(edit)
        holder = sqlite3.connect(rig.data / "docdesk.sqlite3", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            # Linked, then removed when the commit gave up on the lock.
            _wait(lambda: len(rig.blob_files() - blobs) > 0, 30)
            _wait(lambda: rig.blob_files() == blobs, 60)
            held = {
                "the saved version is unchanged": _unchanged(
                    rig, document_id, edit.before
                ),
                "nothing half-written is left": _untouched_disk(rig, blobs),
            }
        finally:
            holder.rollback()
            holder.close()

        failed = rig.first_answer(edit.key)
        held["the DS heard a failure"] = not failed["success"]
        held["answered 503, so the DS retried"] = failed["http_status"] == 503
        held["stored once when the lock went"] = _stored_once(
            rig, document_id, edit, rig.edited_file(failed)
        )

    _checked("the SQLite catalog locked mid-save", held, failed)


def _wait(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.02)


def _admin_url(url: str) -> tuple[str, str]:
    """The server's maintenance database URL for psycopg, and the database."""
    base, _, name = url.rpartition("/")
    return base.replace("postgresql+psycopg://", "postgresql://") + "/postgres", name


@contextmanager
def _database_gone(url: str) -> Iterator[None]:
    """No connection to the database, open or new, until the block ends."""
    # Here, not above: without psycopg the postgres_url fixture skips the test.
    import psycopg

    admin_url, name = _admin_url(url)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_a_postgresql_catalog_gone_mid_save_fails_it_then_the_retry_stores_it_once(
    tmp_path: Path, postgres_url: str
) -> None:
    async def migrate() -> None:
        catalog = Catalog.from_url(postgres_url)
        await catalog.migrate()
        await catalog.close()

    anyio.run(migrate)
    settings = {"DOCDESK_DATABASE_URL": postgres_url, **NO_RECOVERY}
    with running_rig(tmp_path, rate=SLOW, settings=settings) as rig:
        document_id = rig.service.upload("Gone.docx", large_docx("v1"))["id"]
        blobs = rig.blob_files()
        edit = rig.begin_save(document_id, "saved once it is back")
        rig.download_started(edit)
        with _database_gone(postgres_url):
            failed = rig.first_answer(edit.key)
            listing = rig.service.api.get(f"/api/documents/{document_id}")
            # Whether the commit landed cannot be told while the database is
            # gone: the blob stays, whole, for the orphan sweep to judge.
            kept = rig.blob_files() - blobs
            held = {
                "the DS heard a failure": not failed["success"],
                "answered 503, so the DS retried": failed["http_status"] == 503,
                "the API says 503 meanwhile": listing.status_code == 503,
                "nothing half-written is left": rig.staging() == []
                and all(zipfile.is_zipfile(rig.blobs / name) for name in kept),
            }
        held["stored once when it came back"] = _stored_once(
            rig, document_id, edit, rig.edited_file(failed)
        )
        swept = rig.service.run("sweep", "--older-than", "0")
        held["what the failed commit kept, the orphan sweep removes"] = (
            swept.returncode == 0 and not kept & rig.blob_files()
        )

    _checked("the PostgreSQL catalog gone mid-save", held, failed)


# Downloads that lie about their length


@pytest.mark.parametrize(
    ("by", "check"),
    [
        (1000, "a Content-Length longer than the body"),
        (-1000, "a Content-Length shorter than the body"),
    ],
    ids=["longer", "shorter"],
)
def test_a_download_that_lies_about_its_length_is_not_kept_and_the_edit_is_stored_once(
    tmp_path: Path, by: int, check: str
) -> None:
    """The whole body comes either way; what stops short is what was declared.

    A longer claim ends in a closed connection; a shorter one cuts the zip's
    end off. Either answer is a failure; the DS retries a 503, and keeps a
    file whose save it was refused for docdesk's recovery to fetch.
    """
    with running_rig(tmp_path, rate=FAST, settings=NO_RECOVERY) as rig:
        document_id = rig.service.upload("Liar.docx", large_docx("v1"))["id"]
        blobs = rig.blob_files()
        throttle = rig.throttle
        assert throttle is not None
        edit = rig.begin_save(
            document_id,
            "stored once",
            before_close=lambda: throttle.lie("output.docx", by),
        )

        failed = rig.first_answer(edit.key)
        held = {
            "the DS heard a failure": not failed["success"],
            "the saved version is unchanged": _unchanged(rig, document_id, edit.before),
            "nothing half-written is left": _untouched_disk(rig, blobs),
        }
        throttle.tell_the_truth()
        # The DS drops its link once it gives up; the relay kept the bytes.
        edited = throttle.lied_about[0]
        held["stored once after the fault"] = _stored_once(
            rig, document_id, edit, edited
        )

    _checked(check, held, failed)
