"""The index protocol, run against both adapters (Qdrant Edge and qdrant-client local mode)."""

from typing import Any

import pytest

from ingest.documents import point_id
from ingest.embedding import SentenceTransformerEmbedder
from ingest.index import (
    CollectionNotFound,
    FieldFilter,
    IncompatibleCollection,
    IndexPoint,
    Manifest,
    SearchQuery,
    VectorIndex,
)
from ingest.sparse import Bm25Encoder, Bm25Params

TEXTS = {
    "cats": ("Cats are small domesticated felines that purr.", {"year": 2019, "lang": "en"}),
    "dogs": ("Dogs are loyal domesticated canines that bark.", {"year": 2021, "lang": "en"}),
    "rust": ("Rust is a systems programming language.", {"year": 2015, "lang": "en"}),
    "katze": ("Die Katze schläft auf dem Sofa.", {"year": 2023, "lang": "de"}),
}


Filled = tuple[VectorIndex, SentenceTransformerEmbedder, Bm25Encoder]
"""An index with the collection "c" of TEXTS, its embedder, and its BM25 encoder."""


@pytest.fixture
def filled(index: VectorIndex, embedder: SentenceTransformerEmbedder) -> Filled:
    bm25 = Bm25Encoder(Bm25Params(avg_len=8))
    index.create_collection("c", Manifest(embedder.name, embedder.dimension, bm25.params, "test"))
    vectors = embedder.embed_documents([t for t, _ in TEXTS.values()])
    index.upsert(
        "c",
        [
            IndexPoint(
                point_id(doc_id, 0),
                vec,
                bm25.embed_document(text),
                {
                    "tenant": "default",
                    "doc_id": doc_id,
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "doc_hash": "h1",
                    "source": f"/src/{doc_id}.txt",
                    "text": text,
                    "metadata": meta,
                },
            )
            for (doc_id, (text, meta)), vec in zip(TEXTS.items(), vectors, strict=True)
        ],
    )
    return index, embedder, bm25


def query(
    embedder: SentenceTransformerEmbedder, bm25: Bm25Encoder, text: str, **kw: Any
) -> SearchQuery:
    return SearchQuery(dense=embedder.embed_query(text), sparse=bm25.embed_query(text), **kw)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
def test_every_mode_finds_the_obvious_document(filled: Filled, mode: str, fusion: str) -> None:
    index, embedder, bm25 = filled
    hits = index.search(
        "c", query(embedder, bm25, "purring cats", mode=mode, fusion=fusion, limit=2)
    )
    assert hits[0].payload["doc_id"] == "cats"
    assert hits[0].id == point_id("cats", 0)


def test_filters_equality_any_and_range(filled: Filled) -> None:
    index, embedder, bm25 = filled

    def ids(*filters: FieldFilter) -> set[str]:
        hits = index.search(
            "c", query(embedder, bm25, "animals", mode="dense", limit=10, filters=filters)
        )
        return {h.payload["doc_id"] for h in hits}

    assert ids(FieldFilter("metadata.lang", value="de")) == {"katze"}
    assert ids(FieldFilter("doc_id", any=("dogs", "rust"))) == {"dogs", "rust"}
    assert ids(FieldFilter("metadata.year", gte=2019, lt=2023)) == {"cats", "dogs"}
    assert ids(FieldFilter("metadata.lang", value="en"), FieldFilter("metadata.year", gt=2020)) == {
        "dogs"
    }
    hybrid = index.search(
        "c",
        query(
            embedder,
            bm25,
            "cats",
            mode="hybrid",
            limit=10,
            filters=(FieldFilter("metadata.lang", value="de"),),
        ),
    )
    assert {h.payload["doc_id"] for h in hybrid} == {"katze"}


def test_states_sources_stale_and_delete(filled: Filled) -> None:
    index, embedder, bm25 = filled
    states = index.document_states("c", ["cats", "missing"])
    assert set(states) == {"cats"} and states["cats"].is_current("h1")
    assert not states["cats"].is_current("h2")
    assert index.document_sources("c")["rust"] == "/src/rust.txt"

    # a new version of "cats" with 2 chunks, then the stale one goes
    vec = embedder.embed_documents(["new cats"])[0]
    index.upsert(
        "c",
        [
            IndexPoint(
                point_id("cats", i),
                vec,
                bm25.embed_document("new cats"),
                {
                    "tenant": "default",
                    "doc_id": "cats",
                    "chunk_index": i,
                    "chunk_count": 2,
                    "doc_hash": "h2",
                },
            )
            for i in range(2)
        ],
    )
    assert index.document_states("c", ["cats"])["cats"].is_current("h2")  # same ids overwritten
    index.delete_stale_chunks("c", {"cats": "h2"})
    assert index.count("c") == 5
    index.delete_documents("c", ["cats", "dogs"])
    assert index.count("c") == 2
    assert set(index.document_sources("c")) == {"rust", "katze"}


def test_manifest_and_unknown_collection(filled: Filled) -> None:
    index, embedder, _ = filled
    manifest = index.manifest("c")
    assert manifest is not None
    assert manifest.model == embedder.name and manifest.dimension == 384
    assert index.list_collections() == ["c"]
    with pytest.raises(IncompatibleCollection, match="was built with embedding model"):
        manifest.check_model("c", "intfloat/e5-small-v2", 384)
    with pytest.raises(CollectionNotFound, match=r"'nope' does not exist$"):
        index.count("nope")  # never lists the other collections
    index.drop_collection("c")
    assert index.manifest("c") is None
