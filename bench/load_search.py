"""Load test: hybrid ``POST /v1/search`` from concurrent clients, with and without an ingest job.

    .venv/bin/python bench/load_search.py [--clients 8] [--duration 60] [--distractors 1000]
        [--configs default,torch] [--dataset ../shared/datasets/scifact]

Needs ``wrk`` (Debian package ``wrk``). Every request goes to 127.0.0.1; every phase is bounded
by ``--duration``; the servers are always stopped and the temporary data directory removed.

1. Prepares a collection in a fresh data directory: SciFact documents judged for a test query
   plus ``--distractors`` others (1,000 by default: 1,339 documents), ingested in-process.
2. For each of ``--configs`` (``default`` = the settings as they are; otherwise
   ``BACKEND[/THREADS]``, e.g. ``onnx-int8/1`` or ``torch``, passed to the server as
   ``GROUNDED_EMBEDDING_BACKEND`` / ``GROUNDED_EMBEDDING_THREADS``; a suffix ``@Nus``, e.g.
   ``default@500us``, sets the server's ``sys.setswitchinterval`` to N µs), starts ``grounded
   serve`` on a free port and runs wrk, each client one keep-alive connection sending the test
   queries in turn (hybrid, top 10, default fusion) with no pause:

   - ``1 client``: the latency of one request on an idle server;
   - ``N clients``: throughput and latency under ``--clients`` concurrent clients;
   - ``N + ingest``: the same while one client keeps an ingest job running (``POST /v1/ingest
     ?wait=true`` of 32 unseen SciFact documents at a time, back to back, for the whole phase).

3. Prints requests/s, p50/p95/p99 ms and errors (socket errors, timeouts and non-2xx answers)
   per phase, the ratio N clients ÷ 1 client, and search p95 with ingest ÷ without.

Exits 1 if any phase saw an error. Timing figures: run at normal priority under
``flock /tmp/grounded-timing.lock``, and compare configurations within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from eval.datasets import BeirDataset, load_beir  # noqa: E402
from ingest.documents import Document  # noqa: E402
from ingest.settings import Settings  # noqa: E402
from service.pipeline import RagPipeline  # noqa: E402

COLLECTION = "load"
INGEST_BATCH = 32

# wrk's Lua: each thread walks the bodies from its own offset; ``done`` prints one JSON line.
LUA = """
local bodies = {%(bodies)s}
local counter = 0
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
function init(args)
  counter = (id or 0) * 97
