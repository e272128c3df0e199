"""Tokens an attacker can make without the secret, and JWT pieces to make them.

Each :class:`Forgery` turns the claims a forger wants believed into a token
that must be refused: signed with a wrong secret, with no signature, with
another algorithm (including the RS256/HS256 confusion), expired, not yet
valid, without ``exp``, cut, spliced from two tokens, or not a token at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import strategies as st

from .rig import SECRET, TOKEN_LIFETIME, sign

__all__ = ["FORGERIES", "Forgery", "forgeries", "unsigned"]

LEEWAY = 60

_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_PRIVATE = _RSA_KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)
_RSA_PUBLIC = (
    _RSA_KEY.public_key()
    .public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    .decode()
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _times(now: int | None = None) -> dict[str, int]:
    now = int(time.time()) if now is None else now
    return {"iat": now, "exp": now + TOKEN_LIFETIME}


def unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    """A JWT with ``alg`` (``none`` and its spellings) and no signature."""
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps({**_times(), **claims}).encode())}."


@dataclass(frozen=True)
class Forgery:
    """One way to forge a token; ``apply`` forges one for given claims."""

    kind: str
    secret: str = "wrong"
    shift: int = 0
    cut: int = 1
    text: str = ""

    def apply(self, claims: dict[str, Any]) -> Any:
        return _FORGERS[self.kind](self, claims)


def _other_secret(forgery: Forgery) -> str:
    # Padded: PyJWT warns about HMAC keys shorter than the hash, and the
    # suite turns warnings into errors.
    return forgery.secret + "-" * 64


def _wrong_secret(forgery: Forgery, claims: dict[str, Any]) -> str:
    return sign(claims, _other_secret(forgery))


def _alg_none(forgery: Forgery, claims: dict[str, Any]) -> str:
    return unsigned(claims, forgery.text or "none")


def _hs384(forgery: Forgery, claims: dict[str, Any]) -> str:
    return sign(claims, SECRET, algorithm="HS384")


def _hs512(forgery: Forgery, claims: dict[str, Any]) -> str:
    return sign(claims, SECRET, algorithm="HS512")


def _rs256(forgery: Forgery, claims: dict[str, Any]) -> str:
    return jwt.encode({**_times(), **claims}, _RSA_PRIVATE, algorithm="RS256")


def _public_key_as_secret(forgery: Forgery, claims: dict[str, Any]) -> str:
    # The classic confusion: a verifier that took the key's PEM as an HMAC
    # secret would accept this. PyJWT refuses to sign with a PEM, so by hand.
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({**_times(), **claims}).encode())
    mac = hmac.new(_RSA_PUBLIC.encode(), f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{b64(mac.digest())}"


def _expired(forgery: Forgery, claims: dict[str, Any]) -> str:
    # exp more than the leeway in the past.
    issued = int(time.time()) - TOKEN_LIFETIME - LEEWAY - 1 - forgery.shift
    return jwt.encode({**claims, **_times(issued)}, SECRET, algorithm="HS256")


def _not_yet_valid(forgery: Forgery, claims: dict[str, Any]) -> str:
    nbf = int(time.time()) + LEEWAY + 1 + forgery.shift
    return sign({**claims, "nbf": nbf}, SECRET)


def _issued_in_the_future(forgery: Forgery, claims: dict[str, Any]) -> str:
    issued = int(time.time()) + LEEWAY + 1 + forgery.shift
    return jwt.encode({**claims, **_times(issued)}, SECRET, algorithm="HS256")


def _no_exp(forgery: Forgery, claims: dict[str, Any]) -> str:
    return jwt.encode({**claims, "iat": int(time.time())}, SECRET, algorithm="HS256")


def _exp_not_a_number(forgery: Forgery, claims: dict[str, Any]) -> str:
    body = {**claims, "iat": int(time.time()), "exp": forgery.text or "tomorrow"}
    return jwt.encode(body, SECRET, algorithm="HS256")


def _cut_signature(forgery: Forgery, claims: dict[str, Any]) -> str:
    token = sign(claims)
    return token[: len(token) - min(forgery.cut, 43)]


def _flipped_signature(forgery: Forgery, claims: dict[str, Any]) -> str:
    token = sign(claims)
    head, _, signature = token.rpartition(".")
    at = forgery.cut % len(signature)
    flipped = signature[at].swapcase() if signature[at].isalpha() else "A"
    if flipped == signature[at]:
        flipped = "B" if flipped == "A" else "A"
    return f"{head}.{signature[:at]}{flipped}{signature[at + 1 :]}"


def _spliced(forgery: Forgery, claims: dict[str, Any]) -> str:
    # The claims of the forger's choice under the signature of honest ones.
    honest = sign({"key": claims.get("key"), "status": 1, "users": ["x"]})
    head, _, signature = honest.rpartition(".")
    header = head.partition(".")[0]
    return f"{header}.{b64(json.dumps({**_times(), **claims}).encode())}.{signature}"


def _key_headers(forgery: Forgery, claims: dict[str, Any]) -> str:
    # Headers that make some verifiers fetch a key from a URL or a file.
    headers = {"jku": forgery.text, "x5u": forgery.text, "kid": "../../../dev/null"}
    return sign(claims, _other_secret(forgery), headers=headers)


def _garbage(forgery: Forgery, claims: dict[str, Any]) -> str:
    return forgery.text


def _doubled(forgery: Forgery, claims: dict[str, Any]) -> str:
    return f"{sign(claims, _other_secret(forgery))}.{sign(claims)}"


def _not_a_string(forgery: Forgery, claims: dict[str, Any]) -> Any:
    return [0, [], {}, True, 1.5, {"token": sign(claims)}][forgery.shift % 6]


_FORGERS = {
    "wrong secret": _wrong_secret,
    "alg none": _alg_none,
    "HS384": _hs384,
    "HS512": _hs512,
    "RS256": _rs256,
    "RSA public key as HMAC secret": _public_key_as_secret,
    "expired": _expired,
    "not yet valid": _not_yet_valid,
    "issued in the future": _issued_in_the_future,
    "no exp": _no_exp,
    "exp not a number": _exp_not_a_number,
    "cut signature": _cut_signature,
    "flipped signature": _flipped_signature,
    "spliced": _spliced,
    "key headers": _key_headers,
    "garbage": _garbage,
    "doubled": _doubled,
    "not a string": _not_a_string,
}
FORGERIES = tuple(_FORGERS)

_wrong_secrets = st.text(max_size=80)
_none_spellings = st.sampled_from(["none", "None", "NONE", "nOnE", ""])
_garbage_text = st.one_of(
    st.text(max_size=200),
    st.from_regex(r"[A-Za-z0-9_-]{0,60}\.[A-Za-z0-9_-]{0,200}\.[A-Za-z0-9_-]{0,60}"),
)


def forgeries(trap_url: str) -> st.SearchStrategy[Forgery]:
    """Every kind of forgery, with the odd values each one needs."""
    return st.builds(
        Forgery,
        kind=st.sampled_from(FORGERIES),
        secret=_wrong_secrets,
        shift=st.integers(0, 10**7),
        cut=st.integers(1, 60),
        text=st.one_of(_none_spellings, _garbage_text, st.just(trap_url)),
    )
