"""The bounded inference pool: CPU-bound work off the event loop, a queue that says no.

Decoding, pre-processing and ONNX Runtime release the GIL for their heavy parts, so
threads run them in parallel and the event loop keeps answering health checks. A
station posting faster than the machine can analyse gets a 429 with Retry-After at once
instead of a request that hangs until its own timeout and is then retried on top of the
backlog (which is how a slow service becomes a dead one).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """No room: every thread is busy and the queue is full."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the analysis queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class InferencePool:
    """``workers`` threads and room for ``queue_size`` more jobs waiting for one."""

    def __init__(
        self,
        workers: int,
        queue_size: int,
        *,
        min_retry_after: int = 1,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self.min_retry_after = min_retry_after
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="cargoscan-infer")
        self._lock = threading.Lock()
        self._depth = 0
        self._mean_s: float | None = None  # moving average of a job's duration
        self._on_depth = on_depth

    @property
    def depth(self) -> int:
        """Jobs running or waiting."""
        return self._depth

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the backlog over the threads, at least the
        configured minimum."""
        mean = self._mean_s if self._mean_s is not None else 1.0
        wait = mean * (self._depth + 1) / self.workers
        return max(self.min_retry_after, math.ceil(wait))

    def _change(self, delta: int) -> None:
        with self._lock:
            self._depth += delta
            depth = self._depth
        if self._on_depth is not None:
            self._on_depth(depth)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start ``fn(*args)`` on a thread, or raise :class:`QueueFull`."""
        with self._lock:
            if self._depth >= self.capacity:
                raise QueueFull(self.retry_after())
            self._depth += 1
            depth = self._depth
        if self._on_depth is not None:
            self._on_depth(depth)

        def timed() -> T:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                took = time.perf_counter() - start
                with self._lock:
                    self._mean_s = took if self._mean_s is None else 0.8 * self._mean_s + 0.2 * took

        try:
            future = self._executor.submit(timed)
        except RuntimeError:  # shut down
            self._change(-1)
            raise
        # The slot is freed when the job ends, not when the caller stops waiting: a client
        # that disconnects does not make room while its job still holds a thread.
        future.add_done_callback(lambda _f: self._change(-1))
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Await ``fn(*args)`` on the pool (raises :class:`QueueFull` when full)."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def shutdown(self, wait: bool = True) -> None:
        """Finish the jobs already accepted (graceful shutdown), start no new ones."""
        self._executor.shutdown(wait=wait, cancel_futures=False)
