"""The one settings object of grounded, composed of one model per concern.

Read, highest priority first, from: keyword arguments (the CLI's flags), environment variables
prefixed ``GROUNDED_`` (``GROUNDED_DATA_DIR``, ``GROUNDED_QDRANT_URL`` ...), a TOML config file
(``GROUNDED_CONFIG`` or ``./grounded.toml`` when present), ``OPENAI_BASE_URL`` /
``OPENAI_API_KEY`` (for ``llm_base_url`` / ``llm_api_key`` only), then the defaults below.

Why concerns: some 90 knobs in one flat class hid which belong together (the reranker's eight,
the worker fleet's twelve). Each concern is now a small pydantic model (:class:`ChunkingSettings`,
:class:`RerankSettings` ...) holding its fields and the validators that need only them, and
:class:`Settings` inherits them all. Inheriting, not nesting (``settings.chunking.size``), keeps
every name flat: ``settings.chunk_size``, ``GROUNDED_CHUNK_SIZE`` and ``chunk_size = 200`` in the
TOML file work as before, so no call site, deployment or config file changes.
:meth:`Settings.concerns` lists the concerns for docs/configuration.md, generated from them by
``python -m ingest.settings_docs``.

The concerns of serving (API, auth, the answer LLM, jobs) and of evaluation (the judge) live here
too, in their own sections below, because ``service/`` and ``eval/`` import ``ingest/``, never
the other way: one object must be importable by all three.

Example::

    from ingest.settings import ChunkingSettings, Settings
    settings = Settings(data_dir="/tmp/grounded", chunk_size=200)
    settings.chunk_size, ChunkingSettings.model_fields.keys()  # 200, chunk_size and chunk_overlap
    [concern.title for concern in Settings.concerns()]          # ['Storage', 'Qdrant server ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import limits
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .embedding import Backend
from .index.base import Fusion as FusionMethod
from .index.base import Mode as SearchMode
from .names import DEFAULT_TENANT, CollectionName, TenantName

DEFAULT_CONFIG_FILE = "grounded.toml"
# Where `grounded eval ladder` writes its reports unless told otherwise, and where the API looks
# for them (``reports_dir``): one constant, so the two cannot drift apart.
DEFAULT_REPORTS_DIR = Path("eval-results")

# Field -> the OpenAI SDK's variable that fills it when neither a keyword argument, a GROUNDED_
# variable nor the TOML file sets it.
OPENAI_FALLBACKS: dict[str, str] = {
    "llm_base_url": "OPENAI_BASE_URL",
    "llm_api_key": "OPENAI_API_KEY",
}


class SqlExample(BaseModel):
    """A question and the SQL that answers it: a few-shot example of a sql route."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="A question asked of the database.")
    sql: str = Field(min_length=1, description="The SELECT statement that answers it.")


