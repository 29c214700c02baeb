"""Benchmark: do concurrent ingests stall ``/healthz`` and ``/v1/search``?

    .venv/bin/python bench/load_isolation.py [--clients 45] [--requests-per-client 3]
        [--docs-per-request 20] [--max-retries 3] [--timeout 900]

The regression it guards against: 45 concurrent ingests once stalled ``/healthz`` for 17.6 s,
because requests waiting on the write lock held threads of the one pool every route shares.
Writes now wait in a bounded queue with one worker (a full queue answers 503 + ``Retry-After``)
and ``/healthz`` / ``/readyz`` run on the event loop. This script shows it, as ratios against a
baseline measured in the same run:

1. Starts ``grounded serve`` on 127.0.0.1 (loopback: no API keys) on a free port with a fresh
   temporary data directory, and ingests a small seed collection so search has something.
2. Baseline, no load: one client sends ``--healthz`` sequential ``GET /healthz`` and
   ``--searches`` ``POST /v1/search`` (interleaved) and records p50/p95/max latency.
3. Load: ``--clients`` threads each send ``--requests-per-client`` ``POST /v1/ingest`` of
   ``--docs-per-request`` new documents (distinct ids) with ``?wait=true`` (each waits for its
   job), all starting at once, and honour a 503's
   ``Retry-After`` at most ``--max-retries`` times per request. Meanwhile one client repeats the
   measurements of step 2 (stopping early if the load ends first).
4. Prints idle vs under-load latency and their ratio, the ingest outcomes (final status of each
   request, and every response seen) and the wall time. Exits 1 if any 5xx other than 503 (or
   any failed health check or search) appears, 2 if the hard ``--timeout`` is reached.

Everything is bounded: a fixed number of requests, capped retries, per-request timeouts, one
overall deadline, traffic only to 127.0.0.1; the server is always terminated and the temporary
data directory removed. The environment is passed to the server, so e.g.
``GROUNDED_INGEST_QUEUE_SIZE=16`` changes the queue's capacity.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    HOST,
    free_port,
    machine,
    percentile,
    start_server,
    stop_server,
    wait_ready,
)

COLLECTION = "loadbench"
REQUEST_TIMEOUT_S = 60.0
RETRY_AFTER_CAP_S = 10.0

TOPICS = [
    "vector databases",
    "hybrid retrieval",
    "BM25 scoring",
    "sentence embeddings",
    "document chunking",
    "reciprocal rank fusion",
    "rate limiting",
    "write queues",
    "health checks",
    "citation grounding",
]
QUERIES = [
    "How does hybrid retrieval combine dense and sparse scores?",
    "What is reciprocal rank fusion?",
    "Why chunk documents before embedding them?",
    "How are health checks kept responsive under load?",
    "What does BM25 reward in a document?",
]


class HardTimeout(Exception):
    """The overall ``--timeout`` was reached."""


@dataclass
class Latency:
    """Latencies in milliseconds of one endpoint in one phase."""

    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def stat(self, q: float | None) -> float:
        """The q-th percentile (linear interpolation); ``None`` = the maximum."""
        return percentile(self.samples, q)


@dataclass
class IngestTally:
    """What the ingest clients saw, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    final: Counter[str] = field(default_factory=Counter)  # one outcome per request
    seen: Counter[str] = field(default_factory=Counter)  # every response, retries included
    accepted: Latency = field(default_factory=Latency)  # 200s: queue wait + write
    unexpected: list[str] = field(default_factory=list)  # 5xx other than 503

    def response(self, status: int, detail: str = "") -> None:
        with self.lock:
            self.seen[str(status)] += 1
            if status >= 500 and status != 503:
                self.unexpected.append(f"{status}: {detail[:200]}")

    def outcome(self, label: str, millis: float | None = None) -> None:
        with self.lock:
            self.final[label] += 1
            if millis is not None:
                self.accepted.samples.append(millis)


def queue_capacity() -> str:
    configured = os.environ.get("GROUNDED_INGEST_QUEUE_SIZE")
    if configured:
        return f"{configured} (GROUNDED_INGEST_QUEUE_SIZE)"
    from ingest.settings import Settings

    return f"{Settings.model_fields['ingest_queue_size'].default} (default)"


def document(doc_id: str, n: int) -> dict[str, str]:
    """A short document (two or three sentences) whose text differs with ``n``."""
    topic, other = TOPICS[n % len(TOPICS)], TOPICS[(n * 7 + 3) % len(TOPICS)]
    text = (
        f"Note {n} is about {topic}. It explains how {topic} interacts with {other} in a "
        f"retrieval service, with example number {n * 31 % 997}. "
        f"Operators tune {topic} by measuring latency and recall on a held-out set."
    )
    return {"id": doc_id, "title": f"{topic} #{n}", "text": text}


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def timeout(self) -> float:
        """A per-request timeout that never runs past the deadline."""
        left = self.left()
        if left <= 0:
            raise HardTimeout("the overall --timeout was reached")
        return min(REQUEST_TIMEOUT_S, left)


