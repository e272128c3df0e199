"""A fault at each step of a commit, injected into the running service.

After any of them the previous version must still be current and whole,
the DS must hear a failure, and once the fault is gone the DS's retry must
store the save exactly once.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import NoReturn

import pytest

import docdesk.storage.local
from docdesk.errors import CatalogError, StorageError

from .harness import Service, sha256
from .office import make_docx
from .standin import StandIn

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


def _blob_fsync(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    # Process-wide, but only the blob store calls it: SQLite syncs from C.
    monkeypatch.setattr(os, "fsync", _disk_fails)


def _blob_link(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    monkeypatch.setattr(os, "link", _disk_full)


def _folder_sync(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    monkeypatch.setattr(docdesk.storage.local, "_sync_folder", _disk_fails)


def _catalog_commit(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    monkeypatch.setattr(service.desk.catalog, "commit_version", _catalog_fails)


def _catalog_commit_and_cleanup(
    monkeypatch: pytest.MonkeyPatch, service: Service
) -> None:
    monkeypatch.setattr(service.desk.catalog, "commit_version", _catalog_fails)
    monkeypatch.setattr(service.desk.store, "delete", _delete_fails)


def _catalog_crash(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    monkeypatch.setattr(service.desk.catalog, "commit_version", _catalog_crashes)


@pytest.mark.parametrize(
    ("inject", "http_status"),
    [
        (_blob_fsync, 503),
        (_blob_link, 503),
        (_folder_sync, 503),
        (_catalog_commit, 503),
        (_catalog_commit_and_cleanup, 503),
        (_catalog_crash, 500),
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
def test_a_fault_in_the_commit_keeps_the_previous_version_and_a_retry_saves_once(
    service: Service,
    standin: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    inject: Injection,
    http_status: int,
) -> None:
    original = make_docx(f"intact through {inject.__name__}")
    document = service.upload(f"Fault {inject.__name__}.docx", original)
    session = service.session(document["id"])
    edited = make_docx(f"saved after {inject.__name__}")
    name = f"fault{inject.__name__}/output.docx"
    standin.put(name, edited)
    inject(monkeypatch, service)

    failed = standin.callback(
        session.callback_url, standin.save_fields(session.key, 2, name)
    )

    monkeypatch.undo()
    assert failed.status_code == http_status
    assert failed.json() == FAILED
    assert service.document(document["id"])["version"] == 1
    assert sha256(service.content(document["id"])) == sha256(original)
    assert sha256(service.content(document["id"], 1)) == document["sha256"]
    assert service.session(document["id"]).key == session.key
    assert service.staging() == []
    retried = standin.callback(
        session.callback_url, standin.save_fields(session.key, 2, name)
    )
    assert retried.json() == OK
    assert [v["version"] for v in service.versions(document["id"])] == [1, 2]
    assert service.content(document["id"]) == edited


@pytest.mark.parametrize(
    "inject",
    [_blob_fsync, _blob_link, _folder_sync, _catalog_commit, _catalog_crash],
    ids=["blob-fsync", "blob-link", "folder-sync", "catalog-commit", "catalog-crash"],
)
def test_a_failed_commit_leaves_no_blob_behind(
    service: Service,
    standin: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    inject: Injection,
) -> None:
    document = service.upload("No leftovers.docx", make_docx("v1"))
    session = service.session(document["id"])
    standin.put(f"leftover{inject.__name__}.docx", make_docx("v2"))
    blobs = service.blob_files()
    inject(monkeypatch, service)

    standin.callback(
        session.callback_url,
        standin.save_fields(session.key, 2, f"leftover{inject.__name__}.docx"),
    )

    monkeypatch.undo()
    assert service.blob_files() == blobs
    assert service.staging() == []


def test_a_fault_after_the_commit_is_cured_by_the_retry_with_one_version(
    service: Service, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = service.upload("After commit.docx", make_docx("v1"))
    session = service.session(document["id"])
    edited = make_docx("durable before the fault")
    standin.put("aftercommit/output.docx", edited)
    monkeypatch.setattr(service.desk.catalog, "record_delivery", _catalog_fails)

    failed = standin.callback(
        session.callback_url,
        standin.save_fields(session.key, 2, "aftercommit/output.docx"),
    )

    monkeypatch.undo()
    assert failed.status_code == 503
    retried = standin.callback(
        session.callback_url,
        standin.save_fields(session.key, 2, "aftercommit/output.docx"),
    )
    assert retried.json() == OK
    assert [v["version"] for v in service.versions(document["id"])] == [1, 2]
    assert service.content(document["id"]) == edited


def test_a_force_save_under_a_fault_keeps_the_previous_version(
    service: Service, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = make_docx("before the force save")
    document = service.upload("Forced fault.docx", original)
    session = service.session(document["id"])
    standin.put("forcedfault/output.docx", make_docx("lost for now"))
    monkeypatch.setattr(os, "link", _disk_full)

    failed = standin.callback(
        session.callback_url,
        standin.save_fields(session.key, 6, "forcedfault/output.docx"),
    )

    monkeypatch.undo()
    assert failed.json() == FAILED
    assert [v["version"] for v in service.versions(document["id"])] == [1]
    assert service.content(document["id"]) == original


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
