"""What the Document Server posts to ``editorConfig.callbackUrl``.

:func:`read_callback` turns the raw request into a :class:`CallbackPayload`
built from the verified token's claims alone. The plain fields beside the
token are never read: the DS strips history from them when the header
token grows too long, and an attacker may put anything there.

The DS counts an answer as success only if it is HTTP 200 with
``{"error": 0}``; it retries status 2 and 3 after 1, 2 and 4 seconds on a
network error, a 429 or a 5xx, and gives up at once on anything else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from docdesk import tokens
from docdesk.errors import InvalidRequest

__all__ = [
    "MAX_CALLBACK_BYTES",
    "Action",
    "CallbackPayload",
    "CallbackStatus",
    "ForceSaveType",
    "SignedCallback",
    "UserAction",
    "read_callback",
]

# Generous for a long session's history, small enough to refuse a flood.
MAX_CALLBACK_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32


class CallbackStatus(IntEnum):
    """``status``: what happened to the document."""

    EDITING = 1
    MUST_SAVE = 2
    CORRUPTED = 3
    CLOSED = 4
    MAIL_MERGE = 5
    MUST_FORCE_SAVE = 6
    CORRUPTED_FORCE_SAVE = 7

    @property
    def saves(self) -> bool:
        """Whether the DS hands over a file to keep as a version."""
        return self in (CallbackStatus.MUST_SAVE, CallbackStatus.MUST_FORCE_SAVE)

    @property
    def corrupted(self) -> bool:
        return self in (CallbackStatus.CORRUPTED, CallbackStatus.CORRUPTED_FORCE_SAVE)

    @property
    def ends_session(self) -> bool:
        return self in (
            CallbackStatus.MUST_SAVE,
            CallbackStatus.CORRUPTED,
            CallbackStatus.CLOSED,
        )


class ForceSaveType(IntEnum):
    """``forcesavetype``: what asked for a force save."""

    COMMAND = 0
    BUTTON = 1
    TIMER = 2
    FORM = 3
    INTERNAL = 4


class UserAction(IntEnum):
    """``actions[].type``."""

    OUT = 0
    IN = 1
    FORCE_SAVE = 2


@dataclass(frozen=True)
class Action:
    type: UserAction
    userid: str


@dataclass(frozen=True, kw_only=True)
class CallbackPayload:
    """One callback, as the verified token states it."""

    key: str
    status: CallbackStatus
    url: str | None = None
    changesurl: str | None = None
    formsdataurl: str | None = None
    filetype: str | None = None
    history: Mapping[str, Any] | None = None
    users: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    lastsave: datetime | None = None
    notmodified: bool = False
    forcesavetype: ForceSaveType | None = None
    userdata: str | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> CallbackPayload:
        """Check the shape of every field used; InvalidRequest if one is off."""
        try:
            status = CallbackStatus(_get(claims, "status", int, required=True))
        except ValueError:
            raise InvalidRequest("unknown callback status") from None
        forcesavetype = _get(claims, "forcesavetype", int)
        return cls(
            key=_get(claims, "key", str, required=True),
            status=status,
            url=_get(claims, "url", str),
            changesurl=_get(claims, "changesurl", str),
            formsdataurl=_get(claims, "formsdataurl", str),
            filetype=_filetype(_get(claims, "filetype", str)),
            history=_get(claims, "history", dict),
            users=tuple(_strings(claims.get("users"), "users")),
            actions=tuple(_actions(claims.get("actions"))),
            lastsave=_time(_get(claims, "lastsave", str)),
            notmodified=_get(claims, "notmodified", bool) or False,
            forcesavetype=_force_save_type(forcesavetype),
            userdata=_get(claims, "userdata", str),
        )

    @property
    def author(self) -> str | None:
        """Whose change this save holds: the DS names the last author first."""
        return self.users[0] if self.users else None


@dataclass(frozen=True)
class SignedCallback:
    """A verified callback, what identifies it, and when it was signed.

    ``delivery`` hashes the verified claims without their signing times:
    the DS signs the body and header tokens apart, possibly a second apart,
    and puts freshly signed links in every attempt, so two requests with one
    ``delivery`` are one request sent twice, whichever token they carried.
    ``signed`` is the token's ``iat``, which orders status 1 and 4.
    """

    payload: CallbackPayload
    delivery: str
    signed: int | None = None


def read_callback(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    header: str = "Authorization",
) -> SignedCallback:
    """Verify a callback request and parse the claims of its token.

    Raises TokenError before looking at anything but the token, and
    InvalidRequest for a body that is not a JSON object of sane size.
    """
    if len(body) > MAX_CALLBACK_BYTES:
        raise InvalidRequest("the callback body is too large")
    document = _json_object(body)

    claims = tokens.read_request_token(document, headers, secret=secret, header=header)
    fields = {k: v for k, v in claims.items() if k not in ("iat", "exp")}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    signed = claims.get("iat")
    return SignedCallback(
        payload=CallbackPayload.from_claims(claims),
        delivery=hashlib.sha256(canonical.encode()).hexdigest(),
        signed=signed
        if isinstance(signed, int) and not isinstance(signed, bool)
        else None,
    )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest("the callback body is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the callback body is not a JSON object")
    if _depth(document) > MAX_JSON_DEPTH:
        raise InvalidRequest("the callback body is nested too deeply")
    return document


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return level
    return max((_depth(child, level + 1) for child in children), default=level + 1)


def _get(
    claims: Mapping[str, Any], name: str, kind: type, *, required: bool = False
) -> Any:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"the callback lacks {name!r}")
        return None
    # bool is an int in Python; the DS never sends one for the other.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequest(f"the callback's {name!r} is not a {kind.__name__}")
    return value


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"the callback's {name!r} is not a list of strings")
    return value


def _actions(value: Any) -> list[Action]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("the callback's 'actions' is not a list")
    actions = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidRequest("the callback has a malformed action")
        kind = _get(item, "type", int, required=True)
        userid = _get(item, "userid", str, required=True)
        try:
            actions.append(Action(UserAction(kind), userid))
        except ValueError:
            raise InvalidRequest("the callback has a malformed action") from None
    return actions


def _filetype(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.isascii() or not value.isalnum() or len(value) > 16:
        raise InvalidRequest("the callback's 'filetype' is not an extension")
    return value.lower()


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest("the callback's 'lastsave' is not a time") from None


def _force_save_type(value: int | None) -> ForceSaveType | None:
    if value is None:
        return None
    try:
        return ForceSaveType(value)
    except ValueError:
        raise InvalidRequest("unknown force-save type") from None
