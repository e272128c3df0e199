"""S3BlobStore's own behaviour: its URL, its staging area, its memory.

What every store promises is in test_storage_contract.py; these need the S3
store, most of them a running SeaweedFS (fixture ``s3_storage_url``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import secrets
import sys
import textwrap
import tracemalloc
from pathlib import Path

import anyio
import obstore
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from docdesk.doctor import Check, run_checks
from docdesk.errors import ConfigurationError, StorageError
from docdesk.settings import Settings
from docdesk.storage import open_store
from docdesk.storage.s3 import (
    CLAIMS,
    SMALL_BLOB_MAX,
    S3BlobStore,
    S3Location,
    parse_s3_url,
)
from seaweed import free_ports
from tally import record

MiB = 1024 * 1024
SECRET = "do-not-show-this-secret-0123456789"


def opened(url: str) -> S3BlobStore:
    store = open_store(url)
    assert isinstance(store, S3BlobStore)
    return store


async def put(store: S3BlobStore, name: str, data: bytes) -> None:
    async with store.create() as writer:
        for at in range(0, len(data), MiB):
            await writer.write(data[at : at + MiB])
        await writer.commit(name)


async def storage_check(storage_url: str, data_dir: str) -> Check:
    """The doctor's storage check on ``storage_url``; the DS is unreachable."""
    (port,) = free_ports(1)
    settings = Settings.from_env(
        {
            "DOCDESK_DATA_DIR": data_dir,
            "DOCDESK_STORAGE_URL": storage_url,
            "DOCDESK_DOCUMENT_SERVER_URL": f"http://127.0.0.1:{port}",
            "DOCDESK_JWT_SECRET": secrets.token_hex(32),
            "DOCDESK_PUBLIC_URL": f"http://127.0.0.1:{port}",
        }
    )
    (found,) = [
        check for check in await run_checks(settings) if check.name == "storage"
    ]
    return found


def rss_mib(field: str) -> float:
    """A memory figure of this process from /proc (VmRSS, VmHWM), or 0."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss() -> None:
    """Start VmHWM afresh from VmRSS, where Linux allows it."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


async def every_key(store: S3BlobStore) -> set[str]:
    pages = [page async for page in obstore.list(store._store)]
    return {str(meta["path"]) for page in pages for meta in page}


class TestUrl:
    def test_bucket_prefix_endpoint_and_region_are_read(self) -> None:
        url = "s3://docs/team/a?endpoint=http://127.0.0.1:9000&region=eu-west-1"

        location = parse_s3_url(url)

        assert location == S3Location(
            "docs", "team/a", "http://127.0.0.1:9000", "eu-west-1"
        )

    def test_a_bucket_alone_is_enough(self) -> None:
        location = parse_s3_url("s3://docs")

        assert location == S3Location("docs", "")

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            pytest.param("s3:///prefix", "needs a bucket", id="no bucket"),
            pytest.param("s3://", "needs a bucket", id="nothing"),
            pytest.param("s3://Bad_Bucket!/p", "needs a bucket", id="bad bucket"),
            pytest.param("s3://docs/p?secret=1", "unknown parameter 'secret'", id="q"),
            pytest.param("s3://docs/../up", "unsafe prefix", id="unsafe prefix"),
            pytest.param("s3://docs/p?endpoint=ftp://h", "not an http", id="ftp"),
            pytest.param("s3://docs/p?endpoint=http://h/x", "with a path", id="path"),
        ],
    )
    def test_bad_url_is_refused_naming_the_variable(
        self, url: str, reason: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=reason) as caught:
            open_store(url)

        assert "DOCDESK_STORAGE_URL" in str(caught.value)

    @pytest.mark.parametrize(
        "url",
        [
            f"s3://AKIAEXAMPLE:{SECRET}@docs/p",
            f"s3://docs/p?endpoint=http://AKIAEXAMPLE:{SECRET}@127.0.0.1:9000",
        ],
        ids=["in the bucket", "in the endpoint"],
    )
    def test_credentials_in_the_url_are_refused_and_never_repeated(
        self, url: str
    ) -> None:
        with pytest.raises(ConfigurationError, match="credentials") as caught:
            open_store(url)

        assert SECRET not in str(caught.value)
        assert "AKIAEXAMPLE" not in str(caught.value)

    def test_missing_obstore_is_a_configuration_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A None in sys.modules makes the import fail as if not installed.
        monkeypatch.setitem(sys.modules, "docdesk.storage.s3", None)

        with pytest.raises(ConfigurationError, match=r"docdesk\[s3\]"):
            open_store("s3://docs/p")

    def test_location_shows_bucket_prefix_and_endpoint_host_only(self) -> None:
        location = parse_s3_url("s3://docs/team?endpoint=https://s3.example:9000")

        assert str(location) == "s3://docs/team at https://s3.example:9000"


