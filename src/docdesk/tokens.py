"""JSON Web Tokens in the Document Server's conventions.

The Document Server (DS) signs with HS256 and one shared secret. It puts
tokens in two places: the JSON body as ``token`` (claims flat) and a request
header, ``Authorization: Bearer <jwt>`` by default, whose claims wrap the
fields in ``payload``. The editor config is signed unwrapped. Incoming
tokens are verified with 60 seconds of leeway for clock skew, and only the
decoded claims are believed, never the plain fields beside them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jwt
from jwt.types import Options

from docdesk.errors import TokenError

__all__ = [
    "ALGORITHM",
    "LEEWAY",
    "read_request_token",
    "sign",
    "sign_wrapped",
    "verify",
]

ALGORITHM = "HS256"
LEEWAY = 60
BEARER = "bearer "


def sign(
    claims: Mapping[str, Any], secret: str, *, expires_in: int | None = None
) -> str:
    """Sign ``claims`` as they are, adding ``iat`` and ``exp`` if asked."""
    body = dict(claims)
    if expires_in is not None:
        now = int(time.time())
        body["iat"] = now
        body["exp"] = now + expires_in
    return jwt.encode(body, secret, algorithm=ALGORITHM)


def sign_wrapped(
    claims: Mapping[str, Any], secret: str, *, expires_in: int = 300
) -> str:
    """Sign ``claims`` inside ``payload``, as the DS expects in a header."""
    return sign({"payload": dict(claims)}, secret, expires_in=expires_in)


def verify(token: str, secret: str, *, require_exp: bool = False) -> dict[str, Any]:
    """Return the claims of a valid HS256 token, else raise TokenError.

    Any other algorithm, ``none`` included, is refused before the signature
    is looked at.
    """
    options: Options = {"require": ["exp"] if require_exp else []}
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], leeway=LEEWAY, options=options
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("the token has expired (check the clocks)") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("the token is not valid yet (check the clocks)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"the token lacks the {exc.claim!r} claim") from None
    # PyJWT encodes the token to UTF-8 first, and a JSON body can smuggle in
    # a lone surrogate ("\ud800") that no UTF-8 codec accepts.
    except (jwt.InvalidTokenError, UnicodeEncodeError):
        raise TokenError("the token is invalid or signed with another secret") from None
    if not isinstance(claims, dict):
        raise TokenError("the token's claims are not an object")
    return claims


def read_request_token(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    secret: str,
    header: str = "Authorization",
    require_exp: bool = True,
) -> dict[str, Any]:
    """Find, verify and unwrap the token of a request the DS sent.

    The body ``token`` comes first: when it is there it decides, even if a
    header is there too, because the DS may strip history from an overlong
    header token but never from the body one. Claims wrapped in ``payload``
    are unwrapped, keeping the wrapper's ``iat`` and ``exp``. ``headers``
    must look names up case-insensitively.
    """
    token = body.get("token")
    if token is None:
        token = _bearer(headers.get(header))
    if not isinstance(token, str) or not token:
        raise TokenError(f"no token in the body or the {header} header")

    claims = verify(token, secret, require_exp=require_exp)
    payload = claims.get("payload")
    if payload is None:
        return claims
    if not isinstance(payload, dict):
        raise TokenError("the token's payload is not an object")
    # The wrapper's times stay with the claims: they date the request.
    times = {name: claims[name] for name in ("iat", "exp") if name in claims}
    return {**payload, **times}


def _bearer(value: str | None) -> str | None:
    if value is None:
        return None
    if value[: len(BEARER)].lower() == BEARER:
        return value[len(BEARER) :].strip()
    return value.strip()
