"""``GET /``: the playground, a page to try the API on your own documents.

Plain HTML, CSS and one script module under ``service/api/playground``, committed as they are
served: no build step, nothing fetched from elsewhere. The page calls only the public routes,
with the key the user types (kept in the tab's ``sessionStorage``).

The Content-Security-Policy allows scripts from this origin alone, so markup that slips into a
document can never run; ``style-src 'unsafe-inline'`` and ``img-src data:`` are for the eval
reports, which carry their own style and charts and are shown in a sandboxed frame that inherits
this policy.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}


def _asset(name: str) -> bytes:
    return resources.files("service.api").joinpath("playground", name).read_bytes()


def _serve(name: str, media_type: str) -> Response:
    return Response(_asset(name), media_type=media_type, headers=HEADERS)


@router.get("/")
def playground() -> Response:
    return _serve("index.html", "text/html; charset=utf-8")


@router.get("/playground/{name}")
def asset(name: str) -> Response:
    # The name only picks an entry of _TYPES: it never builds a path.
    if name not in _TYPES:
        raise HTTPException(404, "no such playground file")
    return _serve(name, _TYPES[name])
