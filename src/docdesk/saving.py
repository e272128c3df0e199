"""The save path: what docdesk does with each Document Server callback.

A save reads as: verify, bind to the document, fetch to a temporary blob,
check, commit, acknowledge. The Document Server (DS) hears ``{"error": 0}``
only after the version is durable; a failure a retry may cure answers HTTP
503 so the DS retries, any other ``{"error": 1}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from docdesk import tokens
from docdesk.callback import (
    CallbackPayload,
    CallbackStatus,
    ForceSaveType,
    SignedCallback,
    read_callback,
)
from docdesk.capture import settle_capture
from docdesk.catalog import (
    CallbackRecord,
    DocumentRecord,
    EditorsSet,
    KeyRecord,
    NewVersion,
    RecoveryRecord,
    VersionSource,
    is_document_id,
)
from docdesk.downloads import Sink
from docdesk.editor import new_document_key
from docdesk.errors import (
    DocdeskError,
    DownloadError,
    Forbidden,
    InvalidRequest,
    NotFound,
    TokenError,
    TooLarge,
)
from docdesk.formats import check_bytes, format_for
from docdesk.storage import commit_new, new_blob_stem

if TYPE_CHECKING:
    from docdesk.desk import DocDesk

__all__ = ["DELIVERY_MEMORY", "CallbackReply", "SavePath"]

logger = logging.getLogger(__name__)

# The callbacks that save nothing: they only say who edits.
NO_SAVE = (CallbackStatus.EDITING, CallbackStatus.CLOSED)
# Why a callback under a key docdesk did not give its document is refused.
REFUSED_KEYS = {
    EditorsSet.UNKNOWN_KEY: "the callback's key was never issued here",
    EditorsSet.FOREIGN_KEY: "the callback's key belongs to another document",
}
# The DS signs callbacks for 5 minutes and we allow 60 s of skew: a token
# older than that cannot come back, so it need not be remembered longer.
DELIVERY_MEMORY = 300 + 2 * tokens.LEEWAY


@dataclass(frozen=True)
class CallbackReply:
    """How to answer the DS: ``http_status`` with ``{"error": error}``."""

    http_status: int
    error: int
    outcome: str
    version: int | None = None
    saved_bytes: int | None = None

    def body(self) -> dict[str, int]:
        return {"error": self.error}


REPLAYED = CallbackReply(200, 0, "replayed")


class SavePath:
    """Handles the callbacks of one DocDesk, with its store and catalog."""

    def __init__(self, desk: DocDesk) -> None:
        self.desk = desk

    async def handle(
        self,
        document_id: str,
        signature: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        source: str | None = None,
    ) -> CallbackReply:
        """Act on one DS callback and say how to answer it.

        Never raises: every failure becomes an answer the DS understands,
        HTTP 503 when a retry may succeed, ``{"error": 1}`` otherwise.
        """
        started = time.monotonic()
        payload: CallbackPayload | None = None
        logged = False
        try:
            if not self.desk.links.check_callback(document_id, signature):
                raise Forbidden("the callback link's signature does not match")
            signed = read_callback(
                body, headers, secret=self.desk.jwt_secret, header=self.desk.jwt_header
            )
            payload = signed.payload
            if payload.status in NO_SAVE:
                reply = await self._set_editors(document_id, signed, started, source)
                logged = True
            else:
                issued = await self._issued_key(document_id, payload.key)
                async with self.desk.lock(document_id):
                    reply = await self._act(issued, signed)
        except DocdeskError as exc:
            reply = _failure(exc)
            detail: str | None = exc.message
        except Exception as exc:
            logger.exception("callback crashed document=%s", document_id)
            reply = CallbackReply(500, 1, "crashed")
            detail = type(exc).__name__
        else:
            detail = None

        try:
            await settle_capture(self.desk, payload, reply)
        except DocdeskError as exc:
            # The capture also watches for its version: it still sees it.
            logger.warning("capture not settled reason=%s", exc)
        await self._log_callback(
            document_id, payload, reply, detail, started, source, logged=logged
        )
        return reply

    async def _issued_key(self, document_id: str, key: str) -> KeyRecord:
        issued = await self.desk.catalog.key(key)
        if issued is None:
            raise Forbidden(REFUSED_KEYS[EditorsSet.UNKNOWN_KEY])
        if issued.document_id != document_id:
            raise Forbidden(REFUSED_KEYS[EditorsSet.FOREIGN_KEY])
        return issued

    async def _set_editors(
        self,
        document_id: str,
        signed: SignedCallback,
        started: float,
        source: str | None,
    ) -> CallbackReply:
        """Status 1 or 4: record who edits, with the log line, in one commit.

        The busiest callback costs one transaction, which also binds its key
        to the document; the line's ``duration_ms`` stops short of the commit.
        """
        payload = signed.payload
        editors = payload.users if payload.status is CallbackStatus.EDITING else ()
        replies = {
            EditorsSet.SET: CallbackReply(200, 0, "editing" if editors else "closed"),
            EditorsSet.STALE: CallbackReply(200, 0, "stale"),
            **{
                outcome: _failure(Forbidden(message))
                for outcome, message in REFUSED_KEYS.items()
            },
        }

        def log(outcome: EditorsSet) -> CallbackRecord:
            detail = REFUSED_KEYS.get(outcome)
            return _record(
                document_id, payload, replies[outcome], detail, started, source
            )

        outcome = await self.desk.catalog.set_editors(
            payload.key,
            editors,
            document_id=document_id,
            status=payload.status,
            signed=signed.signed,
            delivery=signed.delivery,
            keep=DELIVERY_MEMORY,
            log=log,
        )
        return replies[outcome]

    async def _act(self, issued: KeyRecord, signed: SignedCallback) -> CallbackReply:
        payload, delivery = signed.payload, signed.delivery
        status = payload.status
        if status is CallbackStatus.MAIL_MERGE:
            return CallbackReply(200, 0, "ignored")

        # A delivery is the signed claims without their signing times: the
        # same callback sent again is a replay, done once. The DS's own
        # retries carry fresh links; a save knows them by their bytes.
        if await self.desk.catalog.delivered(delivery):
            return REPLAYED
        if status.corrupted:
            reply = await self._recover(issued, payload)
        else:
            reply = await self._save(issued, payload, delivery)
        # A new version recorded its delivery in its own transaction.
        if reply.outcome != "saved":
            await self.desk.catalog.record_delivery(
                delivery, issued.document_id, status, keep=DELIVERY_MEMORY
            )
        return reply

    async def _save(
        self, issued: KeyRecord, payload: CallbackPayload, delivery: str
    ) -> CallbackReply:
        document = await self.desk.catalog.document(issued.document_id)
        ends_session = payload.status is CallbackStatus.MUST_SAVE
        if payload.url is None:
            raise InvalidRequest(f"status {payload.status} came without a url")

        if (
            ends_session
            and payload.notmodified
            and await self._already_kept(document, payload)
        ):
            await self._rotate(document.id, payload.key)
            return CallbackReply(200, 0, "notmodified")

        fmt = format_for(payload.filetype or document.file_type)
        stem = new_blob_stem("documents", document.id)
        async with self.desk.store.create() as blob:
            await self._fetch(payload.url, blob)
            check_bytes(fmt, blob.digest.head, blob.digest.tail, blob.digest.size)
            if blob.digest.sha256 == document.sha256:
                if ends_session:
                    await self._rotate(document.id, payload.key)
                return CallbackReply(200, 0, "unchanged")
            await commit_new(blob, f"{stem}.{fmt.extension}")
            size, sha256 = blob.digest.size, blob.digest.sha256

        changes_blob, forms_blob, notes = await self._extras(payload, stem)
        if fmt.extension != document.file_type:
            notes.append(
                f"the Document Server saved {document.file_type} as "
                f"{fmt.extension}; kept as {fmt.extension}"
            )

        version = NewVersion(
            blob=f"{stem}.{fmt.extension}",
            file_type=fmt.extension,
            size=size,
            sha256=sha256,
            source=VersionSource.SAVE if ends_session else VersionSource.FORCESAVE,
            author_id=payload.author,
            author_name=_author_name(payload),
            status=payload.status,
            forcesave_type=payload.forcesavetype,
            key=payload.key,
            history=payload.history,
            changes_blob=changes_blob,
            forms_blob=forms_blob,
            note="; ".join(notes) or None,
        )
        saved = await self.desk.commit(
            document.id, version, ends_session=ends_session, delivery=delivery
        )
        if saved is None:
            return REPLAYED
        return CallbackReply(200, 0, "saved", saved.number, saved_bytes=saved.size)

    async def _already_kept(
        self, document: DocumentRecord, payload: CallbackPayload
    ) -> bool:
        """Whether a status 2 marked ``notmodified`` repeats a kept force save.

        The DS sets ``notmodified`` only after we acknowledged a force save
        and nothing changed since; that save is the current version.
        """
        current = await self.desk.catalog.version(document.id, document.current_version)
        return current.key == payload.key and current.source is VersionSource.FORCESAVE

    async def _extras(
        self, payload: CallbackPayload, stem: str
    ) -> tuple[str | None, str | None, list[str]]:
        """Keep the changes archive and the form data beside the version.

        They serve history and forms, not the document itself: failing to
        fetch them must not cost the save, so a failure is noted instead.
        """
        notes: list[str] = []
        kept: list[str | None] = []
        wanted = (
            ("changes", payload.changesurl, f"{stem}.changes.zip"),
            ("form data", _forms_url(payload), f"{stem}.formsdata.json"),
        )
        for what, url, name in wanted:
            if url is None:
                kept.append(None)
                continue
            try:
                async with self.desk.store.create() as blob:
                    await self._fetch(url, blob)
                    await commit_new(blob, name)
                kept.append(name)
            except (DownloadError, TooLarge) as exc:
                logger.warning("%s not kept key=%s reason=%s", what, payload.key, exc)
                notes.append(f"{what} not kept: {exc.message}")
                kept.append(None)
        return kept[0], kept[1], notes

    async def _recover(
        self, issued: KeyRecord, payload: CallbackPayload
    ) -> CallbackReply:
        """Status 3 or 7: keep any file aside, never as the current version."""
        if payload.status is CallbackStatus.CORRUPTED:
            await self._rotate(issued.document_id, payload.key)
        if payload.url is None:
            return CallbackReply(200, 0, "corrupted")

        fmt = format_for(
            payload.filetype or (await self.desk.document(issued.document_id)).file_type
        )
        name = f"{new_blob_stem('recovery', issued.document_id)}.{fmt.extension}"
        async with self.desk.store.create() as blob:
            await self._fetch(payload.url, blob)
            await commit_new(blob, name)
            size, sha256 = blob.digest.size, blob.digest.sha256
        await self.desk.catalog.add_recovery(
            RecoveryRecord(
                document_id=issued.document_id,
                key=payload.key,
                status=payload.status,
                blob=name,
                file_type=fmt.extension,
                size=size,
                sha256=sha256,
                created=datetime.now(UTC),
                reason="the Document Server could not assemble the file",
            )
        )
        return CallbackReply(200, 0, "recovered")

    async def _rotate(self, document_id: str, key: str) -> None:
        await self.desk.catalog.rotate_key(document_id, key, new_document_key())

    async def _fetch(self, url: str, sink: Sink) -> None:
        """Download a DS link into ``sink``, counting failures by reason."""
        try:
            await self.desk.fetcher.fetch(self._internal(url), sink)
        except (DownloadError, TooLarge) as exc:
            self.desk.metrics.observe_download_failure(exc.code)
            raise

    def _internal(self, url: str) -> str:
        """Reach a DS link through the DS's internal address when there is one."""
        for public, internal in self.desk.url_map.items():
            if url.startswith(public):
                return internal + url[len(public) :]
        return url

    async def _log_callback(
        self,
        document_id: str,
        payload: CallbackPayload | None,
        reply: CallbackReply,
        detail: str | None,
        started: float,
        source: str | None,
        *,
        logged: bool,
    ) -> None:
        """Count and log the callback; write its log line unless ``logged``."""
        elapsed = (time.monotonic() - started) * 1000
        status = int(payload.status) if payload else None
        self.desk.metrics.observe_callback(
            reply, status, elapsed / 1000, reply.saved_bytes
        )
        key = payload.key if payload else None
        log = logger.info if reply.error == 0 else logger.error
        log(
            "callback document=%s key=%s status=%s outcome=%s version=%s "
            "http=%d ms=%.1f source=%s",
            document_id,
            key,
            status,
            reply.outcome,
            reply.version,
            reply.http_status,
            elapsed,
            source,
        )
        if not logged:
            record = _record(document_id, payload, reply, detail, started, source)
            try:
                await self.desk.catalog.log_callback(record)
            except DocdeskError as exc:
                logger.warning("callback log not written reason=%s", exc)

        await self.desk.prune_if_due()


