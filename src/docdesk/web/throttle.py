"""How often one may fail to sign in.

A password guesser is slowed by the hash each try costs and stopped here:
failures are counted per user id and per client address over a sliding
window, and past a limit the sign-in is refused before any hash runs until
the oldest failure leaves the window. A try counts as a failure from the
moment it starts, so that tries made at once cannot all slip in before the
first has failed; a success takes its own count back and clears its user
id's failures, not its address's: one right password does not buy an
address more guesses at other ids.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["SignInThrottle"]

# Per user id: a person who mistypes a few times is not locked out for long.
FAILURES_PER_USER = 5
# Per address: several people behind one office NAT share it.
FAILURES_PER_ADDRESS = 20
WINDOW_SECONDS = 900.0
# Beyond this many ids and addresses the least recently failed are forgotten,
# so that a flood of made-up ids cannot grow memory without bound.
MAX_TRACKED = 10_000


class SignInThrottle:
    """Failed sign-ins of the last ``window`` seconds, in this process."""

    def __init__(
        self,
        *,
        per_user: int = FAILURES_PER_USER,
        per_address: int = FAILURES_PER_ADDRESS,
        window: float = WINDOW_SECONDS,
        max_tracked: int = MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"user": per_user, "address": per_address}
        self._window = window
        self._max_tracked = max_tracked
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def retry_after(self, user_id: str, address: str | None) -> int:
        """Seconds until ``user_id`` may try again from ``address``; 0 is now."""
        now = self._clock()
        return max(self._wait(key, now) for key in _keys(user_id, address))

    def failed(self, user_id: str, address: str | None) -> None:
        now = self._clock()
        for key in _keys(user_id, address):
            times = self._failures.pop(key, None) or deque()
            times.append(now)
            # More than the limit need not be kept: the wait ends when the
            # limit's worth of newest failures has aged out.
            while len(times) > self._limits[key[0]]:
                times.popleft()
            self._failures[key] = times
        while len(self._failures) > self._max_tracked:
            self._failures.popitem(last=False)

    def succeeded(self, user_id: str, address: str | None) -> None:
        """Forget ``user_id``'s failures, and this try's count at ``address``."""
        self._failures.pop(("user", user_id), None)
        times = self._failures.get(("address", address)) if address else None
        if times:
            times.pop()

    def _wait(self, key: tuple[str, str], now: float) -> int:
        times = self._failures.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        if len(times) < self._limits[key[0]]:
            return 0
        return max(1, math.ceil(times[0] + self._window - now))


def _keys(user_id: str, address: str | None) -> list[tuple[str, str]]:
    keys = [("user", user_id)]
    if address:
        keys.append(("address", address))
    return keys