class Route(BaseModel):
    """A destination a question can be routed to: a collection and/or a prompt template
    (``kind = "search"``), or a database the LLM writes a SELECT for (``kind = "sql"``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, description="Unique name; reported with each answer that takes the route."
    )
    description: str = Field(
        min_length=1, description="What questions belong here; the routers match against it."
    )
    collection: CollectionName | None = Field(
        None, description="Collection to search; unset = the default collection."
    )
    prompt: str | None = Field(None, description="Extra instructions for the answer LLM.")
    examples: list[str] = Field(
        default_factory=list, description="Example questions, matched like the description."
    )
    kind: Literal["search", "sql"] = Field(
        "search", description="'search' the collection, or answer with SQL on 'database'."
    )
    database: str | None = Field(
        None,
        description="sql routes: a SQLite file or a SQLAlchemy URL, opened read-only.",
    )
    sql_examples: list[SqlExample] = Field(
        default_factory=list,
        description="sql routes: question/SQL pairs, retrieved by similarity as few-shot "
        "examples (and matched by the router like examples).",
    )

    @model_validator(mode="after")
    def _check_kind(self) -> Route:
        if self.kind == "sql":
            if not self.database:
                raise ValueError(f"route {self.name!r} is a sql route: set its database")
            if self.collection:
                raise ValueError(f"route {self.name!r} is a sql route: it searches no collection")
        elif self.database or self.sql_examples:
            raise ValueError(
                f'route {self.name!r} names a database or sql_examples: set kind = "sql"'
            )
        return self


class Concern(BaseModel):
    """The fields of one concern; :class:`Settings` inherits every concern.

    A concern sets no ``model_config``: pydantic merges the configs of all bases into
    :class:`Settings`, whose own config (``GROUNDED_`` prefix, extra keys ignored) must hold.
    Its validators check only its own fields, and their names are unique across concerns, since
    a validator inherited under the same name as another would replace it.
    """

    title: ClassVar[str]  # the heading of the concern's table in docs/configuration.md


# Concerns of the index: read by ingest/ and by the index adapters ---------------------------


class StorageSettings(Concern):
    """Where the index lives, and which collection and tenant a request names by default."""

    title = "Storage"

    data_dir: Path = Field(Path("data"), description="Where the embedded Qdrant Edge shards live.")
    qdrant_url: str | None = Field(
        None, description="Qdrant server or cluster URL; unset = embedded Qdrant Edge in data_dir."
    )
    qdrant_api_key: SecretStr | None = Field(None, description="API key of the Qdrant server.")
    collection: CollectionName = Field(
        "default", description="Collection used when a command or request names none."
    )
    tenant: TenantName = Field(
        DEFAULT_TENANT,
        description="Tenant of local CLI ingest and search (API requests take their key's).",
    )

    @property
    def uses_server(self) -> bool:
        return bool(self.qdrant_url)


class QdrantClusterSettings(Concern):
    """How a Qdrant server or cluster lays out new collections (fixed at creation), and its
    requests; used with qdrant_url."""

    title = "Qdrant server or cluster"

    qdrant_shard_number: int | None = Field(
        None, ge=1, description="Shards of a new collection; unset = the server's default."
    )
    qdrant_replication_factor: int | None = Field(
        None, ge=1, description="Copies of each shard (2 on 3 nodes survives a node loss)."
    )
    qdrant_write_consistency_factor: int | None = Field(
        None, ge=1, description="Replicas that must acknowledge a write; unset = 1."
    )
    qdrant_on_disk_payload: bool = Field(
        True, description="Keep payloads on disk, leaving RAM to vectors and indexes."
    )
    qdrant_timeout: int = Field(30, gt=0, description="Seconds per Qdrant server request.")
    bulk_defer_indexing: bool = Field(
        True,
        description="Bulk loads (`grounded migrate`) build the HNSW graph once at the end "
        "instead of while writing.",
    )


class IndexTuningSettings(Concern):
    """The dense HNSW graph, scalar (int8) quantization and BM25's full-scan threshold; the dense
    fields unset = Qdrant's defaults. The graph, quantization and threshold are fixed when a
    collection is created; the search fields apply to every query."""

    title = "Index tuning (HNSW, quantization, BM25 full scan)"

    hnsw_m: int | None = Field(
        None,
        ge=4,
        le=128,
        description="HNSW links per node of new collections; unset = Qdrant's 16.",
    )
    hnsw_ef_construct: int | None = Field(
        None,
        ge=4,
        le=4096,
        description="HNSW candidates while building new collections' graphs; unset = 100.",
    )
    hnsw_ef: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="HNSW candidates per dense search (higher = better recall, slower); "
        "unset = the collection's ef_construct. Never below the query's limit.",
    )
    quantization: Literal["none", "int8"] = Field(
        "none",
        description="'int8' keeps an int8 copy of new collections' dense vectors in RAM and "
        "searches it (4x less memory per vector scanned).",
    )
    quantization_rescore: bool | None = Field(
        None,
        description="Re-score int8 candidates with the full vectors (recommended with int8); "
        "unset = Qdrant decides, and Qdrant Edge then does not.",
    )
    quantization_oversampling: float | None = Field(
        None,
        ge=1,
        le=16,
        description="int8 candidates fetched per result before re-scoring; unset = 1.",
    )
    sparse_full_scan_threshold: int | None = Field(
        20_000,
        ge=1,
        le=10_000_000,
        description="BM25 of new collections: a filter estimated to keep fewer points than this "
        "scores them one by one instead of walking whole posting lists (at 1M chunks the BM25 "
        "leg of a 1%-filtered search: p95 19 -> 6 ms); Qdrant's own default is 5,000.",
    )


class EmbeddingSettings(Concern):
    """The dense embedding model, recorded by each collection at creation."""

    title = "Embeddings"

    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers name or local path; the default loads offline.",
    )
    query_prefix: str = Field("", description="Prepended to queries (e5: 'query: ').")
    passage_prefix: str = Field("", description="Prepended to passages (e5: 'passage: ').")
    # Small batches pad less and stay in cache: on 2 CPU cores batch 4 embeds ~25% more chunks/s
    # than 64 (onnx-int8 and torch alike; docs/performance.md). A GPU's bulk path batches >= 512.
    embedding_batch_size: int = Field(
        4, gt=0, description="Texts per embedding forward pass on CPU."
    )
    embedding_device: str | None = Field(
        None,
        description="Torch device of the embedding model and cross-encoder (e.g. 'cpu', "
        "'cuda'); unset = picked automatically.",
    )
    embedding_backend: Backend = Field(
        "onnx-int8",
        description="Runtime of the embedding model on CPU for queries (and the server's own "
        "ingest jobs): torch, onnx (ONNX Runtime, same vectors), onnx-int8 (int8 weights, cosine "
        "~0.99 to torch, the fastest per query) or openvino-int8 (static int8 in OpenVINO). "
        "Exported once, offline, and cached (docs/performance.md). A GPU device uses torch.",
    )
    # openvino-int8: the most chunks/s on CPU, but slower than onnx-int8 for one short query on
    # one thread (docs/performance.md); the backends compute the same function, so a collection
    # built by one is searched with the other.
    ingest_embedding_backend: Backend | None = Field(
        "openvino-int8",
        description="Runtime that embeds documents in bulk ingest (`grounded ingest`, ingest "
        "workers, and `grounded eval`'s indexes, so they hold the served vectors); unset = "
        "embedding_backend. A GPU device uses torch.",
    )
    embedding_threads: int | None = Field(
        None,
        gt=0,
        description="Threads per encode call of an exported backend; unset = one per core. "
        "`grounded serve` uses 1 unless set, since concurrent requests already fill the cores.",
    )
    embedding_cache_dir: Path | None = Field(
        None,
        description="Where ONNX exports of the embedding model are cached; unset = "
        "~/.cache/grounded/embeddings.",
    )


# 64 (was 32) was chosen by `grounded eval compare` on three dev sets (README, "Choosing defaults
# across corpora").
DEFAULT_CHUNK_OVERLAP = 64


class ChunkingSettings(Concern):
    """Chunk windows, in tokens of the embedding model's own tokenizer."""

    title = "Chunking"

    chunk_size: int = Field(256, ge=16, description="Max tokens per chunk, context included.")
    chunk_overlap: int = Field(
        DEFAULT_CHUNK_OVERLAP,
        ge=0,
        description="Tokens shared by neighbouring chunks; below chunk_size / 2. Unset: a quarter "
        "of chunk_size, at most 64 (64 at the default size).",
    )

    @model_validator(mode="after")
    def _check_chunking(self) -> ChunkingSettings:
        if "chunk_overlap" not in self.model_fields_set:
            # The default follows a smaller chunk_size down, so setting only the size stays valid.
            self.__dict__["chunk_overlap"] = min(DEFAULT_CHUNK_OVERLAP, self.chunk_size // 4)
        if self.chunk_overlap >= self.chunk_size // 2:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be < chunk_size/2 "
                f"({self.chunk_size // 2})"
            )
        return self


