"""The one place where the service is assembled from settings.

The API, the CLI and the evals call the same :class:`RagPipeline`, so what is measured is what
is served. A query runs: route (optional) → query transforms (multi-query, HyDE; optional) →
hybrid retrieval → rerank (optional) → abstention floor → generate (a
:class:`~service.generation.Generator`: the LLM behind a
:class:`~service.fallback.FallbackGenerator`, which answers extractively and marks the answer
``degraded`` when the LLM fails, or the extractive generator when no LLM is configured). A
question routed to a ``sql`` route skips the search: :class:`~service.sql.SqlTool` writes a
guarded SELECT for its database and answers from the rows, citing the query and the rows
(``QueryResult.sql``). Every stage adds its time to ``timings``.

What is searched is a :class:`~service.retrieval.SearchParams`; how the question is handled
around the search (route first? which generator, what chat history, whose instructions?) is a
:class:`QueryOptions`. Search (:meth:`RagPipeline.prepare`) and ask (:meth:`RagPipeline.query`,
:meth:`RagPipeline.query_stream`) take the same pair, which :func:`service.requests.resolve`
builds from a request for the API and the CLI alike.

Example::

    pipeline = RagPipeline.from_settings(Settings())      # or with ready-made parts:
    pipeline = RagPipeline.from_settings(settings, index=index, embedder=embedder)
    params = SearchParams("what is grounded?", collection="docs")
    result = pipeline.query(params, QueryOptions(generator="extractive"))
    print(result.answer.text, result.answer.citations)
    pipeline.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ingest.build import build_embedder, build_ingestor
from ingest.documents import Document
from ingest.embedding import Embedder
from ingest.index import VectorIndex, open_index, require_manifest
from ingest.names import DEFAULT_TENANT
from ingest.pipeline import Ingestor, IngestReport, ProgressFn
from ingest.settings import Route, Settings

from . import metrics
from .fallback import FallbackGenerator
from .generation import Answer, ExtractiveGenerator, Generator, StreamReset
from .llm import ChatLLM, LLMError, Message, OpenAIChat
from .llm_generation import LLMGenerator
from .prompts import NOT_FOUND
from .rerank import CrossEncoderReranker, LLMReranker, Reranker
from .retrieval import HybridRetriever, RetrievalResult, Retriever, SearchParams
from .routing import NO_MATCHING_SOURCE, EmbeddingRouter, LLMRouter, RouteDecision, Router
from .sql import DatabaseUnavailable, FewShotStore, SqlCitation, SqlPair, SqlTool, open_database
from .tokens import TokenCounter, build_token_counter
from .transforms import fuse_rephrasings, retrieve_with_hyde


class NotConfigured(ValueError):
    """A request asked for a stage (reranker, LLM, routes) that the settings do not provide."""


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


@dataclass(frozen=True)
class QueryOptions:
    """How a question is handled around the search; search uses ``route`` only.

    Example::

        pipeline.query(params, QueryOptions(route=True, generator="extractive"))
    """

    route: bool = False  # pick the collection and prompt with the router first
    generator: Literal["llm", "extractive"] | None = None  # None: RagPipeline.generator_name
    history: Sequence[Message] = ()  # earlier chat turns (role/content), oldest first
    instructions: str | None = None  # extra instructions for the LLM (an app's system prompt)


@dataclass
class QueryResult:
    retrieval: RetrievalResult
    answer: Answer
    timings: dict[str, float]
    params: SearchParams  # as searched: the collection may come from the route
    route: RouteDecision | None = None
    warnings: list[str] = field(default_factory=list)
    sql: SqlCitation | None = None  # a sql route's citation: the query and its rows


@dataclass
class Prepared:
    """A routed and retrieved question; ``answer`` is set when there is nothing to generate."""

    params: SearchParams
    retrieval: RetrievalResult
    route: RouteDecision | None
    warnings: list[str]
    instructions: str | None = None
    answer: Answer | None = None
    started: float = field(default_factory=time.perf_counter)
    sql_route: Route | None = None  # routed to a sql route: nothing was searched
    sql: SqlCitation | None = None

    def result(self, answer: Answer, timings: dict[str, float]) -> QueryResult:
        timings["total_ms"] = _ms(self.started)
        if not answer.abstained and not answer.citations and self.sql is None:
            self.warnings.append("the answer cites no context block; treat it as unsupported")
        metrics.observe_timings(timings)
        metrics.observe_answer(
            answer.generator, answer.degraded, answer.abstained, answer.degraded_reason
        )
        return QueryResult(
            self.retrieval, answer, timings, self.params, self.route, self.warnings, self.sql
        )


def sql_route_warning(route: Route) -> str:
    """What a search routed to a sql route says: nothing was searched."""
    return (
        f"route {route.name!r} answers with SQL on its database: nothing was searched; "
        "ask the question (/v1/query) for the answer and its rows"
    )


class RagPipeline:
    """Retrieval, answer generation and ingest over one index and one embedder.

    Args:
        llm: the chat model for answers, the LLM reranker, query transforms and the LLM router;
            ``None`` means answers are extractive and those stages are unavailable.
        generator: ``"llm"`` or ``"extractive"``, the default per request.
    """

    def __init__(
        self,
        settings: Settings,
        index: VectorIndex,
        embedder: Embedder,
        retriever: Retriever | None = None,
        reranker: Reranker | None = None,
        llm: ChatLLM | None = None,
        counter: TokenCounter | None = None,
        router: Router | None = None,
        sql_tools: dict[str, SqlTool] | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.embedder = embedder
        self.retriever = retriever or HybridRetriever(index, embedder, settings)
        self.extractive = ExtractiveGenerator(embedder)
        self.llm = llm
        self.counter = counter or build_token_counter(settings, embedder)
        self.llm_generator = (
            LLMGenerator.from_settings(settings, llm, self.counter, embedder)
            if llm is not None
            else None
        )
        # LLM answers degrade to extractive ones instead of failing.
        self._llm_answers = (
            FallbackGenerator(self.llm_generator, self.extractive) if self.llm_generator else None
        )
        self.reranker = reranker
        self.router = router
        self._fallback_router: Router | None = None
        # sql routes by name; built on first use when not given (from_settings builds them
        # at start-up, so a missing database or LLM is reported before the first question).
        self.sql_tools: dict[str, SqlTool] = dict(sql_tools or {})
        self._sql_lock = threading.Lock()
        # One writer at a time: concurrent ingests of the same document must not interleave.
        self._write_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        index: VectorIndex | None = None,
        *,
        embedder: Embedder | None = None,
        llm: ChatLLM | None = None,
        reranker: Reranker | None = None,
        router: Router | None = None,
        counter: TokenCounter | None = None,
    ) -> RagPipeline:
        """The pipeline the settings describe; each component given is used instead of being
        built (``llm=None`` builds one when the settings configure one)."""
        if embedder is None:
            embedder = build_embedder(settings)
        if llm is None and settings.llm_configured:
            llm = OpenAIChat.from_settings(settings)
        if counter is None:
            counter = build_token_counter(settings, embedder)
        sql_tools = build_sql_tools(settings, embedder, llm)
        return cls(
            settings,
            index if index is not None else open_index(settings),
            embedder,
            reranker=reranker if reranker is not None else build_reranker(settings, llm, counter),
            llm=llm,
            counter=counter,
            router=router if router is not None else build_router(settings, embedder, llm),
            sql_tools=sql_tools,
        )

    @property
    def generator_name(self) -> str:
        """The generator a request gets when it does not choose one."""
        s = self.settings
        use_llm = s.generator == "llm" or (s.generator == "auto" and self.llm is not None)
        return "llm" if use_llm and self.llm_generator is not None else "extractive"

    def _require_llm(self, what: str) -> ChatLLM:
        if self.llm is None:
            raise NotConfigured(
                f"{what} needs an LLM: set GROUNDED_LLM_BASE_URL (and GROUNDED_LLM_MODEL)"
            )
        return self.llm

    def require_reranker(self) -> Reranker:
        """The reranker this pipeline was assembled with, whether the settings built it or the
        caller gave it ready-made.

        Raises:
            NotConfigured: the pipeline has none.
        """
        if self.reranker is None:
            raise NotConfigured(
                "reranking was requested but no reranker is configured "
                "(set GROUNDED_RERANKER=cross-encoder or llm)"
            )
        return self.reranker

    # Routing -------------------------------------------------------------------------------

    def route(self, question: str) -> tuple[RouteDecision, list[str]]:
        """The route for ``question``; an LLM router that fails falls back to embeddings."""
        if self.router is None:
            raise NotConfigured("routing was requested but no routes are configured")
        try:
            return self.router.route(question), []
        except LLMError as exc:
            if self._fallback_router is None:
                self._fallback_router = EmbeddingRouter(
                    self.settings.routes, self.embedder, self.settings.route_min_score
                )
            warning = f"LLM router failed ({exc.reason}); used the embedding router"
            return self._fallback_router.route(question), [warning]

    # Retrieval -----------------------------------------------------------------------------

    def search(self, params: SearchParams) -> RetrievalResult:
        """Retrieve with the requested transforms, then rerank to top_k when asked.

        Raises:
            NotConfigured: rerank, multi_query or hyde requested without what they need.
        """
        reranker = self.require_reranker() if params.rerank else None
        if params.multi_query:
            self._require_llm("multi-query expansion")
        if params.hyde:
            self._require_llm("HyDE")
        depth = (
            max(params.top_k, self.settings.rerank_candidates) if params.rerank else params.top_k
        )
        wide = replace(params, top_k=depth)
        if params.hyde:
            llm = self._require_llm("HyDE")
            result = retrieve_with_hyde(llm, self.embedder, self.retriever, wide)
        else:
            result = self.retriever.retrieve(wide)
        if params.multi_query:
            llm = self._require_llm("multi-query")
            fuse_rephrasings(llm, self.retriever, wide, params.multi_query, result)
        if reranker is not None:
            t = time.perf_counter()
            try:
                result.chunks = reranker.rerank(params.query, result.chunks, params.top_k)
            except LLMError as exc:
                result.warnings.append(f"reranking skipped: {exc.reason}")
            result.timings["rerank_ms"] = _ms(t)
        result.chunks = result.chunks[: params.top_k]
        return result

    # Answers -------------------------------------------------------------------------------

    def prepare(self, params: SearchParams, options: QueryOptions = QueryOptions()) -> Prepared:
        """Route (when ``options.route``) and retrieve. With no matching route, ``answer`` says
        so and nothing is searched."""
        route = options.route
        started = time.perf_counter()
        decision: RouteDecision | None = None
        warnings: list[str] = []
        timings: dict[str, float] = {}
        instructions = None
        if route:
            decision, warnings = self.route(params.query)
            timings["route_ms"] = _ms(started)
            if decision.route is None:
                answer = Answer(NO_MATCHING_SOURCE, "router", abstained=True)
                empty = RetrievalResult([], timings)
                return Prepared(params, empty, decision, warnings, None, answer, started)
            instructions = decision.route.prompt
            if decision.route.kind == "sql":
                empty = RetrievalResult([], timings)
                warnings.append(sql_route_warning(decision.route))
                return Prepared(
                    params, empty, decision, warnings, instructions, None, started, decision.route
                )
            params = replace(params, collection=decision.route.collection or params.collection)
        retrieval = self.search(params)
        retrieval.timings = {**timings, **retrieval.timings}
        warnings += retrieval.warnings
        return Prepared(params, retrieval, decision, warnings, instructions, None, started)

    def _prepare_answer(self, params: SearchParams, options: QueryOptions) -> Prepared:
        """:meth:`prepare`, then the abstention floor; adds the caller's instructions."""
        prep = self.prepare(params, options)
        if options.instructions:
            prep.instructions = "\n\n".join(filter(None, [prep.instructions, options.instructions]))
        if prep.sql_route is not None:
            return self._answer_with_sql(prep, options)
        floor = self.settings.abstain_min_similarity
        if prep.answer is None and floor is not None:
            sims = [c.similarity for c in prep.retrieval.chunks if c.similarity is not None]
            if not sims or max(sims) < floor:
                best = f"{max(sims):.3f}" if sims else "none"
                prep.warnings.append(f"abstained: best similarity {best} < floor {floor}")
                prep.answer = Answer(NOT_FOUND, "abstention-floor", abstained=True)
        return prep

    def sql_tool(self, route: Route) -> SqlTool:
        """The :class:`SqlTool` of a sql route, built on first use.

        Raises:
            NotConfigured: no LLM, or the route's database cannot be opened.
        """
        with self._sql_lock:
            tool = self.sql_tools.get(route.name)
            if tool is None:
                llm = self._require_llm(f"the sql route {route.name!r}")
                tool = self.sql_tools[route.name] = _sql_tool(
                    self.settings, route, self.embedder, llm
                )
            return tool

    def _answer_with_sql(self, prep: Prepared, options: QueryOptions) -> Prepared:
        """Answer a question routed to a sql route: the tool writes and runs the SELECT; the
        answer cites the query and its rows. Instructions of the app apply to the wording."""
        assert prep.sql_route is not None
        tool = self.sql_tool(prep.sql_route)
        result = tool.answer(prep.params.query, instructions=options.instructions)
        prep.warnings = [w for w in prep.warnings if w != sql_route_warning(prep.sql_route)]
        if result.answer.degraded_reason:
            prep.warnings.append(f"the LLM failed: {result.answer.degraded_reason}")
        prep.retrieval.timings.update(result.timings)
        prep.answer, prep.sql = result.answer, result.sql
        return prep

    def _generator(self, name: str | None) -> Generator:
        if (name or self.generator_name) == "llm":
            self._require_llm("the llm generator")
            assert self._llm_answers is not None
            return self._llm_answers
        return self.extractive

    def query(self, params: SearchParams, options: QueryOptions = QueryOptions()) -> QueryResult:
        """Answer ``params.query`` from the documents; LLM trouble degrades, never raises."""
        gen = self._generator(options.generator)
        prep = self._prepare_answer(params, options)
        timings = dict(prep.retrieval.timings)
        if prep.answer is not None:
            return prep.result(prep.answer, timings)
        t = time.perf_counter()
        answer = gen.generate(
            prep.params.query,
            prep.retrieval,
            history=options.history,
            instructions=prep.instructions,
        )
        timings["generate_ms"] = _ms(t)
        return prep.result(answer, timings)

    def query_stream(
        self, params: SearchParams, options: QueryOptions = QueryOptions()
    ) -> tuple[Prepared, Iterator[str | StreamReset | QueryResult]]:
        """Route and retrieve now (their errors raise here, so an API can still send a 4xx),
        and return the retrieval with an iterator of text deltas (and a :class:`StreamReset` if
        the LLM breaks off) that ends with the :class:`QueryResult`. Arguments as :meth:`query`."""
        gen = self._generator(options.generator)
        prep = self._prepare_answer(params, options)
        return prep, self._stream(prep, gen, options.history)

    def _stream(
        self, prep: Prepared, gen: Generator, history: Sequence[Message]
    ) -> Iterator[str | StreamReset | QueryResult]:
        timings = dict(prep.retrieval.timings)
        t = time.perf_counter()
        answer, first_ms, reset = prep.answer, None, False
        items: Iterator[str | StreamReset | Answer] = (
            gen.stream(
                prep.params.query, prep.retrieval, history=history, instructions=prep.instructions
            )
            if answer is None
            else iter([answer.text, answer])
        )
        for item in items:
            if isinstance(item, Answer):
                answer = item
                continue
            first_ms = _ms(prep.started) if first_ms is None else first_ms
            reset = reset or isinstance(item, StreamReset)
            yield item
        assert answer is not None
        # The model's first token; not quoted text (extractive, an abstention, or the fallback
        # when it took over before the model sent any).
        from_model = gen is not self.extractive and prep.answer is None
        if first_ms is not None and from_model and (reset or not answer.degraded):
            timings["first_token_ms"] = first_ms
        timings["generate_ms"] = _ms(t)
        yield prep.result(answer, timings)

    # Ingest --------------------------------------------------------------------------------

    def _ingestor(self, collection: str, tenant: str) -> Ingestor:
        return build_ingestor(self.settings, self.index, self.embedder, collection, tenant)

    def ingest(
        self,
        documents: Iterable[Document],
        collection: str,
        progress: ProgressFn | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> IngestReport:
        with self._write_lock:
            return self._ingestor(collection, tenant).ingest(documents, progress)

    def delete(self, doc_ids: Sequence[str], collection: str, tenant: str = DEFAULT_TENANT) -> int:
        with self._write_lock:
            return self._ingestor(collection, tenant).delete(doc_ids)

    def check_writable(self, collection: str) -> None:
        """Raise :class:`~ingest.index.IncompatibleCollection` when ``collection`` exists and was
        built with another embedding model than this pipeline's."""
        manifest = self.index.manifest(collection)
        if manifest is not None:
            manifest.check_model(collection, self.embedder.name, self.embedder.dimension)

    def drop_collection(self, collection: str) -> None:
        """Remove a collection with every tenant's points (operators only)."""
        with self._write_lock:
            require_manifest(self.index, collection)
            self.index.drop_collection(collection)

    def visible_collections(self, tenant: str | None) -> list[str]:
        """Collections holding points of ``tenant`` (every collection when ``None``): a tenant
        does not learn the names other tenants write to."""
        return [n for n in self.index.list_collections() if self._holds(n, tenant)]

    def is_visible(self, collection: str, tenant: str | None) -> bool:
        """:meth:`visible_collections` for one name, with one count instead of one per
        collection."""
        return collection in self.index.list_collections() and self._holds(collection, tenant)

    def _holds(self, collection: str, tenant: str | None) -> bool:
        return tenant is None or self.index.count(collection, tenant) > 0

    def document_sources(self, collection: str, tenant: str = DEFAULT_TENANT) -> dict[str, str]:
        require_manifest(self.index, collection)
        return self._ingestor(collection, tenant).document_sources()

    def close(self) -> None:
        with self._write_lock:  # a write still running (a job's batch) finishes first
            self.index.close()
        for tool in self.sql_tools.values():
            tool.database.close()


def build_reranker(
    settings: Settings, llm: ChatLLM | None = None, counter: TokenCounter | None = None
) -> Reranker | None:
    if settings.reranker == "cross-encoder":
        return CrossEncoderReranker(
            settings.reranker_model,
            batch_size=settings.reranker_batch_size,
            max_length=settings.reranker_max_length,
            device=settings.embedding_device,
        )
    if settings.reranker == "llm":
        if llm is None or counter is None:
            raise NotConfigured("GROUNDED_RERANKER=llm needs an LLM (GROUNDED_LLM_BASE_URL)")
        return LLMReranker(
            llm,
            counter,
            window=settings.llm_rerank_window,
            step=settings.llm_rerank_step,
            passage_tokens=settings.llm_rerank_passage_tokens,
        )
    return None


def _sql_tool(settings: Settings, route: Route, embedder: Embedder, llm: ChatLLM) -> SqlTool:
    assert route.database is not None  # the Route model requires it of a sql route
    try:
        database = open_database(route.database)
    except DatabaseUnavailable as exc:
        raise NotConfigured(f"sql route {route.name!r}: {exc}") from None
    pairs = [SqlPair(e.question, e.sql) for e in route.sql_examples]
    store = FewShotStore(pairs, embedder) if pairs else None
    return SqlTool(
        database, llm, settings, store=store, route=route.name, instructions=route.prompt
    )


def build_sql_tools(
    settings: Settings, embedder: Embedder, llm: ChatLLM | None
) -> dict[str, SqlTool]:
    """A :class:`SqlTool` per sql route, so a missing database or LLM fails at start-up.

    Raises:
        NotConfigured: a sql route without an LLM, or with a database that cannot be opened.
    """
    routes = [r for r in settings.routes if r.kind == "sql"]
    if routes and llm is None:
        names = ", ".join(repr(r.name) for r in routes)
        raise NotConfigured(
            f"sql route(s) {names} need an LLM to write SQL: set GROUNDED_LLM_BASE_URL "
            "(or OPENAI_BASE_URL) and/or GROUNDED_LLM_MODEL"
        )
    return {r.name: _sql_tool(settings, r, embedder, llm) for r in routes if llm is not None}


def build_router(settings: Settings, embedder: Embedder, llm: ChatLLM | None) -> Router | None:
    if not settings.routes:
        return None
    if settings.router == "llm":
        if llm is None:
            raise NotConfigured("GROUNDED_ROUTER=llm needs an LLM (GROUNDED_LLM_BASE_URL)")
        return LLMRouter(settings.routes, llm, settings.route_min_score)
    return EmbeddingRouter(settings.routes, embedder, settings.route_min_score)
