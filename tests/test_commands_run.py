"""The two long-running commands, started as a user starts them."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from docdesk import tokens

SECRET = "a-simulator-secret-of-at-least-32-bytes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running(args: list[str], env: dict[str, str], url: str) -> Iterator[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCDESK_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "docdesk", *args],
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the command never answered"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        # uvicorn shuts down cleanly, then re-raises the signal it got.
        assert process.returncode in (0, -signal.SIGTERM), output
        assert b"Application shutdown complete" in output, output


def test_serve_with_no_document_server_runs_the_simulator_beside_itself(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"DOCDESK_DATA_DIR": str(tmp_path)}

    with running(["serve", "--port", str(port)], env, base + "/api/documents"):
        documents = httpx.get(base + "/api/documents").json()
        health = httpx.get(base + "/ds-simulator/healthcheck").text

    assert documents == {"documents": []}
    assert health == "true"
    assert (tmp_path / "docdesk.sqlite3").exists()


def test_serve_keeps_an_idle_connection_longer_than_clients_keep_theirs(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/documents"
    env = {"DOCDESK_DATA_DIR": str(tmp_path)}
    # Longer than the 5 s that httpx and uvicorn both default to.
    idle = 6.5

    with running(["serve", "--port", str(port)], env, url):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/api/documents")
        first = connection.getresponse()
        first.read()
        time.sleep(idle)
        # Raises RemoteDisconnected if the server closed the connection.
        connection.request("GET", "/api/documents")
        second = connection.getresponse()
        second.read()
        connection.close()

    assert (first.status, second.status) == (200, 200)


def test_the_simulator_command_answers_the_command_service_with_its_secret(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["simulator", "--port", str(port), "--secret", SECRET]
    body = {"c": "version"}

    with running(args, {}, base + "/healthcheck"):
        good = httpx.post(
            base + "/command", json={**body, "token": tokens.sign(body, SECRET)}
        ).json()
        forged = httpx.post(
            base + "/command", json={**body, "token": tokens.sign(body, "x" * 40)}
        ).json()

    assert good["error"] == 0
    assert good["version"].startswith("9.")
    assert forged == {"error": 6}
