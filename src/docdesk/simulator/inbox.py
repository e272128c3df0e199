"""Reading the token of a request sent to the Document Server.

The command and conversion services take their token from the body's
``token``, else from the JWT header after ``Bearer ``. With the DS's
``tokenRequiredParams`` the request's parameters are then replaced by the
claims: the top-level ones, then those in ``payload``, then in ``query``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from docdesk import tokens

__all__ = ["InboxTokenError", "read_inbox"]

BEARER = "bearer "


class InboxTokenError(Exception):
    """``expired`` tells the DS's "token expired" from "token invalid"."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("expired token" if expired else "invalid token")
        self.expired = expired


def read_inbox(
    body: Mapping[str, Any], headers: Mapping[str, str], *, secret: str, header: str
) -> dict[str, Any]:
    """The parameters the DS believes, taken from the verified token alone."""
    token = body.get("token")
    if token is None:
        value = headers.get(header, "")
        token = value[len(BEARER) :] if value.lower().startswith(BEARER) else None
    if not isinstance(token, str) or not token:
        raise InboxTokenError(expired=False)
    try:
        claims = jwt.decode(
            token, secret, algorithms=[tokens.ALGORITHM], leeway=tokens.LEEWAY
        )
    except jwt.ExpiredSignatureError:
        raise InboxTokenError(expired=True) from None
    except jwt.InvalidTokenError:
        raise InboxTokenError(expired=False) from None

    params = {
        name: value
        for name, value in claims.items()
        if name not in ("payload", "query", "iat", "exp")
    }
    for part in ("payload", "query"):
        if isinstance(claims.get(part), dict):
            params.update(claims[part])
    return params
