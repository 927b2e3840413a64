"""LangChain vector store on a matry HNSW index, keeping the embedding contract.

    from matry.integrations.langchain import MatryVectorStore
    store = MatryVectorStore(embedding=OpenAIEmbeddings())    # or matry.Encoder()
    store.add_documents(docs)                                  # ids: Document.id or uuid4
    store.similarity_search("question", k=4, filter={"source": "faq"})
    store.save("kb.matry"); store = MatryVectorStore.load("kb.matry", embedding=...)

The embedder is any LangChain ``Embeddings`` or a :class:`matry.Encoder` (wrapped in
:class:`EncoderEmbeddings`, which encodes documents and queries each with the model's own input
type). The store records which embedder made its vectors and :meth:`MatryVectorStore.load`
refuses another one with :class:`matry.ContractError`.

Scores: :meth:`~MatryVectorStore.similarity_search_with_score` returns the cosine similarity
(higher is closer, in [-1, 1]), as LangChain's ``InMemoryVectorStore`` does; relevance scores
(``similarity_search_with_relevance_scores``, ``search_type="similarity_score_threshold"``) are
the same similarity clipped to LangChain's [0, 1] range.

Needs ``langchain-core`` (``pip install 'matry[langchain]'``); ``import matry`` never imports it.
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "matry.integrations.langchain needs langchain-core, which is not installed: "
        "pip install 'matry[langchain]'"
    ) from error

from ..encoder import Encoder, fingerprints_match
from ..errors import ContractError, CorruptIndexError
from ..filters import IdSet
from ..index import Index, read_metadata

if TYPE_CHECKING:
    from ..tune import RecallMonitor

__all__ = ["EncoderEmbeddings", "MatryVectorStore", "embedder_identity"]

PathLike = Union[str, "os.PathLike[str]"]
MetadataFilter = Union[dict[str, Any], Callable[[Document], bool]]

#: Key of the store's record inside :attr:`matry.Index.metadata` of a saved file.
METADATA_KEY = "matry_langchain"
_RECORD_FORMAT = 1
# Settings of an embedder that change how it runs, never the vectors it returns; they are left
# out of its identity so that, e.g., a new timeout does not make a saved store unloadable.
_OPERATIONAL_SETTINGS = frozenset(
    {
        "async_client",
        "batch_size",
        "chunk_size",
        "client",
        "embed_batch_size",
        "http_async_client",
        "http_client",
        "max_concurrency",
        "max_retries",
        "num_threads",
        "request_timeout",
        "retry_max_seconds",
        "retry_min_seconds",
        "show_progress",
        "show_progress_bar",
        "timeout",
        "verbose",
    }
)
# Setting names that may hold credentials: never written to a file.
_SECRET_WORDS = ("key", "token", "secret", "password", "credential", "auth")
_INDEX_SETTINGS = ("M", "ef_construction", "seed")


class EncoderEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a :class:`matry.Encoder`.

    Documents are encoded with ``input_type="document"`` and queries with ``"query"``, so
    models that prefix the two differently (e5, nomic...) are used as they were trained.
    ``dims`` keeps the first ``dims`` components (Matryoshka truncation, re-normalized); the
    identity recorded by a store is ``encoder.fingerprint_for(dims)``.
    """

    def __init__(
        self, encoder: Encoder | None = None, *, dims: int | None = None, batch_size: int = 64
    ) -> None:
        if encoder is None:
            encoder = Encoder.default()
        if not isinstance(encoder, Encoder):
            raise TypeError(f"encoder: expected a matry.Encoder, got {type(encoder).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: must be a positive int, got {batch_size!r}")
        self._encoder = encoder
        self._dims = encoder._check_dims(dims)
        self._batch_size = batch_size

    @property
    def encoder(self) -> Encoder:
        return self._encoder

    @property
    def dims(self) -> int:
        """Dimension of the vectors returned."""
        return self._dims

    @property
    def fingerprint(self) -> str:
        """Identity of the vectors returned (see :meth:`matry.Encoder.fingerprint_for`)."""
        return self._encoder.fingerprint_for(self._dims)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Document vectors, float32 ``[n, dims]``."""
        return self._encoder.encode(
            list(texts), input_type="document", dims=self._dims, batch_size=self._batch_size
        )

    def encode_query(self, text: str) -> np.ndarray:
        """One query vector, float32 ``[dims]``."""
        if not isinstance(text, str):
            raise TypeError(f"query: expected str, got {type(text).__name__}")
        vector: np.ndarray = self._encoder.encode(text, input_type="query", dims=self._dims)[0]
        return vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_documents(texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self.encode_query(text).tolist()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"EncoderEmbeddings({self._encoder.name!r}, dims={self._dims})"


_SKIP = object()


def _json_value(value: Any, depth: int = 0) -> Any:
    """``value`` if it is plain JSON data (nested at most 8 deep), else ``_SKIP``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _SKIP
    if depth >= 8:
        return _SKIP
    if isinstance(value, (list, tuple)):
        items = [_json_value(item, depth + 1) for item in value]
        return _SKIP if any(item is _SKIP for item in items) else items
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        entries = {key: _json_value(item, depth + 1) for key, item in value.items()}
        return _SKIP if any(item is _SKIP for item in entries.values()) else entries
    return _SKIP


