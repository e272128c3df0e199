"""Two instances take turns at a document, whichever each callback reached.

The Document Server (DS) gives up on a callback long before a slow save is
done, and retries it: the retry reaches the other instance, behind the
balancer, while the first is still downloading. Each must wait for the
other, and the file they both fetch must make one version.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from docdesk.catalog import Catalog
from docdesk.simulator.app import SLOW_SECONDS
from docdesk.simulator.edits import read_text
from docdesk.storage import open_store

from .cluster import Cluster, running_cluster
from .editing import FIRST_LINE, Typist

pytestmark = pytest.mark.slow

FINAL_SAVE_LIMIT = 60.0


def test_a_retry_that_overtakes_a_slow_save_on_the_other_instance_saves_once(
    tmp_path: Path, database_url: str, storage_url: str
) -> None:
    with (
        running_cluster(
            tmp_path, instances=2, database_url=database_url, storage_url=storage_url
        ) as cluster,
        Typist(cluster) as typist,
    ):
        document_id = typist.upload("Overtaken.docx")
        editor, key = typist.open(document_id, "ann")
        typist.control.edit(editor, "kept once")
        # The first attempt's download waits; its caller gives up at once.
        typist.control.faults(download="slow", callback="timeout")

        typist.control.close(editor)
        attempts = wait_for_final_save(typist, key)
        # The attempt the DS gave up on is done too before anything is read.
        wait_for_no_callback_held(cluster)
        path = f"/ds/documents/{document_id}/callback"
        served = [
            c.instance
            for c in cluster.balancer.callbacks
            if c.document_path == path and c.status == 2
        ]
        texts = asyncio.run(read_texts(cluster.storage_url, database_url, document_id))

    assert [(a["attempt"], a["success"]) for a in attempts] == [(1, False), (2, True)]
    assert sorted(served) == [0, 1]
    assert texts == [[FIRST_LINE], [FIRST_LINE, "kept once"]]


def wait_for_final_save(typist: Typist, key: str) -> list[dict[str, object]]:
    """The DS's attempts at the status 2, once one succeeded."""
    deadline = time.monotonic() + FINAL_SAVE_LIMIT + SLOW_SECONDS
    while time.monotonic() < deadline:
        attempts = [c for c in typist.control.callbacks(key) if c["status"] == 2]
        if any(a["success"] for a in attempts):
            return attempts
        time.sleep(0.05)
    raise TimeoutError("the status 2 never landed")


def wait_for_no_callback_held(cluster: Cluster) -> None:
    deadline = time.monotonic() + FINAL_SAVE_LIMIT
    while any(cluster.balancer.holding(i) for i in range(len(cluster.instances))):
        assert time.monotonic() < deadline, "a callback is still held"
        time.sleep(0.01)


async def read_texts(
    storage_url: str, database_url: str, document_id: str
) -> list[list[str]]:
    """The text of each version of the document, oldest first."""
    catalog, store = Catalog.from_url(database_url), open_store(storage_url)
    try:
        texts = []
        for version in await catalog.versions(document_id):
            data = b"".join([chunk async for chunk in store.read(version.blob)])
            texts.append(read_text("docx", data))
        return texts
    finally:
        await store.close()
        await catalog.close()
