"""The one reconnect policy: random first delay, exponential growth, a cap (mirrored in the JS SDK)."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(
    initial: float = 0.05, factor: float = 2.0, cap: float = 5.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Yield delays before each reconnect attempt: the first random in [0, initial] (RFC 6455 §7.2.3),
    then ``initial * factor**n`` with full jitter, never above ``cap``. Start a new generator after a
    connection that stayed up, to reset it."""
    draw = (rng or random.Random()).random
    yield initial * draw()
    delay = initial
    while True:
        delay = min(delay * factor, cap)
        yield delay / 2 + (delay / 2) * draw()
