"""A bounded queue for writes (ingest, delete, drop), run by one worker thread.

Writes to a collection are serialised anyway, so a request that waited for the write lock on the
server's shared thread pool only took a thread that searches and health checks need (45 waiting
ingests once stalled ``/healthz`` for 17 s). Here a write waits in the queue instead, holding no
thread, and a full queue refuses at once with :class:`QueueFull` (a 503 with ``Retry-After``).

Example::

    queue = WriteQueue(capacity=8)
    result = await asyncio.wrap_future(queue.submit(lambda: pipeline.ingest(docs, "kb")))
    queue.close()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """Too many writes are waiting; ``retry_after`` is a hint in seconds."""

    def __init__(self, capacity: int, retry_after: int, waiting: str = "requests waiting") -> None:
        super().__init__(f"the queue is full ({capacity} {waiting}); retry in {retry_after} s")
        self.retry_after = retry_after


class WriteQueue:
    """At most ``capacity`` writes waiting or running; one runs at a time."""

    def __init__(self, capacity: int, retry_after: int = 5) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.retry_after = retry_after
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grounded-write")
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        """Writes waiting or running."""
        return self._pending

    def submit(self, job: Callable[[], T]) -> Future[T]:
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull(self.capacity, self.retry_after)
            self._pending += 1
        try:
            future = self._executor.submit(job)
        except BaseException:
            self._done()
            raise
        future.add_done_callback(lambda _f: self._done())
        return future

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
