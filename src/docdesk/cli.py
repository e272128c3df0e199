"""The ``docdesk`` command: the service, and the library from the shell.

``docdesk serve`` runs the service; ``upload``, ``list``, ``versions``,
``export``, ``restore`` and ``migrate`` work on the same library, opened from
the same settings. Tables and JSON go to stdout, progress bars and errors to
stderr, so ``--json`` output stays machine-readable.

The CLI is the one place that configures logging; the library only logs.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TypeVar
from urllib.parse import urlsplit
from urllib.request import url2pathname

import anyio
import click
from rich import box, filesize
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text
from starlette.types import ASGIApp

from docdesk import logs
from docdesk.catalog import CallbackRecord, Catalog, DocumentRecord, VersionRecord
from docdesk.desk import DocDesk, clean_title, is_document_id
from docdesk.errors import ConfigurationError, DocdeskError, StorageError
from docdesk.orphans import ORPHAN_MAX_AGE
from docdesk.recovery import (
    list_recoveries,
    recover_exclusively,
    recovery_json,
    restore_recovery,
    sweep_orphans_exclusively,
)
from docdesk.settings import Settings
from docdesk.shapes import callback_json, document_json, version_json

if TYPE_CHECKING:
    from docdesk.doctor import Check
    from docdesk.transfer import TransferReport

__all__ = ["main", "uvicorn_options"]

logger = logging.getLogger("docdesk")

READ_CHUNK = 262_144
MIN_PASSWORD_CHARS = 8
KEEP_ALIVE_SECONDS = 75
T = TypeVar("T")

log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
    envvar="DOCDESK_LOG_FORMAT",
    help="A line of text, or a JSON object, per log record.",
)


@click.group()
@click.version_option(package_name="docdesk")
def main() -> None:
    """docdesk: edit documents in ONLYOFFICE Docs and never lose a save."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--log-level", default="info", show_default=True)
@log_format_option
def serve(host: str, port: int, log_level: str, log_format: str) -> None:
    """Serve the document library and the endpoints the Document Server calls."""
    from docdesk.web import create_app

    _configure_logging(log_level, log_format)
    settings = _settings(host=host, port=port)
    if not settings.access_controlled and not _is_loopback(host):
        _fail(
            f"refusing to serve on {host} with no access control: anyone who "
            "reaches it could read, change and delete every document. Set "
            "DOCDESK_API_TOKENS (or DOCDESK_API_TOKENS_FILE) for programs and "
            "DOCDESK_USERS_FILE for people, or serve on 127.0.0.1",
            status=2,
        )
    if settings.uses_simulator:
        logger.warning(
            "no Document Server configured: the built-in simulator serves at %s; "
            "set DOCDESK_DOCUMENT_SERVER_URL and DOCDESK_JWT_SECRET to use "
            "ONLYOFFICE Docs",
            settings.effective_document_server_url,
        )
    loopback = ipaddress.ip_address("127.0.0.1")
    if (
        settings.uses_simulator
        and settings.callback_allow
        and not any(loopback in network for network in settings.callback_allow)
    ):
        logger.warning(
            "DOCDESK_CALLBACK_ALLOW leaves out 127.0.0.1, where the built-in "
            "simulator calls from: its callbacks will be refused"
        )
    logger.info(
        "serving public_url=%s data_dir=%s", settings.public_url, settings.data_dir
    )
    _run_server(create_app(settings), host, port)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--secret",
    envvar="DOCDESK_JWT_SECRET",
    required=True,
    help="The JWT secret shared with the integration under test.",
)
@click.option("--jwt-header", default="Authorization", show_default=True)
@click.option(
    "--save-delay",
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds from the last editor leaving to the status-2 callback.",
)
@click.option(
    "--forcesave-interval",
    type=float,
    default=None,
    help="Force-save (type 2) this often after changes; off by default.",
)
@click.option(
    "--link-lifetime",
    default=900.0,
    show_default=True,
    type=float,
    help="Seconds a /cache/files link stays valid.",
)
@click.option("--log-level", default="info", show_default=True)
@log_format_option
def simulator(
    host: str,
    port: int,
    secret: str,
    jwt_header: str,
    save_delay: float,
    forcesave_interval: float | None,
    link_lifetime: float,
    log_level: str,
    log_format: str,
) -> None:
    """Serve a stand-in for ONLYOFFICE Docs, faithful to its protocol."""
    from docdesk.simulator import SimulatorSettings, create_simulator_app

    _configure_logging(log_level, log_format)
    settings = SimulatorSettings(
        secret=secret,
        jwt_header=jwt_header,
        save_delay=save_delay,
        forcesave_interval=forcesave_interval,
        link_lifetime=link_lifetime,
    )
    logger.info("simulator serving url=http://%s:%d", host, port)
    _run_server(logs.RequestIdMiddleware(create_simulator_app(settings)), host, port)


