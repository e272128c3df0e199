"""Two ``docdesk serve`` processes on one database and one blob store.

Eight documents are edited at once by two or three people each, through a
round-robin balancer, so the Document Server's callbacks alternate between
the instances: Save presses (status 6), captures asked of one instance and
answered by a callback on either, and closes (status 2, then a new key).
Afterwards every document's versions must hold every edit, once and in
order; every stored object must belong to a version; both instances must
have served callbacks. The second test kills one instance with SIGKILL twice
in the middle of the run, the second time while it holds a status 2, and
starts it again each time: the DS retries the status 2 (after 1, 2 and 4 s, through
the balancer, so on the live instance) and every edit still lands once;
the blobs a kill left with no version are swept, and then every stored
object belongs to a version.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from docdesk.catalog import Catalog, VersionRecord
from docdesk.orphans import sweep_orphans
from docdesk.simulator.edits import read_text
from docdesk.storage import open_store, sweep_staging
from integration.harness import sha256
from tally import record

from .cluster import Cluster, running_cluster
from .editing import FIRST_LINE, Script, Typist, play

pytestmark = pytest.mark.slow

USERS = ("ann", "bob", "cyd")
DOCUMENTS = 8
SESSIONS = 2
STEPS = 5
# Kills of the second instance, a little apart, while the documents are edited.
KILLS = 2
KILL_EVERY = 1.0
# How long a kill waits for the callback it wants to cut: a status 2 comes
# only when a session ends, halfway through the run; any other, at once.
STATUS_2_WAIT = 40.0
ANY_CALLBACK_WAIT = 5.0
# A status 2 answered between being seen and the kill was not cut; the last
# kill then waits for the next one, this many times at most.
STATUS_2_TRIES = 4


@dataclass(frozen=True)
class Kept:
    """What the catalog and the blob store hold after the run."""

    versions: dict[str, list[VersionRecord]]
    blobs: dict[str, bytes]
    """Every version's bytes, by blob name, read straight from the store."""
    objects: list[str]
    """Every blob name in the store."""
    leftovers: list[str]
    """Everything else under the store's root or prefix: staging, claims."""
    owned: set[str]
    """The names the catalog refers to: versions, changes, form data, recoveries."""


def test_two_instances_keep_every_edit_once_and_in_order(
    tmp_path: Path, database_url: str, storage_url: str
) -> None:
    with running_cluster(
        tmp_path, instances=2, database_url=database_url, storage_url=storage_url
    ) as cluster:
        scripts = edit_documents(cluster, seed=1)
        served = [instance.callbacks_served() for instance in cluster.instances]
        kept = asyncio.run(read_back(cluster))

    held = edits_kept_once(scripts, kept)
    record(
        "scale-out",
        "every edit kept once and in order, two instances on one database and store",
        tried=sum(len(s.edits) for s in scripts),
        held=held,
        unit="edit",
        detail=f"{storage_kind(storage_url)}; callbacks served per instance {served}",
    )
    assert_versions_hold_the_edits(scripts, kept)
    assert_captures_saw_their_edits(scripts, kept, across=True)
    assert set(kept.objects) <= kept.owned
    assert kept.leftovers == []
    assert all(count > 0 for count in served), served


def test_an_instance_killed_and_restarted_mid_run_loses_and_doubles_nothing(
    tmp_path: Path, database_url: str, storage_url: str
) -> None:
    with running_cluster(
        tmp_path, instances=2, database_url=database_url, storage_url=storage_url
    ) as cluster:
        caught: list[list[int | None]] = []
        scripts = edit_documents(cluster, seed=2, kill=caught)
        served = [instance.callbacks_served() for instance in cluster.instances]
        failed = Counter(
            c.status for c in cluster.balancer.callbacks if c.http_status == 502
        )
        # A kill between a blob's commit and the catalog's leaves that blob
        # with no version: the sweep removes it. Every save is answered by
        # now, so no blob is waiting for its row and no limit is needed.
        wait_for_no_callback_held(cluster)
        swept, staged = asyncio.run(sweep_after_run(cluster))
        kept = asyncio.run(read_back(cluster))

    held = edits_kept_once(scripts, kept)
    orphans = sorted(set(kept.objects) - kept.owned)
    record(
        "scale-out",
        "every edit kept once and in order across SIGKILL of one of two instances",
        tried=len(caught),
        held=len(caught) if held == sum(len(s.edits) for s in scripts) else 0,
        unit="kill",
        detail=(
            f"{storage_kind(storage_url)}; callbacks held at each kill {caught}; "
            f"callbacks answered 502 by status {dict(failed)}; "
            f"captures lost {sum(s.failed_captures for s in scripts)}; "
            f"{swept} blobs with no version and {staged} staging objects swept"
        ),
    )
    record(
        "scale-out",
        "every stored object belongs to a version after the orphan sweep, "
        "across SIGKILL of one of two instances",
        tried=len(caught),
        held=len(caught) if not orphans and not kept.leftovers else 0,
        unit="kill",
        detail=(
            f"{storage_kind(storage_url)}; {swept} orphaned blobs swept; "
            f"{len(orphans)} blobs and {len(kept.leftovers)} staging objects left"
        ),
    )
    assert len(caught) >= KILLS, "the run ended before every kill"
    # A status 2 was cut; the edits checked next show that a retry saved it.
    assert 2 in caught[-1], caught
    assert failed[2] >= 1, failed
    assert_versions_hold_the_edits(scripts, kept)
    assert_captures_saw_their_edits(scripts, kept, across=False)
    assert orphans == []
    assert kept.leftovers == []
    assert all(count > 0 for count in served), served


