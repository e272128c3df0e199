"""docdesk's pages in a real browser, against the service and its simulator."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from docdesk.formats import blank_document

from .conftest import Service

pytest.importorskip(
    "playwright.sync_api",
    reason="playwright is not installed: pip install playwright "
    "(the browser itself comes from Debian: apt-get install chromium)",
)

from playwright.sync_api import Page, expect

Shot = Callable[[Page, str], None]

EDITOR = "[data-docdesk-sim=editor]"


def open_editor(page: Page, service: Service, document_id: str) -> None:
    page.goto(f"{service.url}/documents/{document_id}/edit")
    expect(page.locator("[data-docdesk-sim=input]")).to_be_visible()
    expect(page.locator("#messages")).to_have_text("Ready.")


def add_text(page: Page, text: str, *, within: str = "") -> None:
    scope = page.locator(within) if within else page.locator("body")
    scope.locator("[data-docdesk-sim=input]").fill(text)
    scope.locator("[data-docdesk-sim=add]").click()
    expect(scope.locator("[data-docdesk-sim=text] li").last).to_have_text(text)


def made_by(page: Page, version: int) -> Any:
    return page.locator(f"tr[data-version='{version}'] .made-by")


def test_an_upload_from_the_list_page_is_listed(
    page: Page, service: Service, shot: Shot, tmp_path: Path
) -> None:
    report = tmp_path / "Quarterly report.docx"
    report.write_bytes(blank_document("docx"))
    page.goto(service.url)
    expect(page.locator(".empty")).to_contain_text("No documents yet")
    shot(page, "1-empty-list")

    page.set_input_files("#upload-file", str(report))
    page.get_by_role("button", name="Upload").click()

    expect(page.locator(".document-title")).to_have_text(["Quarterly report.docx"])
    expect(page.locator("#messages")).to_have_text("Uploaded “Quarterly report.docx”.")
    expect(page.locator(".document .meta")).to_contain_text("Version 1")
    shot(page, "2-listed")
    assert [
        d["title"] for d in service.api.get("/api/documents").json()["documents"]
    ] == ["Quarterly report.docx"]


def test_a_new_blank_spreadsheet_is_created_from_the_list_page(
    page: Page, service: Service, shot: Shot
) -> None:
    page.goto(service.url)

    page.get_by_label("Title").fill("Budget")
    page.get_by_label("Kind").select_option("xlsx")
    page.get_by_role("button", name="Create").click()

    expect(page.locator(".document-title")).to_have_text(["Budget.xlsx"])
    shot(page, "created")
    page.get_by_role("link", name="Versions").click()
    expect(made_by(page, 1)).to_have_text("New blank document")


def test_text_saved_with_the_save_button_shows_as_a_new_version(
    page: Page, service: Service, shot: Shot
) -> None:
    document_id = service.upload("Plan.docx")
    open_editor(page, service, document_id)
    assert page.title() == "Plan.docx · docdesk"
    shot(page, "1-editor-open")

    add_text(page, "Hello from the browser")
    page.locator("[data-docdesk-sim=save]").click()
    service.wait_for_versions(document_id, 2)
    shot(page, "2-saved")
    page.goto(f"{service.url}/documents/{document_id}")

    expect(made_by(page, 2)).to_have_text("Save button")
    expect(page.locator("tr[data-version='2'] td[data-label=Author]")).to_have_text(
        "docdesk user"
    )
    expect(page.locator("p.editing")).to_have_text("Editing now: docdesk-user")
    expect(page.locator("table.callbacks")).to_contain_text("6 force save")
    shot(page, "3-document-page")
    page.goto(service.url)
    expect(page.locator(".document .editing")).to_have_text("Editing now: docdesk-user")


def test_a_capture_button_puts_the_captured_version_in_the_submitted_form(
    page: Page, service: Service, shot: Shot
) -> None:
    report = service.upload("Expenses.docx")
    appendix = service.upload("Receipts.docx")
    page.goto(f"{service.url}/host/report?report={report}&appendix={appendix}")
    for editor in ("#report-editor", "#appendix-editor"):
        expect(page.locator(f"{editor} [data-docdesk-sim=status]")).to_have_text(
            "1 editing"
        )
    expect(page.locator("#appendix-editor [data-docdesk-sim=title]")).to_have_text(
        "Receipts.docx"
    )
    add_text(page, "Taxi, 23 EUR", within="#report-editor")
    shot(page, "1-host-form")

    page.get_by_role("button", name="Save and send").click()
    page.wait_for_url("**/host/submitted")

    submitted = json.loads(page.locator("body").inner_text())
    assert submitted == {
        "comment": "All receipts attached",
        "report_version": "2",
        "action": "send",
    }
    shot(page, "2-submitted")
    captured = service.versions(report)[1]
    assert (captured["source"], captured["forcesave_type"]) == ("forcesave", 0)
    assert len(service.versions(appendix)) == 1


def test_a_failed_capture_says_why_and_leaves_the_form_unsent(
    page: Page, service: Service
) -> None:
    report = service.upload("Expenses.docx")
    appendix = service.upload("Receipts.docx")
    page.goto(f"{service.url}/host/report?report={report}&appendix={appendix}")
    expect(page.locator("#report-editor [data-docdesk-sim=input]")).to_be_visible()
    service.api.delete(f"/api/documents/{report}").raise_for_status()

    page.get_by_role("button", name="Save and send").click()

    expect(page.locator(".docdesk-message")).to_have_attribute("data-kind", "error")
    assert page.url.endswith(f"appendix={appendix}")
    expect(page.get_by_role("button", name="Save and send")).not_to_have_attribute(
        "aria-busy", "true"
    )


def test_a_version_chosen_in_the_editor_history_is_restored(
    page: Page, service: Service, shot: Shot
) -> None:
    document_id = service.upload("Minutes.docx")
    open_editor(page, service, document_id)
    add_text(page, "A line to undo")
    page.locator("[data-docdesk-sim=save]").click()
    service.wait_for_versions(document_id, 2)

    page.locator("[data-docdesk-sim=history-open]").click()
    history = page.locator("[data-docdesk-sim=history-list] li")
    expect(history).to_have_count(2)
    history.and_(page.locator("[data-version='1']")).get_by_role("button").click()
    expect(page.locator("[data-docdesk-sim=history-view]")).to_have_attribute(
        "data-version", "1"
    )
    shot(page, "1-history")
    page.locator("[data-docdesk-sim=restore]").click()

    expect(page.locator("#messages")).to_contain_text("Version 1 restored as version 3")
    expect(history).to_have_count(3)
    shot(page, "2-restored")
    page.goto(f"{service.url}/documents/{document_id}")
    expect(made_by(page, 3)).to_have_text("Restore of version 1")
    shot(page, "3-document-page")


def test_closing_the_history_reopens_the_editor_on_the_restored_version(
    page: Page, service: Service
) -> None:
    document_id = service.upload("Minutes.docx")
    open_editor(page, service, document_id)
    add_text(page, "A line to undo")
    page.locator("[data-docdesk-sim=save]").click()
    service.wait_for_versions(document_id, 2)
    page.locator("[data-docdesk-sim=history-open]").click()
    page.locator("[data-docdesk-sim=history-version]").first.click()
    page.locator("[data-docdesk-sim=restore]").click()
    expect(page.locator("#messages")).to_contain_text("restored as version 3")

    page.locator("[data-docdesk-sim=history-close]").click()

    expect(page.locator("[data-docdesk-sim=status]")).to_have_text("1 editing")
    expect(page.locator("[data-docdesk-sim=text] li")).to_have_count(0)
    assert service.api.get(f"/api/documents/{document_id}").json()["version"] == 3


def test_renaming_on_the_editor_page_renames_the_document_and_the_open_editor(
    page: Page, service: Service, shot: Shot
) -> None:
    document_id = service.upload("Draft.docx")
    open_editor(page, service, document_id)

    page.get_by_label("Title").fill("Final.docx")
    page.get_by_role("button", name="Rename").click()

    expect(page.locator("#messages")).to_have_text("Renamed to “Final.docx”.")
    expect(page.locator("#document-link")).to_have_text("Final.docx")
    expect(page.locator("[data-docdesk-sim=title]")).to_have_text("Final.docx")
    shot(page, "renamed")
    title = service.api.get(f"/api/documents/{document_id}").json()["title"]
    assert title == "Final.docx"


def test_save_a_copy_keeps_the_edits_in_a_new_document(
    page: Page, service: Service
) -> None:
    document_id = service.upload("Offer.docx")
    open_editor(page, service, document_id)
    add_text(page, "Price: 100")

    page.get_by_role("button", name="Save a copy").click()

    expect(page.locator("#messages")).to_contain_text("Saved a copy as")
    page.get_by_role("link", name="Open the copy").click()
    expect(page.locator("[data-docdesk-sim=text] li")).to_have_text(["Price: 100"])
    assert len(service.api.get("/api/documents").json()["documents"]) == 2


def test_a_document_deleted_from_the_list_page_is_gone(
    page: Page, service: Service, shot: Shot
) -> None:
    keep = service.upload("Keep.docx")
    service.upload("Old draft.docx")
    page.goto(service.url)
    expect(page.locator(".document")).to_have_count(2)
    shot(page, "1-before")
    page.once("dialog", lambda dialog: dialog.accept())

    page.get_by_role("button", name="Delete").last.click()

    expect(page.locator("#messages")).to_have_text("Deleted “Old draft.docx”.")
    expect(page.locator(".document-title")).to_have_text(["Keep.docx"])
    shot(page, "2-after")
    remaining = service.api.get("/api/documents").json()["documents"]
    assert [d["id"] for d in remaining] == [keep]


def test_a_declined_delete_keeps_the_document(page: Page, service: Service) -> None:
    service.upload("Keep.docx")
    page.goto(service.url)
    page.once("dialog", lambda dialog: dialog.dismiss())

    page.get_by_role("button", name="Delete").click()

    expect(page.locator(".document")).to_have_count(1)
    assert len(service.api.get("/api/documents").json()["documents"]) == 1


def test_the_editor_page_says_so_when_the_document_server_cannot_be_loaded(
    page: Page, make_service: Callable[..., Service], shot: Shot
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    service = make_service(
        {
            "DOCDESK_DOCUMENT_SERVER_URL": f"http://127.0.0.1:{closed_port}",
            "DOCDESK_JWT_SECRET": "a test secret that is long enough 0123456789",
        }
    )
    document_id = service.upload("Plan.docx")

    page.goto(f"{service.url}/documents/{document_id}/edit")

    message = page.locator("#messages")
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text(
        f"the Document Server at http://127.0.0.1:{closed_port} could not be loaded"
    )
    shot(page, "ds-unavailable")


def test_the_pages_fit_a_phone_screen(
    phone: Page, service: Service, shot: Shot
) -> None:
    document_id = service.upload("A report with a rather long title for a phone.docx")
    service.api.post(f"/api/documents/{document_id}/versions/1/restore")
    pages = {
        "list": service.url,
        "document": f"{service.url}/documents/{document_id}",
        "editor": f"{service.url}/documents/{document_id}/edit",
    }

    widths = {}
    for name, url in pages.items():
        phone.goto(url)
        if name == "editor":
            expect(phone.locator("[data-docdesk-sim=status]")).to_have_text("1 editing")
        shot(phone, f"phone-{name}")
        widths[name] = phone.evaluate("document.documentElement.scrollWidth")

    assert widths == {"list": 375, "document": 375, "editor": 375}


# Without a browser: what the pages answer


def test_a_missing_document_has_a_not_found_page(service: Service) -> None:
    response = service.api.get("/documents/0123456789abcdef")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Not found" in response.text


def test_titles_are_escaped_on_every_page(service: Service) -> None:
    document_id = service.upload("<img src=x onerror=alert(1)>.docx")

    pages = [
        service.api.get(path).text
        for path in ("/", f"/documents/{document_id}", f"/documents/{document_id}/edit")
    ]

    for html in pages:
        assert "<img src=x" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;.docx" in html


def test_the_view_mode_editor_page_offers_no_changes(service: Service) -> None:
    document_id = service.upload("Plan.docx")

    html = service.api.get(f"/documents/{document_id}/edit?mode=view").text

    assert "viewing as docdesk user" in html
    assert "Rename" not in html
    assert '"mode": "view"' in html


def test_the_static_files_are_served(service: Service) -> None:
    for name in ("docdesk.js", "pages.js", "docdesk.css"):
        response = httpx.get(f"{service.url}/static/{name}")

        assert response.status_code == 200
        assert len(response.content) > 1000
