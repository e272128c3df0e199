"""The address allow-list in front of the endpoints the Document Server calls.

A valid JWT says the Document Server signed a request; the allow-list
(``DOCDESK_CALLBACK_ALLOW``) adds that it came from where the DS lives, so a
leaked secret or a captured callback is of no use from anywhere else. It
guards the routes under ``/ds/``: the callback, the document URL and the
files of older versions. The one exception is the changes archive of the
version history: the editor downloads ``changesUrl`` from its own frame, in
the user's browser, so it is not a request the DS makes and its signed link
alone guards it.

Behind a reverse proxy the socket peer is the proxy. ``X-Forwarded-For`` is
believed only when the peer is one of ``DOCDESK_TRUSTED_PROXIES``, and then
read from the right, past every trusted proxy, to the first address none of
them vouches for: everything to the left of it was written by that client
and may be forged. An entry that is not an address stops the walk and the
request is refused, since who sent it can no longer be told.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Sequence

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from docdesk.settings import Network
from docdesk.web.scopes import route_path, shown

__all__ = [
    "DocumentServerGuard",
    "client_address",
    "forwarded_https",
    "is_allowed",
]

logger = logging.getLogger(__name__)

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PORT = re.compile(r":[0-9]{1,5}")
# What a refused request hears: the callback answers in the DS's own form.
_CALLBACK_REFUSAL = {"error": 1}
_REFUSAL = {
    "error": "forbidden",
    "message": "this address may not call the Document Server endpoints",
}
# Policy violation: a refused WebSocket handshake becomes an HTTP 403.
_WEBSOCKET_POLICY = 1008


class DocumentServerGuard:
    """Refuse DS-facing requests from addresses outside ``allow``.

    Only paths under ``prefix`` are guarded, except those ending in one of
    ``browser_fetched``: the routes a browser calls, not the DS. An empty
    ``allow`` lets every address through. A refusal answers 403:
    ``{"error": 1}`` on the callback, as the DS expects a callback answer to
    read, and a JSON error on the other routes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allow: Sequence[Network],
        trusted_proxies: Sequence[Network],
        prefix: str = "/ds/",
        browser_fetched: Sequence[str] = ("/changes",),
    ) -> None:
        self.app = app
        self.allow = tuple(allow)
        self.trusted_proxies = tuple(trusted_proxies)
        self.prefix = prefix
        self.browser_fetched = tuple(browser_fetched)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.guards(scope):
            await self.app(scope, receive, send)
            return

        address = client_address(scope, self.trusted_proxies)
        if is_allowed(address, self.allow):
            await self.app(scope, receive, send)
            return

        peer = scope.get("client")
        logger.warning(
            "document server endpoint refused address=%s peer=%s path=%s",
            address or "unknown",
            peer[0] if peer else None,
            shown(scope["path"]),
        )
        await self._refuse(scope, receive, send)

    def guards(self, scope: Scope) -> bool:
        """Whether this request is one the allow-list decides."""
        if scope["type"] not in ("http", "websocket") or not self.allow:
            return False
        path = route_path(scope)
        return path.startswith(self.prefix) and not path.endswith(self.browser_fetched)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await WebSocketClose(code=_WEBSOCKET_POLICY)(scope, receive, send)
            return
        callback = route_path(scope).rstrip("/").endswith("/callback")
        body = _CALLBACK_REFUSAL if callback else _REFUSAL
        await JSONResponse(body, status_code=403)(scope, receive, send)


def client_address(scope: Scope, trusted_proxies: Sequence[Network]) -> str | None:
    """The address a request came from, as far as it can be believed.

    The socket peer, unless the peer is a trusted proxy: then the rightmost
    ``X-Forwarded-For`` entry that is not a trusted proxy. None when the
    peer is not an IP address (a Unix socket) or a forwarded entry on the
    way is not one. IPv4-mapped IPv6 addresses come back as plain IPv4.
    """
    client = scope.get("client")
    peer = _parse_address(client[0]) if client else None
    if peer is None:
        return None
    if not _within(peer, trusted_proxies):
        return str(peer)

    forwarded = _forwarded_for(scope)
    if forwarded is None:
        # The proxy speaking for itself, a health check say.
        return str(peer)
    for entry in reversed(forwarded):
        address = _forwarded_address(entry)
        if address is None:
            return None
        if not _within(address, trusted_proxies):
            return str(address)

    # Every hop is a trusted proxy: the first of them is where it started.
    return str(_forwarded_address(forwarded[0]))


def forwarded_https(scope: Scope, trusted_proxies: Sequence[Network]) -> bool:
    """Whether a trusted proxy says the request reached it over https.

    Only the socket peer is asked, and only when it is a trusted proxy: it
    is the one that ended TLS, and the last ``X-Forwarded-Proto`` entry is
    its word.
    """
    client = scope.get("client")
    peer = _parse_address(client[0]) if client else None
    if peer is None or not _within(peer, trusted_proxies):
        return False
    values = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name == b"x-forwarded-proto"
    ]
    if not values:
        return False
    return ",".join(values).rpartition(",")[2].strip().lower() == "https"


def is_allowed(address: str | None, allow: Sequence[Network]) -> bool:
    """Whether ``address`` may call; an empty ``allow`` lets anyone in.

    An unknown address (None) is refused whenever there is a list.
    """
    if not allow:
        return True
    parsed = _parse_address(address) if address is not None else None
    return parsed is not None and _within(parsed, allow)


def _within(address: _IPAddress, networks: Sequence[Network]) -> bool:
    """Membership that treats an IPv4 address and its IPv6-mapped form as one."""
    forms: list[_IPAddress] = [address]
    if address.version == 4:
        forms.append(ipaddress.IPv6Address(f"::ffff:{address}"))
    return any(form in network for network in networks for form in forms)


# The same few peers call again and again: parsing was a tenth of a callback.
@functools.lru_cache(maxsize=4096)
def _parse_address(text: str) -> _IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _forwarded_address(entry: str) -> _IPAddress | None:
    """One ``X-Forwarded-For`` entry: an address, perhaps with a port.

    Accepts ``192.0.2.1``, ``192.0.2.1:443``, ``2001:db8::1`` and
    ``[2001:db8::1]:443``; anything else, ``unknown`` included, is None.
    """
    text = entry.strip()
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not _is_port(port)):
            return None
    elif text.count(":") == 1:
        host, colon, port = text.partition(":")
        if not _is_port(colon + port):
            return None
    else:
        host = text
    return _parse_address(host)


def _is_port(text: str) -> bool:
    """Whether ``text`` is ``:`` and a TCP port number."""
    return _PORT.fullmatch(text) is not None and int(text[1:]) <= 65535


def _forwarded_for(scope: Scope) -> list[str] | None:
    """Every ``X-Forwarded-For`` entry, header lines joined in order."""
    values = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name == b"x-forwarded-for"
    ]
    if not values:
        return None
    return ",".join(values).split(",")