def measure(
    client: httpx.Client,
    n_healthz: int,
    n_search: int,
    deadline: Deadline,
    keep_going: Callable[[], bool] = lambda: True,
) -> tuple[Latency, Latency]:
    """``n_healthz`` GET /healthz and ``n_search`` POST /v1/search, interleaved evenly, one at a
    time; stops early when ``keep_going()`` turns false."""
    healthz, search = Latency(), Latency()
    schedule = sorted(
        [((i + 0.5) / n_healthz, "healthz") for i in range(n_healthz)]
        + [((i + 0.5) / n_search, "search") for i in range(n_search)]
    )
    for n, (_, kind) in enumerate(schedule):
        if not keep_going():
            break
        timeout = deadline.timeout()
        started = time.perf_counter()
        try:
            if kind == "healthz":
                response = client.get("/healthz", timeout=timeout)
            else:
                body = {"query": QUERIES[n % len(QUERIES)], "collection": COLLECTION, "top_k": 10}
                response = client.post("/v1/search", json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            (healthz if kind == "healthz" else search).failures.append(repr(exc))
            continue
        millis = (time.perf_counter() - started) * 1000
        target = healthz if kind == "healthz" else search
        if response.status_code == 200:
            target.samples.append(millis)
        else:
            target.failures.append(f"{response.status_code}: {response.text[:200]}")
    return healthz, search


def ingest_client(
    base: str,
    client_id: int,
    args: argparse.Namespace,
    start: threading.Barrier,
    stop: threading.Event,
    deadline: Deadline,
    tally: IngestTally,
) -> None:
    """Send ``args.requests_per_client`` ingests, honouring 503 + Retry-After a few times."""
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        try:
            start.wait(timeout=max(1.0, deadline.left()))
        except threading.BrokenBarrierError:
            return
        for r in range(args.requests_per_client):
            docs = [
                document(f"load-{client_id}-{r}-{i}", client_id * 1000 + r * 100 + i)
                for i in range(args.docs_per_request)
            ]
            body = {"collection": COLLECTION, "documents": docs}
            retries = 0
            while True:
                if stop.is_set() or deadline.left() <= 0:
                    tally.outcome("abandoned (deadline)")
                    return
                started = time.perf_counter()
                try:
                    response = client.post(
                        "/v1/ingest?wait=true", json=body, timeout=deadline.timeout()
                    )
                except HardTimeout:
                    tally.outcome("abandoned (deadline)")
                    return
                except httpx.HTTPError as exc:
                    tally.outcome(f"error {type(exc).__name__}")
                    break
                millis = (time.perf_counter() - started) * 1000
                tally.response(response.status_code, response.text)
                if response.status_code == 503 and retries < args.max_retries:
                    retries += 1
                    hint = response.headers.get("Retry-After", "1")
                    delay = min(float(hint) if hint.isdigit() else 1.0, RETRY_AFTER_CAP_S)
                    if stop.wait(min(delay, max(0.0, deadline.left()))):
                        tally.outcome("abandoned (deadline)")
                        return
                    continue
                if response.status_code == 200:
                    tally.outcome("200", millis)
                elif response.status_code == 503:
                    tally.outcome(f"503 after {retries} retries")
                else:
                    tally.outcome(str(response.status_code))
                break


def ratio(loaded: float, idle: float) -> str:
    if math.isnan(loaded) or math.isnan(idle) or idle <= 0:
        return "n/a"
    return f"{loaded / idle:.1f}x"


def print_table(rows: list[tuple[str, Latency, Latency]]) -> None:
    print(
        f"\n{'':<16}{'idle (ms)':^27}{'under load (ms)':^27}{'ratio load/idle':^24}\n"
        f"{'endpoint':<16}"
        + f"{'n':>5}{'p50':>7}{'p95':>7}{'max':>8}" * 2
        + f"{'p50':>8}{'p95':>8}{'max':>8}"
    )
    for name, idle, loaded in rows:
        cells = [name.ljust(16)]
        for lat in (idle, loaded):
            cells.append(
                f"{len(lat.samples):>5}{lat.stat(50):>7.1f}{lat.stat(95):>7.1f}"
                f"{lat.stat(None):>8.1f}"
            )
        cells += [f"{ratio(loaded.stat(q), idle.stat(q)):>8}" for q in (50, 95, None)]
        print("".join(cells))


def run(args: argparse.Namespace, deadline: Deadline, stop: threading.Event) -> int:
    run_started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="grounded-load-"))
    server: subprocess.Popen[bytes] | None = None
    threads: list[threading.Thread] = []
    try:
        port = free_port()
        base = f"http://{HOST}:{port}"
        log = data_dir / "server.log"
        server = start_server(data_dir / "data", COLLECTION, port, log)
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
            startup = wait_ready(client, server, log)
            seed = [document(f"seed-{i}", i) for i in range(args.seed_docs)]
            response = client.post(
                "/v1/ingest?wait=true",
                json={"collection": COLLECTION, "documents": seed},
                timeout=deadline.timeout(),
            )
            if response.status_code != 200:
                raise SystemExit(f"seed ingest failed: {response.status_code} {response.text}")
            for query in QUERIES * 2:  # warm-up
                body = {"query": query, "collection": COLLECTION, "top_k": 10}
                client.post("/v1/search", json=body, timeout=deadline.timeout())

            idle_h, idle_s = measure(client, args.healthz, args.searches, deadline)

            tally = IngestTally()
            start = threading.Barrier(args.clients + 1)
            threads = [
                threading.Thread(
                    target=ingest_client,
                    args=(base, c, args, start, stop, deadline, tally),
                    name=f"ingest-{c}",
                    daemon=True,
                )
                for c in range(args.clients)
            ]
            for t in threads:
                t.start()
            start.wait(timeout=max(1.0, deadline.left()))
            load_started = time.perf_counter()
            load_h, load_s = measure(
                client,
                args.healthz,
                args.searches,
                deadline,
                keep_going=lambda: any(t.is_alive() for t in threads),
            )
            measured_s = time.perf_counter() - load_started
            for t in threads:
                t.join(timeout=max(0.0, deadline.left()))
            if any(t.is_alive() for t in threads):
                raise HardTimeout("ingest clients still running at the overall --timeout")
            load_s_wall = time.perf_counter() - load_started
            collections = client.get("/v1/collections", timeout=deadline.timeout()).json()
        points = next((c["points"] for c in collections if c["name"] == COLLECTION), "?")
    finally:
        stop.set()
        if server is not None:
            stop_server(server)
        shutil.rmtree(data_dir, ignore_errors=True)

    total = args.clients * args.requests_per_client
    print(f"machine: {machine()}")
    print(
        f"server: grounded serve on {HOST} (started in {startup:.1f} s), "
        f"{args.seed_docs} seed docs, ingest queue capacity {queue_capacity()}"
    )
    print(
        f"load: {args.clients} clients x {args.requests_per_client} requests x "
        f"{args.docs_per_request} docs = {total} ingest requests, Retry-After honoured up to "
        f"{args.max_retries} times per request"
    )
    print_table([("GET /healthz", idle_h, load_h), ("POST /v1/search", idle_s, load_s)])
    print(
        f"(under-load samples were taken during the first {measured_s:.1f} s of the "
        f"{load_s_wall:.1f} s load; a short 'n' means the load ended first)"
    )
    finals = ", ".join(f"{k}: {v}" for k, v in sorted(tally.final.items()))
    seen = ", ".join(f"{k}: {v}" for k, v in sorted(tally.seen.items()))
    print(f"\ningest requests, final outcome ({total}): {finals}")
    print(f"ingest responses seen, retries included: {seen}")
    acc = tally.accepted
    print(
        f"accepted ingests (queue wait + write), ms: p50 {acc.stat(50):.0f}, "
        f"p95 {acc.stat(95):.0f}, max {acc.stat(None):.0f}; "
        f"points in '{COLLECTION}' afterwards: {points}"
    )
    print(
        f"wall time: load {load_s_wall:.1f} s, whole run {time.perf_counter() - run_started:.1f} s"
    )

    problems = [f"ingest {u}" for u in tally.unexpected]
    for name, lat in (
        ("idle healthz", idle_h),
        ("idle search", idle_s),
        ("healthz under load", load_h),
        ("search under load", load_s),
    ):
        problems += [f"{name}: {f}" for f in lat.failures]
    if problems:
        print(f"\nFAILED: {len(problems)} unexpected responses or errors:", file=sys.stderr)
        for p in problems[:20]:
            print(f"  {p}", file=sys.stderr)
        return 1
    return 0