class Bm25Settings(Concern):
    """Sparse vectors with BM25 term frequencies; Qdrant's IDF modifier supplies the inverse
    document frequency."""

    title = "BM25"

    # 0.9 / 0.4 (Anserini's defaults) were chosen over 1.2 / 0.75 by `grounded eval compare` on
    # three dev sets (README, "Choosing defaults across corpora").
    bm25_k1: float = Field(
        0.9, ge=0, description="BM25 term-frequency saturation of new collections."
    )
    bm25_b: float = Field(
        0.4, ge=0, le=1, description="BM25 length normalisation of new collections (0-1)."
    )
    bm25_avg_len: float | None = Field(
        None, gt=0, description="Average chunk length in BM25 tokens; unset = measured at creation."
    )
    bm25_language: str = Field("english", description="Language of BM25 stemming and stop words.")


class IngestSettings(Concern):
    """What ingest accepts, from the API and the CLI alike, and how it batches."""

    title = "Ingest"

    ingest_batch_docs: int = Field(256, gt=0, description="Documents per embed/upsert batch.")
    ingest_chunk_workers: int | None = Field(
        None,
        ge=0,
        description="Processes that chunk each ingest batch and encode its BM25 vectors; 0 = "
        "the ingesting process. For bulk ingests on a GPU, where one core's chunking "
        "(~2,700-3,000 chunks/s) is the bottleneck. Unset = half the CPU cores (at most 8) for "
        "a bulk ingest (`grounded ingest`, eval's indexes) whose model runs on a GPU, else 0 "
        "(the service's ingests, CPU, daemonic processes).",
    )
    ingest_index_process: Literal["auto", "on", "off"] = Field(
        "auto",
        description="`grounded ingest` writes an embedded (Qdrant Edge) collection from a "
        "process of its own: building Edge points gives up the GIL ~94 times each, so beside a "
        "thread that feeds a GPU they are written ~100x slower (docs/scaling.md, 'GPU "
        "ingestion'). auto = when the embedding model runs on a GPU. Not used with a Qdrant "
        "server.",
    )
    max_document_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="UTF-8 bytes of one document's text (API and CLI)."
    )
    max_file_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Largest file the CLI reads (JSON Lines, streamed line by line, are exempt) "
        "and /v1/files accepts (every type); larger ones are refused.",
    )
    max_metadata_depth: int = Field(8, ge=1, le=32, description="Nesting levels of metadata.")
    max_metadata_bytes: int = Field(16_384, gt=0, description="JSON bytes of one metadata.")
    source_paths: Literal["relative", "absolute"] = Field(
        "relative", description="`source` of ingested files: relative to the ingest root's parent."
    )


