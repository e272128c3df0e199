"""The watchers themselves: each one sees what it is there to see.

The properties prove that nothing leaked, connected or was written; that
proof is worth something only if a leak, a connection and a write would
each have been seen.
"""

from __future__ import annotations

import logging
import socket

import anyio
import pytest

from .rig import Rig, Trap, docx, sign


def test_a_token_in_a_log_is_seen_as_a_leak(rig: Rig) -> None:
    token = sign({"key": "k", "status": 2})
    rig.remember(token)

    with rig.watch() as seen:
        logging.getLogger("docdesk.fuzz").warning("oops token=%s", token)

    assert any(leak.startswith(token[:24]) for leak in seen.leaks)


def test_any_jwt_or_signed_query_in_a_log_is_seen_by_its_shape(rig: Rig) -> None:
    # Never remembered: a token from long ago, or from another sender.
    token = sign({"key": "k", "status": 6}, "another secret " + "x" * 64)
    link = "http://127.0.0.1:1/cache/files/data/a/output.docx?md5=abc&expires=9"

    with rig.watch() as seen:
        logging.getLogger("docdesk.fuzz").info("token=%s", token)
        logging.getLogger("docdesk.fuzz").info("url=%s", link)

    assert len(seen.leaks) == 3


def test_the_secret_in_a_log_is_seen_as_a_leak(rig: Rig) -> None:
    with rig.watch() as seen:
        logging.getLogger("docdesk.fuzz").error("secret=%s", rig.settings.jwt_secret)

    assert len(seen.leaks) == 1


def test_a_connection_off_the_origin_is_seen(rig: Rig) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with (
        rig.watch() as seen,
        pytest.raises(OSError, match="connection attempts failed"),
    ):
        rig.portal.call(anyio.connect_tcp, "127.0.0.1", closed_port)

    assert seen.off_origin == [f"connect 127.0.0.1:{closed_port}"]


def test_a_connection_to_a_trap_is_counted() -> None:
    trap = Trap()
    try:
        with socket.create_connection(("127.0.0.1", trap.port)):
            pass
        for _ in range(100):
            if trap.connections:
                break
            anyio.run(anyio.sleep, 0.02)
    finally:
        trap.close()

    assert trap.connections == 1


def test_an_upload_is_seen_as_a_write(rig: Rig) -> None:
    with rig.watch() as seen:
        response = rig.upload("Seen.docx", docx("seen"))

    assert response.status_code == 201
    assert seen.wrote
