"""A fault at each step of a commit, injected into the running service.

After any of them the previous version must still be current and whole, the
DS must hear a failure, and the DS's own retry, once the fault has passed,
must store the save exactly once. The saves come from the simulator; each
fault fails once, as a transient one does, and the wire takes docdesk's
state at the instant the DS hears the failure, before it tries again.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import pytest

import docdesk.storage.local
from docdesk.errors import CatalogError, StorageError
from docdesk.orphans import sweep_orphans

from .harness import Service, sha256
from .office import make_docx
from .simulated import Simulated, Snapshot

T = TypeVar("T")

OK = {"error": 0}
FAILED = {"error": 1}

Injection = Callable[[pytest.MonkeyPatch, Service], None]


def _disk_fails(*_: object) -> NoReturn:
    raise OSError(errno.EIO, "injected I/O error")


def _disk_full(*_: object) -> NoReturn:
    raise OSError(errno.ENOSPC, "injected full disk")


async def _catalog_fails(*_: object, **__: object) -> NoReturn:
    raise CatalogError("the catalog failed: injected")


async def _catalog_crashes(*_: object, **__: object) -> NoReturn:
    raise RuntimeError("injected bug")


async def _delete_fails(*_: object, **__: object) -> NoReturn:
    raise StorageError("could not delete: injected")


def _once(fault: Callable[..., NoReturn], then: Callable[..., T]) -> Callable[..., T]:
    """``then``, but its first call meets ``fault``."""
    calls = 0

    def first_fails(*args: Any, **kwargs: Any) -> T:
        nonlocal calls
        calls += 1
        if calls == 1:
            fault(*args, **kwargs)
        return then(*args, **kwargs)

    return first_fails


def _once_async(
    fault: Callable[..., Awaitable[NoReturn]], then: Callable[..., Awaitable[T]]
) -> Callable[..., Awaitable[T]]:
    """The coroutine ``then``, but its first call meets ``fault``."""
    calls = 0

    async def first_fails(*args: Any, **kwargs: Any) -> T:
        nonlocal calls
        calls += 1
        if calls == 1:
            await fault(*args, **kwargs)
        return await then(*args, **kwargs)

    return first_fails


def _blob_fsync(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    # Process-wide, but only the blob store calls it: SQLite syncs from C.
    monkeypatch.setattr(os, "fsync", _once(_disk_fails, os.fsync))


def _blob_link(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    monkeypatch.setattr(os, "link", _once(_disk_full, os.link))


def _folder_sync(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    synced = docdesk.storage.local._sync_folder
    monkeypatch.setattr(
        docdesk.storage.local, "_sync_folder", _once(_disk_fails, synced)
    )


def _catalog_commit(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    catalog = service.desk.catalog
    commit = _once_async(_catalog_fails, catalog.commit_version)
    monkeypatch.setattr(catalog, "commit_version", commit)


def _catalog_commit_and_cleanup(
    monkeypatch: pytest.MonkeyPatch, service: Service
) -> None:
    _catalog_commit(monkeypatch, service)
    store = service.desk.store
    monkeypatch.setattr(store, "delete", _once_async(_delete_fails, store.delete))


def _catalog_crash(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    catalog = service.desk.catalog
    commit = _once_async(_catalog_crashes, catalog.commit_version)
    monkeypatch.setattr(catalog, "commit_version", commit)


@pytest.mark.parametrize(
    ("inject", "http_status", "cleans_up"),
    [
        (_blob_fsync, 503, True),
        (_blob_link, 503, True),
        (_folder_sync, 503, True),
        (_catalog_commit, 503, True),
        (_catalog_commit_and_cleanup, 503, False),
        (_catalog_crash, 500, True),
    ],
    ids=[
        "blob-fsync",
        "blob-link",
        "folder-sync",
        "catalog-commit",
        "catalog-commit-and-blob-delete",
        "catalog-crash",
    ],
)
def test_a_fault_in_the_commit_keeps_the_previous_version_and_the_retry_saves_once(
    sim: Simulated,
    monkeypatch: pytest.MonkeyPatch,
    inject: Injection,
    http_status: int,
    cleans_up: bool,
) -> None:
    original = make_docx(f"intact through {inject.__name__}")
    document_id = sim.service.upload(f"Fault {inject.__name__}.docx", original)["id"]
    ann = sim.open(document_id)
    sim.control.edit(ann.id, f"saved after {inject.__name__}")
    blobs = sim.service.blob_files()
    sim.watch(document_id)
    inject(monkeypatch, sim.service)

    sim.control.close(ann.id)
    saved = sim.delivered(2, ann.key)["body"]

    failed, retried = sim.wire.answers(2)
    assert (failed.http_status, failed.json) == (http_status, FAILED)
    seen = failed.seen
    assert isinstance(seen, Snapshot), seen
    assert (seen.version, seen.sha256, seen.key) == (1, sha256(original), ann.key)
    assert seen.staging == []
    assert {name: seen.blobs.get(name) for name in blobs} == blobs
    # When the removal itself fails, what it leaves is the next test's.
    assert seen.blobs == blobs or not cleans_up
    assert retried.json == OK
    assert [v["version"] for v in sim.service.versions(document_id)] == [1, 2]
    assert sim.service.content(document_id) == sim.fetch(saved["url"])


def test_a_failed_removal_leaves_behind_only_the_blob_it_could_not_remove(
    sim: Simulated, monkeypatch: pytest.MonkeyPatch
) -> None:
    document_id = sim.service.upload("Orphans.docx", make_docx("v1"))["id"]
    ann = sim.open(document_id)
    sim.control.edit(ann.id, "a save with its changes archive")
    blobs = sim.service.blob_files()
    sim.watch(document_id)
    _catalog_commit_and_cleanup(monkeypatch, sim.service)

    sim.control.close(ann.id)
    sim.delivered(2, ann.key)

    seen = sim.wire.answers(2)[0].seen
    assert isinstance(seen, Snapshot), seen
    leftovers = sorted(set(seen.blobs) - set(blobs))
    assert [name.rpartition(".")[2] for name in leftovers] == ["docx"]


def test_a_commit_whose_outcome_cannot_be_told_keeps_its_blob_for_the_sweep(
    sim: Simulated, monkeypatch: pytest.MonkeyPatch
) -> None:
    document_id = sim.service.upload("Unknown.docx", make_docx("v1"))["id"]
    ann = sim.open(document_id)
    sim.control.edit(ann.id, "saved while the catalog stopped answering")
    blobs = sim.service.blob_files()
    sim.watch(document_id)
    catalog = sim.service.desk.catalog
    _catalog_commit(monkeypatch, sim.service)
    monkeypatch.setattr(catalog, "names", _once_async(_catalog_fails, catalog.names))

    sim.control.close(ann.id)
    sim.delivered(2, ann.key)

    failed, retried = sim.wire.answers(2)
    assert (failed.http_status, retried.json) == (503, OK)
    seen = failed.seen
    assert isinstance(seen, Snapshot), seen
    kept = sorted(set(seen.blobs) - set(blobs))
    assert [name.rpartition(".")[2] for name in kept] == ["docx"]
    assert [v["version"] for v in sim.service.versions(document_id)] == [1, 2]

    store = sim.service.desk.store
    swept = sim.service.call(sweep_orphans(catalog, store, older_than=0))

    saved = sim.service.call(catalog.version(document_id, 2))
    assert swept >= 1
    assert set(sim.service.blob_files()) - set(blobs) == {
        saved.blob,
        saved.changes_blob,
    }


def test_an_answer_lost_after_the_commit_is_retried_into_the_same_version(
    sim: Simulated,
) -> None:
    document_id = sim.service.upload("After commit.docx", make_docx("v1"))["id"]
    ann = sim.open(document_id)
    sim.control.edit(ann.id, "durable before the answer was lost")
    sim.simulator.faults.callback.append("lose")

    sim.control.close(ann.id)
    saved = sim.delivered(2, ann.key)["body"]

    tries = [(a["attempt"], a["http_status"]) for a in sim.attempts(2, ann.key)]
    assert tries == [(1, None), (2, 200)]
    assert [v["version"] for v in sim.service.versions(document_id)] == [1, 2]
    assert sim.service.content(document_id) == sim.fetch(saved["url"])
    # Each attempt comes with new links and tokens: the retry is known by
    # its bytes, the version it would make being the current one.
    finals = [c for c in sim.service.callbacks(document_id) if c["status"] == 2]
    assert [c["outcome"] for c in finals] == ["saved", "unchanged"]


def test_a_force_save_under_a_fault_keeps_the_previous_version(
    sim: Simulated, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = make_docx("before the force save")
    document_id = sim.service.upload("Forced fault.docx", original)["id"]
    ann = sim.open(document_id)
    sim.control.edit(ann.id, "lost for now")
    monkeypatch.setattr(os, "link", _once(_disk_full, os.link))

    assert sim.control.save(ann.id)
    failed = sim.failed(6, ann.key)

    assert json.loads(failed["answer"]) == FAILED
    assert [v["version"] for v in sim.service.versions(document_id)] == [1]
    assert sim.service.content(document_id) == original


def test_an_upload_under_a_full_disk_is_503_and_keeps_the_current_version(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = make_docx("current")
    document = service.upload("Full disk.docx", original)
    blobs = service.blob_files()
    monkeypatch.setattr(os, "link", _disk_full)

    response = service.client.post(
        f"/api/documents/{document['id']}/versions",
        files={"file": ("Full disk.docx", make_docx("no room"))},
    )

    monkeypatch.undo()
    assert response.status_code == 503
    assert response.json()["error"] == "storage_unavailable"
    assert service.content(document["id"]) == original
    assert service.blob_files() == blobs


def test_a_restore_under_a_catalog_fault_is_503_and_changes_nothing(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_docx("v1")
    document = service.upload("Restore fault.docx", first)
    newer = make_docx("v2")
    service.client.post(
        f"/api/documents/{document['id']}/versions",
        files={"file": ("Restore fault.docx", newer)},
    )
    key = service.session(document["id"]).key
    monkeypatch.setattr(service.desk.catalog, "commit_version", _catalog_fails)

    response = service.client.post(
        f"/api/documents/{document['id']}/versions/1/restore"
    )

    monkeypatch.undo()
    assert response.status_code == 503
    assert response.json()["error"] == "catalog_unavailable"
    assert [v["version"] for v in service.versions(document["id"])] == [1, 2]
    assert service.content(document["id"]) == newer
    assert service.session(document["id"]).key == key
    # The restore would have shared version 1's blob: it must survive.
    assert service.content(document["id"], 1) == first
