"""Outage switches for the local fakes: for a window, answer an error status or refuse connections.

A fake server keeps an :class:`Outages` schedule and asks it, for every request, whether it is
in an outage (:meth:`Outages.current`). A window lasts ``seconds`` (from ``after`` seconds from
now) or the next ``calls`` requests, and answers ``status`` (with ``Retry-After`` when given), or,
with ``status=REFUSE``, makes the server stop listening: new connections are refused (ECONNREFUSED,
as from a process that is down) and open keep-alive connections are closed. Several windows may be
scheduled back to back (``after``), so one call sets up "down for 3 s, then 500 for 2 s, then 429".

Every method may be called from any thread: the fake's event loop applies the listening state
(:class:`Listener`, a small watcher task), the rest is plain data read per request.

>>> o = Outages()
>>> _ = o.add(503, calls=2)
>>> [o.current().status, o.current().status, o.current()]
[503, 503, None]
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass

from aiohttp import web

#: ``status`` of a window in which the server does not listen at all.
REFUSE = 0


@dataclass
class Window:
    """One outage: ``status`` from ``start`` until ``until`` (monotonic) or for ``calls_left``."""

    status: int
    start: float
    until: float | None
    calls_left: int | None
    retry_after: str | None = None

    def covers(self, now: float) -> bool:
        return self.start <= now and (self.until is None or now < self.until)


class Outages:
    """A schedule of outage windows (see the module docstring)."""

    def __init__(self) -> None:
        self._windows: list[Window] = []
        self._lock = threading.Lock()

    def add(self, status: int, *, seconds: float | None = None, calls: int | None = None,
            after: float = 0.0, retry_after: str | int | None = None) -> Window:
        """Answer ``status`` for ``seconds`` (or the next ``calls`` requests), ``after`` s from now.

        ``status`` is an HTTP status (500, 503, 429, ...) or :data:`REFUSE`; ``retry_after`` is
        sent as the ``Retry-After`` header. A window counted in ``calls`` cannot refuse
        connections (a refused connection is never seen, so it could not be counted).
        """
        if (seconds is None) == (calls is None):
            raise ValueError("give exactly one of seconds or calls")
        if status == REFUSE and calls is not None:
            raise ValueError("a REFUSE window is given in seconds")
        start = time.monotonic() + after
        window = Window(status=status, start=start,
                        until=start + seconds if seconds is not None else None,
                        calls_left=calls,
                        retry_after=None if retry_after is None else str(retry_after))
        with self._lock:
            self._windows.append(window)
        return window

    def clear(self) -> None:
        """No outage, now or scheduled."""
        with self._lock:
            self._windows.clear()

    def current(self, *, count: bool = True) -> Window | None:
        """The window a request arriving now falls in (its call counted), or None."""
        now = time.monotonic()
        with self._lock:
            self._windows = [w for w in self._windows
                             if (w.until is None or now < w.until)
                             and (w.calls_left is None or w.calls_left > 0)]
            for w in self._windows:
                if w.covers(now):
                    if count and w.calls_left is not None:
                        w.calls_left -= 1
                    return w
        return None

    def refusing(self) -> bool:
        """True while a :data:`REFUSE` window covers now."""
        window = self.current(count=False)
        return window is not None and window.status == REFUSE

    @property
    def pending(self) -> bool:
        """True while any window is current or still to come."""
        self.current(count=False)
        with self._lock:
            return bool(self._windows)


class Listener:
    """Binds an aiohttp runner to 127.0.0.1 and keeps it listening, or not, as ``outages`` say.

    The port stays the same across a refusal, so clients configured with the URL reconnect when
    the window ends.
    """

    def __init__(self, runner: web.AppRunner, outages: Outages, *, poll: float = 0.02) -> None:
        self.runner = runner
        self.outages = outages
        self.poll = poll
        self.port = 0
        self._site: web.TCPSite | None = None
        self._watcher: asyncio.Task[None] | None = None
        #: (monotonic time, "closed" | "opened") each time listening changed.
        self.changes: list[tuple[float, str]] = []

    async def start(self) -> int:
        """Listen on a free port; returns it."""
        await self._open(0)
        self._watcher = asyncio.create_task(self._watch(), name="fake-listener")
        return self.port

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _open(self, port: int) -> None:
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self._site = site
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _close(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        server = self.runner.server
        for handler in server.connections if server is not None else []:
            handler.force_close()  # open keep-alive connections go down too

    async def _watch(self) -> None:
        while True:
            refusing = self.outages.refusing()
            if refusing and self._site is not None:
                await self._close()
                self.changes.append((time.monotonic(), "closed"))
            elif not refusing and self._site is None:
                await self._open(self.port)
                self.changes.append((time.monotonic(), "opened"))
            await asyncio.sleep(self.poll)


def drop(request: web.Request) -> web.Response:
    """For a request that slipped in while refusing: close its connection without an answer."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=503)  # never written: the connection is gone
