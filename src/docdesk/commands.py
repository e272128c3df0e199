"""Clients for the Document Server's command and conversion services.

Requests carry their parameters three times, as the official integrations
send them: in plain fields (for a DS with inbox JWT off), in the body
``token`` and in the JWT header wrapped in ``payload``. The DS answers
HTTP 200 whatever happened; the ``error`` field says what.
"""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import Any

import httpx

from docdesk import tokens
from docdesk.errors import DocumentServerError

__all__ = ["CommandError", "CommandService", "ConversionError"]

logger = logging.getLogger(__name__)


class CommandError(IntEnum):
    """``error`` in a command service answer (``c_oAscServerCommandErrors``)."""

    NO_ERROR = 0
    DOCUMENT_ID = 1
    PARSE = 2
    UNKNOWN = 3
    NOT_MODIFIED = 4
    UNKNOWN_COMMAND = 5
    TOKEN = 6
    TOKEN_EXPIRED = 7


class ConversionError(IntEnum):
    """``error`` in a conversion service answer."""

    UNKNOWN = -1
    TIMEOUT = -2
    CONVERSION = -3
    DOWNLOAD = -4
    PASSWORD = -5
    DATABASE = -6
    INPUT = -7
    TOKEN = -8
    OUTPUT_FORMAT = -9
    SIZE_LIMIT = -10


class CommandService:
    """The DS's ``/command`` endpoint, one method per command used."""

    def __init__(
        self,
        document_server_url: str,
        secret: str,
        *,
        header: str = "Authorization",
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = document_server_url.rstrip("/") + "/command"
        self._secret = secret
        self._header = header
        self._client = client or httpx.AsyncClient(timeout=timeout, trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def command(self, c: str, **params: Any) -> dict[str, Any]:
        """Send one command and return the DS's answer as it came."""
        fields = {"c": c, **{k: v for k, v in params.items() if v is not None}}
        body = {**fields, "token": tokens.sign(fields, self._secret, expires_in=300)}
        headers = {self._header: f"Bearer {tokens.sign_wrapped(fields, self._secret)}"}
        query = {"shardkey": fields["key"]} if "key" in fields else None
        try:
            response = await self._client.post(
                self.url, json=body, headers=headers, params=query
            )
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DocumentServerError(
                f"the command service did not answer {c!r}: {type(exc).__name__}"
            ) from None
        if not isinstance(answer, dict) or "error" not in answer:
            raise DocumentServerError(
                f"the command service gave no error code for {c!r}"
            )
        logger.debug("command sent c=%s error=%s", c, answer.get("error"))
        return answer

    async def forcesave(self, key: str, *, userdata: str | None = None) -> CommandError:
        """Ask for a force save; the status-6 callback follows on its own."""
        answer = await self.command("forcesave", key=key, userdata=userdata)
        return _error(answer)

    async def info(
        self, key: str, *, userdata: str | None = None
    ) -> tuple[CommandError, list[str]]:
        answer = await self.command("info", key=key, userdata=userdata)
        users = answer.get("users")
        return _error(answer), [str(u) for u in users] if isinstance(
            users, list
        ) else []

    async def meta(self, key: str, *, title: str) -> CommandError:
        """Tell the editors open under ``key`` that the title changed."""
        return _error(await self.command("meta", key=key, meta={"title": title}))

    async def drop(self, key: str, users: list[str] | None = None) -> CommandError:
        return _error(await self.command("drop", key=key, users=users))

    async def version(self) -> str:
        answer = await self.command("version")
        _expect_success(answer, "version")
        return str(answer.get("version", ""))

    async def forgotten_keys(self) -> list[str]:
        """Keys whose final save no callback took; raises on a DS error."""
        answer = await self.command("getForgottenList")
        _expect_success(answer, "getForgottenList")
        keys = answer.get("keys")
        return [str(k) for k in keys] if isinstance(keys, list) else []

    async def forgotten_url(self, key: str) -> str | None:
        """A link to the forgotten file of ``key``; None if there is none."""
        answer = await self.command("getForgotten", key=key)
        if _error(answer) is CommandError.DOCUMENT_ID:
            return None
        _expect_success(answer, "getForgotten")
        url = answer.get("url")
        return url if isinstance(url, str) else None

    async def delete_forgotten(self, key: str) -> CommandError:
        return _error(await self.command("deleteForgotten", key=key))


def _expect_success(answer: dict[str, Any], command: str) -> None:
    error = _error(answer)
    if error is not CommandError.NO_ERROR:
        hint = " (the JWT secret differs?)" if error in _TOKEN_ERRORS else ""
        raise DocumentServerError(
            f"the {command} command failed: error {int(error)} {error.name}{hint}"
        )


_TOKEN_ERRORS = (CommandError.TOKEN, CommandError.TOKEN_EXPIRED)


def _error(answer: dict[str, Any]) -> CommandError:
    try:
        return CommandError(int(answer["error"]))
    except (TypeError, ValueError):
        raise DocumentServerError(
            f"unknown command error {answer['error']!r}"
        ) from None