# Concerns of serving: read by service/ ------------------------------------------------------


class RetrievalSettings(Concern):
    """A dense and a BM25 leg, fused inside Qdrant; what a request leaves unset comes from here."""

    title = "Retrieval"

    search_mode: SearchMode = Field(
        "hybrid", description="'hybrid' (dense + BM25), 'dense' or 'sparse' (BM25 only)."
    )
    # DBSF since issue 14: chosen on the dev splits of SciFact, XQuAD-en and HaluEval QA by the
    # rule in README "Choosing defaults across corpora" (best mean nDCG@10, no set loses more
    # than 0.005); RRF k and leg weights did not beat it there.
    fusion: FusionMethod = Field(
        "dbsf",
        description="How hybrid legs are fused: 'dbsf' (distribution-based score fusion) or "
        "'rrf' (reciprocal rank).",
    )
    rrf_k: int = Field(
        60, gt=0, description="RRF constant k: a hit at rank r scores weight / (k + r) (rrf only)."
    )
    dense_weight: float = Field(
        1.0, gt=0, description="Weight of the dense leg in RRF fusion (rrf only)."
    )
    sparse_weight: float = Field(
        1.0, gt=0, description="Weight of the BM25 leg in RRF fusion (rrf only)."
    )
    # 200 (was 100): the best mean of three dev sets among depths that keep hybrid p95 <= 20 ms
    # at 1M chunks (README, "Choosing defaults across corpora"; 300 scored higher but took a 3%
    # filter to 23.6 ms). DBSF normalises each leg over what it prefetched.
    prefetch_limit: int = Field(
        200, gt=0, le=10_000, description="Candidates per leg before fusion."
    )
    top_k: int = Field(10, gt=0, description="Results per request when the request names none.")
    max_top_k: int = Field(100, gt=0, description="Most results a request may ask for.")

    @model_validator(mode="after")
    def _check_top_k(self) -> RetrievalSettings:
        if self.top_k > self.max_top_k:
            raise ValueError(f"top_k ({self.top_k}) must be <= max_top_k ({self.max_top_k})")
        return self


class TransformSettings(Concern):
    """LLM rewrites of the question that widen retrieval; each also switchable per request."""

    title = "Query transforms"

    multi_query: int = Field(0, ge=0, le=10, description="LLM rephrasings fused by RRF; 0 = off.")
    hyde: bool = Field(False, description="Dense leg from an LLM-written hypothetical passage.")


class RerankSettings(Concern):
    """Retrieve rerank_candidates chunks, rerank them, keep top_k."""

    title = "Reranking"

    reranker: Literal["none", "cross-encoder", "llm"] = Field(
        "none", description="'cross-encoder', 'llm' (listwise, the answer LLM) or 'none'."
    )
    reranker_model: str = Field(
        "cross-encoder/ms-marco-MiniLM-L-6-v2", description="CrossEncoder hub name or local path."
    )
    rerank_candidates: int = Field(
        50, gt=0, le=1000, description="Chunks retrieved before reranking down to top_k."
    )
    reranker_batch_size: int = Field(32, gt=0, description="Query-chunk pairs per forward pass.")
    reranker_max_length: int = Field(
        512, gt=0, description="Tokens per query-chunk pair; longer pairs are cut."
    )
    llm_rerank_window: int = Field(20, ge=2, description="Passages per listwise LLM call.")
    llm_rerank_step: int = Field(10, ge=1, description="Slide of the listwise window.")
    llm_rerank_passage_tokens: int = Field(
        160, ge=16, description="Tokens of each passage in the listwise prompt."
    )


