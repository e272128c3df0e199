"""The allow-list on the DS-facing routes, over real HTTP and on synthetic scopes.

Real requests come from 127.0.0.1, ::1 and ::ffff:127.0.0.1 only. Every
other address a test needs is a peer written into a synthetic ASGI scope or
an ``X-Forwarded-For`` entry: no packet goes anywhere but loopback.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from docdesk.settings import Network
from docdesk.testing import serve_in_thread
from docdesk.web.guard import DocumentServerGuard, client_address, is_allowed

CALLBACK = "/ds/documents/0123456789abcdef/callback?sig=SECRET-SIG"
FILE = "/ds/documents/0123456789abcdef/file?key=k&sig=SECRET-SIG"
CHANGES = "/ds/documents/0123456789abcdef/versions/2/changes?sig=SECRET-SIG"
API = "/api/documents"


def nets(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


LOOPBACK = nets("127.0.0.0/8")
DS_NETWORK = nets("10.0.0.0/8")
PROXY = nets("127.0.0.1/32")


def ds_app() -> Starlette:
    """Stand-ins for the DS-facing routes; the file route names its caller.

    It finds the trusted proxies in ``app.state``, as the service does.
    """

    async def callback(request: Request) -> Response:
        return JSONResponse({"error": 0})

    async def file(request: Request) -> Response:
        address = client_address(request.scope, request.app.state.trusted_proxies)
        return PlainTextResponse(address or "unknown")

    async def changes(request: Request) -> Response:
        return PlainTextResponse("changes")

    async def api(request: Request) -> Response:
        return PlainTextResponse("documents")

    return Starlette(
        routes=[
            Route("/ds/documents/{id}/callback", callback, methods=["POST"]),
            Route("/ds/documents/{id}/file", file),
            Route("/ds/documents/{id}/versions/{n:int}/changes", changes),
            Route(API, api),
        ]
    )


@dataclass
class Served:
    app: Starlette
    guard: DocumentServerGuard
    url: str


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Served]]:
    """One guarded server per loopback host, shared by this module's tests.

    Starting a server costs a few tenths of a second; the tests set each
    guard's lists instead, which it reads on every request.
    """
    running: dict[str, Served] = {}
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        # uvicorn believes X-Forwarded-For from loopback by default and
        # rewrites the peer before any middleware sees it; docdesk must
        # serve with that off, so DOCDESK_TRUSTED_PROXIES alone decides.
        patch.setenv("FORWARDED_ALLOW_IPS", "")
        for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            app = ds_app()
            guard = DocumentServerGuard(app, allow=(), trusted_proxies=())
            served = stack.enter_context(serve_in_thread(guard, host=host))
            running[host] = Served(app, guard, served.url)
        yield running


Serve = Callable[..., AbstractContextManager[httpx.Client]]


@pytest.fixture
def serve(servers: dict[str, Served]) -> Serve:
    """Set the lists on a host's server; yields a client for it."""

    @contextmanager
    def serve(
        allow: Sequence[Network],
        trusted: Sequence[Network] = (),
        host: str = "127.0.0.1",
    ) -> Iterator[httpx.Client]:
        served = servers[host]
        served.guard.allow = tuple(allow)
        served.guard.trusted_proxies = tuple(trusted)
        served.app.state.trusted_proxies = tuple(trusted)
        with httpx.Client(base_url=served.url) as http:
            yield http

    return serve


def forwarded(value: str) -> dict[str, str]:
    return {"X-Forwarded-For": value}


