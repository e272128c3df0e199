"""What a whole editing session leaves in the logs and in the callback log.

One INFO line per callback with its outcome (ERROR when the answer is a
failure), and never a token, a secret, a link signature or a signed URL.
The session is the simulator's, run once for the module; the two forgeries
that close it are posted by the stand-in, since no DS sends them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from .conftest import SECRET
from .office import make_docx
from .simulated import Simulated
from .standin import StandIn, sign

LINKS = ("url", "changesurl")


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


def _run_session(sim: Simulated, standin: StandIn) -> Run:
    """Edit, Save (once in vain), Save, edit, leave; open and leave; two forgeries."""
    tokens_before = len(standin.tokens)
    document_id = sim.service.upload("Logged.docx", make_docx("v1"))["id"]
    ann = sim.open(document_id, "ann")
    sim.control.edit(ann.id, "v2")
    sim.control.faults(download="fail")
    assert sim.control.save(ann.id)
    sim.failed(6, ann.key)
    assert sim.control.save(ann.id)
    sim.delivered(6, ann.key)
    sim.control.edit(ann.id, "v3")
    sim.control.close(ann.id)
    final = sim.delivered(2, ann.key)["body"]
    bob = sim.open(document_id, "bob")
    sim.control.close(bob.id)
    sim.delivered(4, bob.key)
    fields = {name: value for name, value in final.items() if name != "token"}
    forged = sign(fields, "a-forged-secret-" + "f" * 48)

    standin.post(ann.callback_url, json.dumps({**fields, "token": forged}).encode())
    standin.callback(ann.callback_url.replace("sig=", "sig=0"), fields)

    bodies: list[dict[str, Any]] = [
        attempt["body"]
        for key in (ann.key, bob.key)
        for attempt in sim.control.callbacks(key)
    ]
    links = [
        *(editor.config["document"]["url"] for editor in (ann, bob)),
        *(editor.callback_url for editor in (ann, bob)),
        *(body[name] for body in bodies for name in LINKS if name in body),
    ]
    tokens = [
        *standin.tokens[tokens_before:],
        forged,
        *(editor.config["token"] for editor in (ann, bob)),
        *sim.wire.bearer_tokens(),
        *(body["token"] for body in bodies),
    ]
    return Run(
        document_id=document_id,
        sent=[
            Sent(1, "editing", 200),
            Sent(6, "download_failed", 503, error=1),
            Sent(6, "saved", 200),
            Sent(2, "saved", 200),
            Sent(1, "editing", 200),
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


class Records(logging.Handler):
    """Every record of docdesk's loggers, its simulator's included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Formatting fills in exc_text, where a traceback could leak.
        self.format(record)
        self.records.append(record)


@dataclass(frozen=True)
class Logged:
    run: Run
    records: list[logging.LogRecord]


@pytest.fixture(scope="module")
def logged(simulated: Simulated, standin: StandIn) -> Logged:
    """One whole session, run once for every test of the module to read."""
    logger = logging.getLogger("docdesk")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    simulated.reset()
    try:
        run = _run_session(simulated, standin)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        simulated.reset()
    return Logged(run, handler.records)


def test_a_whole_session_logs_no_token_secret_signature_or_signed_url(
    logged: Logged,
) -> None:
    lines = [r.getMessage() + (r.exc_text or "") for r in logged.records]

    assert any(line.startswith("download ") for line in lines), "no DEBUG captured"
    leaks = [s for s in logged.run.secrets if any(s in line for line in lines)]
    assert leaks == []
    assert not [line for line in lines if "sig=" in line or "md5=" in line]


def test_each_callback_leaves_exactly_one_callback_line_with_its_outcome(
    logged: Logged,
) -> None:
    run = logged.run

    # The simulator's own "callback sent" lines are the DS's, not docdesk's.
    lines = [
        r
        for r in logged.records
        if r.getMessage().startswith("callback ")
        and not r.name.startswith("docdesk.simulator")
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
    simulated: Simulated, logged: Logged
) -> None:
    run = logged.run

    records = simulated.service.callbacks(run.document_id)

    assert [(r["status"], r["outcome"], r["http_status"]) for r in records] == [
        (sent.status, sent.outcome, sent.http_status) for sent in run.sent
    ]
    for record in records:
        assert record["source"] == "127.0.0.1"
        assert record["duration_ms"] >= 0
        datetime.fromisoformat(record["received"])
    assert [r["version"] for r in records[2:4]] == [2, 3]


def test_the_callback_log_holds_no_token_signature_or_signed_url(
    simulated: Simulated, logged: Logged
) -> None:
    document_id = logged.run.document_id

    response = simulated.service.client.get(f"/api/documents/{document_id}/callbacks")

    assert response.status_code == 200
    assert [s for s in logged.run.secrets if s in response.text] == []
