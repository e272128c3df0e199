"""A client for the Document Server's conversion service.

The DS downloads a file from a URL it is given, converts it and answers a
signed link to the result, valid for 15 minutes. A job is known by its key
and output type: sending the same request again returns the job's state or
result, which is how an async caller polls and how a sync caller whose
connection gave up collects the result later. A failed job stays failed
under its key, so a retry after an error needs a new key.

The DS answers HTTP 200 whatever happened; the ``error`` field says what,
and this client hands it back in :class:`ConversionResult` for the caller
to judge. Only a DS that cannot be reached, or answers something that is
not the conversion service's JSON, raises DocumentServerError.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from docdesk import tokens
from docdesk.commands import ConversionError
from docdesk.errors import DocumentServerError

__all__ = ["ConversionError", "ConversionResult", "ConversionService"]

logger = logging.getLogger(__name__)

# The DS reports progress only as 0 or 100, so polling faster buys nothing
# past the first few answers.
FIRST_POLL = 0.05
LONGEST_POLL = 1.0


@dataclass(frozen=True)
class ConversionResult:
    """The conversion service's last answer to one request.

    ``error`` is None unless the DS answered one. ``end_convert`` false
    means the job was still running when the wait ran out: the same request,
    sent again, collects it.
    """

    error: ConversionError | None = None
    file_url: str | None = None
    file_type: str | None = None
    end_convert: bool = True

    @property
    def converted(self) -> bool:
        return self.error is None and self.end_convert and self.file_url is not None


class ConversionService:
    """The DS's ``/converter`` endpoint.

    ``timeout`` bounds one whole :meth:`convert`, polls included, unless a
    call asks for another ``wait``.
    """

    def __init__(
        self,
        document_server_url: str,
        secret: str,
        *,
        header: str = "Authorization",
        timeout: float = 120.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = document_server_url.rstrip("/") + "/converter"
        self.timeout = timeout
        self._secret = secret
        self._header = header
        self._client = client or httpx.AsyncClient(timeout=timeout, trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def convert(
        self,
        url: str,
        *,
        filetype: str,
        outputtype: str,
        key: str,
        title: str | None = None,
        async_: bool = False,
        wait: float | None = None,
    ) -> ConversionResult:
        """Convert the file at ``url``, waiting at most ``wait`` seconds.

        ``key`` names the job: use a new one for every new conversion, and
        the same one to collect a job that did not end in time. With
        ``async_`` the DS answers at once and this polls; without, the DS
        holds the request until the job ends.
        """
        fields: dict[str, Any] = {
            "async": async_,
            "filetype": filetype,
            "key": key,
            "outputtype": outputtype,
            "url": url,
        }
        if title is not None:
            fields["title"] = title
        deadline = time.monotonic() + (self.timeout if wait is None else wait)

        delay = FIRST_POLL
        while True:
            answer = await self._send(fields, deadline - time.monotonic())
            result = _result(answer) if answer is not None else None
            if result is None:
                logger.debug("conversion unfinished key=%s reason=wait", key)
                return ConversionResult(end_convert=False)
            if result.error is not None or result.end_convert:
                logger.debug("conversion answered key=%s error=%s", key, result.error)
                return result

            # Polling is sending the same request again after a pause.
            if time.monotonic() + delay >= deadline:
                logger.debug("conversion unfinished key=%s reason=polls", key)
                return result
            await anyio.sleep(delay)
            delay = min(delay * 2, LONGEST_POLL)

    async def _send(
        self, fields: dict[str, Any], remaining: float
    ) -> dict[str, Any] | None:
        """One request; None when the DS took it but the wait ran out."""
        body = {**fields, "token": tokens.sign(fields, self._secret, expires_in=300)}
        headers = {
            self._header: f"Bearer {tokens.sign_wrapped(fields, self._secret)}",
            "Accept": "application/json",
        }
        # A sync request is held until the job ends: that wait is ours to cut.
        timeout = httpx.Timeout(self.timeout, read=max(remaining, 0.001))
        try:
            response = await self._client.post(
                self.url,
                json=body,
                headers=headers,
                params={"shardkey": fields["key"]},
                timeout=timeout,
            )
        except httpx.ReadTimeout:
            return None
        except httpx.HTTPError as exc:
            raise DocumentServerError(
                f"the conversion service did not answer: {type(exc).__name__}"
            ) from None

        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise DocumentServerError(
                f"the conversion service answered HTTP {response.status_code} "
                "without its JSON"
            )
        return answer


def _result(answer: dict[str, Any]) -> ConversionResult:
    if "error" in answer:
        try:
            return ConversionResult(error=ConversionError(int(answer["error"])))
        except (TypeError, ValueError):
            raise DocumentServerError(
                f"unknown conversion error {answer['error']!r}"
            ) from None

    if not answer.get("endConvert"):
        return ConversionResult(end_convert=False)
    file_url, file_type = answer.get("fileUrl"), answer.get("fileType")
    if not isinstance(file_url, str) or not file_url:
        raise DocumentServerError("the conversion ended without a fileUrl")
    return ConversionResult(
        file_url=file_url,
        file_type=file_type if isinstance(file_type, str) else None,
    )