# Driving


def edit_documents(
    cluster: Cluster, *, seed: int, kill: list[list[int | None]] | None = None
) -> list[Script]:
    """Run every document's script at once; with ``kill``, kill instance 1 meanwhile.

    ``kill`` receives, for each kill, the statuses of the callbacks it cut.
    """
    rng = random.Random(seed)
    with Typist(cluster) as typist:
        scripts = [Script(typist.upload(f"Shared {n}.docx")) for n in range(DOCUMENTS)]
    casts = [rng.sample(USERS, rng.choice((2, 3))) for _ in scripts]

    def run(script: Script, users: list[str], seed: float) -> Script:
        with Typist(cluster) as own:
            return play(
                own,
                script,
                users,
                sessions=SESSIONS,
                steps=STEPS,
                rng=random.Random(seed),
            )

    with ThreadPoolExecutor(DOCUMENTS) as pool:
        futures = [
            pool.submit(run, script, users, rng.random())
            for script, users in zip(scripts, casts, strict=True)
        ]
        if kill is not None:
            kill_meanwhile(cluster, futures, kill)
        return [future.result() for future in futures]


def kill_meanwhile(
    cluster: Cluster, futures: list[Future[Script]], caught: list[list[int | None]]
) -> None:
    """SIGKILL instance 1 while it holds a callback, start it again, KILLS times.

    The last kill waits for a status 2 inside the instance, whose retries
    (1, 2 and 4 s later) must then save it once; the others take any callback.
    A status 2 comes only when a session ends, the last ones at the very end
    of the run: only the last kill can afford to wait for one. Until it is
    answered, its document's script is not done. Should the status 2 be
    answered before the kill lands, the kill still counts and the next status
    2 is waited for.
    """
    victim = cluster.instances[1]
    for wanted in (*[None] * (KILLS - 1), 2):
        time.sleep(KILL_EVERY)
        for _ in range(STATUS_2_TRIES):
            held = wait_for_callback_in(cluster, 1, wanted)
            if all(future.done() for future in futures):
                return
            cut_before = cut_status_2(cluster)
            caught.append(held)
            victim.kill()
            victim.start()
            if wanted is None or was_cut(cluster, cut_before):
                break


def cut_status_2(cluster: Cluster) -> int:
    """How many status 2 callbacks the balancer answered 502 so far."""
    return sum(
        1
        for callback in list(cluster.balancer.callbacks)
        if callback.status == 2 and callback.http_status == 502
    )


def was_cut(cluster: Cluster, before: int, limit: float = 5.0) -> bool:
    """Whether a status 2 was answered 502 since ``before`` was counted."""
    with cluster.balancer.changed:
        return cluster.balancer.changed.wait_for(
            lambda: cut_status_2(cluster) > before, timeout=limit
        )


def wait_for_callback_in(
    cluster: Cluster, instance: int, status: int | None
) -> list[int | None]:
    """The statuses ``instance`` holds once one is ``status`` (any, for None)."""
    deadline = time.monotonic() + (
        ANY_CALLBACK_WAIT if status is None else STATUS_2_WAIT
    )
    while time.monotonic() < deadline:
        held = cluster.balancer.holding(instance)
        if (status in held) or (status is None and held):
            return held
        time.sleep(0.001)
    return cluster.balancer.holding(instance)


# Sweeping


