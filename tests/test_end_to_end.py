"""docdesk on its embedded defaults, edited through the built-in simulator.

Everything is real but the Document Server: the service over HTTP, SQLite,
local files, and the simulator it mounts, driven through its control API
as a browser's stand-in editor would drive it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from docdesk.formats import blank_document
from docdesk.settings import SIMULATOR_PATH
from docdesk.simulator.edits import read_text
from docdesk.testing import ControlClient


@pytest.fixture
def service(
    embedded: tuple[httpx.Client, ControlClient],
) -> tuple[httpx.Client, ControlClient]:
    return embedded


def config_for(api: httpx.Client, document_id: str, user: str) -> dict[str, Any]:
    response = api.get(
        f"/api/documents/{document_id}/editor-config",
        params={"user_id": user, "user_name": user.title()},
    )
    response.raise_for_status()
    config: dict[str, Any] = response.json()
    return config


def versions(api: httpx.Client, document_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.get(
        f"/api/documents/{document_id}/versions"
    ).json()["versions"]
    return found


def text_of(api: httpx.Client, document_id: str, number: int) -> list[str]:
    url = f"/api/documents/{document_id}/versions/{number}/content"
    return read_text("docx", api.get(url).content)


def wait_for_versions(api: httpx.Client, document_id: str, count: int) -> None:
    deadline = time.monotonic() + 15
    while len(versions(api, document_id)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} versions"
        time.sleep(0.05)


def test_two_editors_save_and_leave_and_every_edit_is_kept(
    service: tuple[httpx.Client, ControlClient],
) -> None:
    api, control = service
    upload = api.post(
        "/api/documents", files={"file": ("Plan.docx", blank_document("docx"))}
    )
    document_id = upload.json()["id"]
    ann = control.open(config_for(api, document_id, "ann"))
    bob = control.open(config_for(api, document_id, "bob"))

    control.edit(ann, "Ann's first line")
    control.edit(bob, "Bob's reply")
    assert control.save(ann)
    wait_for_versions(api, document_id, 2)
    control.edit(bob, "Bob after the save")
    control.close(ann)
    control.close(bob)
    wait_for_versions(api, document_id, 3)

    kept = versions(api, document_id)
    assert [v["source"] for v in kept] == ["upload", "forcesave", "save"]
    assert text_of(api, document_id, 2) == ["Ann's first line", "Bob's reply"]
    assert text_of(api, document_id, 3) == [
        "Ann's first line",
        "Bob's reply",
        "Bob after the save",
    ]
    assert kept[2]["author"]["id"] == "bob"
    assert kept[2]["has_changes"]


def test_the_key_changes_after_the_final_save_and_a_reopen_edits_the_new_version(
    service: tuple[httpx.Client, ControlClient],
) -> None:
    api, control = service
    upload = api.post(
        "/api/documents", files={"file": ("Plan.docx", blank_document("docx"))}
    )
    document_id = upload.json()["id"]
    first = config_for(api, document_id, "ann")
    editor = control.open(first)
    control.edit(editor, "one")
    control.close(editor)
    wait_for_versions(api, document_id, 2)

    second = config_for(api, document_id, "ann")
    editor = control.open(second)

    assert second["document"]["key"] != first["document"]["key"]
    assert control.state(editor)["text"] == ["one"]


def test_the_editor_page_script_is_served_by_the_embedded_simulator(
    service: tuple[httpx.Client, ControlClient],
) -> None:
    api, _ = service

    script = api.get(SIMULATOR_PATH + "/web-apps/apps/api/documents/api.js")

    assert script.status_code == 200
    assert "DocsAPI" in script.text