@main.command()
@click.option(
    "--host",
    default=None,
    help="Where `docdesk serve` listens.  [default: the public URL's host]",
)
@click.option(
    "--port",
    default=None,
    type=int,
    help="Where `docdesk serve` listens.  [default: the public URL's port]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@log_format_option
def doctor(host: str | None, port: int | None, as_json: bool, log_format: str) -> None:
    """Check the setup: the Document Server, the public URL, storage, database.

    One line per check, with the fix when it fails; the exit status is 1 if
    any check fails. With no service running, doctor serves the probe the
    Document Server must fetch from DOCDESK_PUBLIC_URL itself, on the host
    and port `docdesk serve` would use.
    """
    from docdesk.doctor import diagnose, health_json, serve_probe

    _configure_logging("warning", log_format)
    listen = {"host": host, "port": port}
    settings = _settings(**{k: v for k, v in listen.items() if v is not None})
    shared = bool(os.environ.get("DOCDESK_JWT_SECRET", "").strip())

    with serve_probe(settings, host=host, port=port) as probe:
        checks = anyio.run(partial(diagnose, settings, probe, secret_shared=shared))

    if as_json:
        _print_json(health_json(checks))
    else:
        _print_checks(checks)
    sys.exit(0 if all(check.ok for check in checks) else 1)


# Who may call: people and programs


@main.group()
def user() -> None:
    """People who sign in to the pages (DOCDESK_USERS_FILE)."""


@user.command("hash")
@click.option("--id", "user_id", help="Print a whole users-file line for this id.")
@click.option("--name", default="", help="The name on that line.  [default: the id]")
def user_hash(user_id: str | None, name: str) -> None:
    """Hash a password for DOCDESK_USERS_FILE and print the hash.

    The password is asked for twice on a terminal, else read from the first
    line of stdin. With --id the whole line is printed, as the users file
    holds it: id:display name:hash.
    """
    from docdesk.web.access import hash_password

    if user_id is not None and (
        not 1 <= len(user_id) <= 128 or ":" in user_id or not user_id.isprintable()
    ):
        _fail("a user id has 1 to 128 printable characters and no ':'", status=2)
    if len(name) > 128 or not name.isprintable():
        _fail("a name has at most 128 printable characters", status=2)
    password = _new_password()

    stored = str(hash_password(password))
    click.echo(stored if user_id is None else f"{user_id}:{name or user_id}:{stored}")


@main.group()
def token() -> None:
    """Tokens for programs that call the JSON API (DOCDESK_API_TOKENS)."""


@token.command("new")
@click.argument("name")
def token_new(name: str) -> None:
    """Print a new NAME:token line for DOCDESK_API_TOKENS or its file.

    Programs send the part after the colon as 'Authorization: Bearer ...'.
    """
    from docdesk.settings import TOKEN_NAME

    if not TOKEN_NAME.fullmatch(name):
        _fail("a token's name is 1 to 64 letters, digits, '.', '_' or '-'", status=2)
    click.echo(f"{name}:{secrets.token_urlsafe(32)}")


# The library from the shell


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def upload(files: tuple[Path, ...]) -> None:
    """Add each FILE as a new document; print its id, title and version.

    A file that is missing or refused is named on stderr, the others are
    still stored, and the command then exits with status 1.
    """
    stored = _run(lambda desk: _upload_files(desk, files))

    if stored < len(files):
        sys.exit(1)


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def list_documents(as_json: bool) -> None:
    """List the documents, least recently updated first."""
    documents = _run(lambda desk: desk.documents())

    if as_json:
        _print_json({"documents": [document_json(d) for d in documents]})
        return
    table = _table(
        "id",
        "title",
        "type",
        "version",
        "size",
        "updated",
        "editors",
        wrapping=("title", "editors"),
    )
    for document in documents:
        table.add_row(
            *_cells(
                document.id,
                document.title,
                document.file_type,
                str(document.current_version),
                filesize.decimal(document.size),
                _when(document.updated),
                ", ".join(document.editors),
            )
        )
    _print_table(table, empty="no documents")


@main.command()
@click.argument("document_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def versions(document_id: str, as_json: bool) -> None:
    """List the versions of DOCUMENT_ID, oldest first."""
    records = _run(lambda desk: desk.versions(document_id))

    if as_json:
        _print_json({"versions": [version_json(v) for v in records]})
        return
    table = _table(
        "version",
        "created",
        "source",
        "author",
        "size",
        "sha256",
        wrapping=("source", "author"),
    )
    for version in records:
        table.add_row(
            *_cells(
                str(version.number),
                _when(version.created),
                _source(version),
                version.author_name or version.author_id or "",
                filesize.decimal(version.size),
                version.sha256[:12],
            )
        )
    _print_table(table, empty="no versions")


@main.command()
@click.argument("document_id")
@click.option(
    "--version",
    "number",
    type=click.IntRange(min=1),
    help="The version to export.  [default: the current one]",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(allow_dash=True),
    help="Where to write, or '-' for stdout.  [default: the title, here]",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def export(
    document_id: str, number: int | None, output: str | None, force: bool
) -> None:
    """Write the bytes of DOCUMENT_ID to a file.

    The file appears only once it is whole: a failed export leaves nothing.
    """
    written = _run(lambda desk: _export(desk, document_id, number, output, force))

    if written is not None:
        click.echo(written)


@main.command()
@click.argument("document_id")
@click.argument("version", type=click.IntRange(min=1))
def restore(document_id: str, version: int) -> None:
    """Make a copy of VERSION the newest version; print its number.

    Editors open on the document get a new key, as after any change made
    outside the editor.
    """
    restored = _run(lambda desk: desk.restore(document_id, version))

    click.echo(restored.number)


@main.command()
@click.argument("document_id", required=False)
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Show at most this many records.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def callbacks(document_id: str | None, limit: int, as_json: bool) -> None:
    """List the callback log of DOCUMENT_ID, or of all documents, newest first.

    One record per callback the Document Server made, with the answer it
    got. Records older than DOCDESK_CALLBACK_LOG_DAYS days are pruned.
    """
    # The log outlives a deleted document, so the id is not looked up.
    if document_id is not None and not is_document_id(document_id):
        _fail(f"no document {document_id[:40]!r}")
    records = _run(lambda desk: desk.catalog.callback_log(document_id, limit=limit))

    if as_json:
        _print_json({"callbacks": [callback_json(r) for r in records]})
        return
    table = _table(
        "time",
        "document",
        "key",
        "status",
        "outcome",
        "version",
        "http",
        "ms",
        "source",
        wrapping=("key", "source"),
    )
    for record in records:
        table.add_row(*_cells(*_callback_cells(record)))
    _print_table(table, empty="no callbacks")


@main.command()
@click.argument("document_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def recovery(document_id: str | None, as_json: bool) -> None:
    """List the files kept aside from failed saves, of DOCUMENT_ID or of all.

    The Document Server sends status 3 (or 7 for a force save) with a file
    it could not assemble cleanly; docdesk keeps that file here, never as
    the current version. `docdesk recovery-restore ID` makes one a version.
    """
    records = _run(lambda desk: list_recoveries(desk, document_id))

    if as_json:
        _print_json({"recoveries": [recovery_json(r) for r in records]})
        return
    table = _table(
        "id",
        "document",
        "status",
        "key",
        "size",
        "created",
        "restored",
        wrapping=("key",),
    )
    for record in records:
        restored = record.restored_version
        table.add_row(
            *_cells(
                str(record.id),
                record.document_id,
                str(record.status),
                record.key,
                filesize.decimal(record.size),
                _when(record.created),
                f"v{restored}" if restored is not None else "",
            )
        )
    _print_table(table, empty="no kept files")


@main.command("recovery-restore")
@click.argument("recovery_id", type=click.IntRange(min=1))
def recovery_restore(recovery_id: int) -> None:
    """Make kept file RECOVERY_ID the newest version; print document and version.

    Its bytes must pass the check of the document's format: a file that
    fails is refused and stays in the recovery area.
    """
    restored = _run(lambda desk: restore_recovery(desk, recovery_id))

    click.echo(f"{restored.document_id}\t{restored.number}")


@main.command()
def recover() -> None:
    """Bring back the Document Server's forgotten files of docdesk's documents.

    Each becomes the newest version of its document, then the Document
    Server deletes its copy; keys of other integrations are left alone.
    Prints outcome, key, document, version and any trouble, a line per key;
    exits with status 1 if any file failed. `docdesk serve` does this every
    DOCDESK_RECOVERY_INTERVAL seconds.
    """
    done = _run(recover_exclusively)

    if done is None:
        click.echo("docdesk: another instance is recovering right now", err=True)
        sys.exit(1)
    if not done:
        click.echo("no forgotten files", err=True)
    for each in done:
        version = "-" if each.version is None else str(each.version)
        fields = (each.outcome, each.key, each.document_id or "-", version)
        click.echo("\t".join((*fields, each.detail or "")).rstrip("\t"))
    if any(each.detail is not None for each in done):
        sys.exit(1)


@main.command()
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=ORPHAN_MAX_AGE,
    show_default=True,
    metavar="SECONDS",
    help="Leave blobs younger than this: their version may still be recording.",
)
def sweep(older_than: float) -> None:
    """Delete stored blobs that no version or kept file refers to.

    A crash between storing a file and recording its version, or half-way
    through deleting a document, leaves such blobs; nothing refers to them,
    so nothing is lost. Prints how many went. `docdesk serve` does this
    once an hour; a sweep that another instance runs makes this one exit
    with status 1.
    """
    removed = _run(partial(sweep_orphans_exclusively, older_than=older_than))

    if removed is None:
        _fail("another instance is sweeping or recovering right now")
    click.echo(f"{removed} orphaned blob(s) removed")


@main.command()
def migrate() -> None:
    """Bring the database named by DOCDESK_DATABASE_URL up to date.

    ``docdesk serve`` migrates its embedded SQLite database itself, but
    refuses to start on any other database that is behind.
    """
    _configure_logging("warning")
    settings = _settings()

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    _guarded(lambda: _migrate(settings.resolved_database_url))


@main.command("transfer")
@click.option(
    "--to-database",
    required=True,
    metavar="URL",
    help="The database to copy into, e.g. postgresql+psycopg://host/docdesk.",
)
@click.option(
    "--to-storage",
    required=True,
    metavar="URL",
    help="Where the blobs go: s3://bucket/prefix?endpoint=... or file:///path.",
)
@click.option(
    "--dry-run", is_flag=True, help="Say what would be copied, and write nothing."
)
def transfer_install(to_database: str, to_storage: str, dry_run: bool) -> None:
    """Copy this install into another database and blob store.

    Every document, version, key, callback record, capture and kept file
    goes across with its blobs, typically from the embedded SQLite and
    files up to PostgreSQL and S3. The target database is migrated first;
    every blob is read back and checked by sha256, every table by count and
    content. Stop `docdesk serve` first. Safe to run again: what is there is
    skipped, and an interrupted run finishes. A target that holds other data
    under the same ids is refused, with nothing written.
    """
    _configure_logging("warning")
    settings = _settings()

    report = _guarded(lambda: _transfer(settings, to_database, to_storage, dry_run))

    _print_transfer(report)


# What the shell commands run


def _run(work: Callable[[DocDesk], Awaitable[T]]) -> T:
    """Open the library from the settings, do ``work``, close it again."""
    _configure_logging("warning")
    settings = _settings()

    async def opened() -> T:
        desk = await DocDesk.open(settings)
        try:
            return await work(desk)
        finally:
            await desk.close()

    return _guarded(opened)


def _guarded(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work``; a docdesk or file error becomes one line and an exit."""
    try:
        return anyio.run(work)
    except ConfigurationError as exc:
        _fail(exc.message, status=2)
    except DocdeskError as exc:
        _fail(exc.message)
    except OSError as exc:
        _fail(_os_message(exc))


async def _upload_files(desk: DocDesk, files: tuple[Path, ...]) -> int:
    """Upload each file in turn; returns how many were stored."""
    stored = 0
    for path in files:
        try:
            document = await _upload_file(desk, path)
        except DocdeskError as exc:
            click.echo(f"docdesk: {path}: {exc.message}", err=True)
        except OSError as exc:
            click.echo(f"docdesk: {path}: {exc.strerror or exc}", err=True)
        else:
            click.echo(f"{document.id}\t{document.title}\t{document.current_version}")
            stored += 1
    return stored


async def _upload_file(desk: DocDesk, path: Path) -> DocumentRecord:
    async with await anyio.open_file(path, "rb") as file:
        size = os.fstat(file.wrapped.fileno()).st_size
        with _progress() as progress:
            task = progress.add_task(path.name, total=size)
            async with aclosing(_read(file, progress, task)) as chunks:
                return await desk.upload(path.name, chunks)


async def _read(
    file: anyio.AsyncFile[bytes], progress: Progress, task: TaskID
) -> AsyncGenerator[bytes, None]:
    while chunk := await file.read(READ_CHUNK):
        progress.advance(task, len(chunk))
        yield chunk


async def _export(
    desk: DocDesk,
    document_id: str,
    number: int | None,
    output: str | None,
    force: bool,
) -> Path | None:
    """Stream a version to ``output``; returns the file written, if any."""
    document = await desk.document(document_id)
    version = await desk.version(document.id, number)

    if output == "-":
        await _copy(desk, version, sys.stdout.buffer)
        return None

    explicit = version if number is not None else None
    target = _export_path(document, explicit, output)
    if not target.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(target.parent))
    if target.exists() and not force:
        raise _exists(target)
    temporary, fd = _temporary_beside(target)
    try:
        with os.fdopen(fd, "wb") as file:
            await _copy(desk, version, file)
            os.fsync(file.fileno())
        _publish(temporary, target, replace=force)
    finally:
        temporary.unlink(missing_ok=True)
    return target


async def _copy(desk: DocDesk, version: VersionRecord, out: BinaryIO) -> None:
    """Write a version's bytes with a progress bar, checking them on the way."""
    digest, size = hashlib.sha256(), 0
    with _progress() as progress:
        task = progress.add_task(f"version {version.number}", total=version.size)
        async for chunk in desk.read(version):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            progress.advance(task, len(chunk))
    out.flush()

    # A damaged blob must not pass for the document.
    if size != version.size or digest.hexdigest() != version.sha256:
        raise StorageError(
            f"version {version.number} of document {version.document_id} does "
            "not match its recorded size and sha256: the stored file is damaged"
        )


def _export_path(
    document: DocumentRecord, version: VersionRecord | None, output: str | None
) -> Path:
    """Where an export goes: ``output``, or a name made from the title.

    An explicit version is named as the HTTP API names its download, so it
    is not mistaken for the current document.
    """
    name = document.title
    if version is not None:
        stem = document.title.rpartition(".")[0] or document.title
        name = f"{stem} v{version.number}.{version.file_type}"
    name = clean_title(name)

    if output is None:
        return Path(name)
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        return Path(output) / name
    return Path(output)


def _temporary_beside(target: Path) -> tuple[Path, int]:
    """A new file in the target's folder, so publishing it is a rename.

    It is created with the usual 0o666 less the umask, as any new file.
    """
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return temporary, os.open(temporary, flags, 0o666)


def _publish(temporary: Path, target: Path, *, replace: bool) -> None:
    """Give the finished file its name, atomically.

    Without ``replace`` a hard link publishes it: that fails if the target
    appeared meanwhile, where a rename would silently overwrite it.
    """
    if replace:
        os.replace(temporary, target)
        return
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise _exists(target) from None
    except OSError:
        # XXX: some file systems (FAT, some network shares) have no hard
        # links; there the exists check and the rename can race.
        if target.exists():
            raise _exists(target) from None
        os.replace(temporary, target)


def _exists(target: Path) -> FileExistsError:
    return FileExistsError(
        errno.EEXIST, "exists; add --force to overwrite", str(target)
    )


async def _migrate(url: str) -> None:
    """Apply pending revisions, saying which, then check none is left."""
    catalog = _catalog(url)
    click.echo(f"database {_shown_url(url)}")
    try:
        pending = await catalog.pending_migrations()
        if pending:
            click.echo(f"pending revisions: {', '.join(pending)}")
            await catalog.migrate()
            click.echo(f"applied {len(pending)} revision(s)")
        left = await catalog.pending_migrations()
    finally:
        await catalog.close()

    if left:
        raise ConfigurationError(f"still behind after migrating: {', '.join(left)}")
    click.echo("up to date")


async def _transfer(
    settings: Settings, to_database: str, to_storage: str, dry_run: bool
) -> TransferReport:
    """Run the transfer with a bar in bytes of blobs settled and each step."""
    from docdesk.transfer import transfer

    source = settings.resolved_database_url, settings.resolved_storage_url
    target = to_database, to_storage
    for side, (database, storage) in (("from", source), ("to", target)):
        shown = f"{_shown_url(database)} and {_shown_store(storage)}"
        click.echo(f"{side:<4} {shown}", err=True)
    with _progress() as progress:
        task = progress.add_task("blobs", total=None)
        return await transfer(
            from_database=source[0],
            from_storage=source[1],
            to_database=to_database,
            to_storage=to_storage,
            dry_run=dry_run,
            on_blob=lambda blob: progress.advance(task, blob.size),
            on_step=lambda step: progress.console.print(Text(step)),
        )


def _print_transfer(report: TransferReport) -> None:
    """Rows per table, then blobs and bytes, then what was checked."""
    copied = "would copy" if report.dry_run else "copied"
    table = _table("table", "in source", "already there", copied, wrapping=())
    for count in report.tables:
        numbers = (count.source, count.present, count.copied)
        table.add_row(*_cells(count.name, *map(str, numbers)))
    _print_table(table, empty="no tables")

    if report.migrated:
        done = "would migrate" if report.dry_run else "migrated"
        click.echo(f"{done} the target database: {', '.join(report.migrated)}")
    click.echo(
        f"blobs: {report.blobs} ({filesize.decimal(report.bytes_total)}), "
        f"{copied} {report.blobs_copied} "
        f"({filesize.decimal(report.bytes_copied)}), "
        f"already there {report.blobs_present}"
    )
    if report.dry_run:
        click.echo("dry run: nothing was written")
    elif report.copied_nothing:
        click.echo("nothing new to copy: the target holds all of it, checked")
    else:
        click.echo("verified: every blob by sha256, every table by count and content")


def _shown_store(url: str) -> str:
    """A storage URL without any user part or query, for the terminal."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return url2pathname(parts.path)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


def _catalog(url: str) -> Catalog:
    from sqlalchemy.exc import ArgumentError

    # The message would quote the URL, and with it any password.
    try:
        return Catalog.from_url(url)
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(
            f"DOCDESK_DATABASE_URL names no database docdesk can open "
            f"({type(exc).__name__})"
        ) from None


def _shown_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# Output


def _progress() -> Progress:
    """A bar in bytes on stderr that never captures stdout."""
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        redirect_stdout=False,
        redirect_stderr=False,
    )


def _table(*headers: str, wrapping: tuple[str, ...]) -> Table:
    """Only the ``wrapping`` columns wrap: ids, dates and sizes stay whole."""
    table = Table(box=box.SIMPLE, show_edge=False)
    for header in headers:
        if header in wrapping:
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, no_wrap=True)
    return table


def _cells(*values: str) -> list[Text]:
    """Table cells as plain text: a title like "[red]x.docx" is no markup."""
    return [Text(value) for value in values]


def _print_table(table: Table, *, empty: str) -> None:
    if not table.row_count:
        click.echo(empty, err=True)
        return
    console = Console()
    if not console.is_terminal:
        # Programs and grep read piped output: keep each row whole, on one line.
        console = Console(width=10_000)
    console.print(table)


def _print_checks(checks: list[Check]) -> None:
    """``✓ name  detail`` per check, and the fix beneath; words when piped."""
    fancy = sys.stdout.isatty() and "utf" in (sys.stdout.encoding or "").lower()
    marks = ("✓", "!", "✗") if fancy else ("ok  ", "WARN", "FAIL")
    width = max(len(check.name) for check in checks)
    for check in checks:
        mark = marks[2] if not check.ok else marks[1] if check.fix else marks[0]
        click.echo(f"{mark} {check.name:<{width}}  {check.detail}")
        if check.fix:
            click.echo(f"{' ' * (len(mark) + width + 3)}fix: {check.fix}")


def _print_json(value: dict[str, Any]) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _callback_cells(record: CallbackRecord) -> tuple[str, ...]:
    """A callback log row; seconds count here, callbacks come in bursts."""
    return (
        record.received.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        record.document_id or "",
        record.key or "",
        "" if record.status is None else str(record.status),
        record.outcome,
        "" if record.version is None else str(record.version),
        str(record.http_status),
        f"{record.duration_ms:.1f}",
        record.source or "",
    )


def _source(version: VersionRecord) -> str:
    if version.restored_from is not None:
        return f"{version.source} of v{version.restored_from}"
    return str(version.source)


def _os_message(exc: OSError) -> str:
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _fail(message: str, *, status: int = 1) -> NoReturn:
    click.echo(f"docdesk: {message}", err=True)
    sys.exit(status)


def _new_password() -> str:
    """A password from a prompt, typed twice, or from stdin's first line."""
    if sys.stdin.isatty():
        password: str = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True
        )
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_CHARS:
        _fail(f"a password needs at least {MIN_PASSWORD_CHARS} characters", status=2)
    return password


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine; no name is resolved."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _run_server(app: ASGIApp, host: str, port: int) -> None:
    """Serve until interrupted; docdesk logs its own requests and addresses."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, **uvicorn_options())


def uvicorn_options() -> dict[str, Any]:
    """The options ``docdesk serve`` gives ``uvicorn.run``, host and port aside.

    The benchmarks serve their baselines with them too, so that the two
    sides differ only in the app.
    """
    return {
        # The request log leaves out query strings, which hold signatures.
        "access_log": False,
        "log_config": None,
        "server_header": False,
        # The guard reads X-Forwarded-For itself, from trusted proxies only.
        "proxy_headers": False,
        # Idle connections outlive the clients' own pools (httpx keeps them
        # 5 s, uvicorn's default too): a server closing one just as a
        # client reuses it loses that request, and the DS never resends a
        # status 1, 4, 6 or 7. nginx's default, for the same reason.
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }


def _settings(**kwargs: object) -> Settings:
    try:
        return Settings.from_env(**kwargs)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        click.echo(f"docdesk: {exc.message}", err=True)
        sys.exit(2)


def _configure_logging(level: str, fmt: str = "text") -> None:
    try:
        logs.configure(level, fmt)
    except ValueError as exc:
        _fail(f"--log-level: {exc}", status=2)