def positive(limit: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        n = int(value)
        if not 1 <= n <= limit:
            raise argparse.ArgumentTypeError(f"must be between 1 and {limit}")
        return n

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=positive(500), default=45)
    parser.add_argument("--requests-per-client", type=positive(100), default=3)
    parser.add_argument("--docs-per-request", type=positive(256), default=20)
    parser.add_argument(
        "--max-retries", type=int, choices=range(0, 11), default=3, metavar="{0..10}"
    )
    parser.add_argument("--healthz", type=positive(10_000), default=200, help="requests per phase")
    parser.add_argument("--searches", type=positive(10_000), default=100, help="per phase")
    parser.add_argument("--seed-docs", type=positive(256), default=50)
    parser.add_argument(
        "--timeout", type=positive(7200), default=900, help="hard limit for the whole run, s"
    )
    args = parser.parse_args()

    deadline = Deadline(args.timeout)
    stop = threading.Event()

    def on_alarm(_signum: int, _frame: FrameType | None) -> None:
        raise HardTimeout(f"the run exceeded --timeout {args.timeout} s")

    # Backstop for a main thread blocked somewhere the deadline checks do not reach.
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout + 15)
    try:
        code = run(args, deadline, stop)
    except HardTimeout as exc:
        print(f"\nABORTED: {exc}", file=sys.stderr)
        code = 2
    finally:
        signal.alarm(0)
    sys.exit(code)


if __name__ == "__main__":
    main()
