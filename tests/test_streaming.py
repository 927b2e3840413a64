"""Streaming save and load: file objects, to_bytes / from_bytes, corrupt streams, peak memory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matry
import numpy as np
import pytest

DIM = 16


def _index(quantization: str | None = None, **kwargs: object) -> matry.Index:
    rng = np.random.default_rng(4)
    index = matry.Index(DIM, "cosine", M=8, ef_construction=40, quantization=quantization, **kwargs)
    index.add(rng.normal(size=(700, DIM)).astype(np.float32))
    index.remove([3, 4, 5])
    index.metadata = {"tenant": "a", "n": 1}
    return index


def _same(a: matry.Index, b: matry.Index) -> None:
    queries = np.random.default_rng(5).normal(size=(20, DIM)).astype(np.float32)
    np.testing.assert_array_equal(a.search(queries, k=10)[0], b.search(queries, k=10)[0])
    np.testing.assert_array_equal(a.ids(), b.ids())
    assert a.metadata == b.metadata and a.quantization == b.quantization


VARIANTS = {
    "f32": {},
    "int8": {"quantization": "int8"},
    "prefix-pca": {"prefix_dim": 8, "rotation": "pca"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bytesio_round_trip(variant: str) -> None:
    index = _index(**VARIANTS[variant])  # type: ignore[arg-type]
    stream = io.BytesIO()
    index.save(stream)
    assert stream.getvalue() == index.to_bytes()
    stream.seek(0)
    _same(index, matry.Index.load(stream))


def test_open_file_objects_and_several_indexes_in_one_stream(tmp_path: Path) -> None:
    first, second = _index(), _index("int8")
    path = tmp_path / "two.bin"
    with open(path, "wb") as file:
        file.write(b"HEADER")
        first.save(file)
        second.save(file)
        file.write(b"TRAILER")
    with open(path, "rb") as file:
        assert file.read(6) == b"HEADER"
        _same(first, matry.Index.load(file))
        _same(second, matry.Index.load(file))  # the first load stopped just past its index
        assert file.read() == b"TRAILER"
    with open(path, "rb") as file, pytest.raises(ValueError, match="mmap: needs a path"):
        matry.Index.load(file, mmap=True)


def test_to_bytes_from_bytes_and_buffers() -> None:
    index = _index("int8")
    data = index.to_bytes()
    for form in (data, bytearray(data), memoryview(data)):
        _same(index, matry.Index.from_bytes(form))
    with pytest.raises(TypeError, match="data: expected bytes"):
        matry.Index.from_bytes("not bytes")  # type: ignore[arg-type]


def test_file_path_equals_stream_bytes(tmp_path: Path) -> None:
    index = _index()
    index.save(tmp_path / "a.matry")
    assert (tmp_path / "a.matry").read_bytes() == index.to_bytes()


@pytest.mark.parametrize("variant", ["f32", "int8"])
def test_corrupt_streams_raise_corrupt_index_error(variant: str) -> None:
    data = _index(**VARIANTS[variant]).to_bytes()  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    # Truncated anywhere: an unknown-length stream learns it by reading, and says so.
    for cut in sorted({0, 1, 7, 8, 127, 128, 200, len(data) // 2, len(data) - 5, len(data) - 1}):
        with pytest.raises(matry.CorruptIndexError):
            matry.Index.load(io.BytesIO(data[:cut]))
        with pytest.raises(matry.CorruptIndexError):
            matry.Index.from_bytes(data[:cut])
    # One flipped byte anywhere past the header: the trailing checksum catches it.
    for position in rng.choice(np.arange(140, len(data)), size=25, replace=False):
        flipped = bytearray(data)
        flipped[int(position)] ^= 0x40
        with pytest.raises(matry.CorruptIndexError):
            matry.Index.load(io.BytesIO(bytes(flipped)))
    with pytest.raises(matry.CorruptIndexError, match="bad magic"):
        matry.Index.load(io.BytesIO(b"NOTANIDX" + data[8:]))


def test_bad_file_objects() -> None:
    class TextReader:
        def read(self, n: int) -> str:
            return "x" * n

    with pytest.raises(ValueError, match="read\\(\\) must return bytes"):
        matry.Index.load(TextReader())  # type: ignore[arg-type]

    class Overfull:
        def read(self, n: int) -> bytes:
            return b"M" * (n + 1)

    with pytest.raises(ValueError, match="more than n bytes"):
        matry.Index.load(Overfull())  # type: ignore[arg-type]

    class FailingWriter:
        def write(self, data: bytes) -> int:
            raise OSError("disk full")

    index = _index()
    with pytest.raises(OSError, match="disk full"):
        index.save(FailingWriter())  # type: ignore[arg-type]
    _same(index, matry.Index.from_bytes(index.to_bytes()))  # the index is unharmed


# A child process: build and save, or load; reports the peak RSS that its step added.
_RSS_CHILD = textwrap.dedent(
    """
    import sys, numpy as np, matry

    def hwm_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    mode, path = sys.argv[1], sys.argv[2]
    if mode == "build":
        rng = np.random.default_rng(0)
        index = matry.Index(256, "l2", M=4, ef_construction=8)
        index.add(rng.normal(size=(60_000, 256)).astype(np.float32))
        reset_peak(); base = hwm_kib()
        index.save(path)
        print("save", hwm_kib() - base)
        reset_peak(); base = hwm_kib()
        with open(path + ".stream", "wb") as file:
            index.save(file)
        print("save_stream", hwm_kib() - base)
    else:
        reset_peak(); base = hwm_kib()
        index = matry.Index.load(path)
        print("load", hwm_kib() - base)
        del index
        reset_peak(); base = hwm_kib()
        with open(path + ".stream", "rb") as file:
            index = matry.Index.load(file)
        print("load_stream", hwm_kib() - base)
    """
)


def test_peak_memory_of_save_and_load_is_the_index_plus_a_buffer(tmp_path: Path) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("under ASan (.ci/sanitize) its allocator's quarantine and shadow are in RSS")
    path = str(tmp_path / "big.matry")
    peaks: dict[str, int] = {}
    for mode in ("build", "load"):
        result = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, mode, path],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in result.stdout.split("\n"):
            if line.strip():
                name, kib = line.split()
                peaks[name] = int(kib) * 1024
    file_bytes = Path(path).stat().st_size
    assert file_bytes > 60e6
    # Saving holds nothing of the file's size (a 1 MiB buffer, 1 byte of level per node).
    assert peaks["save"] < 16 << 20, peaks
    assert peaks["save_stream"] < 16 << 20, peaks
    # Loading needs the index (about the file's size) and no second copy of it: the old load
    # read the whole file first and needed twice that.
    assert peaks["load"] < 1.25 * file_bytes + (16 << 20), (peaks, file_bytes)
    assert peaks["load_stream"] < 1.25 * file_bytes + (16 << 20), (peaks, file_bytes)
