"""``document.url``: the Document Server downloads the file it opens.

The downloads of an honest DS are the simulator's, opening an editor; the
links and tokens no DS sends (no signature, a wrong one, a forged or expired
JWT) come from the stand-in.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt

from .conftest import SECRET
from .harness import Service
from .office import make_docx
from .simulated import Simulated
from .standin import StandIn


def _with_query(url: str, **changes: str | None) -> str:
    """``url`` with query fields replaced, or dropped where None."""
    parts = urlsplit(url)
    query: dict[str, str | None] = dict(parse_qsl(parts.query))
    query.update(changes)
    kept = {name: value for name, value in query.items() if value is not None}
    return parts._replace(query=urlencode(kept)).geturl()


def test_the_ds_downloads_the_current_bytes_with_its_header_jwt(
    sim: Simulated,
) -> None:
    content = make_docx("open me")
    document_id = sim.service.upload("Open.docx", content)["id"]

    ann = sim.open(document_id)

    [request] = [r for r in sim.wire.sent if r.method == "GET"]
    [download] = [h for h in sim.wire.heard if h.method == "GET"]
    bearer = request.headers["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(bearer, SECRET, algorithms=["HS256"])
    assert claims["payload"] == {"url": ann.config["document"]["url"]}
    assert (download.http_status, download.body) == (200, content)
    assert sim.control.state(ann.id)["text"] == ["open me"]


def test_a_signed_link_alone_serves_when_the_ds_sends_no_jwt(
    service: Service,
) -> None:
    content = make_docx("no header")
    document = service.upload("Plain.docx", content)
    session = service.session(document["id"])

    response = service.client.get(session.document_url)

    assert response.status_code == 200
    assert response.content == content


def test_a_link_without_its_signature_serves_no_bytes(
    service: Service, standin: StandIn
) -> None:
    content = make_docx("unsigned")
    document = service.upload("Unsigned.docx", content)
    session = service.session(document["id"])

    response = standin.download(_with_query(session.document_url, sig=None))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert content not in response.content


def test_an_altered_signature_serves_no_bytes(
    service: Service, standin: StandIn
) -> None:
    content = make_docx("altered")
    document = service.upload("Altered.docx", content)
    session = service.session(document["id"])
    signature = dict(parse_qsl(urlsplit(session.document_url).query))["sig"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]

    response = standin.download(_with_query(session.document_url, sig=flipped))

    assert response.status_code == 403
    assert content not in response.content


def test_the_signature_of_another_document_serves_no_bytes(
    service: Service, standin: StandIn
) -> None:
    secret_content = make_docx("salaries")
    target = service.upload("Salaries.docx", secret_content)
    mine = service.session(service.upload("Mine.docx", make_docx("mine"))["id"])
    theirs = service.session(target["id"])
    my_signature = dict(parse_qsl(urlsplit(mine.document_url).query))["sig"]

    response = standin.download(
        _with_query(theirs.document_url, sig=my_signature, key=mine.key)
    )

    assert response.status_code == 403
    assert secret_content not in response.content


def test_the_signature_of_another_key_serves_no_bytes(
    service: Service, standin: StandIn
) -> None:
    first = make_docx("first")
    document = service.upload("Keys.docx", first)
    old = service.session(document["id"])
    service.client.post(
        f"/api/documents/{document['id']}/versions",
        files={"file": ("Keys.docx", make_docx("second"))},
    )
    new = service.session(document["id"])

    response = standin.download(_with_query(old.document_url, key=new.key))

    assert response.status_code == 403
    assert b"PK" not in response.content


def test_a_forged_jwt_header_serves_no_bytes(
    service: Service, standin: StandIn
) -> None:
    content = make_docx("forged")
    document = service.upload("Forged.docx", content)
    session = service.session(document["id"])

    response = standin.download(
        session.document_url, secret="not-the-secret-" + "z" * 32
    )

    assert response.status_code == 401
    assert content not in response.content


def test_an_expired_jwt_header_serves_no_bytes(service: Service) -> None:
    content = make_docx("expired")
    document = service.upload("Expired.docx", content)
    session = service.session(document["id"])
    long_ago = int(time.time()) - 900
    expired = jwt.encode(
        {
            "payload": {"url": session.document_url},
            "iat": long_ago,
            "exp": long_ago + 300,
        },
        SECRET,
        algorithm="HS256",
    )

    response = service.client.get(
        session.document_url, headers={"Authorization": f"Bearer {expired}"}
    )

    assert response.status_code == 401
    assert content not in response.content


def test_an_older_key_still_serves_the_version_it_was_issued_for(
    sim: Simulated,
) -> None:
    first = make_docx("what the old session opened")
    document_id = sim.service.upload("Split.docx", first)["id"]
    old = sim.service.config(document_id, user_id="ann", user_name="Ann")
    sim.service.client.post(
        f"/api/documents/{document_id}/versions",
        files={"file": ("Split.docx", make_docx("uploaded meanwhile"))},
    )

    # A page loaded before the upload opens the editor afterwards.
    editor = sim.control.open(old)
    sim.control.wait_for_callback(1, key=old["document"]["key"])

    [download] = [h for h in sim.wire.heard if h.method == "GET"]
    assert (download.http_status, download.body) == (200, first)
    assert sim.control.state(editor)["text"] == ["what the old session opened"]
