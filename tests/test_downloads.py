"""The guarded fetcher against real HTTP servers on 127.0.0.1.

Every server here is a raw anyio server whose answer a test writes byte by
byte, so it can redirect, lie about its length, stall or break off. Every
connection the fetcher opens goes through a guard that records it and fails
the test if it is not loopback: refusals are shown to happen before any
connection, and no test can send a packet elsewhere, not even a DNS query.
"""

from __future__ import annotations

import gzip
import ipaddress
import logging
import os
import random
import socket
import ssl
import struct
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from docdesk.downloads import Fetched, Fetcher, Sink, check_address
from docdesk.errors import (
    ConfigurationError,
    DownloadFailed,
    DownloadRefused,
    TooLarge,
)

SIGNED_PATH = (
    "/cache/files/data/key_42_7/output.docx/output.docx"
    "?md5=SIGNATURE&expires=1700000000&filename=output.docx"
)
BODY = b"PK\x03\x04 an edited document"
MiB = 1024 * 1024
PROC_FD = Path("/proc/self/fd")


# Test servers.


class Exchange:
    """One request a LoopbackServer received, and the means to answer it."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def respond(
        self, body: bytes = BODY, *, status: str = "200 OK", headers: str = ""
    ) -> None:
        await self.send(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: application/octet-stream\r\n{headers}\r\n".encode()
            + body
        )

    def reset_on_close(self) -> None:
        """Make the connection end with a TCP reset instead of a clean close."""
        # S610 mistakes anyio's typed attributes for Django's QuerySet.extra.
        raw = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


Handler = Callable[[Exchange], Awaitable[None]]


async def answer_ok(exchange: Exchange) -> None:
    await exchange.respond()


class LoopbackServer:
    """A raw HTTP/1.1 server on a free 127.0.0.1 port, run by one handler.

    The handler answers after the request head is read; leaving it closes
    the connection. Handlers still running when the block ends are
    cancelled, so one may stall forever.
    """

    def __init__(
        self, handler: Handler = answer_ok, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, path: str = SIGNED_PATH, *, host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    async def __aenter__(self) -> LoopbackServer:
        self._listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port: int = self._listener.extra(  # noqa: S610 (see reset_on_close)
            anyio.abc.SocketAttribute.local_port
        )
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._listener.serve, self._serve)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tasks.cancel_scope.cancel()
        await self._tasks.__aexit__(exc_type, exc, tb)
        await self._listener.aclose()

    async def _serve(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with client:
            try:
                stream: anyio.abc.ByteStream = client
                if self.tls:
                    stream = await TLSStream.wrap(
                        client, server_side=True, ssl_context=self.tls
                    )
                head = await BufferedByteReceiveStream(stream).receive_until(
                    b"\r\n\r\n", 65536
                )
                self.requests.append(head + b"\r\n\r\n")
                await self.handler(Exchange(stream))
            except (OSError, ssl.SSLError, anyio.BrokenResourceError):
                pass  # the client went away, or failed the TLS handshake
            except (anyio.EndOfStream, anyio.IncompleteRead):
                pass


class FakeDNS:
    """A resolver that gives its answers in turn (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class MemorySink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class CountingSink:
    """Keeps nothing: counts bytes and remembers the largest chunk."""

    def __init__(self) -> None:
        self.size = 0
        self.largest = 0

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.largest = max(self.largest, len(chunk))


def fetcher(*origins: str, **options: Any) -> Fetcher:
    """A Fetcher with test defaults: private addresses on, short deadline."""
    options.setdefault("max_bytes", 1 << 20)
    options.setdefault("allow_private", True)
    options.setdefault("timeout", 5.0)
    return Fetcher(origins, **options)


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address the fetcher connects to; anything not loopback fails."""
    attempted: list[str] = []
    connect_tcp = anyio.connect_tcp

    async def guarded(remote_host: str, remote_port: int, **kwargs: Any) -> Any:
        attempted.append(remote_host)
        try:
            loopback = ipaddress.ip_address(remote_host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise AssertionError(f"connection attempted to {remote_host}")
        return await connect_tcp(remote_host, remote_port, **kwargs)

    monkeypatch.setattr(anyio, "connect_tcp", guarded)
    return attempted


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, name: str, sni: list[str | None]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    context.sni_callback = lambda _sock, server_name, _ctx: sni.append(server_name)
    return context


def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# Fetching from the configured origin.


@pytest.mark.anyio
async def test_file_from_configured_origin_is_streamed_into_the_sink() -> None:
    sink = MemorySink()

    async with LoopbackServer() as server:
        fetched = await fetcher(server.origin).fetch(server.url(), sink)

    assert fetched == Fetched(size=len(BODY), content_type="application/octet-stream")
    assert sink.data == BODY


@pytest.mark.anyio
async def test_request_carries_the_signed_path_and_query_and_the_host() -> None:
    dns = FakeDNS(["127.0.0.1"])

    async with LoopbackServer() as server:
        origin = f"http://ds.test:{server.port}"
        await fetcher(origin, resolver=dns).fetch(
            server.url(host="ds.test"), MemorySink()
        )

    request = server.requests[0].decode()
    assert request.startswith(f"GET {SIGNED_PATH} HTTP/1.1\r\n")
    assert f"\r\nHost: ds.test:{server.port}\r\n" in request


@pytest.mark.anyio
async def test_origin_matches_by_scheme_host_and_port_only() -> None:
    dns = FakeDNS(["127.0.0.1"])
    sink = MemorySink()

    async with LoopbackServer() as server:
        origin = f"http://DS.test:{server.port}/ds/"
        url = server.url("/cache/files/data/k/output.docx", host="Ds.Test")
        await fetcher(origin, resolver=dns).fetch(url, sink)

    assert sink.data == BODY
    assert dns.calls == [("ds.test", server.port)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("origin", "url", "port"),
    [
        ("https://ds.test", "https://ds.test:443/f", 443),
        ("https://ds.test:443", "https://ds.test/f", 443),
        ("http://ds.test/ds/", "http://ds.test:80/cache/f", 80),
    ],
)
async def test_default_port_is_the_same_origin_as_no_port(
    origin: str, url: str, port: int, connections: list[str]
) -> None:
    # The answer is refused, so the resolver being asked shows the origin
    # matched, with no connection made.
    dns = FakeDNS(["192.0.2.1"])

    with pytest.raises(DownloadRefused, match="documentation"):
        await fetcher(origin, resolver=dns).fetch(url, MemorySink())

    assert dns.calls == [("ds.test", port)]
    assert connections == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://evil.test:8080/f",
        "http://ds.test:8081/f",
        "https://ds.test:8080/f",
        "http://ds.test/f",
        "http://a.ds.test:8080/f",
        "http://ds.test.evil.test:8080/f",
        "http://127.0.0.1:8080/f",
    ],
)
async def test_url_outside_the_configured_origins_is_refused(
    url: str, connections: list[str]
) -> None:
    dns = FakeDNS(["127.0.0.1"])

    with pytest.raises(DownloadRefused, match="not a Document Server origin"):
        await fetcher("http://ds.test:8080", resolver=dns).fetch(url, MemorySink())

    assert dns.calls == []
    assert connections == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://ds.test:8080/f", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("ds.test:8080/f", "scheme"),
        ("", "scheme"),
        ("http://user:pass@ds.test:8080/f", "user info"),
        ("http://ds.test:8080@evil.test/f", "user info"),
        ("http://@ds.test:8080/f", "user info"),
        ("http://ds.test:0/f", "bad port"),
        ("http://ds.test:65536/f", "bad port"),
        ("http://ds.test:+80/f", "bad port"),
        ("http://ds.test:08080/f", "bad port"),
        ("http://ds.test:/f", "bad port"),
        ("http://ds.test:80:8080/f", "hostname"),
        ("http://[::1/f", "IPv6"),
        ("http:///f", "no host"),
        ("http://ds.test:8080/f\r\nX-Injected: 1", "control characters"),
        ("http://ds.test:8080/f?a=b c", "control characters"),
        ("http://ds.te\tst:8080/f", "control characters"),
        ("http://dś.test:8080/f", "non-ASCII"),
    ],
)
async def test_malformed_url_is_refused_before_resolving(
    url: str, reason: str, connections: list[str]
) -> None:
    dns = FakeDNS(["127.0.0.1"])

    with pytest.raises(DownloadRefused, match=reason):
        await fetcher("http://ds.test:8080", resolver=dns).fetch(url, MemorySink())

    assert dns.calls == []
    assert connections == []


NON_CANONICAL_HOSTS = [
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0x7f.1/",
    "http://127.1/",
    "http://0177.0.0.1/",
    "http://127.0.0.01/",
    "http://ds.test./",
    "http://ds_test/",
    "http://-ds.test/",
    "http://ds.0x1/",
    "http://[fe80::1%25eth0]/",
    "http://[127.0.0.1]/",
]


@pytest.mark.parametrize("origin", NON_CANONICAL_HOSTS)
def test_origin_with_a_non_canonical_host_stops_start_up(origin: str) -> None:
    with pytest.raises(ConfigurationError, match="bad Document Server origin"):
        Fetcher([origin], max_bytes=1)


@pytest.mark.anyio
@pytest.mark.parametrize("url", NON_CANONICAL_HOSTS)
async def test_url_with_a_non_canonical_host_is_refused(
    url: str, connections: list[str]
) -> None:
    dns = FakeDNS(["127.0.0.1"])

    with pytest.raises(DownloadRefused) as caught:
        await fetcher("http://ds.test", resolver=dns).fetch(url, MemorySink())

    assert "origin" not in str(caught.value)
    assert dns.calls == []
    assert connections == []


@pytest.mark.parametrize(
    "origins",
    [[], ["ftp://ds.test"], ["http://u:p@ds.test"], ["http://ds.test/?a=b"]],
)
def test_missing_or_malformed_origins_stop_start_up(origins: list[str]) -> None:
    with pytest.raises(ConfigurationError):
        Fetcher(origins, max_bytes=1)


def test_non_positive_limits_stop_start_up() -> None:
    with pytest.raises(ConfigurationError, match="positive"):
        Fetcher(["http://ds.test"], max_bytes=0)


# Addresses: checked before connecting, then pinned.


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("origin", "allow_private", "reason"),
    [
        ("http://169.254.169.254", True, "link-local"),
        ("http://[::ffff:169.254.169.254]", True, "which is link-local"),
        ("http://[fd00:ec2::254]", True, "cloud metadata"),
        ("http://100.100.100.200", True, "cloud metadata"),
        ("http://0.0.0.0", True, "unspecified"),
        ("http://10.0.0.1:8081", False, "private"),
        ("http://127.0.0.1:8081", False, "loopback"),
        ("http://[::1]:8081", False, "loopback"),
    ],
)
async def test_ip_literal_in_url_is_checked_without_resolving_or_connecting(
    origin: str, allow_private: bool, reason: str, connections: list[str]
) -> None:
    dns = FakeDNS(["127.0.0.1"])
    client = fetcher(origin, resolver=dns, allow_private=allow_private)

    with pytest.raises(DownloadRefused, match=reason):
        await client.fetch(origin + "/latest/meta-data/", MemorySink())

    assert dns.calls == []
    assert connections == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "allow_private"),
    [
        (["169.254.169.254"], True),
        (["fd00:ec2::254"], True),
        (["100.100.100.200"], True),
        (["::ffff:a9fe:a9fe"], True),
        (["64:ff9b::a9fe:a9fe"], True),
        (["2002:a9fe:a9fe::1"], True),
        (["10.0.0.1"], False),
        (["127.0.0.1"], False),
        (["fc00::1"], False),
        (["127.0.0.1", "169.254.169.254"], True),
        (["not-an-address"], True),
    ],
)
async def test_host_resolving_to_a_refused_address_is_never_connected(
    answer: list[str], allow_private: bool, connections: list[str]
) -> None:
    dns = FakeDNS(answer)

    async with LoopbackServer() as server:
        client = fetcher(
            f"http://ds.test:{server.port}", resolver=dns, allow_private=allow_private
        )
        with pytest.raises(DownloadRefused, match="address not allowed"):
            await client.fetch(server.url(host="ds.test"), MemorySink())

    assert connections == []
    assert server.connections == 0


@pytest.mark.anyio
async def test_connection_is_pinned_to_the_address_that_was_checked(
    connections: list[str],
) -> None:
    # A rebinding DNS: the first answer passes, any later one would not.
    dns = FakeDNS(["127.0.0.1"], ["169.254.169.254"])
    sink = MemorySink()

    async with LoopbackServer() as server:
        client = fetcher(f"http://ds.test:{server.port}", resolver=dns)
        await client.fetch(server.url(host="ds.test"), sink)

    assert sink.data == BODY
    assert dns.calls == [("ds.test", server.port)]
    assert connections == ["127.0.0.1"]


@pytest.mark.anyio
async def test_next_checked_address_is_tried_when_the_first_refuses(
    connections: list[str],
) -> None:
    dns = FakeDNS(["127.0.0.2", "127.0.0.1"])
    sink = MemorySink()

    async with LoopbackServer() as server:
        client = fetcher(f"http://ds.test:{server.port}", resolver=dns)
        await client.fetch(server.url(host="ds.test"), sink)

    assert sink.data == BODY
    assert connections == ["127.0.0.2", "127.0.0.1"]


@pytest.mark.anyio
async def test_default_resolver_is_getaddrinfo_and_every_answer_is_tried(
    monkeypatch: pytest.MonkeyPatch, connections: list[str]
) -> None:
    # getaddrinfo's own answer for the name, without asking any real DNS.
    asked: list[tuple[str, int]] = []

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        asked.append((host, port))
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    sink = MemorySink()

    async with LoopbackServer() as server:
        client = fetcher(f"http://ds.test:{server.port}")
        await client.fetch(server.url(host="ds.test"), sink)

    assert sink.data == BODY
    assert asked == [("ds.test", server.port)]
    assert connections == ["::1", "127.0.0.1"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "resolver_error", [socket.gaierror(socket.EAI_AGAIN, "try again"), None]
)
async def test_resolution_failure_is_transient(
    resolver_error: OSError | None, connections: list[str]
) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        if resolver_error:
            raise resolver_error
        return []

    with pytest.raises(DownloadFailed, match=r"ds\.test"):
        await fetcher("http://ds.test", resolver=resolver).fetch(
            "http://ds.test/f", MemorySink()
        )

    assert connections == []


@pytest.mark.anyio
async def test_tls_certificate_is_verified_against_the_hostname_through_the_pin(
    ca: trustme.CA, connections: list[str]
) -> None:
    sni: list[str | None] = []
    sink = MemorySink()

    async with LoopbackServer(tls=server_tls(ca, "ds.test", sni)) as server:
        client = fetcher(
            f"https://ds.test:{server.port}",
            resolver=FakeDNS(["127.0.0.1"]),
            ssl_context=client_tls(ca),
        )
        await client.fetch(server.url(host="ds.test"), sink)

    assert sink.data == BODY
    assert sni == ["ds.test"]
    assert connections == ["127.0.0.1"]


@pytest.mark.anyio
async def test_tls_certificate_for_another_name_fails_the_download(
    ca: trustme.CA,
) -> None:
    """A certificate that does not name the host is DownloadFailed.

    The URL itself broke no rule, so it is not DownloadRefused: the TLS
    handshake failed on the way, like any network failure, and a retry may
    well succeed once the Document Server's certificate is fixed or renewed.
    No byte of the body is read either way.
    """
    sink = MemorySink()

    async with LoopbackServer(tls=server_tls(ca, "other.test", [])) as server:
        client = fetcher(
            f"https://ds.test:{server.port}",
            resolver=FakeDNS(["127.0.0.1"]),
            ssl_context=client_tls(ca),
        )
        with pytest.raises(DownloadFailed, match="certificate"):
            await client.fetch(server.url(host="ds.test"), sink)

    assert server.requests == []
    assert sink.chunks == []


@pytest.mark.anyio
async def test_tls_by_default_trusts_no_private_ca(ca: trustme.CA) -> None:
    async with LoopbackServer(tls=server_tls(ca, "ds.test", [])) as server:
        client = fetcher(
            f"https://ds.test:{server.port}", resolver=FakeDNS(["127.0.0.1"])
        )
        with pytest.raises(DownloadFailed, match="certificate"):
            await client.fetch(server.url(host="ds.test"), MemorySink())

    assert server.requests == []


@pytest.mark.anyio
async def test_large_body_over_tls_arrives_whole(ca: trustme.CA) -> None:
    body = random.Random(2).randbytes(2 * MiB + 3)

    async def large(exchange: Exchange) -> None:
        await exchange.respond(body)

    sink = MemorySink()

    async with LoopbackServer(large, tls=server_tls(ca, "ds.test", [])) as server:
        client = fetcher(
            f"https://ds.test:{server.port}",
            resolver=FakeDNS(["127.0.0.1"]),
            ssl_context=client_tls(ca),
            max_bytes=len(body),
        )
        fetched = await client.fetch(server.url(host="ds.test"), sink)

    assert fetched.size == len(body)
    assert sink.data == body


# Redirects and proxies.


@pytest.mark.anyio
@pytest.mark.parametrize(
    "status", ["301 Moved", "302 Found", "303 See", "307 T", "308 P"]
)
async def test_redirect_is_refused_without_following_it(status: str) -> None:
    async with LoopbackServer() as elsewhere:

        async def redirect(exchange: Exchange) -> None:
            location = elsewhere.url("/internal")
            await exchange.respond(
                b"", status=status, headers=f"Location: {location}\r\n"
            )

        async with LoopbackServer(redirect) as server:
            client = fetcher(server.origin, elsewhere.origin)
            with pytest.raises(DownloadRefused, match="redirect"):
                await client.fetch(server.url(), MemorySink())

    assert len(server.requests) == 1
    assert elsewhere.connections == 0


@pytest.mark.anyio
async def test_proxy_from_the_environment_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = MemorySink()

    async with LoopbackServer() as proxy, LoopbackServer() as server:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.origin)
            monkeypatch.setenv(name.lower(), proxy.origin)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        await fetcher(server.origin).fetch(server.url(), sink)

    assert sink.data == BODY
    assert proxy.connections == 0
    assert len(server.requests) == 1


# The size cap.


@pytest.mark.anyio
async def test_declared_length_over_the_cap_is_refused_before_the_body() -> None:
    async def announce_then_stall(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n")
        await anyio.sleep_forever()

    sink = MemorySink()

    async with LoopbackServer(announce_then_stall) as server:
        client = fetcher(server.origin, max_bytes=1000, timeout=3.0)
        with pytest.raises(TooLarge, match="Content-Length 1001"):
            await client.fetch(server.url(), sink)

    assert sink.chunks == []


async def send_endless_chunked(exchange: Exchange) -> None:
    await exchange.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        await exchange.send(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")


async def send_until_closed(exchange: Exchange) -> None:
    await exchange.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    while True:
        await exchange.send(b"x" * 0x4000)


@pytest.mark.anyio
@pytest.mark.parametrize("handler", [send_endless_chunked, send_until_closed])
async def test_undeclared_body_stops_as_soon_as_it_crosses_the_cap(
    handler: Handler,
) -> None:
    sink = CountingSink()

    async with LoopbackServer(handler) as server:
        client = fetcher(server.origin, max_bytes=100_000, chunk_size=8192)
        with pytest.raises(TooLarge, match="over the cap of 100000"):
            await client.fetch(server.url(), sink)

    assert sink.size <= 100_000


@pytest.mark.anyio
async def test_body_exactly_at_the_cap_is_kept() -> None:
    async def chunked(exchange: Exchange) -> None:
        await exchange.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3e8\r\n" + b"x" * 1000 + b"\r\n0\r\n\r\n"
        )

    sink = MemorySink()

    async with LoopbackServer(chunked) as server:
        fetched = await fetcher(server.origin, max_bytes=1000).fetch(server.url(), sink)

    assert fetched.size == 1000
    assert sink.data == b"x" * 1000


@pytest.mark.anyio
async def test_large_file_streams_in_bounded_chunks_and_memory() -> None:
    size = 20 * 1024 * 1024
    block = b"\xab" * (1024 * 1024)

    async def large(exchange: Exchange) -> None:
        await exchange.send(
            f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        for _ in range(size // len(block)):
            await exchange.send(block)

    sink = CountingSink()

    async with LoopbackServer(large) as server:
        client = fetcher(server.origin, max_bytes=size, chunk_size=65536)
        tracing = tracemalloc.is_tracing()
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        try:
            fetched = await client.fetch(server.url(), sink)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            if not tracing:
                tracemalloc.stop()

    assert fetched.size == sink.size == size
    assert sink.largest == 65536
    assert peak - before < 4 * 1024 * 1024


@pytest.mark.anyio
async def test_large_body_arrives_whole_in_chunks_no_larger_than_chunk_size() -> None:
    body = random.Random(1).randbytes(3 * MiB + 7)

    async def large(exchange: Exchange) -> None:
        await exchange.respond(body)

    sink = MemorySink()

    async with LoopbackServer(large) as server:
        client = fetcher(server.origin, max_bytes=len(body), chunk_size=100_000)
        fetched = await client.fetch(server.url(), sink)

    assert fetched.size == len(body)
    assert sink.data == body
    assert max(len(chunk) for chunk in sink.chunks) <= 100_000


# A body that looks like blank lines and heads, and the head announcing it.
EDGE = b"\r\n\r\nHTTP/1.1 \n\n body\r\n\r\nend"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: x/y\r\n\r\n" % len(EDGE)


@pytest.mark.anyio
@pytest.mark.parametrize("cut", range(len(HEAD) - 5, len(HEAD) + 3))
async def test_answer_split_anywhere_around_the_end_of_its_head_arrives_whole(
    cut: int,
) -> None:
    # The body looks like heads and blank lines: only the real end of the
    # head may separate them, wherever the answer is split.
    answer = HEAD + EDGE

    async def split(exchange: Exchange) -> None:
        await exchange.send(answer[:cut])
        await anyio.sleep(0.02)
        await exchange.send(answer[cut:])

    sink = MemorySink()

    async with LoopbackServer(split) as server:
        fetched = await fetcher(server.origin).fetch(server.url(), sink)

    assert fetched == Fetched(size=len(EDGE), content_type="x/y")
    assert sink.data == EDGE


@pytest.mark.anyio
async def test_head_ending_a_byte_at_a_time_still_ends_before_the_body() -> None:
    # The blank line comes a byte at a time, its last byte with the body.
    last = len(HEAD) - 1

    async def dribble(exchange: Exchange) -> None:
        await exchange.send(HEAD[: last - 4])
        for at in range(last - 4, last):
            await anyio.sleep(0.01)
            await exchange.send(HEAD[at : at + 1])
        await anyio.sleep(0.01)
        await exchange.send(HEAD[last:] + EDGE)

    sink = MemorySink()

    async with LoopbackServer(dribble) as server:
        await fetcher(server.origin).fetch(server.url(), sink)

    assert sink.data == EDGE


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD + EDGE,
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + HEAD + EDGE,
        HEAD.replace(b"\r\n", b"\n") + EDGE,
        HEAD + EDGE + b"HTTP/1.1 200 OK\r\n\r\nnot part of the file",
    ],
    ids=["after 100", "after 103", "bare line feeds", "more after the body"],
)
async def test_body_of_known_length_is_exactly_what_follows_the_answer_head(
    answer: bytes,
) -> None:
    async def send(exchange: Exchange) -> None:
        await exchange.send(answer)

    sink = MemorySink()

    async with LoopbackServer(send) as server:
        await fetcher(server.origin).fetch(server.url(), sink)

    assert sink.data == EDGE


@pytest.mark.anyio
async def test_empty_body_of_known_length_is_kept_empty() -> None:
    sink = MemorySink()

    async with LoopbackServer(lambda exchange: exchange.respond(b"")) as server:
        fetched = await fetcher(server.origin).fetch(server.url(), sink)

    assert fetched.size == 0
    assert sink.data == b""


# The deadline.


async def trickle(exchange: Exchange) -> None:
    await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    while True:
        await exchange.send(b"x")
        await anyio.sleep(0.05)


async def stall(exchange: Exchange) -> None:
    await anyio.sleep_forever()


@pytest.mark.anyio
@pytest.mark.parametrize("handler", [stall, trickle])
async def test_download_that_outlasts_the_deadline_fails(handler: Handler) -> None:
    async with LoopbackServer(handler) as server:
        client = fetcher(server.origin, timeout=0.5)
        started = time.monotonic()
        # The outer limit turns a broken deadline into a failure, not a hang.
        with anyio.fail_after(5):
            with pytest.raises(DownloadFailed, match=r"timed out after 0\.5 s"):
                await client.fetch(server.url(), MemorySink())
        elapsed = time.monotonic() - started

    assert 0.4 < elapsed < 2.0


# What counts as success, and failures a retry may cure.


@pytest.mark.anyio
@pytest.mark.parametrize(
    "status", ["204 No Content", "403 Forbidden", "404 Not Found", "410 Gone", "500 E"]
)
async def test_status_other_than_200_or_206_is_a_transient_failure(status: str) -> None:
    async def answer(exchange: Exchange) -> None:
        await exchange.respond(b"", status=status)

    async with LoopbackServer(answer) as server:
        with pytest.raises(DownloadFailed, match=f"HTTP {status[:3]}") as caught:
            await fetcher(server.origin).fetch(server.url(), MemorySink())

    assert caught.value.transient


@pytest.mark.anyio
async def test_partial_content_counts_as_success() -> None:
    async def partial(exchange: Exchange) -> None:
        await exchange.respond(status="206 Partial Content")

    sink = MemorySink()

    async with LoopbackServer(partial) as server:
        await fetcher(server.origin).fetch(server.url(), sink)

    assert sink.data == BODY


@pytest.mark.anyio
async def test_encoded_body_is_not_stored() -> None:
    async def gzipped(exchange: Exchange) -> None:
        await exchange.respond(
            gzip.compress(BODY), headers="Content-Encoding: gzip\r\n"
        )

    sink = MemorySink()

    async with LoopbackServer(gzipped) as server:
        with pytest.raises(DownloadFailed, match="Content-Encoding gzip"):
            await fetcher(server.origin).fetch(server.url(), sink)

    assert sink.chunks == []
    assert b"\r\nAccept-Encoding: identity\r\n" in server.requests[0]


async def truncate(exchange: Exchange) -> None:
    await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)


async def truncate_chunked(exchange: Exchange) -> None:
    await exchange.send(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )


async def hang_up(exchange: Exchange) -> None:
    pass


async def abort_mid_body(exchange: Exchange) -> None:
    await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nxxx")
    exchange.reset_on_close()


async def answer_garbage(exchange: Exchange) -> None:
    await exchange.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "handler", [truncate, truncate_chunked, hang_up, abort_mid_body, answer_garbage]
)
async def test_broken_answer_is_a_transient_failure(handler: Handler) -> None:
    async with LoopbackServer(handler) as server:
        with pytest.raises(DownloadFailed) as caught:
            await fetcher(server.origin).fetch(server.url(), MemorySink())

    assert caught.value.transient


@pytest.mark.anyio
async def test_refused_connection_is_a_transient_failure() -> None:
    async with LoopbackServer() as server:
        origin, url = server.origin, server.url()

    with pytest.raises(DownloadFailed, match="ConnectError"):
        await fetcher(origin).fetch(url, MemorySink())


@pytest.mark.anyio
async def test_sink_errors_pass_through_unchanged() -> None:
    class FullDisk:
        async def write(self, chunk: bytes) -> None:
            raise OSError(28, "No space left on device")

    sink: Sink = FullDisk()

    async with LoopbackServer() as server:
        with pytest.raises(OSError, match="No space left"):
            await fetcher(server.origin).fetch(server.url(), sink)


@pytest.mark.anyio
async def test_closed_fetcher_refuses_to_fetch() -> None:
    async with fetcher("http://ds.test") as client:
        pass

    with pytest.raises(RuntimeError, match="closed"):
        await client.fetch("http://ds.test/f", MemorySink())


# Nothing left open.


@pytest.mark.skipif(not PROC_FD.is_dir(), reason="no /proc/self/fd")
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("handler", "outcome"),
    [
        (answer_ok, "ok"),
        (send_until_closed, "TooLarge"),
        (truncate, "DownloadFailed"),
        (abort_mid_body, "DownloadFailed"),
        (stall, "DownloadFailed"),
    ],
)
async def test_every_fetch_closes_the_files_it_opened(
    handler: Handler, outcome: str
) -> None:
    before = len(os.listdir(PROC_FD))
    ended = "ok"

    async with LoopbackServer(handler) as server:
        client = fetcher(server.origin, max_bytes=100_000, timeout=0.5)
        try:
            await client.fetch(server.url(), MemorySink())
        except (DownloadFailed, TooLarge) as exc:
            ended = type(exc).__name__

    assert ended == outcome
    assert len(os.listdir(PROC_FD)) == before


# Logging: one line per fetch, never the signed query.


async def redirect_away(exchange: Exchange) -> None:
    await exchange.respond(
        b"", status="302 Found", headers="Location: /?md5=SIGNATURE\r\n"
    )


async def forbid(exchange: Exchange) -> None:
    await exchange.respond(b"", status="403 Forbidden")


async def too_large(exchange: Exchange) -> None:
    await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("handler", "outcome"),
    [
        (answer_ok, "ok"),
        (redirect_away, "download_refused"),
        (forbid, "download_failed"),
        (truncate, "download_failed"),
        (too_large, "too_large"),
        (stall, "download_failed"),
    ],
)
async def test_each_fetch_logs_one_debug_line_without_the_query(
    handler: Handler, outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="docdesk.downloads")
    message = ""

    async with LoopbackServer(handler) as server:
        try:
            with anyio.fail_after(5):
                client = fetcher(server.origin, timeout=0.3)
                await client.fetch(server.url(), MemorySink())
        except DownloadFailed as exc:
            message = str(exc)
        except (DownloadRefused, TooLarge) as exc:
            message = str(exc)

    [record] = [r for r in caplog.records if r.name == "docdesk.downloads"]
    assert record.levelno == logging.DEBUG
    assert f"outcome={outcome}" in record.getMessage()
    assert "/cache/files/data/key_42_7/output.docx/output.docx" in record.getMessage()
    assert "SIGNATURE" not in record.getMessage()
    assert "SIGNATURE" not in message


@pytest.mark.anyio
async def test_refusal_messages_do_not_carry_the_query() -> None:
    client = fetcher("http://ds.test", resolver=FakeDNS(["169.254.169.254"]))

    with pytest.raises(DownloadRefused) as wrong_origin:
        await client.fetch("http://evil.test" + SIGNED_PATH, MemorySink())
    with pytest.raises(DownloadRefused) as wrong_address:
        await client.fetch("http://ds.test" + SIGNED_PATH, MemorySink())

    assert "SIGNATURE" not in str(wrong_origin.value)
    assert "SIGNATURE" not in str(wrong_address.value)
    assert "output.docx" in str(wrong_address.value)


# check_address over generated addresses.


def accepted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | str, *, allow_private: bool
) -> bool:
    try:
        check_address(str(address), allow_private=allow_private)
    except DownloadRefused:
        return False
    return True


ALWAYS_REFUSED = [
    "0.0.0.0/8",
    "169.254.0.0/16",
    "100.100.100.200/32",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "198.18.0.0/15",
    "::/128",
    "fe80::/10",
    "fd00:ec2::254/128",
    "ff00::/8",
    "2001:db8::/32",
    "3fff::/20",
    "100::/64",
    "fec0::/10",
]
PRIVATE = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
]
PUBLIC_IPV4 = ipaddress.IPv4Address("93.184.216.34")


def addresses_in(networks: list[str]) -> st.SearchStrategy[Any]:
    return st.sampled_from(networks).flatmap(lambda net: st.ip_addresses(network=net))


@settings(max_examples=200)
@given(address=addresses_in(ALWAYS_REFUSED), allow_private=st.booleans())
def test_every_address_in_a_forbidden_range_is_refused(
    address: Any, allow_private: bool
) -> None:
    assert not accepted(address, allow_private=allow_private)


@settings(max_examples=200)
@given(address=addresses_in(PRIVATE))
def test_every_private_address_needs_allow_private(address: Any) -> None:
    assume(address != ipaddress.ip_address("fd00:ec2::254"))
    assume(address != ipaddress.ip_address("100.100.100.200"))

    assert not accepted(address, allow_private=False)
    assert accepted(address, allow_private=True)


def mapped(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0xFFFF << 32) | int(v4))


def compatible(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(int(v4))


def nat64(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4))


def sixtofour(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 0x1234)


def teredo_client(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    obfuscated = int(v4) ^ 0xFFFF_FFFF
    return ipaddress.IPv6Address(
        (0x2001_0000 << 96) | (int(PUBLIC_IPV4) << 64) | (0x8000 << 48) | obfuscated
    )


def teredo_server(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    obfuscated = int(PUBLIC_IPV4) ^ 0xFFFF_FFFF
    return ipaddress.IPv6Address((0x2001_0000 << 96) | (int(v4) << 64) | obfuscated)


EMBEDDINGS = [mapped, compatible, nat64, sixtofour, teredo_client, teredo_server]
ALL_IPV4 = st.one_of(
    st.ip_addresses(v=4),
    addresses_in([n for n in ALWAYS_REFUSED + PRIVATE if "." in n]),
)


@settings(max_examples=200)
@given(v4=ALL_IPV4, embed=st.sampled_from(EMBEDDINGS), allow_private=st.booleans())
def test_ipv6_carrying_an_ipv4_address_is_judged_like_it(
    v4: ipaddress.IPv4Address,
    embed: Callable[[ipaddress.IPv4Address], ipaddress.IPv6Address],
    allow_private: bool,
) -> None:
    # ::0.0.0.1 is ::1, the IPv6 loopback itself, not a wrapped 0.0.0.1.
    assume(embed(v4) != ipaddress.IPv6Address("::1"))

    outcome = accepted(embed(v4), allow_private=allow_private)

    assert outcome == accepted(v4, allow_private=allow_private)


WRAPPERS = [
    ipaddress.ip_network(n)
    for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "2002::/16", "2001::/32")
]


@settings(max_examples=200)
@given(address=st.ip_addresses())
def test_only_addresses_python_calls_global_are_accepted(address: Any) -> None:
    # An independent oracle: ipaddress's own table of special ranges.
    assume(not any(address in network for network in WRAPPERS))

    outcome = accepted(address, allow_private=False)

    if outcome:
        assert address.is_global
        assert not address.is_multicast
    if not address.is_global:
        assert not outcome


@pytest.mark.parametrize(
    ("address", "private_ok", "public_ok"),
    [
        ("8.8.8.8", True, True),
        ("2606:4700:4700::1111", True, True),
        ("::ffff:8.8.8.8", True, True),
        ("127.0.0.1", True, False),
        ("::ffff:127.0.0.1", True, False),
        ("192.168.1.10", True, False),
        ("fd12:3456::1", True, False),
        ("169.254.169.254", False, False),
        ("::ffff:169.254.169.254", False, False),
        ("fd00:ec2::254", False, False),
        ("100.100.100.200", False, False),
        ("0.0.0.0", False, False),
        ("::", False, False),
        ("255.255.255.255", False, False),
        ("fe80::1%eth0", False, False),
        ("localhost", False, False),
        ("127.1", False, False),
    ],
)
def test_check_address_examples(
    address: str, private_ok: bool, public_ok: bool
) -> None:
    assert accepted(address, allow_private=True) is private_ok
    assert accepted(address, allow_private=False) is public_ok


def test_refusal_names_the_range() -> None:
    with pytest.raises(DownloadRefused) as caught:
        check_address("::ffff:169.254.169.254", allow_private=True)

    assert str(caught.value) == (
        "::ffff:169.254.169.254 carries 169.254.169.254, which is link-local"
    )
