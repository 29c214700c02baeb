"""A scriptable OpenAI-compatible server for tests: exact replies and injected faults.

Each request to ``/v1/chat/completions`` takes the next scripted behaviour, or, when the script
is empty, answers with ``reply(request_body)``. Behaviours::

    "429" / "500" / "401"      that HTTP status with an OpenAI-style error body
    "timeout"                  sleep longer than any test's client timeout, then answer
    "garbage"                  200 with a body that is not JSON
    "empty"                    200 with ``"choices": []``
    "break"                    (streaming) two deltas, then the connection drops
    any other string           that text as the assistant's reply (in each of the ``n`` choices)

Example::

    with FakeLLM(reply=lambda body: "Paris [1].") as llm:
        llm.script("500", "429")       # two failures, then the reply
        OpenAIChat(base_url=llm.url, ...)
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], str]


def prompt_text(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in body.get("messages", []))


def _constant(text: str) -> Reply:
    return lambda _body: text


class FakeLLM:
    def __init__(self, reply: Reply | str = "OK.", sleep: float = 5.0) -> None:
        self.reply: Reply = reply if callable(reply) else _constant(reply)
        self.sleep = sleep
        self.requests: list[dict[str, Any]] = []
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *behaviours: str) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def _next(self, body: dict[str, Any]) -> str:
        with self._lock:
            self.requests.append(body)
            if self._script:
                return self._script.popleft()
        return self.reply(body)

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                models = {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
                self._send(200, json.dumps(models).encode())

            def handle(self) -> None:
                # The client gave up (a timeout test): nothing to report.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    super().handle()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                behaviour = fake._next(body)
                if behaviour in ("429", "500", "401"):
                    error = {"error": {"message": f"injected {behaviour}", "type": "test"}}
                    self._send(int(behaviour), json.dumps(error).encode())
                elif behaviour == "timeout":
                    time.sleep(fake.sleep)
                    self._send(200, _completion("too late"))
                elif behaviour == "garbage":
                    self._send(200, b"<html>502 Bad Gateway</html>{not json")
                elif behaviour == "empty":
                    self._send(
                        200,
                        json.dumps(
                            {
                                "id": "x",
                                "object": "chat.completion",
                                "created": 0,
                                "model": "fake-model",
                                "choices": [],
                            }
                        ).encode(),
                    )
                elif body.get("stream"):
                    self._stream(behaviour)
                else:
                    self._send(200, _completion(behaviour, int(body.get("n") or 1)))

            def _stream(self, text: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = ["Partial ", "answer "] if text == "break" else _pieces(text)
                for word in words:
                    self.wfile.write(
                        _event(
                            {
                                "choices": [
                                    {"index": 0, "delta": {"content": word}, "finish_reason": None}
                                ]
                            }
                        )
                    )
                    self.wfile.flush()
                if text == "break":
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(
                    _event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                )
                self.wfile.write(_event({"choices": [], "usage": _usage(text)}))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        return Handler


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _usage(text: str) -> dict[str, int]:
    n = len(text.split())
    return {"prompt_tokens": 100, "completion_tokens": n, "total_tokens": 100 + n}


def _event(payload: dict[str, Any]) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-model",
        **payload,
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _completion(text: str, n: int = 1) -> bytes:
    """A chat completion with ``n`` choices (a request's ``n``), each ``text``."""
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake-model",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
                for i in range(n)
            ],
            "usage": _usage(text),
        }
    ).encode()