class TestOverHttp:
    def test_an_allowed_address_reaches_the_callback(self, serve: Serve) -> None:
        with serve(allow=LOOPBACK) as http:
            response = http.post(CALLBACK, json={})

        assert response.status_code == 200
        assert response.json() == {"error": 0}

    def test_an_address_outside_the_list_gets_the_callbacks_own_refusal(
        self, serve: Serve, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="docdesk.web.guard")

        with serve(allow=DS_NETWORK) as http:
            response = http.post(CALLBACK, json={"status": 2})

        assert response.status_code == 403
        assert response.json() == {"error": 1}
        [record] = [r for r in caplog.records if r.name == "docdesk.web.guard"]
        assert record.levelno == logging.WARNING
        assert "address=127.0.0.1" in record.getMessage()
        assert "path=/ds/documents/0123456789abcdef/callback" in record.getMessage()
        assert "SECRET-SIG" not in record.getMessage()

    def test_other_ds_routes_are_refused_with_a_json_error(self, serve: Serve) -> None:
        with serve(allow=DS_NETWORK) as http:
            response = http.get(FILE)

        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
        assert response.json()["message"]

    def test_routes_outside_the_prefix_pass_untouched(self, serve: Serve) -> None:
        with serve(allow=DS_NETWORK) as http:
            response = http.get(API)

        assert response.status_code == 200
        assert response.text == "documents"

    def test_the_changes_archive_the_browser_fetches_is_not_guarded(
        self, serve: Serve
    ) -> None:
        with serve(allow=DS_NETWORK) as http:
            response = http.get(CHANGES)

        assert response.status_code == 200
        assert response.text == "changes"

    def test_without_an_allow_list_everything_passes(self, serve: Serve) -> None:
        with serve(allow=(), trusted=PROXY) as http:
            callback = http.post(CALLBACK, json={}, headers=forwarded("garbage"))
            file = http.get(FILE)

        assert callback.status_code == 200
        assert file.status_code == 200

    def test_a_spoofed_forwarded_for_from_an_untrusted_peer_cannot_get_in(
        self, serve: Serve
    ) -> None:
        with serve(allow=DS_NETWORK) as http:
            response = http.post(CALLBACK, json={}, headers=forwarded("10.1.2.3"))

        assert response.status_code == 403
        assert response.json() == {"error": 1}

    def test_an_untrusted_peer_is_known_by_its_socket_address(
        self, serve: Serve
    ) -> None:
        with serve(allow=LOOPBACK) as http:
            response = http.get(FILE, headers=forwarded("10.1.2.3"))

        assert response.text == "127.0.0.1"

    def test_a_trusted_proxy_is_believed_for_the_rightmost_untrusted_entry(
        self, serve: Serve
    ) -> None:
        with serve(allow=DS_NETWORK, trusted=PROXY) as http:
            admitted = http.get(FILE, headers=forwarded("203.0.113.9, 10.1.2.3"))
            # The client wrote 10.1.2.3 itself; the proxy appended the truth.
            refused = http.get(FILE, headers=forwarded("10.1.2.3, 203.0.113.9"))

        assert admitted.status_code == 200
        assert admitted.text == "10.1.2.3"
        assert refused.status_code == 403

    def test_a_chain_of_trusted_proxies_is_walked_past(self, serve: Serve) -> None:
        trusted = (*PROXY, *nets("172.16.0.0/12", "2001:db8:1::/48"))

        with serve(allow=DS_NETWORK, trusted=trusted) as http:
            response = http.get(
                FILE,
                headers=forwarded("203.0.113.9, 10.1.2.3, 2001:db8:1::5, 172.16.0.2"),
            )

        assert response.status_code == 200
        assert response.text == "10.1.2.3"

    @pytest.mark.parametrize(
        "header", ["10.1.2.3, unknown", "10.1.2.3,", "not-an-address", "10.1.2.3:x"]
    )
    def test_garbage_met_in_the_walk_is_refused(
        self, serve: Serve, header: str
    ) -> None:
        with serve(allow=DS_NETWORK, trusted=PROXY) as http:
            response = http.post(CALLBACK, json={}, headers=forwarded(header))

        assert response.status_code == 403
        assert response.json() == {"error": 1}

    def test_an_ipv6_peer_is_matched_against_ipv6_networks(self, serve: Serve) -> None:
        with serve(allow=nets("::1/128"), host="::1") as http:
            admitted = http.get(FILE)
        with serve(allow=LOOPBACK, host="::1") as http:
            refused = http.get(FILE)

        assert admitted.status_code == 200
        assert admitted.text == "::1"
        assert refused.status_code == 403

    def test_an_ipv4_mapped_peer_counts_as_its_ipv4_address(self, serve: Serve) -> None:
        with serve(allow=LOOPBACK, host="::ffff:127.0.0.1") as http:
            response = http.get(FILE)

        assert response.status_code == 200
        assert response.text == "127.0.0.1"


def scope(
    peer: str | None,
    *forwarded_for: str,
    path: str = "/ds/documents/0123456789abcdef/callback",
    kind: str = "http",
    root_path: str = "",
) -> dict[str, Any]:
    return {
        "type": kind,
        "method": "POST",
        "path": path,
        "root_path": root_path,
        "query_string": b"sig=SECRET-SIG",
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded_for],
        "client": None if peer is None else (peer, 50000),
    }


class TestClientAddress:
    @pytest.mark.parametrize(
        ("peer", "headers", "expected"),
        [
            ("192.0.2.7", ["10.1.2.3"], "192.0.2.7"),
            ("127.0.0.1", [], "127.0.0.1"),
            ("127.0.0.1", ["203.0.113.9, 10.1.2.3"], "10.1.2.3"),
            ("127.0.0.1", ["203.0.113.9", "10.1.2.3"], "10.1.2.3"),
            ("127.0.0.1", ["10.1.2.3, 127.0.0.5"], "10.1.2.3"),
            ("127.0.0.1", ["127.0.0.9, 127.0.0.5"], "127.0.0.9"),
            ("127.0.0.1", ["[2001:db8::7]:443"], "2001:db8::7"),
            ("127.0.0.1", ["2001:db8::7"], "2001:db8::7"),
            ("127.0.0.1", ["192.0.2.1:8080"], "192.0.2.1"),
            ("127.0.0.1", ["::ffff:10.1.2.3"], "10.1.2.3"),
            ("::ffff:192.0.2.7", [], "192.0.2.7"),
            ("::ffff:127.0.0.1", ["10.1.2.3"], "10.1.2.3"),
            ("2001:db8::9", ["10.1.2.3"], "2001:db8::9"),
        ],
    )
    def test_the_rightmost_untrusted_address_is_the_client(
        self, peer: str, headers: list[str], expected: str
    ) -> None:
        address = client_address(scope(peer, *headers), nets("127.0.0.0/8"))

        assert address == expected

    @pytest.mark.parametrize(
        "header",
        [
            "unknown",
            "",
            "10.1.2.3, ",
            "[2001:db8::7",
            "[2001:db8::7]x",
            "1.2.3.4:99999",
        ],
    )
    def test_garbage_from_a_trusted_proxy_leaves_the_client_unknown(
        self, header: str
    ) -> None:
        assert client_address(scope("127.0.0.1", header), PROXY) is None

    def test_a_peer_that_is_not_an_address_is_unknown(self) -> None:
        assert client_address(scope(None), PROXY) is None
        assert client_address(scope("/run/docdesk.sock"), PROXY) is None

    @given(st.text())
    def test_no_header_changes_the_address_of_an_untrusted_peer(
        self, header: str
    ) -> None:
        headers = [header.encode("utf-8", "replace").decode("latin-1")]

        address = client_address(scope("192.0.2.7", *headers), PROXY)

        assert address == "192.0.2.7"


