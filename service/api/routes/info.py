"""``GET /v1/info``: what this server offers, so a client can draw its controls.

The playground asks once, at load, which generator answers by default, whether a reranker or an
LLM (for multi-query and HyDE) is there, the defaults a request gets, what an upload may carry
and whether there are eval reports. Every value is read from the running pipeline and its
settings, the ones that also resolve requests (:func:`service.requests.resolve`), so what the
page offers cannot drift from what the API does. Nothing here calls the LLM or the index: the
route stays cheap enough to call on every page load.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ingest.loaders import SUPPORTED_SUFFIXES

from ..deps import PipelineDep, Reader
from ..schemas import InfoOut, SearchDefaults, UploadLimits

router = APIRouter(prefix="/v1", tags=["info"])


@router.get("/info", response_model=InfoOut)
def info(request: Request, pipeline: PipelineDep, _caller: Reader) -> InfoOut:
    """The server's version, models, defaults, upload limits and whether reports exist."""
    settings = pipeline.settings
    has_llm = pipeline.llm is not None
    reports_dir = settings.reports_dir
    return InfoOut(
        version=request.app.version,
        default_collection=settings.collection,
        embedding_model=pipeline.embedder.name,
        generator="llm" if pipeline.generator_name == "llm" else "extractive",
        llm_model=settings.llm_model if has_llm else None,
        reranker=pipeline.reranker.name if pipeline.reranker is not None else None,
        transforms=has_llm,
        defaults=SearchDefaults(
            top_k=settings.top_k,
            mode=settings.search_mode,
            fusion=settings.fusion,
            rrf_k=settings.rrf_k,
            multi_query=settings.multi_query,
            hyde=settings.hyde,
            # As resolve() decides it: on when the pipeline has a reranker, however it got one.
            rerank=pipeline.reranker is not None,
        ),
        upload=UploadLimits(
            max_files=settings.max_documents_per_request,
            max_file_bytes=settings.max_file_bytes,
            max_request_bytes=settings.max_body_bytes,
            suffixes=list(SUPPORTED_SUFFIXES),
        ),
        reports=reports_dir is not None and reports_dir.is_dir(),
    )
