"""The one reconnect policy of svc's long-lived connections (the JS SDK's backoff.js is its twin).

Attempt ``n`` after a loss waits a random time in ``[0, min(cap, base * 2**n))`` ("full jitter"), so
that many connections dropped at once (a Redis restart) do not come back in step (RFC 6455 §7.2.3);
a connection that stayed up ``stable_after`` seconds starts again from attempt 0. The bridge, the
monitor's pattern subscription and the worker-event listener all reconnect through it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Reconnects:
    """The attempts of one connection's reconnect loop: call ``connected()`` when a connection is up
    and ``next_delay()`` when it is lost, then wait that long."""

    def __init__(
        self,
        base: float = 0.05,
        cap: float = 5.0,
        stable_after: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base, self.cap, self.stable_after = base, cap, stable_after
        self.attempt = 0
        self._draw = (rng or random.Random()).random
        self._clock = clock
        self._up_since: float | None = None

    def ceiling(self) -> float:
        """The longest delay the next attempt may wait."""
        return min(self.cap, self.base * 2.0 ** min(self.attempt, 52))

    def connected(self) -> None:
        """A connection is up (from now on it counts towards ``stable_after``)."""
        self._up_since = self._clock()

    def next_delay(self) -> float:
        """The connection was lost (or never came up): the seconds to wait before the next attempt."""
        if self._up_since is not None and self._clock() - self._up_since >= self.stable_after:
            self.attempt = 0
        self._up_since = None
        delay = self._draw() * self.ceiling()
        self.attempt += 1
        return delay
