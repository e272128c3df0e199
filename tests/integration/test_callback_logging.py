"""What a whole editing session leaves in the logs and in the callback log.

One INFO line per callback with its outcome (ERROR when the answer is a
failure), and never a token, a secret, a link signature or a signed URL.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

import pytest

from .conftest import SECRET
from .harness import Service
from .office import make_docx
from .standin import StandIn, Trouble, sign


@dataclass(frozen=True)
class Sent:
    """One callback of the session and how docdesk should have taken it."""

    status: int | None
    outcome: str
    http_status: int
    error: int = 0


@dataclass(frozen=True)
class Run:
    """A session as it was sent."""

    document_id: str
    sent: list[Sent]
    secrets: list[str]
    """Everything that must never reach a log: tokens, signatures, links."""


def _signatures(url: str) -> list[str]:
    query = dict(parse_qsl(urlsplit(url).query))
    return [query[name] for name in ("sig", "md5") if name in query]


def _run_session(service: Service, standin: StandIn) -> Run:
    """Open, edit, force save (once in vain), close, save; then two forgeries."""
    tokens_before = len(standin.tokens)
    document = service.upload("Logged.docx", make_docx("v1"))
    config = service.config(document["id"], user_id="ann", user_name="Ann")
    key = config["document"]["key"]
    callback_url = config["editorConfig"]["callbackUrl"]
    standin.download(config["document"]["url"])
    standin.put("logged/forced.docx", make_docx("v2"))
    standin.put("logged/final.docx", make_docx("v3"))
    standin.put("logged/changes.zip", b"PK\x05\x06" + b"\0" * 18)
    standin.put("logged/broken.docx", b"", Trouble.SERVER_ERROR)
    broken = standin.save_fields(key, 6, "logged/broken.docx")
    forced = standin.save_fields(key, 6, "logged/forced.docx")
    final = standin.save_fields(
        key, 2, "logged/final.docx", changesurl=standin.link("logged/changes.zip")
    )
    forged = sign(final, "a-forged-secret-" + "f" * 48)
    unsigned_link = callback_url.replace("sig=", "sig=0")

    standin.callback(callback_url, {"key": key, "status": 1, "users": ["ann"]})
    standin.callback(callback_url, broken)
    standin.callback(callback_url, forced)
    standin.callback(callback_url, final)
    standin.callback(callback_url, {"key": key, "status": 4})
    standin.post(callback_url, json.dumps({**final, "token": forged}).encode())
    standin.callback(unsigned_link, final)

    links = [
        config["document"]["url"],
        callback_url,
        broken["url"],
        forced["url"],
        final["url"],
        final["changesurl"],
    ]
    tokens = [*standin.tokens[tokens_before:], forged, config["token"]]
    return Run(
        document_id=document["id"],
        sent=[
            Sent(1, "editing", 200),
            Sent(6, "download_failed", 503, error=1),
            Sent(6, "saved", 200),
            Sent(2, "saved", 200),
            Sent(4, "closed", 200),
            Sent(None, "invalid_token", 401, error=1),
            Sent(None, "forbidden", 403, error=1),
        ],
        secrets=[
            SECRET,
            *links,
            *(signature for link in links for signature in _signatures(link)),
            *tokens,
            # A JWT's payload and signature segments, were one logged cut short.
            *(segment[:16] for token in tokens for segment in token.split(".")[1:]),
        ],
    )


def _docdesk_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.split(".")[0] == "docdesk"]


def test_a_whole_session_logs_no_token_secret_signature_or_signed_url(
    service: Service, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="docdesk")

    run = _run_session(service, standin)

    lines = [r.getMessage() + (r.exc_text or "") for r in _docdesk_lines(caplog)]
    assert any(line.startswith("download ") for line in lines), "no DEBUG captured"
    leaks = [s for s in run.secrets if any(s in line for line in lines)]
    assert leaks == []
    assert not [line for line in lines if "sig=" in line or "md5=" in line]


def test_each_callback_leaves_exactly_one_callback_line_with_its_outcome(
    service: Service, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="docdesk")

    run = _run_session(service, standin)

    lines = [
        r for r in _docdesk_lines(caplog) if r.getMessage().startswith("callback ")
    ]
    assert len(lines) == len(run.sent)
    for line, sent in zip(lines, run.sent, strict=True):
        message = line.getMessage()
        assert f"document={run.document_id}" in message
        assert f"outcome={sent.outcome} " in message
        assert f"status={sent.status} " in message
        expected = logging.INFO if sent.error == 0 else logging.ERROR
        assert line.levelno == expected


def test_the_callback_log_has_one_record_per_callback(
    service: Service, standin: StandIn
) -> None:
    run = _run_session(service, standin)

    records = service.callbacks(run.document_id)

    assert [(r["status"], r["outcome"], r["http_status"]) for r in records] == [
        (sent.status, sent.outcome, sent.http_status) for sent in run.sent
    ]
    for record in records:
        assert record["source"] == "127.0.0.1"
        assert record["duration_ms"] >= 0
        datetime.fromisoformat(record["received"])
    assert [r["version"] for r in records[2:4]] == [2, 3]


def test_the_callback_log_holds_no_token_signature_or_signed_url(
    service: Service, standin: StandIn
) -> None:
    run = _run_session(service, standin)

    response = service.client.get(f"/api/documents/{run.document_id}/callbacks")

    assert response.status_code == 200
    assert [s for s in run.secrets if s in response.text] == []
