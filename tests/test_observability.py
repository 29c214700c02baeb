"""Request ids, the JSON access log, generic 500s and /metrics, over a small app of our own."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from support.fake_llm import FakeLLM

from service import metrics
from service.api.observability import (
    JsonFormatter,
    configure_logging,
    install_observability,
    request_id,
)
from service.llm import LLMError, OpenAIChat

SECRET = "token=sk-live-123 in /etc/grounded/keys.json"
SOURCES = "/v1/collections/{collection}/sources"
HEX_ID = re.compile(r"[0-9a-f]{32}")


def build_app(metrics_dependencies: list[object] | None = None) -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/v1")

    @router.get("/collections/{collection}/sources")
    def sources(collection: str, request: Request) -> dict[str, str]:
        request.state.key_prefix = "gk_ab12"  # what the auth dependency sets
        request.state.tenant = "acme"
        return {"collection": collection}

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError(SECRET)

    @router.get("/stream")
    def stream(request: Request) -> StreamingResponse:
        def events() -> Iterator[str]:
            yield "event: delta\ndata: {}\n\n"
            logging.getLogger("grounded.api").warning("stream failed")
            yield f"event: error\ndata: {json.dumps({'request_id': request_id(request)})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app.include_router(router)
    install_observability(app, metrics_dependencies=metrics_dependencies or ())
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    # The server's view: an unhandled error is a response, not an exception in the test.
    with TestClient(build_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="grounded")
    return caplog


def json_lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, object]]:
    """The records of ``logger`` as the JSON lines that `grounded serve` writes."""
    formatter = JsonFormatter()
    lines = []
    for record in caplog.records:
        if record.name == logger:
            text = formatter.format(record)
            assert "\n" not in text
            lines.append(json.loads(text))
    return lines


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# Request ids, 500s and the access log ------------------------------------------------------


def test_500_body_is_generic_and_its_id_is_in_header_and_log_lines(
    client: TestClient, logs: pytest.LogCaptureFixture
) -> None:
    response = client.get("/v1/boom")
    assert response.status_code == 500
    rid = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(rid)
    assert response.json() == {"detail": "internal server error", "request_id": rid}
    assert "sk-live" not in response.text and "RuntimeError" not in response.text

    (access,) = [line for line in json_lines(logs, "grounded.access") if line["request_id"] == rid]
    assert access["route"] == "/v1/boom"
    assert access["method"] == "GET"
    assert access["status"] == 500
    assert access["error"] == "RuntimeError"
    assert "sk-live" not in json.dumps(access)

    (error,) = json_lines(logs, "grounded.api")
    assert error["request_id"] == rid
    assert error["level"] == "error"
    assert "RuntimeError" in str(error["exception"])  # the traceback stays in the log


def test_access_line_has_route_template_status_key_and_tenant(
    client: TestClient, logs: pytest.LogCaptureFixture
) -> None:
    response = client.get("/v1/collections/kb/sources")
    assert response.status_code == 200
    (line,) = json_lines(logs, "grounded.access")
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["route"] == SOURCES  # the template, never the raw path
    assert line["status"] == 200
    assert line["key"] == "gk_ab12"
    assert line["tenant"] == "acme"
    assert isinstance(line["duration_ms"], float)
    assert {"time", "method", "level"} <= set(line)


def test_unmatched_paths_are_logged_without_the_raw_path(
    client: TestClient, logs: pytest.LogCaptureFixture
) -> None:
    assert client.get("/wp-admin/<script>").status_code == 404
    (line,) = json_lines(logs, "grounded.access")
    assert line["route"] is None
    assert line["status"] == 404
    assert "wp-admin" not in json.dumps(line)


def test_a_sane_inbound_request_id_is_kept(client: TestClient) -> None:
    response = client.get("/v1/collections/kb/sources", headers={"X-Request-ID": "lb-7f3a.19_x"})
    assert response.headers["X-Request-ID"] == "lb-7f3a.19_x"


@pytest.mark.parametrize("hostile", ["abc\nSet-Cookie: x=1", "a" * 200, "two words", ""])
def test_a_hostile_inbound_request_id_is_replaced(
    client: TestClient, logs: pytest.LogCaptureFixture, hostile: str
) -> None:
    response = client.get("/v1/boom", headers={"X-Request-ID": hostile})
    rid = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(rid)
    assert response.json()["request_id"] == rid
    assert [line["request_id"] for line in json_lines(logs, "grounded.access")] == [rid]


def test_streams_carry_the_id_in_band_and_in_their_log_lines(
    client: TestClient, logs: pytest.LogCaptureFixture
) -> None:
    with client.stream("GET", "/v1/stream", headers={"X-Request-ID": "stream-1"}) as response:
        body = "".join(response.iter_text())
    assert response.headers["X-Request-ID"] == "stream-1"
    assert '{"request_id": "stream-1"}' in body
    # A line logged inside the stream, with no id passed, still gets it from the context.
    (warning,) = json_lines(logs, "grounded.api")
    assert warning["request_id"] == "stream-1"
    (access,) = json_lines(logs, "grounded.access")
    assert access["route"] == "/v1/stream"
    assert access["status"] == 200


def test_configure_logging_writes_one_json_line_per_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("grounded")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        configure_logging("info")
        configure_logging("info")  # idempotent: still one handler
        logging.getLogger("grounded.access").info("request", extra={"fields": {"status": 200}})
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    assert len(err) == 1
    line = json.loads(err[0])
    assert line["logger"] == "grounded.access"
    assert line["status"] == 200


# Metrics -----------------------------------------------------------------------------------


def test_metrics_count_requests_per_route_template_method_and_status(client: TestClient) -> None:
    ok = {"handler": SOURCES, "method": "GET", "status": "200"}
    failed = {"handler": "/v1/boom", "method": "GET", "status": "500"}
    before_ok = sample("http_requests_total", **ok)
    before_failed = sample("http_requests_total", **failed)
    before_latency = sample("http_request_duration_seconds_count", **ok)
    client.get("/v1/collections/kb/sources")
    client.get("/v1/collections/other/sources")
    client.get("/v1/boom")
    assert sample("http_requests_total", **ok) == before_ok + 2
    assert sample("http_requests_total", **failed) == before_failed + 1
    assert sample("http_request_duration_seconds_count", **ok) == before_latency + 2

    exposed = client.get("/metrics")
    assert exposed.status_code == 200
    assert 'handler="/v1/collections/{collection}/sources"' in exposed.text
    assert 'status="500"' in exposed.text
    assert "/v1/collections/kb/sources" not in exposed.text
    assert "/metrics" not in client.get("/openapi.json").text  # not in the schema


def test_metrics_expose_stage_answer_and_queue_metrics(client: TestClient) -> None:
    embed = sample("grounded_stage_seconds_count", stage="embed")
    embed_sum = sample("grounded_stage_seconds_sum", stage="embed")
    llm = sample("grounded_answers_total", generator="llm", abstained="false")
    degraded = sample("grounded_degraded_answers_total", reason="timeout")
    rejected = sample("grounded_ingest_rejected_total")

    metrics.observe_timings({"embed_ms": 250.0, "total_ms": 400.0, "not_a_stage": 1.0})
    metrics.observe_answer("llm", degraded=False, abstained=False, reason=None)
    metrics.observe_answer(
        "extractive",
        degraded=True,
        abstained=False,
        reason="LLM request timed out (after 3 attempt(s))",
    )
    metrics.set_ingest_queue_depth(lambda: 3)
    metrics.observe_ingest_rejected()

    assert sample("grounded_stage_seconds_count", stage="embed") == embed + 1
    assert sample("grounded_stage_seconds_sum", stage="embed") == pytest.approx(embed_sum + 0.25)
    assert sample("grounded_answers_total", generator="llm", abstained="false") == llm + 1
    assert sample("grounded_degraded_answers_total", reason="timeout") == degraded + 1
    assert sample("grounded_ingest_rejected_total") == rejected + 1
    text = client.get("/metrics").text
    assert 'grounded_stage_seconds_count{stage="total"}' in text
    assert 'stage="not_a_stage"' not in text
    assert "grounded_ingest_queue_depth 3.0" in text
    assert 'grounded_degraded_answers_total{reason="timeout"}' in text


def test_a_broken_queue_reads_as_zero_instead_of_breaking_the_scrape(client: TestClient) -> None:
    def closed() -> int:
        raise RuntimeError("queue closed")

    metrics.set_ingest_queue_depth(closed)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "grounded_ingest_queue_depth 0.0" in response.text


def test_a_metrics_dependency_can_refuse_the_scrape() -> None:
    def admin_only() -> None:
        raise HTTPException(403, "admin key required")

    app = build_app(metrics_dependencies=[Depends(admin_only)])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/metrics")
    assert response.status_code == 403
    assert "http_requests_total" not in response.text


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("LLM request timed out (after 3 attempt(s))", "timeout"),
        ("LLM endpoint unreachable (Connection refused) (after 2 attempt(s))", "connection"),
        ("LLM endpoint answered HTTP 429: slow down (after 4 attempt(s))", "rate_limited"),
        ("LLM endpoint answered HTTP 503: overloaded", "server_error"),
        ("LLM endpoint answered HTTP 401: bad key", "client_error"),
        ("LLM reply unusable: Expecting value (after 2 attempt(s))", "bad_response"),
        ("LLM reply has no choices (after 4 attempt(s))", "bad_response"),
        ("the LLM endpoint lists no models; set GROUNDED_LLM_MODEL", "bad_response"),
        ("LLM stream broke off: LLM request timed out", "timeout"),
        ("LLM stream broke off before it finished", "connection"),
        # Only the fixed prefix counts, never words the endpoint chose.
        ("LLM reply unusable: HTTP 500 timed out", "bad_response"),
        ("something new", "other"),
        (None, "other"),
    ],
)
def test_llm_failure_kinds(reason: str | None, kind: str) -> None:
    assert metrics.llm_failure_kind(reason) == kind


def test_llm_failures_count_once_per_failed_call_not_per_attempt() -> None:
    server_errors = sample("grounded_llm_failures_total", kind="server_error")
    client_errors = sample("grounded_llm_failures_total", kind="client_error")
    messages = [{"role": "user", "content": "hi"}]
    with FakeLLM("never") as llm:
        chat = OpenAIChat(
            base_url=llm.url, api_key=None, model="fake-model", max_retries=2, backoff=0.01
        )
        llm.script(*["500"] * 6)
        for _ in range(2):
            with pytest.raises(LLMError, match="HTTP 500"):
                chat.complete(messages)
        assert len(llm.requests) == 6  # three attempts per call, one count per call
        llm.script("401")
        with pytest.raises(LLMError, match="HTTP 401"):
            chat.complete(messages)
    assert sample("grounded_llm_failures_total", kind="server_error") == server_errors + 2
    assert sample("grounded_llm_failures_total", kind="client_error") == client_errors + 1
