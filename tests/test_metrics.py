"""What ``/metrics`` says after a known sequence of callbacks.

The counters are driven with the replies DocDesk gives; the catalog's
figures come from a real catalog on each supported database.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from docdesk.catalog import Catalog, NewVersion, VersionSource
from docdesk.catalog.tables import keys
from docdesk.desk import CallbackReply
from docdesk.metrics import MISSING_EXTRA, TEXT_FORMAT, Metrics

pytestmark = pytest.mark.anyio

SAMPLES = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: bytes) -> SAMPLES:
    """Every sample by name and sorted labels, ``_created`` ones left out."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def version(n: int) -> NewVersion:
    return NewVersion(
        blob=f"documents/d/{n}.docx",
        file_type="docx",
        size=100 + n,
        sha256=f"{n:064x}",
        source=VersionSource.UPLOAD,
    )


async def set_editors(catalog: Catalog, key: str, editors: list[str]) -> None:
    """Who edits under ``key``, written where the status-1 callbacks put it."""
    async with catalog.engine.begin() as conn:
        await conn.execute(
            update(keys).where(keys.c.key == key).values(editors=editors)
        )


async def library(catalog: Catalog) -> None:
    """Two documents, three versions; d1 edited by two people under two keys."""
    for document_id, key in (("d1", "k1"), ("d2", "k2")):
        await catalog.add_document(
            document_id=document_id, title="a.docx", key=key, version=version(1)
        )
    await catalog.commit_version("d1", version(2), new_key="k1b")
    await set_editors(catalog, "k1", ["ann"])
    await set_editors(catalog, "k1b", ["bob"])


async def test_metrics_after_a_known_sequence_of_callbacks(catalog: Catalog) -> None:
    await library(catalog)
    metrics = Metrics()
    sequence = [
        (CallbackReply(200, 0, "editing"), 1, 0.002, None),
        (CallbackReply(200, 0, "saved", 2), 6, 0.3, 1_000),
        (CallbackReply(200, 0, "saved", 3), 2, 1.5, 2_500),
        (CallbackReply(200, 0, "replayed"), 2, 0.004, None),
        (CallbackReply(503, 1, "download_failed"), 2, 45.0, None),
        (CallbackReply(401, 1, "invalid_token"), None, 0.001, None),
        (CallbackReply(200, 0, "recovered"), 3, 0.2, None),
        (CallbackReply(200, 0, "closed"), 4, 0.002, None),
    ]
    for reply, status, seconds, saved_bytes in sequence:
        metrics.observe_callback(reply, status, seconds, saved_bytes)
    metrics.observe_download_failure("download_failed")

    body, content_type = await metrics.render(catalog)

    found = samples(body)
    assert content_type == TEXT_FORMAT
    callbacks = {
        dict(labels)["status"] + " " + dict(labels)["outcome"]: value
        for (name, labels), value in found.items()
        if name == "docdesk_callbacks_total"
    }
    assert callbacks == {
        "1 editing": 1,
        "6 saved": 1,
        "2 saved": 1,
        "2 replayed": 1,
        "2 download_failed": 1,
        "unknown invalid_token": 1,
        "3 recovered": 1,
        "4 closed": 1,
    }
    assert found[("docdesk_save_seconds_count", ())] == 5
    assert found[("docdesk_save_seconds_sum", ())] == pytest.approx(47.004)
    assert found[("docdesk_save_seconds_bucket", (("le", "0.01"),))] == 1
    assert found[("docdesk_save_seconds_bucket", (("le", "0.5"),))] == 3
    assert found[("docdesk_save_seconds_bucket", (("le", "2.5"),))] == 4
    assert found[("docdesk_save_seconds_bucket", (("le", "30.0"),))] == 4
    assert found[("docdesk_save_seconds_bucket", (("le", "60.0"),))] == 5
    assert found[("docdesk_save_seconds_bucket", (("le", "+Inf"),))] == 5
    assert found[("docdesk_saved_bytes_total", ())] == 3_500
    assert (
        found[("docdesk_download_failures_total", (("reason", "download_failed"),))]
        == 1
    )
    assert found[("docdesk_editing_sessions", ())] == 1
    assert found[("docdesk_versions_stored", ())] == 3


async def test_editing_sessions_end_when_the_editors_leave(catalog: Catalog) -> None:
    await library(catalog)
    metrics = Metrics()
    await set_editors(catalog, "k1", [])
    await set_editors(catalog, "k1b", [])

    body, _ = await metrics.render(catalog)

    assert samples(body)[("docdesk_editing_sessions", ())] == 0


async def test_two_instances_count_apart(tmp_path: Path) -> None:
    catalog = Catalog.from_url(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}")
    await catalog.migrate()
    first, second = Metrics(), Metrics()

    first.observe_download_failure("too_large")
    first.observe_download_failure("too_large")
    second.observe_download_failure("download_refused")
    one, _ = await first.render(catalog)
    two, _ = await second.render(catalog)
    await catalog.close()

    failures = "docdesk_download_failures_total"
    assert samples(one)[(failures, (("reason", "too_large"),))] == 2
    assert (failures, (("reason", "download_refused"),)) not in samples(one)
    assert samples(two)[(failures, (("reason", "download_refused"),))] == 1


async def test_a_failing_catalog_leaves_out_its_figures_but_not_the_counters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Never migrated: every query fails with "no such table".
    catalog = Catalog.from_url(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    metrics = Metrics()
    metrics.observe_callback(CallbackReply(200, 0, "saved", 2), 2, 0.5, 10)
    caplog.set_level(logging.WARNING, logger="docdesk.metrics")

    body, _ = await metrics.render(catalog)
    await catalog.close()

    names = {name for name, _ in samples(body)}
    assert "docdesk_saved_bytes_total" in names
    assert "docdesk_versions_stored" not in names
    assert "docdesk_editing_sessions" not in names
    assert "metrics without catalog figures" in caplog.text
    assert "OperationalError" in caplog.text


async def test_without_prometheus_client_metrics_count_nothing_and_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    catalog = Catalog.from_url(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}")
    metrics = Metrics()

    metrics.observe_callback(CallbackReply(200, 0, "saved", 2), 2, 0.5, 10)
    metrics.observe_download_failure("too_large")
    body, content_type = await metrics.render(catalog)
    await catalog.close()

    assert not metrics.available
    assert metrics.registry is None
    assert body.decode() == MISSING_EXTRA
    assert "pip install 'docdesk[metrics]'" in body.decode()
    assert content_type.startswith("text/plain")
