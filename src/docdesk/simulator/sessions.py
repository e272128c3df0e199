"""Editing sessions as the Document Server runs them.

A session is keyed by ``document.key``. Editors join with a signed config;
the first join downloads ``document.url``. Joins and leaves post status 1,
the last editor leaving posts status 4 when nothing changed, or status 2
after the save delay when something did, unless someone rejoins first. Force
saves post status 6. A final save that cannot be delivered becomes a
forgotten file, which the next session under the same key opens instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from docdesk import tokens
from docdesk.callback import CallbackStatus, ForceSaveType, UserAction
from docdesk.commands import CommandError
from docdesk.editor import is_document_key
from docdesk.errors import DocdeskError, TokenError
from docdesk.formats import format_for
from docdesk.simulator.cache import Cache
from docdesk.simulator.callbacks import CallbackSender
from docdesk.simulator.config import SimulatorSettings
from docdesk.simulator.edits import Change, apply_changes, changes_archive, history

__all__ = [
    "ConfigRejected",
    "DocumentSession",
    "Editor",
    "Faults",
    "Forgotten",
    "Simulator",
]

logger = logging.getLogger(__name__)

# The codes the DS closes the editor's connection with.
ACCESS_DENIED = 4004
TOKEN_ERROR = 4006
VERSION_CHANGED = 4008
# Warnings and errors the editor shows.
FILE_NOT_ASSEMBLED = -201
DOWNLOAD_FAILED = -4
# expire.files: an idle cached copy is served for a day after its last use.
CLOSED_COPY_LIFETIME = 86_400.0


class ConfigRejected(Exception):
    """The DS would refuse to open the editor with this config."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Editor:
    """One open editor: a browser tab, or a session of the control API."""

    id: str
    key: str
    user_id: str
    user_name: str
    edits: bool
    callback_url: str | None
    forcesave: bool
    open: bool = True
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DocumentSession:
    """The DS's state for one key while anyone has it open."""

    key: str
    file_type: str
    title: str
    base: bytes
    base_url: str
    from_forgotten: bool = False
    editors: dict[str, Editor] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    callback_urls: dict[str, str] = field(default_factory=dict)
    # How many changes the last acknowledged force save held.
    forcesaved: int | None = None
    forcesaved_at: datetime | None = None
    # The latest force save, kept until a new change: its result is what a
    # later force save re-sends while no callback has taken it.
    latest_forcesave: ForceSave | None = None
    saving: bool = False
    # What a legacy `saved` command said during the final save, if one came.
    saved_answer: str | None = None
    # Every /cache/files path handed out for this session.
    cached: list[str] = field(default_factory=list)
    save_task: asyncio.Task[None] | None = None
    timer_task: asyncio.Task[None] | None = None

    @property
    def editor_ids(self) -> list[str]:
        """``users``: editors now connected, by user id, without repeats."""
        ids = (e.user_id for e in self.editors.values() if e.edits and e.open)
        return list(dict.fromkeys(ids))

    @property
    def last_author(self) -> str | None:
        return self.changes[-1].user_id if self.changes else None

    @property
    def modified_since_forcesave(self) -> bool:
        return len(self.changes) != (self.forcesaved or 0)

    def callback_for(self, user_id: str | None) -> str | None:
        """The user's own callback URL, else the last one stored."""
        if user_id in self.callback_urls:
            return self.callback_urls[user_id]
        return next(reversed(self.callback_urls.values()), None)


@dataclass
class ForceSave:
    """One force save's result, as the DS caches it (``convertInfo``).

    ``answered`` turns true once its callback was tried, whatever the
    answer; until then the force save is still running.
    """

    count: int
    at: datetime
    kind: ForceSaveType
    author: str | None
    userdata: str | None
    assembled: Assembled
    answered: bool = False

    @property
    def status(self) -> CallbackStatus:
        if self.assembled.ok:
            return CallbackStatus.MUST_FORCE_SAVE
        return CallbackStatus.CORRUPTED_FORCE_SAVE


@dataclass(frozen=True)
class Forgotten:
    """A final save no callback would take, kept for the integrator."""

    key: str
    data: bytes
    file_type: str
    path: str