class RoutingSettings(Concern):
    """A question goes to the best matching route, or gets "no matching source"."""

    title = "Routing"

    routes: list[Route] = Field(
        default_factory=list,
        description="Destinations questions are routed to: [[routes]] tables in the TOML file.",
    )
    router: Literal["embedding", "llm"] = Field(
        "embedding", description="Picks the route: 'embedding' similarity or the 'llm'."
    )
    route_min_score: float = Field(
        0.3, ge=0, le=1, description="Below this confidence: no matching source."
    )

    @model_validator(mode="after")
    def _check_routes(self) -> RoutingSettings:
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError(f"route names must be unique, got {names}")
        return self


class SqlSettings(Concern):
    """sql routes: how the LLM's SELECT is written and the limits it runs under."""

    title = "SQL routes"

    sql_timeout: float = Field(
        5.0, gt=0, le=600, description="Seconds one query may run before it is stopped."
    )
    sql_max_rows: int = Field(
        1000, gt=0, le=1_000_000, description="Rows fetched from a query; the rest are cut."
    )
    sql_answer_rows: int = Field(
        20, gt=0, le=1000, description="Rows shown to the LLM and returned as the citation."
    )
    sql_sample_values: int = Field(
        3, ge=0, le=20, description="Distinct sample values per column in the schema prompt."
    )
    sql_fewshot_k: int = Field(
        4, ge=0, le=20, description="Few-shot question/SQL examples retrieved per question."
    )
    sql_hypothetical: bool = Field(
        True,
        description="Draft a SQL first and also retrieve examples whose SQL resembles it.",
    )
    sql_self_correct: bool = Field(
        True, description="Retry once with the database's error when the query fails."
    )
    sql_max_tokens: int = Field(256, gt=0, description="Reply budget of one SQL-writing call.")


class AnswerLLMSettings(Concern):
    """The answer LLM, any OpenAI-compatible endpoint, and how answers are grounded.

    The same endpoint serves the LLM reranker, the query transforms and the LLM router.
    ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` fill ``llm_base_url`` / ``llm_api_key`` when nothing
    else does (:class:`OpenAIFallbackSource`).
    """

    title = "Answer LLM"

    generator: Literal["auto", "extractive", "llm"] = Field(
        "auto", description="auto = the LLM when one is configured, else extractive."
    )
    llm_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://localhost:8080/v1."
    )
    llm_api_key: SecretStr | None = Field(None, description="Bearer token of the endpoint.")
    llm_model: str | None = Field(None, description="Unset = the endpoint's only/first model.")
    llm_temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0-2).")
    llm_max_tokens: int = Field(512, gt=0, description="Reply budget in tokens.")
    llm_context_window: int = Field(
        8192, ge=256, description="The model's context length; prompts are packed to fit it."
    )
    llm_tokenizer: str | None = Field(
        None,
        description="Tokenizer that counts prompt tokens: a Hugging Face name or path, or a "
        ".gguf file. Unset = the embedding model's tokenizer with a 25% margin.",
    )
    llm_timeout: float = Field(30.0, gt=0, description="Seconds per attempt.")
    llm_deadline: float = Field(60.0, gt=0, description="Seconds for all attempts together.")
    llm_max_retries: int = Field(3, ge=0, description="Retries of timeouts, 429 and 5xx replies.")
    llm_backoff: float = Field(
        0.5, ge=0, description="Seconds before the first retry; doubles each retry."
    )
    abstain_min_similarity: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Abstain without calling the LLM when no context chunk reaches this cosine "
        "similarity to the question (embedding model specific; unset = off).",
    )
    history_max_tokens: int = Field(
        1024, ge=0, description="Token budget for earlier chat turns in the prompt."
    )
    attribution_min_similarity: float | None = Field(
        0.5,
        ge=-1,
        le=1,
        description="When the LLM cites nothing, cite each answer sentence's most similar block "
        "at or above this cosine similarity (unset = off).",
    )

    @property
    def llm_configured(self) -> bool:
        """An LLM endpoint is named (a model, or a base URL such as a local llama.cpp server)."""
        return bool(self.llm_model or self.llm_base_url)