def _public_config(embedding: Any) -> dict[str, Any]:
    """The embedder's public settings that are plain data (pydantic fields or attributes),
    without operational knobs (timeouts, batch sizes...) and anything that may be a secret."""
    raw: Any = None
    dump = getattr(embedding, "model_dump", None)
    if callable(dump):
        try:
            raw = dump()
        except Exception:  # a model_dump that fails is no reason to refuse the embedder
            raw = None
    if not isinstance(raw, dict):
        raw = dict(vars(embedding)) if hasattr(embedding, "__dict__") else {}
    config: dict[str, Any] = {}
    for name in sorted(key for key in raw if isinstance(key, str)):
        lowered = name.lower()
        if name.startswith("_") or name in _OPERATIONAL_SETTINGS:
            continue
        if any(word in lowered for word in _SECRET_WORDS):
            continue
        value = _json_value(raw[name])
        if value is not _SKIP:
            config[name] = value
    return config


def _as_embeddings(embedding: Any) -> Embeddings:
    if isinstance(embedding, Encoder):
        return EncoderEmbeddings(embedding)
    if isinstance(embedding, Embeddings):
        return embedding
    raise TypeError(
        "embedding: expected a LangChain Embeddings object or a matry.Encoder, got "
        f"{type(embedding).__name__}"
    )


def embedder_identity(embedding: Embeddings | Encoder) -> dict[str, Any]:
    """What a store records about the embedder that made its vectors.

    A :class:`matry.Encoder` (or :class:`EncoderEmbeddings`) is identified by its fingerprint,
    which hashes the model and tokenizer files, pooling, normalization, dims and prefixes.
    Any other LangChain ``Embeddings`` by its class (module and qualified name) and its public
    settings that are plain data: pydantic fields (``model_dump()``) or instance attributes,
    except operational ones (retries, timeouts, batch sizes, progress bars) and any whose name
    suggests a credential.
    """
    embeddings = _as_embeddings(embedding)
    if isinstance(embeddings, EncoderEmbeddings):
        return {
            "kind": "matry.Encoder",
            "fingerprint": embeddings.fingerprint,
            "name": embeddings.encoder.name,
            "dims": embeddings.dims,
        }
    cls = type(embeddings)
    return {
        "kind": "langchain",
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config": _public_config(embeddings),
    }


def _same_embedder(stored: dict[str, Any], given: dict[str, Any]) -> bool:
    if stored.get("kind") != given.get("kind"):
        return False
    if given["kind"] == "matry.Encoder":
        return fingerprints_match(str(stored.get("fingerprint")), str(given["fingerprint"]))
    return bool(stored.get("class") == given["class"] and stored.get("config") == given["config"])


def _describe(identity: dict[str, Any]) -> str:
    if identity.get("kind") == "matry.Encoder":
        return f"matry.Encoder {identity.get('fingerprint')!r}"
    config = json.dumps(identity.get("config"), sort_keys=True)
    return f"{identity.get('class')} with settings {config}"


