"""What docdesk counts, in Prometheus' text format, for ``/metrics``.

Counters live in the process: callbacks by status and outcome, how long the
callbacks that hand over a file took, the bytes saved, and failed downloads
by reason. The figures about the library itself, documents being edited and
versions stored, are read from the catalog at each scrape instead: every
instance shares the catalog, so each one reports the same true figure, and
it survives restarts, where a gauge kept up by callbacks would drift.

prometheus_client's collectors are synchronous and the catalog is not, so
:meth:`Metrics.render` reads the catalog first and then renders everything
in one synchronous step. Each :class:`Metrics` owns its registry, never the
global one, so several apps (and tests) live side by side in one process.

``prometheus-client`` is the optional extra ``docdesk[metrics]``: without it
a :class:`Metrics` counts nothing and renders a hint to install it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, distinct, func, select
from sqlalchemy.exc import SQLAlchemyError

from docdesk.callback import CallbackStatus
from docdesk.catalog.tables import keys, versions
from docdesk.errors import CatalogError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import Metric

    from docdesk.catalog import Catalog
    from docdesk.desk import CallbackReply

__all__ = [
    "MISSING_EXTRA",
    "SAVE_BUCKETS",
    "TEXT_FORMAT",
    "Metrics",
    "editing_sessions",
    "versions_stored",
]

logger = logging.getLogger(__name__)

MISSING_EXTRA = (
    "metrics are off: prometheus-client is not installed; "
    "install it with: pip install 'docdesk[metrics]'\n"
)
# From a small file on a local DS (10 ms) to the DS's own 2-minute download
# limit and beyond, up to 10 minutes.
SAVE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# What generate_latest writes. Named here because prometheus_client's own
# CONTENT_TYPE_LATEST moved to a newer format version in later releases.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
# The statuses whose callback hands over a file: their duration is a save's.
FILE_STATUSES = frozenset(
    {
        CallbackStatus.MUST_SAVE,
        CallbackStatus.CORRUPTED,
        CallbackStatus.MUST_FORCE_SAVE,
        CallbackStatus.CORRUPTED_FORCE_SAVE,
    }
)


@dataclass(frozen=True)
class _Instruments:
    registry: CollectorRegistry
    callbacks: Counter
    save_seconds: Histogram
    saved_bytes: Counter
    download_failures: Counter


class Metrics:
    """docdesk's counters, and the catalog's figures read at each scrape.

    ``available`` is False when prometheus-client is not installed; every
    method then does nothing, and :meth:`render` returns :data:`MISSING_EXTRA`
    for the ``/metrics`` route to answer with HTTP 501.
    """

    def __init__(self) -> None:
        self._instruments = _instruments()
        if self._instruments is None:
            logger.info("metrics off reason=prometheus-client is not installed")

    @property
    def available(self) -> bool:
        return self._instruments is not None

    @property
    def registry(self) -> CollectorRegistry | None:
        """The registry of the counters; the catalog's figures are not in it."""
        return None if self._instruments is None else self._instruments.registry

    def observe_callback(
        self,
        reply: CallbackReply,
        status: int | None,
        seconds: float,
        saved_bytes: int | None = None,
    ) -> None:
        """Count one callback as it was answered.

        ``status`` is None when the callback was refused before its body
        could be believed (a bad token or link); it is counted as
        ``unknown``. ``seconds`` goes to the save histogram for every
        callback that hands over a file (status 2, 3, 6, 7), whatever became
        of it: a slow failure is what an operator most needs to see.
        """
        if (m := self._instruments) is None:
            return

        label = "unknown" if status is None else str(status)
        m.callbacks.labels(status=label, outcome=reply.outcome).inc()
        if status in FILE_STATUSES:
            m.save_seconds.observe(seconds)
        if saved_bytes is not None and saved_bytes > 0:
            m.saved_bytes.inc(saved_bytes)

    def observe_download_failure(self, code: str) -> None:
        """Count a failed download of a DS link by the error's ``code``."""
        if (m := self._instruments) is None:
            return
        m.download_failures.labels(reason=code).inc()

    async def render(self, catalog: Catalog) -> tuple[bytes, str]:
        """The exposition text and its content type.

        A catalog that cannot answer leaves its two figures out of this
        scrape, with a warning, rather than failing it: the counters still
        reach Prometheus.
        """
        if self._instruments is None:
            return MISSING_EXTRA.encode(), "text/plain; charset=utf-8"
        from prometheus_client import generate_latest

        figures = await _catalog_figures(catalog)
        scrape = _Scrape(self._instruments.registry, figures)
        return generate_latest(scrape), TEXT_FORMAT


async def editing_sessions(catalog: Catalog) -> int:
    """Documents with at least one editor now, by the DS's status-1 callbacks.

    A document counts once however many of its keys have editors.
    """
    query = select(func.count(distinct(keys.c.document_id))).where(
        func.json_array_length(keys.c.editors) > 0
    )
    return await _count(catalog, query)


async def versions_stored(catalog: Catalog) -> int:
    """Versions kept, of every document; the recovery area is not counted."""
    return await _count(catalog, select(func.count()).select_from(versions))


async def _count(catalog: Catalog, query: Select[Any]) -> int:
    try:
        async with catalog.engine.connect() as conn:
            value = await conn.scalar(query)
    except SQLAlchemyError as exc:
        raise CatalogError.of(exc) from exc
    return int(value or 0)


async def _catalog_figures(catalog: Catalog) -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    try:
        sessions = await editing_sessions(catalog)
        stored = await versions_stored(catalog)
    except CatalogError as exc:
        logger.warning("metrics without catalog figures reason=%s", exc)
        return []

    return [
        GaugeMetricFamily(
            "docdesk_editing_sessions",
            "Documents with at least one editor in the Document Server now.",
            value=sessions,
        ),
        GaugeMetricFamily(
            "docdesk_versions_stored",
            "Versions kept in the catalog, of every document.",
            value=stored,
        ),
    ]


class _Scrape:
    """One scrape: the registry's counters, then the catalog's figures."""

    def __init__(self, registry: CollectorRegistry, figures: Iterable[Metric]):
        self._registry = registry
        self._figures = list(figures)

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from self._figures


def _instruments() -> _Instruments | None:
    try:
        from prometheus_client import CollectorRegistry, Counter, Histogram
    except ImportError:
        return None

    registry = CollectorRegistry(auto_describe=True)
    return _Instruments(
        registry=registry,
        callbacks=Counter(
            "docdesk_callbacks",
            "Document Server callbacks, by status and by what docdesk did.",
            ["status", "outcome"],
            registry=registry,
        ),
        save_seconds=Histogram(
            "docdesk_save_seconds",
            "How long callbacks that hand over a file took to answer.",
            buckets=SAVE_BUCKETS,
            registry=registry,
        ),
        saved_bytes=Counter(
            "docdesk_saved_bytes",
            "Bytes of new versions saved from callbacks.",
            registry=registry,
        ),
        download_failures=Counter(
            "docdesk_download_failures",
            "Failed downloads of Document Server links, by the error's code.",
            ["reason"],
            registry=registry,
        ),
    )
