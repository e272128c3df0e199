"""Does docdesk stream a 1 GiB save? Measured beside curl, in one run.

The Document Server (DS) hands the edited file over as a link in a status-2
callback. This benchmark serves a 1 GiB docx from a static server on
127.0.0.1 (standing in for the DS cache), starts ``docdesk serve`` as its own
process, and times the signed callback from sending it to the
``{"error": 0}`` answer, while it samples the service's resident memory.
Around each save it times ``curl`` downloading the same URL to the same disk,
plain and followed by an fsync (docdesk fsyncs before it answers; curl does
not). The targets (DESIGN.md, "Targets"):

- docdesk's peak RSS under 100 MiB, and under 32 MiB of growth during a save;
- docdesk's median save time within 1.3x of plain curl's median.

Run it with ``make bench``, or ``python benchmarks/save_large_file.py --help``
for a smaller file, more runs, another disk or a profile. The exit status is
0 when every target is met, 1 when one is missed and 2 when the benchmark
could not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import pstats
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import httpx

from docdesk import tokens
from docdesk.formats import blank_document

__all__ = ["main"]

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULT_SIZE = GiB
# Past about 1.95 GiB zipfile writes zip64 records, and the file could no
# longer be cut to an exact size.
MAX_SIZE = 1920 * MiB
MIN_SIZE = MiB

PEAK_RSS_TARGET = 100 * MiB
GROWTH_TARGET = 32 * MiB
TIME_RATIO_TARGET = 1.3

CACHE_FOLDER = "docdesk-bench-cache"
FILLER = "word/media/filler.bin"
WRITE_CHUNK = MiB
SAMPLE_INTERVAL = 0.01
STARTUP_TIMEOUT = 30.0
SAVE_TIMEOUT = 600.0
HERE = Path(__file__).resolve().parent


class BenchmarkError(Exception):
    """Something kept the benchmark from measuring; the message says what."""


# The edited file: a real docx, 1 GiB thanks to one stored member.


def parse_size(text: str) -> int:
    """``"1G"``, ``"64M"``, ``"512KiB"`` or plain bytes, in binary units."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1G or 64M)")
    number, unit = int(match[1]), match[2].lower()
    size = number * {"": 1, "k": 1024, "m": MiB, "g": GiB}[unit]
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"the size must lie between {MIN_SIZE // MiB} MiB and {MAX_SIZE // MiB} MiB"
        )
    return size


def edited_file(cache: Path, size: int) -> Path:
    """The cached ``size``-byte docx, made on first use."""
    path = cache / f"edited-{size}.docx"
    if path.is_file() and path.stat().st_size == size:
        print(f"reusing {path}")
        return path

    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    print(f"writing {path} ({size / MiB:.0f} MiB)...", flush=True)
    started = time.perf_counter()
    try:
        write_edited_docx(partial, size)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    print(f"written in {time.perf_counter() - started:.1f} s")
    return path


def write_edited_docx(path: Path, size: int) -> None:
    """A blank docx plus one stored member of random bytes, ``size`` in all."""
    blank = blank_document("docx")
    empty = io.BytesIO()
    docx_with_filler(empty, blank, 0)
    overhead = len(empty.getvalue())
    if size <= overhead:
        raise BenchmarkError(f"a docx needs more than {overhead} bytes")

    with path.open("wb") as out:
        docx_with_filler(out, blank, size - overhead)
    if path.stat().st_size != size:
        raise BenchmarkError(f"made {path.stat().st_size} bytes, not {size}")


