"""A text collection that keeps the embedding contract: one encoder, one way of encoding.

Vectors are comparable only when the same model made them in the same way (same model and
tokenizer files, pooling, normalization, dims, and query vs document input type). A
:class:`Collection` owns an :class:`~matry.Encoder` and a :class:`~matry.Index`, records the
encoder's fingerprint, and refuses vectors that do not fit with a :class:`~matry.ContractError`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, cast, overload

import numpy as np
import numpy.typing as npt

from ._migration import Checkpoint, MigrationEstimate, order_digest, source_digest
from .encoder import BUNDLED_MODEL, Encoder, _as_texts, fingerprints_match
from .errors import ContractError, CorruptIndexError
from .filters import IdSet
from .index import Index, _as_ids, read_metadata

__all__ = ["Collection", "Hit", "MigrationEstimate"]

_logger = logging.getLogger("matry")

PathLike = Union[str, "os.PathLike[str]"]

#: Key of the collection's record inside :attr:`matry.Index.metadata`.
METADATA_KEY = "matry_collection"
_RECORD_FORMAT = 1
_METRICS = ("cosine", "ip", "l2")
_UNIT_TOLERANCE = 1e-3
_INDEX_PARAMS = ("M", "ef_construction", "seed", "prefix_dim", "rotation")


@dataclass(frozen=True)
class Hit:
    """One search result.

    ``score`` is the cosine similarity (1 - distance) under "cosine" and "ip", and the negated
    squared euclidean distance under "l2": higher is always closer.
    """

    id: int
    score: float
    text: str | None
    metadata: dict[str, Any] | None


class Collection:
    """Texts, their vectors and the encoder that made them, in one searchable index.

    Args:
        encoder: the :class:`~matry.Encoder` for documents and queries (default: the bundled
            all-MiniLM-L6-v2).
        metric: "cosine", "ip" (needs a normalizing encoder) or "l2", as in :class:`~matry.Index`.
        dims: keep the first ``dims`` components of every vector (Matryoshka truncation,
            re-normalized); ``None`` = the encoder's full dimension. Part of the fingerprint.
        **index_params: passed to :class:`~matry.Index` (M, ef_construction, seed, prefix_dim,
            rotation).
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        metric: str = "cosine",
        *,
        dims: int | None = None,
        **index_params: Any,
    ) -> None:
        if encoder is None:
            encoder = Encoder.default()
        if not isinstance(encoder, Encoder):
            raise TypeError(f"encoder: expected a matry.Encoder, got {type(encoder).__name__}")
        if metric not in _METRICS:
            raise ValueError(f"metric: expected one of {_METRICS}, got {metric!r}")
        unknown = sorted(set(index_params) - set(_INDEX_PARAMS))
        if unknown:
            raise TypeError(f"unexpected index parameters {unknown}; accepted: {_INDEX_PARAMS}")
        if metric == "ip" and not encoder.normalize:
            raise ContractError(
                f"metric 'ip' needs unit-length vectors, but encoder {encoder.name!r} does not "
                "normalize its output; use metric='cosine' (or 'l2')"
            )
        self._encoder = encoder
        self._dims = encoder._check_dims(dims)
        self._fingerprint = encoder.fingerprint_for(self._dims)
        self._metric = metric
        self._index_params = dict(index_params)
        self._index = Index(self._dims, metric=metric, **index_params)
        self._texts: dict[int, str | None] = {}
        self._item_metadata: dict[int, dict[str, Any] | None] = {}

    # ---------------------------------------------------------------- properties

    @property
    def encoder(self) -> Encoder:
        return self._encoder

    @property
    def fingerprint(self) -> str:
        """Fingerprint every stored vector carries (``encoder.fingerprint_for(dims)``)."""
        return self._fingerprint

    @property
    def dims(self) -> int:
        return self._dims

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def index(self) -> Index:
        """The underlying index (for ``ef`` and other search settings; add through the
        collection, so that texts and the contract stay in step)."""
        return self._index

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, id: object) -> bool:
        return id in self._index

    def ids(self) -> np.ndarray:
        """Live ids, ascending (int64)."""
        return self._index.ids()

    def get_text(self, id: int) -> str | None:
        """Text stored with ``id`` (None when it was added as a vector without text)."""
        return self._texts[self._known_id(id)]

    def get_metadata(self, id: int) -> dict[str, Any] | None:
        """Metadata stored with ``id``."""
        return self._item_metadata[self._known_id(id)]

    def __repr__(self) -> str:
        return (
            f"Collection({len(self)} items, encoder={self._encoder.name!r}, "
            f"dims={self._dims}, metric={self._metric!r}, fingerprint={self._fingerprint!r})"
        )

    def _known_id(self, id: int) -> int:
        # int(1.7) would quietly read item 1: only integers name items
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)):
            raise ValueError(f"id: expected an integer, got {id!r}")
        key = int(id)
        if key not in self._texts:
            raise KeyError(f"id {key} is not in the collection")
        return key

    # ---------------------------------------------------------------- adding

    def add(
        self,
        texts: str | Iterable[str],
        ids: npt.ArrayLike | None = None,
        metadata: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None,
        *,
        batch_size: int = 64,
        progress: bool = False,
    ) -> np.ndarray:
        """Encodes ``texts`` as documents and adds them; returns their ids (int64).

        ``metadata``: one JSON-serializable dict (or None) per text, kept with it and
        returned in hits. The batch is validated before anything is encoded or added.
        """
        items = _as_texts(texts)
        item_ids = self._check_new_ids(ids, len(items))
        item_metadata = _check_item_metadata(metadata, len(items), single=isinstance(texts, str))
        if not items:
            return np.zeros(0, dtype=np.int64)
        vectors = self._encoder.encode(
            items, input_type="document", dims=self._dims, batch_size=batch_size, progress=progress
        )
        return self._store(vectors, item_ids, list(items), item_metadata)

    def add_vectors(
        self,
        vectors: npt.ArrayLike,
        fingerprint: str,
        ids: npt.ArrayLike | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        *,
        input_type: str = "document",
    ) -> np.ndarray:
        """Adds precomputed vectors, made by the collection's encoder (``fingerprint`` must be
        :attr:`fingerprint`). ``texts`` are needed for :meth:`reembed`."""
        rows = self._check_vectors(vectors, fingerprint, input_type, role="document")
        item_ids = self._check_new_ids(ids, rows.shape[0])
        if texts is None:
            item_texts: list[str | None] = [None] * rows.shape[0]
        else:
            item_texts = list(texts)
            if len(item_texts) != rows.shape[0]:
                raise ValueError(
                    f"texts: expected {rows.shape[0]} (one per vector), got {len(item_texts)}"
                )
            for position, text in enumerate(item_texts):
                if text is not None and not isinstance(text, str):
                    raise TypeError(
                        f"texts[{position}]: expected str or None, got {type(text).__name__}"
                    )
        item_metadata = _check_item_metadata(metadata, rows.shape[0], single=False)
        if rows.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        return self._store(rows, item_ids, item_texts, item_metadata)

    def _store(
        self,
        vectors: np.ndarray,
        ids: np.ndarray | None,
        texts: list[str | None],
        metadata: list[dict[str, Any] | None],
    ) -> np.ndarray:
        assigned = self._index.add(vectors, ids)
        for position, item_id in enumerate(assigned.tolist()):
            self._texts[item_id] = texts[position]
            self._item_metadata[item_id] = metadata[position]
        return assigned

    def remove(self, ids: npt.ArrayLike) -> None:
        """Removes items (ValueError for non-integer ids, KeyError for an unknown one; nothing
        changes then)."""
        id_list = _as_ids(ids).tolist()
        self._index.remove(id_list)
        for item_id in id_list:
            del self._texts[item_id]
            del self._item_metadata[item_id]

    def _check_new_ids(self, ids: npt.ArrayLike | None, count: int) -> np.ndarray | None:
        if ids is None:
            return None
        array = _as_ids(ids)
        if array.shape[0] != count:
            raise ValueError(f"ids: expected {count} ids (one per item), got {array.shape[0]}")
        if np.unique(array).shape[0] != array.shape[0]:
            raise ValueError("ids: duplicate ids in the batch")
        present = [int(i) for i in array if int(i) in self._texts]
        if present:
            raise KeyError(f"ids: {present[:5]} already in the collection (remove them first)")
        return array

    # ---------------------------------------------------------------- the contract

    def _check_fingerprint(self, fingerprint: str, argument: str) -> None:
        if not isinstance(fingerprint, str):
            raise TypeError(
                f"fingerprint: expected the str an Encoder reports, got "
                f"{type(fingerprint).__name__}"
            )
        if not fingerprints_match(fingerprint, self._fingerprint):
            raise ContractError(
                f"{argument} were made by encoder {fingerprint!r}, but this collection holds "
                f"vectors of {self._fingerprint!r}: scores between the two are meaningless. "
                f"Encode with collection.encoder.encode(..., dims={self._dims}) or use "
                "collection.add()/search() with text; to change models, call reembed()."
            )

    def _check_input_type(self, input_type: str, role: str) -> None:
        if input_type not in ("document", "query"):
            raise ValueError(f"input_type: expected 'document' or 'query', got {input_type!r}")
        if input_type != role and self._encoder.distinguishes_input_types:
            expected = self._encoder.prefix_for(role)
            used = self._encoder.prefix_for(input_type)
            plural = {"query": "queries", "document": "documents"}[role]
            raise ContractError(
                f"{input_type}-type vectors used as {plural}: encoder {self._encoder.name!r} "
                f"encodes queries and documents differently (prefixes {used!r} vs "
                f"{expected!r}). Encode them with encoder.encode(..., input_type={role!r})."
            )

    def _check_vectors(
        self, vectors: npt.ArrayLike, fingerprint: str, input_type: str, role: str
    ) -> np.ndarray:
        argument = "vectors" if role == "document" else "query vectors"
        self._check_fingerprint(fingerprint, argument)
        self._check_input_type(input_type, role)
        rows = np.asarray(vectors)
        if rows.dtype.kind not in "iuf":
            raise ValueError(f"vectors: expected real numbers, got dtype {rows.dtype}")
        rows = np.atleast_2d(rows).astype(np.float32, copy=False)
        if rows.ndim != 2:
            raise ValueError(f"vectors: expected a 2-D array [n, {self._dims}], got {rows.ndim}-D")
        if not np.isfinite(rows).all():
            bad_row = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
            raise ValueError(f"vectors: row {bad_row} contains NaN or inf")
        if rows.shape[1] != self._dims:
            raise ContractError(
                f"{argument} have {rows.shape[1]} dims, but this collection holds "
                f"{self._dims}-d vectors of {self._fingerprint!r}; "
                + (
                    f"encode with dims={self._dims}"
                    if rows.shape[1] > self._dims
                    else "they cannot come from this encoder at this setting"
                )
            )
        if rows.shape[0] and (self._metric == "ip" or self._encoder.normalize):
            norms = np.linalg.norm(rows.astype(np.float64), axis=1)
            bad = np.flatnonzero(~(np.abs(norms - 1.0) <= _UNIT_TOLERANCE))
            if bad.size:
                row = int(bad[0])
                why = (
                    "metric 'ip' needs unit-length vectors"
                    if self._metric == "ip"
                    else f"encoder {self._encoder.name!r} makes unit-length vectors"
                )
                raise ContractError(
                    f"{argument}: row {row} has norm {norms[row]:.6g} ({bad.size} rows are not "
                    f"unit length within {_UNIT_TOLERANCE}), but {why}; normalize them, or "
                    "check that they really come from this encoder"
                )
        return rows

    # ---------------------------------------------------------------- searching

    # str is itself an Iterable[str]: the first overload wins for a single string.
    @overload
    def search(  # type: ignore[overload-overlap]
        self,
        text_or_texts: str,
        k: int = ...,
        *,
        ef: int | None = ...,
        batch_size: int = ...,
        where: dict[str, Any] | None = ...,
    ) -> list[Hit]: ...
    @overload
    def search(
        self,
        text_or_texts: Iterable[str],
        k: int = ...,
        *,
        ef: int | None = ...,
        batch_size: int = ...,
        where: dict[str, Any] | None = ...,
    ) -> list[list[Hit]]: ...
    def search(
        self,
        text_or_texts: str | Iterable[str],
        k: int = 10,
        *,
        ef: int | None = None,
        batch_size: int = 64,
        where: dict[str, Any] | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Encodes the text(s) as queries and returns the ``k`` nearest items.

        One string gives ``list[Hit]``; a list of strings gives one list per query.
        ``where={"field": value, ...}`` keeps items whose metadata has every field equal to
        its value (a list, tuple or set value: equal to any of them); it runs as an id filter
        inside the index search (:meth:`matry.Index.search`).
        """
        single = isinstance(text_or_texts, str)
        queries = _as_texts(text_or_texts)
        allowed = self._where_filter(where)
        if not queries:
            return []
        vectors = self._encoder.encode(
            queries, input_type="query", dims=self._dims, batch_size=batch_size
        )
        hits = self._hits(vectors, k, ef, allowed)
        return hits[0] if single else hits

    def _where_filter(self, where: dict[str, Any] | None) -> IdSet | None:
        """The ids whose metadata matches ``where`` (None: no filter)."""
        if where is None:
            return None
        if not isinstance(where, dict) or not where:
            raise TypeError(
                f"where: expected a non-empty dict of metadata field -> value, got {where!r}"
            )
        for field in where:
            if not isinstance(field, str):
                raise TypeError(f"where: field names must be str, got {field!r}")
        conditions = {
            field: (list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value])
            for field, value in where.items()
        }

        def matches(item: dict[str, Any] | None) -> bool:
            if item is None:
                return False
            return all(
                field in item and any(item[field] == v for v in accepted)
                for field, accepted in conditions.items()
            )

        allowed = [item_id for item_id, item in self._item_metadata.items() if matches(item)]
        return IdSet(np.asarray(allowed, dtype=np.int64))

    def search_vectors(
        self,
        vectors: npt.ArrayLike,
        fingerprint: str,
        k: int = 10,
        input_type: str = "query",
        *,
        ef: int | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Searches with precomputed query vectors of the collection's encoder.

        A 1-D vector gives ``list[Hit]``; a 2-D array gives one list per row. ``where`` as in
        :meth:`search`.
        """
        single = np.ndim(vectors) == 1
        rows = self._check_vectors(vectors, fingerprint, input_type, role="query")
        allowed = self._where_filter(where)
        if rows.shape[0] == 0:
            return []
        hits = self._hits(rows, k, ef, allowed)
        return hits[0] if single else hits

    def _hits(
        self, vectors: np.ndarray, k: int, ef: int | None, allowed: IdSet | None = None
    ) -> list[list[Hit]]:
        found_ids, distances = self._index.search(vectors, k=k, ef=ef, filter=allowed)
        results: list[list[Hit]] = []
        for row_ids, row_distances in zip(found_ids.tolist(), distances.tolist()):
            hits = []
            for item_id, distance in zip(row_ids, row_distances):
                if item_id < 0:
                    break
                score = -distance if self._metric == "l2" else 1.0 - distance
                hits.append(
                    Hit(item_id, score, self._texts.get(item_id), self._item_metadata.get(item_id))
                )
            results.append(hits)
        return results

    # ---------------------------------------------------------------- persistence

    def _record(self) -> dict[str, Any]:
        encoder = self._encoder
        ids = self._index.ids().tolist()
        rotation = self._index_params.get("rotation")
        index_params = {
            "M": self._index.M,
            "ef_construction": self._index.ef_construction,
            "seed": self._index.seed,
            "prefix_dim": self._index.prefix_dim,
            "rotation": "pca" if rotation is not None or self._index.rotation is not None else None,
        }
        return {
            "format": _RECORD_FORMAT,
            "fingerprint": self._fingerprint,
            "encoder": {
                "name": encoder.name,
                "dim": encoder.dim,
                "pooling": encoder.pooling,
                "max_seq_length": encoder.max_length,
                "query_prefix": encoder.query_prefix,
                "document_prefix": encoder.document_prefix,
            },
            "dims": self._dims,
            "metric": self._metric,
            "normalized": encoder.normalize,
            "input_types": {
                "stored": "document",
                "queries": "query",
                "distinguished": encoder.distinguishes_input_types,
            },
            "index_params": index_params,
            "ids": ids,
            "texts": [self._texts[i] for i in ids],
            "metadata": [self._item_metadata[i] for i in ids],
        }

    def save(self, path: PathLike) -> None:
        """Writes the index, the encoder's fingerprint and every text and metadata dict to
        ``path`` atomically (a temporary file renamed into place)."""
        self._index.metadata[METADATA_KEY] = self._record()
        self._index.save(path)

    @staticmethod
    def read_record(path: PathLike) -> dict[str, Any]:
        """The collection record of a saved file (fingerprint, dims, metric, texts...),
        read without loading the vectors."""
        record = read_metadata(path)["metadata"].get(METADATA_KEY)
        if not isinstance(record, dict):
            raise ContractError(
                f"{os.fspath(path)} is a matry index without a collection record (no encoder "
                "fingerprint): open it with matry.Index.load"
            )
        if record.get("format") != _RECORD_FORMAT:
            raise CorruptIndexError(
                f"{os.fspath(path)}: collection record format {record.get('format')!r} is not "
                f"supported (expected {_RECORD_FORMAT})"
            )
        return record

    @classmethod
    def load(cls, path: PathLike, encoder: Encoder | None = None) -> Collection:
        """Loads a saved collection; ``encoder`` must be the one that made it (default: the
        bundled encoder). A different encoder raises ContractError naming both fingerprints."""
        record = cls.read_record(path)
        stored = str(record["fingerprint"])
        dims = int(record["dims"])
        if encoder is None:
            encoder = Encoder.default()
        own = encoder.fingerprint_for(dims) if dims <= encoder.dim else encoder.fingerprint
        if not fingerprints_match(own, stored):
            hint = (
                "matry.Encoder() (the bundled model)"
                if record["encoder"]["name"] == BUNDLED_MODEL
                else "matry.Encoder.from_dir(<its model directory>)"
            )
            raise ContractError(
                f"{os.fspath(path)} holds vectors of encoder {stored!r}, but the encoder given "
                f"is {own!r}. Load it with the encoder that made it (encoder={hint}); to move "
                "to another model, load it that way and call reembed(new_encoder)."
            )
        index = Index.load(path)
        ids = [int(i) for i in record["ids"]]
        texts, metadata = list(record["texts"]), list(record["metadata"])
        if not (len(ids) == len(texts) == len(metadata)) or ids != index.ids().tolist():
            raise CorruptIndexError(
                f"{os.fspath(path)}: the collection record lists {len(ids)} items, which do not "
                f"match the {len(index)} vectors in the index"
            )
        if index.metric != record["metric"] or index.dim != dims:
            raise CorruptIndexError(
                f"{os.fspath(path)}: collection record and index header "
                "disagree on metric or dimension"
            )
        collection = cls.__new__(cls)
        collection._encoder = encoder
        collection._dims = dims
        collection._fingerprint = own
        collection._metric = index.metric
        params = dict(record.get("index_params") or {})
        collection._index_params = {k: v for k, v in params.items() if v is not None}
        collection._index = index
        collection._texts = dict(zip(ids, texts))
        collection._item_metadata = dict(zip(ids, metadata))
        del index.metadata[METADATA_KEY]
        return collection

    # ---------------------------------------------------------------- migration

    def reembed(
        self,
        new_encoder: Encoder,
        progress: bool = True,
        *,
        dims: int | None = None,
        batch_size: int = 64,
        checkpoint: PathLike | None = None,
        checkpoint_every: int = 4096,
        on_estimate: Callable[[MigrationEstimate], None] | None = None,
        **index_params: Any,
    ) -> Collection:
        """Re-encodes every stored text with ``new_encoder`` into a new collection (a migration).

        Ids, texts and metadata carry over; the index parameters too, unless overridden by
        ``index_params`` (a PCA rotation is refitted to the new vectors). This collection is
        not touched and keeps serving searches while the migration runs (the encoder releases
        the GIL); the new collection exists only once every text is encoded, so no index and
        no result list ever holds vectors of both models. Items added as vectors without text
        cannot be re-encoded: ContractError.

        Before the bulk of the work, the first block of ``batch_size`` texts is timed and the
        whole duration extrapolated by token count: a :class:`MigrationEstimate` logged on the
        ``matry`` logger, printed to stderr when ``progress`` is true, and passed to
        ``on_estimate`` when given.

        ``checkpoint``: a directory where the vectors done so far are written every
        ``checkpoint_every`` texts (atomically: temporary files renamed into place). Calling
        ``reembed`` again with the same checkpoint after an interruption resumes where the last
        checkpoint stopped and gives the same vectors as an uninterrupted run. A checkpoint
        made by another encoder, at other dims or for another collection (other ids or texts)
        is refused with ContractError. It is deleted once the new collection is complete.
        """
        if not isinstance(new_encoder, Encoder):
            raise TypeError(
                f"new_encoder: expected a matry.Encoder, got {type(new_encoder).__name__}"
            )
        for name, value in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: must be a positive int, got {value!r}")
        if on_estimate is not None and not callable(on_estimate):
            raise TypeError(f"on_estimate: expected a callable, got {type(on_estimate).__name__}")
        ids = self._index.ids().tolist()
        missing = [i for i in ids if self._texts[i] is None]
        if missing:
            raise ContractError(
                f"cannot re-embed: {len(missing)} items were added as vectors without text "
                f"(ids {missing[:5]}{'...' if len(missing) > 5 else ''}); re-add them with "
                "texts, or remove them first"
            )
        params = {k: v for k, v in self._index_params.items() if k in _INDEX_PARAMS}
        if params.get("rotation") is not None:
            params["rotation"] = "pca"  # an old rotation belongs to the old vector space
        params.update(index_params)
        fresh = Collection(new_encoder, metric=self._metric, dims=dims, **params)
        fresh._index.ef = self._index.ef
        # a snapshot: items added to or removed from this collection meanwhile are not migrated
        # (every id has a text: the missing ones were refused above)
        texts = cast("list[str]", [self._texts[i] for i in ids])
        metadata = [self._item_metadata[i] for i in ids]
        # longest first (little padding per batch); the order is part of the checkpoint's plan
        tokens = new_encoder._token_counts(texts, "document")
        order = np.argsort(-tokens, kind="stable")
        store: Checkpoint | None = None
        done_vectors = np.zeros((0, fresh.dims), dtype=np.float32)
        if checkpoint is not None:
            identity = {
                "target_fingerprint": fresh.fingerprint,
                "source": source_digest(self._fingerprint, ids, texts),
                "source_fingerprint": self._fingerprint,
                "source_count": len(ids),
                "total": len(ids),
                "order": order_digest(order),
                "dims": fresh.dims,
            }
            store, done_vectors = Checkpoint.open(Path(os.fspath(checkpoint)), identity, fresh.dims)
        vectors = np.empty((len(ids), fresh.dims), dtype=np.float32)
        done = done_vectors.shape[0]
        vectors[:done] = done_vectors
        bar = None
        if progress and done < len(ids):
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(ids), initial=done, desc=f"re-embedding ({new_encoder.name})", unit="text"
            )
        try:
            position = done
            while position < len(ids):
                block = order[position : position + batch_size]
                started = time.perf_counter()
                vectors[position : position + len(block)] = new_encoder.encode(
                    [texts[i] for i in block],
                    input_type="document",
                    dims=fresh.dims,
                    batch_size=batch_size,
                )
                if position == done:
                    estimate = _estimate(
                        len(ids), done, block, tokens, order, time.perf_counter() - started
                    )
                    _logger.info("%s", estimate)
                    if bar is not None:
                        bar.write(str(estimate), file=sys.stderr)
                    if on_estimate is not None:
                        on_estimate(estimate)
                position += len(block)
                if bar is not None:
                    bar.update(len(block))
                if store is not None and (
                    position - store.done >= checkpoint_every or position == len(ids)
                ):
                    store.save(vectors, position)
        finally:
            if bar is not None:
                bar.close()
        if ids:
            in_id_order = np.empty_like(vectors)
            in_id_order[order] = vectors
            fresh._store(in_id_order, np.asarray(ids, dtype=np.int64), list(texts), metadata)
        if store is not None:
            store.remove()
        return fresh


