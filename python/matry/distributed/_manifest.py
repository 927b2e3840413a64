"""``manifest.json``: what a sharded index directory holds, written last and atomically."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import CorruptIndexError
from ..index import read_metadata

MANIFEST_NAME = "manifest.json"
CENTROIDS_NAME = "centroids.npy"
FORMAT_NAME = "matry-sharded"
FORMAT_VERSION = 1


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, fsyncs it, renames it into place."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def write_centroids(directory: Path, centroids: np.ndarray) -> str:
    """Saves the k-means centroids beside the manifest; returns their SHA-256."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(centroids, dtype=np.float32), allow_pickle=False)
    data = buffer.getvalue()
    atomic_write_bytes(directory / CENTROIDS_NAME, data)
    return hashlib.sha256(data).hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    body = dict(manifest)
    body["format"] = FORMAT_NAME
    body["format_version"] = FORMAT_VERSION
    body["written_by"] = f"matry {__version__}"
    data = json.dumps(body, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    atomic_write_bytes(directory / MANIFEST_NAME, data)


def _need(condition: bool, directory: Path, what: str) -> None:
    if not condition:
        raise CorruptIndexError(f"{directory / MANIFEST_NAME}: {what}")


def read_manifest(directory: Path) -> dict[str, Any]:
    """Parses and checks the manifest, the shard files' headers and the centroids.

    Raises FileNotFoundError when there is no manifest, and CorruptIndexError naming the file
    for a bad manifest, a missing or corrupt shard file, or centroids whose checksum differs.
    """
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sharded-index manifest (build one first)")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise CorruptIndexError(f"{path}: not valid JSON ({error})") from None
    _need(isinstance(manifest, dict), directory, "not a JSON object")
    assert isinstance(manifest, dict)
    _need(manifest.get("format") == FORMAT_NAME, directory, "not a matry sharded-index manifest")
    version = manifest.get("format_version")
    _need(
        version == FORMAT_VERSION,
        directory,
        f"format version {version!r} is not supported (expected {FORMAT_VERSION})",
    )
    for key, kind in (("dim", int), ("metric", str), ("params", dict), ("partition", dict)):
        _need(isinstance(manifest.get(key), kind), directory, f"field {key!r} missing or bad")
    shards: Any = manifest.get("shards")
    _need(isinstance(shards, list) and len(shards) > 0, directory, "no shards listed")
    for number, entry in enumerate(shards):
        _need(
            isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and isinstance(entry.get("count"), int),
            directory,
            f"shard {number}: entry malformed",
        )
        check_shard_file(directory, number, entry, manifest)
    partition = manifest["partition"]
    if partition.get("kind") == "kmeans":
        manifest["_centroids"] = read_centroids(directory, partition, len(shards))
    checked: dict[str, Any] = manifest
    return checked


def check_shard_file(
    directory: Path, number: int, entry: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """The shard file exists and its header agrees with the manifest (payload checked on load)."""
    name = entry["file"]
    if os.sep in name or name.startswith("."):
        raise CorruptIndexError(f"{directory / MANIFEST_NAME}: shard {number}: bad name {name!r}")
    file = directory / name
    if not file.is_file():
        raise CorruptIndexError(f"shard {number}: shard file {file} is missing")
    try:
        header = read_metadata(file)
    except CorruptIndexError as error:
        raise CorruptIndexError(f"shard {number}: shard file {file} is corrupt: {error}") from None
    except OSError as error:
        raise CorruptIndexError(f"shard {number}: shard file {file}: {error}") from None
    expected = (manifest["dim"], manifest["metric"], entry["count"])
    found = (header["dim"], header["metric"], header["count"])
    if expected != found:
        raise CorruptIndexError(
            f"shard {number}: shard file {file} holds dim/metric/count {found}, "
            f"the manifest says {expected}"
        )
    size = entry.get("bytes")
    if isinstance(size, int) and file.stat().st_size != size:
        raise CorruptIndexError(
            f"shard {number}: shard file {file} is {file.stat().st_size} bytes, "
            f"the manifest says {size}"
        )


def read_centroids(directory: Path, partition: dict[str, Any], shards: int) -> np.ndarray:
    file = directory / CENTROIDS_NAME
    if not file.is_file():
        raise CorruptIndexError(f"{file}: k-means centroids are missing")
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != partition.get("centroids_sha256"):
        raise CorruptIndexError(f"{file}: checksum does not match the manifest")
    import io

    centroids = np.load(io.BytesIO(data), allow_pickle=False)
    if centroids.ndim != 2 or centroids.shape[0] != shards:
        raise CorruptIndexError(f"{file}: expected {shards} centroids, got {centroids.shape}")
    return np.ascontiguousarray(centroids, dtype=np.float32)
