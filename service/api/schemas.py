"""Request and response bodies of the REST API, apart from the logic that fills them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from ingest.documents import INT64
from ingest.index import FieldFilter
from ingest.index.base import FILTERABLE_FIELDS, Fusion, Mode
from ingest.names import CollectionName

from .errors import ErrorBody

# Every request model refuses NaN/Infinity and unknown fields (chat keeps OpenAI's extras).
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

# Values Qdrant can compare: 64-bit integers, finite floats, bounded strings.
Int64 = Annotated[int, Field(ge=INT64[0], le=INT64[1])]
Text = Annotated[str, StringConstraints(max_length=1024)]
Scalar = Annotated[str, StringConstraints(max_length=1024)] | Int64 | float | bool
_FILTER_KEY = re.compile(r"(doc_id|source|title|chunk_index|metadata(\.[A-Za-z0-9_-]+)+)")


def _filter_key(key: str) -> str:
    if not _FILTER_KEY.fullmatch(key):
        raise ValueError(
            f"cannot filter on {key[:80]!r}: use one of {', '.join(FILTERABLE_FIELDS)} "
            "or 'metadata.<field>' (letters, digits, '_' and '-' between dots)"
        )
    return key


FilterKey = Annotated[str, AfterValidator(_filter_key)]


class RangeFilter(BaseModel):
    model_config = STRICT
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


class AnyOfFilter(BaseModel):
    model_config = STRICT
    # One type per list: Qdrant matches keywords or integers, never a mix.
    any: list[Text] | list[Int64] = Field(min_length=1, max_length=1024)


FilterValue = Scalar | AnyOfFilter | RangeFilter


def to_field_filters(filters: dict[str, FilterValue]) -> tuple[FieldFilter, ...]:
    result: list[FieldFilter] = []
    for key, cond in filters.items():
        _filter_key(key)
        if isinstance(cond, AnyOfFilter):
            result.append(FieldFilter(key, any=tuple(cond.any)))
        elif isinstance(cond, RangeFilter):
            if not any(v is not None for v in (cond.gte, cond.gt, cond.lte, cond.lt)):
                raise ValueError(f"range filter on {key!r} needs one of gte, gt, lte, lt")
            result.append(FieldFilter(key, gte=cond.gte, gt=cond.gt, lte=cond.lte, lt=cond.lt))
        elif isinstance(cond, float) and not cond.is_integer():
            raise ValueError(f"equality on {key!r} needs a string, integer or boolean; use a range")
        elif isinstance(cond, float) and not INT64[0] <= cond <= INT64[1]:
            raise ValueError(f"equality on {key!r}: the number is outside the 64-bit range")
        else:
            result.append(FieldFilter(key, value=int(cond) if isinstance(cond, float) else cond))
    return tuple(result)


class SearchOptions(BaseModel):
    """How to search, shared by /v1/search, /v1/query and the chat endpoint. ``filters`` maps a
    field to a value (equality), ``{"any": [...]}`` or a range ``{"gte": 2019, "lt": 2024}``;
    fields are ``doc_id``, ``source``, ``title``, ``chunk_index`` or ``metadata.<name>``."""

    collection: CollectionName | None = Field(
        None, description="Defaults to the configured collection."
    )
    top_k: int | None = Field(None, ge=1, le=10_000, description="Defaults to settings.top_k.")
    mode: Mode | None = None
    fusion: Fusion | None = None
    rrf_k: int | None = Field(None, ge=1, le=1_000_000)
    dense_weight: float | None = Field(None, gt=0, le=1000)
    sparse_weight: float | None = Field(None, gt=0, le=1000)
    rerank: bool | None = Field(
        None, description="Rerank candidates; defaults to on when configured."
    )
    multi_query: int | None = Field(
        None, ge=0, le=10, description="LLM rephrasings fused by RRF; 0 = off (default: settings)."
    )
    hyde: bool | None = Field(None, description="HyDE dense leg (default: settings).")
    route: bool | None = Field(
        None,
        description="Route to a configured source; defaults to on when routes are configured "
        "and no collection is named.",
    )
    filters: dict[FilterKey, FilterValue] = Field(default_factory=dict, max_length=32)


class SearchRequest(SearchOptions):
    """A search: the question and :class:`SearchOptions`."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [{"query": "How does grounded store BM25?", "top_k": 5, "mode": "hybrid"}]
        },
    )

    query: str = Field(min_length=1, description="At most settings.max_query_chars characters.")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must not be empty or whitespace")
        return value.strip()


