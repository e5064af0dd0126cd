"""Per-caller limits kept in memory: a token bucket per station key, failed logins per user
name and client address.

Why here and not only the inference queue: the queue (``pool.py``) protects the CPU from
all stations together, so one station stuck in a retry loop could still take every slot
and starve the others. A bucket per station key caps each station on its own (a rate per
minute, with a burst for the scans a portal sends after a pause), and answers 429 with a
Retry-After before the upload is read or a key is looked up. The login limit makes
guessing an officer's password slow: 5 wrong tries for one name from one address lock that
pair for the rest of the window, and a larger count locks the address for every name
(password spraying), before Argon2 is even run.

A login counts as a failure *before* its password is checked (``LoginLimiter.begin``, one
step under the lock) and is refunded if it succeeds: checking first and counting after let
150 concurrent logins all pass a limit of 100 that none of them had yet reached. And
Argon2 runs in a few threads of its own (``HashingGate``): each check takes ~64 MB and tens
of milliseconds, so a flood of logins queues there (or is refused past a bound) instead of
filling the threads and memory that stations' requests need.

Both are in memory: they start empty at a restart, which costs an attacker nothing but a
restart they cannot cause, and need no table. Several service processes behind a load
balancer each count on their own (the limit is then per process). The tables are bounded:
a full bucket or a pair without recent failures is the same as no entry, so those go first,
then the least recently used.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "HashingBusy",
    "HashingGate",
    "LoginLimiter",
    "StationRateLimitMiddleware",
    "TokenBuckets",
]

Clock = Callable[[], float]
T = TypeVar("T")
MAX_KEYS = 50_000
"""Entries kept per table: a flood of made-up keys or names cannot grow memory past this."""


class TokenBuckets:
    """One token bucket per key: ``rate_per_min`` tokens a minute, at most ``burst`` saved.

    ``take(key)`` spends a token and returns 0, or returns the seconds until one is due.
    A rate of 0 turns the limit off.
    """

    def __init__(
        self,
        rate_per_min: float,
        burst: int,
        *,
        max_keys: int = MAX_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.rate = rate_per_min / 60.0
        self.burst = max(1, int(burst))
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spend one token of ``key``; 0.0 when allowed, else seconds to wait (> 0)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > self.max_keys:
                self._evict(now)
        return wait

    def _evict(self, now: float) -> None:
        """Drop buckets that have refilled (no loss: a full bucket is a new one), then the
        least recently used down to 90 % (so a flood of new keys pays for a sweep once in
        thousands of requests, not at each). Called with the lock held."""
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        while len(self._buckets) > self.max_keys * 9 // 10:
            self._buckets.popitem(last=False)


class LoginLimiter:
    """Failed logins per (user name, client address) and per client address, in a window.

    ``retry_after`` says whether a login may be tried now (None) or in how many seconds;
    ``failed`` counts a wrong name or password, ``succeeded`` clears the pair's count (not
    the address's: logging in to one's own account must not reset a spraying count).
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        max_failures_per_address: int,
        *,
        max_keys: int = MAX_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = float(window_s)
        self.max_per_address = max_failures_per_address
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.RLock()  # ``begin`` checks and counts under one hold
        self._fails: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    @staticmethod
    def _pair(username: str, address: str) -> tuple[str, str]:
        # Case-folded: "Alice" and "alice" count together whatever the database does.
        return (username.casefold(), address)

    @staticmethod
    def _address(address: str) -> tuple[str, str]:
        return ("\x00address", address)  # no user name contains NUL: no clash with a pair

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._fails.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._fails[key]
            return None
        return times

    def retry_after(self, username: str, address: str) -> int | None:
        """None when a login may be tried; otherwise whole seconds until one may (>= 1)."""
        now = self._clock()
        waits = []
        with self._lock:
            for key, limit in (
                (self._pair(username, address), self.max_failures),
                (self._address(address), self.max_per_address),
            ):
                times = self._recent(key, now)
                if limit > 0 and times is not None and len(times) >= limit:
                    # free again when enough of the failures have left the window
                    waits.append(times[len(times) - limit] + self.window_s - now)
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def begin(self, username: str, address: str) -> int | None:
        """Check and count a login attempt in one step: None when it may go on (it is
        counted as a failure already; ``succeeded(..., begun=True)`` refunds it), else
        the whole seconds to wait. Concurrent attempts cannot all pass the same count."""
        with self._lock:
            wait = self.retry_after(username, address)
            if wait is None:
                self._count(username, address, self._clock())
            return wait

    def failed(self, username: str, address: str) -> None:
        """Count a failed login (for callers that did not ``begin`` it)."""
        with self._lock:
            self._count(username, address, self._clock())

    def _count(self, username: str, address: str, now: float) -> None:
        """One failure for the pair and the address. Called with the lock held."""
        for key in (self._pair(username, address), self._address(address)):
            times = self._recent(key, now)
            if times is None:
                times = self._fails[key] = deque()
            else:
                self._fails.move_to_end(key)
            times.append(now)
            # a count above the limit adds nothing: keep at most limit + 1 entries
            while len(times) > max(self.max_failures, self.max_per_address) + 1:
                times.popleft()
        if len(self._fails) > self.max_keys:
            for key in [k for k in self._fails if self._recent(k, now) is None]:
                self._fails.pop(key, None)
            while len(self._fails) > self.max_keys * 9 // 10:
                self._fails.popitem(last=False)

    def succeeded(self, username: str, address: str, *, begun: bool = False) -> None:
        """Clear the pair's failures; ``begun``: also take back the address's count of this
        attempt (a login that worked is no spraying)."""
        with self._lock:
            self._fails.pop(self._pair(username, address), None)
            if begun:
                times = self._fails.get(self._address(address))
                if times:
                    times.pop()


