"""How many editor configs docdesk hands out a second, beside what they must cost.

Every page that opens the editor asks for a config: docdesk reads the
document, builds the DocsAPI config with signed links and signs it whole as
a JWT. The baseline is the least any service must do per config, measured
in the same run from its two parts:

- **HTTP**: the bare ASGI app of ``throughput.py`` answering the same GET
  under the same uvicorn settings (the server's ceiling);
- **signing**: pyjwt signing the very config docdesk returned, in a loop in
  this process (the crypto and JSON floor).

The baseline rate is ``1 / (1/http + 1/signing)``: one process doing both,
one after the other. docdesk's reads of its catalog come on top of that, so
the ratio says how much docdesk adds. Target (this benchmark's own): 50% or
more of the baseline.

    python benchmarks/editor_configs.py [--seconds 10] [--runs 3] [--connections 32]

The last line is ``RESULT {json}``. Exit status 0 when the target is met,
1 when it is missed, 2 when the benchmark could not measure.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from save_large_file import BenchmarkError, Processes, run_benchmark
from throughput import (
    Load,
    Server,
    describe_load,
    median,
    print_machine,
    print_result,
    print_table,
    run_folder,
    run_wrk,
    start_bare,
    start_docdesk,
    upload_documents,
    write_requests,
)

from docdesk import tokens

__all__ = ["main"]

DOCUMENTS = 20
RATIO_TARGET = 0.5
# The bare app answers {"error":0}; docdesk's config holds its token.
BARE_EXPECT = '"error":0'
CONFIG_EXPECT = '"token":"'


def config_requests(ids: list[str], count: int) -> Iterator[tuple[str, str, str, str]]:
    for n in range(count):
        target = (
            f"/api/documents/{ids[n % len(ids)]}/editor-config"
            f"?user_id=u{n % 50}&user_name=User%20{n % 50}"
        )
        yield "GET", target, "", ""


def one_config(service: Server, document_id: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{service.base_url}/api/documents/{document_id}/editor-config",
        params={"user_id": "u1", "user_name": "User 1"},
        trust_env=False,
    )
    answer.raise_for_status()
    config: dict[str, Any] = answer.json()
    return config


def signing_rate(config: dict[str, Any], secret: str, seconds: float) -> float:
    """Configs a second pyjwt signs, the config's own claims, in this process."""
    claims = {name: value for name, value in config.items() if name != "token"}
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            tokens.sign(claims, secret)
        count += 100
    return count / (time.perf_counter() - started)


def benchmark(args: argparse.Namespace) -> bool:
    workdir: Path = args.workdir.resolve()
    print_machine(workdir)
    processes = Processes()
    secret = secrets.token_urlsafe(30)
    bares: list[Load] = []
    docdesks: list[Load] = []
    signings: list[float] = []

    with run_folder(workdir, "docdesk-bench-configs-") as folder:
        try:
            docdesk = start_docdesk(
                processes,
                data_dir=folder / "data",
                secret=secret,
                log=folder / "docdesk.log",
            )
            bare = start_bare(processes, log=folder / "bare.log")
            ids = upload_documents(docdesk, DOCUMENTS, "Configs")
            config = one_config(docdesk, ids[0])
            requests = folder / "configs.txt"
            write_requests(requests, config_requests(ids, int(args.seconds * 5000)))

            for number in range(1, args.runs + 1):
                order = ("bare", "docdesk") if number % 2 else ("docdesk", "bare")
                for side in order:
                    server = bare if side == "bare" else docdesk
                    expect = BARE_EXPECT if side == "bare" else CONFIG_EXPECT
                    load = run_wrk(
                        server,
                        requests,
                        expect,
                        seconds=args.seconds,
                        connections=args.connections,
                    )
                    if load.bad or load.socket_errors:
                        raise BenchmarkError(f"{side}: {describe_load(side, load)}")
                    (bares if side == "bare" else docdesks).append(load)
                    line = describe_load(side, load, replays_matter=False)
                    print(f"run {number} {line}", flush=True)
                signings.append(signing_rate(config, secret, min(args.seconds, 5.0)))
                print(f"run {number} pyjwt signing alone: {signings[-1]:,.0f}/s")
        finally:
            processes.stop_all()

    return report(args, bares, docdesks, signings)


def report(
    args: argparse.Namespace,
    bares: list[Load],
    docdesks: list[Load],
    signings: list[float],
) -> bool:
    http = median([load.per_second for load in bares])
    signing = median(signings)
    baseline = 1 / (1 / http + 1 / signing)
    docdesk = median([load.per_second for load in docdesks])
    ratio = docdesk / baseline
    met = ratio >= RATIO_TARGET

    def rate(values: list[float]) -> tuple[str, str, str]:
        return f"{median(values):,.0f}", f"{min(values):,.0f}", f"{max(values):,.0f}"

    print(
        f"\n{len(docdesks)} runs of {args.seconds:g} s each side, "
        f"{args.connections} connections, GET editor-config on {DOCUMENTS} documents"
    )
    print(
        "baseline: the bare ASGI app answering the same GET on docdesk serve's"
        " uvicorn options (HTTP alone, nothing read or signed), and pyjwt"
        " signing the very config docdesk returned, in a loop in this process;"
        " together as one process doing both in turn: 1 / (1/http + 1/signing)"
    )
    print_table(
        [
            ("configs a second", "median", "min", "max", "target", ""),
            (
                "bare ASGI app (HTTP alone)",
                *rate([x.per_second for x in bares]),
                "",
                "",
            ),
            ("pyjwt signing the config alone", *rate(signings), "", ""),
            ("baseline: both, one after the other", f"{baseline:,.0f}", "", "", "", ""),
            ("docdesk", *rate([x.per_second for x in docdesks]), "", ""),
            (
                "docdesk / baseline",
                f"{ratio:.2f}",
                "",
                "",
                f">= {RATIO_TARGET}",
                "PASS" if met else "MISS",
            ),
        ]
    )
    print(
        f"docdesk latency (median of runs): p50 "
        f"{median([x.p50_ms for x in docdesks]):.1f} ms, p99 "
        f"{median([x.p99_ms for x in docdesks]):.1f} ms; server CPU "
        f"{median([x.server_cpu for x in docdesks]):.0%}"
    )
    print_result(
        "editor_configs",
        docdesk_per_s=round(docdesk, 1),
        baseline_per_s=round(baseline, 1),
        ratio=round(ratio, 3),
        http_per_s=round(http, 1),
        signing_per_s=round(signing, 1),
        target_met=met,
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per run side")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()), help="data dir"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.seconds <= 0:
        parser.error("--runs and --seconds must be positive")

    return run_benchmark(benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