class _Record:
    """One stored document: its LangChain id, text and metadata."""

    __slots__ = ("doc_id", "metadata", "text")

    def __init__(self, doc_id: str, text: str, metadata: dict[str, Any]) -> None:
        self.doc_id = doc_id
        self.text = text
        self.metadata = metadata

    def document(self) -> Document:
        return Document(id=self.doc_id, page_content=self.text, metadata=dict(self.metadata))


def _check_k(value: Any, name: str = "k") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def _no_extra(kwargs: dict[str, Any], method: str) -> None:
    if kwargs:
        raise TypeError(f"{method}() got unexpected keyword arguments {sorted(kwargs)}")


class MatryVectorStore(VectorStore):
    """LangChain ``VectorStore`` on a matry HNSW index (metric cosine).

    Args:
        embedding: a LangChain ``Embeddings`` or a :class:`matry.Encoder` (wrapped in
            :class:`EncoderEmbeddings`). Its identity is recorded when saving and checked by
            :meth:`load`.
        M, ef_construction, seed: HNSW build parameters (see :class:`matry.Index`).
        ef: search beam width (default: the index's, 64); raise it for recall, lower it for
            speed, or tune it with ``matry.tune.ef_for_recall(store.index, ...)``.

    Documents are keyed by their LangChain id (a string: ``Document.id``, the ``ids``
    argument, or a new uuid4); adding an id that exists replaces that document (upsert).
    Internally each document has an int64 index id; the mapping is saved with the index.
    Search methods take ``filter=``: a dict (every key equal in the document's metadata; a
    list, tuple or set of values matches any of them, as ``Collection.search(where=)``) or a
    callable ``Document -> bool``. The matching ids go to the index's filtered search, so
    only matching documents are returned (fewer than ``k`` when fewer match).
    """

    def __init__(
        self,
        embedding: Embeddings | Encoder,
        *,
        M: int = 16,
        ef_construction: int = 200,
        seed: int = 0,
        ef: int | None = None,
    ) -> None:
        self._embedding = _as_embeddings(embedding)
        embedder_identity(self._embedding)  # fails now if the embedder cannot be identified
        self._index_settings: dict[str, Any] = {
            "M": M,
            "ef_construction": ef_construction,
            "seed": seed,
        }
        Index(1, **self._index_settings)  # validates the settings now, not on the first add
        self._ef = None if ef is None else _check_k(ef, "ef")
        self._index: Index | None = None
        self._recall_monitor: RecallMonitor | None = None
        self._records: dict[int, _Record] = {}
        self._keys: dict[str, int] = {}
        self._next_key = 0
        # Serializes writers (add, delete, save) and the searches that read stored vectors.
        self._lock = threading.RLock()
        if isinstance(self._embedding, EncoderEmbeddings):
            self._index = self._new_index(self._embedding.dims)

    # ---------------------------------------------------------------- properties

    @property
    def embeddings(self) -> Embeddings:
        """The embedder (a matry Encoder appears as its :class:`EncoderEmbeddings`)."""
        return self._embedding

    @property
    def embedder_identity(self) -> dict[str, Any]:
        """What :meth:`save` records about the embedder (see :func:`embedder_identity`),
        computed from its current settings."""
        return embedder_identity(self._embedding)

    @property
    def index(self) -> Index | None:
        """The underlying :class:`matry.Index` (None until the dimension is known: the first
        add with a LangChain embedder). Tune its ``ef`` freely; add and remove through the
        store, so that documents and vectors stay in step."""
        return self._index

    @property
    def recall_monitor(self) -> RecallMonitor | None:
        """A :class:`matry.tune.RecallMonitor` of :attr:`index` that sees every search of the
        store (filtered ones with their filter), or None. Set it with
        ``store.recall_monitor = tune.RecallMonitor(store.index, k=4, ...)``, k being the k
        the application searches with (calls with fewer results are not measured)."""
        return self._recall_monitor

    @recall_monitor.setter
    def recall_monitor(self, monitor: RecallMonitor | None) -> None:
        if monitor is not None:
            if not callable(getattr(monitor, "observe", None)):
                raise TypeError(
                    f"recall_monitor: expected a matry.tune.RecallMonitor, got {monitor!r}"
                )
            if self._index is None or monitor.index is not self._index:
                raise ValueError(
                    "recall_monitor: must monitor this store's index (RecallMonitor(store.index))"
                )
        self._recall_monitor = monitor

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return (
            f"MatryVectorStore({len(self)} documents, embedder={_describe(self.embedder_identity)})"
        )

    def _new_index(self, dim: int) -> Index:
        index = Index(dim, metric="cosine", **self._index_settings)
        if self._ef is not None:
            index.ef = self._ef
        return index

    # ---------------------------------------------------------------- embedding

    def _embed_documents(self, texts: list[str]) -> np.ndarray:
        if isinstance(self._embedding, EncoderEmbeddings):
            vectors: Any = self._embedding.encode_documents(texts)
        else:
            vectors = self._embedding.embed_documents(texts)
        return self._as_vectors(vectors, len(texts), "embed_documents")

    def _embed_query(self, query: str) -> np.ndarray:
        if not isinstance(query, str):
            raise TypeError(f"query: expected str, got {type(query).__name__}")
        if isinstance(self._embedding, EncoderEmbeddings):
            vector: Any = self._embedding.encode_query(query)
        else:
            vector = self._embedding.embed_query(query)
        return self._as_query(vector, "embed_query")

    def _as_vectors(self, vectors: Any, count: int, source: str) -> np.ndarray:
        try:
            rows = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: did not return numeric vectors ({error})") from None
        if rows.ndim != 2 or rows.shape[0] != count:
            raise ValueError(
                f"{source}: expected {count} vectors of one dimension, got an array of shape "
                f"{rows.shape}"
            )
        self._check_width(int(rows.shape[1]), source)
        return np.ascontiguousarray(rows)

    def _as_query(self, vector: Any, source: str) -> np.ndarray:
        try:
            row = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: not a numeric vector ({error})") from None
        if row.ndim == 2 and row.shape[0] == 1:
            row = row[0]
        if row.ndim != 1 or row.size == 0:
            raise ValueError(f"{source}: expected one 1-D vector, got shape {row.shape}")
        if not np.isfinite(row).all():
            raise ValueError(f"{source}: the vector contains NaN or inf")
        self._check_width(int(row.size), source)
        return np.ascontiguousarray(row.reshape(1, -1))

    def _check_width(self, width: int, source: str) -> None:
        index = self._index
        if index is not None and width != index.dim:
            raise ContractError(
                f"{source}: {width}-d vectors, but this store holds {index.dim}-d vectors of "
                f"{_describe(self.embedder_identity)}: they cannot come from the same embedder"
            )

    # ---------------------------------------------------------------- adding

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embeds ``texts`` and stores them; returns their ids.

        An id already in the store replaces that document (its text, metadata and vector);
        missing or empty ids get a new uuid4. A repeated id within one call keeps the last
        occurrence. A call that fails (bad argument, embedder error) changes nothing.
        """
        kwargs.pop("batch_size", None)  # LangChain's indexing API passes it; one call suffices
        _no_extra(kwargs, "add_texts")
        if isinstance(texts, str):
            raise TypeError("texts: expected a list of str, got one str")
        items = list(texts)
        for position, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"texts[{position}]: expected str, got {type(text).__name__}")
        item_metadata = self._check_metadatas(metadatas, len(items))
        doc_ids = self._check_ids(ids, len(items))
        if not items:
            return []
        vectors = self._embed_documents(items)
        return self._upsert(vectors, doc_ids, items, item_metadata)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Stores ``documents``; ids come from ``ids=`` if given, else from ``Document.id``
        (a new uuid4 where missing). The documents passed are not modified."""
        if isinstance(documents, Document):
            raise TypeError("documents: expected a list of Document, got one Document")
        documents = list(documents)
        for position, document in enumerate(documents):
            if not isinstance(document, Document):
                raise TypeError(
                    f"documents[{position}]: expected a Document, got {type(document).__name__}"
                )
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [document.id for document in documents]
        return self.add_texts(
            [document.page_content for document in documents],
            [document.metadata for document in documents],
            ids=ids,
            **kwargs,
        )

    @staticmethod
    def _check_metadatas(metadatas: Any, count: int) -> list[dict[str, Any]]:
        if metadatas is None:
            return [{} for _ in range(count)]
        if isinstance(metadatas, dict):
            raise TypeError("metadatas: expected one dict per text, in a list")
        items = list(metadatas)
        if len(items) != count:
            raise ValueError(f"metadatas: expected {count} (one per text), got {len(items)}")
        checked: list[dict[str, Any]] = []
        for position, entry in enumerate(items):
            if entry is None:
                entry = {}
            if not isinstance(entry, dict):
                raise TypeError(
                    f"metadatas[{position}]: expected a dict, got {type(entry).__name__}"
                )
            checked.append(dict(entry))
        return checked

    @staticmethod
    def _check_ids(ids: Any, count: int) -> list[str]:
        if ids is None:
            return [str(uuid.uuid4()) for _ in range(count)]
        if isinstance(ids, str):
            raise TypeError("ids: expected a list of str, got one str")
        items = list(ids)
        if len(items) != count:
            raise ValueError(f"ids: expected {count} (one per text), got {len(items)}")
        checked: list[str] = []
        for position, doc_id in enumerate(items):
            if doc_id is None or doc_id == "":
                checked.append(str(uuid.uuid4()))
            elif isinstance(doc_id, str):
                checked.append(doc_id)
            else:
                raise TypeError(f"ids[{position}]: expected str or None, got {doc_id!r}")
        return checked

    def _upsert(
        self,
        vectors: np.ndarray,
        doc_ids: list[str],
        texts: list[str],
        metadatas: list[dict[str, Any]],
    ) -> list[str]:
        last_position = {doc_id: position for position, doc_id in enumerate(doc_ids)}
        positions = sorted(last_position.values())
        with self._lock:
            created_index = self._index is None
            if self._index is None:
                self._index = self._new_index(int(vectors.shape[1]))
            index = self._index
            self._check_width(int(vectors.shape[1]), "embed_documents")
            keys: list[int] = []
            replaced: dict[int, _Record] = {}
            fresh: list[int] = []
            next_key = self._next_key
            for position in positions:
                key = self._keys.get(doc_ids[position])
                if key is None:
                    key = next_key
                    next_key += 1
                    fresh.append(key)
                else:
                    replaced[key] = self._records[key]
                keys.append(key)
            old_vectors = index.get(list(replaced)) if replaced else None
            # Records first: every id a concurrent search can see has its document.
            for key, position in zip(keys, positions):
                self._records[key] = _Record(
                    doc_ids[position], texts[position], metadatas[position]
                )
                self._keys[doc_ids[position]] = key
            try:
                index.add(vectors[positions], ids=keys, replace=True)
            except BaseException:
                self._undo_upsert(index, fresh, replaced, old_vectors, created_index)
                raise
            self._next_key = next_key
        return [doc_ids[position] for position in range(len(doc_ids))]

    def _undo_upsert(
        self,
        index: Index,
        fresh: list[int],
        replaced: dict[int, _Record],
        old_vectors: np.ndarray | None,
        created_index: bool,
    ) -> None:
        """Puts everything back after a failed add (validation error, or Ctrl-C between the
        index's chunks, when part of the batch is already in)."""
        for key in fresh:
            record = self._records.pop(key)
            self._keys.pop(record.doc_id, None)
        for key, record in replaced.items():
            self._records[key] = record
            self._keys[record.doc_id] = key
        if created_index and not self._records:
            self._index = None
        added = [key for key in fresh if key in index]
        if added:
            index.remove(added)
        if replaced and old_vectors is not None:
            index.add(old_vectors, ids=list(replaced), replace=True)

    # ---------------------------------------------------------------- deleting and reading

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Deletes the documents with these ids (ids not in the store are ignored);
        ``ids=None`` deletes every document. Returns True."""
        _no_extra(kwargs, "delete")
        if isinstance(ids, str):
            raise TypeError("ids: expected a list of str, got one str")
        with self._lock:
            if ids is None:
                if self._index is not None and len(self._index):
                    # the same Index object stays (a RecallMonitor may be watching it)
                    self._index.remove(self._index.ids())
                self._records.clear()
                self._keys.clear()
                return True
            keys = []
            for doc_id in dict.fromkeys(ids):
                key = self._keys.get(doc_id) if isinstance(doc_id, str) else None
                if key is not None:
                    keys.append(key)
            if keys and self._index is not None:
                self._index.remove(keys)
            for key in keys:
                record = self._records.pop(key)
                del self._keys[record.doc_id]
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents with these ids, in the order asked; missing ids are skipped (no error),
        a repeated id is returned once."""
        if isinstance(ids, str):
            raise TypeError("ids: expected a list of str, got one str")
        documents = []
        for doc_id in dict.fromkeys(ids):
            key = self._keys.get(doc_id) if isinstance(doc_id, str) else None
            record = self._records.get(key) if key is not None else None
            if record is not None:
                documents.append(record.document())
        return documents

    # ---------------------------------------------------------------- searching

    def _allowed_keys(self, filter: MetadataFilter) -> IdSet:
        """Index ids of the documents that pass ``filter``; the caller holds the lock."""
        if isinstance(filter, dict):
            for name in filter:
                if not isinstance(name, str):
                    raise TypeError(f"filter: metadata keys must be str, got {name!r}")
            # as Collection.search(where=): a list, tuple or set of values means any of them
            conditions = [
                (name, list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value])
                for name, value in filter.items()
            ]
            keys = [
                key
                for key, record in self._records.items()
                if all(
                    name in record.metadata and any(record.metadata[name] == v for v in accepted)
                    for name, accepted in conditions
                )
            ]
        elif callable(filter):
            keys = [key for key, record in self._records.items() if filter(record.document())]
        else:
            raise TypeError(
                "filter: expected a dict of metadata values or a callable Document -> bool, "
                f"got {type(filter).__name__}"
            )
        # an IdSet, unlike an id array, may name ids deleted since: the search runs unlocked
        return IdSet(np.asarray(keys, dtype=np.int64))

    def _nearest(
        self, query: np.ndarray, k: int, filter: MetadataFilter | None, ef: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index ids and cosine similarities of the k nearest documents (that pass filter).

        A filter runs inside the index's search (matry's filtered search: in the traversal, or
        an exact scan of the allowed ids when they are few), never as a post-filter."""
        index = self._index
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if index is None or not self._records:
            return empty
        allowed: IdSet | None = None
        if filter is not None and not (isinstance(filter, dict) and not filter):
            with self._lock:
                allowed = self._allowed_keys(filter)
            if len(allowed) == 0:
                return empty
            found, distances = index.search(query, k=k, ef=ef, filter=allowed)
        else:
            found, distances = index.search(query, k=k, ef=ef)
        monitor = self._recall_monitor
        if monitor is not None:
            monitor.observe(query, found, distances, filter=allowed)
        live = found[0] >= 0
        return found[0][live], (1.0 - distances[0][live]).astype(np.float32)

    def _documents(self, keys: np.ndarray, sims: np.ndarray) -> list[tuple[Document, float]]:
        results = []
        for key, similarity in zip(keys.tolist(), sims.tolist()):
            record = self._records.get(key)
            if record is not None:  # None: deleted by another thread since the search
                results.append((record.document(), float(similarity)))
        return results

    def similarity_search_with_score_by_vector(
        self,
        embedding: Sequence[float] | np.ndarray,
        k: int = 4,
        *,
        filter: MetadataFilter | None = None,
        ef: int | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """``(document, cosine similarity)`` of the ``k`` nearest documents, nearest first."""
        _no_extra(kwargs, "similarity_search_with_score_by_vector")
        k = _check_k(k)
        ef = None if ef is None else _check_k(ef, "ef")
        query = self._as_query(embedding, "embedding")
        return self._documents(*self._nearest(query, k, filter, ef))

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents nearest to ``embedding`` (takes ``filter=``, ``ef=``)."""
        pairs = self.similarity_search_with_score_by_vector(embedding, k, **kwargs)
        return [document for document, _ in pairs]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """``(document, cosine similarity)`` of the ``k`` documents nearest to ``query``
        (takes ``filter=``, ``ef=``); higher is closer."""
        return self.similarity_search_with_score_by_vector(self._embed_query(query), k, **kwargs)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` documents nearest to ``query`` (takes ``filter=``, ``ef=``)."""
        return [document for document, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Relevance in [0, 1]: the cosine similarity, negative values clipped to 0."""
        return _clip_relevance

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float] | np.ndarray,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        *,
        filter: MetadataFilter | None = None,
        ef: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents chosen by maximal marginal relevance among the ``fetch_k`` nearest.

        Each step picks the candidate maximising ``lambda_mult * sim(query, d) - (1 -
        lambda_mult) * max sim(d, chosen)`` (1 = plain similarity order, 0 = most diverse),
        on the stored unit vectors.
        """
        _no_extra(kwargs, "max_marginal_relevance_search_by_vector")
        k = _check_k(k)
        fetch_k = max(_check_k(fetch_k, "fetch_k"), k)
        lambda_mult = float(lambda_mult)
        if not 0.0 <= lambda_mult <= 1.0:
            raise ValueError(f"lambda_mult: must be between 0 and 1, got {lambda_mult}")
        ef = None if ef is None else _check_k(ef, "ef")
        query = self._as_query(embedding, "embedding")
        with self._lock:  # the candidates' vectors are read after the search
            keys, sims = self._nearest(query, fetch_k, filter, ef)
            if keys.size == 0:
                return []
            assert self._index is not None  # candidates exist, so does the index
            vectors = self._index.get(keys)
            chosen = _mmr(sims, vectors, k, lambda_mult)
            return [document for document, _ in self._documents(keys[chosen], sims[chosen])]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Maximal marginal relevance search for a text query (takes ``filter=``, ``ef=``)."""
        return self.max_marginal_relevance_search_by_vector(
            self._embed_query(query), k, fetch_k, lambda_mult, **kwargs
        )

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> MatryVectorStore:
        """A new store (``kwargs`` go to the constructor) holding ``texts``."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    # ---------------------------------------------------------------- persistence

    def _record(self) -> dict[str, Any]:
        keys = sorted(self._records)
        metadata = []
        for key in keys:
            record = self._records[key]
            try:
                json.dumps(record.metadata, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"metadata of document {record.doc_id!r} is not JSON-serializable, so the "
                    f"store cannot be saved ({error})"
                ) from None
            metadata.append(record.metadata)
        return {
            "format": _RECORD_FORMAT,
            "embedder": self.embedder_identity,
            "dim": None if self._index is None else self._index.dim,
            "index_settings": self._index_settings,
            "next_key": self._next_key,
            "keys": keys,
            "ids": [self._records[key].doc_id for key in keys],
            "texts": [self._records[key].text for key in keys],
            "metadata": metadata,
        }

    def save(self, path: PathLike) -> None:
        """Writes the index, the embedder's identity and every document's id, text and
        metadata (which must be JSON-serializable) to ``path``, atomically (see
        :meth:`matry.Index.save`)."""
        with self._lock:
            record = self._record()
            # no vector added yet (LangChain embedder, dimension unknown): an empty placeholder
            index = self._index if self._index is not None else Index(1, **self._index_settings)
            index.metadata[METADATA_KEY] = record
            try:
                index.save(path)
            finally:
                del index.metadata[METADATA_KEY]

    dump = save  # the name LangChain's InMemoryVectorStore uses

    @classmethod
    def load(
        cls,
        path: PathLike,
        embedding: Embeddings | Encoder,
        *,
        allow_embedding_change: bool = False,
    ) -> MatryVectorStore:
        """Loads a saved store; ``embedding`` must be the embedder that made it.

        Another embedder (another class or settings, or another Encoder fingerprint) raises
        :class:`matry.ContractError` naming both, before the vectors are read.
        ``allow_embedding_change=True`` opens it anyway (say, the same model behind a renamed
        class): the stored vectors stay those of the old embedder, and the identity of the new
        one is recorded on the next save.
        """
        record = read_metadata(path)["metadata"].get(METADATA_KEY)
        shown = os.fspath(path)
        if not isinstance(record, dict):
            raise ContractError(
                f"{shown} is a matry index without a LangChain store record: open it with "
                "matry.Index.load (or matry.Collection.load for a collection)"
            )
        if record.get("format") != _RECORD_FORMAT:
            raise CorruptIndexError(
                f"{shown}: LangChain store record format {record.get('format')!r} is not "
                f"supported (expected {_RECORD_FORMAT})"
            )
        embeddings = _as_embeddings(embedding)
        given = embedder_identity(embeddings)
        stored = record.get("embedder")
        if not isinstance(stored, dict):
            raise CorruptIndexError(f"{shown}: the store record has no embedder identity")
        if not allow_embedding_change and not _same_embedder(stored, given):
            raise ContractError(
                f"{shown} holds vectors made by {_describe(stored)}, but the embedding given is "
                f"{_describe(given)}: scores between the two are meaningless. Load it with the "
                "embedder that made it, re-embed the texts into a new store, or pass "
                "allow_embedding_change=True if the two really make the same vectors."
            )
        try:
            keys = [int(key) for key in record["keys"]]
            doc_ids = [str(doc_id) for doc_id in record["ids"]]
            texts = [str(text) for text in record["texts"]]
            metadata = list(record["metadata"])
            next_key = int(record["next_key"])
            dim = record["dim"]
            settings = {name: int(record["index_settings"][name]) for name in _INDEX_SETTINGS}
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptIndexError(
                f"{shown}: incomplete LangChain store record ({error})"
            ) from None
        index = Index.load(path)
        del index.metadata[METADATA_KEY]
        consistent = (
            len(keys) == len(doc_ids) == len(texts) == len(metadata)
            and len(set(doc_ids)) == len(doc_ids)
            and all(isinstance(entry, dict) for entry in metadata)
            and (not keys or next_key > max(keys))
        )
        if dim is None:
            consistent = consistent and not keys and len(index) == 0
        else:
            consistent = consistent and index.dim == dim and keys == index.ids().tolist()
        if not consistent or index.metric != "cosine":
            raise CorruptIndexError(
                f"{shown}: the LangChain store record ({len(keys)} documents) does not match "
                f"the index in the file ({len(index)} vectors, dim {index.dim})"
            )
        store = cls(embeddings, **settings)
        store._index = None if dim is None else index
        if store._index is not None:
            store._ef = store._index.ef
        store._check_width_of_embedder()
        store._records = {
            key: _Record(doc_id, text, entry)
            for key, doc_id, text, entry in zip(keys, doc_ids, texts, metadata)
        }
        store._keys = dict(zip(doc_ids, keys))
        store._next_key = next_key
        return store

    def _check_width_of_embedder(self) -> None:
        if isinstance(self._embedding, EncoderEmbeddings):
            self._check_width(self._embedding.dims, "embedding")


def _clip_relevance(similarity: float) -> float:
    return min(1.0, max(0.0, similarity))


def _mmr(query_sims: np.ndarray, vectors: np.ndarray, k: int, lambda_mult: float) -> np.ndarray:
    """Positions of ``k`` rows chosen greedily by maximal marginal relevance."""
    count = int(query_sims.shape[0])
    take = min(k, count)
    relevance = query_sims.astype(np.float64)
    rows = vectors.astype(np.float64)
    chosen = [int(np.argmax(relevance))]
    redundancy = rows @ rows[chosen[0]]
    available = np.ones(count, dtype=bool)
    available[chosen[0]] = False
    while len(chosen) < take:
        score = lambda_mult * relevance - (1.0 - lambda_mult) * redundancy
        score[~available] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, rows @ rows[best])
    return np.asarray(chosen, dtype=np.int64)
