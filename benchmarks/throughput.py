"""What the throughput benchmarks share: wrk, the services they load, the report.

``callbacks.py``, ``small_saves.py`` and ``editor_configs.py`` each answer
"how many requests a second" beside a baseline measured in the same run.
The load comes from ``wrk`` (Debian's package ``wrk``) in its own process,
replaying a file of requests made before the run, one line each, so that
every callback carries its own freshly signed token, as the Document Server
(DS) sends them: docdesk remembers a callback it has seen and answers a
replay without doing the work again, which would flatter it.

wrk's Lua script checks every answer's body, not only its status, and says
when it ran out of prepared requests and had to replay some. While wrk
runs, the CPU time of wrk, of the server and of the whole machine are read
from ``/proc``: a server near one whole core and a wrk well below it show
that the load generator was not the bottleneck, and a machine with no core
to spare, that other processes took a share (the machine may be shared).

Run as a script, this module serves the bare ASGI app the callback
benchmark compares docdesk with::

    python benchmarks/throughput.py bare --port PORT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from save_large_file import (
    BenchmarkError,
    Processes,
    filesystem,
    free_port,
    load_average,
)

from docdesk import tokens
from docdesk.formats import blank_document

__all__ = [
    "Load",
    "Server",
    "bare_app",
    "bottleneck",
    "callback_outcomes",
    "open_documents",
    "print_result",
    "print_table",
    "run_folder",
    "run_wrk",
    "signed_callback",
    "start_bare",
    "start_docdesk",
    "upload_documents",
    "write_requests",
]

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A process using this much of a core or more is taken to be CPU-bound.
CPU_BOUND = 0.9

# Each wrk thread starts at its own line and steps by the number of threads,
# so no two threads send the same request. Every answer is checked.
WRK_SCRIPT = r"""
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("first", counter)
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  for line in io.lines(args[1]) do
    local method, path, auth, body = line:match("^(%u+)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = {}
    if auth ~= "" then headers["Authorization"] = auth end
    if body ~= "" then headers["Content-Type"] = "application/json" end
    if body == "" then body = nil end
    table.insert(requests, wrk.format(method, path, headers, body))
  end
  expect = args[2]
  step = tonumber(args[3])
  index = first - step
  bad, replays, looped = 0, 0, false
end

function request()
  index = index + step
  if index > #requests then
    index = (index - 1) % #requests + 1
    looped = true
  end
  if looped then replays = replays + 1 end
  return requests[index]
end

function response(status, headers, body)
  if status ~= 200 or not body:find(expect, 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local bad, replays = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("bad")
    replays = replays + thread:get("replays")
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %f, "bad": %d, "replays": %d, ' ..
    '"socket_errors": %d, "p50_ms": %f, "p99_ms": %f}\n',
    summary.requests, summary.duration / 1e6, bad, replays,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


# The services under load.


@dataclass(frozen=True)
class Server:
    """A server process under load, at ``base_url``."""

    process: subprocess.Popen[Any]
    base_url: str
    log: Path


def start_docdesk(
    processes: Processes,
    *,
    data_dir: Path,
    secret: str,
    log: Path,
    environment: dict[str, str] | None = None,
    profile: Path | None = None,
) -> Server:
    """``docdesk serve`` on the embedded defaults, in its own process.

    No Document Server is set unless ``environment`` sets one, so the
    simulator is mounted; ``secret`` is the JWT secret both share. It logs
    at its default level, info, into ``log``: the line it writes for each
    callback and request costs here what it costs in production.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCDESK_")}
    env.update(DOCDESK_DATA_DIR=str(data_dir), DOCDESK_JWT_SECRET=secret)
    env.update(environment or {})
    port = free_port()
    runner = [sys.executable]
    if profile is not None:
        runner += ["-m", "cProfile", "-o", str(profile)]
    command = [
        *runner,
        *("-m", "docdesk", "serve", "--host", "127.0.0.1", "--port", str(port)),
    ]
    return _start(processes, command, env, port, log)


def start_bare(processes: Processes, *, log: Path) -> Server:
    """The bare ASGI app of this module, in its own process."""
    port = free_port()
    command = [sys.executable, __file__, "bare", "--port", str(port)]
    return _start(processes, command, dict(os.environ), port, log)


def _start(
    processes: Processes,
    command: list[str],
    env: dict[str, str],
    port: int,
    log: Path,
) -> Server:
    with log.open("wb") as output:
        process = processes.start(
            command, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(f"{command[1:4]} exited:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            httpx.get(base_url, trust_env=False)
            return Server(process, base_url, log)
        time.sleep(0.05)
    raise BenchmarkError(f"{command[1:4]} did not answer:\n{log.read_text()[-2000:]}")


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the request and answers ``{"error":0}``: an ASGI server's ceiling."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"error":0}'})


def serve_bare(port: int) -> None:
    import uvicorn

    from docdesk.cli import uvicorn_options

    # docdesk serve's own options, taken from it: the two differ in the app.
    uvicorn.run(bare_app, host="127.0.0.1", port=port, **uvicorn_options())


# The documents and their callbacks.


def upload_documents(service: Server, count: int, title: str) -> list[str]:
    """Upload ``count`` blank docx files named after ``title``; their ids."""
    ids = []
    with httpx.Client(base_url=service.base_url, trust_env=False) as api:
        for n in range(count):
            upload = api.post(
                "/api/documents",
                files={"file": (f"{title} {n}.docx", blank_document("docx"))},
            )
            upload.raise_for_status()
            ids.append(upload.json()["id"])
    return ids


def open_documents(service: Server, count: int, title: str) -> list[tuple[str, str]]:
    """Upload ``count`` documents; their callback paths and keys."""
    sessions = []
    with httpx.Client(base_url=service.base_url, trust_env=False) as api:
        for document_id in upload_documents(service, count, title):
            config = api.get(f"/api/documents/{document_id}/editor-config")
            config.raise_for_status()
            url = httpx.URL(config.json()["editorConfig"]["callbackUrl"])
            sessions.append((url.raw_path.decode(), config.json()["document"]["key"]))
    return sessions


def signed_callback(
    target: str, fields: dict[str, Any], secret: str
) -> tuple[str, str, str, str]:
    """A request line for wrk: the callback signed as the DS signs it.

    The body carries ``token`` with ``iat``/``exp``; the header, a token over
    ``{"payload": ...}``.
    """
    body = {**fields, "token": tokens.sign(fields, secret, expires_in=300)}
    header = f"Bearer {tokens.sign_wrapped(fields, secret)}"
    return "POST", target, header, json.dumps(body, separators=(",", ":"))


def callback_outcomes(service: Server) -> dict[str, float]:
    """docdesk's own count of callbacks by outcome, from its metrics."""
    text = httpx.get(f"{service.base_url}/metrics", trust_env=False).text
    counted: dict[str, float] = {}
    for match in re.finditer(
        r'^docdesk_callbacks_total\{[^}]*outcome="([^"]+)"[^}]*\} (\S+)$', text, re.M
    ):
        counted[match[1]] = counted.get(match[1], 0.0) + float(match[2])
    return counted


# The load.


def write_requests(path: Path, requests: Iterator[tuple[str, str, str, str]]) -> int:
    """Write (method, path, Authorization, body) lines for wrk; returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for method, target, authorization, body in requests:
            if any(c in "\t\n" for c in target + authorization + body):
                raise BenchmarkError("a request line holds a tab or a line break")
            out.write(f"{method}\t{target}\t{authorization}\t{body}\n")
            count += 1
    return count


@dataclass(frozen=True)
class Load:
    """One wrk run against one server."""

    requests: int
    seconds: float
    bad: int
    replays: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    server_cpu: float
    """The server's CPU time over the run's wall time: 1.0 is one core."""
    wrk_cpu: float
    machine_cpu: float
    """The cores every process on the machine kept busy, the run's too."""

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def run_wrk(
    server: Server,
    requests: Path,
    expect: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
) -> Load:
    """Replay ``requests`` at ``server`` for ``seconds``; each answer must hold
    ``expect``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchmarkError("wrk is not installed (Debian: apt-get install wrk)")
    script = requests.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    command = [
        wrk,
        *("-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"),
        *("--timeout", "30s", "-s", str(script), server.base_url),
        *("--", str(requests), expect, str(threads)),
    ]

    server_before = _cpu_seconds(server.process.pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_before = _machine_ticks()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    machine_after = _machine_ticks()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = (_cpu_seconds(server.process.pid) - server_before) / wall
    busy, total = (a - b for a, b in zip(machine_after, machine_before, strict=True))
    machine_cpu = (os.cpu_count() or 1) * busy / max(total, 1)
    wrk_cpu = (
        children_after.ru_utime
        + children_after.ru_stime
        - children_before.ru_utime
        - children_before.ru_stime
    ) / wall

    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK ")), None)
    if done.returncode != 0 or line is None:
        raise BenchmarkError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
    figures = json.loads(line.removeprefix("WRK "))
    return Load(
        **figures, server_cpu=server_cpu, wrk_cpu=wrk_cpu, machine_cpu=machine_cpu
    )


def _machine_ticks() -> tuple[int, int]:
    """Busy and all clock ticks of every core so far, from ``/proc/stat``."""
    ticks = [
        int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ]
    # user nice system idle iowait irq softirq steal; guests are in user.
    idle = ticks[3] + ticks[4]
    total = sum(ticks[:8])
    return total - idle, total


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` and its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# The report.


@contextlib.contextmanager
def run_folder(workdir: Path, prefix: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bottleneck(server: str, loads: Sequence[Load]) -> str:
    """What set the pace of these runs, read from their own CPU figures."""
    cpu = median([load.server_cpu for load in loads])
    wrk = median([load.wrk_cpu for load in loads])
    machine = median([load.machine_cpu for load in loads])
    cores = os.cpu_count() or 1
    shares = (
        f"{server} {cpu:.0%}, wrk {wrk:.0%} of a core,"
        f" every process {machine:.1f} of {cores} cores"
    )
    if cpu >= CPU_BOUND:
        return f"{server} was CPU-bound ({shares})"
    if wrk >= CPU_BOUND:
        return f"wrk, the load generator, was CPU-bound ({shares})"
    if machine >= CPU_BOUND * cores:
        return f"the machine had no core to spare ({shares})"
    return (
        f"no process was CPU-bound ({shares}): {server} spent part of the run"
        " waiting (on I/O, a lock, or a core to run on)"
    )


def describe_load(name: str, load: Load, *, replays_matter: bool = True) -> str:
    """One line for a run; replays count only where they spare the server work."""
    return (
        f"{name}: {load.per_second:,.0f}/s ({load.requests} in {load.seconds:.1f} s), "
        f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, "
        f"CPU server {load.server_cpu:.0%} wrk {load.wrk_cpu:.0%}"
        f" machine {load.machine_cpu:.1f} cores"
        + (f", {load.bad} bad answers" if load.bad else "")
        + (f", {load.socket_errors} socket errors" if load.socket_errors else "")
        + (
            f", {load.replays} replayed (too few prepared)"
            if load.replays and replays_matter
            else ""
        )
    )


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())


def print_machine(workdir: Path) -> None:
    from save_large_file import machine

    for line in machine():
        print(line)
    print(f"disk: {filesystem(workdir)} ({workdir})")
    print(f"load average before: {load_average()} (the machine may be shared)")


def print_result(name: str, **figures: Any) -> None:
    """The last line: the figures, machine-readable, for the report command."""
    print("RESULT " + json.dumps({"name": name, **figures}))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the bare ASGI app.")
    parser.add_argument("mode", choices=["bare"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve_bare(args.port)


if __name__ == "__main__":
    main()
