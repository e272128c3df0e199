"""Capture: the document as it stands now, while people still edit it.

docdesk asks the Document Server for a force save carrying a userdata of
its own, and waits for the status-6 callback that brings it back. The wait
watches the catalog, so it ends on whichever docdesk instance the callback
reaches. The DS never retries a status 6, but a force save whose callback
failed stays un-ended, and the next one re-sends its result with the first
userdata: so while none comes, the capture asks again.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from docdesk.callback import CallbackPayload, CallbackStatus
from docdesk.catalog import CaptureRecord, VersionRecord
from docdesk.commands import CommandError
from docdesk.errors import CaptureTimeout, ConfigurationError, DocumentServerError

if TYPE_CHECKING:
    from docdesk.desk import DocDesk
    from docdesk.saving import CallbackReply

__all__ = ["CAPTURE", "Capture", "capture", "settle_capture"]

logger = logging.getLogger(__name__)

# The userdata of a capture's force save: this, then the capture's token.
CAPTURE = "docdesk-capture:"
# Seconds without a callback before the force save is asked for again: a
# lost callback is re-sent then, instead of the capture timing out.
ASK_AGAIN_AFTER = 5.0


@dataclass(frozen=True)
class Capture:
    """What a capture produced: ``saved``, ``unchanged`` or ``not_editing``."""

    version: VersionRecord
    outcome: str


async def capture(
    desk: DocDesk, document_id: str, *, wait: float = 30.0, poll: float = 0.1
) -> Capture:
    """Force-save the document now and return the version it produced.

    Asks the DS through the command service with a userdata of our own,
    then watches the catalog for the status-6 callback carrying it, so
    the wait ends whichever docdesk instance the callback reaches. When
    nobody edits, or nothing changed, the current version is the answer.
    """
    document = await desk.document(document_id)
    if desk.commands is None:
        raise ConfigurationError("capture needs the Document Server's command service")
    token = secrets.token_urlsafe(24)
    await desk.catalog.add_capture(token, document.id, document.key)

    error = await desk.commands.forcesave(document.key, userdata=CAPTURE + token)
    # XXX: the DS also answers 4 while another force save's callback (a Save
    # press, another capture) is still on its way; its edits then land just
    # after this "unchanged" answer. The command's answer can't tell the two
    # cases apart, and waiting on every 4 would slow every idle capture.
    if error in (CommandError.NOT_MODIFIED, CommandError.DOCUMENT_ID):
        outcome = "unchanged" if error is CommandError.NOT_MODIFIED else "not_editing"
        await desk.catalog.resolve_capture(token, outcome)
        return Capture(await desk.version(document.id), outcome)
    if error is not CommandError.NO_ERROR:
        await desk.catalog.resolve_capture(token, "failed")
        raise DocumentServerError(
            f"the Document Server refused the force save: error {int(error)}"
        )

    record = await _wait_for_capture(desk, document.key, token, wait, poll)
    if record.outcome == "failed":
        raise DocumentServerError("the Document Server could not assemble the file")
    version = await desk.version(document.id, record.version)
    return Capture(version, "saved" if record.version else "unchanged")


async def _wait_for_capture(
    desk: DocDesk, key: str, token: str, wait: float, poll: float
) -> CaptureRecord:
    with anyio.move_on_after(wait):
        asked = anyio.current_time()
        while True:
            record = await desk.catalog.capture(token)
            if record is not None and record.resolved is not None:
                return record
            if anyio.current_time() - asked >= ASK_AGAIN_AFTER:
                await _ask_again(desk, key, token)
                asked = anyio.current_time()
            await anyio.sleep(poll)
    if not await desk.catalog.resolve_capture(token, "timeout"):
        # The callback won the race against the deadline.
        found = await desk.catalog.capture(token)
        if found is not None:
            return found
    raise CaptureTimeout(
        f"no force-save callback came back within {wait:g} s; nothing was saved "
        "for this capture (check that the Document Server reaches the callback URL)"
    )


async def _ask_again(desk: DocDesk, key: str, token: str) -> None:
    """Ask for the force save again, with the same userdata.

    If the callback failed, the DS re-sends the cached result, which carries
    the first userdata whatever this one says. Error 4 means the first is
    still on its way or was taken: either way, the wait goes on.
    """
    if desk.commands is None:
        return
    try:
        error = await desk.commands.forcesave(key, userdata=CAPTURE + token)
    except DocumentServerError as exc:
        # The callback may still come: only the deadline ends the wait.
        logger.warning("capture could not ask again key=%s: %s", key, exc)
        return
    logger.info("capture asked again key=%s error=%d", key, int(error))


async def settle_capture(
    desk: DocDesk, payload: CallbackPayload | None, reply: CallbackReply
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
        await desk.catalog.resolve_capture(token, "failed")
    else:
        await desk.catalog.resolve_capture(token, "saved", reply.version)


# History inside the editor
