"""S3BlobStore: create-only blobs in an S3-compatible bucket, through obstore.

A blob is written once and never overwritten, whatever its size, with memory
that does not grow with it:

- up to SMALL_BLOB_MAX bytes, the blob is kept in memory and sent in one PUT
  with ``If-None-Match: *``, which the server refuses (412) if the name is
  taken;
- a larger one streams as a multipart upload to a staging key under
  ``.staging/``, which no blob name can have, and is then copied to its name by
  a multipart copy whose completion carries ``If-None-Match: *``; the staging
  object is deleted after.

Servers do not all make a conditional completion atomic: SeaweedFS lets two
racing multipart copies to one name both succeed, while its conditional PUT
lets exactly one through. So a commit first claims the name with a
conditional PUT of an empty object at ``.staging/claims/<name>``, writes the
blob, then removes the claim: of racing commits, one holds the claim and the
others are refused; a later one meets the blob and is refused by the server.

Leaving a writer without a commit aborts its multipart upload or deletes its
staging object. A crash mid-commit leaves a staging object or a claim:
:meth:`S3BlobStore.sweep_staging` removes the old ones.

Credentials come from the usual ``AWS_*`` variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``), which obstore
reads when the store is opened; they never appear in the storage URL, an error
or a log line.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import obstore
from obstore.exceptions import AlreadyExistsError, BaseError
from obstore.store import S3Store

from docdesk.errors import ConfigurationError, NotFound, StorageError
from docdesk.storage.base import Digest, validate_blob_name, walk_names

if TYPE_CHECKING:
    from obstore import AsyncWritableFile, ObjectMeta
    from obstore.store import RetryConfig

    from docdesk.storage.base import BlobStore, BlobWriter

__all__ = ["S3BlobStore", "S3BlobWriter", "S3Location", "parse_s3_url"]

logger = logging.getLogger(__name__)

# No blob name can start with it: validate_blob_name refuses parts starting
# with ".", so names() and a blob never meet a staging object.
STAGING = ".staging"
CLAIMS = f"{STAGING}/claims"
# A blob up to this size is buffered and sent in one conditional PUT; a
# larger one streams through a staging object. obstore buffers a conditional
# PUT whole, so this is also the most memory one small writer holds.
SMALL_BLOB_MAX = 8 * 1024 * 1024
# Parts of a staged upload: S3's smallest part size, and two uploads in
# flight. At most about PART_SIZE * (UPLOAD_CONCURRENCY + 1) bytes wait in
# memory, and 10,000 parts (S3's cap) still make 48 GiB.
PART_SIZE = 5 * 1024 * 1024
UPLOAD_CONCURRENCY = 2
URL_PARAMETERS = frozenset({"endpoint", "region"})
BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")
# A few retries ride out a blip; a server that stays down fails the request
# within half a minute, so a DS callback answers 503 and is retried later.
RETRY_TIMEOUT = timedelta(seconds=30)
MAX_RETRIES = 3


@dataclass(frozen=True)
class S3Location:
    """Where an ``s3://`` storage URL points; it holds no credentials."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str | None = None

    def __str__(self) -> str:
        """The location as shown to people: bucket, prefix and endpoint host."""
        shown = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            shown += f" at {parts.scheme}://{parts.netloc}"
        return shown


