"""DocDesk: a document library that the Document Server edits.

This is docdesk's core, free of any web framework: the service's routes, and
the Django and Flask adapters, turn requests into calls on :class:`DocDesk`
and its answers back into responses.

A save reads as: verify, bind to the document, fetch to a temporary blob,
check, commit, acknowledge. The Document Server (DS) hears ``{"error": 0}``
only after the version is durable.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import anyio

from docdesk import tokens
from docdesk.callback import (
    CallbackPayload,
    CallbackStatus,
    ForceSaveType,
    SignedCallback,
    read_callback,
)
from docdesk.catalog import (
    CallbackRecord,
    CaptureRecord,
    Catalog,
    DocumentRecord,
    KeyRecord,
    NewVersion,
    RecoveryRecord,
    VersionRecord,
    VersionSource,
)
from docdesk.commands import CommandError, CommandService
from docdesk.downloads import Fetcher, Sink, check_address
from docdesk.editor import EditorConfig, EditorMode, Permissions, User, new_document_key
from docdesk.errors import (
    CaptureTimeout,
    ConfigurationError,
    DocdeskError,
    DocumentServerError,
    DownloadError,
    DownloadRefused,
    Forbidden,
    InvalidRequest,
    NotFound,
    TokenError,
    TooLarge,
)
from docdesk.formats import Format, blank_document, check_bytes, format_for
from docdesk.links import Links
from docdesk.metrics import Metrics
from docdesk.settings import Settings
from docdesk.storage import BlobStore, open_store

__all__ = ["CallbackReply", "Capture", "DocDesk", "is_document_id"]

logger = logging.getLogger(__name__)

DOCUMENT_ID = re.compile(r"[0-9a-f]{16}")
MAX_TITLE = 128
# The DS signs callbacks for 5 minutes and we allow 60 s of skew: a token
# older than that cannot come back, so it need not be remembered longer.
DELIVERY_MEMORY = 300 + 2 * tokens.LEEWAY
# Seconds between two prunes of the callback log by one DocDesk.
PRUNE_INTERVAL = 3600.0


# The userdata of a capture's force save: this, then the capture's token.
CAPTURE = "docdesk-capture:"


def is_document_id(value: str) -> bool:
    return DOCUMENT_ID.fullmatch(value) is not None


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


@dataclass(frozen=True)
class Capture:
    """What a capture produced: ``saved``, ``unchanged`` or ``not_editing``."""

    version: VersionRecord
    outcome: str


class DocDesk:
    """Documents and their versions, kept safe from every DS callback.

    The store holds immutable blobs, the catalog the metadata; ``fetcher``
    downloads what the DS hands over, from the DS alone. The callback log
    keeps ``callback_log_days`` days of records; 0 keeps them forever.
    """

    def __init__(
        self,
        *,
        store: BlobStore,
        catalog: Catalog,
        fetcher: Fetcher,
        links: Links,
        secret: str,
        jwt_header: str = "Authorization",
        max_upload_bytes: int = 100 * 1024 * 1024,
        url_map: Mapping[str, str] | None = None,
        commands: CommandService | None = None,
        metrics: Metrics | None = None,
        callback_log_days: int = 30,
    ) -> None:
        self.store = store
        self.commands = commands
        self.metrics = metrics or Metrics()
        self.catalog = catalog
        self.fetcher = fetcher
        self.links = links
        self._secret = secret
        self.jwt_header = jwt_header
        self.max_upload_bytes = max_upload_bytes
        self._url_map = dict(url_map or {})
        self.callback_log_days = callback_log_days
        self._pruned_at: float | None = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @classmethod
    async def open(cls, settings: Settings) -> DocDesk:
        """The embedded defaults: files and SQLite under the data dir.

        The embedded SQLite database is migrated on the spot; any other
        database must already be current, or start-up stops and says how to
        migrate it.
        """
        store = open_store(settings.resolved_storage_url)
        catalog = Catalog.from_url(settings.resolved_database_url)
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            await catalog.migrate()
        elif pending := await catalog.pending_migrations():
            await catalog.close()
            raise ConfigurationError(
                f"DOCDESK_DATABASE_URL is behind by {len(pending)} migration(s): "
                "run `docdesk migrate` first"
            )

        origins = settings.document_server_origins
        fetcher = Fetcher(
            origins,
            max_bytes=settings.max_download_bytes,
            allow_private=await _any_private(origins),
        )
        desk = cls(
            store=store,
            catalog=catalog,
            fetcher=fetcher,
            links=Links(settings.public_url, settings.jwt_secret),
            secret=settings.jwt_secret,
            jwt_header=settings.jwt_header,
            max_upload_bytes=settings.max_upload_bytes,
            url_map=_url_map(settings),
            commands=CommandService(
                settings.document_server_internal_url
                or settings.effective_document_server_url,
                settings.jwt_secret,
                header=settings.jwt_header,
            ),
            callback_log_days=settings.callback_log_days,
        )
        await desk.prune_callback_log()
        return desk

    async def close(self) -> None:
        if self.commands is not None:
            await self.commands.aclose()
        await self.fetcher.aclose()
        await self.store.close()
        await self.catalog.close()

    # Documents

    async def document(self, document_id: str) -> DocumentRecord:
        return await self.catalog.document(_checked_id(document_id))

    async def documents(self) -> list[DocumentRecord]:
        return await self.catalog.documents()

    async def versions(self, document_id: str) -> list[VersionRecord]:
        return await self.catalog.versions(_checked_id(document_id))

    async def version(
        self, document_id: str, number: int | None = None
    ) -> VersionRecord:
        """Version ``number`` of a document, or its current one."""
        if number is None:
            number = (await self.document(document_id)).current_version
        return await self.catalog.version(_checked_id(document_id), number)

    def read(self, version: VersionRecord) -> AsyncIterator[bytes]:
        return self.store.read(version.blob)

    async def upload(
        self,
        filename: str,
        chunks: AsyncIterable[bytes],
        *,
        author: User | None = None,
        source: VersionSource = VersionSource.UPLOAD,
    ) -> DocumentRecord:
        """Keep a new document from a stream; its first version is the file."""
        title = clean_title(filename)
        fmt = format_for(title)
        document_id = secrets.token_hex(8)

        version = await self._store_upload(document_id, fmt, chunks, author, source)
        try:
            document = await self.catalog.add_document(
                document_id=document_id,
                title=title,
                key=new_document_key(),
                version=version,
            )
        except BaseException:
            await self.store.delete(version.blob)
            raise
        logger.info(
            "document added document=%s type=%s bytes=%d source=%s",
            document_id,
            fmt.extension,
            version.size,
            source,
        )
        return document

    async def create(
        self, title: str, extension: str, *, author: User | None = None
    ) -> DocumentRecord:
        """A new blank document, ready to open in the editor."""
        stem = clean_title(title or "New document")
        content = blank_document(extension)
        return await self.upload(
            f"{stem}.{extension}",
            _once(content),
            author=author,
            source=VersionSource.NEW,
        )

    async def add_version(
        self,
        document_id: str,
        chunks: AsyncIterable[bytes],
        *,
        author: User | None = None,
    ) -> VersionRecord:
        """A new version from outside the editor; open editors get a new key."""
        document = await self.document(document_id)
        fmt = format_for(document.file_type)
        version = await self._store_upload(
            document.id, fmt, chunks, author, VersionSource.UPLOAD
        )
        async with self._lock(document.id):
            return await self._commit(document.id, version)

    async def restore(
        self, document_id: str, number: int, *, author: User | None = None
    ) -> VersionRecord:
        """Make a copy of version ``number`` the newest version.

        Blobs are immutable, so the copy shares the old version's blob.
        """
        old = await self.version(document_id, number)
        version = NewVersion(
            blob=old.blob,
            file_type=old.file_type,
            size=old.size,
            sha256=old.sha256,
            source=VersionSource.RESTORE,
            author_id=author.id if author else None,
            author_name=author.name if author else None,
            restored_from=number,
        )
        async with self._lock(old.document_id):
            restored = await self._commit(old.document_id, version)
        logger.info(
            "version restored document=%s from=%d version=%d",
            old.document_id,
            number,
            restored.number,
        )
        return restored

    async def commit_recovered(
        self, document_id: str, version: NewVersion
    ) -> VersionRecord:
        """Make a file brought back from recovery the newest version.

        Its blob must be durable and its own: a failed commit removes it.
        The document gets a new key either way; a ``version.key`` is also
        retired, since the DS ended that session when it forgot the file.
        """
        async with self._lock(_checked_id(document_id)):
            return await self._commit(
                document_id, version, ends_session=version.key is not None
            )

    async def delete(self, document_id: str) -> None:
        """Forget a document and remove its blobs."""
        async with self._lock(_checked_id(document_id)):
            names = await self.catalog.delete_document(document_id)
        for name in dict.fromkeys(names):
            await self.store.delete(name)
        logger.info("document deleted document=%s blobs=%d", document_id, len(names))

    async def rename(self, document_id: str, title: str) -> DocumentRecord:
        """Rename a document; editors open on it are told through ``meta``.

        The extension stays the document's own: the title names the format.
        """
        document = await self.document(document_id)
        name = clean_title(title)
        if not name.lower().endswith(f".{document.file_type}"):
            name = f"{name}.{document.file_type}"
        renamed = await self.catalog.rename(document.id, name)
        if self.commands is not None:
            try:
                await self.commands.meta(document.key, title=name)
            except DocdeskError as exc:
                logger.warning(
                    "rename not pushed document=%s reason=%s", document.id, exc
                )
        return renamed

    async def copy(
        self, document_id: str, title: str | None = None, *, author: User | None = None
    ) -> DocumentRecord:
        """A new document holding a copy of this one's current version."""
        document = await self.document(document_id)
        version = await self.version(document.id, document.current_version)
        stem = document.title.rpartition(".")[0] or document.title
        name = clean_title(title or f"{stem} (copy)")
        if not name.lower().endswith(f".{document.file_type}"):
            name = f"{name}.{document.file_type}"
        return await self.upload(name, self.store.read(version.blob), author=author)

    # Capture

    async def capture(
        self, document_id: str, *, wait: float = 30.0, poll: float = 0.1
    ) -> Capture:
        """Force-save the document now and return the version it produced.

        Asks the DS through the command service with a userdata of our own,
        then watches the catalog for the status-6 callback carrying it, so
        the wait ends whichever docdesk instance the callback reaches. When
        nobody edits, or nothing changed, the current version is the answer.
        """
        document = await self.document(document_id)
        if self.commands is None:
            raise ConfigurationError(
                "capture needs the Document Server's command service"
            )
        token = secrets.token_urlsafe(24)
        await self.catalog.add_capture(token, document.id, document.key)

        error = await self.commands.forcesave(document.key, userdata=CAPTURE + token)
        if error in (CommandError.NOT_MODIFIED, CommandError.DOCUMENT_ID):
            outcome = (
                "unchanged" if error is CommandError.NOT_MODIFIED else "not_editing"
            )
            await self.catalog.resolve_capture(token, outcome)
            return Capture(await self.version(document.id), outcome)
        if error is not CommandError.NO_ERROR:
            await self.catalog.resolve_capture(token, "failed")
            raise DocumentServerError(
                f"the Document Server refused the force save: error {int(error)}"
            )

        record = await self._wait_for_capture(token, wait, poll)
        if record.outcome == "failed":
            raise DocumentServerError("the Document Server could not assemble the file")
        version = await self.version(document.id, record.version)
        return Capture(version, "saved" if record.version else "unchanged")

    async def _wait_for_capture(
        self, token: str, wait: float, poll: float
    ) -> CaptureRecord:
        with anyio.move_on_after(wait):
            while True:
                record = await self.catalog.capture(token)
                if record is not None and record.resolved is not None:
                    return record
                await anyio.sleep(poll)
        if not await self.catalog.resolve_capture(token, "timeout"):
            # The callback won the race against the deadline.
            found = await self.catalog.capture(token)
            if found is not None:
                return found
        raise CaptureTimeout(
            f"no force-save callback came back within {wait:g} s; nothing was saved "
            "for this capture (check that the Document Server reaches the callback URL)"
        )

    async def _settle_capture(
        self, payload: CallbackPayload | None, reply: CallbackReply
    ) -> None:
        """Resolve the capture a status 6 or 7 answers, if it is one of ours."""
        if payload is None or not (payload.userdata or "").startswith(CAPTURE):
            return
        if payload.status not in (
            CallbackStatus.MUST_FORCE_SAVE,
            CallbackStatus.CORRUPTED_FORCE_SAVE,
        ):
            return
        token = (payload.userdata or "").removeprefix(CAPTURE)
        if reply.error or payload.status.corrupted:
            await self.catalog.resolve_capture(token, "failed")
        else:
            await self.catalog.resolve_capture(token, "saved", reply.version)

    # History inside the editor

    async def history(self, document_id: str) -> dict[str, Any]:
        """What ``docEditor.refreshHistory`` takes, for ``onRequestHistory``."""
        document = await self.document(document_id)
        entries = []
        for version in await self.versions(document.id):
            entry: dict[str, Any] = {
                "version": version.number,
                "key": _history_key(document, version),
                "created": version.created.strftime("%Y-%m-%d %H:%M:%S"),
            }
            if version.author_id:
                entry["user"] = {
                    "id": version.author_id,
                    "name": version.author_name or version.author_id,
                }
            history = version.history or {}
            if history.get("changes"):
                entry["changes"] = history["changes"]
                entry["serverVersion"] = history.get("serverVersion")
            entries.append(entry)
        return {"currentVersion": document.current_version, "history": entries}

    async def history_data(self, document_id: str, number: int) -> dict[str, Any]:
        """The signed object for ``docEditor.setHistoryData``."""
        document = await self.document(document_id)
        version = await self.version(document.id, number)
        data: dict[str, Any] = {
            "version": number,
            "key": _history_key(document, version),
            "fileType": version.file_type,
            "url": self.links.version_url(document.id, number),
        }
        if version.changes_blob and number > 1:
            previous = await self.version(document.id, number - 1)
            data["changesUrl"] = self.links.changes_url(document.id, number)
            data["previous"] = {
                "key": _history_key(document, previous),
                "fileType": previous.file_type,
                "url": self.links.version_url(document.id, number - 1),
            }
        data["token"] = tokens.sign(data, self._secret)
        return data

    async def open_version(
        self, document_id: str, number: int, signature: str, *, changes: bool = False
    ) -> tuple[VersionRecord, AsyncIterator[bytes]]:
        """A version's file, or the changes that made it, for the DS's history."""
        check = self.links.check_changes if changes else self.links.check_version
        if not (is_document_id(document_id) and check(document_id, number, signature)):
            raise Forbidden("the history link's signature does not match")
        version = await self.catalog.version(document_id, number)
        blob = version.changes_blob if changes else version.blob
        if blob is None:
            raise NotFound(f"version {number} kept no changes")
        return version, self.store.read(blob)

    # The editor

    async def editor_config(
        self,
        document_id: str,
        user: User,
        *,
        mode: EditorMode = EditorMode.EDIT,
        lang: str = "en",
    ) -> dict[str, Any]:
        """The signed config for ``new DocsAPI.DocEditor``.

        Everyone who opens the document gets its current key, so they edit
        together until the session ends with a save.
        """
        document = await self.document(document_id)
        fmt = format_for(document.file_type)
        config = EditorConfig(
            format=fmt,
            key=document.key,  # type: ignore[arg-type]
            title=document.title,
            url=self.links.document_url(document.id, document.key),
            callback_url=self.links.callback_url(document.id),
            user=user,
            mode=mode,
            lang=lang,
            permissions=Permissions.for_mode(mode, fmt),
        )
        return config.signed(self._secret)

    async def open_file(
        self,
        document_id: str,
        key: str,
        signature: str,
        headers: Mapping[str, str],
    ) -> tuple[VersionRecord, AsyncIterator[bytes]]:
        """The file the DS downloads for ``key``, if the request proves itself.

        The link's signature is required. When the DS signs its requests it
        also sends a JWT header, which must then verify.
        """
        if not (is_document_id(document_id) and signature):
            raise NotFound("no such file")
        if not self.links.check_document(document_id, key, signature):
            raise Forbidden("the file link's signature does not match")
        if self.jwt_header in headers:
            tokens.read_request_token(
                {}, headers, secret=self._secret, header=self.jwt_header
            )

        issued = await self.catalog.key(key)
        if issued is None or issued.document_id != document_id:
            raise NotFound("no such file")
        version = await self.catalog.version(document_id, issued.version)
        return version, self.store.read(version.blob)

    # Callbacks

    async def handle_callback(
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
        try:
            if not self.links.check_callback(document_id, signature):
                raise Forbidden("the callback link's signature does not match")
            signed = read_callback(
                body, headers, secret=self._secret, header=self.jwt_header
            )
            payload = signed.payload
            issued = await self._issued_key(document_id, payload.key)
            async with self._lock(document_id):
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

        await self._settle_capture(payload, reply)
        await self._log_callback(document_id, payload, reply, detail, started, source)
        return reply

    async def _issued_key(self, document_id: str, key: str) -> KeyRecord:
        issued = await self.catalog.key(key)
        if issued is None:
            raise Forbidden("the callback's key was never issued here")
        if issued.document_id != document_id:
            raise Forbidden("the callback's key belongs to another document")
        return issued

    async def _act(self, issued: KeyRecord, signed: SignedCallback) -> CallbackReply:
        payload, delivery = signed.payload, signed.delivery
        status = payload.status
        if status in (CallbackStatus.EDITING, CallbackStatus.CLOSED):
            editors = payload.users if status is CallbackStatus.EDITING else ()
            if not await self.catalog.set_editors(
                payload.key,
                editors,
                document_id=issued.document_id,
                status=status,
                signed=signed.signed,
                delivery=delivery,
                keep=DELIVERY_MEMORY,
            ):
                return CallbackReply(200, 0, "stale")
            return CallbackReply(200, 0, "editing" if editors else "closed")
        if status is CallbackStatus.MAIL_MERGE:
            return CallbackReply(200, 0, "ignored")

        # The DS signs every attempt afresh, so a token seen twice is a replay.
        if await self.catalog.delivered(delivery):
            return CallbackReply(200, 0, "replayed")
        if status.corrupted:
            reply = await self._recover(issued, payload)
        else:
            reply = await self._save(issued, payload)
        await self.catalog.record_delivery(
            delivery, issued.document_id, status, keep=DELIVERY_MEMORY
        )
        return reply

    async def _save(self, issued: KeyRecord, payload: CallbackPayload) -> CallbackReply:
        document = await self.catalog.document(issued.document_id)
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
        stem = f"documents/{document.id}/{secrets.token_hex(8)}"
        async with self.store.create() as blob:
            await self._fetch(payload.url, blob)
            check_bytes(fmt, blob.digest.head, blob.digest.tail, blob.digest.size)
            if blob.digest.sha256 == document.sha256:
                if ends_session:
                    await self._rotate(document.id, payload.key)
                return CallbackReply(200, 0, "unchanged")
            await blob.commit(f"{stem}.{fmt.extension}")
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
        saved = await self._commit(document.id, version, ends_session=ends_session)
        return CallbackReply(200, 0, "saved", saved.number, saved_bytes=saved.size)

    async def _already_kept(
        self, document: DocumentRecord, payload: CallbackPayload
    ) -> bool:
        """Whether a status 2 marked ``notmodified`` repeats a kept force save.

        The DS sets ``notmodified`` only after we acknowledged a force save
        and nothing changed since; that save is the current version.
        """
        current = await self.catalog.version(document.id, document.current_version)
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
                async with self.store.create() as blob:
                    await self._fetch(url, blob)
                    await blob.commit(name)
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
            payload.filetype or (await self.document(issued.document_id)).file_type
        )
        name = f"recovery/{issued.document_id}/{secrets.token_hex(8)}.{fmt.extension}"
        async with self.store.create() as blob:
            await self._fetch(payload.url, blob)
            await blob.commit(name)
            size, sha256 = blob.digest.size, blob.digest.sha256
        await self.catalog.add_recovery(
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
        await self.catalog.rotate_key(document_id, key, new_document_key())

    async def _commit(
        self,
        document_id: str,
        version: NewVersion,
        *,
        ends_session: bool = False,
    ) -> VersionRecord:
        """One catalog transaction; on failure the new blobs are removed."""
        try:
            return await self.catalog.commit_version(
                document_id,
                version,
                new_key=new_document_key(),
                ends_session=ends_session,
            )
        except BaseException:
            if version.source is not VersionSource.RESTORE:
                for name in (version.blob, version.changes_blob, version.forms_blob):
                    if name:
                        with anyio.CancelScope(shield=True):
                            await self.store.delete(name)
            raise

    async def _store_upload(
        self,
        document_id: str,
        fmt: Format,
        chunks: AsyncIterable[bytes],
        author: User | None,
        source: VersionSource,
    ) -> NewVersion:
        name = f"documents/{document_id}/{secrets.token_hex(8)}.{fmt.extension}"
        async with self.store.create() as blob:
            async for chunk in chunks:
                if blob.digest.size + len(chunk) > self.max_upload_bytes:
                    raise TooLarge(
                        f"the file is larger than {self.max_upload_bytes} bytes"
                    )
                await blob.write(chunk)
            check_bytes(fmt, blob.digest.head, blob.digest.tail, blob.digest.size)
            await blob.commit(name)
            return NewVersion(
                blob=name,
                file_type=fmt.extension,
                size=blob.digest.size,
                sha256=blob.digest.sha256,
                source=source,
                author_id=author.id if author else None,
                author_name=author.name if author else None,
            )

    def _lock(self, document_id: str) -> asyncio.Lock:
        lock = self._locks.get(document_id)
        if lock is None:
            lock = self._locks[document_id] = asyncio.Lock()
        return lock

    async def _fetch(self, url: str, sink: Sink) -> None:
        """Download a DS link into ``sink``, counting failures by reason."""
        try:
            await self.fetcher.fetch(self._internal(url), sink)
        except (DownloadError, TooLarge) as exc:
            self.metrics.observe_download_failure(exc.code)
            raise

    def _internal(self, url: str) -> str:
        """Reach a DS link through the DS's internal address when there is one."""
        for public, internal in self._url_map.items():
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
    ) -> None:
        elapsed = (time.monotonic() - started) * 1000
        status = int(payload.status) if payload else None
        self.metrics.observe_callback(reply, status, elapsed / 1000, reply.saved_bytes)
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
        record = CallbackRecord(
            received=datetime.now(UTC),
            document_id=document_id if is_document_id(document_id) else None,
            key=key,
            status=status,
            outcome=reply.outcome,
            detail=detail,
            version=reply.version,
            http_status=reply.http_status,
            duration_ms=elapsed,
            source=source,
        )
        try:
            await self.catalog.log_callback(record)
        except DocdeskError as exc:
            logger.warning("callback log not written reason=%s", exc)

        if self._pruned_at is None or (
            time.monotonic() - self._pruned_at >= PRUNE_INTERVAL
        ):
            await self.prune_callback_log()

    async def prune_callback_log(self) -> int:
        """Forget callback log records older than ``callback_log_days``.

        Runs when the desk opens, then after a callback at most once an
        interval. Housekeeping must never cost a callback: a failure is a
        warning, and the next try comes an interval later.
        """
        # Claimed before the delete, so concurrent callbacks prune once.
        self._pruned_at = time.monotonic()
        if self.callback_log_days <= 0:
            return 0

        cutoff = datetime.now(UTC) - timedelta(days=self.callback_log_days)
        try:
            pruned = await self.catalog.prune_callback_log(cutoff)
        except Exception as exc:
            logger.warning("callback log not pruned reason=%s", exc)
            return 0
        if pruned:
            logger.info(
                "callback log pruned records=%d days=%d", pruned, self.callback_log_days
            )
        return pruned