class ChatTurn(BaseModel):
    model_config = STRICT
    role: Literal["user", "assistant"]
    content: str


class QueryRequest(SearchRequest):
    stream: bool = Field(False, description="Server-Sent Events: delta events, then done.")
    generator: Literal["llm", "extractive"] | None = Field(
        None, description="Default: the LLM when one is configured."
    )
    history: list[ChatTurn] = Field(
        default_factory=list, max_length=100, description="Earlier turns, oldest first."
    )


class ChunkOut(BaseModel):
    rank: int
    score: float
    id: str
    doc_id: str
    chunk_index: int
    title: str
    text: str
    source: str
    start: int
    end: int
    headings: list[str]
    metadata: dict[str, Any]
    similarity: float | None = None


class RouteOut(BaseModel):
    name: str | None = Field(description="None: no route reached the confidence floor.")
    score: float
    router: str
    scores: dict[str, float]


class SearchResponse(BaseModel):
    collection: str
    mode: str
    fusion: str | None
    results: list[ChunkOut]
    timings: dict[str, float]
    route: RouteOut | None = None
    transforms: dict[str, Any] = Field(
        default_factory=dict, description="Rephrasings (multi-query) and the HyDE passage."
    )
    warnings: list[str] = Field(default_factory=list, description="Stages that fell back.")


class CitationOut(BaseModel):
    number: int
    chunk_id: str
    doc_id: str
    title: str
    source: str
    start: int
    end: int


class SqlAttemptOut(BaseModel):
    sql: str
    error: str | None = Field(description="Why the database refused it; None: it ran.")


class SqlCitationOut(BaseModel):
    """The citation of an answer from a sql route: the query that ran and its rows."""

    route: str
    database: str = Field(description="The database's file name or URL (no password).")
    query: str | None = Field(description="The SELECT that ran (or last failed).")
    columns: list[str]
    rows: list[list[Any]] = Field(description="The first sql_answer_rows rows.")
    row_count: int = Field(description="Rows fetched, at most sql_max_rows.")
    truncated: bool = Field(description="The query had more rows than sql_max_rows.")
    attempts: list[SqlAttemptOut] = Field(description="Each SQL tried, in order.")
    error: str | None = Field(None, description="Why no rows came back (refused, failed).")


class QueryResponse(SearchResponse):
    answer: str
    generator: str
    model: str | None = None
    abstained: bool
    degraded: bool = Field(False, description="The LLM failed; the answer is extractive.")
    degraded_reason: str | None = None
    citations: list[CitationOut]
    citations_attributed: bool = Field(
        False, description="The model cited nothing; grounded matched sentences to blocks."
    )
    dropped_citations: list[int] = Field(
        default_factory=list, description="Cited numbers that named no context block (removed)."
    )
    context: list[ChunkOut] = Field(
        default_factory=list, description="What the generator was given; context[n-1] is [n]."
    )
    usage: dict[str, int] = Field(default_factory=dict)
    sql: SqlCitationOut | None = Field(
        None, description="A sql route answered: the query and its rows are the citation."
    )


DocId = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class DocumentIn(BaseModel):
    """One document. ``text`` may be empty or blank: such a document is reported as skipped.
    Limits (documents per request, bytes per text, metadata depth and size) are settings."""

    model_config = STRICT
    id: DocId
    text: str
    title: Text = ""
    source: Annotated[str, StringConstraints(max_length=4096)] = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class IngestRequest(BaseModel):
    model_config = STRICT
    collection: CollectionName | None = None
    documents: list[DocumentIn] = Field(min_length=1)


class DeleteRequest(BaseModel):
    model_config = STRICT
    collection: CollectionName | None = None
    doc_ids: list[DocId] = Field(min_length=1, max_length=10_000)


class CollectionOut(BaseModel):
    name: str
    points: int
    model: str
    dimension: int
    chunker: str
    bm25: dict[str, Any]


