"""Recovery: bring back what a save could not keep.

Two places hold such files. docdesk's own recovery area keeps what the
Document Server (DS) handed over as corrupted (status 3 or 7): listed here,
and restored on request as the newest version once its bytes pass the format
check. The DS keeps the file of a status-2 or 3 save that no callback took
as a "forgotten file", until someone fetches and deletes it through the
command service: :func:`recover_forgotten` does that for the keys docdesk
issued, and :func:`run_recovery_job` does it every few minutes. The job also
sweeps what crashed writers left: staging temporaries, and once an hour the
blobs no catalog row names (:mod:`docdesk.orphans`).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from functools import partial
from typing import Any

import anyio

from docdesk.catalog import (
    DocumentRecord,
    NewVersion,
    RecoveryRecord,
    VersionRecord,
    VersionSource,
)
from docdesk.catalog.locks import advisory_key
from docdesk.commands import CommandError, CommandService
from docdesk.desk import DocDesk
from docdesk.editor import User
from docdesk.errors import (
    ConfigurationError,
    DocdeskError,
    DocumentServerError,
    DownloadError,
    FormatMismatch,
    StorageError,
    TooLarge,
)
from docdesk.formats import check_bytes, format_for
from docdesk.orphans import ORPHAN_MAX_AGE, sweep_orphans
from docdesk.storage import commit_new, new_blob_stem, sweep_staging

__all__ = [
    "RECOVERY_LOCK",
    "Recovered",
    "RecoveryOutcome",
    "background_recovery",
    "list_recoveries",
    "recover_exclusively",
    "recover_forgotten",
    "recovery_json",
    "restore_recovery",
    "run_recovery_job",
    "sweep_orphans_exclusively",
]

logger = logging.getLogger(__name__)

FORGOTTEN_NOTE = "recovered from the Document Server's forgotten files"
# The lock the periodic job holds while it runs a round; on PostgreSQL,
# pg_locks shows it as this advisory lock.
RECOVERY_LOCK = advisory_key("recovery")
# Seconds between two orphan sweeps by one DocDesk's job: a sweep lists the
# whole store, and orphans are rare (a crash mid-save makes one).
ORPHAN_SWEEP_INTERVAL = 3600.0

# When each open DocDesk's job last swept orphans (time.monotonic()).
_orphans_swept: weakref.WeakKeyDictionary[DocDesk, float] = weakref.WeakKeyDictionary()


class RecoveryOutcome(StrEnum):
    """What became of one forgotten file."""

    RECOVERED = "recovered"
    # Its bytes were already a version: only deleted at the DS.
    ALREADY_KEPT = "already_kept"
    # A key docdesk never issued: another integration's, left alone.
    NOT_OURS = "not_ours"
    # Listed, then deleted by someone else before we asked for it.
    GONE = "gone"
    FAILED = "failed"


@dataclass(frozen=True)
class Recovered:
    """One forgotten key and what :func:`recover_forgotten` did with it.

    ``deleted`` says whether the DS deleted its copy; ``detail`` says why
    something failed.
    """

    key: str
    outcome: RecoveryOutcome
    document_id: str | None = None
    version: int | None = None
    deleted: bool = False
    detail: str | None = None


def recovery_json(record: RecoveryRecord) -> dict[str, Any]:
    """A kept file as the JSON API and ``docdesk recovery --json`` show it."""
    return {
        "id": record.id,
        "document_id": record.document_id,
        "status": record.status,
        "key": record.key,
        "file_type": record.file_type,
        "size": record.size,
        "sha256": record.sha256,
        "created": record.created.isoformat(),
        "reason": record.reason,
        "restored_version": record.restored_version,
    }


# The recovery area


async def list_recoveries(
    desk: DocDesk, document_id: str | None = None
) -> list[RecoveryRecord]:
    """The kept files, oldest first; of one document if ``document_id``."""
    if document_id is not None:
        document_id = (await desk.document(document_id)).id
    return await desk.catalog.recoveries(document_id)


async def restore_recovery(
    desk: DocDesk, recovery_id: int, *, author: User | None = None
) -> VersionRecord:
    """Make a kept status-3 or 7 file the newest version of its document.

    The DS called the file corrupted, so its bytes must pass the format
    check of the document's format first: one that fails is refused with
    FormatMismatch and stays in the recovery area. The kept file stays
    there either way; the version gets a copy, and editors a new key.
    """
    record = await desk.catalog.recovery(recovery_id)
    document = await desk.document(record.document_id)
    fmt = format_for(document.file_type)

    name = f"{new_blob_stem('documents', document.id)}.{fmt.extension}"
    async with desk.store.create() as blob:
        async for chunk in desk.store.read(record.blob):
            await blob.write(chunk)
        digest = blob.digest
        if (digest.size, digest.sha256) != (record.size, record.sha256):
            raise StorageError(
                f"kept file {recovery_id} does not match its recorded size and "
                "sha256: the stored file is damaged"
            )
        try:
            check_bytes(fmt, digest.head, digest.tail, digest.size)
        except FormatMismatch as exc:
            raise FormatMismatch(
                f"kept file {recovery_id} cannot become a version: {exc.message}; "
                "it stays in the recovery area"
            ) from None
        await commit_new(blob, name)

    when = record.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    version = await desk.commit_recovered(
        document.id,
        NewVersion(
            blob=name,
            file_type=fmt.extension,
            size=record.size,
            sha256=record.sha256,
            source=VersionSource.RECOVERY,
            author_id=author.id if author else None,
            author_name=author.name if author else None,
            status=record.status,
            note=(
                f"restored from the recovery area: the file the Document Server "
                f"sent with status {record.status} for key {record.key} at "
                f"{when} UTC"
            ),
        ),
        recovery=recovery_id,
    )
    logger.info(
        "kept file restored recovery=%d document=%s status=%d version=%d",
        recovery_id,
        document.id,
        record.status,
        version.number,
    )
    return version


# The DS's forgotten files


async def recover_forgotten(desk: DocDesk) -> list[Recovered]:
    """Keep every forgotten file of a key docdesk issued, then delete it at the DS.

    Each becomes the newest version of its document, marked as recovered,
    and the DS's copy is deleted only once that version is durable. Keys
    docdesk never issued belong to other integrations sharing the DS and
    are left alone. A file whose bytes are already a version (the current
    one, or one kept from the same key) is not stored again, but deleted.
    One failure does not stop the others; the file stays at the DS and the
    next run tries again. Returns what happened, key by key.
    """
    commands = desk.commands
    if commands is None:
        raise ConfigurationError(
            "recovering forgotten files needs the Document Server's command service"
        )

    done = []
    for key in await _forgotten_keys(commands):
        try:
            done.append(await _recover_one(desk, commands, key))
        except DocdeskError as exc:
            done.append(Recovered(key, RecoveryOutcome.FAILED, detail=exc.message))
        except Exception as exc:
            logger.exception("forgotten file crashed key=%s", key)
            failed = Recovered(key, RecoveryOutcome.FAILED, detail=type(exc).__name__)
            done.append(failed)
    return done


async def _recover_one(desk: DocDesk, commands: CommandService, key: str) -> Recovered:
    issued = await desk.catalog.key(key)
    if issued is None:
        return Recovered(key, RecoveryOutcome.NOT_OURS)
    # The DS signs the link on the base URL the command reached it by:
    # docdesk's own way to the DS, one of the origins the fetcher allows.
    url = await _forgotten_url(commands, key)
    if url is None:
        return Recovered(key, RecoveryOutcome.GONE, issued.document_id)

    document = await desk.document(issued.document_id)
    try:
        found = await _keep(desk, document, key, url)
        if isinstance(found, VersionRecord):
            kept, outcome = found, RecoveryOutcome.ALREADY_KEPT
        else:
            kept = await desk.commit_recovered(document.id, found)
            outcome = RecoveryOutcome.RECOVERED
    except DocdeskError as exc:
        return Recovered(key, RecoveryOutcome.FAILED, document.id, detail=exc.message)

    # Only now is the file safe with us: the DS's copy may go.
    detail = None
    try:
        error = await commands.delete_forgotten(key)
    except DocdeskError as exc:
        detail = f"not deleted at the Document Server: {exc.message}"
    else:
        if error not in (CommandError.NO_ERROR, CommandError.DOCUMENT_ID):
            detail = f"not deleted at the Document Server: error {int(error)}"
    return Recovered(
        key,
        outcome,
        document.id,
        version=kept.number,
        deleted=detail is None,
        detail=detail,
    )


async def _forgotten_keys(commands: CommandService) -> list[str]:
    # CommandService.forgotten_keys reads a refusal (a wrong secret, say)
    # as an empty list; here it must stop the round instead.
    answer = await commands.command("getForgottenList")
    _refused("getForgottenList", answer)
    keys = answer.get("keys")
    return [str(k) for k in keys] if isinstance(keys, list) else []


async def _forgotten_url(commands: CommandService, key: str) -> str | None:
    """The link to a forgotten file, or None once it is no longer there."""
    answer = await commands.command("getForgotten", key=key)
    if answer.get("error") == CommandError.DOCUMENT_ID:
        return None
    _refused("getForgotten", answer)
    url = answer.get("url")
    if not isinstance(url, str):
        raise DocumentServerError("getForgotten answered without a url")
    return url


def _refused(command: str, answer: dict[str, Any]) -> None:
    if answer.get("error") != CommandError.NO_ERROR:
        raise DocumentServerError(
            f"the Document Server refused {command}: error {answer.get('error')!r}"
        )


async def _keep(
    desk: DocDesk, document: DocumentRecord, key: str, url: str
) -> VersionRecord | NewVersion:
    """Fetch and check a forgotten file; store it unless a version holds it.

    Returns the version that already holds its bytes, or the new version
    to commit, whose blob is durable.
    """
    fmt = format_for(document.file_type)
    name = f"{new_blob_stem('documents', document.id)}.{fmt.extension}"
    async with desk.store.create() as blob:
        try:
            await desk.fetcher.fetch(url, blob)
        except (DownloadError, TooLarge) as exc:
            desk.metrics.observe_download_failure(exc.code)
            raise
        digest = blob.digest
        check_bytes(fmt, digest.head, digest.tail, digest.size)

        kept = await _holding(desk, document, key, digest.sha256)
        if kept is not None:
            return kept
        await commit_new(blob, name)

    return NewVersion(
        blob=name,
        file_type=fmt.extension,
        size=digest.size,
        sha256=digest.sha256,
        source=VersionSource.RECOVERY,
        key=key,
        note=FORGOTTEN_NOTE,
    )


async def _holding(
    desk: DocDesk, document: DocumentRecord, key: str, sha256: str
) -> VersionRecord | None:
    """The version that already holds these bytes, if any.

    Not only the current one: after a recovery whose delete at the DS
    failed, a newer save must not be buried under the same file again.
    """
    for version in reversed(await desk.versions(document.id)):
        if version.sha256 == sha256 and (
            version.number == document.current_version or version.key == key
        ):
            return version
    return None


# The periodic job


async def run_recovery_job(desk: DocDesk, *, every: float, stop: anyio.Event) -> None:
    """Run :func:`recover_forgotten` every ``every`` seconds until ``stop``.

    Each round first sweeps the store's staging area; the first round, and
    then one every ORPHAN_SWEEP_INTERVAL, also sweeps orphaned blobs. One
    instance at a time recovers and sweeps orphans, the one holding the
    catalog's lock ``recovery`` (RECOVERY_LOCK on PostgreSQL); the others
    skip that round. A round that fails is logged and the next one comes as
    usual.
    """
    if every <= 0:
        raise ValueError("the recovery job needs a positive interval")
    if desk.commands is None:
        logger.warning("recovery job off reason=no command service")
        return
    while True:
        with anyio.move_on_after(every):
            await stop.wait()
        if stop.is_set():
            return
        await _round(desk)


@asynccontextmanager
async def background_recovery(desk: DocDesk, *, every: float) -> AsyncIterator[None]:
    """Run the recovery job while the block runs; ``every=0`` runs nothing.

    Leaving the block cuts a round short: each step is safe to stop at,
    since a forgotten file is deleted at the DS only after it is kept.
    """
    if every <= 0:
        yield
        return
    stop = anyio.Event()
    async with anyio.create_task_group() as jobs:
        jobs.start_soon(partial(run_recovery_job, desk, every=every, stop=stop))
        try:
            yield
        finally:
            stop.set()
            jobs.cancel_scope.cancel()


async def recover_exclusively(desk: DocDesk) -> list[Recovered] | None:
    """``recover_forgotten`` under the job's lock; None if another holds it.

    The periodic job and ``docdesk recover`` both come through here, so two
    of them never store one forgotten file twice.
    """
    async with desk.catalog.locks.hold("recovery", wait=False) as held:
        if not held:
            return None
        return await recover_forgotten(desk)


async def sweep_orphans_exclusively(
    desk: DocDesk, *, older_than: float = ORPHAN_MAX_AGE
) -> int | None:
    """:func:`docdesk.orphans.sweep_orphans` under the job's lock.

    Says how many blobs went, or None if another instance holds the lock.
    The periodic job and ``docdesk sweep`` both come through here, so one
    instance at a time lists the store against the catalog.
    """
    async with desk.catalog.locks.hold("recovery", wait=False) as held:
        if not held:
            return None
        return await sweep_orphans(desk.catalog, desk.store, older_than=older_than)


async def _round(desk: DocDesk) -> None:
    await _sweep(desk)
    await _recover_round(desk)
    await _sweep_orphans_if_due(desk)


async def _recover_round(desk: DocDesk) -> None:
    try:
        done = await recover_exclusively(desk)
        if done is None:
            logger.debug("recovery round skipped reason=another instance runs it")
            return
    except DocdeskError as exc:
        logger.warning("recovery round failed reason=%s", exc.message)
        return
    except Exception:
        logger.warning("recovery round crashed", exc_info=True)
        return

    for each in done:
        if each.outcome in (RecoveryOutcome.RECOVERED, RecoveryOutcome.ALREADY_KEPT):
            logger.info(
                "forgotten file %s key=%s document=%s version=%s",
                each.outcome,
                each.key,
                each.document_id,
                each.version,
            )
        if each.detail is not None:
            logger.warning(
                "forgotten file trouble key=%s document=%s outcome=%s reason=%s",
                each.key,
                each.document_id,
                each.outcome,
                each.detail,
            )


async def _sweep_orphans_if_due(desk: DocDesk) -> None:
    swept = _orphans_swept.get(desk)
    if swept is not None and time.monotonic() - swept < ORPHAN_SWEEP_INTERVAL:
        return
    try:
        removed = await sweep_orphans_exclusively(desk)
    except DocdeskError as exc:
        logger.warning("orphan sweep failed reason=%s", exc.message)
        return
    except Exception:
        logger.warning("orphan sweep crashed", exc_info=True)
        return
    if removed is None:
        logger.debug("orphan sweep skipped reason=another instance runs it")
        return
    _orphans_swept[desk] = time.monotonic()


async def _sweep(desk: DocDesk) -> None:
    # Only what crashed writers left long ago goes, so every instance may
    # sweep at any time without the job's lock.
    try:
        await sweep_staging(desk.store)
    except DocdeskError as exc:
        logger.warning("staging sweep failed reason=%s", exc.message)
