"""Callbacks for one document that arrive at the same moment."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .harness import Service, sha256
from .office import make_docx
from .standin import StandIn

OK = {"error": 0}


async def _post_all(
    standin: StandIn, callback_url: str, bodies: list[dict[str, object]]
) -> list[httpx.Response]:
    """POST every callback at once, each signed as the DS signs it."""
    signed = [standin.signed(fields) for fields in bodies]
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(callback_url, content=body, headers=headers)
                for body, headers in signed
            )
        )


@pytest.mark.anyio
@pytest.mark.parametrize("count", [2, 5])
async def test_simultaneous_force_saves_each_become_a_version_in_order(
    service: Service, standin: StandIn, count: int
) -> None:
    document = service.upload(f"Busy {count}.docx", make_docx("before"))
    session = service.session(document["id"])
    contents = [make_docx(f"force save {n} of {count}") for n in range(count)]
    bodies: list[dict[str, object]] = []
    for n, content in enumerate(contents):
        standin.put(f"busy-{count}/{n}.docx", content)
        bodies.append(standin.save_fields(session.key, 6, f"busy-{count}/{n}.docx"))

    responses = await _post_all(standin, session.callback_url, bodies)

    assert [r.json() for r in responses] == [OK] * count
    versions = service.versions(document["id"])
    assert [v["version"] for v in versions] == list(range(1, count + 2))
    assert {v["sha256"] for v in versions[1:]} == {sha256(c) for c in contents}
    for version in versions[1:]:
        kept = service.content(document["id"], version["version"])
        assert sha256(kept) == version["sha256"]


@pytest.mark.anyio
async def test_one_status_2_delivered_twice_at_once_makes_one_version(
    service: Service, standin: StandIn
) -> None:
    document = service.upload("Raced.docx", make_docx("before"))
    session = service.session(document["id"])
    standin.put("raced/output.docx", make_docx("the one save"))
    bodies: list[dict[str, object]] = [
        standin.save_fields(session.key, 2, "raced/output.docx") for _ in range(2)
    ]

    responses = await _post_all(standin, session.callback_url, bodies)

    assert [r.json() for r in responses] == [OK, OK]
    assert [v["version"] for v in service.versions(document["id"])] == [1, 2]


@pytest.mark.anyio
async def test_a_force_save_and_an_upload_at_once_are_both_kept(
    service: Service, standin: StandIn
) -> None:
    document = service.upload("Both.docx", make_docx("before"))
    session = service.session(document["id"])
    saved, uploaded = make_docx("from the editor"), make_docx("from the browser")
    standin.put("both/output.docx", saved)
    body, headers = standin.signed(
        standin.save_fields(session.key, 6, "both/output.docx")
    )

    async with httpx.AsyncClient(base_url=service.url, trust_env=False) as client:
        callback, upload = await asyncio.gather(
            client.post(session.callback_url, content=body, headers=headers),
            client.post(
                f"/api/documents/{document['id']}/versions",
                files={"file": ("Both.docx", uploaded)},
            ),
        )

    assert (callback.json(), upload.status_code) == (OK, 201)
    versions = service.versions(document["id"])
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert {v["sha256"] for v in versions[1:]} == {sha256(saved), sha256(uploaded)}