@dataclass
class Faults:
    """Misbehaviour on demand, each used up once it fires."""

    # "fail", "truncate", "stall" (for longer than any deadline) or "slow"
    # (seconds before the body): the next download of a cached file.
    download: list[str] = field(default_factory=list)
    assembly: list[str] = field(default_factory=list)
    command: list[int] = field(default_factory=list)
    # "drop": the next callback attempt never reaches the integrator, as on
    # a network error; "reject": it is answered 502 without reaching it;
    # "lose": it reaches the integrator, and the answer is lost on its way
    # back, as when a connection breaks; "timeout": the DS stops waiting for
    # the answer after a moment, while the integrator goes on. A status 2 or
    # 3 is then retried, as ever.
    callback: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClosedCopy:
    data: bytes
    at: float
    callback_url: str | None = None


class Simulator:
    """The simulated Document Server: its sessions, cache and callbacks."""

    def __init__(
        self, settings: SimulatorSettings, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings
        self.client = client or httpx.AsyncClient(
            timeout=settings.callback_timeout, trust_env=False
        )
        self.cache = Cache(settings.secret, lifetime=settings.link_lifetime)
        self.faults = Faults()
        self.sender = CallbackSender(settings, self.client, self.faults.callback)
        self.sessions: dict[str, DocumentSession] = {}
        self.editors: dict[str, Editor] = {}
        self.forgotten: dict[str, Forgotten] = {}
        self._saved_keys: dict[str, float] = {}
        self._closed: dict[str, ClosedCopy] = {}
        self._opening: dict[str, asyncio.Future[DocumentSession]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    # Joining and leaving

    async def connect(self, config: Mapping[str, Any], base_url: str) -> Editor:
        """Open an editor with a signed config, as the DS's ``auth`` does."""
        claims = self._check_config(config)
        document = claims["document"]
        editor_config = claims.get("editorConfig", {})
        key = document["key"]

        saved = self._saved_keys.get(key)
        if (
            saved is not None
            and time.time() - saved < self.settings.update_version_window
        ):
            raise ConfigRejected(VERSION_CHANGED, "the document version has changed")

        session = self.sessions.get(key) or await self._open_once(document, base_url)
        user = editor_config.get("user") or {}
        editor = Editor(
            id=secrets.token_hex(8),
            key=key,
            user_id=str(user.get("id") or "uid-" + secrets.token_hex(4)),
            user_name=str(user.get("name") or "Anonymous"),
            edits=editor_config.get("mode", "edit") != "view"
            and bool(document.get("permissions", {}).get("edit", True)),
            callback_url=editor_config.get("callbackUrl"),
            forcesave=bool(editor_config.get("customization", {}).get("forcesave")),
        )
        if session.from_forgotten:
            editor.messages.append({"warning": FILE_NOT_ASSEMBLED})
        self._join(session, editor)
        return editor

    def _check_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Verify the config's token and return what the DS would believe.

        That is the page's config with the token's values over it: what the
        token holds wins, what it leaves out comes from the page.
        """
        token = config.get("token")
        if not isinstance(token, str):
            raise ConfigRejected(TOKEN_ERROR, "the config has no token")
        try:
            claims = tokens.verify(token, self.settings.secret)
        except TokenError as exc:
            raise ConfigRejected(TOKEN_ERROR, exc.message) from None
        if any(name in claims for name in ("url", "key", "payload")):
            raise ConfigRejected(ACCESS_DENIED, "the token is not an editor config")

        document = claims.get("document")
        editor_config = claims.get("editorConfig", {})
        if not isinstance(document, dict) or not isinstance(editor_config, dict):
            raise ConfigRejected(TOKEN_ERROR, "the token lacks the document")
        required = [("document", "key"), ("document", "url")]
        if "permissions" in config.get("document", {}):
            required.append(("document", "permissions"))
        if "callbackUrl" in config.get("editorConfig", {}):
            required.append(("editorConfig", "callbackUrl"))
        if config.get("editorConfig", {}).get("mode", "edit") != "view":
            required.append(("editorConfig", "mode"))
        for part, name in required:
            if name not in claims.get(part, {}):
                raise ConfigRejected(TOKEN_ERROR, f"the token lacks {part}.{name}")
        if document.get("permissions") != config.get("document", {}).get(
            "permissions", document.get("permissions")
        ):
            raise ConfigRejected(
                ACCESS_DENIED, "the permissions differ from the token's"
            )

        if not isinstance(document["key"], str) or not is_document_key(document["key"]):
            raise ConfigRejected(TOKEN_ERROR, "document.key is not a valid key")
        return _overlaid(config, claims)

    async def _open_once(
        self, document: Mapping[str, Any], base_url: str
    ) -> DocumentSession:
        """The key's new session, opened once for every editor joining now.

        Editors who open a key together while its file downloads join one
        session, as at the DS; a failed open fails each of them.
        """
        key = document["key"]
        opening = self._opening.get(key)
        if opening is None:
            opening = asyncio.ensure_future(self._open_session(document, base_url))
            self._opening[key] = opening
            opening.add_done_callback(lambda _: self._opening.pop(key, None))
        # One editor giving up does not stop the open for the others.
        return await asyncio.shield(opening)

    async def _open_session(
        self, document: Mapping[str, Any], base_url: str
    ) -> DocumentSession:
        key = document["key"]
        file_type = str(document.get("fileType") or "").lower()
        try:
            format_for(file_type)
        except DocdeskError:
            raise ConfigRejected(TOKEN_ERROR, "unknown document.fileType") from None

        from_forgotten = key in self.forgotten
        if from_forgotten:
            base = self.forgotten[key].data
        elif (
            copy := self._closed.get(key)
        ) and time.time() - copy.at < CLOSED_COPY_LIFETIME:
            base = copy.data
        else:
            base = await self.download(str(document["url"]))
        session = DocumentSession(
            key=key,
            file_type=file_type,
            title=str(document.get("title") or f"document.{file_type}"),
            base=base,
            base_url=base_url,
            from_forgotten=from_forgotten,
        )
        self.sessions[key] = session
        return session

    async def download(self, url: str) -> bytes:
        """GET ``document.url`` with the DS's header token; three tries."""
        header = f"Bearer {tokens.sign_wrapped({'url': url}, self.settings.secret)}"
        for attempt in range(self.settings.download_attempts):
            if attempt:
                await asyncio.sleep(self.settings.download_attempt_delay)
            try:
                data = await self._fetch(url, header)
            except httpx.TimeoutException:
                break
            except (httpx.HTTPError, ValueError) as exc:
                logger.info("download failed attempt=%d reason=%s", attempt + 1, exc)
                continue
            if data is not None:
                return data
        raise ConfigRejected(DOWNLOAD_FAILED, "Download failed")

    async def _fetch(self, url: str, header: str) -> bytes | None:
        limit = self.settings.max_download_bytes
        async with self.client.stream(
            "GET",
            url,
            headers={self.settings.jwt_header: header},
            timeout=self.settings.download_timeout,
        ) as response:
            if response.status_code not in (200, 206):
                return None
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise ValueError("the file is over the download limit")
            return bytes(data)

    def _join(self, session: DocumentSession, editor: Editor) -> None:
        # Only an editor coming back takes the session over again.
        if editor.edits and session.save_task is not None:
            session.save_task.cancel()
            session.save_task = None
        session.editors[editor.id] = editor
        self.editors[editor.id] = editor
        if not editor.edits:
            return

        if editor.callback_url:
            session.callback_urls[editor.user_id] = editor.callback_url
        fields = {
            "key": session.key,
            "status": CallbackStatus.EDITING,
            "users": session.editor_ids,
            "actions": [{"type": UserAction.IN, "userid": editor.user_id}],
        }
        # Fire and forget: the editor opens without waiting for the answer.
        self._spawn(self._notify(session, editor, editor.callback_url, fields))

    async def leave(self, editor_id: str) -> None:
        """Close an editor; the last one out ends the session."""
        editor = self._editor(editor_id)
        editor.open = False
        session = self.sessions.get(editor.key)
        if session is None or session.editors.pop(editor.id, None) is None:
            return
        if not editor.edits:
            return

        url = session.callback_for(editor.user_id)
        leaving = [{"type": UserAction.OUT, "userid": editor.user_id}]
        if session.editor_ids:
            fields = {
                "key": session.key,
                "status": CallbackStatus.EDITING,
                "users": session.editor_ids,
                "actions": leaving,
            }
            await self._notify(session, editor, url, fields)
        elif session.changes or session.from_forgotten:
            session.save_task = self._spawn(self._save_later(session, editor))
        else:
            await self._close_unchanged(session, editor, url, leaving)

    async def _close_unchanged(
        self,
        session: DocumentSession,
        editor: Editor,
        url: str | None,
        leaving: list[dict[str, Any]],
    ) -> None:
        self._end(session)
        self._closed[session.key] = ClosedCopy(session.base, time.time(), url)
        fields = {
            "key": session.key,
            "status": CallbackStatus.CLOSED,
            "actions": leaving,
        }
        await self._notify(session, editor, url, fields)

    # Editing

    def edit(self, editor_id: str, text: str) -> None:
        editor = self._editor(editor_id)
        session = self._session_of(editor)
        if not editor.edits:
            raise ConfigRejected(ACCESS_DENIED, "this editor may only view")
        session.changes.append(
            Change(
                user_id=editor.user_id,
                user_name=editor.user_name,
                text=text,
                created=datetime.now(UTC),
            )
        )
        if self.settings.forcesave_interval is not None and session.timer_task is None:
            session.timer_task = self._spawn(self._forcesave_timer(session))

    def text(self, editor_id: str) -> bytes:
        """The document as this editor sees it now: the base plus every change."""
        session = self._session_of(self._editor(editor_id))
        return apply_changes(session.file_type, session.base, session.changes)

    # Saving

    async def press_save(self, editor_id: str) -> bool:
        """The Save button; a force save only with ``customization.forcesave``."""
        editor = self._editor(editor_id)
        session = self._session_of(editor)
        if not (editor.forcesave and editor.edits):
            return False
        error = await self.forcesave(session.key, kind=ForceSaveType.BUTTON, by=editor)
        return error is CommandError.NO_ERROR

    async def submit_form(self, editor_id: str, fields: Mapping[str, Any]) -> bool:
        """ "Complete & Submit": a force save of type 3 with the form's data."""
        editor = self._editor(editor_id)
        session = self._session_of(editor)
        error = await self.forcesave(
            session.key, kind=ForceSaveType.FORM, by=editor, form=dict(fields)
        )
        return error is CommandError.NO_ERROR

    async def forcesave(
        self,
        key: str,
        *,
        kind: ForceSaveType = ForceSaveType.COMMAND,
        by: Editor | None = None,
        userdata: str | None = None,
        form: dict[str, Any] | None = None,
    ) -> CommandError:
        """Assemble the file now and post status 6 (or 7), keeping the key.

        A force save whose callback failed is not ended: until the next
        change, another force save re-sends its cached result, file,
        ``userdata`` and ``lastsave`` as first sent, with fresh links (the
        DS's ``applyForceSaveCache``). One still running is not doubled.
        """
        session = self.sessions.get(key)
        if session is None:
            return CommandError.DOCUMENT_ID
        if session.saving:
            return CommandError.UNKNOWN
        if not session.modified_since_forcesave and kind is not ForceSaveType.FORM:
            return CommandError.NOT_MODIFIED

        cached = self._cached_forcesave(session, kind)
        if cached is not None and not cached.answered:
            # Still running: the DS starts no second one and says 4.
            return CommandError.NOT_MODIFIED
        result = cached or self._start_forcesave(session, kind, userdata)

        clicked = kind in (ForceSaveType.BUTTON, ForceSaveType.FORM)
        # The clicker's callback URL for a button or form, else the last author's.
        url = session.callback_for(by.user_id if clicked and by else result.author)

        def fields() -> dict[str, Any]:
            body = self._save_fields(
                session, result.status, result.assembled, result.author, result.at
            )
            if clicked and by:
                body["actions"] = [
                    {"type": UserAction.FORCE_SAVE, "userid": by.user_id}
                ]
            if result.userdata is not None:
                body["userdata"] = result.userdata
            body["forcesavetype"] = kind
            if cached is not None:
                # The DS re-sends through commandSfcCallback(cmd, true, false),
                # whose last argument lands in `encrypted`.
                body["encrypted"] = False
            if form is not None and result.assembled.ok:
                body["formsdataurl"] = self._link(
                    session, "formsdata.json", _json(form)
                )
            return body

        self._spawn(self._deliver_forcesave(session, url, fields, result))
        return CommandError.NO_ERROR

    def _cached_forcesave(
        self, session: DocumentSession, kind: ForceSaveType
    ) -> ForceSave | None:
        """The force save a new one would repeat, if any.

        That is the latest one, when no change came after it and it left a
        file (a failed assembly leaves none, so the DS assembles again).
        """
        # XXX: a form submit is always assembled afresh; the DS would re-send
        # a cached submit too, and answer "in progress" while one runs.
        if kind is ForceSaveType.FORM:
            return None
        latest = session.latest_forcesave
        if latest is None or latest.count != len(session.changes):
            return None
        if latest.kind is ForceSaveType.FORM:
            return None
        if latest.answered and latest.assembled.data is None:
            return None
        return latest

    def _start_forcesave(
        self, session: DocumentSession, kind: ForceSaveType, userdata: str | None
    ) -> ForceSave:
        result = ForceSave(
            count=len(session.changes),
            at=datetime.now(UTC),
            kind=kind,
            author=session.last_author,
            userdata=userdata,
            assembled=self._assemble(session),
        )
        session.latest_forcesave = result
        return result

    async def _deliver_forcesave(
        self,
        session: DocumentSession,
        url: str | None,
        fields: Callable[[], dict[str, Any]],
        result: ForceSave,
    ) -> None:
        delivered = url is not None and await self.sender.send(url, fields)
        result.answered = True
        if delivered and result.assembled.ok:
            session.forcesaved, session.forcesaved_at = result.count, result.at

    async def _forcesave_timer(self, session: DocumentSession) -> None:
        interval = self.settings.forcesave_interval or 0.0
        try:
            while self.sessions.get(session.key) is session:
                await asyncio.sleep(interval)
                if session.modified_since_forcesave and not session.saving:
                    await self.forcesave(session.key, kind=ForceSaveType.TIMER)
        finally:
            session.timer_task = None

    async def _save_later(self, session: DocumentSession, leaver: Editor) -> None:
        """The final save, ``save_delay`` after the last editor left."""
        await asyncio.sleep(self.settings.save_delay)
        session.save_task = None
        if session.editor_ids:
            return
        session.saving = True
        author = session.last_author or leaver.user_id
        assembled = self._assemble(session)
        status = CallbackStatus.MUST_SAVE if assembled.ok else CallbackStatus.CORRUPTED
        notmodified = session.forcesaved is not None and not (
            session.modified_since_forcesave
        )
        lastsave = session.forcesaved_at if notmodified else None
        if lastsave is None:
            lastsave = (
                session.changes[-1].created if session.changes else datetime.now(UTC)
            )

        def fields() -> dict[str, Any]:
            body = self._save_fields(session, status, assembled, author, lastsave)
            body["actions"] = [{"type": UserAction.OUT, "userid": leaver.user_id}]
            body["notmodified"] = notmodified
            return body

        url = session.callback_for(author)
        # An editor back before the file is assembled keeps the session going.
        if session.editor_ids:
            session.saving = False
            return
        delivered = url is not None and await self.sender.send(url, fields, retry=True)
        if session.saved_answer not in (None, "1"):
            delivered = False
        if session.editor_ids:
            session.saving = False
            return
        self._end(session)
        if delivered:
            self._saved_keys[session.key] = time.time()
            self.forgotten.pop(session.key, None)
            return
        # A save nobody took wipes the session's cache; the file lives on
        # as the forgotten one.
        for path in session.cached:
            self.cache.remove(path)
        if assembled.data is not None:
            path = self.cache.put(
                session.key, f"output.{session.file_type}", assembled.data
            )
            self.forgotten[session.key] = Forgotten(
                session.key, assembled.data, session.file_type, path
            )
            logger.warning("forgotten file kept key=%s", session.key)

    def _save_fields(
        self,
        session: DocumentSession,
        status: CallbackStatus,
        assembled: Assembled,
        author: str | None,
        lastsave: datetime,
    ) -> dict[str, Any]:
        """The fields every save callback shares, with fresh links."""
        body: dict[str, Any] = {"key": session.key, "status": status}
        if assembled.data is not None:
            body["url"] = self._link(
                session, f"output.{session.file_type}", assembled.data
            )
            if not session.from_forgotten:
                archive = changes_archive(
                    session.changes,
                    server_version=self.settings.server_version,
                    base_sha256=hashlib.sha256(session.base).hexdigest(),
                )
                body["changesurl"] = self._link(session, "changes.zip", archive)
            body["history"] = (
                {}
                if session.from_forgotten
                else history(
                    session.changes,
                    server_version=self.settings.server_version,
                    base_sha256=hashlib.sha256(session.base).hexdigest(),
                )
            )
        body["users"] = [author] if author else session.editor_ids
        body["lastsave"] = _iso(lastsave)
        if assembled.data is not None:
            body["filetype"] = session.file_type
        return body

    def _assemble(self, session: DocumentSession) -> Assembled:
        fault = self.faults.assembly.pop(0) if self.faults.assembly else None
        if fault == "fail":
            return Assembled(ok=False, data=None)
        data = apply_changes(session.file_type, session.base, session.changes)
        return Assembled(ok=fault != "corrupt", data=data)

    def _link(self, session: DocumentSession, name: str, data: bytes) -> str:
        path = self.cache.put(session.key, name, data)
        session.cached.append(path)
        return self.cache.link(session.base_url, path)

    # Commands

    async def info(
        self, key: str, *, userdata: str | None = None, callback: str | None = None
    ) -> tuple[CommandError, list[str]]:
        """Post status 1 (or 4 when nobody edits) and wait for the answer.

        A key closed with no changes is still known while its copy is cached.
        """
        session = self.sessions.get(key)
        closed = self._closed.get(key)
        if session is None and closed is None:
            return CommandError.DOCUMENT_ID, []
        if session is not None:
            url = callback or session.callback_for(None)
            users, changed = session.editor_ids, bool(session.changes)
        else:
            url = callback or (closed.callback_url if closed else None)
            users, changed = [], False
        if url is None:
            return CommandError.PARSE, []
        status = CallbackStatus.EDITING if users or changed else CallbackStatus.CLOSED
        fields: dict[str, Any] = {"key": key, "status": status}
        if status is CallbackStatus.EDITING:
            fields["users"] = users
        if userdata is not None:
            fields["userdata"] = userdata
        await self.sender.send(url, lambda: dict(fields))
        return CommandError.NO_ERROR, users

    def saved(self, key: str, status: str) -> CommandError:
        """The legacy ``saved`` command, sent while answering a status 2.

        Anything but ``"1"`` makes the DS take that save as failed.
        """
        session = self.sessions.get(key)
        if session is None or not session.saving:
            return CommandError.DOCUMENT_ID
        session.saved_answer = status
        return CommandError.NO_ERROR

    async def drop(self, key: str, users: list[str] | None) -> None:
        session = self.sessions.get(key)
        if session is None:
            return
        for editor in list(session.editors.values()):
            if users is None or editor.user_id in users:
                editor.messages.append({"error": "dropped"})
                await self.leave(editor.id)

    def meta(self, key: str, meta: Mapping[str, Any]) -> CommandError:
        session = self.sessions.get(key)
        if session is None:
            return CommandError.DOCUMENT_ID
        if isinstance(meta.get("title"), str):
            session.title = meta["title"]
        for editor in session.editors.values():
            editor.messages.append({"event": "onMetaChange", "data": dict(meta)})
        return CommandError.NO_ERROR

    def forgotten_link(self, key: str, base_url: str) -> str | None:
        forgotten = self.forgotten.get(key)
        if forgotten is None:
            return None
        return self.cache.link(base_url, forgotten.path)

    # Helpers

    def session_of(self, editor_id: str) -> DocumentSession | None:
        return self.sessions.get(self._editor(editor_id).key)

    def _editor(self, editor_id: str) -> Editor:
        try:
            return self.editors[editor_id]
        except KeyError:
            raise KeyError(f"no editor {editor_id}") from None

    def _session_of(self, editor: Editor) -> DocumentSession:
        session = self.sessions.get(editor.key)
        if session is None or not editor.open:
            raise ConfigRejected(ACCESS_DENIED, "this editor is closed")
        return session

    def _end(self, session: DocumentSession) -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        for editor in session.editors.values():
            editor.open = False
        if session.timer_task is not None:
            session.timer_task.cancel()

    async def _notify(
        self,
        session: DocumentSession,
        editor: Editor,
        url: str | None,
        fields: dict[str, Any],
    ) -> None:
        """Post status 1 or 4; a refusal only warns the editors."""
        if url is None:
            return
        if not await self.sender.send(url, lambda: dict(fields)):
            for each in (editor, *session.editors.values()):
                each.messages.append({"warning": "Error on save server subscription!"})

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _overlaid(page: Mapping[str, Any], claims: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**page, **claims}
    for part in ("document", "editorConfig"):
        merged[part] = {**page.get(part, {}), **claims.get(part, {})}
    return merged


@dataclass(frozen=True)
class Assembled:
    """The result of the converter: ``ok`` false means status 3 or 7."""

    ok: bool
    data: bytes | None


def _iso(moment: datetime) -> str:
    """``Date.toISOString()``: milliseconds and a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
