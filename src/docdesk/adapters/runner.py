"""One DocDesk per process, on an event loop of its own, for any caller.

DocDesk is async and holds things bound to the loop that opened it: the
catalog's connection pool, the HTTP clients, the per-document locks. A WSGI
application has no loop; Django's async views under WSGI get a new one for
every request. So the desk lives on its own loop in a daemon thread, opened
on first use, and every caller hands it work there: threads block on the
answer, coroutines on other loops await it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from docdesk.desk import DocDesk
from docdesk.errors import ConfigurationError
from docdesk.recovery import background_recovery
from docdesk.settings import Settings

__all__ = ["DeskRunner"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long closing waits for the desk's loop to finish its work.
CLOSE_TIMEOUT = 30.0


@dataclass(frozen=True)
class _Running:
    """An open desk, the loop it lives on, and how to stop them."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    desk: DocDesk
    settings: Settings
    stop: asyncio.Event
    kept: concurrent.futures.Future[None]


class DeskRunner:
    """A DocDesk opened lazily from ``load_settings`` on a loop of its own.

    ``call`` runs work from a thread with no loop (a Flask view); ``acall``
    awaits it from a coroutine on another loop (a Django async view). Work
    handed over keeps running if the caller goes away, so a save the DS
    sent is never cut short by a dropped connection. The recovery job of
    ``DOCDESK_RECOVERY_INTERVAL`` runs beside the desk, as in the service.
    """

    def __init__(self, load_settings: Callable[[], Settings]) -> None:
        self._load_settings = load_settings
        self._lock = threading.Lock()
        self._running: _Running | None = None

    @property
    def settings(self) -> Settings:
        """The settings the desk was opened with; opens it if need be."""
        return self._started().settings

    async def asettings(self) -> Settings:
        """The settings, from a coroutine: opening the desk blocks a thread."""
        running = await self._astarted()
        return running.settings

    def call(self, work: Callable[[DocDesk], Awaitable[T]]) -> T:
        """Run ``work(desk)`` on the desk's loop and wait for its result."""
        running = self._started()
        return _submit(running, work).result()

    async def acall(self, work: Callable[[DocDesk], Awaitable[T]]) -> T:
        """Await ``work(desk)`` from another loop; cancelling leaves it running."""
        running = await self._astarted()
        future = _submit(running, work)
        return await asyncio.shield(asyncio.wrap_future(future))

    def iterate(self, chunks: AsyncIterator[bytes]) -> Iterator[bytes]:
        """The desk's async stream, read one chunk at a time from a thread.

        Closing the iterator early (a client that hung up) closes the stream.
        """
        loop = self._started().loop
        try:
            while True:
                future = asyncio.run_coroutine_threadsafe(_next(chunks), loop)
                try:
                    yield future.result()
                except StopAsyncIteration:
                    return
        finally:
            _close_stream(chunks, loop)

    async def aiterate(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The desk's async stream, read from a coroutine on another loop."""
        running = await self._astarted()
        try:
            while True:
                future = asyncio.run_coroutine_threadsafe(_next(chunks), running.loop)
                try:
                    yield await asyncio.wrap_future(future)
                except StopAsyncIteration:
                    return
        finally:
            _close_stream(chunks, running.loop)

    def close(self) -> None:
        """Close the desk and stop its loop; the next call opens a new one."""
        with self._lock:
            running, self._running = self._running, None
        if running is None:
            return
        atexit.unregister(self.close)

        try:
            running.loop.call_soon_threadsafe(running.stop.set)
            running.kept.result(timeout=CLOSE_TIMEOUT)
        finally:
            _stop_loop(running.loop, running.thread)
        logger.info("desk closed")

    async def _astarted(self) -> _Running:
        running = self._running
        if running is None:
            # Opening runs migrations and connects: not on the caller's loop.
            running = await asyncio.to_thread(self._started)
        return running

    def _started(self) -> _Running:
        with self._lock:
            if self._running is None:
                self._running = self._start()
                atexit.register(self.close)
            return self._running

    def _start(self) -> _Running:
        settings = self._load_settings()
        if settings.uses_simulator:
            raise ConfigurationError(
                "DOCDESK_DOCUMENT_SERVER_URL is required when docdesk runs inside "
                "another application: set it to your Document Server, or to a "
                "`docdesk simulator` with DOCDESK_JWT_SECRET set to its secret"
            )

        # A daemon thread: an application that never closes the desk must
        # still be able to exit. atexit closes it properly when it can.
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name="docdesk-desk", daemon=True
        )
        thread.start()

        opened: concurrent.futures.Future[DocDesk] = concurrent.futures.Future()
        stop = asyncio.Event()
        kept = asyncio.run_coroutine_threadsafe(_keep(settings, opened, stop), loop)
        try:
            desk = opened.result()
        except BaseException:
            _stop_loop(loop, thread)
            raise
        logger.info("desk opened public_url=%s", settings.public_url)
        return _Running(loop, thread, desk, settings, stop, kept)


async def _keep(
    settings: Settings,
    opened: concurrent.futures.Future[DocDesk],
    stop: asyncio.Event,
) -> None:
    """Open the desk, run its recovery job, and close both when told to.

    One task does it all: the job's task group must end in the task that
    started it.
    """
    try:
        desk = await DocDesk.open(settings)
    except BaseException as exc:
        opened.set_exception(exc)
        raise
    try:
        async with background_recovery(desk, every=settings.recovery_interval):
            opened.set_result(desk)
            await stop.wait()
    finally:
        await desk.close()


def _submit(
    running: _Running, work: Callable[[DocDesk], Awaitable[T]]
) -> concurrent.futures.Future[T]:
    return asyncio.run_coroutine_threadsafe(_run(work, running.desk), running.loop)


async def _run(work: Callable[[DocDesk], Awaitable[T]], desk: DocDesk) -> T:
    return await work(desk)


async def _next(chunks: AsyncIterator[bytes]) -> bytes:
    return await chunks.__anext__()


def _close_stream(
    chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop
) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(close(), loop)


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Finish the streams nobody closed, then stop the loop and its thread.

    All of it runs on the loop's own thread: the caller may have a loop of
    its own running.
    """
    try:
        finishing = loop.shutdown_asyncgens()
        asyncio.run_coroutine_threadsafe(finishing, loop).result(CLOSE_TIMEOUT)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=CLOSE_TIMEOUT)
        if not thread.is_alive():
            loop.close()