class TestIsAllowed:
    @pytest.mark.parametrize(
        ("address", "allow", "expected"),
        [
            ("10.1.2.3", DS_NETWORK, True),
            ("192.0.2.7", DS_NETWORK, False),
            ("10.1.2.3", nets("::ffff:10.0.0.0/104"), True),
            ("2001:db8::7", nets("2001:db8::/32"), True),
            ("2001:db8::7", DS_NETWORK, False),
            (None, DS_NETWORK, False),
            (None, (), True),
            ("192.0.2.7", (), True),
        ],
    )
    def test_the_decision(
        self, address: str | None, allow: tuple[Network, ...], expected: bool
    ) -> None:
        assert is_allowed(address, allow) is expected


async def reached(scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse("reached")(scope, receive, send)


async def call(app: ASGIApp, scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        if scope["type"] == "websocket":
            return {"type": "websocket.connect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def body(sent: list[Message]) -> bytes:
    return b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body"
    )


@pytest.mark.anyio
class TestMiddleware:
    async def test_a_peer_in_the_ds_network_passes(self) -> None:
        guard = DocumentServerGuard(reached, allow=DS_NETWORK, trusted_proxies=())

        sent = await call(guard, scope("10.1.2.3"))

        assert sent[0]["status"] == 200
        assert body(sent) == b"reached"

    async def test_a_refused_callback_answers_error_1(self) -> None:
        guard = DocumentServerGuard(reached, allow=DS_NETWORK, trusted_proxies=())

        sent = await call(guard, scope("192.0.2.7"))

        assert sent[0]["status"] == 403
        assert body(sent) == b'{"error":1}'

    async def test_a_trusted_proxy_forwarding_the_ds_passes(self) -> None:
        proxies = nets("192.0.2.0/24")
        guard = DocumentServerGuard(reached, allow=DS_NETWORK, trusted_proxies=proxies)

        admitted = await call(guard, scope("192.0.2.1", "10.1.2.3"))
        refused = await call(guard, scope("192.0.2.1", "10.1.2.3, 198.51.100.4"))

        assert admitted[0]["status"] == 200
        assert refused[0]["status"] == 403

    async def test_the_prefix_is_matched_below_the_root_path(self) -> None:
        guard = DocumentServerGuard(reached, allow=DS_NETWORK, trusted_proxies=())

        sent = await call(
            guard,
            scope(
                "192.0.2.7",
                path="/desk/ds/documents/0123456789abcdef/file",
                root_path="/desk",
            ),
        )

        assert sent[0]["status"] == 403
        assert b'"forbidden"' in body(sent)

    async def test_the_changes_archive_is_guarded_when_no_route_is_exempt(
        self,
    ) -> None:
        guard = DocumentServerGuard(
            reached, allow=DS_NETWORK, trusted_proxies=(), browser_fetched=()
        )
        path = "/ds/documents/0123456789abcdef/versions/2/changes"

        sent = await call(guard, scope("192.0.2.7", path=path))

        assert sent[0]["status"] == 403

    async def test_a_path_merely_starting_like_the_prefix_passes(self) -> None:
        guard = DocumentServerGuard(reached, allow=DS_NETWORK, trusted_proxies=())

        sent = await call(guard, scope("192.0.2.7", path="/ds-simulator/hosting"))

        assert sent[0]["status"] == 200

    async def test_a_websocket_under_the_prefix_is_closed_as_a_policy_breach(
        self,
    ) -> None:
        guard = DocumentServerGuard(reached, allow=DS_NETWORK, trusted_proxies=())

        sent = await call(guard, scope("192.0.2.7", kind="websocket"))

        assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]

    async def test_the_refusal_log_shows_a_forged_path_on_one_line(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        guard = DocumentServerGuard(reached, allow=DS_NETWORK, trusted_proxies=())
        caplog.set_level(logging.WARNING, logger="docdesk.web.guard")

        await call(guard, scope("192.0.2.7", path="/ds/x\nforged line"))

        [record] = caplog.records
        assert "\n" not in record.getMessage()
        assert "address=192.0.2.7" in record.getMessage()