class ApiSettings(Concern):
    """The REST API: where `grounded serve` listens, what one request may carry, and the eval
    reports it serves."""

    title = "API"

    host: str = Field("127.0.0.1", description="Address `grounded serve` binds to.")
    port: int = Field(8000, gt=0, lt=65536, description="Port `grounded serve` listens on.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Bytes of one request body; larger get 413."
    )
    max_query_chars: int = Field(
        4096, gt=0, description="Characters of one question; longer get 422."
    )
    max_documents_per_request: int = Field(
        256,
        gt=0,
        description="Documents per /v1/ingest and files per /v1/files; more get 413. The files "
        "of one upload hold at most as many documents together.",
    )
    ingest_queue_size: int = Field(
        8, ge=1, description="Delete requests that may wait; more get 503 + Retry-After."
    )
    reports_dir: Path | None = Field(
        DEFAULT_REPORTS_DIR,
        description="Folder of eval HTML reports that /v1/reports lists and serves (and "
        "`grounded eval ladder` writes to by default); empty = serve none.",
    )

    @field_validator("reports_dir", mode="before")
    @classmethod
    def _no_reports_dir_when_blank(cls, value: Any) -> Any:
        # An empty GROUNDED_REPORTS_DIR would otherwise be Path(""), the working directory:
        # serving every HTML file under it is not what "empty" means.
        return None if isinstance(value, str) and not value.strip() else value


class AuthSettings(Concern):
    """API keys with scopes, one tenant per key, and a request limit per key."""

    title = "Auth and rate limits"

    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="auto = on when the API binds beyond loopback."
    )
    keys_db: Path | None = Field(
        None, description="SQLite file of API keys; unset = keys.sqlite in data_dir."
    )
    keys_url: str | None = Field(
        None,
        description="Redis URL of an API key store shared by every API replica; unset = the "
        "SQLite file keys_db.",
    )
    rate_limit: str = Field(
        "600/minute", description="Per-key request limit (limits syntax, e.g. '10/second')."
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where rate-limit counters live (limits storage URI): memory:// per process, "
        "redis://host:6379/1 shared by every API replica.",
    )

    @model_validator(mode="after")
    def _check_rate_limit(self) -> AuthSettings:
        try:
            limits.parse(self.rate_limit)
        except ValueError:
            raise ValueError(
                f"rate_limit {self.rate_limit!r} is not a rate: use e.g. '600/minute'"
            ) from None
        return self


class JobSettings(Concern):
    """Ingest jobs, run by a worker thread of `grounded serve` or a Celery fleet
    (`grounded worker`)."""

    title = "Ingest jobs and workers"

    jobs_db: Path | None = Field(
        None,
        description="SQLite file of ingest jobs (embedded mode); unset = jobs.sqlite in data_dir.",
    )
    broker_url: str | None = Field(
        None,
        description="Redis URL of the Celery broker and the job store, e.g. redis://redis:6379/0. "
        "Set (with qdrant_url) = the API only enqueues and `grounded worker` ingests.",
    )
    job_batch_docs: int = Field(
        16,
        gt=0,
        le=1024,
        description="Documents per job task: the unit that is retried and shared.",
    )
    max_open_jobs: int = Field(
        1000,
        ge=1,
        description="Queued and running jobs per tenant; one more gets 503 + Retry-After.",
    )
    job_retention_hours: float = Field(
        168, gt=0, description="Finished jobs stay listed this long, then are forgotten."
    )
    worker_concurrency: int = Field(1, ge=1, description="Worker processes of `grounded worker`.")
    worker_threads: int | None = Field(
        None,
        ge=1,
        description="torch / OpenMP threads per worker process; unset = cores / processes.",
    )
    worker_max_memory_mb: int | None = Field(
        4096,
        gt=0,
        description="A worker process above this resident memory is replaced after its task "
        "(unset = never).",
    )
    task_max_retries: int = Field(
        5, ge=0, description="Retries of a task after a transient Qdrant or embedding error."
    )
    task_retry_backoff: float = Field(
        2.0, ge=0, description="Seconds before a task's first retry; doubles each retry (max 600)."
    )
    task_time_limit: int = Field(
        1800, gt=0, description="Seconds one task may run before it is killed and redelivered."
    )
    broker_visibility_timeout: int = Field(
        3600,
        gt=0,
        description="Seconds before a task held by a dead worker is redelivered; must exceed "
        "task_time_limit.",
    )

    @model_validator(mode="after")
    def _check_redelivery(self) -> JobSettings:
        if self.broker_visibility_timeout <= self.task_time_limit:
            raise ValueError(
                f"broker_visibility_timeout ({self.broker_visibility_timeout}) must exceed "
                f"task_time_limit ({self.task_time_limit}), or running tasks get delivered twice"
            )
        return self


