"""Failed authentications per client address: a token bucket (review L2).

Each wrong or revoked key costs its address one token; an address with no token left gets 429 until the bucket
refills, before its key is even looked at. A valid key costs nothing and refills nothing (a holder of a read-only
key must not buy time to guess an admin key), and neither does a request with no key (it guesses nothing). The buckets live in each API worker's memory, so with N
workers an address gets up to N times the burst; the point is to make guessing slow and noisy, not impossible (the
keys are 256-bit random values or at least 32 characters anyway).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

BURST = 20  # failures an address may make at once
REFILL_SECONDS = 3.0  # one more failure allowed every this many seconds (20 a minute)
MAX_ADDRESSES = 4096  # buckets kept; the least recently failing address is forgotten first


class FailureLimiter:
    def __init__(
        self,
        burst: int = BURST,
        refill_seconds: float = REFILL_SECONDS,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.refill_seconds, self.max_addresses, self.clock = burst, refill_seconds, max_addresses, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, when)
        self._lock = threading.Lock()

    def _tokens(self, address: str, now: float) -> float:
        tokens, when = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - when) / self.refill_seconds)

    def retry_after(self, address: str) -> float | None:
        """Seconds until `address` may try again, or None if it may try now."""
        with self._lock:
            now = self.clock()
            tokens = self._tokens(address, now)
            return None if tokens >= 1 else (1 - tokens) * self.refill_seconds

    def failed(self, address: str) -> None:
        with self._lock:
            now = self.clock()
            self._buckets[address] = (max(0.0, self._tokens(address, now) - 1), now)
            self._buckets.move_to_end(address)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