def _record(
    document_id: str,
    payload: CallbackPayload | None,
    reply: CallbackReply,
    detail: str | None,
    started: float,
    source: str | None,
) -> CallbackRecord:
    """The callback log's line for one callback, timed until now."""
    return CallbackRecord(
        received=datetime.now(UTC),
        document_id=document_id if is_document_id(document_id) else None,
        key=payload.key if payload else None,
        status=int(payload.status) if payload else None,
        outcome=reply.outcome,
        detail=detail,
        version=reply.version,
        http_status=reply.http_status,
        duration_ms=(time.monotonic() - started) * 1000,
        source=source,
    )


def _failure(exc: DocdeskError) -> CallbackReply:
    if exc.transient:
        return CallbackReply(503, 1, exc.code)
    if isinstance(exc, TokenError | Forbidden | NotFound | InvalidRequest):
        return CallbackReply(exc.status_code, 1, exc.code)
    return CallbackReply(200, 1, exc.code)


def _forms_url(payload: CallbackPayload) -> str | None:
    if payload.forcesavetype is ForceSaveType.FORM:
        return payload.formsdataurl
    return None


def _author_name(payload: CallbackPayload) -> str | None:
    """The name the DS's history gives the last author, if any."""
    changes = (payload.history or {}).get("changes")
    if isinstance(changes, list) and changes and isinstance(changes[-1], dict):
        user = changes[-1].get("user")
        if isinstance(user, dict) and isinstance(user.get("name"), str):
            return str(user["name"])
    return None
