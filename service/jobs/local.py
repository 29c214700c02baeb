"""The embedded mode's worker: one thread inside ``grounded serve`` that runs queued jobs.

It needs no other service. On start it picks up every queued or interrupted job from the store
(jobs are stored before the API answers 202), so a service killed mid-job finishes the job after
a restart: an interrupted batch runs again, which rewrites nothing already current.

Example::

    runner = LocalJobRunner(store, pipeline.ingest, max_retries=5, backoff=2.0)
    runner.start()
    runner.wake()       # after a job was stored
    runner.stop()
"""

from __future__ import annotations

import logging
import threading

from .model import Job
from .runner import Ingest, attempts_of, failure, give_up, is_transient, retry_delay, run_batch
from .store import JobStore

log = logging.getLogger("grounded.jobs")


class LocalJobRunner:
    """Runs jobs oldest first, one batch at a time, on a daemon thread."""

    def __init__(
        self,
        store: JobStore,
        ingest: Ingest,
        *,
        max_retries: int = 5,
        backoff: float = 2.0,
        idle_poll_s: float = 5.0,
    ) -> None:
        self.store = store
        self.ingest = ingest
        self.max_retries = max_retries
        self.backoff = backoff
        self.idle_poll_s = idle_poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="grounded-jobs", daemon=True
                )
                self._thread.start()

    def submit(self, job: Job) -> None:
        """The dispatcher's side: a job was stored; run it."""
        self.start()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Finish the batch in progress (its job resumes at the next start), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    close = stop

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                ran = self._run_pending()
            except Exception:  # a store or bug problem must not kill the thread silently
                log.exception("job runner: unexpected error; retrying in %s s", self.idle_poll_s)
                ran = False
            if not ran:
                self._wake.wait(self.idle_poll_s)

    def _run_pending(self) -> bool:
        ran = False
        for job in self.store.unfinished():
            for batch in job.pending_batches():
                if self._stop.is_set():
                    return ran
                self._run_with_retries(job.id, batch)
                ran = True
        return ran

    def _run_with_retries(self, job_id: str, batch: int) -> None:
        attempts = self.max_retries + 1
        while True:
            try:
                run_batch(self.store, job_id, batch, self.ingest, attempts)
                return
            except Exception as exc:
                tried = attempts_of(self.store, job_id, batch)
                if not is_transient(exc) or tried >= attempts:
                    log.error("job %s batch %d failed: %s", job_id, batch, exc)
                    give_up(self.store, job_id, batch, failure(exc, tried))
                    return
                delay = retry_delay(self.backoff, tried - 1)
                log.warning("job %s batch %d: %s; retry in %.1f s", job_id, batch, exc, delay)
                if self._stop.wait(delay):
                    return
