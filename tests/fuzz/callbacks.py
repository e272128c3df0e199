"""Callbacks as the Document Server sends them, and what each must leave behind.

Shared by the callback properties: a save handing over a fresh file on the
stand-in origin, the two tokens the DS signs, and the checks for a hostile
callback (nothing written, nothing fetched) and a genuine one (one version).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from .rig import Rig, Seen, docx, sign

__all__ = [
    "EDITOR",
    "Request",
    "check_genuine",
    "check_hostile",
    "check_quiet",
    "save_fields",
    "send",
    "signed",
]

EDITOR = "78e1e841"


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    headers: dict[str, str]


def save_fields(rig: Rig, key: str, status: int) -> dict[str, Any]:
    """The fields of a save handing over a new, unique, well-formed file."""
    content = docx(f"edit {secrets.token_hex(8)}")
    url = rig.origin.put(f"{secrets.token_hex(6)}/output.docx", content)
    fields: dict[str, Any] = {
        "key": key,
        "status": status,
        "url": url,
        "users": [EDITOR],
        "lastsave": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "filetype": "docx",
    }
    if status == 2:
        fields["actions"] = [{"type": 0, "userid": EDITOR}]
        fields["notmodified"] = False
    else:
        fields["actions"] = [{"type": 2, "userid": EDITOR}]
        fields["forcesavetype"] = 1
    return fields


def signed(rig: Rig, url: str, fields: dict[str, Any]) -> Request:
    """A callback signed as the Document Server signs one: body and header."""
    body = {**fields, "token": sign(fields)}
    header = sign({"payload": fields})
    rig.remember(url, body["token"], header)
    rig.remember_link(fields.get("url"))
    return Request(
        url, json.dumps(body).encode(), {"Authorization": f"Bearer {header}"}
    )


def send(rig: Rig, request: Request) -> httpx.Response:
    return rig.post(request.url, request.body, request.headers)


def check_hostile(seen: Seen, response: httpx.Response) -> None:
    """What every callback that is not a genuine save must leave behind."""
    assert response.status_code < 500, response.text
    assert not seen.wrote, seen.changes()
    check_quiet(seen)


def check_quiet(seen: Seen) -> None:
    """Nothing fetched, nothing connected to, nothing secret in a log."""
    assert seen.origin_requests == [], "a hostile callback fetched a file"
    assert seen.off_origin == []
    assert seen.trapped == 0
    assert seen.leaks == []


def check_genuine(seen: Seen, response: httpx.Response, versions: int) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"error": 0}
    assert seen.wrote, "a genuine save wrote nothing"
    assert len(seen.origin_requests) == 1
    assert seen.off_origin == []
    assert seen.trapped == 0
    assert seen.leaks == []
    assert versions == 1
