"""Capture: force-save an open document now and answer the version it made.

Over real HTTP, against docdesk with its embedded simulator.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from docdesk import capture as capturing
from docdesk import saving
from docdesk.capture import CAPTURE, settle_capture
from docdesk.formats import blank_document
from docdesk.simulator.edits import read_text
from docdesk.testing import ControlClient
from docdesk.web import app as web_app


@pytest.fixture
def service(
    embedded: tuple[httpx.Client, ControlClient], monkeypatch: pytest.MonkeyPatch
) -> tuple[httpx.Client, ControlClient]:
    # Read per request: a capture gives up after a second here.
    monkeypatch.setattr(web_app, "CAPTURE_WAIT", 1.0)
    return embedded


def upload(api: httpx.Client) -> str:
    response = api.post(
        "/api/documents", files={"file": ("Form.docx", blank_document("docx"))}
    )
    document_id: str = response.json()["id"]
    return document_id


def open_editor(api: httpx.Client, control: ControlClient, document_id: str) -> str:
    config: dict[str, Any] = api.get(
        f"/api/documents/{document_id}/editor-config",
        params={"user_id": "ann", "user_name": "Ann"},
    ).json()
    return control.open(config)


def versions(api: httpx.Client, document_id: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = api.get(
        f"/api/documents/{document_id}/versions"
    ).json()["versions"]
    return listed


def test_a_capture_of_an_edited_document_answers_the_new_version(
    service: tuple[httpx.Client, ControlClient],
) -> None:
    api, control = service
    document_id = upload(api)
    editor = open_editor(api, control, document_id)
    control.edit(editor, "filled in")

    captured = api.post(f"/api/documents/{document_id}/capture")

    assert captured.status_code == 200
    body = captured.json()
    assert body["version"] == 2
    assert body["capture"] == {"outcome": "saved"}
    saved = versions(api, document_id)[-1]
    assert (saved["source"], saved["forcesave_type"]) == ("forcesave", 0)
    content = api.get(f"/api/documents/{document_id}/versions/2/content").content
    assert read_text("docx", content) == ["filled in"]


def test_a_capture_with_nothing_changed_answers_the_current_version(
    service: tuple[httpx.Client, ControlClient],
) -> None:
    api, control = service
    document_id = upload(api)
    open_editor(api, control, document_id)

    captured = api.post(f"/api/documents/{document_id}/capture").json()

    assert captured["version"] == 1
    assert captured["capture"] == {"outcome": "unchanged"}
    assert len(versions(api, document_id)) == 1


def test_a_capture_with_nobody_editing_answers_the_current_version(
    service: tuple[httpx.Client, ControlClient],
) -> None:
    api, _ = service
    document_id = upload(api)

    captured = api.post(f"/api/documents/{document_id}/capture").json()

    assert captured["version"] == 1
    assert captured["capture"] == {"outcome": "not_editing"}


def test_a_capture_whose_callback_never_comes_times_out_and_saves_nothing(
    service: tuple[httpx.Client, ControlClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, control = service
    # Asked again within the wait, and every callback lost all the same.
    monkeypatch.setattr(capturing, "ASK_AGAIN_AFTER", 0.2)
    document_id = upload(api)
    editor = open_editor(api, control, document_id)
    control.edit(editor, "lost in transit")
    control.faults(callback="drop", times=100)

    captured = api.post(f"/api/documents/{document_id}/capture")

    assert captured.status_code == 504
    assert captured.json()["error"] == "capture_timeout"
    assert "nothing was saved" in captured.json()["message"]
    assert len(versions(api, document_id)) == 1
    assert api.get(f"/api/documents/{document_id}").json()["version"] == 1


def test_a_second_capture_after_the_first_saves_only_new_edits(
    service: tuple[httpx.Client, ControlClient],
) -> None:
    api, control = service
    document_id = upload(api)
    editor = open_editor(api, control, document_id)
    control.edit(editor, "one")
    first = api.post(f"/api/documents/{document_id}/capture").json()
    control.edit(editor, "two")

    second = api.post(f"/api/documents/{document_id}/capture").json()
    third = api.post(f"/api/documents/{document_id}/capture").json()

    assert (first["version"], second["version"], third["version"]) == (2, 3, 3)
    assert third["capture"] == {"outcome": "unchanged"}


@pytest.mark.parametrize("fault", ["drop", "reject"])
def test_a_capture_whose_callback_is_lost_asks_again_and_answers_the_version(
    embedded: tuple[httpx.Client, ControlClient],
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    """The DS never retries a status 6; asked again, it re-sends the result."""
    api, control = embedded
    monkeypatch.setattr(web_app, "CAPTURE_WAIT", 30.0)
    monkeypatch.setattr(capturing, "ASK_AGAIN_AFTER", 0.3)
    document_id = upload(api)
    editor = open_editor(api, control, document_id)
    control.edit(editor, "kept after all")
    control.faults(callback=fault)

    captured = api.post(f"/api/documents/{document_id}/capture")

    assert captured.status_code == 200
    assert captured.json()["version"] == 2
    assert captured.json()["capture"] == {"outcome": "saved"}
    assert len(versions(api, document_id)) == 2
    content = api.get(f"/api/documents/{document_id}/versions/2/content").content
    assert read_text("docx", content) == ["kept after all"]
    forced = [c for c in control.callbacks() if c["status"] == 6]
    assert [c["success"] for c in forced] == [False, True]
    assert forced[0]["http_status"] == (None if fault == "drop" else 502)
    userdata = {c["body"]["userdata"] for c in forced}
    assert len(userdata) == 1
    assert userdata.pop().startswith(CAPTURE)


def test_a_capture_asked_again_while_its_callback_runs_saves_once(
    embedded: tuple[httpx.Client, ControlClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking while the first callback is still answered gets 4, not a second 6."""
    api, control = embedded
    monkeypatch.setattr(web_app, "CAPTURE_WAIT", 30.0)
    monkeypatch.setattr(capturing, "ASK_AGAIN_AFTER", 0.2)

    async def slow_settle(*args: Any) -> None:
        # The callback's answer waits out a few more asks.
        await anyio.sleep(1.0)
        await settle_capture(*args)

    monkeypatch.setattr(saving, "settle_capture", slow_settle)
    document_id = upload(api)
    editor = open_editor(api, control, document_id)
    control.edit(editor, "once")

    captured = api.post(f"/api/documents/{document_id}/capture").json()

    assert (captured["version"], captured["capture"]) == (2, {"outcome": "saved"})
    # A second force save would have started while the first was answered,
    # so it would be answered well within this.
    with pytest.raises(TimeoutError):
        control.wait_for_callback(6, count=2, timeout=2.5)
    assert len(versions(api, document_id)) == 2