def parse_s3_url(url: str) -> S3Location:
    """Read ``s3://bucket/prefix?endpoint=http://host:port&region=...``.

    Raises ConfigurationError naming DOCDESK_STORAGE_URL for a URL without a
    bucket, with credentials in it, with an unsafe prefix or an unknown
    query parameter. The message never repeats the URL: it might hold a
    secret by mistake.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise _url_error("must start with s3://")
    if "@" in parts.netloc:
        raise _url_error(
            "must not hold credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY instead"
        )
    if not BUCKET.fullmatch(parts.netloc):
        raise _url_error("needs a bucket name: s3://bucket/prefix")

    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            validate_blob_name(prefix)
        except ValueError:
            raise _url_error("has an unsafe prefix") from None

    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - URL_PARAMETERS)
    if unknown:
        raise _url_error(
            f"has an unknown parameter {unknown[0]!r}: only endpoint and region"
        )
    endpoint = query.get("endpoint") or None
    if endpoint is not None:
        _check_endpoint(endpoint)
    return S3Location(parts.netloc, prefix, endpoint, query.get("region") or None)


def _check_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _url_error("has an endpoint that is not an http(s)://host:port URL")
    if parts.username is not None or parts.password is not None:
        raise _url_error("has credentials in its endpoint: use AWS_* variables")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise _url_error("has an endpoint with a path: give only http(s)://host:port")


def _url_error(reason: str) -> ConfigurationError:
    return ConfigurationError(f"DOCDESK_STORAGE_URL {reason}")


class S3BlobStore:
    """Immutable blobs as objects under one prefix of one bucket.

    ``copy_if_not_exists="multipart"`` makes a copy conditional, which a
    staged blob's commit needs; the bucket's server must honour
    ``If-None-Match`` on a PUT and on completing a multipart upload (AWS S3
    and SeaweedFS do).
    """

    def __init__(self, location: S3Location) -> None:
        self.location = location
        # Plain HTTP only when the URL names an http:// endpoint, whatever
        # AWS_ALLOW_HTTP says.
        options: dict[str, Any] = {
            "copy_if_not_exists": "multipart",
            "allow_http": (location.endpoint or "").startswith("http:"),
        }
        if location.endpoint is not None:
            options["endpoint"] = location.endpoint
        if location.region is not None:
            options["region"] = location.region
        retry: RetryConfig = {
            "max_retries": MAX_RETRIES,
            "retry_timeout": RETRY_TIMEOUT,
        }
        try:
            self._store = S3Store(
                location.bucket,
                prefix=location.prefix or None,
                retry_config=retry,
                **options,
            )
        except (BaseError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot open S3 storage {location}: {_reason(exc)}"
            ) from exc

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        """The store an ``s3://`` DOCDESK_STORAGE_URL names."""
        return cls(parse_s3_url(url))

    def create(self) -> S3BlobWriter:
        return S3BlobWriter(self)

    def read(
        self, name: str, *, chunk_size: int = 262_144
    ) -> AsyncGenerator[bytes, None]:
        """Stream a blob in chunks of ``chunk_size`` bytes (the last one shorter).

        The name is checked at once; NotFound comes with the first chunk. At
        most about two chunks are in memory at a time.
        """
        validate_blob_name(name)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        return self._chunks(name, chunk_size)

    async def size(self, name: str) -> int:
        validate_blob_name(name)
        meta = await self._head(name)
        return int(meta["size"])

    async def modified(self, name: str) -> datetime:
        """The object's Last-Modified, by the server's clock.

        A staged blob is copied under its name at commit, so this is the
        commit's time whatever the upload took.
        """
        validate_blob_name(name)
        meta = await self._head(name)
        return meta["last_modified"].astimezone(UTC)

    async def delete(self, name: str) -> None:
        validate_blob_name(name)
        try:
            await obstore.delete_async(self._store, name)
        except FileNotFoundError:
            return
        except (BaseError, OSError) as exc:
            raise self._error("delete", name, exc) from exc

    async def names(self, prefix: str = "") -> AsyncIterator[str]:
        """Committed names starting with ``prefix``, in sorted order.

        Servers differ in the order they list keys (SeaweedFS walks its
        folders), so the names are walked one folder at a time. Staging
        objects are never listed.
        """
        async for name in walk_names(self._list_folder, prefix):
            yield name

    async def close(self) -> None:
        """Nothing to release: obstore's connections close with the store."""

    async def sweep_staging(self, older_than: float = 3600.0) -> int:
        """Delete staging objects older than ``older_than`` seconds; say how many.

        They are what a crash between a staged upload and its copy leaves,
        and claims a crash mid-commit left, each holding its name.
        Ages are by the server's clock against ours: keep ``older_than`` well
        above the longest commit plus any clock skew. A swept writer fails
        its commit with StorageError.
        """
        # XXX: a crash during a staged upload leaves an incomplete multipart
        # upload, which obstore can neither list nor abort; it is invisible
        # but billed. Give the bucket a lifecycle rule with
        # AbortIncompleteMultipartUpload (README.md). No test.
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        removed = 0
        try:
            async for page in obstore.list(self._store, prefix=STAGING):
                for meta in page:
                    if meta["last_modified"] < cutoff:
                        await obstore.delete_async(self._store, str(meta["path"]))
                        removed += 1
        except (BaseError, OSError) as exc:
            raise self._error("sweep", STAGING, exc) from exc
        if removed:
            logger.info("staging swept removed=%d", removed)
        return removed

    async def _head(self, name: str) -> ObjectMeta:
        try:
            return await obstore.head_async(self._store, name)
        except FileNotFoundError as exc:
            raise NotFound(f"no blob named {name!r}") from exc
        except (BaseError, OSError) as exc:
            raise self._error("look up", name, exc) from exc

    async def _chunks(self, name: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        try:
            answer = await obstore.get_async(self._store, name)
        except FileNotFoundError as exc:
            raise NotFound(f"no blob named {name!r}") from exc
        except (BaseError, OSError) as exc:
            raise self._error("read", name, exc) from exc

        # obstore's chunks are at least chunk_size; they are cut to size here.
        pending = bytearray()
        stream = answer.stream(min_chunk_size=chunk_size)
        while True:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                break
            except (BaseError, OSError) as exc:
                raise self._error("read", name, exc) from exc
            if not pending and len(chunk) == chunk_size:
                yield chunk
                continue
            pending += chunk
            while len(pending) >= chunk_size:
                yield bytes(pending[:chunk_size])
                del pending[:chunk_size]
        if pending:
            yield bytes(pending)

    async def _list_folder(self, folder: str) -> list[tuple[str, bool]]:
        """Blobs and sub-folders directly in ``folder``, sorted as names()."""
        try:
            listing = await obstore.list_with_delimiter_async(
                self._store, folder or None
            )
        except (BaseError, OSError) as exc:
            raise self._error("list", folder or "/", exc) from exc

        # A folder's own marker (the key "folder/", which SeaweedFS lists for
        # a folder emptied by deletes) comes back named as the folder.
        entries = [
            (str(meta["path"]), False)
            for meta in listing["objects"]
            if str(meta["path"]) != folder
        ]
        folders = listing["common_prefixes"]
        entries += [(str(path).rstrip("/"), True) for path in folders]
        entries = [entry for entry in entries if _is_valid(entry[0])]
        # Sorting a folder as "name/" makes the depth-first walk in names()
        # yield whole names in plain string order ("a-b" before "a/b").
        entries.sort(key=lambda entry: entry[0] + "/" if entry[1] else entry[0])
        return entries

    def _error(self, action: str, name: str | None, exc: BaseException) -> StorageError:
        """A StorageError naming the blob and the bucket, never a credential."""
        target = f"blob {name!r}" if name else "a new blob"
        return StorageError(
            f"could not {action} {target} in {self.location}: {_reason(exc)}"
        )


class S3BlobWriter:
    """One blob being written: buffered, then staged once it grows large.

    Not for use by several tasks at once. Leaving the ``async with`` block
    without a commit, or on an exception, discards what was written.
    """

    def __init__(self, store: S3BlobStore) -> None:
        self.digest = Digest()
        self._store = store
        self._buffer: bytearray | None = bytearray()
        self._staging: str | None = None
        self._upload: AsyncWritableFile | None = None
        self._state: Literal["writing", "committed", "closed"] = "writing"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.abort()

    async def write(self, chunk: bytes) -> None:
        """Take ``chunk``: it is counted and hashed into ``digest`` on return.

        The first SMALL_BLOB_MAX bytes wait in memory; past that they stream
        to a staging object in parts of PART_SIZE. A failed upload raises
        StorageError here or from ``commit``, and the writer is closed.
        """
        self._check_writing()
        if self._buffer is not None and (
            len(self._buffer) + len(chunk) <= SMALL_BLOB_MAX
        ):
            self._buffer += chunk
            self.digest.update(chunk)
            return

        try:
            upload = await self._ensure_upload()
            await upload.write(chunk)
        except (BaseError, OSError) as exc:
            await self.abort()
            raise self._store._error("write", None, exc) from exc
        self.digest.update(chunk)

    async def commit(self, name: str) -> None:
        """Make the blob durable under ``name``, create-only.

        Raises FileExistsError if ``name`` exists (it is left untouched),
        StorageError if the bucket fails us, ValueError for an unsafe name.
        Once commit has raised, the writer is closed and whatever it staged
        is removed.
        """
        self._check_writing()

        # Shielded: a cancelled task must not leave the writer unsure whether
        # its blob exists; the cancellation lands at the next checkpoint.
        with anyio.CancelScope(shield=True):
            claimed = False
            try:
                validate_blob_name(name)
                await self._claim(name)
                claimed = True
                if self._buffer is not None:
                    await self._put(name, self._buffer)
                else:
                    await self._copy_staged(name)
            except BaseException:
                await self.abort()
                raise
            finally:
                if claimed:
                    await self._remove(f"{CLAIMS}/{name}", "claim")
            self._state = "committed"
            self._buffer = None
            await self._remove_staging()
        logger.debug("blob committed name=%s bytes=%d", name, self.digest.size)

    async def abort(self) -> None:
        """Discard what was written; safe to repeat, a no-op after commit."""
        if self._state != "writing":
            return

        self._state = "closed"
        self._buffer = None
        # Shielded: a cancelled task must still clean up what it staged.
        with anyio.CancelScope(shield=True):
            upload, self._upload = self._upload, None
            if upload is not None:
                try:
                    # obstore aborts the multipart upload when its writer
                    # leaves with an exception.
                    await upload.__aexit__(_Aborted, _Aborted(), None)
                except (BaseError, OSError) as exc:
                    logger.warning("staged upload not aborted reason=%s", _reason(exc))
            await self._remove_staging()

    def _check_writing(self) -> None:
        if self._state != "writing":
            raise ValueError(f"blob writer is {self._state}")

    async def _ensure_upload(self) -> AsyncWritableFile:
        """The staging upload, started with what the buffer held so far."""
        if self._upload is not None:
            return self._upload

        self._staging = f"{STAGING}/{secrets.token_hex(16)}"
        self._upload = obstore.open_writer_async(
            self._store._store,
            self._staging,
            buffer_size=PART_SIZE,
            max_concurrency=UPLOAD_CONCURRENCY,
        )
        # obstore keeps a view of the buffer until its part is sent: handed
        # over, never touched again.
        buffered, self._buffer = self._buffer, None
        if buffered:
            await self._upload.write(buffered)
        return self._upload

    async def _claim(self, name: str) -> None:
        """Hold ``name`` for this commit, or raise FileExistsError."""
        # XXX: obstore retries a PUT whose answer was lost (a 5xx, a dropped
        # connection); if the first try had stored the claim or the blob, the
        # retry meets our own object and reports the name taken. The save
        # then fails as a retry may cure (storage.commit_new): the claim
        # holds the name until sweep_staging, the blob is an orphan; nothing
        # is lost. No test.
        try:
            await obstore.put_async(
                self._store._store, f"{CLAIMS}/{name}", b"", mode="create"
            )
        except AlreadyExistsError as exc:
            raise _taken(name) from exc
        except (BaseError, OSError) as exc:
            raise self._store._error("commit", name, exc) from exc

    async def _put(self, name: str, data: bytearray) -> None:
        try:
            await obstore.put_async(self._store._store, name, data, mode="create")
        except AlreadyExistsError as exc:
            raise _taken(name) from exc
        except (BaseError, OSError) as exc:
            raise self._store._error("commit", name, exc) from exc

    async def _copy_staged(self, name: str) -> None:
        """Finish the staged upload, then copy it to ``name`` if that is free."""
        upload = self._upload
        assert upload is not None
        assert self._staging is not None
        try:
            await upload.close()
        except (BaseError, OSError) as exc:
            # Still ours: abort() ends the multipart upload, or it would
            # stay in the bucket, unseen.
            raise self._store._error("commit", name, exc) from exc
        self._upload = None

        # XXX: one UploadPartCopy moves at most 5 GiB, so a staged blob
        # larger than that cannot be committed; far above the default
        # DOCDESK_MAX_DOWNLOAD_BYTES. No test.
        try:
            await obstore.copy_async(
                self._store._store, self._staging, name, overwrite=False
            )
        except AlreadyExistsError as exc:
            raise _taken(name) from exc
        except (BaseError, OSError) as exc:
            raise self._store._error("commit", name, exc) from exc

    async def _remove_staging(self) -> None:
        staging, self._staging = self._staging, None
        if staging is not None:
            await self._remove(staging, "staging object")

    async def _remove(self, key: str, what: str) -> None:
        try:
            await obstore.delete_async(self._store._store, key)
        except (BaseError, OSError) as exc:
            # The blob is whole or absent; what is left only wastes space, or
            # holds a name nobody else writes, until the next sweep_staging.
            logger.warning("%s kept reason=%s", what, _reason(exc))


class _Aborted(Exception):
    """Handed to obstore's writer so that it aborts its multipart upload."""


def _taken(name: str) -> FileExistsError:
    return FileExistsError(17, "blob name is taken", name)


def _is_valid(name: str) -> bool:
    try:
        validate_blob_name(name)
    except ValueError:
        return False
    return True


# The part of obstore's message after "Error performing PUT <url> in 1ms - ":
# what went wrong, without the request or the server's XML.
_WHAT_FAILED = re.compile(r" - ([^:<]+(?::\s*[^:<]+)?)")
_KINDS = {
    "PermissionDeniedError": "access denied",
    "UnauthenticatedError": "the credentials were refused",
    "AlreadyExistsError": "the name is taken",
    "PreconditionError": "a precondition failed",
    "NotSupportedError": "the server does not support it",
    "FileNotFoundError": "not found",
}


def _reason(exc: BaseException) -> str:
    """A short, credential-free account of an obstore error.

    obstore's messages hold request URLs and the server's answer, never a
    signature or key; still, only their first line's gist is kept.
    """
    kind = _KINDS.get(type(exc).__name__, "the request failed")
    first_line = str(exc).partition("\n")[0]
    found = _WHAT_FAILED.search(first_line)
    if found is None:
        return kind
    return f"{kind} ({found.group(1).strip()})"


if TYPE_CHECKING:

    def _satisfies(
        store: S3BlobStore, writer: S3BlobWriter
    ) -> tuple[BlobStore, BlobWriter]:
        """Type-checked only: proves both classes satisfy their protocols."""
        return store, writer
