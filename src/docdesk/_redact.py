"""Short stand-ins for secrets, tokens and signed URLs, safe to log.

A fingerprint lets an operator match two log lines that saw the same token
without the log ever holding the token.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

__all__ = ["fingerprint", "redact_url"]


def fingerprint(secret: str | bytes) -> str:
    """The first 12 hex digits of the SHA-256 of ``secret``."""
    # surrogatepass: a JSON escape can put a lone surrogate in any string.
    data = secret.encode(errors="surrogatepass") if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()[:12]


def redact_url(url: str) -> str:
    """``url`` without its query, user info or fragment, plus a fingerprint.

    Signed links carry their signature in the query, so the query never
    reaches a log; the fingerprint tells apart two links to one path.
    """
    unparsable = f"<unparsable url #{fingerprint(url)}>"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return unparsable
    # Text that only looks like a link may hold user info outside any netloc.
    if not parts.scheme or not host:
        return unparsable
    return f"{parts.scheme}://{host}{port}{parts.path} #{fingerprint(url)}"
