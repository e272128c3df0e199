"""DocDesk: a document library that the Document Server edits.

This is docdesk's core, free of any web framework: the service's routes
turn requests into calls on :class:`DocDesk` and its answers back into
responses. The save path lives in ``saving``, capture in ``capture`` and
the editor's history in ``versions``; DocDesk holds what they share.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, overload
from urllib.parse import urlsplit

import anyio

from docdesk import capture as capturing
from docdesk import tokens, versions
from docdesk.capture import Capture
from docdesk.catalog import (
    Catalog,
    DocumentRecord,
    NewVersion,
    VersionRecord,
    VersionSource,
    is_document_id,
)
from docdesk.commands import CommandService
from docdesk.downloads import Fetcher, check_address
from docdesk.editor import EditorConfig, EditorMode, Permissions, User, new_document_key
from docdesk.errors import (
    ConfigurationError,
    DocdeskError,
    DownloadRefused,
    Forbidden,
    InvalidRequest,
    NotFound,
    TooLarge,
)
from docdesk.formats import Format, blank_document, check_bytes, format_for
from docdesk.links import Links
from docdesk.metrics import Metrics
from docdesk.saving import DELIVERY_MEMORY, CallbackReply, SavePath
from docdesk.settings import Settings
from docdesk.storage import BlobStore, commit_new, new_blob_stem, open_store

__all__ = [
    "CallbackReply",
    "Capture",
    "DocDesk",
    "clean_title",
    "internal_url_map",
    "is_document_id",
    "resolves_privately",
]

logger = logging.getLogger(__name__)

MAX_TITLE = 128
# Seconds between two prunes of the callback log by one DocDesk.
PRUNE_INTERVAL = 3600.0


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
        self.jwt_secret = secret
        self.jwt_header = jwt_header
        self.max_upload_bytes = max_upload_bytes
        self.url_map = dict(url_map or {})
        self.callback_log_days = callback_log_days
        self._pruned_at: float | None = None
        self._save_path = SavePath(self)

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
            allow_private=await resolves_privately(origins),
        )
        desk = cls(
            store=store,
            catalog=catalog,
            fetcher=fetcher,
            links=Links(settings.public_url, settings.jwt_secret),
            secret=settings.jwt_secret,
            jwt_header=settings.jwt_header,
            max_upload_bytes=settings.max_upload_bytes,
            url_map=internal_url_map(settings),
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
        async with self.lock(document.id):
            return await self.commit(document.id, version)

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
        async with self.lock(old.document_id):
            restored = await self.commit(old.document_id, version)
        logger.info(
            "version restored document=%s from=%d version=%d",
            old.document_id,
            number,
            restored.number,
        )
        return restored

    async def commit_recovered(
        self, document_id: str, version: NewVersion, *, recovery: int | None = None
    ) -> VersionRecord:
        """Make a file brought back from recovery the newest version.

        Its blob must be durable and its own: a failed commit removes it.
        The document gets a new key either way; a ``version.key`` is also
        retired, since the DS ended that session when it forgot the file.
        A file from the recovery area names its ``recovery`` id, marked
        restored by the same commit.
        """
        async with self.lock(_checked_id(document_id)):
            return await self.commit(
                document_id,
                version,
                ends_session=version.key is not None,
                recovery=recovery,
            )

    async def delete(self, document_id: str) -> None:
        """Forget a document and remove its blobs."""
        async with self.lock(_checked_id(document_id)):
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

    # Capture and the editor's history

    async def capture(
        self, document_id: str, *, wait: float = 30.0, poll: float = 0.1
    ) -> Capture:
        """Force-save the document now and return the version it produced.

        When nobody edits, or nothing changed, the current version is the
        answer; CaptureTimeout when no callback comes back within ``wait``.
        """
        return await capturing.capture(self, document_id, wait=wait, poll=poll)

    async def history(self, document_id: str) -> dict[str, Any]:
        """What ``docEditor.refreshHistory`` takes, for ``onRequestHistory``."""
        return await versions.history(self, document_id)

    async def history_data(self, document_id: str, number: int) -> dict[str, Any]:
        """The signed object for ``docEditor.setHistoryData``."""
        return await versions.history_data(self, document_id, number)

    async def open_version(
        self, document_id: str, number: int, signature: str, *, changes: bool = False
    ) -> tuple[VersionRecord, AsyncIterator[bytes]]:
        """A version's file, or the changes that made it, for the DS's history."""
        return await versions.open_version(
            self, document_id, number, signature, changes=changes
        )

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
        return config.signed(self.jwt_secret)

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
                {}, headers, secret=self.jwt_secret, header=self.jwt_header
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
        """Act on one DS callback and say how to answer it; never raises.

        Every failure becomes an answer the DS understands: HTTP 503 when a
        retry may succeed, ``{"error": 1}`` otherwise.
        """
        return await self._save_path.handle(
            document_id, signature, body, headers, source=source
        )

    async def prune_if_due(self) -> None:
        """Prune the callback log if an interval passed since the last time."""
        if self._pruned_at is None or (
            time.monotonic() - self._pruned_at >= PRUNE_INTERVAL
        ):
            await self.prune_callback_log()

    @overload
    async def commit(
        self,
        document_id: str,
        version: NewVersion,
        *,
        ends_session: bool = ...,
        delivery: None = ...,
        recovery: int | None = ...,
    ) -> VersionRecord: ...

    @overload
    async def commit(
        self,
        document_id: str,
        version: NewVersion,
        *,
        ends_session: bool = ...,
        delivery: str,
        recovery: int | None = ...,
    ) -> VersionRecord | None: ...

    async def commit(
        self,
        document_id: str,
        version: NewVersion,
        *,
        ends_session: bool = False,
        delivery: str | None = None,
        recovery: int | None = None,
    ) -> VersionRecord | None:
        """Commit a version whose blobs are stored, in one catalog transaction.

        A version from a callback names its ``delivery``: None comes back
        when that callback was already saved, and nothing changes. One made
        from a kept file names its ``recovery`` id, marked restored with it. The new
        blobs of a version that did not become one are removed, each on its
        own, once the catalog has said that no row names them; when that
        cannot be known (the commit was cancelled on its way, or the catalog
        does not answer) they stay, for the orphan sweep to judge later.
        """
        try:
            committed = await self.catalog.commit_version(
                document_id,
                version,
                new_key=new_document_key(),
                ends_session=ends_session,
                delivery=delivery,
                keep=DELIVERY_MEMORY,
                recovery=recovery,
            )
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._remove_new_blobs(version)
            raise
        if committed is None:
            await self._remove_new_blobs(version)
        return committed

    async def _remove_new_blobs(self, version: NewVersion) -> None:
        """Remove the blobs a version brought, unless a row names them."""
        if version.source is VersionSource.RESTORE:
            return
        for name in (version.blob, version.changes_blob, version.forms_blob):
            if not name:
                continue
            try:
                named = await self.catalog.names(name)
            except DocdeskError as exc:
                logger.warning("blob kept name=%s reason=%s", name, exc)
                continue
            if not named:
                await self._remove_blob(name)

    async def _remove_blob(self, name: str) -> None:
        try:
            await self.store.delete(name)
        except (DocdeskError, OSError) as exc:
            logger.warning("blob not removed name=%s reason=%s", name, exc)

    async def _store_upload(
        self,
        document_id: str,
        fmt: Format,
        chunks: AsyncIterable[bytes],
        author: User | None,
        source: VersionSource,
    ) -> NewVersion:
        name = f"{new_blob_stem('documents', document_id)}.{fmt.extension}"
        async with self.store.create() as blob:
            async for chunk in chunks:
                if blob.digest.size + len(chunk) > self.max_upload_bytes:
                    raise TooLarge(
                        f"the file is larger than {self.max_upload_bytes} bytes"
                    )
                await blob.write(chunk)
            check_bytes(fmt, blob.digest.head, blob.digest.tail, blob.digest.size)
            await commit_new(blob, name)
            return NewVersion(
                blob=name,
                file_type=fmt.extension,
                size=blob.digest.size,
                sha256=blob.digest.sha256,
                source=source,
                author_id=author.id if author else None,
                author_name=author.name if author else None,
            )

    def lock(self, document_id: str) -> AbstractAsyncContextManager[bool]:
        """Serializes the changes to one document, across every process.

        Held from a change's first read to its commit: two saves of one
        document take turns, whichever instance each reached.
        """
        return self.catalog.locks.hold(f"document {document_id}")

    async def prune_callback_log(self) -> int:
        """Forget callback log records older than ``callback_log_days``.

        The deliveries remembered past their time go too (they only weigh on
        the catalog: an expired one is never taken for a replay). Runs when
        the desk opens, then after a callback at most once an interval.
        Housekeeping must never cost a callback: a failure is a warning, and
        the next try comes an interval later.
        """
        # Claimed before the delete, so concurrent callbacks prune once.
        self._pruned_at = time.monotonic()
        try:
            await self.catalog.forget_deliveries()
        except Exception as exc:
            logger.warning("expired deliveries not forgotten reason=%s", exc)
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


def _checked_id(document_id: str) -> str:
    if not is_document_id(document_id):
        raise NotFound(f"no document {document_id[:40]!r}")
    return document_id


async def _once(content: bytes) -> AsyncIterator[bytes]:
    yield content


async def resolves_privately(origins: tuple[str, ...]) -> bool:
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


def internal_url_map(settings: Settings) -> dict[str, str]:
    """Where the DS's public links are fetched instead, when it has two names."""
    public, internal = (
        settings.document_server_url,
        settings.document_server_internal_url,
    )
    if not public or not internal or public == internal:
        return {}
    return {public.rstrip("/") + "/": internal.rstrip("/") + "/"}