def wait_for_no_callback_held(cluster: Cluster, limit: float = 30.0) -> None:
    """Wait until no instance holds a callback: no save is under way."""
    deadline = time.monotonic() + limit
    while any(cluster.balancer.holding(i) for i in range(len(cluster.instances))):
        assert time.monotonic() < deadline, "a callback is still held"
        time.sleep(0.01)


async def sweep_after_run(cluster: Cluster) -> tuple[int, int]:
    """Sweep orphans and staging with no age limit; say how many of each went."""
    assert cluster.database_url is not None
    catalog = Catalog.from_url(cluster.database_url)
    store = open_store(cluster.storage_url)
    try:
        swept = await sweep_orphans(catalog, store, older_than=0)
        staged = await sweep_staging(store, older_than=0)
    finally:
        await store.close()
        await catalog.close()
    return swept, staged


# Reading back


async def read_back(cluster: Cluster) -> Kept:
    assert cluster.database_url is not None
    catalog = Catalog.from_url(cluster.database_url)
    store = open_store(cluster.storage_url)
    try:
        documents = await catalog.documents()
        versions = {d.id: await catalog.versions(d.id) for d in documents}
        recoveries = await catalog.recoveries()
        objects = [name async for name in store.names()]
        blobs = {}
        for version in itertools.chain.from_iterable(versions.values()):
            blobs[version.blob] = b"".join([c async for c in store.read(version.blob)])
    finally:
        await store.close()
        await catalog.close()

    owned = {r.blob for r in recoveries}
    for version in itertools.chain.from_iterable(versions.values()):
        names = (version.blob, version.changes_blob, version.forms_blob)
        owned |= {name for name in names if name is not None}
    leftovers = sorted(set(raw_listing(cluster.storage_url)) - set(objects))
    return Kept(versions, blobs, objects, leftovers, owned)


def raw_listing(storage_url: str) -> list[str]:
    """Every object under the prefix, or file under the folder, by any name."""
    if storage_url.startswith("file:"):
        root = Path(url2pathname(urlsplit(storage_url).path))
        return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    # obstore comes with the extra ``s3``: only the S3 variant needs it.
    import obstore
    from obstore.store import S3Store

    from docdesk.storage.s3 import parse_s3_url

    location = parse_s3_url(storage_url)
    store = S3Store(
        location.bucket,
        prefix=location.prefix or None,
        endpoint=location.endpoint,
        allow_http=True,
    )
    return [meta["path"] for batch in obstore.list(store) for meta in batch]


def texts(kept: Kept, document_id: str) -> list[list[str]]:
    return [read_text("docx", kept.blobs[v.blob]) for v in kept.versions[document_id]]


def edits_kept_once(scripts: list[Script], kept: Kept) -> int:
    """How many edits the current version holds exactly once."""
    held = 0
    for script in scripts:
        final = Counter(texts(kept, script.document_id)[-1])
        held += sum(1 for edit in script.edits if final[edit] == 1)
    return held


def storage_kind(url: str) -> str:
    return "S3 (SeaweedFS)" if url.startswith("s3://") else "shared folder"


# Asserting


def assert_versions_hold_the_edits(scripts: list[Script], kept: Kept) -> None:
    """Numbered 1..n; each version adds edits to the last; the last has them all."""
    for script in scripts:
        versions = kept.versions[script.document_id]
        states = texts(kept, script.document_id)

        assert [v.number for v in versions] == list(range(1, len(versions) + 1))
        assert states[0] == [FIRST_LINE]
        for before, after in itertools.pairwise(states):
            assert len(after) > len(before)
            assert after[: len(before)] == before
        assert states[-1] == [FIRST_LINE, *script.edits]
        for version in versions:
            data = kept.blobs[version.blob]
            assert sha256(data) == version.sha256
            assert len(data) == version.size
        # No more versions than saves asked for: none doubled.
        # A save answered with a failure may still have made its version.
        asked = (
            script.saves
            + script.failed_saves
            + len(script.captures)
            + script.failed_captures
        )
        assert len(versions) <= 1 + asked + script.closes


def assert_captures_saw_their_edits(
    scripts: list[Script], kept: Kept, *, across: bool
) -> None:
    """A capture's version holds exactly the edits made before it."""
    saved = crossed = 0
    for script in scripts:
        states = texts(kept, script.document_id)
        for edits, captured in script.captures:
            assert captured["capture"]["outcome"] == "saved", captured
            assert states[captured["version"] - 1] == [
                FIRST_LINE,
                *script.edits[:edits],
            ]
            saved += 1
            crossed += captured["served_by"] != captured["saved_by"]
    assert saved > 0
    if across:
        # The capture waited on one instance for a callback the other took.
        assert crossed > 0