class TestStaging:
    @pytest.mark.anyio
    async def test_a_large_blob_is_staged_then_copied_and_nothing_is_left(
        self, s3_storage_url: str
    ) -> None:
        store = opened(s3_storage_url)
        data = secrets.token_bytes(SMALL_BLOB_MAX + 1)

        async with store.create() as writer:
            for at in range(0, len(data), MiB):
                await writer.write(data[at : at + MiB])
            staged = await every_key(store)
            await writer.commit("documents/big")

        assert len(staged) == 0  # in flight as a multipart upload, not listed
        assert await every_key(store) == {"documents/big"}
        assert await store.size("documents/big") == len(data)

    @pytest.mark.anyio
    async def test_staging_objects_and_claims_are_never_listed(
        self, s3_storage_url: str
    ) -> None:
        store = opened(s3_storage_url)
        await put(store, "kept", b"x")
        await obstore.put_async(store._store, ".staging/left-by-a-crash", b"x")
        await obstore.put_async(store._store, f"{CLAIMS}/held", b"")

        listed = [name async for name in store.names()]
        hidden = [name async for name in store.names(".staging")]

        assert listed == ["kept"]
        assert hidden == []
        assert len(await every_key(store)) == 3

    @pytest.mark.anyio
    async def test_a_claim_left_by_a_crash_holds_its_name_until_swept(
        self, s3_storage_url: str
    ) -> None:
        store = opened(s3_storage_url)
        await obstore.put_async(store._store, f"{CLAIMS}/documents/1/v", b"")

        with pytest.raises(FileExistsError):
            await put(store, "documents/1/v", b"refused while claimed")
        swept = await store.sweep_staging(older_than=0)
        await put(store, "documents/1/v", b"kept")

        assert swept == 1
        assert await every_key(store) == {"documents/1/v"}


