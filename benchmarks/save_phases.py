"""Where does a large save spend its time? Each piece of the data path, timed.

``save_large_file.py`` times the whole save through the service. This takes
the same file from the same static server and times, in this process and one
at a time, the pieces a save is made of: the HTTP client alone (httpcore, as
docdesk's ``Fetcher`` drives it), the ``Fetcher`` pouring into a sink that
drops the bytes, into a ``Digest`` (SHA-256 and the file's ends), into a
``LocalBlobStore`` writer, and the writer's commit (fsync, link), with the
longest time the event loop was held meanwhile. The in-memory rows hash a
chunk already in memory, feed the writer from memory, and write the file
with plain ``os.write`` through the page cache or with O_DIRECT, each with
its fsync. Curl gives the floor. The last rows are references for another
design, not docdesk code: a blocking ``http.client`` in a worker thread
reading into 1 MiB buffers, hashing and writing them in that thread, without
the hash, or in a second thread (four buffers going round), to show what
plain Python reaches on the same machine::

    python benchmarks/save_phases.py [--size 1G] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import http.client
import mmap
import os
import pstats
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpcore
from save_large_file import (
    CACHE_FOLDER,
    DEFAULT_SIZE,
    MiB,
    Processes,
    edited_file,
    load_average,
    parse_size,
    start_static_server,
)

from docdesk.downloads import Fetcher
from docdesk.storage.base import Digest
from docdesk.storage.local import LocalBlobStore

__all__ = ["main"]

# The save path's own chunk size: Fetcher and LocalBlobStore default to it.
CHUNK = 262_144
BUFFER = MiB
BLOB_WRITER = "Fetcher into blob writer, commit"
WRITES = "  of which os.write, in the writer's thread"
COMMIT = "  of which the commit (fsync, link)"

Phase = Callable[[], Awaitable[object]]


class _Dropped:
    async def write(self, chunk: bytes) -> None:
        """Keeps nothing: what is left is the network and the HTTP client."""


class _Digested:
    def __init__(self) -> None:
        self.digest = Digest()

    async def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)


class Phases:
    """The pieces of one save, each an awaitable that moves the whole file."""

    def __init__(self, url: str, size: int, folder: Path) -> None:
        self.url = url
        self.size = size
        self.folder = folder
        self.origin = "/".join(url.split("/", 3)[:3])
        self.fetcher = Fetcher(
            [self.origin], max_bytes=2 * size, timeout=600, allow_private=True
        )
        self.store = LocalBlobStore(folder / "blobs")
        self._chunk = os.urandom(CHUNK)
        self._saved = 0
        self.commit_seconds = 0.0
        self.writes: list[float] = []
        self.longest_stalls: list[float] = []

    def all(self) -> dict[str, Phase]:
        return {
            "curl to /dev/null": lambda: self.curl(os.devnull),
            "curl to a file": lambda: self.curl(str(self.folder / "curl.bin")),
            "httpcore alone, bytes dropped": self.httpcore_alone,
            "Fetcher, bytes dropped": lambda: self.fetcher.fetch(self.url, _Dropped()),
            "Fetcher into Digest": lambda: self.fetcher.fetch(self.url, _Digested()),
            BLOB_WRITER: self.fetch_into_blob,
            "sha256 alone, in memory": lambda: self.cpu(hashlib.sha256().update),
            "Digest alone, in memory": lambda: self.cpu(Digest().update),
            "blob writer from memory, commit": self.blob_from_memory,
            "os.write from memory, page cache, fsync": lambda: self.plain_write(0),
            "os.write from memory, O_DIRECT, fsync": lambda: self.plain_write(
                getattr(os, "O_DIRECT", 0)
            ),
            "http.client thread: read, sha256, write, fsync": lambda: self.plain_python(
                digest=True, threads=1
            ),
            "  the same without sha256": lambda: self.plain_python(
                digest=False, threads=1
            ),
            "  sha256 and write in a 2nd thread": lambda: self.plain_python(
                digest=True, threads=2
            ),
        }

    async def curl(self, out: str) -> None:
        command = ["curl", "-sS", "--fail", "--noproxy", "*", "-o", out, self.url]
        await asyncio.to_thread(subprocess.run, command, check=True)
        if out != os.devnull:
            os.unlink(out)

    async def httpcore_alone(self) -> None:
        async with (
            httpcore.AsyncConnectionPool() as pool,
            pool.stream("GET", self.url) as response,
        ):
            async for _ in response.aiter_stream():
                pass

    async def fetch_into_blob(self) -> None:
        stalls: list[float] = []
        watching = asyncio.create_task(_watch_loop(stalls))
        try:
            async with self.store.create() as blob:
                with _timed_writes() as writes:
                    await self.fetcher.fetch(self.url, blob)
                committing = time.perf_counter()
                name = f"run-{self._saved}.bin"
                self._saved += 1
                await blob.commit(name)
                # The writer's thread may still be writing when fetch
                # returns; the commit waits for it.
                self.writes = writes
        finally:
            watching.cancel()
        self.commit_seconds = time.perf_counter() - committing
        self.longest_stalls.append(max(stalls, default=0.0))
        await self.store.delete(name)

    async def cpu(self, update: Callable[[bytes], object]) -> None:
        for _ in range(self.size // CHUNK):
            update(self._chunk)

    async def blob_from_memory(self) -> None:
        """The writer alone: hashing, its thread, its buffer, its commit."""
        name = f"memory-{self._saved}.bin"
        self._saved += 1
        async with self.store.create() as blob:
            for _ in range(self.size // CHUNK):
                await blob.write(self._chunk)
            await blob.commit(name)
        await self.store.delete(name)

    async def plain_write(self, direct: int) -> None:
        await asyncio.to_thread(self._plain_write, direct)

    def _plain_write(self, direct: int) -> None:
        """Write the file from a 1 MiB page-aligned buffer, then fsync it."""
        path = self.folder / "plain-write.bin"
        buffer = mmap.mmap(-1, BUFFER)
        buffer.write(os.urandom(BUFFER))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | direct
        fd = os.open(path, flags, 0o600)
        try:
            for _ in range(self.size // BUFFER):
                os.write(fd, buffer)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(path)

    async def plain_python(self, *, digest: bool, threads: int) -> None:
        path = self.folder / "plain.bin"
        await asyncio.to_thread(self._blocking_save, path, digest, threads)

    def _blocking_save(self, path: Path, digest: bool, threads: int) -> None:
        """Read into 1 MiB buffers; hash and write here or in a second thread."""
        host, port = self.origin.split("//")[1].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("GET", "/" + self.url.split("/", 3)[3])
        response = connection.getresponse()
        sha256 = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

        def keep(buffer: memoryview) -> None:
            if digest:
                sha256.update(buffer)
            while buffer:
                buffer = buffer[os.write(fd, buffer) :]

        try:
            if threads == 1:
                view = memoryview(bytearray(BUFFER))
                while count := response.readinto(view):
                    keep(view[:count])
            else:
                _pipelined(response, keep)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(path)
            connection.close()


async def _watch_loop(stalls: list[float]) -> None:
    """Record how late each 1 ms sleep wakes: how long the loop was held."""
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(0.001)
        stalls.append(time.perf_counter() - asked - 0.001)


@contextlib.contextmanager
def _timed_writes() -> Iterator[list[float]]:
    """Time every os.write call, in whichever thread makes it.

    Patching the os module is safe here: nothing else in this process
    writes while a fetch runs.
    """
    durations: list[float] = []
    real_write = os.write

    def write(fd: int, data: bytes | bytearray | memoryview | mmap.mmap) -> int:
        started = time.perf_counter()
        try:
            return real_write(fd, data)
        finally:
            durations.append(time.perf_counter() - started)

    setattr(os, "write", write)  # noqa: B010 -- a patch, visibly one
    try:
        yield durations
    finally:
        setattr(os, "write", real_write)  # noqa: B010


def _pipelined(
    response: http.client.HTTPResponse, keep: Callable[[memoryview], None]
) -> None:
    """Receive here while a second thread keeps each filled buffer.

    Four 1 MiB buffers go round, so memory stays bounded; hashlib and
    os.write release the GIL, so both threads run at once.
    """
    free: queue.Queue[bytearray] = queue.Queue()
    full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    for _ in range(4):
        free.put(bytearray(BUFFER))

    failures: list[BaseException] = []

    def keeper() -> None:
        # After a failure the buffers still go round, so the reader ends.
        while (item := full.get()) is not None:
            buffer, count = item
            if not failures:
                try:
                    keep(memoryview(buffer)[:count])
                except BaseException as exc:
                    failures.append(exc)
            free.put(buffer)

    thread = threading.Thread(target=keeper)
    thread.start()
    try:
        while count := response.readinto(buffer := free.get()):
            full.put((buffer, count))
    finally:
        full.put(None)
        thread.join()
    if failures:
        raise failures[0]


async def measure(phases: Phases, runs: int) -> dict[str, list[float]]:
    """Seconds of each phase in each run, phases interleaved run by run."""
    times: dict[str, list[float]] = {}
    for _ in range(runs):
        for name, phase in phases.all().items():
            started = time.perf_counter()
            await phase()
            times.setdefault(name, []).append(time.perf_counter() - started)
            if name == BLOB_WRITER:
                times.setdefault(WRITES, []).append(sum(phases.writes))
                times.setdefault(COMMIT, []).append(phases.commit_seconds)
    await phases.fetcher.aclose()
    return times


async def profile_save(phases: Phases) -> None:
    """cProfile one fetch into a blob writer and its commit."""
    profile = cProfile.Profile()
    profile.enable()
    await phases.fetch_into_blob()
    profile.disable()

    print("\nFetcher into blob writer + commit, top 20 by own time:")
    stats = pstats.Stats(profile, stream=sys.stdout)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time each piece of a large save.")
    parser.add_argument("--size", type=parse_size, default=DEFAULT_SIZE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    workdir = args.workdir.resolve()
    source = edited_file(workdir / CACHE_FOLDER, args.size)
    print(f"load average before: {load_average()}")
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="docdesk-phases-", dir=workdir) as tmp:
        try:
            port = start_static_server(processes, source.parent)
            url = f"http://127.0.0.1:{port}/{source.name}"
            phases = Phases(url, args.size, Path(tmp))
            times = asyncio.run(measure(phases, args.runs))
            if args.profile:
                asyncio.run(profile_save(Phases(url, args.size, Path(tmp))))
        finally:
            processes.stop_all()
    print(f"load average after: {load_average()}")

    print(f"\n{args.size / MiB:.0f} MiB, median of {args.runs} runs (then each run)")
    width = max(len(name) for name in times)
    for name, values in times.items():
        seconds = statistics.median(values)
        each = " ".join(f"{value:.2f}" for value in values)
        rate = args.size / MiB / seconds if seconds else float("inf")
        print(f"{name.ljust(width)}  {seconds:6.2f} s {rate:6.0f} MiB/s   {each}")

    longest = " ".join(f"{value * 1000:.1f}" for value in phases.longest_stalls)
    print(f"longest the event loop was held during the save, each run: {longest} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
