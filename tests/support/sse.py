"""Server-sent events from Starlette's TestClient, read with httpx-sse."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, cast

import httpx
import httpx_sse
from fastapi.testclient import TestClient


def connect_sse(
    client: TestClient, method: str, url: str, **kwargs: Any
) -> AbstractContextManager[httpx_sse.EventSource]:
    """:func:`httpx_sse.connect_sse` on a TestClient.

    Starlette's TestClient is an ``httpx2.Client``: the same ``stream`` API that httpx-sse calls,
    but httpx-sse is typed for ``httpx.Client``, hence the one cast.
    """
    return httpx_sse.connect_sse(cast(httpx.Client, client), method, url, **kwargs)