class TestFailures:
    @pytest.mark.anyio
    async def test_refused_credentials_fail_without_showing_them(
        self, s3_storage_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        store = opened(s3_storage_url)

        with pytest.raises(StorageError) as caught:
            await put(store, "a", b"x")

        message = str(caught.value)
        assert "'a'" in message
        assert "403" in message
        assert SECRET not in message
        assert "docdesk-test" not in message  # the access key id

    @pytest.mark.anyio
    async def test_a_server_that_is_down_fails_every_operation_with_storage_error(
        self, s3_storage_url: str
    ) -> None:
        (port,) = free_ports(1)
        store = opened(
            s3_storage_url.split("?")[0] + f"?endpoint=http://127.0.0.1:{port}"
        )

        with pytest.raises(StorageError, match="could not commit blob 'a'"):
            await put(store, "a", b"x")
        with pytest.raises(StorageError, match="could not look up"):
            await store.size("a")
        with pytest.raises(StorageError, match="could not read"):
            await anext(store.read("a"))
        with pytest.raises(StorageError, match="could not list"):
            await anext(store.names())

    @pytest.mark.anyio
    async def test_a_staged_upload_that_fails_closes_the_writer(
        self, s3_storage_url: str
    ) -> None:
        (port,) = free_ports(1)
        store = opened(
            s3_storage_url.split("?")[0] + f"?endpoint=http://127.0.0.1:{port}"
        )
        writer = store.create()
        for _ in range(SMALL_BLOB_MAX // MiB):
            await writer.write(secrets.token_bytes(MiB))

        # The chunk past the threshold starts the staged upload.
        with pytest.raises(StorageError, match="could not write a new blob"):
            await writer.write(secrets.token_bytes(MiB))

        with pytest.raises(ValueError, match="closed"):
            await writer.commit("never")

    @pytest.mark.anyio
    async def test_a_failed_commit_logs_no_credentials(
        self,
        s3_storage_url: str,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        store = opened(s3_storage_url)
        caplog.set_level(logging.DEBUG)

        with pytest.raises(StorageError):
            await put(store, "big", secrets.token_bytes(SMALL_BLOB_MAX + 1))

        assert SECRET not in caplog.text


# A writer process: blobs alternately small and staged, each committed
# before the next starts, until it is killed.
KILLED_WRITER = textwrap.dedent(
    """
    import hashlib, sys, anyio
    from docdesk.storage import open_store
    from docdesk.storage.s3 import SMALL_BLOB_MAX

    def payload(i):
        size = 100_000 if i % 2 == 0 else SMALL_BLOB_MAX + 1_048_583
        block = hashlib.sha256(str(i).encode()).digest()
        return (block * (size // 32 + 1))[:size]

    async def main(url, writer_id):
        store = open_store(url)
        print("ready", flush=True)
        for i in range(100_000):
            data = payload(i)
            async with store.create() as writer:
                for at in range(0, len(data), 1_048_576):
                    await writer.write(data[at : at + 1_048_576])
                await writer.commit(f"kill/{writer_id}/{i:05d}")

    anyio.run(main, sys.argv[1], sys.argv[2])
    """
)


def killed_payload(i: int) -> bytes:
    size = 100_000 if i % 2 == 0 else SMALL_BLOB_MAX + 1_048_583
    block = hashlib.sha256(str(i).encode()).digest()
    return (block * (size // 32 + 1))[:size]


class TestKilledWriters:
    @pytest.mark.slow
    @pytest.mark.anyio
    async def test_killed_writers_leave_whole_blobs_and_sweepable_leftovers(
        self, s3_storage_url: str
    ) -> None:
        # Real processes writing to one prefix, each killed at its own random
        # instant: in a buffer, mid-upload, between upload, claim, copy and
        # cleanup. Every name must hold whole bytes, and a sweep must leave
        # nothing but names.
        store = opened(s3_storage_url)
        kills = [f"{round_}{writer}" for round_ in range(3) for writer in "ab"]
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

        async def run_and_kill(writer_id: str) -> None:
            command = [sys.executable, "-c", KILLED_WRITER, s3_storage_url, writer_id]
            async with await anyio.open_process(command, env=environ) as child:
                assert child.stdout is not None
                output = BufferedByteReceiveStream(child.stdout)
                assert await output.receive_until(b"\n", 64) == b"ready"
                await anyio.sleep(random.uniform(0.05, 2.0))
                child.kill()
                await child.wait()

        for round_ in range(3):
            async with anyio.create_task_group() as group:
                for writer_id in kills[2 * round_ : 2 * round_ + 2]:
                    group.start_soon(run_and_kill, writer_id)

        whole = 0
        committed = 0
        for writer_id in kills:
            written = [name async for name in store.names(f"kill/{writer_id}/")]
            expected = [f"kill/{writer_id}/{i:05d}" for i in range(len(written))]
            intact = written == expected
            for i, name in enumerate(written):
                data = b"".join([chunk async for chunk in store.read(name)])
                intact = intact and data == killed_payload(i)
            whole += intact
            committed += len(written)
        names = {name async for name in store.names()}
        swept = await store.sweep_staging(older_than=0)
        left = await every_key(store)

        record(
            "storage",
            "s3 writers killed at random instants leave whole blobs",
            tried=len(kills),
            held=whole,
            unit="kill",
            detail=(
                f"{committed} blobs committed before the kills, "
                f"{swept} staging objects or claims swept after"
            ),
        )
        assert whole == len(kills)
        assert committed > 0
        assert left == names


class TestDoctor:
    @pytest.mark.anyio
    async def test_the_storage_check_writes_and_reads_a_probe_in_the_bucket(
        self, s3_storage_url: str, tmp_path: Path
    ) -> None:
        found = await storage_check(s3_storage_url, str(tmp_path))

        location = parse_s3_url(s3_storage_url)
        assert found.ok
        assert str(location) in found.detail
        assert "endpoint=" not in found.detail
        assert await every_key(opened(s3_storage_url)) == set()

    @pytest.mark.anyio
    async def test_refused_credentials_fail_the_check_without_showing_them(
        self, s3_storage_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)

        found = await storage_check(s3_storage_url, str(tmp_path))

        assert not found.ok
        assert "403" in found.detail
        assert "AWS_SECRET_ACCESS_KEY" in (found.fix or "")
        assert SECRET not in found.detail + (found.fix or "")

    @pytest.mark.anyio
    async def test_credentials_in_the_url_fail_the_check_without_showing_them(
        self, tmp_path: Path
    ) -> None:
        url = f"s3://AKIAEXAMPLE:{SECRET}@docs/p?endpoint=http://127.0.0.1:9"

        found = await storage_check(url, str(tmp_path))

        shown = found.detail + (found.fix or "")
        assert not found.ok
        assert "must not hold credentials" in found.detail
        assert SECRET not in shown
        assert "AKIAEXAMPLE" not in shown

    @pytest.mark.anyio
    async def test_a_bad_url_fails_the_check_and_says_why(self, tmp_path: Path) -> None:
        url = f"s3://docs/p?endpoint=http://127.0.0.1:9&token={SECRET}"

        found = await storage_check(url, str(tmp_path))

        assert not found.ok
        assert "unknown parameter 'token'" in found.detail
        assert found.detail.startswith("cannot open s3://docs/p at http://127.0.0.1:9")
        assert SECRET not in found.detail + (found.fix or "")


class TestMemory:
    @pytest.mark.anyio
    async def test_a_64_mib_blob_is_written_and_read_in_bounded_memory(
        self, s3_storage_url: str
    ) -> None:
        store = opened(s3_storage_url)
        size, chunk_size = 64 * MiB, 256 * 1024
        block = secrets.token_bytes(chunk_size)
        sent = hashlib.sha256()

        # Each chunk is made as it is sent, so only what the store keeps
        # counts: the buffer of a small blob and the parts in flight.
        reset_peak_rss()
        rss_before = rss_mib("VmRSS")
        tracemalloc.start()
        async with store.create() as writer:
            for i in range(size // chunk_size):
                chunk = i.to_bytes(8, "big") + block[8:]
                sent.update(chunk)
                await writer.write(chunk)
            await writer.commit("big")
        _, written_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        # Not asserted: obstore's own buffers are outside tracemalloc's view,
        # and RSS moves with everything else in the process.
        rss_growth = rss_mib("VmHWM") - rss_before

        got = hashlib.sha256()
        async for chunk in store.read("big", chunk_size=chunk_size):
            got.update(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        record(
            "storage",
            "s3 memory stays flat for a 64 MiB blob",
            tried=1,
            held=int(written_peak < 24 * MiB and read_peak < 8 * MiB),
            unit="blob",
            detail=(
                f"tracemalloc peak write={written_peak / MiB:.1f} MiB "
                f"read={read_peak / MiB:.1f} MiB; peak RSS growth while "
                f"writing {rss_growth:.0f} MiB"
            ),
        )
        assert got.hexdigest() == sent.hexdigest()
        assert written_peak < 24 * MiB
        assert read_peak < 8 * MiB
