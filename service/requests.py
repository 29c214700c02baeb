"""Requests → what the pipeline runs: defaults filled in, configured limits enforced.

Shared by the REST API and the CLI, so both refuse the same requests with the same words; errors
are domain errors (:mod:`service.errors`), mapped to HTTP statuses once, in the app.

Example::

    params = search_params(SearchRequest(query="what is BM25?"), settings, tenant="acme")
"""

from __future__ import annotations

from ingest.documents import Document, check_metadata
from ingest.names import DEFAULT_TENANT
from ingest.settings import Settings

from .api.schemas import IngestRequest, SearchRequest, to_field_filters
from .errors import InvalidRequest, PayloadTooLarge
from .retrieval import SearchParams


def search_params(
    body: SearchRequest, settings: Settings, tenant: str = DEFAULT_TENANT
) -> SearchParams:
    """Request → :class:`SearchParams` for ``tenant``, filling defaults and enforcing limits."""
    top_k = body.top_k or settings.top_k
    if top_k > settings.max_top_k:
        raise InvalidRequest(f"top_k must be between 1 and {settings.max_top_k}, got {top_k}")
    if len(body.query) > settings.max_query_chars:
        raise InvalidRequest(
            f"query is {len(body.query)} characters; the limit is {settings.max_query_chars}"
        )
    try:
        filters = to_field_filters(body.filters)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    configured = settings.reranker != "none"
    if body.rerank and not configured:
        raise InvalidRequest("rerank requested but no reranker is configured")
    return SearchParams(
        query=body.query,
        collection=body.collection or settings.collection,
        top_k=top_k,
        mode=body.mode or settings.search_mode,
        fusion=body.fusion or settings.fusion,
        filters=filters,
        rrf_k=body.rrf_k,
        dense_weight=body.dense_weight,
        sparse_weight=body.sparse_weight,
        rerank=configured if body.rerank is None else body.rerank,
        multi_query=settings.multi_query if body.multi_query is None else body.multi_query,
        hyde=settings.hyde if body.hyde is None else body.hyde,
        tenant=tenant,
    )


def wants_route(body: SearchRequest, settings: Settings) -> bool:
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
