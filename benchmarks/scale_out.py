"""Saves per second on one instance and on two: does scaling out pay here?

Three setups, measured one after the other in one run, each driven the same
way: (a) the embedded default, one ``docdesk serve`` on SQLite and local
files; (b) one instance on PostgreSQL and S3 (SeaweedFS); (c) two instances
on the same PostgreSQL and S3 behind a round-robin balancer. In every setup
the Document Server is ``docdesk simulator`` in its own process, and the
balancer sits in front (with one backend in (a) and (b)), so each setup pays
the same extra hop.

The load: D documents with one editor each; a thread per document types a
line, presses Save and waits until the status-6 callback was answered, again
and again for the measured seconds, after a short warm-up. Saves per second
count the force saves docdesk acknowledged (HTTP 200, ``{"error":0}``) in that
window, a failure answered in it is counted apart; the latency of a callback
is timed at the balancer, from the DS's POST arriving to the
end of docdesk's answer. The CPU seconds each process used in the window
show where the machine's time went.

The processes come from the scale-out test suite (tests/multi/cluster.py)
and SeaweedFS from tests/seaweed.py, imported from there::

    python benchmarks/scale_out.py [--seconds 20] [--documents 8]

PostgreSQL is taken at DOCDESK_TEST_POSTGRES, else
postgresql://postgres@127.0.0.1:5432/postgres; a throwaway database is made
there for each setup and dropped after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from multi.cluster import Cluster, Process, running_cluster  # noqa: E402
from multi.editing import Typist  # noqa: E402
from seaweed import SeaweedFS, Unavailable, running_seaweedfs  # noqa: E402

__all__ = ["main"]

POSTGRES_ADMIN_URL = os.environ.get(
    "DOCDESK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
WARM_UP = 3.0
# The DS's final save delay: no session closes during the measurement.
SAVE_DELAY = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Figures:
    setup: str
    saves: int
    # Force saves answered with a failure (a 502, 503 or error 1).
    failed: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]
    served: list[int]

    @property
    def per_second(self) -> float:
        return self.saves / self.seconds

    def percentile(self, p: int) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100)[p - 1] * 1000


# Driving


def drive(cluster: Cluster, documents: int, seconds: float) -> Figures:
    """Save in a loop on every document; the figures of the measured window."""
    with Typist(cluster) as typist:
        ids = [typist.upload(f"Bench {n}.docx") for n in range(documents)]
    window: dict[str, float] = {}

    def set_window() -> None:
        # Once every editor is open, before any of them types.
        window["begin"] = time.monotonic() + WARM_UP
        window["end"] = window["begin"] + seconds

    start = threading.Barrier(documents + 1, action=set_window)
    saves = [0] * documents
    failed = [0] * documents

    def editor(n: int, document_id: str) -> None:
        with Typist(cluster) as own:
            session, _ = own.open(document_id, f"user{n}")
            start.wait()
            count = 0
            while time.monotonic() < window["end"]:
                own.control.edit(session, f"line {count}")
                saved = own.save(document_id, session)
                if window["begin"] <= time.monotonic() <= window["end"]:
                    saves[n] += saved is True
                    failed[n] += saved is False
                count += 1
            own.control.close(session)

    threads = [threading.Thread(target=editor, args=(n, i)) for n, i in enumerate(ids)]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(max(0.0, window["begin"] - time.monotonic()))
    cpu_before = cpu_seconds(cluster)
    time.sleep(seconds)
    cpu_after = cpu_seconds(cluster)
    for thread in threads:
        thread.join()

    measured = [
        c
        for c in cluster.balancer.callbacks
        if c.status == 6 and window["begin"] <= c.finished <= window["end"]
    ]
    return Figures(
        setup="",
        saves=sum(saves),
        failed=sum(failed),
        seconds=seconds,
        latencies=[c.seconds for c in measured if c.acknowledged],
        cpu={name: cpu_after[name] - cpu_before[name] for name in cpu_after},
        served=[sum(1 for c in measured if c.instance == n) for n in range(2)],
    )


def cpu_seconds(cluster: Cluster) -> dict[str, float]:
    """User and system CPU seconds each process has used so far."""
    processes: dict[str, Process] = {"simulator": cluster.simulator}
    for n, instance in enumerate(cluster.instances):
        processes[f"instance {n}"] = instance
    return {name: _cpu(process) for name, process in processes.items()}


def _cpu(process: Process) -> float:
    assert process.process is not None
    fields = Path(f"/proc/{process.process.pid}/stat").read_text().rsplit(")", 1)[1]
    utime, stime = fields.split()[11:13]
    return (int(utime) + int(stime)) / CLOCK_TICKS


# The setups


@contextmanager
def database() -> Iterator[str]:
    """A throwaway PostgreSQL database, as a SQLAlchemy URL."""
    name = f"docdesk_bench_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(
    label: str,
    folder: Path,
    args: argparse.Namespace,
    *,
    instances: int,
    s3: SeaweedFS | None,
) -> Figures:
    print(f"measuring {label} ...", flush=True)
    with ExitStack() as stack:
        database_url = storage_url = None
        if s3 is not None:
            database_url = stack.enter_context(database())
            storage_url = s3.storage_url(f"bench-{secrets.token_hex(4)}")
        cluster = stack.enter_context(
            running_cluster(
                folder,
                instances=instances,
                database_url=database_url,
                storage_url=storage_url,
                save_delay=SAVE_DELAY,
            )
        )
        figures = drive(cluster, args.documents, args.seconds)
    return Figures(
        label,
        figures.saves,
        figures.failed,
        figures.seconds,
        figures.latencies,
        figures.cpu,
        figures.served,
    )


# Reporting


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    ram = 0.0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            ram = int(line.split()[1]) / 1024 / 1024
    return (
        f"{os.cpu_count()} cores ({cpu}), {ram:.1f} GiB RAM, "
        f"Python {platform.python_version()}"
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(rows: list[Figures], args: argparse.Namespace, load: str) -> None:
    print()
    print(f"machine: {machine()}")
    print(
        f"NOTE: this machine has {os.cpu_count()} cores, shared by every process "
        "here: the driver and balancer, the simulator, each docdesk instance, "
        "PostgreSQL and SeaweedFS. A second instance adds no core."
    )
    print(f"load average before: {load}; after: {load_average()}")
    print(
        f"load: {args.documents} documents, one editor each, Save in a loop, "
        f"{args.seconds:g} s measured after {WARM_UP:g} s of warm-up"
    )
    print()
    header = (
        f"{'setup':<40} {'saves/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'saves':>6} {'failed':>6}  callbacks per instance; CPU s per process"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cpu = ", ".join(f"{name} {used:.1f}" for name, used in row.cpu.items())
        served = "/".join(str(n) for n in row.served if n) or "0"
        print(
            f"{row.setup:<40} {row.per_second:8.1f} {row.percentile(50):8.1f} "
            f"{row.percentile(99):8.1f} {row.saves:6d} {row.failed:6d}  {served}; {cpu}"
        )
    print()
    print(
        "latency: from the DS's callback POST reaching the balancer to the end "
        "of docdesk's answer (download, checks, blob commit, catalog commit)."
    )
    result = {
        "name": "scale_out",
        "cores": os.cpu_count(),
        **{
            row.setup: {
                "saves_per_s": round(row.per_second, 1),
                "p50_ms": round(row.percentile(50), 1),
                "p99_ms": round(row.percentile(99), 1),
                "failed_saves": row.failed,
            }
            for row in rows
        },
    }
    # One line for the reliability report to read back.
    print("RESULT " + json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--documents", type=int, default=8)
    args = parser.parse_args(argv)
    load = load_average()

    with tempfile.TemporaryDirectory(prefix="docdesk-scale-out-") as work:
        folder = Path(work)
        rows = [
            measure(
                "(a) embedded: SQLite + files, 1 instance",
                folder / "a",
                args,
                instances=1,
                s3=None,
            )
        ]
        try:
            (folder / "seaweedfs").mkdir()
            with running_seaweedfs(folder / "seaweedfs") as s3:
                os.environ.update(s3.environ)
                rows.append(
                    measure(
                        "(b) PostgreSQL + S3, 1 instance",
                        folder / "b",
                        args,
                        instances=1,
                        s3=s3,
                    )
                )
                rows.append(
                    measure(
                        "(c) PostgreSQL + S3, 2 instances",
                        folder / "c",
                        args,
                        instances=2,
                        s3=s3,
                    )
                )
        except Unavailable as exc:
            print(f"no S3 server, so no (b) and (c): {exc}")
        except psycopg.OperationalError as exc:
            print(f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {exc}")
    report(rows, args, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
