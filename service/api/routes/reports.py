"""``GET /v1/reports`` and ``GET /v1/reports/{id}``: the eval reports in ``reports_dir``.

The reports are HTML that grounded wrote, but they sit in a folder anyone with access to the
machine can write to, so a report is served as untrusted markup: a Content-Security-Policy that
allows no script, no network and no plugin (inline styles and ``data:`` images are what the
reports use), a ``sandbox`` that gives the page an opaque origin even when opened directly, and
``nosniff``. The id is matched against the listing only (:mod:`service.reports`); it never
becomes a path. Reports are not per tenant: they measure the system, and any key with ``read``
sees them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from ...reports import ID_LENGTH, list_reports, read_report
from ..deps import PipelineDep, Reader
from ..schemas import ReportOut

router = APIRouter(prefix="/v1/reports", tags=["reports"])

REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
REPORT_HEADERS = {
    "Content-Security-Policy": REPORT_CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

ReportId = Annotated[
    str, Path(pattern=f"^[0-9a-f]{{{ID_LENGTH}}}$", description="An id GET /v1/reports listed.")
]


@router.get("", response_model=list[ReportOut])
def reports(pipeline: PipelineDep, _caller: Reader) -> list[dict[str, Any]]:
    """The HTML reports under ``reports_dir``, newest first (``[]`` when there is no folder)."""
    return [asdict(r) for r in list_reports(pipeline.settings.reports_dir)]


@router.get(
    "/{report_id}",
    response_class=HTMLResponse,
    responses={200: {"description": "The report, a self-contained HTML page."}},
)
def report(report_id: ReportId, pipeline: PipelineDep, _caller: Reader) -> HTMLResponse:
    """One report as ``text/html``, under a policy that lets it run nothing."""
    page = read_report(pipeline.settings.reports_dir, report_id)
    return HTMLResponse(page, headers=REPORT_HEADERS)
