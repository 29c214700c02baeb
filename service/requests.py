"""Requests → what the pipeline runs: defaults filled in, configured limits enforced.

Shared by the REST API and the CLI, so both refuse the same requests with the same words; errors
are domain errors (:mod:`service.errors`, and :class:`~service.pipeline.NotConfigured` for a stage
the pipeline lacks), mapped to HTTP statuses once, in the app.

A search or a question resolves to one pair: the :class:`~service.retrieval.SearchParams` to
retrieve with and the :class:`~service.pipeline.QueryOptions` around it. What a request may ask
for is judged against the assembled pipeline, not the settings alone: a pipeline given a
ready-made reranker reranks even where ``settings.reranker`` is ``"none"``.

Example::

    params, options = resolve(QueryRequest(query="what is BM25?"), pipeline, tenant="acme")
    result = pipeline.query(params, options)
"""

from __future__ import annotations

from collections.abc import Sequence

from ingest.documents import Document, check_metadata
from ingest.index import FieldFilter
from ingest.names import DEFAULT_TENANT
from ingest.settings import Settings

from .api.schemas import IngestRequest, QueryRequest, SearchRequest, to_field_filters
from .errors import InvalidRequest, PayloadTooLarge
from .llm import Message
from .pipeline import QueryOptions, RagPipeline
from .retrieval import SearchParams


def check_limits(body: SearchRequest, settings: Settings) -> None:
    """Refuse a request that breaks a configured limit. It needs the settings only, so the CLI
    runs it before any model loads; :func:`resolve` runs it again."""
    top_k = body.top_k or settings.top_k
    if top_k > settings.max_top_k:
        raise InvalidRequest(f"top_k must be between 1 and {settings.max_top_k}, got {top_k}")
    if len(body.query) > settings.max_query_chars:
        raise InvalidRequest(
            f"query is {len(body.query)} characters; the limit is {settings.max_query_chars}"
        )
    _check_fusion_knobs(body, settings)
    _filters(body)


def _check_fusion_knobs(body: SearchRequest, settings: Settings) -> None:
    """RRF's k and leg weights do nothing under DBSF (Qdrant's DBSF takes no weights), so a
    request that sets them there is refused rather than answered as if they had applied."""
    fusion = body.fusion or settings.fusion
    knobs = [k for k in ("rrf_k", "dense_weight", "sparse_weight") if getattr(body, k) is not None]
    if knobs and fusion != "rrf":
        raise InvalidRequest(
            f"{', '.join(knobs)} tune RRF fusion, but this search fuses with {fusion} "
            f'(the default), which has none: send "fusion": "rrf" with them'
            if body.fusion is None
            else f"{', '.join(knobs)} tune RRF fusion and do nothing with fusion {fusion}: "
            'send "fusion": "rrf" with them'
        )


def _filters(body: SearchRequest) -> tuple[FieldFilter, ...]:
    try:
        return to_field_filters(body.filters)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def resolve(
    body: SearchRequest,
    pipeline: RagPipeline,
    tenant: str = DEFAULT_TENANT,
    *,
    history: Sequence[Message] | None = None,
    instructions: str | None = None,
) -> tuple[SearchParams, QueryOptions]:
    """A search or a question (a :class:`QueryRequest` adds ``generator`` and ``history``) →
    what ``pipeline`` runs for ``tenant``, defaults filled in and limits enforced.

    Args:
        history: earlier chat turns when they come from elsewhere than the body (the chat
            endpoint's messages); default: a :class:`QueryRequest`'s own.
        instructions: the app's system prompt (the chat endpoint's system messages).

    Raises:
        InvalidRequest: a limit is broken.
        NotConfigured: ``rerank: true`` and the pipeline has no reranker.
    """
    settings = pipeline.settings
    check_limits(body, settings)
    if body.rerank:
        pipeline.require_reranker()  # refused now, before routing spends anything
    params = SearchParams(
        query=body.query,
        collection=body.collection or settings.collection,
        top_k=body.top_k or settings.top_k,
        mode=body.mode or settings.search_mode,
        fusion=body.fusion or settings.fusion,
        filters=_filters(body),
        rrf_k=body.rrf_k,
        dense_weight=body.dense_weight,
        sparse_weight=body.sparse_weight,
        # On by default when the pipeline has a reranker, however it got one.
        rerank=pipeline.reranker is not None if body.rerank is None else body.rerank,
        multi_query=settings.multi_query if body.multi_query is None else body.multi_query,
        hyde=settings.hyde if body.hyde is None else body.hyde,
        tenant=tenant,
    )
    asked = body if isinstance(body, QueryRequest) else None
    if history is None:
        history = [turn.model_dump() for turn in asked.history] if asked else []
    options = QueryOptions(
        route=_wants_route(body, settings),
        generator=asked.generator if asked else None,
        history=tuple(history),
        instructions=instructions,
    )
    return params, options


def _wants_route(body: SearchRequest, settings: Settings) -> bool:
    """Route when asked to, or by default when routes exist and the request names no collection."""
    if body.route is not None:
        return body.route
    return bool(settings.routes) and body.collection is None


def ingest_documents(body: IngestRequest, settings: Settings) -> list[Document]:
    """The request's documents, refused whole when one breaks a limit (nothing is written)."""
    if len(body.documents) > settings.max_documents_per_request:
        raise PayloadTooLarge(
            f"{len(body.documents)} documents in one request; the limit is "
            f"{settings.max_documents_per_request} (GROUNDED_MAX_DOCUMENTS_PER_REQUEST)"
        )
    seen: set[str] = set()
    for n, doc in enumerate(body.documents):
        if doc.id in seen:
            raise InvalidRequest(f"documents[{n}]: duplicate document id {doc.id!r}")
        seen.add(doc.id)
        size = len(doc.text.encode("utf-8"))
        if size > settings.max_document_bytes:
            raise PayloadTooLarge(
                f"documents[{n}] ({doc.id!r}): text is {size} bytes; the limit is "
                f"{settings.max_document_bytes} (GROUNDED_MAX_DOCUMENT_BYTES)"
            )
        try:
            check_metadata(
                doc.metadata,
                max_depth=settings.max_metadata_depth,
                max_bytes=settings.max_metadata_bytes,
            )
        except ValueError as exc:
            raise InvalidRequest(f"documents[{n}] ({doc.id!r}): {exc}") from None
    return [Document(d.id, d.text, d.title, d.source, d.metadata) for d in body.documents]