# Concerns of evaluation: read by eval/ ------------------------------------------------------


class JudgeSettings(Concern):
    """The judge LLM of answer evaluation, any OpenAI-compatible endpoint apart from the answer
    LLM."""

    title = "Judge LLM"

    judge_base_url: str | None = Field(
        None,
        description="Judge endpoint of `grounded eval answers`; judging needs it and judge_model.",
    )
    judge_model: str | None = Field(None, description="Model name of the judge LLM.")
    judge_api_key: SecretStr | None = Field(None, description="Bearer token of the judge endpoint.")
    judge_timeout: float = Field(120.0, gt=0, description="Seconds per judge request.")


# The one object --------------------------------------------------------------------------------


class OpenAIFallbackSource(PydanticBaseSettingsSource):
    """``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (non-empty) for ``llm_base_url`` /
    ``llm_api_key``; the last source, so keyword arguments, ``GROUNDED_`` variables and the TOML
    file win over it."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = OPENAI_FALLBACKS.get(field_name)
        value = os.environ.get(variable) if variable else None
        return value or None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in OPENAI_FALLBACKS:
            value, key, _ = self.get_field_value(self.settings_cls.model_fields[name], name)
            if value is not None:
                values[key] = value
        return values


def config_file_path() -> Path | None:
    explicit = os.environ.get("GROUNDED_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"GROUNDED_CONFIG points to {path}, which is not a file")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


class Settings(
    # In the order of docs/configuration.md; each concern's fields keep their flat names.
    StorageSettings,
    QdrantClusterSettings,
    IndexTuningSettings,
    EmbeddingSettings,
    ChunkingSettings,
    Bm25Settings,
    IngestSettings,
    RetrievalSettings,
    TransformSettings,
    RerankSettings,
    RoutingSettings,
    SqlSettings,
    AnswerLLMSettings,
    ApiSettings,
    AuthSettings,
    JobSettings,
    JudgeSettings,
    BaseSettings,
):
    """Every knob of ingest, retrieval and the API, validated once at start-up: the fields of all
    concerns under their flat names (``settings.chunk_size``), read from the sources above."""

    model_config = SettingsConfigDict(
        env_prefix="GROUNDED_",
        extra="ignore",
        # A validation error must not print the other settings (API keys, URLs with passwords).
        hide_input_in_errors=True,
    )
    title = "Settings"  # not the first concern's title, which it would inherit

    @classmethod
    def concerns(cls) -> tuple[type[Concern], ...]:
        """The concern models, in order; together they hold every field exactly once."""
        return tuple(base for base in Settings.__bases__ if issubclass(base, Concern))

    @model_validator(mode="after")
    def _check(self) -> Settings:
        # Rules that span concerns; each concern checks its own fields itself.
        needs_llm = {
            "generator = 'llm'": self.generator == "llm",
            "reranker = 'llm'": self.reranker == "llm",
            "multi_query": self.multi_query > 0,
            "hyde": self.hyde,
            "router = 'llm'": self.router == "llm" and bool(self.routes),
        }
        wanted = [name for name, on in needs_llm.items() if on]
        if wanted and not self.llm_configured:
            raise ValueError(
                f"{', '.join(wanted)} need(s) an LLM: set GROUNDED_LLM_BASE_URL "
                "(or OPENAI_BASE_URL) and/or GROUNDED_LLM_MODEL"
            )
        return self

    # Default files in data_dir (storage) for the auth and jobs concerns.
    @property
    def keys_path(self) -> Path:
        return self.keys_db or self.data_dir / "keys.sqlite"

    @property
    def jobs_path(self) -> Path:
        return self.jobs_db or self.data_dir / "jobs.sqlite"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        sources.append(OpenAIFallbackSource(settings_cls))
        return tuple(sources)
