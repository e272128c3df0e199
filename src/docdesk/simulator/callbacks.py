"""Posting callbacks the way the Document Server does.

The body holds the plain fields plus ``token``, their flat JWT; the header
holds the same fields wrapped in ``payload``. When that header token would
reach 7168 characters, the DS drops ``changesurl`` and empties ``history``
in the plain body and the header, but not in the body token, which was
signed first. Only HTTP 200 with ``error`` equal to 0 counts as success.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from docdesk import tokens
from docdesk._redact import redact_url
from docdesk.simulator.config import SimulatorSettings

__all__ = ["CallbackSender", "SentCallback"]

logger = logging.getLogger(__name__)

# OutputSfcData's constructor order; JSON.stringify keeps it.
FIELD_ORDER = (
    "key",
    "status",
    "url",
    "changesurl",
    "history",
    "users",
    "actions",
    "mailMerge",
    "userdata",
    "formdata",
    "lastsave",
    "notmodified",
    "forcesavetype",
    "encrypted",
    "token",
    "formsdataurl",
    "filetype",
)
RETRY_STATUSES = frozenset({429, *range(500, 600)})
# How long the DS waits for an answer under the fault "timeout".
CUT_SECONDS = 0.2
# requestDefaults.headers in the DS's default.json.
USER_AGENT = "Node.js/6.13"


@dataclass(frozen=True)
class SentCallback:
    """One attempt, for the control API's log."""

    key: str
    status: int
    attempt: int
    url: str
    http_status: int | None
    answer: str
    success: bool
    at: float
    body: dict[str, Any]


class CallbackSender:
    """Signs, posts and judges callbacks; retries where the DS retries."""

    def __init__(
        self,
        settings: SimulatorSettings,
        client: httpx.AsyncClient,
        faults: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.sent: list[SentCallback] = []
        self._faults = faults if faults is not None else []

    async def send(
        self,
        url: str,
        fields: Callable[[], dict[str, Any]],
        *,
        retry: bool = False,
    ) -> bool:
        """Post the callback ``fields()`` builds; True once the answer says 0.

        ``fields`` is called again for every attempt, because the DS signs
        fresh links and tokens each time. With ``retry``, a network error, a
        429 or a 5xx is tried again after each of the retry delays.
        """
        delays = self.settings.retry_delays if retry else ()
        for attempt, delay in enumerate((0.0, *delays), start=1):
            if delay:
                await asyncio.sleep(delay)
            success, again = await self._attempt(url, fields(), attempt)
            if success or not again:
                return success
        return False

    async def _attempt(
        self, url: str, fields: dict[str, Any], attempt: int
    ) -> tuple[bool, bool]:
        body, header_token = self._sign(fields)
        headers = {
            self.settings.jwt_header: f"Bearer {header_token}",
            "User-Agent": USER_AGENT,
        }
        http_status: int | None = None
        fault = self._faults.pop(0) if self._faults else None
        if fault == "drop":
            answer = "dropped"
        elif fault == "reject":
            # What a balancer answers for an instance that died under it.
            http_status, answer = 502, "Bad Gateway"
        else:
            # "timeout": the DS stops waiting long before the integrator is
            # done, and the request goes on there without it.
            timeout = CUT_SECONDS if fault == "timeout" else httpx.USE_CLIENT_DEFAULT
            try:
                response = await self.client.post(
                    url, json=body, headers=headers, timeout=timeout
                )
                http_status, answer = response.status_code, response.text
            except httpx.HTTPError as exc:
                answer = type(exc).__name__
            if fault == "lose":
                http_status, answer = None, f"lost after HTTP {http_status}"

        success = http_status == 200 and _says_no_error(answer)
        answer = answer[:200]
        again = http_status is None or http_status in RETRY_STATUSES
        self.sent.append(
            SentCallback(
                key=fields["key"],
                status=fields["status"],
                attempt=attempt,
                url=url,
                http_status=http_status,
                answer=answer,
                success=success,
                at=time.time(),
                body=body,
            )
        )
        logger.info(
            "callback sent key=%s status=%s attempt=%d url=%s http=%s success=%s",
            fields["key"],
            fields["status"],
            attempt,
            redact_url(url),
            http_status,
            success,
        )
        return success, again

    def _sign(self, fields: dict[str, Any]) -> tuple[dict[str, Any], str]:
        secret = self.settings.secret
        body_token = tokens.sign(fields, secret, expires_in=300)
        header_token = tokens.sign_wrapped(fields, secret)
        plain = fields
        if len(header_token) >= self.settings.max_header_token:
            plain = {k: v for k, v in fields.items() if k != "changesurl"}
            if "history" in plain:
                plain["history"] = {}
            header_token = tokens.sign_wrapped(plain, secret)
        return _ordered({**plain, "token": body_token}), header_token


def _ordered(fields: dict[str, Any]) -> dict[str, Any]:
    known = {name: fields[name] for name in FIELD_ORDER if name in fields}
    return {**known, **fields}


def _says_no_error(answer: str) -> bool:
    """Whether ``error`` equals 0 by JavaScript's ``==``, as the DS compares.

    So ``0``, ``0.0``, ``false``, ``"0"``, ``" 0 "`` and ``""`` all succeed;
    a missing ``error`` and ``null`` do not.
    """
    try:
        reply = json.loads(answer)
    except ValueError:
        return False
    if not isinstance(reply, dict):
        return False
    error = reply.get("error")
    if isinstance(error, bool | int | float):
        return error == 0
    if isinstance(error, str):
        try:
            return float(error.strip() or "0") == 0
        except ValueError:
            return False
    return False