def _estimate(
    total: int,
    done: int,
    sample: np.ndarray,
    tokens: np.ndarray,
    order: np.ndarray,
    seconds: float,
) -> MigrationEstimate:
    sample_tokens = int(tokens[sample].sum())
    remaining_tokens = int(tokens[order[done:]].sum())
    scale = remaining_tokens / max(sample_tokens, 1)
    return MigrationEstimate(
        total_texts=total,
        resumed_from=done,
        remaining_texts=total - done,
        sample_texts=len(sample),
        sample_tokens=sample_tokens,
        sample_seconds=seconds,
        estimated_seconds=seconds * scale,
    )


def _check_item_metadata(metadata: Any, count: int, single: bool) -> list[dict[str, Any] | None]:
    if metadata is None:
        return [None] * count
    if single and isinstance(metadata, dict):
        metadata = [metadata]
    if isinstance(metadata, (dict, str, bytes)):
        raise TypeError("metadata: expected one dict (or None) per item, in a list")
    items = list(metadata)
    if len(items) != count:
        raise ValueError(f"metadata: expected {count} entries (one per item), got {len(items)}")
    for position, entry in enumerate(items):
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise TypeError(
                f"metadata[{position}]: expected a dict or None, got {type(entry).__name__}"
            )
        try:
            json.dumps(entry, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata[{position}]: not JSON-serializable ({error})") from None
        if any(not isinstance(key, str) for key in entry):
            raise ValueError(f"metadata[{position}]: keys must be str (JSON object keys)")
    return items