def clean_title(filename: str) -> str:
    """A document title from an uploaded file name: no folders, no controls."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if not name or name.startswith("."):
        raise InvalidRequest("the file needs a name with an extension")
    if len(name) > MAX_TITLE:
        stem, dot, extension = name.rpartition(".")
        name = stem[: MAX_TITLE - len(extension) - 1] + dot + extension
    return name


def _history_key(document: DocumentRecord, version: VersionRecord) -> str:
    """A key for one version in the editor's history, never an editing key.

    The current version is the document as it opens, under its own key;
    every older one gets a key of its own, stable and in the DS's alphabet.
    """
    if version.number == document.current_version:
        return document.key
    return f"{document.id}-v{version.number}-{version.sha256[:16]}"


def _checked_id(document_id: str) -> str:
    if not is_document_id(document_id):
        raise NotFound(f"no document {document_id[:40]!r}")
    return document_id


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


async def _once(content: bytes) -> AsyncIterator[bytes]:
    yield content


async def _any_private(origins: tuple[str, ...]) -> bool:
    """Whether the DS lives on a loopback or private address.

    Only then may downloads go to such addresses: a DS on the internet
    never hands out links to the inside of our network.
    """
    for origin in origins:
        parts = urlsplit(origin)
        try:
            found = await anyio.getaddrinfo(parts.hostname or "", parts.port)
        except OSError:
            continue
        for *_, sockaddr in found:
            try:
                check_address(str(sockaddr[0]), allow_private=False)
            except DownloadRefused:
                return True
    return False


def _url_map(settings: Settings) -> dict[str, str]:
    public, internal = (
        settings.document_server_url,
        settings.document_server_internal_url,
    )
    if not public or not internal or public == internal:
        return {}
    return {public.rstrip("/") + "/": internal.rstrip("/") + "/"}
