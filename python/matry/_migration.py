"""Re-embedding a collection as a migration: the plan, the duration estimate and the checkpoint.

:meth:`matry.Collection.reembed` encodes every text again with a new encoder into a new
collection. The work is cut into blocks of ``batch_size`` texts, taken in a fixed order (longest
first, so batches carry little padding); a block's vectors depend only on its texts, so an
interrupted run that resumes from a checkpoint produces the same vectors as one that never
stopped.

The checkpoint is a directory: ``manifest.json`` (what is being migrated, by which encoder, and
which chunk files hold the vectors done so far) and ``vectors-NNNNNN.npy`` chunks, each written
to a temporary file and renamed into place, the manifest last. A kill at any moment leaves
either the previous manifest or the new one, never a torn one; chunk files the manifest does
not list are leftovers and are ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ContractError, CorruptIndexError

__all__ = ["MigrationEstimate"]

_MANIFEST = "manifest.json"
_KIND = "matry-reembed-checkpoint"
_FORMAT = 1
_CHUNK_PREFIX = "vectors-"


@dataclass(frozen=True)
class MigrationEstimate:
    """What :meth:`~matry.Collection.reembed` expects to take, measured before the bulk of it.

    ``sample_seconds`` is the wall time of the first block (``sample_texts`` texts,
    ``sample_tokens`` tokens); the rest is extrapolated by token count, since the model's cost
    grows with tokens, not texts. ``resumed_from`` texts were already done by a checkpoint.
    """

    total_texts: int
    resumed_from: int
    remaining_texts: int
    sample_texts: int
    sample_tokens: int
    sample_seconds: float
    estimated_seconds: float

    def __str__(self) -> str:
        resumed = f", {self.resumed_from} done before (checkpoint)" if self.resumed_from else ""
        return (
            f"re-embedding {self.remaining_texts} of {self.total_texts} texts{resumed}: "
            f"~{self.estimated_seconds:.1f} s estimated from {self.sample_texts} texts in "
            f"{self.sample_seconds:.3f} s"
        )


def source_digest(fingerprint: str, ids: Sequence[int], texts: Sequence[str]) -> str:
    """Identity of what is migrated: the old fingerprint and every (id, text), in id order."""
    digest = hashlib.sha256(f"{fingerprint}\n{len(ids)}\n".encode())
    for item_id, text in zip(ids, texts):
        raw = text.encode("utf-8", "surrogatepass")
        digest.update(f"{item_id}:{len(raw)}:".encode())
        digest.update(raw)
    return digest.hexdigest()


def order_digest(order: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(order, dtype="<i8").tobytes()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    try:  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Checkpoint:
    """The on-disk state of one migration (see the module docstring)."""

    def __init__(self, path: Path, identity: dict[str, Any], dims: int) -> None:
        self.path = path
        self._identity = identity
        self._dims = dims
        self._chunks: list[dict[str, Any]] = []
        self.done = 0

    @classmethod
    def open(cls, path: Path, identity: dict[str, Any], dims: int) -> tuple[Checkpoint, np.ndarray]:
        """Opens (or starts) the checkpoint at ``path``; returns it and the vectors it holds
        ([done, dims] float32, in processing order). Refuses a checkpoint of another
        migration (ContractError) or a damaged one (CorruptIndexError); changes nothing then."""
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"checkpoint: {os.fspath(path)!r} is a file; a checkpoint is a directory "
                "(give a path that does not exist yet)"
            )
        checkpoint = cls(path, identity, dims)
        manifest_path = path / _MANIFEST
        if not manifest_path.is_file():
            strangers = (
                [p.name for p in path.iterdir() if not _is_ours(p.name)] if path.is_dir() else []
            )
            if strangers:
                raise ValueError(
                    f"checkpoint: {os.fspath(path)!r} is a directory that is not a matry "
                    f"re-embedding checkpoint (it holds {sorted(strangers)[:3]}); give a new path"
                )
            return checkpoint, np.zeros((0, dims), dtype=np.float32)
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CorruptIndexError(f"{manifest_path}: unreadable manifest ({error})") from None
        if not isinstance(manifest, dict) or manifest.get("kind") != _KIND:
            raise CorruptIndexError(f"{manifest_path}: not a matry re-embedding checkpoint")
        if manifest.get("format") != _FORMAT:
            raise CorruptIndexError(
                f"{manifest_path}: checkpoint format {manifest.get('format')!r} is not "
                f"supported (expected {_FORMAT})"
            )
        found = manifest.get("identity") or {}
        theirs, ours = found.get("target_fingerprint"), identity["target_fingerprint"]
        if theirs != ours:
            raise ContractError(
                f"checkpoint {os.fspath(path)!r} holds vectors of encoder {theirs!r}, but this "
                f"migration encodes with {ours!r}: vectors of two models are never mixed. Resume "
                "with the encoder (and dims) that made it, or delete the checkpoint to start over."
            )
        if found.get("source") != identity["source"]:
            raise ContractError(
                f"checkpoint {os.fspath(path)!r} was made for another collection (or for this "
                f"one before its texts or ids changed: it migrates "
                f"{found.get('source_count')} items of {found.get('source_fingerprint')!r}, "
                f"this is {identity['source_count']} items of "
                f"{identity['source_fingerprint']!r}); delete it to start over."
            )
        if found != identity:
            raise CorruptIndexError(
                f"{manifest_path}: the checkpoint's plan differs from this migration's "
                "(same encoder and texts, other order): delete it to start over"
            )
        chunks = manifest.get("chunks")
        if not isinstance(chunks, list):
            raise CorruptIndexError(f"{manifest_path}: no chunk list")
        parts = []
        start = 0
        for entry in chunks:
            parts.append(checkpoint._read_chunk(entry, start))
            start += int(entry["count"])
        if start != manifest.get("done") or start > identity["total"]:
            raise CorruptIndexError(
                f"{manifest_path}: chunks hold {start} vectors, the manifest says "
                f"{manifest.get('done')!r} of {identity['total']}"
            )
        checkpoint._chunks = list(chunks)
        checkpoint.done = start
        vectors = np.concatenate(parts) if parts else np.zeros((0, dims), dtype=np.float32)
        return checkpoint, vectors

    def _read_chunk(self, entry: Any, start: int) -> np.ndarray:
        where = self.path / _MANIFEST
        if not isinstance(entry, dict) or entry.get("start") != start:
            raise CorruptIndexError(f"{where}: chunk {entry!r} does not start at {start}")
        name = str(entry.get("file", ""))
        if not _is_chunk(name):
            raise CorruptIndexError(f"{where}: chunk file name {name!r} is not a chunk's")
        chunk_path = self.path / name
        if not chunk_path.is_file():
            raise CorruptIndexError(f"{chunk_path}: missing (listed in the manifest)")
        if _sha256(chunk_path) != entry.get("sha256"):
            raise CorruptIndexError(f"{chunk_path}: sha256 differs from the manifest's")
        try:
            array: np.ndarray = np.load(chunk_path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise CorruptIndexError(f"{chunk_path}: unreadable ({error})") from None
        expected = (int(entry.get("count", -1)), self._dims)
        if array.dtype != np.float32 or array.shape != expected:
            raise CorruptIndexError(
                f"{chunk_path}: holds {array.dtype} {array.shape}, expected float32 {expected}"
            )
        if not np.isfinite(array).all():
            raise CorruptIndexError(f"{chunk_path}: contains NaN or inf")
        return array

    def save(self, vectors: np.ndarray, done: int) -> None:
        """Records ``vectors[self.done:done]`` (processing order) as a new chunk."""
        if done <= self.done:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"{_CHUNK_PREFIX}{len(self._chunks):06d}.npy"
        chunk = np.ascontiguousarray(vectors[self.done : done], dtype=np.float32)
        buffer = io.BytesIO()
        np.save(buffer, chunk, allow_pickle=False)
        _write_atomically(self.path / name, buffer.getvalue())
        entry = {
            "file": name,
            "start": self.done,
            "count": done - self.done,
            "sha256": _sha256(self.path / name),
        }
        manifest = {
            "kind": _KIND,
            "format": _FORMAT,
            "identity": self._identity,
            "chunks": [*self._chunks, entry],
            "done": done,
        }
        _write_atomically(
            self.path / _MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode()
        )
        self._chunks.append(entry)
        self.done = done

    def remove(self) -> None:
        """Deletes the checkpoint's own files, and the directory when nothing else is in it."""
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if _is_ours(entry.name):
                entry.unlink()
        with contextlib.suppress(OSError):  # something else is in it: leave it
            self.path.rmdir()


def _is_chunk(name: str) -> bool:
    stem = name[len(_CHUNK_PREFIX) : -len(".npy")]
    return name.startswith(_CHUNK_PREFIX) and name.endswith(".npy") and stem.isdigit()


def _is_ours(name: str) -> bool:
    base = name[: -len(".tmp")] if name.endswith(".tmp") else name
    return base == _MANIFEST or _is_chunk(base)