class HashingBusy(Exception):
    """More password checks are waiting than the gate takes: answer 429 at once."""


class HashingGate:
    """Runs password hashing (Argon2) in ``limit`` threads of its own, with at most
    ``queue`` more waiting; ``run`` raises :class:`HashingBusy` past that.

    Why threads of its own: the server's shared thread pool also runs the stations'
    requests; logins waiting for Argon2 there would hold those threads (and 64 MB each
    while hashing). ``runs`` counts the hashes started, ``peak`` the most at once."""

    def __init__(self, limit: int, queue: int, on_run: Callable[[], None] | None = None) -> None:
        self.limit = max(1, int(limit))
        self.queue = max(0, int(queue))
        self.on_run = on_run
        self.runs = 0
        self.peak = 0
        self._running = 0
        self._pending = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.limit, thread_name_prefix="cargoscan-argon2"
                )
            return self._executor

    def _counted(self, fn: Callable[[], T]) -> T:
        with self._lock:
            self._running += 1
            self.runs += 1
            self.peak = max(self.peak, self._running)
        if self.on_run is not None:
            self.on_run()
        try:
            return fn()
        finally:
            with self._lock:
                self._running -= 1

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on one of the gate's threads, awaited without holding any other."""
        with self._lock:
            if self._pending >= self.limit + self.queue:
                raise HashingBusy(
                    f"too many logins at once ({self._pending} being checked); try again"
                )
            self._pending += 1
        try:
            future = self._pool().submit(self._counted, fn)
            return await asyncio.wrap_future(future)
        finally:
            with self._lock:
                self._pending -= 1

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "bearer" else None
    return None


class StationRateLimitMiddleware:
    """429 with Retry-After for a station key (``cs_...``) past its bucket, before the
    body is read or the key is looked up. The bucket is named by the key's SHA-256 (the
    key itself is never kept); the admin key, user tokens and cookies pass untouched."""

    def __init__(
        self,
        app: ASGIApp,
        buckets: TokenBuckets,
        *,
        key_prefix: str,
        exempt_hash: Callable[[], str | None] = lambda: None,
        on_limited: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.buckets = buckets
        self.key_prefix = key_prefix
        self.exempt_hash = exempt_hash
        self.on_limited = on_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.buckets.enabled:
            key = _bearer(scope)
            if key and key.startswith(self.key_prefix):
                digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
                if digest != self.exempt_hash():
                    wait = self.buckets.take(digest)
                    if wait > 0:
                        if self.on_limited is not None:
                            self.on_limited()
                        retry = max(1, math.ceil(wait))
                        response = JSONResponse(
                            {
                                "detail": "this station is over its request rate "
                                f"({self.buckets.rate * 60:g} a minute, bursts of "
                                f"{self.buckets.burst}); retry in {retry} s"
                            },
                            status_code=429,
                            headers={"Retry-After": str(retry)},
                        )
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)
