"""Prometheus metrics of the answer path: stage timings, answers, LLM failures, the ingest queue.

The metrics live in prometheus-client's default registry, so the ``/metrics`` endpoint that
:func:`service.api.observability.install_observability` exposes serves them next to the HTTP
request metrics. Every label takes values from a small, fixed vocabulary: never a raw path, a
tenant, a key or error text, which would grow the series without bound.

Example::

    observe_timings(result.timings)  # {"embed_ms": 3.1, "search_ms": 8.0, "total_ms": 40.2}
    observe_answer(answer.generator, answer.degraded, answer.abstained, answer.degraded_reason)
    set_ingest_queue_depth(lambda: queue.depth)
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping

from prometheus_client import Counter, Gauge, Histogram

# Pipeline stages run from about a millisecond (sparse search) to a minute (an LLM at its
# deadline), so the buckets span both ends.
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

STAGE_SECONDS = Histogram(
    "grounded_stage_seconds",
    "Time spent per pipeline stage (from the timings of a query result).",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
ANSWERS = Counter(
    "grounded_answers_total",
    "Answers given, by the generator that wrote them and whether it abstained.",
    ["generator", "abstained"],
)
DEGRADED_ANSWERS = Counter(
    "grounded_degraded_answers_total",
    "Answers that fell back to the extractive generator, by class of LLM trouble.",
    ["reason"],
)
LLM_FAILURES = Counter(
    "grounded_llm_failures_total",
    "LLM calls that failed for good (after retries, or at once when retrying cannot help).",
    ["kind"],
)
INGEST_QUEUE_DEPTH = Gauge(
    "grounded_ingest_queue_depth", "Writes (delete, drop) waiting or running."
)
INGEST_REJECTED = Counter(
    "grounded_ingest_rejected_total",
    "Writes and ingest jobs refused because the write queue or the job queue was full.",
)
JOBS_OPEN = Gauge("grounded_jobs_open", "Ingest jobs queued or running (every API replica's).")

OTHER = "other"

_STREAM_PREFIX = "LLM stream broke off: "
_HTTP_STATUS = re.compile(r"LLM endpoint answered HTTP (\d{3})\b")
_STAGE_KEY = re.compile(r"([a-z][a-z0-9_]{0,39})_ms")
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# Timings keys come from code, not from requests, but a cap keeps a future bug (a key built from
# data) from creating series without bound.
_MAX_STAGES = 32
_stages: set[str] = set()
_stages_lock = threading.Lock()


def llm_failure_kind(reason: str | None) -> str:
    """The class of an :class:`~service.llm.LLMError` reason: ``timeout``, ``connection``,
    ``rate_limited``, ``server_error``, ``client_error``, ``bad_response``, or ``other`` for a
    reason this function does not know.

    It reads the fixed prefixes that :func:`service.llm.describe` and the client write, and
    only those: the rest of a reason quotes the endpoint, whose words could say anything.
    """
    if not reason:
        return OTHER
    if reason.startswith(_STREAM_PREFIX):
        return llm_failure_kind(reason[len(_STREAM_PREFIX) :])
    if reason.startswith("LLM request timed out"):
        return "timeout"
    if reason.startswith(("LLM endpoint unreachable", "LLM stream broke off")):
        return "connection"
    status = _HTTP_STATUS.match(reason)
    if status:
        code = int(status.group(1))
        if code == 429:
            return "rate_limited"
        return "server_error" if code >= 500 else "client_error"
    if reason.startswith(("LLM reply", "the LLM endpoint lists no models")):
        return "bad_response"
    return OTHER


def observe_llm_failure(reason: str) -> None:
    """Count one LLM call that failed for good; called by :mod:`service.llm` once per call."""
    LLM_FAILURES.labels(kind=llm_failure_kind(reason)).inc()


def _stage(key: str) -> str | None:
    match = _STAGE_KEY.fullmatch(key)
    if match is None:
        return None
    stage = match.group(1)
    with _stages_lock:
        if stage not in _stages and len(_stages) >= _MAX_STAGES:
            return OTHER
        _stages.add(stage)
    return stage


def observe_timings(timings: Mapping[str, float]) -> None:
    """Record a result's ``timings`` (``{"embed_ms": 3.1, ...}``) as seconds per stage
    (``embed``); keys that do not end in ``_ms`` and values that are not finite are skipped."""
    for key, ms in timings.items():
        stage = _stage(key)
        if stage is None or not isinstance(ms, int | float) or not math.isfinite(ms) or ms < 0:
            continue
        STAGE_SECONDS.labels(stage=stage).observe(ms / 1000.0)


def observe_answer(generator: str, degraded: bool, abstained: bool, reason: str | None) -> None:
    """Count one answer; a degraded one also counts under the class of its ``reason``."""
    name = generator if _NAME.fullmatch(generator or "") else OTHER
    ANSWERS.labels(generator=name, abstained=str(bool(abstained)).lower()).inc()
    if degraded:
        DEGRADED_ANSWERS.labels(reason=llm_failure_kind(reason)).inc()


def _at_scrape(gauge: Gauge, fn: Callable[[], int]) -> None:
    """Read ``gauge`` from ``fn`` at every scrape (the last call wins: one app). A failing
    ``fn`` (a closed queue or store) reads as 0 rather than breaking the scrape."""

    def value() -> float:
        try:
            return float(fn())
        except Exception:
            return 0.0

    gauge.set_function(value)


def set_ingest_queue_depth(fn: Callable[[], int]) -> None:
    _at_scrape(INGEST_QUEUE_DEPTH, fn)


def set_jobs_open(fn: Callable[[], int]) -> None:
    _at_scrape(JOBS_OPEN, fn)


def observe_ingest_rejected() -> None:
    """Count one write refused because the queue was full."""
    INGEST_REJECTED.inc()