end
function request()
  counter = counter + 1
  local body = bodies[(counter %% #bodies) + 1]
  return wrk.format("POST", "/v1/search", {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, "write": %%d, '
    .. '"status": %%d, "timeout": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d, '
    .. '"max_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def write_lua(path: Path, queries: list[str]) -> None:
    bodies = [json.dumps({"query": q, "top_k": 10, "mode": "hybrid"}) for q in queries]
    # Lua long strings need no escaping; no body contains the closing bracket sequence.
    assert all("]==]" not in b for b in bodies)
    path.write_text(LUA % {"bodies": ",\n".join(f"[==[{b}]==]" for b in bodies)})


def wrk(port: int, clients: int, duration: int, script: Path) -> dict[str, Any]:
    """One wrk run; requests/s, p50/p95/p99/max ms and errors (non-2xx included)."""
    command = ["wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{duration}s", "--timeout", "10s"]
    command += ["-s", str(script), f"http://{harness.HOST}:{port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 1),
        "p95_ms": round(raw["p95_us"] / 1000, 1),
        "p99_ms": round(raw["p99_us"] / 1000, 1),
        "max_ms": round(raw["max_us"] / 1000, 1),
        "errors": errors,
        "non_2xx": raw["status"],
    }


class IngestLoad:
    """Keeps one ingest job running until stopped: batches of unseen documents, back to back,
    each ``?wait=true``; counts chunks written and failures."""

    def __init__(self, port: int, docs: list[Document]) -> None:
        self.port, self.docs = port, docs
        self.stop = threading.Event()
        self.chunks = self.batches = self.failures = 0
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        with httpx.Client(base_url=f"http://{harness.HOST}:{self.port}", timeout=300) as client:
            round_no = 0
            while not self.stop.is_set():
                for i in range(0, len(self.docs), INGEST_BATCH):
                    if self.stop.is_set():
                        break
                    batch = [
                        {"id": f"{d.id}-r{round_no}", "text": d.text, "title": d.title}
                        for d in self.docs[i : i + INGEST_BATCH]
                    ]
                    response = client.post(
                        "/v1/ingest?wait=true", json={"collection": COLLECTION, "documents": batch}
                    )
                    if response.status_code == 200:
                        self.chunks += int(response.json().get("chunks_written", 0))
                        self.batches += 1
                    else:
                        self.failures += 1
                round_no += 1
        self.seconds = time.monotonic() - started

    def __enter__(self) -> IngestLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=330)


def prepare(data_dir: Path, dataset: BeirDataset, distractors: int) -> list[Document]:
    """Ingests judged + ``distractors`` documents; returns the documents left out."""
    judged = {doc for rels in dataset.qrels.values() for doc in rels}
    unjudged = [d for d in dataset.corpus if d.id not in judged]
    keep = judged | {d.id for d in unjudged[:distractors]}
    pipeline = RagPipeline.from_settings(Settings(data_dir=data_dir, collection=COLLECTION))
    try:
        report = pipeline.ingest([d for d in dataset.corpus if d.id in keep], COLLECTION)
    finally:
        pipeline.close()
    print(f"collection: {report.documents} documents, {report.chunks_written} chunks")
    return unjudged[distractors:]


def run_config(
    config: str, data_dir: Path, work: Path, script: Path, rest: list[Document], args: Any
) -> dict[str, Any]:
    setting, _, switch = config.partition("@")
    backend, _, threads = setting.partition("/")
    env = {"GROUNDED_EMBEDDING_BACKEND": backend, "GROUNDED_EMBEDDING_THREADS": threads}
    saved = {k: os.environ.get(k) for k in env}
    for key, value in env.items():
        if setting != "default" and value:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    port, log = harness.free_port(), work / f"server-{config.replace('/', '-')}.log"
    switch_us = int(switch.removesuffix("us")) if switch else None
    server = harness.start_server(data_dir, COLLECTION, port, log, switch_us)
    try:
        with httpx.Client(base_url=f"http://{harness.HOST}:{port}", timeout=30) as client:
            harness.wait_ready(client, server, log)
            info = client.get("/v1/info").json()
            for _ in range(20):
                client.post("/v1/search", json={"query": "warm up the service", "top_k": 10})
        row: dict[str, Any] = {"server_info_model": info.get("embedding_model")}
        row["1 client"] = wrk(port, 1, args.duration, script)
        row[f"{args.clients} clients"] = wrk(port, args.clients, args.duration, script)
        with IngestLoad(port, rest) as ingest:
            row[f"{args.clients} + ingest"] = wrk(port, args.clients, args.duration, script)
        row["ingest_beside"] = {
            "chunks_per_s": round(ingest.chunks / max(ingest.seconds, 1e-9), 1),
            "batches": ingest.batches,
            "failures": ingest.failures,
        }
    finally:
        harness.stop_server(server)
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=int, default=60, help="seconds per phase")
    parser.add_argument("--distractors", type=int, default=1000)
    parser.add_argument("--configs", default="default")
    parser.add_argument(
        "--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if not 1 <= args.clients <= 256 or not 1 <= args.duration <= 600:
        raise SystemExit("--clients must be 1..256 and --duration 1..600 seconds")
    configs = args.configs.split(",")
    if not all(re.fullmatch(r"[\w.-]+(/\d+)?(@[1-9]\d*us)?", c) for c in configs):
        raise SystemExit("--configs: BACKEND[/THREADS][@Nus], comma-separated, e.g. default@500us")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    dataset = load_beir(args.dataset)
    work = Path(tempfile.mkdtemp(prefix="grounded-load-"))
    try:
        print(f"machine: {harness.machine()}")
        rest = prepare(work / "data", dataset, args.distractors)
        script = work / "search.lua"
        write_lua(script, list(dataset.queries.values()))
        results = {}
        for config in configs:
            results[config] = row = run_config(config, work / "data", work, script, rest, args)
            print(f"{config}: {json.dumps(row)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = f"{args.clients} clients"
    print(f"\nhybrid /v1/search over loopback, wrk, {args.duration} s per phase")
    print(
        f"{'config':<14} {'phase':<16} {'req/s':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'errors':>6}"
    )
    failed = False
    for config, row in results.items():
        for phase in ("1 client", n, f"{args.clients} + ingest"):
            r = row[phase]
            failed |= r["errors"] > 0
            print(
                f"{config:<14} {phase:<16} {r['rps']:>7.1f} {r['p50_ms']:>7.1f} "
                f"{r['p95_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['errors']:>6}"
            )
        row["rps_ratio_n_over_1"] = round(row[n]["rps"] / row["1 client"]["rps"], 2)
        row["p95_ratio_ingest_over_idle"] = round(
            row[f"{args.clients} + ingest"]["p95_ms"] / row[n]["p95_ms"], 2
        )
        print(
            f"{config:<14} {args.clients} clients ÷ 1 client requests/s = "
            f"{row['rps_ratio_n_over_1']}; p95 with ingest ÷ without = "
            f"{row['p95_ratio_ingest_over_idle']} (ingest beside: "
            f"{row['ingest_beside']['chunks_per_s']} chunks/s)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"load_search-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "machine": harness.machine(),
                "clients": args.clients,
                "duration_s": args.duration,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"written: {path}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
