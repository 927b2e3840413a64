"""MatryVectorStore beyond LangChain's standard suite: scores, filters, MMR, upserts, the
embedding contract on save/load, bad input, threads, and the optional import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if sys.version_info < (3, 10):  # langchain-core 1.x needs Python 3.10+
    pytest.skip("langchain-core needs Python 3.10 or newer", allow_module_level=True)

import matry
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from matry.integrations import langchain as lc
from matry.integrations.langchain import EncoderEmbeddings, MatryVectorStore, embedder_identity
from pydantic import BaseModel, SecretStr

DIM = 16


class TableEmbeddings(Embeddings):
    """Vectors looked up in a table ("doc-<i>" -> row i), unknown texts hashed: exact answers
    can then be computed with numpy. Its call counter is private: a public attribute that
    changes would change the embedder's recorded identity."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self._calls = 0

    def _vector(self, text: str) -> list[float]:
        if text in self.table:
            return [float(x) for x in self.table[text]]
        seed = sum(text.encode()) + 7 * len(text)
        return np.random.default_rng(seed).normal(size=DIM).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self._calls += 1
        return [self._vector(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


@pytest.fixture()
def corpus() -> tuple[TableEmbeddings, np.ndarray, list[str], list[dict[str, Any]]]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    texts = [f"doc-{i}" for i in range(len(vectors))]
    metadata = [{"group": i % 3, "even": i % 2 == 0, "tag": f"t{i % 5}"} for i in range(300)]
    return TableEmbeddings(dict(zip(texts, vectors))), vectors, texts, metadata


def _filled(corpus: Any, **kwargs: Any) -> MatryVectorStore:
    embeddings, _, texts, metadata = corpus
    return MatryVectorStore.from_texts(
        texts, embeddings, metadata, ids=[f"id{i}" for i in range(len(texts))], **kwargs
    )


def _exact(vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
    sims = _unit(vectors[allowed]) @ _unit(query)
    return [int(allowed[i]) for i in np.argsort(-sims, kind="stable")[:k]]


# ------------------------------------------------------------------ scores and search


def test_scores_are_cosine_similarities_nearest_first(corpus: Any) -> None:
    store = _filled(corpus, ef=300)
    _, vectors, _, _ = corpus
    query = np.random.default_rng(1).normal(size=DIM)
    pairs = store.similarity_search_with_score_by_vector(query.tolist(), k=10)
    expected = _exact(vectors, query, np.arange(len(vectors)), 10)
    assert [doc.id for doc, _ in pairs] == [f"id{i}" for i in expected]
    for doc, score in pairs:
        row = int(doc.page_content.split("-")[1])
        assert score == pytest.approx(float(_unit(vectors[row]) @ _unit(query)), abs=1e-5)
    assert [s for _, s in pairs] == sorted((s for _, s in pairs), reverse=True)
    assert pairs[0][0].metadata == {
        "group": expected[0] % 3,
        "even": expected[0] % 2 == 0,
        "tag": f"t{expected[0] % 5}",
    }


def test_relevance_scores_are_clipped_similarities_in_unit_range(corpus: Any) -> None:
    store = _filled(corpus)
    _, vectors, _, _ = corpus
    query = -vectors[0]  # doc-0 itself is at similarity -1
    plain = store.similarity_search_with_score_by_vector(query, k=300)
    relevance = store.similarity_search_with_relevance_scores("doc-0", k=300)  # no warning
    assert all(0.0 <= r <= 1.0 for _, r in relevance)
    assert min(s for _, s in plain) == pytest.approx(-1.0, abs=1e-5)
    top = store.similarity_search_with_relevance_scores("doc-0", k=3, score_threshold=0.99)
    assert [doc.id for doc, _ in top] == ["id0"]


def test_search_k_beyond_the_store_and_empty_store(corpus: Any) -> None:
    embeddings, *_ = corpus
    empty = MatryVectorStore(embedding=embeddings)
    assert empty.similarity_search("doc-1", k=3) == []
    assert empty.max_marginal_relevance_search("doc-1", k=3) == []
    assert empty.index is None and len(empty) == 0
    empty.add_texts(["doc-1", "doc-2"], ids=["a", "b"])
    assert [d.id for d in empty.similarity_search("doc-1", k=10)] == ["a", "b"]


def test_upsert_replaces_text_metadata_and_vector(corpus: Any) -> None:
    store = _filled(corpus)
    _, vectors, _, _ = corpus
    assert store.add_texts(["doc-7"], [{"new": True}], ids=["id3"]) == ["id3"]
    assert len(store) == 300 and len(store.index) == 300  # type: ignore[arg-type]
    (doc,) = store.get_by_ids(["id3"])
    assert doc == Document(id="id3", page_content="doc-7", metadata={"new": True})
    nearest = store.similarity_search_with_score_by_vector(vectors[7], k=2)
    assert {d.id for d, _ in nearest} == {"id3", "id7"}  # both now hold doc-7's vector
    assert all(s == pytest.approx(1.0, abs=1e-5) for _, s in nearest)
    assert "id3" not in [d.id for d in store.similarity_search_by_vector(vectors[3], k=1)]


def test_repeated_id_in_one_call_keeps_the_last(corpus: Any) -> None:
    embeddings, *_ = corpus
    store = MatryVectorStore(embedding=embeddings)
    ids = store.add_texts(["doc-1", "doc-2", "doc-3"], ids=["x", "y", "x"])
    assert ids == ["x", "y", "x"]
    assert len(store) == 2
    assert store.get_by_ids(["x"])[0].page_content == "doc-3"


def test_generated_ids_are_uuids_and_documents_are_not_mutated(corpus: Any) -> None:
    embeddings, *_ = corpus
    store = MatryVectorStore(embedding=embeddings)
    metadata = {"a": [1, 2]}
    documents = [Document(page_content="doc-1", metadata=metadata), Document(page_content="d2")]
    ids = store.add_documents(documents, ids=["", None])
    assert len(set(ids)) == 2 and all(len(i) == 36 for i in ids)
    assert documents[0].id is None
    metadata["a"] = "changed by the caller"
    assert store.get_by_ids([ids[0]])[0].metadata == {"a": [1, 2]}
    returned = store.get_by_ids([ids[0]])[0]
    returned.metadata["b"] = 1  # a returned document is a copy
    assert store.get_by_ids([ids[0]])[0].metadata == {"a": [1, 2]}


def test_get_by_ids_keeps_order_skips_missing_and_repeats(corpus: Any) -> None:
    store = _filled(corpus)
    found = store.get_by_ids(["id5", "nope", "id2", "id5"])
    assert [d.id for d in found] == ["id5", "id2"]


def test_delete_some_then_all(corpus: Any) -> None:
    store = _filled(corpus)
    assert store.delete(["id0", "id1", "missing", "id0"]) is True
    assert len(store) == 298 and store.get_by_ids(["id0", "id1"]) == []
    _, vectors, _, _ = corpus
    assert store.similarity_search_by_vector(vectors[0], k=1)[0].id != "id0"
    store.delete()
    assert len(store) == 0 and store.similarity_search("doc-3") == []
    store.add_texts(["doc-3"], ids=["id0"])  # a deleted id can come back
    assert store.similarity_search("doc-3", k=5)[0].id == "id0"


# ------------------------------------------------------------------ filters


def test_dict_filter_returns_exact_matches_only(corpus: Any) -> None:
    store = _filled(corpus, ef=300)
    _, vectors, _, metadata = corpus
    rng = np.random.default_rng(2)
    for where in (
        {"group": 1},
        {"even": False},
        {"group": 2, "even": True},
        {"tag": "t4", "group": 0},
        {"tag": ["t1", "t3"], "even": True},  # a list: any of its values, as where= does
    ):

        def passes(m: dict[str, Any], where: dict[str, Any] = where) -> bool:
            return all(m[k] in v if isinstance(v, list) else m[k] == v for k, v in where.items())

        allowed = np.array([i for i, m in enumerate(metadata) if passes(m)])
        for _ in range(5):
            query = rng.normal(size=DIM)
            found = store.similarity_search_by_vector(query, k=8, filter=where)
            assert [d.id for d in found] == [f"id{i}" for i in _exact(vectors, query, allowed, 8)]
            assert all(passes(d.metadata) for d in found)


def test_filter_runs_inside_the_index_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broad filter on a larger store takes the filtered graph traversal (a selective one,
    the exact scan; matry's cost model at the default ef 64 chooses): either way the index
    gets the allowed ids, nothing is post-filtered."""
    rng = np.random.default_rng(8)
    vectors = rng.normal(size=(4000, DIM)).astype(np.float32)
    texts = [f"doc-{i}" for i in range(4000)]
    store = MatryVectorStore.from_texts(
        texts,
        TableEmbeddings(dict(zip(texts, vectors))),
        [{"half": i % 2, "rare": i % 400 == 0} for i in range(4000)],
    )
    paths: list[bool] = []
    search = matry.Index.search

    def spy(self: matry.Index, *args: Any, **kwargs: Any) -> Any:
        assert isinstance(kwargs.get("filter"), (matry.IdSet, type(None)))
        ids, distances, stats = search(self, *args, **kwargs, stats=True)
        paths.extend(stats.brute_force.tolist())
        return ids, distances

    monkeypatch.setattr(matry.Index, "search", spy)
    hits = 0
    for query in rng.normal(size=(20, DIM)):
        found = store.similarity_search_by_vector(query, k=10, filter={"half": 1})
        assert len(found) == 10 and all(d.metadata["half"] == 1 for d in found)
        exact = _exact(vectors, query, np.arange(1, 4000, 2), 10)
        hits += len({d.page_content for d in found} & {f"doc-{i}" for i in exact})
    rare = store.similarity_search_by_vector(rng.normal(size=DIM), k=20, filter={"rare": True})
    assert sorted(int(d.page_content[4:]) for d in rare) == list(range(0, 4000, 400))
    assert paths[:20] == [False] * 20 and paths[20] is True  # graph, then the exact scan
    assert hits / 200 >= 0.9


def test_filter_with_few_matches_returns_fewer_than_k(corpus: Any) -> None:
    store = _filled(corpus)
    store.add_texts(["doc-1"], [{"rare": "yes"}], ids=["rare"])
    assert [d.id for d in store.similarity_search("doc-9", k=5, filter={"rare": "yes"})] == ["rare"]
    assert store.similarity_search("doc-9", k=5, filter={"rare": "no"}) == []
    assert store.similarity_search("doc-9", k=5, filter={"missing_key": None}) == []
    assert len(store.similarity_search("doc-9", k=5, filter={})) == 5  # no condition


def test_callable_filter_sees_documents(corpus: Any) -> None:
    store = _filled(corpus)
    _, vectors, _, _ = corpus
    seen: list[Document] = []

    def odd_docs(doc: Document) -> bool:
        seen.append(doc)
        return int(doc.page_content.split("-")[1]) % 2 == 1

    query = vectors[10]
    found = store.similarity_search_by_vector(query, k=4, filter=odd_docs)
    allowed = np.arange(1, 300, 2)
    assert [d.id for d in found] == [f"id{i}" for i in _exact(vectors, query, allowed, 4)]
    assert len(seen) == 300 and all(isinstance(d, Document) and d.id for d in seen)
    with pytest.raises(TypeError, match="filter"):
        store.similarity_search("doc-1", filter="group == 1")


# ------------------------------------------------------------------ MMR


def test_mmr_matches_langchains_reference_on_the_same_candidates(corpus: Any) -> None:
    store = _filled(corpus, ef=300)
    _, vectors, _, _ = corpus
    query = np.random.default_rng(3).normal(size=DIM)
    candidates = _exact(vectors, query, np.arange(300), 20)
    for lambda_mult in (0.0, 0.25, 0.5, 1.0):
        chosen = maximal_marginal_relevance(
            query.astype(np.float32), [vectors[i].tolist() for i in candidates], lambda_mult, 6
        )
        found = store.max_marginal_relevance_search_by_vector(
            query, k=6, fetch_k=20, lambda_mult=lambda_mult
        )
        assert [d.id for d in found] == [f"id{candidates[i]}" for i in chosen]
    plain = store.similarity_search_by_vector(query, k=6)
    assert store.max_marginal_relevance_search_by_vector(query, k=6, lambda_mult=1.0) == plain


def test_mmr_skips_duplicates_and_honours_filter(corpus: Any) -> None:
    embeddings, vectors, _, _ = corpus
    store = MatryVectorStore(embedding=embeddings)
    store.add_texts(
        ["doc-1"] * 3 + ["doc-2", "doc-3"],
        [{"g": 1}] * 4 + [{"g": 2}],
        ids=["a", "b", "c", "d", "e"],
    )
    found = store.max_marginal_relevance_search("doc-1", k=2, fetch_k=5, lambda_mult=0.3)
    assert found[0].page_content == "doc-1" and found[1].page_content != "doc-1"
    filtered = store.max_marginal_relevance_search("doc-1", k=5, filter={"g": 2})
    assert [d.id for d in filtered] == ["e"]


def test_retriever_modes(corpus: Any) -> None:
    store = _filled(corpus)
    retriever = store.as_retriever(search_kwargs={"k": 3, "filter": {"group": 0}})
    docs = retriever.invoke("doc-3")
    assert docs[0].id == "id3" and all(d.metadata["group"] == 0 for d in docs)
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 10})
    assert len(mmr.invoke("doc-4")) == 2
    threshold = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.999}
    )
    assert [d.id for d in threshold.invoke("doc-5")] == ["id5"]


# ------------------------------------------------------------------ bad input


def test_bad_arguments_raise_and_name_the_argument(corpus: Any) -> None:
    store = _filled(corpus)
    with pytest.raises(ValueError, match="k: must be a positive integer"):
        store.similarity_search("doc-1", k=0)
    with pytest.raises(ValueError, match="fetch_k"):
        store.max_marginal_relevance_search("doc-1", fetch_k=-1)
    with pytest.raises(ValueError, match="lambda_mult"):
        store.max_marginal_relevance_search("doc-1", lambda_mult=1.5)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['filters'\\]"):
        store.similarity_search("doc-1", filters={"group": 1})
    with pytest.raises(matry.ContractError, match="5-d vectors, but this store holds 16-d"):
        store.similarity_search_by_vector([0.1] * 5)
    with pytest.raises(ValueError, match="NaN or inf"):
        store.similarity_search_by_vector([float("nan")] * DIM)
    with pytest.raises(ValueError, match="all zeros"):
        store.similarity_search_by_vector([0.0] * DIM)
    with pytest.raises(TypeError, match="ids: expected a list of str, got one str"):
        store.delete("id1")
    with pytest.raises(TypeError, match="ids: expected a list"):
        store.get_by_ids("id1")
    with pytest.raises(TypeError, match="query: expected str"):
        store.similarity_search(["doc-1"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="embedding: expected a LangChain Embeddings"):
        MatryVectorStore(embedding=lambda text: [1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="M: must be >= 2"):
        MatryVectorStore(embedding=corpus[0], M=1)


class _Failing(TableEmbeddings):
    def __init__(self, table: dict[str, np.ndarray], result: Any) -> None:
        super().__init__(table)
        self.result = result

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("result", "error", "match"),
    [
        (RuntimeError("service down"), RuntimeError, "service down"),
        ([[float("nan")] * DIM, [1.0] * DIM], ValueError, "row 0 contains NaN"),
        ([[1.0] * DIM], ValueError, "expected 2 vectors"),
        ([[1.0] * 8, [1.0] * 8], matry.ContractError, "8-d vectors"),
        ([["a"] * DIM, [1.0] * DIM], ValueError, "numeric"),
    ],
)
def test_failed_add_changes_nothing(
    corpus: Any, result: Any, error: type[Exception], match: str
) -> None:
    store = _filled(corpus)
    before = [(d.id, d.page_content, d.metadata) for d in store.get_by_ids(["id1", "id2"])]
    store._embedding = _Failing(corpus[0].table, result)
    with pytest.raises(error, match=match):
        store.add_texts(["doc-9", "doc-8"], [{"x": 1}, {"x": 2}], ids=["id1", "new"])
    assert len(store) == 300 and len(store.index) == 300  # type: ignore[arg-type]
    assert store.get_by_ids(["new"]) == []
    after = [(d.id, d.page_content, d.metadata) for d in store.get_by_ids(["id1", "id2"])]
    assert after == before
    store._embedding = corpus[0]
    assert store.similarity_search("doc-1", k=1)[0].id == "id1"


def test_failed_index_add_restores_replaced_documents(
    corpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index add interrupted part-way (Ctrl-C between chunks) is rolled back as well."""
    store = _filled(corpus)
    _, vectors, _, _ = corpus
    index = store.index
    assert index is not None
    add = matry.Index.add

    calls: list[int] = []

    def interrupted(self: matry.Index, rows: Any, ids: Any = None, **kwargs: Any) -> Any:
        calls.append(len(rows))
        if len(calls) > 1:  # the rollback's own add
            return add(self, rows, ids=ids, **kwargs)
        add(self, np.asarray(rows)[:1], ids=np.asarray(ids)[:1], **kwargs)  # first row lands
        raise KeyboardInterrupt

    monkeypatch.setattr(matry.Index, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.add_texts(["doc-50", "doc-51"], ids=["id1", "brand-new"])
    monkeypatch.undo()
    assert calls == [2, 1]
    assert len(index) == 300 and store.get_by_ids(["brand-new"]) == []
    np.testing.assert_allclose(index.get([1])[0], _unit(vectors[1]), atol=1e-6)
    assert store.get_by_ids(["id1"])[0].page_content == "doc-1"


def test_bad_metadata_and_ids_are_refused_before_embedding(corpus: Any) -> None:
    embeddings, *_ = corpus
    store = MatryVectorStore(embedding=embeddings)
    with pytest.raises(ValueError, match="metadatas: expected 2"):
        store.add_texts(["a", "b"], [{}])
    with pytest.raises(TypeError, match="metadatas\\[1\\]: expected a dict"):
        store.add_texts(["a", "b"], [{}, "x"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="ids: expected 2"):
        store.add_texts(["a", "b"], ids=["1"])
    with pytest.raises(TypeError, match="ids\\[0\\]: expected str"):
        store.add_texts(["a"], ids=[1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="texts\\[1\\]: expected str"):
        store.add_texts(["a", 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="got one str"):
        store.add_texts("abc")
    with pytest.raises(TypeError, match="documents\\[0\\]"):
        store.add_documents(["abc"])  # type: ignore[list-item]
    assert embeddings._calls == 0 and len(store) == 0


# ------------------------------------------------------------------ save / load and the contract


def test_save_load_round_trip(corpus: Any, tmp_path: Path) -> None:
    store = _filled(corpus, M=8, ef=200)
    store.delete(["id4"])
    path = tmp_path / "kb.matry"
    store.save(path)
    loaded = MatryVectorStore.load(path, embedding=corpus[0])
    assert len(loaded) == 299 and loaded.index is not None
    assert loaded.index.ef == 200 and loaded.index.M == 8
    for query in ("doc-1", "doc-77", "something else"):
        assert loaded.similarity_search_with_score(
            query, k=5
        ) == store.similarity_search_with_score(query, k=5)
    assert loaded.get_by_ids(["id4"]) == [] and loaded.get_by_ids(["id9"]) == store.get_by_ids(
        ["id9"]
    )
    assert loaded.add_texts(["doc-4"], ids=["again"]) == ["again"]  # keys do not collide
    assert len(loaded) == 300 and loaded.similarity_search("doc-4", k=1)[0].id == "again"
    assert loaded.get_by_ids(["id299"])[0].page_content == "doc-299"


def test_empty_store_saves_and_loads(tmp_path: Path) -> None:
    store = MatryVectorStore(embedding=DeterministicFakeEmbedding(size=6))
    store.save(tmp_path / "empty.matry")
    loaded = MatryVectorStore.load(tmp_path / "empty.matry", DeterministicFakeEmbedding(size=6))
    assert len(loaded) == 0 and loaded.index is None
    loaded.add_texts(["hello"], ids=["h"])
    assert loaded.similarity_search("hello", k=1)[0].id == "h"


def test_load_refuses_another_embedder(corpus: Any, tmp_path: Path) -> None:
    path = tmp_path / "fake6.matry"
    store = MatryVectorStore.from_texts(["a", "b"], DeterministicFakeEmbedding(size=6))
    store.save(path)
    with pytest.raises(matry.ContractError, match="size.*6.*size.*8"):
        MatryVectorStore.load(path, DeterministicFakeEmbedding(size=8))
    with pytest.raises(matry.ContractError, match="DeterministicFakeEmbedding.*TableEmbeddings"):
        MatryVectorStore.load(path, corpus[0])
    # the override opens it; the new embedder's identity is saved from then on
    moved = MatryVectorStore.load(path, corpus[0], allow_embedding_change=True)
    assert len(moved) == 2
    with pytest.raises(matry.ContractError, match="16-d vectors, but this store holds 6-d"):
        moved.similarity_search("a")


def test_load_refuses_files_that_are_not_stores(tmp_path: Path) -> None:
    index = matry.Index(4)
    index.add(np.eye(4))
    index.save(tmp_path / "plain.matry")
    with pytest.raises(matry.ContractError, match="without a LangChain store record"):
        MatryVectorStore.load(tmp_path / "plain.matry", DeterministicFakeEmbedding(size=4))


def test_load_refuses_a_record_that_does_not_match_the_index(tmp_path: Path) -> None:
    store = MatryVectorStore.from_texts(["a", "b", "c"], DeterministicFakeEmbedding(size=6))
    record = store._record()
    index = store.index
    assert index is not None
    for broken in (
        {**record, "keys": record["keys"][:2]},
        {**record, "ids": ["x", "x", "y"]},
        {**record, "next_key": 1},
        {**record, "metadata": [1, 2, 3]},
        {k: v for k, v in record.items() if k != "texts"},
        {**record, "format": 99},
    ):
        index.metadata[lc.METADATA_KEY] = broken
        index.save(tmp_path / "broken.matry")
        with pytest.raises(matry.CorruptIndexError):
            MatryVectorStore.load(tmp_path / "broken.matry", DeterministicFakeEmbedding(size=6))


def test_save_refuses_metadata_that_is_not_json(tmp_path: Path) -> None:
    store = MatryVectorStore.from_texts(
        ["a", "b"],
        DeterministicFakeEmbedding(size=6),
        [{"ok": 1}, {"when": object()}],
        ids=["fine", "bad"],
    )
    with pytest.raises(ValueError, match="metadata of document 'bad' is not JSON"):
        store.save(tmp_path / "x.matry")
    assert not (tmp_path / "x.matry").exists()
    assert store.index is not None and lc.METADATA_KEY not in store.index.metadata


class _ServiceEmbeddings(BaseModel, Embeddings):
    model: str = "embed-small"
    dimensions: int = 6
    api_key: SecretStr = SecretStr("sk-very-secret")
    access_token: str = "also-secret"
    max_retries: int = 3
    request_timeout: float = 10.0
    client: Any = None

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return np.random.default_rng(len(text)).normal(size=self.dimensions).tolist()


def test_identity_of_a_langchain_embedder_keeps_model_settings_only(tmp_path: Path) -> None:
    service = _ServiceEmbeddings(client=object())
    identity = embedder_identity(service)
    assert identity == {
        "kind": "langchain",
        "class": f"{__name__}._ServiceEmbeddings",
        "config": {"dimensions": 6, "model": "embed-small"},
    }
    store = MatryVectorStore.from_texts(["one", "three"], service)
    store.save(tmp_path / "s.matry")
    assert b"secret" not in (tmp_path / "s.matry").read_bytes()
    # operational settings may change; the model may not
    MatryVectorStore.load(tmp_path / "s.matry", _ServiceEmbeddings(max_retries=9, timeout=1))
    with pytest.raises(matry.ContractError, match="embed-large"):
        MatryVectorStore.load(tmp_path / "s.matry", _ServiceEmbeddings(model="embed-large"))


# ------------------------------------------------------------------ matry's own Encoder


@pytest.fixture(scope="module")
def encoder() -> matry.Encoder:
    return matry.Encoder.default()


def test_encoder_as_embedder(encoder: matry.Encoder, tmp_path: Path) -> None:
    texts = [
        "The cat sat on the mat.",
        "Stock markets fell sharply on Monday.",
        "A recipe for chocolate cake with cocoa.",
        "The football team won the championship.",
    ]
    store = MatryVectorStore(embedding=encoder)
    assert store.index is not None and store.index.dim == encoder.dim
    assert isinstance(store.embeddings, EncoderEmbeddings)
    store.add_texts(texts, [{"n": i} for i in range(4)], ids=["cat", "money", "cake", "ball"])
    assert store.similarity_search("how do I bake a dessert", k=1)[0].id == "cake"
    assert store.similarity_search("feline", k=1)[0].id == "cat"
    query = encoder.encode("league final", input_type="query")[0]
    assert store.similarity_search_by_vector(query, k=1)[0].id == "ball"
    identity = store.embedder_identity
    assert identity["kind"] == "matry.Encoder" and identity["fingerprint"] == encoder.fingerprint
    path = tmp_path / "enc.matry"
    store.save(path)
    again = MatryVectorStore.load(path, encoder)
    assert again.similarity_search("pets", k=4) == store.similarity_search("pets", k=4)
    with pytest.raises(matry.ContractError, match=":128d:"):
        MatryVectorStore.load(path, EncoderEmbeddings(encoder, dims=128))
    with pytest.raises(matry.ContractError, match="matry.Encoder"):
        MatryVectorStore.load(path, DeterministicFakeEmbedding(size=encoder.dim))


def test_encoder_embeddings_adapter(encoder: matry.Encoder) -> None:
    adapter = EncoderEmbeddings(encoder, dims=64)
    docs = adapter.embed_documents(["a b c", "d e f"])
    assert len(docs) == 2 and len(docs[0]) == 64
    np.testing.assert_allclose(
        adapter.embed_query("a b c"),
        encoder.encode("a b c", input_type="query", dims=64)[0],
        atol=1e-6,
    )
    assert adapter.fingerprint == encoder.fingerprint_for(64)
    with pytest.raises(ValueError, match="dims"):
        EncoderEmbeddings(encoder, dims=10_000)
    with pytest.raises(TypeError, match="encoder"):
        EncoderEmbeddings("all-MiniLM-L6-v2")  # type: ignore[arg-type]


# ------------------------------------------------------------------ recall monitoring


def test_recall_monitor_sees_the_stores_searches(corpus: Any) -> None:
    from matry import tune

    store = _filled(corpus)
    _, vectors, _, metadata = corpus
    with pytest.raises(ValueError, match="must monitor this store's index"):
        store.recall_monitor = tune.RecallMonitor(matry.Index(DIM))
    with pytest.raises(TypeError, match="recall_monitor"):
        store.recall_monitor = object()  # type: ignore[assignment]
    monitor = tune.RecallMonitor(store.index, k=4, sample_rate=1.0, min_samples=10)
    store.recall_monitor = monitor
    try:
        rng = np.random.default_rng(9)
        for _ in range(30):
            store.similarity_search_by_vector(rng.normal(size=DIM), k=4)
            store.similarity_search_by_vector(rng.normal(size=DIM), k=4, filter={"group": 1})
        store.similarity_search_by_vector(rng.normal(size=DIM), k=2)  # fewer than k: skipped
        assert monitor.flush(10)
        status = monitor.status()
        assert status.total_samples == 60 and status.skipped == 1
        assert status.recall is not None and status.recall > 0.9 and status.state == "ok"
        store.delete()  # the index object stays, and the monitor with it
        assert store.index is monitor.index and len(store.index) == 0
    finally:
        monitor.close()
    store.recall_monitor = None
    assert store.recall_monitor is None


# ------------------------------------------------------------------ threads and imports


def test_concurrent_adds_deletes_and_searches(corpus: Any) -> None:
    store = _filled(corpus)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        try:
            for i in range(40):
                store.add_texts(
                    [f"doc-{(i + offset) % 300}"], [{"w": offset}], ids=[f"w{offset}-{i}"]
                )
                if i % 3 == 0:
                    store.delete([f"w{offset}-{i}", f"id{i + offset}"])
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def reader() -> None:
        try:
            while not stop.is_set():
                for doc in store.similarity_search("doc-5", k=5, filter={"group": 2}):
                    assert doc.metadata["group"] == 2
                store.max_marginal_relevance_search("doc-6", k=3)
                store.similarity_search("doc-7", k=5)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 100)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads + readers:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert errors == []
    index = store.index
    assert index is not None and len(index) == len(store)
    assert sorted(index.ids().tolist()) == sorted(store._records)


def test_import_matry_does_not_import_langchain() -> None:
    script = textwrap.dedent("""
        import sys
        import matry, matry.integrations, matry.tune
        loaded = [m for m in sys.modules if m.startswith(("langchain", "pydantic"))]
        assert not loaded, loaded
        sys.modules["langchain_core"] = None  # makes "import langchain_core" fail
        try:
            import matry.integrations.langchain
        except ImportError as error:
            print(error)
        else:
            raise SystemExit("no ImportError")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "matry[langchain]" in result.stdout


def test_saved_record_is_plain_json(tmp_path: Path) -> None:
    store = MatryVectorStore.from_texts(
        ["a", "b"], DeterministicFakeEmbedding(size=6), [{"k": [1, "x"]}, {}], ids=["1", "2"]
    )
    store.save(tmp_path / "r.matry")
    record = matry.read_metadata(tmp_path / "r.matry")["metadata"][lc.METADATA_KEY]
    assert record["ids"] == ["1", "2"] and record["texts"] == ["a", "b"]
    assert record["embedder"]["config"] == {"size": 6}
    json.dumps(record)