def docx_with_filler(out: IO[bytes], blank: bytes, filler_size: int) -> None:
    """Write the blank's parts and ``filler_size`` random bytes into ``out``."""
    with (
        zipfile.ZipFile(io.BytesIO(blank)) as source,
        zipfile.ZipFile(out, "w") as target,
    ):
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "[Content_Types].xml":
                # Every part of a package needs a content type, the filler too.
                data = data.replace(
                    b"<Default ",
                    b'<Default Extension="bin" ContentType="application/octet-stream"/>'
                    b"<Default ",
                    1,
                )
            target.writestr(entry, data)

        # Stored, and with its size known up front, so the local header is
        # the same size whatever the filler's length.
        filler = zipfile.ZipInfo(FILLER, date_time=(1980, 1, 1, 0, 0, 0))
        filler.compress_type = zipfile.ZIP_STORED
        filler.file_size = filler_size
        with target.open(filler, "w") as member:
            remaining = filler_size
            while remaining:
                chunk = os.urandom(min(WRITE_CHUNK, remaining))
                member.write(chunk)
                remaining -= len(chunk)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(WRITE_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# The processes: the static server, the service, curl.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Processes:
    """Child processes, each ended by its own id when the benchmark ends.

    Children run in their own session, so Ctrl-C reaches only the benchmark,
    which then shuts them down in order (a profiled service must exit
    cleanly to write its profile).
    """

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[Any]] = []

    def start(self, command: Sequence[str], **options: Any) -> subprocess.Popen[Any]:
        process = subprocess.Popen(command, start_new_session=True, **options)
        self._started.append(process)
        return process

    def stop(self, process: subprocess.Popen[Any]) -> None:
        # uvicorn re-raises the signal it shut down for; SIGINT then ends in
        # KeyboardInterrupt, which lets cProfile write its file on the way out.
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def stop_all(self) -> None:
        while self._started:
            self.stop(self._started.pop())


