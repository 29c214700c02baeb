"""The one place where the service is assembled from settings.

The API, the CLI and the evals call the same :class:`RagPipeline`, so what is measured is what
is served. A query runs: route (optional) → query transforms (multi-query, HyDE; optional) →
hybrid retrieval → rerank (optional) → abstention floor → generate (LLM, or extractive when no LLM
is configured or the LLM fails, then marked ``degraded``). Every stage adds its time to
``timings``.

Example::

    pipeline = RagPipeline.from_settings(Settings())
    result = pipeline.query(SearchParams("what is grounded?", collection="docs"))
    print(result.answer.text, result.answer.citations)
    pipeline.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ingest.build import build_embedder, build_ingestor
from ingest.documents import Document
from ingest.embedding import Embedder
from ingest.index import VectorIndex, open_index, require_manifest
from ingest.names import DEFAULT_TENANT
from ingest.pipeline import IngestReport, ProgressFn
from ingest.settings import Settings

from . import metrics
from .attribution import Attributor
from .generation import Answer, ExtractiveGenerator
from .llm import ChatLLM, LLMError, Message, OpenAIChat
from .llm_generation import LLMGenerator
from .prompts import NOT_FOUND
from .rerank import CrossEncoderReranker, LLMReranker, Reranker
from .retrieval import HybridRetriever, RetrievalResult, Retriever, SearchParams
from .routing import NO_MATCHING_SOURCE, EmbeddingRouter, LLMRouter, RouteDecision, Router
from .tokens import TokenCounter, build_token_counter
from .transforms import expand_queries, hyde_vector, hypothetical_passage, rrf_fuse


class NotConfigured(ValueError):
    """A request asked for a stage (reranker, LLM, routes) that the settings do not provide."""


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


@dataclass
class QueryResult:
    retrieval: RetrievalResult
    answer: Answer
    timings: dict[str, float]
    params: SearchParams  # as searched: the collection may come from the route
    route: RouteDecision | None = None
    warnings: list[str] = field(default_factory=list)


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

    def result(self, answer: Answer, timings: dict[str, float]) -> QueryResult:
        timings["total_ms"] = _ms(self.started)
        if not answer.abstained and not answer.citations:
            self.warnings.append("the answer cites no context block; treat it as unsupported")
        metrics.observe_timings(timings)
        metrics.observe_answer(
            answer.generator, answer.degraded, answer.abstained, answer.degraded_reason
        )
        return QueryResult(self.retrieval, answer, timings, self.params, self.route, self.warnings)


@dataclass
class StreamReset:
    """Streaming only: the LLM failed after sending text; discard it, the fallback follows."""

    reason: str


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
    ) -> None:
        self.settings = settings
        self.index = index
        self.embedder = embedder
        self.retriever = retriever or HybridRetriever(index, embedder, settings)
        self.extractive = ExtractiveGenerator(embedder)
        self.llm = llm
        self.counter = counter or build_token_counter(settings, embedder)
        self.llm_generator = (
            LLMGenerator(
                llm,
                self.counter,
                context_window=settings.llm_context_window,
                reply_tokens=settings.llm_max_tokens,
                history_tokens=settings.history_max_tokens,
                attributor=(
                    Attributor(embedder, settings.attribution_min_similarity)
                    if settings.attribution_min_similarity is not None
                    else None
                ),
            )
            if llm is not None
            else None
        )
        self.reranker = reranker
        self.router = router
        self._fallback_router: Router | None = None
        # One writer at a time: concurrent ingests of the same document must not interleave.
        self._write_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, index: VectorIndex | None = None) -> RagPipeline:
        embedder = build_embedder(settings)
        llm = OpenAIChat.from_settings(settings) if settings.llm_configured else None
        counter = build_token_counter(settings, embedder)
        return cls(
            settings,
            index or open_index(settings),
            embedder,
            reranker=build_reranker(settings, llm, counter),
            llm=llm,
            counter=counter,
            router=build_router(settings, embedder, llm),
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
        if params.rerank and self.reranker is None:
            raise NotConfigured(
                "reranking was requested but no reranker is configured "
                "(set GROUNDED_RERANKER=cross-encoder or llm)"
            )
        if params.multi_query:
            self._require_llm("multi-query expansion")
        if params.hyde:
            self._require_llm("HyDE")
        depth = (
            max(params.top_k, self.settings.rerank_candidates) if params.rerank else params.top_k
        )
        wide = replace(params, top_k=depth)
        warnings: list[str] = []
        transforms: dict[str, object] = {}
        timings: dict[str, float] = {}
        dense_vector = None
        if params.hyde:
            t = time.perf_counter()
            dense_vector = self._hyde_vector(params.query, transforms, warnings)
            timings["hyde_ms"] = _ms(t)
        result = self.retriever.retrieve(wide, dense_vector=dense_vector)
        result.timings = {**timings, **result.timings}
        if params.multi_query:
            self._expand(wide, params.multi_query, result, transforms, warnings)
        if params.rerank and self.reranker is not None:
            t = time.perf_counter()
            try:
                result.chunks = self.reranker.rerank(params.query, result.chunks, params.top_k)
            except LLMError as exc:
                warnings.append(f"reranking skipped: {exc.reason}")
            result.timings["rerank_ms"] = _ms(t)
        result.chunks = result.chunks[: params.top_k]
        result.transforms = transforms
        result.warnings = warnings
        return result

    def _hyde_vector(
        self, question: str, transforms: dict[str, object], warnings: list[str]
    ) -> np.ndarray | None:
        try:
            passage = hypothetical_passage(self._require_llm("HyDE"), question)
        except LLMError as exc:
            warnings.append(f"HyDE skipped: {exc.reason}")
            return None
        transforms["hyde_passage"] = passage
        return hyde_vector(
            self.embedder.embed_query(question), self.embedder.embed_documents([passage])[0]
        )

    def _expand(
        self,
        params: SearchParams,
        n: int,
        result: RetrievalResult,
        transforms: dict[str, object],
        warnings: list[str],
    ) -> None:
        """Search ``n`` LLM rephrasings too and RRF-fuse them into ``result``."""
        t = time.perf_counter()
        queries: list[str] = []
        try:
            queries = expand_queries(self._require_llm("multi-query"), params.query, n)
        except LLMError as exc:
            warnings.append(f"multi-query skipped: {exc.reason}")
        result.timings["expand_ms"] = _ms(t)
        transforms["queries"] = queries
        if queries:
            t = time.perf_counter()
            lists = [result.chunks]
            lists += [self.retriever.retrieve(replace(params, query=q)).chunks for q in queries]
            result.chunks = rrf_fuse(lists, params.top_k)
            result.timings["multi_query_search_ms"] = _ms(t)

    # Answers -------------------------------------------------------------------------------

    def prepare(self, params: SearchParams, *, route: bool = False) -> Prepared:
        """Route (when asked) and retrieve. With no matching route, ``answer`` says so and
        nothing is searched."""
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
            params = replace(params, collection=decision.route.collection or params.collection)
            instructions = decision.route.prompt
        retrieval = self.search(params)
        retrieval.timings = {**timings, **retrieval.timings}
        warnings += retrieval.warnings
        return Prepared(params, retrieval, decision, warnings, instructions, None, started)

    def _prepare_answer(
        self, params: SearchParams, route: bool, instructions: str | None
    ) -> Prepared:
        """:meth:`prepare`, then the abstention floor; adds the caller's instructions."""
        prep = self.prepare(params, route=route)
        if instructions:
            prep.instructions = "\n\n".join(filter(None, [prep.instructions, instructions]))
        floor = self.settings.abstain_min_similarity
        if prep.answer is None and floor is not None:
            sims = [c.similarity for c in prep.retrieval.chunks if c.similarity is not None]
            if not sims or max(sims) < floor:
                best = f"{max(sims):.3f}" if sims else "none"
                prep.warnings.append(f"abstained: best similarity {best} < floor {floor}")
                prep.answer = Answer(NOT_FOUND, "abstention-floor", abstained=True)
        return prep

    def _generator(self, name: str | None) -> LLMGenerator | ExtractiveGenerator:
        name = name or self.generator_name
        if name == "llm":
            self._require_llm("the llm generator")
            assert self.llm_generator is not None
            return self.llm_generator
        return self.extractive

    def _degraded(self, question: str, retrieval: RetrievalResult, reason: str) -> Answer:
        answer = self.extractive.generate(question, retrieval)
        answer.degraded = True
        answer.degraded_reason = reason
        return answer

    def query(
        self,
        params: SearchParams,
        *,
        history: Sequence[Message] = (),
        route: bool = False,
        generator: str | None = None,
        instructions: str | None = None,
    ) -> QueryResult:
        """Answer ``params.query`` from the documents; LLM trouble degrades, never raises.

        Args:
            history: earlier chat turns (``role``/``content``), oldest first.
            route: pick the collection and prompt with the router first.
            generator: ``"llm"`` or ``"extractive"``; default :attr:`generator_name`.
            instructions: extra instructions for the LLM (an app's system prompt).
        """
        gen = self._generator(generator)
        prep = self._prepare_answer(params, route, instructions)
        timings = dict(prep.retrieval.timings)
        answer = prep.answer
        if answer is None:
            t = time.perf_counter()
            try:
                answer = gen.generate(
                    prep.params.query,
                    prep.retrieval,
                    history=history,
                    instructions=prep.instructions,
                )
            except LLMError as exc:
                answer = self._degraded(prep.params.query, prep.retrieval, exc.reason)
            timings["generate_ms"] = _ms(t)
        return prep.result(answer, timings)

    def query_stream(
        self,
        params: SearchParams,
        *,
        history: Sequence[Message] = (),
        route: bool = False,
        generator: str | None = None,
        instructions: str | None = None,
    ) -> tuple[Prepared, Iterator[str | StreamReset | QueryResult]]:
        """Route and retrieve now (their errors raise here, so an API can still send a 4xx),
        and return the retrieval with an iterator of text deltas (and a :class:`StreamReset` if
        the LLM breaks off) that ends with the :class:`QueryResult`."""
        gen = self._generator(generator)
        prep = self._prepare_answer(params, route, instructions)
        return prep, self._stream(prep, gen, history)

    def _stream(
        self,
        prep: Prepared,
        gen: LLMGenerator | ExtractiveGenerator,
        history: Sequence[Message],
    ) -> Iterator[str | StreamReset | QueryResult]:
        timings = dict(prep.retrieval.timings)
        t = time.perf_counter()
        answer = prep.answer
        question = prep.params.query
        if answer is None and isinstance(gen, LLMGenerator):
            sent = False
            try:
                for item in gen.stream(
                    question, prep.retrieval, history=history, instructions=prep.instructions
                ):
                    if isinstance(item, Answer):
                        answer = item
                        continue
                    if not sent:
                        timings["first_token_ms"] = _ms(prep.started)
                    sent = True
                    yield item
            except LLMError as exc:
                answer = self._degraded(question, prep.retrieval, exc.reason)
                if sent:
                    yield StreamReset(exc.reason)
                yield answer.text
        else:
            if answer is None:
                answer = gen.generate(question, prep.retrieval)
            yield answer.text
        assert answer is not None
        timings["generate_ms"] = _ms(t)
        yield prep.result(answer, timings)

    # Ingest --------------------------------------------------------------------------------

    def ingest(
        self,
        documents: Iterable[Document],
        collection: str,
        progress: ProgressFn | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> IngestReport:
        with self._write_lock:
            ingestor = build_ingestor(self.settings, self.index, self.embedder, collection, tenant)
            return ingestor.ingest(documents, progress)

    def delete(self, doc_ids: Sequence[str], collection: str, tenant: str = DEFAULT_TENANT) -> int:
        with self._write_lock:
            ingestor = build_ingestor(self.settings, self.index, self.embedder, collection, tenant)
            return ingestor.delete(doc_ids)

    def drop_collection(self, collection: str) -> None:
        """Remove a collection with every tenant's points (operators only)."""
        with self._write_lock:
            require_manifest(self.index, collection)
            self.index.drop_collection(collection)

    def visible_collections(self, tenant: str | None) -> list[str]:
        """Collections holding points of ``tenant`` (every collection when ``None``): a tenant
        does not learn the names other tenants write to."""
        names = self.index.list_collections()
        return names if tenant is None else [n for n in names if self.index.count(n, tenant)]

    def document_sources(self, collection: str, tenant: str = DEFAULT_TENANT) -> dict[str, str]:
        require_manifest(self.index, collection)
        return build_ingestor(
            self.settings, self.index, self.embedder, collection, tenant
        ).document_sources()

    def close(self) -> None:
        self.index.close()


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


def build_router(settings: Settings, embedder: Embedder, llm: ChatLLM | None) -> Router | None:
    if not settings.routes:
        return None
    if settings.router == "llm":
        if llm is None:
            raise NotConfigured("GROUNDED_ROUTER=llm needs an LLM (GROUNDED_LLM_BASE_URL)")
        return LLMRouter(settings.routes, llm, settings.route_min_score)
    return EmbeddingRouter(settings.routes, embedder, settings.route_min_score)