class JobProgress(BaseModel):
    documents_done: int
    documents_total: int
    batches_done: int
    batches_total: int
    added: int
    updated: int
    unchanged: int = Field(description="Documents skipped because their content was unchanged.")
    chunks_written: int


class JobProblem(BaseModel):
    id: str = Field(description="The document's id.")
    reason: str


class JobOut(BaseModel):
    """An ingest job: ``GET /v1/jobs/{id}`` until ``state`` is succeeded, failed or cancelled."""

    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    collection: str
    tenant: str
    progress: JobProgress
    errors: list[JobProblem] = Field(description="Documents that failed (the others are written).")
    skipped: list[JobProblem] = Field(description="Documents with nothing to index.")
    problems_omitted: int = Field(description="Errors and skips beyond the first 1000 of each.")
    created_at: str
    started_at: str | None
    finished_at: str | None
    timings: dict[str, float]


class IngestReportOut(BaseModel):
    """``POST /v1/ingest?wait=true`` once its job finished (a 202 with the job otherwise)."""

    job_id: str
    state: str
    documents: int
    added: int
    updated: int
    unchanged: int
    deleted: int = 0
    chunks_written: int
    errors: list[JobProblem]
    skipped: list[JobProblem]
    seconds: float


# GET /v1/info -----------------------------------------------------------------------------


class SearchDefaults(BaseModel):
    """What a search or question gets for each option it leaves unset."""

    top_k: int
    mode: Mode
    fusion: Fusion
    rrf_k: int
    multi_query: int = Field(description="LLM rephrasings; 0 = off.")
    hyde: bool
    rerank: bool = Field(description="On by default exactly when a reranker is configured.")


class UploadLimits(BaseModel):
    """What ``POST /v1/files`` accepts."""

    max_files: int = Field(description="Files per request (GROUNDED_MAX_DOCUMENTS_PER_REQUEST).")
    max_file_bytes: int = Field(description="Bytes per file (GROUNDED_MAX_FILE_BYTES).")
    max_request_bytes: int = Field(
        description="Bytes of the whole request, every file together (GROUNDED_MAX_BODY_BYTES)."
    )
    suffixes: list[str] = Field(description="File types the loaders read, e.g. '.md'.")


class InfoOut(BaseModel):
    """What this server offers, for a client drawing its controls (the playground)."""

    version: str
    default_collection: str
    embedding_model: str
    generator: Literal["llm", "extractive"] = Field(
        description="The generator /v1/query uses when the request names none."
    )
    llm_model: str | None = Field(
        description="The configured LLM model; None without an LLM, or when the endpoint's "
        "first model is used (not looked up: this route never calls the LLM)."
    )
    reranker: str | None = Field(description="The reranker's name; None when none is configured.")
    transforms: bool = Field(description="Multi-query and HyDE are possible (an LLM is there).")
    defaults: SearchDefaults
    upload: UploadLimits
    reports: bool = Field(description="A reports folder is configured and exists.")


# POST /v1/files ---------------------------------------------------------------------------


class FileResult(BaseModel):
    """How one uploaded file went. A JSON Lines file can have documents and an ``error`` (the
    lines that failed)."""

    name: str = Field(description="The file's base name: the id and source of its document.")
    documents: int = Field(description="Documents the file added to the job.")
    error: str | None = Field(description="Why the file (or some of its lines) failed.")


class UploadOut(BaseModel):
    """``POST /v1/files``: the ingest job of the files that loaded, and how each file went."""

    job: JobOut
    files: list[FileResult]


class UploadRejected(ErrorBody):
    """A 422 of ``POST /v1/files``: no file produced a document (``files`` says why for each),
    or the request itself was invalid (``errors``)."""

    files: list[FileResult] | None = Field(
        None, description="Each file and why it failed, when no file produced a document."
    )


# GET /v1/reports --------------------------------------------------------------------------


class ReportOut(BaseModel):
    """An eval HTML report; ``GET /v1/reports/{id}`` serves it."""

    id: str = Field(description="First 16 hex digits of the SHA-256 of ``path``.")
    title: str = Field(description="The page's <title>, else its path.")
    path: str = Field(description="Relative to the reports folder, '/'-separated; for display.")
    modified: str = Field(description="Last modified, ISO 8601 in UTC.")
    bytes: int
