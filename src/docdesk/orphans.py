"""The orphan sweep: remove committed blobs that no catalog row names.

A save commits its blob to the store first and records its version in one
catalog transaction after; a crash between the two leaves a whole blob that
nothing refers to, and so does a crash half-way through deleting a document
(the catalog forgets it first, then its blobs go). Nothing is lost with them:
no version ever pointed at them. :func:`sweep_orphans` removes them.

A blob is taken for an orphan only when no row names it after the store was
listed, and it is older than the sweep's limit: a blob whose version is still
being recorded is young, so it stays. Staging (temporaries and claims) is
never listed, let alone swept here: :func:`docdesk.storage.sweep_staging`
looks after it.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from datetime import UTC, datetime, timedelta

from docdesk.catalog import Catalog
from docdesk.errors import NotFound
from docdesk.storage import OWN_NAME, BlobStore

__all__ = ["ORPHAN_MAX_AGE", "OWN_PREFIXES", "sweep_orphans"]

logger = logging.getLogger(__name__)

# An unreferenced blob is swept once it is this old (seconds): far above the
# longest gap between a blob's commit and its catalog transaction. A save
# commits its file, then fetches the changes and form data (each within the
# download deadline, 120 s by default), then records them all.
ORPHAN_MAX_AGE = 3600.0
# Where the names docdesk gives blobs begin (docdesk.storage.OWN_NAME).
OWN_PREFIXES = ("documents/", "recovery/")


async def sweep_orphans(
    catalog: Catalog, store: BlobStore, *, older_than: float = ORPHAN_MAX_AGE
) -> int:
    """Delete blobs that no catalog row names and that are older than the limit.

    Returns how many went. The store is listed first and the catalog read
    after, so a blob recorded meanwhile is seen as referenced; ``older_than``
    (seconds) protects a blob whose catalog transaction is still under way,
    so keep it well above the longest commit plus any clock skew between this
    machine and the store. Only names of docdesk's own shape are considered
    (docdesk.storage.OWN_NAME).

    Run it on one instance at a time: the recovery job does, under its lock.
    Memory holds the names of every blob docdesk owns, not their bytes.
    """
    if older_than < 0:
        raise ValueError(f"older_than must not be negative, not {older_than}")
    # Taken before anything is listed: a blob committed during the sweep
    # is younger than the cutoff whatever the limit.
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than)

    candidates = await _own_names(store)
    async with aclosing(catalog.blob_names()) as referenced:
        async for name in referenced:
            candidates.discard(name)

    removed = 0
    for name in sorted(candidates):
        removed += await _remove_if_old(store, name, cutoff)
    if removed:
        logger.info("orphans swept removed=%d", removed)
    else:
        logger.debug("orphans swept removed=0 unreferenced=%d", len(candidates))
    return removed


async def _own_names(store: BlobStore) -> set[str]:
    names: set[str] = set()
    for prefix in OWN_PREFIXES:
        async for name in store.names(prefix):
            if OWN_NAME.fullmatch(name):
                names.add(name)
    return names


async def _remove_if_old(store: BlobStore, name: str, cutoff: datetime) -> int:
    try:
        modified = await store.modified(name)
    except NotFound:
        # Deleted meanwhile, by a document's deletion or another sweep.
        return 0
    if modified >= cutoff:
        return 0

    await store.delete(name)
    logger.debug("orphan removed name=%s modified=%s", name, modified.isoformat())
    return 1