def start_static_server(processes: Processes, folder: Path) -> int:
    """Serve ``folder`` on 127.0.0.1; return the port."""
    server = processes.start(
        [
            sys.executable,
            str(HERE / "static_server.py"),
            "--directory",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if not line.isdigit():
        raise BenchmarkError("the static file server did not start")
    return int(line)


@dataclass(frozen=True)
class Service:
    process: subprocess.Popen[Any]
    base_url: str
    secret: str
    log: Path


def start_docdesk(
    processes: Processes,
    *,
    data_dir: Path,
    ds_port: int,
    max_bytes: int,
    log: Path,
    profile: Path | None,
) -> Service:
    """Start ``docdesk serve`` in its own process and wait until it answers."""
    port = free_port()
    secret = secrets.token_urlsafe(30)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DOCDESK_")
    }
    env.update(
        DOCDESK_DATA_DIR=str(data_dir),
        DOCDESK_DOCUMENT_SERVER_URL=f"http://127.0.0.1:{ds_port}",
        DOCDESK_JWT_SECRET=secret,
        DOCDESK_MAX_DOWNLOAD_BYTES=str(max_bytes),
    )
    runner = [sys.executable]
    if profile is not None:
        runner += ["-m", "cProfile", "-o", str(profile)]
    command = [
        *runner,
        *("-m", "docdesk", "serve", "--host", "127.0.0.1", "--port", str(port)),
        *("--log-level", "warning"),
    ]
    with log.open("wb") as output:
        process = processes.start(
            command, env=env, stdout=output, stderr=subprocess.STDOUT
        )

    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(f"docdesk serve exited:\n{_tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(base_url, trust_env=False).status_code == 200:
                return Service(process, base_url, secret, log)
        time.sleep(0.05)
    raise BenchmarkError(f"docdesk serve did not answer:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# Memory of the service, from /proc.


def proc_status(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status, such as VmRSS, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise BenchmarkError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its VmRSS, if the kernel lets us."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples a process's VmRSS every 10 ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._sample()

    def _sample(self) -> None:
        self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
        self.samples += 1


# One run of each side.


@dataclass(frozen=True)
class CurlRun:
    seconds: float
    fsync_seconds: float

    @property
    def with_fsync(self) -> float:
        return self.seconds + self.fsync_seconds


@dataclass(frozen=True)
class SaveRun:
    seconds: float
    server_seconds: float
    rss_before: int
    rss_peak_sampled: int
    hwm: int
    hwm_was_reset: bool
    samples: int

    @property
    def peak(self) -> int:
        """The peak during the save: VmHWM counts only once it was reset."""
        if self.hwm_was_reset:
            return max(self.rss_peak_sampled, self.hwm)
        return self.rss_peak_sampled

    @property
    def growth(self) -> int:
        return self.peak - self.rss_before


def run_curl(url: str, out: Path) -> CurlRun:
    """Time curl to ``out``, then the fsync that would make it durable."""
    started = time.perf_counter()
    subprocess.run(
        ["curl", "-sS", "--fail", "--noproxy", "*", "-o", str(out), url],
        check=True,
    )
    downloaded = time.perf_counter()

    # The fsync also leaves no dirty pages behind to slow the next run down.
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    synced = time.perf_counter()

    out.unlink()
    return CurlRun(downloaded - started, synced - downloaded)


def run_docdesk(service: Service, url: str, size: int, sha256: str) -> SaveRun:
    """One document, one status-2 callback handing over ``url``, timed."""
    pid = service.process.pid
    timeout = httpx.Timeout(SAVE_TIMEOUT, connect=10.0)
    with httpx.Client(
        base_url=service.base_url, timeout=timeout, trust_env=False
    ) as api:
        document = _checked(
            api.post(
                "/api/documents",
                files={"file": ("Report.docx", blank_document("docx"))},
            )
        )
        config = _checked(api.get(f"/api/documents/{document['id']}/editor-config"))
        callback = _signed_callback(config, url, service.secret)

        hwm_was_reset = reset_peak(pid)
        rss_before = proc_status(pid, "VmRSS")
        with RssSampler(pid) as sampler:
            started = time.perf_counter()
            answer = api.post(config["editorConfig"]["callbackUrl"], **callback)
            seconds = time.perf_counter() - started
        hwm = proc_status(pid, "VmHWM")

        if answer.status_code != 200 or answer.json() != {"error": 0}:
            raise BenchmarkError(f"the save failed: {answer.status_code} {answer.text}")
        server_seconds = _check_saved(api, document["id"], size, sha256)
        api.delete(f"/api/documents/{document['id']}").raise_for_status()

    return SaveRun(
        seconds=seconds,
        server_seconds=server_seconds,
        rss_before=rss_before,
        rss_peak_sampled=sampler.peak,
        hwm=hwm,
        hwm_was_reset=hwm_was_reset,
        samples=sampler.samples,
    )


def _signed_callback(config: dict[str, Any], url: str, secret: str) -> dict[str, Any]:
    """The status-2 request as the DS signs it: in the body and a header."""
    fields = {
        "key": config["document"]["key"],
        "status": 2,
        "url": url,
        "filetype": "docx",
        "users": ["bench"],
        "actions": [{"type": 0, "userid": "bench"}],
        "history": {
            "serverVersion": "9.0.0",
            "changes": [{"user": {"id": "bench", "name": "Benchmark"}}],
        },
    }
    body = {**fields, "token": tokens.sign(fields, secret, expires_in=300)}
    header = f"Bearer {tokens.sign_wrapped(fields, secret)}"
    return {"json": body, "headers": {"Authorization": header}}


def _check_saved(api: httpx.Client, document_id: str, size: int, sha256: str) -> float:
    """Prove the file was kept whole; return the service's own duration."""
    versions = _checked(api.get(f"/api/documents/{document_id}/versions"))
    newest = versions["versions"][-1]
    if (newest["size"], newest["sha256"], newest["source"]) != (size, sha256, "save"):
        raise BenchmarkError(f"the saved version is not the file: {newest}")

    log = _checked(api.get(f"/api/documents/{document_id}/callbacks"))
    saves = [entry for entry in log["callbacks"] if entry["status"] == 2]
    return float(saves[-1]["duration_ms"]) / 1000


def _checked(response: httpx.Response) -> Any:
    if response.is_error:
        raise BenchmarkError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:200]}"
        )
    return response.json()


# The report.


def machine() -> list[str]:
    meminfo = Path("/proc/meminfo").read_text().split()
    memory = int(meminfo[meminfo.index("MemTotal:") + 1]) * 1024
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    curl = subprocess.run(
        ["curl", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    return [
        f"cpu: {os.cpu_count()} x {model}",
        f"memory: {memory / GiB:.1f} GiB",
        f"python: {platform.python_version()}, kernel: {platform.release()}, "
        f"curl: {curl}",
    ]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work skews the times."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def filesystem(path: Path) -> str:
    df = subprocess.run(
        ["df", "-PT", str(path)], capture_output=True, text=True, check=True
    )
    source, kind = df.stdout.splitlines()[-1].split()[:2]
    return f"{kind} on {source}"


def report(size: int, curls: list[CurlRun], saves: list[SaveRun]) -> bool:
    """Print the table; return whether every target was met."""
    curl = statistics.median(run.seconds for run in curls)
    curl_fsync = statistics.median(run.with_fsync for run in curls)
    save = statistics.median(run.seconds for run in saves)
    ratio = save / curl
    peak = max(run.peak for run in saves)
    growth = max(run.growth for run in saves)
    checks = {
        "time": ratio <= TIME_RATIO_TARGET,
        "peak": peak < PEAK_RSS_TARGET,
        "growth": growth < GROWTH_TARGET,
    }

    def verdict(name: str) -> str:
        return "PASS" if checks[name] else "MISS"

    def seconds(values: list[float]) -> tuple[str, str]:
        return f"{statistics.median(values):.2f}", f"{min(values):.2f}"

    def mib(values: list[int]) -> tuple[str, str]:
        return f"{statistics.median(values) / MiB:.1f}", f"{max(values) / MiB:.1f}"

    rows = [
        ("seconds", "median", "min", "target", ""),
        ("curl", *seconds([r.seconds for r in curls]), "", ""),
        ("curl + fsync", *seconds([r.with_fsync for r in curls]), "", ""),
        ("docdesk save", *seconds([r.seconds for r in saves]), "", ""),
        ("  inside the service", *seconds([r.server_seconds for r in saves]), "", ""),
        (
            "docdesk / curl",
            f"{ratio:.2f}",
            f"{min(r.seconds for r in saves) / min(r.seconds for r in curls):.2f}",
            f"<= {TIME_RATIO_TARGET}",
            verdict("time"),
        ),
        ("docdesk / (curl + fsync)", f"{save / curl_fsync:.2f}", "", "", "context"),
        ("", "", "", "", ""),
        ("docdesk memory, MiB", "median", "max", "target", ""),
        ("RSS before the save", *mib([r.rss_before for r in saves]), "", ""),
        (
            "peak RSS during the save",
            *mib([r.peak for r in saves]),
            f"< {PEAK_RSS_TARGET // MiB}",
            verdict("peak"),
        ),
        (
            "growth during the save",
            *mib([r.growth for r in saves]),
            f"< {GROWTH_TARGET // MiB}",
            verdict("growth"),
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    print(f"\n{len(saves)} runs of {size / MiB:.0f} MiB each side")
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip())

    print(
        f"\nthroughput (median): curl {size / MiB / curl:.0f} MiB/s, "
        f"docdesk {size / MiB / save:.0f} MiB/s"
    )
    print("the time target is judged on median docdesk / median plain curl;")
    print("memory targets on the worst run.")
    if not all(run.hwm_was_reset for run in saves):
        print(
            "VmHWM could not be reset (/proc/PID/clear_refs): the peak is the "
            f"10 ms samples only; lifetime VmHWM {max(r.hwm for r in saves) / MiB:.1f}"
            " MiB"
        )
    result = {
        "name": "save_large_file",
        "size_mib": size // MiB,
        "runs": len(saves),
        "curl_s": round(curl, 3),
        "docdesk_s": round(save, 3),
        "ratio": round(ratio, 3),
        "peak_rss_mib": round(peak / MiB, 1),
        "growth_mib": round(growth / MiB, 1),
    }
    # One line for the reliability report to read back.
    print("RESULT " + json.dumps(result))
    return all(checks.values())


def print_profile(path: Path) -> None:
    if not path.exists():
        print(f"no profile was written to {path}")
        return
    print(f"\nprofile of docdesk serve: {path} (top 25 by own time)")
    stats = pstats.Stats(str(path), stream=sys.stdout)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(25)


# The run.


def run_benchmark(
    benchmark: Callable[[argparse.Namespace], bool], args: argparse.Namespace
) -> int:
    """Run ``benchmark`` and turn its verdict into the exit status.

    0 when its targets were met, 1 when one was missed, 2 when it could not
    measure, 130 when interrupted. SIGTERM interrupts as Ctrl-C does, so
    that each benchmark stops its processes and removes its files.
    """
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        return 0 if benchmark(args) else 1
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; processes stopped, temporary files removed")
        return 130


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _run_folder(workdir: Path) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="docdesk-bench-run-", dir=workdir))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def benchmark(args: argparse.Namespace) -> bool:
    workdir: Path = args.workdir.resolve()
    cache = workdir / CACHE_FOLDER
    free = shutil.disk_usage(workdir).free
    needed = 3 * args.size if not (cache / f"edited-{args.size}.docx").exists() else 0
    if free < needed + 2 * args.size:
        raise BenchmarkError(f"{workdir} has {free / GiB:.1f} GiB free; too little")

    for line in machine():
        print(line)
    print(f"disk: {filesystem(workdir)} ({workdir})")
    print(f"load average before: {load_average()}")
    source = edited_file(cache, args.size)
    print("hashing it (and warming the page cache)...", flush=True)
    sha256 = sha256_of(source)

    processes = Processes()
    with _run_folder(workdir) as folder:
        try:
            ds_port = start_static_server(processes, cache)
            service = start_docdesk(
                processes,
                data_dir=folder / "data",
                ds_port=ds_port,
                max_bytes=max(2 * GiB, 2 * args.size),
                log=folder / "docdesk.log",
                profile=args.profile,
            )
            url = f"http://127.0.0.1:{ds_port}/{source.name}"

            curls: list[CurlRun] = []
            saves: list[SaveRun] = []
            for number in range(1, args.runs + 1):
                # Alternating who goes first spreads any cache or writeback
                # effect over both sides.
                order = ("curl", "docdesk") if number % 2 else ("docdesk", "curl")
                for side in order:
                    if side == "curl":
                        curls.append(run_curl(url, folder / "curl.docx"))
                        print(
                            f"run {number} curl: {curls[-1].seconds:.2f} s, "
                            f"+ fsync {curls[-1].fsync_seconds:.2f} s",
                            flush=True,
                        )
                    else:
                        saves.append(run_docdesk(service, url, args.size, sha256))
                        run = saves[-1]
                        print(
                            f"run {number} docdesk: {run.seconds:.2f} s, "
                            f"RSS {run.rss_before / MiB:.1f} -> peak "
                            f"{run.peak / MiB:.1f} MiB ({run.samples} samples)",
                            flush=True,
                        )
        finally:
            processes.stop_all()

    print(f"load average after: {load_average()}")
    met = report(args.size, curls, saves)
    if args.profile is not None:
        print("\n(profiled: the times above are inflated by cProfile)")
        print_profile(args.profile)
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time docdesk saving a large edited file beside curl."
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=DEFAULT_SIZE,
        help="size of the edited file, e.g. 64M (default 1G)",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of each side (default 3)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="folder on the disk to measure; holds the cache and the data dir "
        "(default: the system temp folder)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run docdesk serve under cProfile, write its profile to FILE",
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        help=f"remove the cached edited files ({CACHE_FOLDER} in --workdir) and exit",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    if args.clean:
        cache = args.workdir.resolve() / CACHE_FOLDER
        shutil.rmtree(cache, ignore_errors=True)
        print(f"removed {cache}")
        return 0

    return run_benchmark(benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
